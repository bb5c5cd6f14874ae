-- Per-device credentials (issue #12): the accounts `quartier devices add` issues. The same
-- password logs the device in to the MQTT broker (its dynamic-security plugin holds its own hash)
-- and authenticates its Sensor.Community HTTP pushes (HTTP Basic, checked against this table).
-- Only a salted hash is kept (quartier.store.credentials); the password is shown once.
-- kind: 'device' publishes to quartier/v1/{network}/{device}/+, 'network' (device '*') to every
-- device of its network, 'tts' (network 'tts', device 'app@tenant') to The Things Stack's
-- v3/{app}@{tenant}/devices/+/up.
create table device_credential (
    username text primary key,
    network text not null,
    device text not null,
    kind text not null check (kind in ('device', 'network', 'tts')),
    password_hash text not null,
    created_at timestamptz not null default now(),
    rotated_at timestamptz,
    revoked_at timestamptz,
    unique (network, device)
);
