-- API keys and the audit trail (docs/security.md, "HTTP API: keys, scopes, audit").
--
-- A key is shown once when it is made (`quartier keys add`) and stored only as the SHA-256 of
-- the whole token: the token is 32 random bytes, so a hash cannot be reversed by guessing, and
-- a lookup is one index probe. `prefix` (the token's first characters) names a key in lists and
-- logs without revealing it.
create table api_key (
    id            bigint generated always as identity primary key,
    name          text not null,
    prefix        text not null unique,
    token_sha256  bytea not null unique check (length(token_sha256) = 32),
    scopes        text[] not null check (cardinality(scopes) > 0),
    created_at    timestamptz not null default now(),
    created_by    text not null,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    revoked_by    text,
    last_used_at  timestamptz
);

-- One row per write: who (an API key, or the OS user of a command), what, when, from where.
-- Kept for database.audit_retention (`quartier db maintain` deletes older rows).
create table audit_event (
    id          bigint generated always as identity primary key,
    at          timestamptz not null default now(),
    actor       text not null,
    api_key_id  bigint references api_key (id) on delete set null,
    action      text not null,
    target      text,
    origin      text,
    detail      jsonb not null default '{}'
);
create index audit_event_at on audit_event (at);
create index audit_event_api_key on audit_event (api_key_id, at);
