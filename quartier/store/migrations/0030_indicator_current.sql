-- The current value of every indicator per area and variant, as served by GET /indicators:
-- recomputed when its inputs change (a coverage run stored, a manual value recorded), by the
-- maintenance round and lazily on a read when older than the configured age
-- (quartier.evaluation.current). indicator_value keeps the history; this table only "now".

create table indicator_current (
    indicator_id text not null,
    scope_type   text not null,
    scope_code   text not null,
    scope_name   text not null default '',
    variant      text not null default '',
    period_start timestamptz,
    period_end   timestamptz,
    value        double precision,
    numerator    double precision,
    denominator  double precision,
    unit         text not null,
    origin       text not null check (origin in ('computed', 'manual')),
    source       text not null default '',
    computed_at  timestamptz not null,
    provenance   jsonb not null default '{}'::jsonb,
    -- the value as served (IndicatorValue as JSON), so a read joins text instead of re-encoding
    body         text not null,
    primary key (indicator_id, scope_type, scope_code, variant)
);

-- One row per catalogued indicator: when it was last refreshed, from which inputs (coverage run,
-- rollup range), and why it has no value if it has none.
create table indicator_refresh (
    indicator_id text primary key,
    refreshed_at timestamptz not null,
    note         text,
    inputs       jsonb not null default '{}'::jsonb
);
