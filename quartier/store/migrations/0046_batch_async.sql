-- Asynchronous SensorThings $batch requests (`Prefer: respond-async`, OData 4.01 Protocol
-- 11.7.8; issue #13 item 4): the status monitor's state. One row per batch sent
-- asynchronously, readable only with the API key that sent it (api_key_id), kept until
-- expires_at (api.batch_async_keep_seconds after it was sent). The API process that took the
-- batch runs it and then stores its whole answer here, so any API process (serve --workers N)
-- answers the status monitor: 202 while finished_at is null, the stored answer once it is set.
create table batch_async (
    id                  uuid primary key,
    api_key_id          bigint not null references api_key (id) on delete cascade,
    created_at          timestamptz not null default now(),
    expires_at          timestamptz not null,
    finished_at         timestamptz,
    status              int,
    content_type        text,
    preference_applied  text,
    body                bytea
);
create index batch_async_expires_idx on batch_async (expires_at);
