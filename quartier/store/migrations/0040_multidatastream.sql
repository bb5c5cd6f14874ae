-- SensorThings v1.1 MultiDatastream extension (OGC 18-088, A.5; issue #13 item 6).
--
-- A MultiDatastream groups the observations of one Sensor on one Thing whose result is an array,
-- one value per ObservedProperty, in the order of its ObservedProperties (their position here),
-- with one unitOfMeasurement and one multiObservationDataType each.
--
-- Its observations are rows of `observation` like any other, under the datastream_id
-- -<MultiDatastream id> (a Datastream's ids are positive), the array in result_json. So they take
-- the ingest writer's path unchanged (COPY, first stored wins on (datastream_id,
-- phenomenon_time), partitions or chunks, retention), and `observation` keeps its row layout:
-- no column is added to it, no byte per observation (docs/store.md, docs/sensorthings.md).

create table multi_datastream (
    id                           bigserial primary key,
    name                         text not null,
    description                  text not null default '',
    observation_type             text not null
        default 'http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_ComplexObservation',
    multi_observation_data_types jsonb not null,
    unit_of_measurements         jsonb not null,
    thing_id                     bigint not null references thing (id) on delete cascade,
    sensor_id                    bigint not null references sensor (id),
    observed_area                geometry(Geometry, 4326),
    properties                   jsonb,
    constraint multi_datastream_arrays check (
        jsonb_typeof(multi_observation_data_types) = 'array'
        and jsonb_typeof(unit_of_measurements) = 'array'
        and jsonb_array_length(multi_observation_data_types) >= 1
        and jsonb_array_length(multi_observation_data_types)
            = jsonb_array_length(unit_of_measurements)
    )
);
create index multi_datastream_thing_idx on multi_datastream (thing_id);
create index multi_datastream_sensor_idx on multi_datastream (sensor_id);

-- The ObservedProperties of a MultiDatastream, in order (position 0, 1, …); one may appear twice
-- (the same quantity at two depths).
create table multi_datastream_observed_property (
    multi_datastream_id  bigint not null references multi_datastream (id) on delete cascade,
    position             integer not null check (position >= 0),
    observed_property_id bigint not null references observed_property (id),
    primary key (multi_datastream_id, position)
);
create index multi_datastream_observed_property_idx
    on multi_datastream_observed_property (observed_property_id);

-- Observations have no foreign key (partitions and hypertables carry none): a MultiDatastream
-- deleted by any path (the API's DELETE, its Thing's cascade, `quartier privacy erase`) takes its
-- observations and latest value with it.
create function quartier_multi_datastream_deleted() returns trigger language plpgsql as $$
begin
    delete from observation where datastream_id = -old.id;
    delete from observation_latest where datastream_id = -old.id;
    return old;
end $$;

create trigger multi_datastream_deleted after delete on multi_datastream
    for each row execute function quartier_multi_datastream_deleted();
