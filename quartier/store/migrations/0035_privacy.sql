-- Privacy by design (issue #12 item 5, docs/privacy.md).
--
-- Crowdsourced rows are found by device (pseudonym) for access and erasure requests
-- (quartier privacy export|erase), and counted per cell by distinct device (k-anonymity).
create index if not exists speedtest_device_idx on speedtest (device_key);
create index if not exists mobile_measurement_device_idx on mobile_measurement (device_key);

-- One row per answered erasure request (DSGVO Art. 17), without the personal data: not the
-- device key nor its pseudonym, only the operator's case reference and how many rows of which
-- table were deleted (accountability, Art. 5(2)).
create table privacy_erasure (
    id         bigserial primary key,
    erased_at  timestamptz not null default now(),
    reference  text,
    deleted    jsonb not null
);
