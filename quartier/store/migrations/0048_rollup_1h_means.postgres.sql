-- Hourly sums and means from a narrow copy of the packed hourly rollup (plain PostgreSQL; issue
-- #14, store targets). A month of hourly means for 100 datastreams read about 3,100 rows of
-- observation_1h_packed, about 1.1 kB each (t, n_all, n, s, lo, hi), on about 600 heap pages: at
-- 5·10^7 observations that table (810 MB) does not fit shared_buffers, so most of those pages
-- were read from the kernel (or the disk) at each request, although avg and sum need only n and
-- s. This table holds just those, about 330 bytes a row (about 130 pages for the same request).
--
-- A row here is the row of observation_1h_packed with the same key, projected: n and s as
-- there (big-endian int4 and float8 per bucket), t as there when the day row lacks some hour
-- and otherwise (all 24 hours) only its first bucket time, the way the packed read sends it
-- (quartier.store.timeseries). It is written by a trigger on observation_1h_packed, so every
-- path that writes or deletes packed rows (the refresh's repack, rebuild, rollup retention,
-- `quartier privacy erase`, a TRUNCATE) keeps it equal to the packed row, in the same
-- transaction (as 0047 does for the daily counts). TimescaleDB has no packed rollups, hence no
-- .timescaledb.sql of this number.

create table observation_1h_means (
    datastream_id bigint not null,
    start         timestamptz not null,  -- a UTC day, as observation_1h_packed.start
    t             bytea not null,
    n             bytea not null,
    s             bytea not null,
    primary key (datastream_id, start)
);

create function quartier_1h_packed_changed() returns trigger
language plpgsql security definer set search_path = public as $$
begin
    if tg_op = 'DELETE' or (tg_op = 'UPDATE' and (old.datastream_id, old.start)
                                                 is distinct from (new.datastream_id, new.start))
    then
        delete from observation_1h_means
        where datastream_id = old.datastream_id and start = old.start;
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        insert into observation_1h_means (datastream_id, start, t, n, s)
        values (new.datastream_id, new.start,
                case when length(new.t) = 192 then substring(new.t from 1 for 8) else new.t end,
                new.n, new.s)
        on conflict (datastream_id, start)
            do update set t = excluded.t, n = excluded.n, s = excluded.s;
    end if;
    return null;
end $$;

create function quartier_1h_packed_truncated() returns trigger
language plpgsql security definer set search_path = public as $$
begin
    truncate observation_1h_means;
    return null;
end $$;

create trigger observation_1h_packed_means
    after insert or update or delete on observation_1h_packed
    for each row execute function quartier_1h_packed_changed();

create trigger observation_1h_packed_means_truncate
    after truncate on observation_1h_packed
    for each statement execute function quartier_1h_packed_truncated();

-- in key order: a datastream's days on neighbouring pages (a month of one datastream on 2 pages
-- instead of the 3-4 the packed rows' order gives)
insert into observation_1h_means (datastream_id, start, t, n, s)
select datastream_id, start,
       case when length(t) = 192 then substring(t from 1 for 8) else t end, n, s
from observation_1h_packed
order by datastream_id, start;
