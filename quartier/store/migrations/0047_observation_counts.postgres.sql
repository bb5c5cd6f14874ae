-- Exact counts of observations per datastream and UTC month, kept beside the packed daily rollup
-- (plain PostgreSQL; issue #13, `$count=true` on /Observations). The count of all Observations
-- (quartier.store.sensorthings_count) summed the n_all bytea of every packed daily row: 24,000
-- rows of about 1.3 kB for 5·10^7 observations, 80–100 ms. The same numbers, one narrow row
-- each, are summed in a few milliseconds.
--
-- A row here is the sum of n_all of the observation_1d_packed row with the same key, written by
-- a trigger on that table, so every path that writes or deletes packed rows (the refresh's
-- repack, rebuild, rollup retention, `quartier privacy erase`, a TRUNCATE) keeps it equal to
-- the packed row, in the same transaction. Which packed rows are trusted (months with their own
-- partition, not before the rollup floor, not dirty) is decided by the reader as before.
-- TimescaleDB has no packed rollups, hence no .timescaledb.sql of this number.

create table observation_1d_count (
    datastream_id bigint not null,
    start         timestamptz not null,  -- a UTC month, as observation_1d_packed.start
    n_all         bigint not null,
    primary key (datastream_id, start)
);

-- the sum of a packed column of big-endian int4 values
create function quartier_packed_int4_sum(b bytea) returns bigint
language sql immutable strict parallel safe as $$
    select coalesce(sum((get_byte(b, i)::bigint << 24) + (get_byte(b, i + 1) << 16)
                        + (get_byte(b, i + 2) << 8) + get_byte(b, i + 3)), 0)::bigint
    from generate_series(0, length(b) - 4, 4) as i
$$;

create function quartier_1d_packed_changed() returns trigger
language plpgsql security definer set search_path = public as $$
begin
    if tg_op in ('DELETE', 'UPDATE') then
        delete from observation_1d_count
        where datastream_id = old.datastream_id and start = old.start;
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        insert into observation_1d_count (datastream_id, start, n_all)
        values (new.datastream_id, new.start, quartier_packed_int4_sum(new.n_all))
        on conflict (datastream_id, start) do update set n_all = excluded.n_all;
    end if;
    return null;
end $$;

create function quartier_1d_packed_truncated() returns trigger
language plpgsql security definer set search_path = public as $$
begin
    truncate observation_1d_count;
    return null;
end $$;

create trigger observation_1d_packed_count
    after insert or update or delete on observation_1d_packed
    for each row execute function quartier_1d_packed_changed();

create trigger observation_1d_packed_count_truncate
    after truncate on observation_1d_packed
    for each statement execute function quartier_1d_packed_truncated();

insert into observation_1d_count (datastream_id, start, n_all)
select datastream_id, start, quartier_packed_int4_sum(n_all) from observation_1d_packed;
