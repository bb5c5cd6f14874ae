-- Indicator values with provenance: computed from the store (one row per indicator, area,
-- variant and period; recomputing the same period replaces it) or recorded by hand (manual,
-- with source; the same period and source replaces it).

create table indicator_value (
    id           bigserial primary key,
    indicator_id text not null,
    scope_type   text not null,
    scope_code   text not null,
    scope_name   text not null default '',
    variant      text not null default '',
    period_start timestamptz,
    period_end   timestamptz not null,
    value        double precision,
    numerator    double precision,
    denominator  double precision,
    unit         text not null,
    origin       text not null check (origin in ('computed', 'manual')),
    source       text not null default '',
    computed_at  timestamptz not null,
    recorded_at  timestamptz not null default now(),
    provenance   jsonb not null default '{}'::jsonb,
    unique nulls not distinct
        (indicator_id, scope_type, scope_code, variant, period_start, period_end, origin, source)
);
create index indicator_value_series_idx
    on indicator_value (indicator_id, scope_type, scope_code, variant, period_end);
