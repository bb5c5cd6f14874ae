-- Refused payloads are capped: one above ingest.reject_payload_max_bytes is kept as its first
-- that many bytes (payload_truncated), with its whole length (payload_bytes) and the sha256 of
-- the whole payload, which the writer now computes: the once-only index of 0020 keeps telling a
-- redelivery of a long payload from a different one with the same beginning. Old rejects are
-- deleted by the maintenance thread (database.reject_retention, by received_at, indexed in 0002).

alter table ingest_reject alter column payload_sha256 drop expression;

alter table ingest_reject
    add column payload_bytes integer,
    add column payload_truncated boolean not null default false;

update ingest_reject set payload_bytes = length(payload);
