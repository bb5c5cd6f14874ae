-- Time-series store on TimescaleDB (the TimescaleDB-specific SQL beside this file lives in
-- quartier/store/timescale.py). Same relations, same columns as the plain path:
--
-- * observation_latest: the newest observation per datastream, kept by the ingest writer.
-- * compression: segment by datastream, order by time, policy after 7 days (changed from settings
--   by quartier.store.timescale.configure()).
-- * observation_15m / _1h / _1d: continuous aggregates with real-time aggregation
--   (materialized_only = false) and refresh policies, created WITH NO DATA so that this file
--   can run in a transaction; the policies (or a refresh) fill them.

alter table observation set (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'datastream_id',
    timescaledb.compress_orderby = 'phenomenon_time desc'
);
select add_compression_policy('observation', compress_after => interval '7 days');

create table observation_latest (
    datastream_id   bigint primary key,
    phenomenon_time timestamptz not null,
    result          double precision
);

create materialized view observation_15m
with (timescaledb.continuous, timescaledb.materialized_only = false) as
select datastream_id,
       time_bucket(interval '15 minutes', phenomenon_time) as bucket,
       count(*) as n_all, count(result) as n, sum(result) as s, min(result) as lo,
       max(result) as hi
from observation group by 1, 2
with no data;

create materialized view observation_1h
with (timescaledb.continuous, timescaledb.materialized_only = false) as
select datastream_id,
       time_bucket(interval '1 hour', phenomenon_time) as bucket,
       count(*) as n_all, count(result) as n, sum(result) as s, min(result) as lo,
       max(result) as hi
from observation group by 1, 2
with no data;

create materialized view observation_1d
with (timescaledb.continuous, timescaledb.materialized_only = false) as
select datastream_id,
       time_bucket(interval '1 day', phenomenon_time) as bucket,
       count(*) as n_all, count(result) as n, sum(result) as s, min(result) as lo,
       max(result) as hi
from observation group by 1, 2
with no data;

select add_continuous_aggregate_policy('observation_15m', start_offset => interval '3 days',
    end_offset => interval '15 minutes', schedule_interval => interval '5 minutes');
select add_continuous_aggregate_policy('observation_1h', start_offset => interval '7 days',
    end_offset => interval '1 hour', schedule_interval => interval '15 minutes');
select add_continuous_aggregate_policy('observation_1d', start_offset => interval '31 days',
    end_offset => interval '1 day', schedule_interval => interval '1 hour');

-- Observations stored before this migration: latest values now; the aggregates are materialized
-- over their whole range by quartier.store.timescale.configure() (not possible in a transaction).
insert into observation_latest (datastream_id, phenomenon_time, result)
select distinct on (datastream_id) datastream_id, phenomenon_time, result
from observation order by datastream_id, phenomenon_time desc;

-- Called by the ingest writer once per batch, in the batch's transaction, right after
-- INSERT INTO observation ... SELECT ... FROM _obs_stage (continuous aggregates track
-- invalidations themselves, so only the latest values are kept here).
create function quartier_observations_staged() returns void language plpgsql as $$
begin
    insert into observation_latest as l (datastream_id, phenomenon_time, result)
    select distinct on (datastream_id) datastream_id, phenomenon_time, result
    from _obs_stage
    order by datastream_id, phenomenon_time desc, ctid
    on conflict (datastream_id) do update
        set phenomenon_time = excluded.phenomenon_time, result = excluded.result
        where excluded.phenomenon_time > l.phenomenon_time;
end $$;

-- Retention is a TimescaleDB policy (quartier.store.timescale.configure()); this exists so that
-- callers need not know the path.
create function quartier_drop_observation_partitions(older_than timestamptz)
returns setof text language sql as $$
    select c::text from drop_chunks('observation', older_than => older_than) c
$$;
