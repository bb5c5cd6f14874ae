-- Observation on TimescaleDB: a hypertable on phenomenon_time.

create sequence observation_id_seq cache 1000;

create table observation (
    id              bigint not null default nextval('observation_id_seq'),
    datastream_id   bigint not null,
    phenomenon_time timestamptz not null,
    result          double precision,
    result_json     jsonb,
    result_time     timestamptz,
    parameters      jsonb,
    foi_id          bigint,
    primary key (datastream_id, phenomenon_time)
);

select create_hypertable('observation', by_range('phenomenon_time', interval '7 days'));

-- Same signature as the plain path so callers need not know the path; chunks are automatic.
create function quartier_ensure_observation_partitions(from_ts timestamptz, to_ts timestamptz)
returns integer language sql as $$ select 0 $$;
