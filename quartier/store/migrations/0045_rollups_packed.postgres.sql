-- Packed rollups (plain PostgreSQL; issue #14 item 5): the hourly rollup packed per datastream
-- and UTC day, the daily rollup packed per datastream and UTC month. A month of hourly means for
-- 100 datastreams is then about 3,100 rows instead of 72,000 (a year of daily means about 1,300
-- instead of 36,500), each decoded by numpy in one piece (quartier.store.timeseries).
--
-- One row holds the buckets of observation_1h (observation_1d) inside [start, start + 1 day)
-- ([start, start + 1 month)) that have observations, in bucket order, as one bytea per column of
-- the rollup, big-endian (what int8send / int4send / float8send write):
--   t      int8    bucket start, seconds since 1970
--   n_all  int4    observations
--   n      int4    observations with a numeric result
--   s, lo, hi float8  sum, min, max of the numeric results; NaN where n = 0
-- The values are the rollup's own (float8, not rounded): answers read from a packed row are the
-- same numbers as those read from the rollup rows.
--
-- Kept by the same path that keeps the rollups, in the same transaction: quartier.store.rollups
-- (refresh: the days and months that hold a recomputed bucket are packed again from the rollup;
-- rebuild: the range; retention: the rows before the cutoff). Until then a dirty bucket is read
-- from raw rows, as for the rollup rows. TimescaleDB has no packed rollups (its continuous
-- aggregates are read as before), hence no .timescaledb.sql of this number.

create table observation_1h_packed (
    datastream_id bigint not null,
    start         timestamptz not null,  -- a UTC day
    t             bytea not null,
    n_all         bytea not null,
    n             bytea not null,
    s             bytea not null,
    lo            bytea not null,
    hi            bytea not null,
    primary key (datastream_id, start)
);

create table observation_1d_packed (like observation_1h_packed including all);
comment on column observation_1d_packed.start is 'a UTC month';

-- the rollups stored so far
insert into observation_1h_packed (datastream_id, start, t, n_all, n, s, lo, hi)
select datastream_id, date_trunc('day', bucket, 'UTC'),
       string_agg(int8send(extract(epoch from bucket)::int8), ''::bytea order by bucket),
       string_agg(int4send(n_all), ''::bytea order by bucket),
       string_agg(int4send(n), ''::bytea order by bucket),
       string_agg(float8send(coalesce(s, 'NaN')), ''::bytea order by bucket),
       string_agg(float8send(coalesce(lo, 'NaN')), ''::bytea order by bucket),
       string_agg(float8send(coalesce(hi, 'NaN')), ''::bytea order by bucket)
from observation_1h
group by 1, 2;

insert into observation_1d_packed (datastream_id, start, t, n_all, n, s, lo, hi)
select datastream_id, date_trunc('month', bucket, 'UTC'),
       string_agg(int8send(extract(epoch from bucket)::int8), ''::bytea order by bucket),
       string_agg(int4send(n_all), ''::bytea order by bucket),
       string_agg(int4send(n), ''::bytea order by bucket),
       string_agg(float8send(coalesce(s, 'NaN')), ''::bytea order by bucket),
       string_agg(float8send(coalesce(lo, 'NaN')), ''::bytea order by bucket),
       string_agg(float8send(coalesce(hi, 'NaN')), ''::bytea order by bucket)
from observation_1d
group by 1, 2;
