-- Time-series store on plain PostgreSQL: what TimescaleDB gives the other path, built by hand.
--
-- * observation_latest: the newest observation per datastream (maps ask for thousands at once).
-- * observation_15m / _1h / _1d: rollups (count, count of numeric results, sum, min, max) on a
--   UTC grid (origin 2000-01-03, a Monday, like time_bucket). 15 min is computed from raw rows,
--   1 h from 15 min, 1 day from 1 h. They are never rebuilt in full: the ingester marks the
--   15-minute buckets each batch touched in observation_dirty (quartier_observations_staged()),
--   quartier.store.rollups.refresh() recomputes exactly those buckets, and until it has, queries
--   read dirty buckets from raw rows (quartier.store.timeseries), so answers are always current.
-- * A BRIN index on phenomenon_time for scans across all datastreams (rollup backfill, retention);
--   the primary key btree (datastream_id, phenomenon_time) serves everything per datastream.
-- * quartier_drop_observation_partitions(): retention by dropping whole monthly partitions.
-- * observation_partition_compacted: monthly partitions whose primary key index was rebuilt
--   (packed) once the month was closed, by quartier.store.rollups.compact(); the plain path's
--   counterpart of compressing a chunk. Rows arriving in time order leave the index about 70 %
--   full; rebuilt it is 90 % full (about 10 bytes less per observation).

create index observation_time_brin on observation using brin (phenomenon_time)
    with (pages_per_range = 32);

create table observation_latest (
    datastream_id   bigint primary key,
    phenomenon_time timestamptz not null,
    result          double precision
);

create table observation_partition_compacted (
    relname      text primary key,
    compacted_at timestamptz not null default now()
);

create table observation_dirty (
    datastream_id bigint not null,
    bucket        timestamptz not null,  -- start of a 15-minute bucket
    primary key (datastream_id, bucket)
);

create table observation_15m (
    datastream_id bigint not null,
    bucket        timestamptz not null,
    n_all         integer not null,           -- observations
    n             integer not null,           -- observations with a numeric result
    s             double precision,           -- sum of the numeric results
    lo            double precision,           -- min
    hi            double precision,           -- max
    primary key (datastream_id, bucket)
);
-- Hours and days are read in long ranges for many datastreams: their primary key carries every
-- column, so those reads are index-only scans (no heap page per bucket).
create table observation_1h (
    like observation_15m,
    primary key (datastream_id, bucket) include (n_all, n, s, lo, hi)
);
create table observation_1d (
    like observation_15m,
    primary key (datastream_id, bucket) include (n_all, n, s, lo, hi)
);
create index observation_15m_bucket_brin on observation_15m using brin (bucket);
create index observation_1h_bucket_brin on observation_1h using brin (bucket);
create index observation_1d_bucket_brin on observation_1d using brin (bucket);

-- Observations stored before this migration: latest values now, rollups by the refresh job.
insert into observation_latest (datastream_id, phenomenon_time, result)
select distinct on (datastream_id) datastream_id, phenomenon_time, result
from observation order by datastream_id, phenomenon_time desc;
insert into observation_dirty (datastream_id, bucket)
select distinct datastream_id,
       date_bin('15 minutes', phenomenon_time, timestamptz '2000-01-03 00:00:00+00')
from observation;

-- Called by the ingest writer once per batch, in the batch's transaction, right after
-- INSERT INTO observation ... SELECT ... FROM _obs_stage. One round trip; reads only the stage.
-- Ties on the newest time keep the first staged row, as the observation insert does.
create function quartier_observations_staged() returns void language plpgsql as $$
begin
    insert into observation_dirty (datastream_id, bucket)
    select distinct datastream_id,
           date_bin('15 minutes', phenomenon_time, timestamptz '2000-01-03 00:00:00+00')
    from _obs_stage
    order by 1, 2
    on conflict do nothing;

    insert into observation_latest as l (datastream_id, phenomenon_time, result)
    select distinct on (datastream_id) datastream_id, phenomenon_time, result
    from _obs_stage
    order by datastream_id, phenomenon_time desc, ctid
    on conflict (datastream_id) do update
        set phenomenon_time = excluded.phenomenon_time, result = excluded.result
        where excluded.phenomenon_time > l.phenomenon_time;
end $$;

-- Retention: drop the monthly partitions that end at or before older_than, and delete what the
-- default partition holds before the start of older_than's month. Returns the dropped tables.
create function quartier_drop_observation_partitions(older_than timestamptz)
returns setof text language plpgsql as $$
declare
    cutoff timestamptz := date_trunc('month', older_than at time zone 'UTC') at time zone 'UTC';
    part   record;
begin
    for part in
        select c.relname
        from pg_inherits i
        join pg_class c on c.oid = i.inhrelid
        where i.inhparent = 'observation'::regclass and c.relname ~ '^observation_p[0-9]{6}$'
        order by c.relname
    loop
        if (to_date(substr(part.relname, 14), 'YYYYMM') + interval '1 month')::timestamp
               at time zone 'UTC' <= cutoff then
            execute format('drop table %I', part.relname);
            return next part.relname;
        end if;
    end loop;
    delete from observation_default where phenomenon_time < cutoff;
end $$;
