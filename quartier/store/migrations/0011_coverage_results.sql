-- Coverage-gap analysis results, one set per run. Cell polygons are not stored: a cell is its
-- lower-left corner (e, n) in EPSG:3035; the view coverage_cell_geom adds the INSPIRE cell id and
-- the polygon (EPSG:4326) for PostGIS users. class_key is null for cells without households and offers.

create table coverage_run (
    id           bigserial primary key,
    created_at   timestamptz not null default now(),
    profile      text not null,
    parameters   jsonb not null,
    inputs       jsonb not null,
    classes      jsonb not null,
    operators    text[] not null default '{}',
    technologies text[] not null default '{}'
);

create table coverage_cell (
    run_id               bigint not null references coverage_run (id) on delete cascade,
    e                    integer not null,
    n                    integer not null,
    district_code        text,
    households           integer not null,
    addresses            integer not null,
    best_technology      text,
    max_down_mbps        real,
    max_up_mbps          real,
    class_key            text,
    is_gap               boolean not null,
    n_tests              integer not null,
    measured_down_mbps   real,
    measured_ratio       real,
    disagreement         text check (disagreement in ('below', 'above')),
    n_signal             integer not null,
    mobile_mask          integer not null,
    operators_measured   smallint not null,
    operators_4g         smallint not null,
    operators_5g         smallint not null,
    dead_zone            boolean not null,
    single_operator      boolean not null,
    cluster_id           integer,
    primary key (run_id, n, e)
);

create table coverage_gap (
    run_id             bigint not null references coverage_run (id) on delete cascade,
    cluster_id         integer not null,
    rank               integer not null,
    cells              integer not null,
    households         integer not null,
    area_km2           double precision not null,
    district_codes     text not null,
    worst_class        text not null,
    severity           double precision not null,
    distance_gigabit_m double precision,
    priority           double precision not null,
    geom               geometry(MultiPolygon, 4326) not null,
    primary key (run_id, cluster_id)
);
create index coverage_gap_geom_idx on coverage_gap using gist (geom);
create index coverage_gap_rank_idx on coverage_gap (run_id, rank);

create table coverage_district (
    run_id        bigint not null references coverage_run (id) on delete cascade,
    code          text not null,
    name          text not null,
    households    integer not null,
    cells         integer not null,
    classes       jsonb not null,
    mobile        jsonb not null,
    geom          geometry(MultiPolygon, 4326),
    primary key (run_id, code)
);

create view coverage_cell_geom as
select 'CRS3035RES100mN' || c.n || 'E' || c.e as cell_id, c.*,
       ST_Transform(ST_MakeEnvelope(c.e, c.n, c.e + 100, c.n + 100, 3035), 4326) as geom
from coverage_cell c;
