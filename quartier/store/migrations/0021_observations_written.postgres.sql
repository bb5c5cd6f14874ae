-- What the ingester tells the store after it wrote a batch straight into observation (COPY, no
-- staging table): the 15-minute buckets it touched (kept in observation_dirty until
-- quartier.store.rollups.refresh() recomputes them) and the newest value per datastream.
-- The ingester computes both from the batch it holds, so no second pass over the rows is needed.
create function quartier_observations_written(
    dirty_ds bigint[], dirty_bucket timestamptz[],
    latest_ds bigint[], latest_time timestamptz[], latest_result double precision[]
) returns void language plpgsql as $$
begin
    insert into observation_dirty (datastream_id, bucket)
    select d, b from unnest(dirty_ds, dirty_bucket) as x(d, b)
    order by 1, 2
    on conflict do nothing;

    insert into observation_latest as l (datastream_id, phenomenon_time, result)
    select d, t, r from unnest(latest_ds, latest_time, latest_result) as x(d, t, r)
    order by 1
    on conflict (datastream_id) do update
        set phenomenon_time = excluded.phenomenon_time, result = excluded.result
        where excluded.phenomenon_time > l.phenomenon_time;
end $$;
