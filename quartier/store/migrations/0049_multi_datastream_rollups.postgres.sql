-- A deleted MultiDatastream takes its rollup rows with it (plain PostgreSQL path).
-- Its observations are stored under datastream_id = -id, which no foreign key can tie to
-- multi_datastream, so 0040's trigger deletes its raw rows and its latest value by hand. It did
-- not delete the rollups (15 min, 1 h, 1 day, their packed forms and the dirty marks): after a
-- DELETE through the API they stayed behind, readable by nothing but counted by nothing either.
-- The trigger now takes them too, whichever path deletes the MultiDatastream (the API's
-- DELETE, its Thing's cascade, `quartier privacy erase`). observation_1d_count (0047) and
-- observation_1h_means (0048) follow their packed tables through those tables' own triggers.
-- TimescaleDB's rollups are continuous aggregates that refresh from the raw rows: no
-- .timescaledb.sql of this number.
create or replace function quartier_multi_datastream_deleted() returns trigger language plpgsql as $$
begin
    delete from observation where datastream_id = -old.id;
    delete from observation_latest where datastream_id = -old.id;
    delete from observation_15m where datastream_id = -old.id;
    delete from observation_1h where datastream_id = -old.id;
    delete from observation_1d where datastream_id = -old.id;
    delete from observation_1h_packed where datastream_id = -old.id;
    delete from observation_1d_packed where datastream_id = -old.id;
    delete from observation_dirty where datastream_id = -old.id;
    return old;
end $$;
