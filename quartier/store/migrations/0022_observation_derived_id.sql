-- An Observation's @iot.id is derived from its primary key, "<datastream_id>:<µs since 1970>",
-- so GET Observations(id) is a primary-key lookup and no sequence column (8 bytes per row in the
-- heap) is stored. See docs/store.md.
alter table observation drop column id;
drop sequence if exists observation_id_seq;
