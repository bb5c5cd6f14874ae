-- See the .postgres variant. On TimescaleDB the continuous aggregates track changes themselves;
-- only the newest value per datastream is kept here.
create function quartier_observations_written(
    dirty_ds bigint[], dirty_bucket timestamptz[],
    latest_ds bigint[], latest_time timestamptz[], latest_result double precision[]
) returns void language plpgsql as $$
begin
    insert into observation_latest as l (datastream_id, phenomenon_time, result)
    select d, t, r from unnest(latest_ds, latest_time, latest_result) as x(d, t, r)
    order by 1
    on conflict (datastream_id) do update
        set phenomenon_time = excluded.phenomenon_time, result = excluded.result
        where excluded.phenomenon_time > l.phenomenon_time;
end $$;
