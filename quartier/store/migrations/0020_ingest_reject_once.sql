-- A refused message is kept once: a redelivery of the same bytes on the same topic (after a
-- crash between commit and acknowledgement) must not add a second reject row. Rows already
-- replayed do not count, so a message refused again after a replay is kept again.

alter table ingest_reject
    add column payload_sha256 bytea generated always as (sha256(payload)) stored;

delete from ingest_reject a
using ingest_reject b
where a.replayed_at is null and b.replayed_at is null
  and a.topic = b.topic and a.payload_sha256 = b.payload_sha256 and a.id > b.id;

create unique index ingest_reject_once_idx
    on ingest_reject (topic, payload_sha256) where replayed_at is null;
