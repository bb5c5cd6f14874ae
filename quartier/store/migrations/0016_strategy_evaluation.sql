-- Strategy evaluation runs: the strategy as evaluated, and one result per KPI and area, so the
-- changes between runs stay visible.

create table evaluation_run (
    id             bigserial primary key,
    strategy_id    text not null,
    strategy_title text not null,
    strategy_hash  text not null,
    strategy       jsonb not null,
    as_of          timestamptz not null,
    started_at     timestamptz not null default now(),
    summary        jsonb not null default '{}'::jsonb
);
create index evaluation_run_strategy_idx on evaluation_run (strategy_id, as_of);

create table evaluation_result (
    run_id         bigint not null references evaluation_run (id) on delete cascade,
    kpi_id         text not null,
    scope_type     text not null,
    scope_code     text not null,
    goal_id        text not null,
    indicator_id   text not null,
    status         text not null
        check (status in ('on_track', 'at_risk', 'off_track', 'no_data')),
    current_value  double precision,
    progress       double precision,
    projected      double precision,
    result         jsonb not null,
    primary key (run_id, kpi_id, scope_type, scope_code)
);
