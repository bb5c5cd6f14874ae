-- The maps' layers of a coverage run, computed once when the run is stored (issue #15 item 4,
-- quartier/maps/layers.py and layer_store.py) so that /maps/mobile, /maps/measured and the
-- broadband map read stored geometry instead of merging 36,000 cells and counting a million
-- signal measurements per request.
--
-- coverage_map: the run's layers exist, built at privacy threshold min_contributors (k); a page
--   asked at a higher k is drawn from the run's cells and coverage_map_cell's device counts.
-- coverage_map_layer: one layer of one map (map 'mobile' | 'measured' | 'coverage', layer a key
--   such as 'measured', 'op:0:4G', 'dead', 'compared', 'below', 'supply'): a GeoJSON
--   FeatureCollection as text (EPSG:4326, coordinates rounded to 1e-5 degrees, about 1 m; equal
--   neighbouring cells merged into polygons where the layer has no per-cell tooltip), the cells
--   it holds and what the legend needs (meta).
-- coverage_map_cell: per cell with speed tests or signal measurements of the run, the distinct
--   devices (pseudonyms) behind them when the run was stored; only cells that met k then are in
--   the run at all (docs/privacy.md), so no count below k is stored.
create table coverage_map (
    run_id           bigint primary key references coverage_run (id) on delete cascade,
    min_contributors integer not null,
    made_at          timestamptz not null default now()
);

create table coverage_map_layer (
    run_id  bigint not null references coverage_map (run_id) on delete cascade,
    map     text not null check (map in ('mobile', 'measured', 'coverage')),
    layer   text not null,
    ord     integer not null,
    cells   integer not null,
    meta    jsonb not null default '{}',
    geojson text not null,
    primary key (run_id, map, layer)
);

create table coverage_map_cell (
    run_id         bigint not null references coverage_map (run_id) on delete cascade,
    e              integer not null,
    n              integer not null,
    test_devices   integer not null,
    signal_devices integer not null,
    primary key (run_id, n, e)
);
