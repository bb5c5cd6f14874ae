-- The SensorThings API v1.1 core model (except Observation, see 0003).

create table thing (
    id          bigserial primary key,
    name        text not null,
    description text not null default '',
    properties  jsonb
);

create table location (
    id            bigserial primary key,
    name          text not null,
    description   text not null default '',
    encoding_type text not null default 'application/geo+json',
    location      geometry(Geometry, 4326) not null,
    properties    jsonb
);
create index location_geom_idx on location using gist (location);

create table thing_location (
    thing_id    bigint not null references thing (id) on delete cascade,
    location_id bigint not null references location (id) on delete cascade,
    primary key (thing_id, location_id)
);
create index thing_location_location_idx on thing_location (location_id);

create table historical_location (
    id       bigserial primary key,
    thing_id bigint not null references thing (id) on delete cascade,
    time     timestamptz not null
);
create index historical_location_thing_idx on historical_location (thing_id, time);

create table historical_location_location (
    historical_location_id bigint not null references historical_location (id) on delete cascade,
    location_id            bigint not null references location (id) on delete cascade,
    primary key (historical_location_id, location_id)
);

create table sensor (
    id            bigserial primary key,
    name          text not null,
    description   text not null default '',
    encoding_type text not null default 'text/html',
    metadata      text not null default '',
    properties    jsonb
);

create table observed_property (
    id          bigserial primary key,
    name        text not null,
    definition  text not null unique,
    description text not null default '',
    properties  jsonb
);

create table datastream (
    id                   bigserial primary key,
    name                 text not null,
    description          text not null default '',
    observation_type     text not null
        default 'http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement',
    unit_of_measurement  jsonb not null,
    thing_id             bigint not null references thing (id) on delete cascade,
    sensor_id            bigint not null references sensor (id),
    observed_property_id bigint not null references observed_property (id),
    observed_area        geometry(Geometry, 4326),
    properties           jsonb
);
create index datastream_thing_idx on datastream (thing_id);

create table feature_of_interest (
    id            bigserial primary key,
    name          text not null,
    description   text not null default '',
    encoding_type text not null default 'application/geo+json',
    feature       geometry(Geometry, 4326) not null,
    properties    jsonb
);

-- Device registry: how a device on a network maps to its Thing and Datastreams.
create table device (
    id              bigserial primary key,
    network         text not null,
    device_key      text not null,
    thing_id        bigint not null references thing (id) on delete cascade,
    decoder         text not null default 'native',
    model           text,
    credentials     jsonb,
    auto_registered boolean not null default false,
    created_at      timestamptz not null default now(),
    unique (network, device_key)
);

create table device_datastream (
    device_id     bigint not null references device (id) on delete cascade,
    quantity      text not null,
    datastream_id bigint not null references datastream (id) on delete cascade,
    primary key (device_id, quantity)
);

-- Everything the ingester could not accept, with the raw bytes and the reason: nothing is dropped.
create table ingest_reject (
    id          bigserial primary key,
    received_at timestamptz not null default now(),
    source      text not null default 'mqtt',
    topic       text not null,
    payload     bytea not null,
    reason      text not null,
    detail      text not null,
    replayed_at timestamptz
);
create index ingest_reject_received_idx on ingest_reject (received_at);
create index ingest_reject_reason_idx on ingest_reject (reason);
