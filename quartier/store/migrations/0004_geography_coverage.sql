-- Reference geography and crowdsourced coverage measurements.

create table district (
    id          bigserial primary key,
    level       text not null check (level in ('city', 'stadtbezirk', 'stadtteil')),
    code        text not null,
    name        text not null,
    parent_code text,
    population  integer,
    geom        geometry(MultiPolygon, 4326) not null,
    unique (level, code)
);
create index district_geom_idx on district using gist (geom);

create table speedtest (
    id            bigserial primary key,
    measured_at   timestamptz not null,
    source        text not null,
    device_key    text not null,
    geom          geometry(Point, 4326) not null,
    download_mbps real not null,
    upload_mbps   real,
    latency_ms    real,
    technology    text,
    operator      text,
    received_at   timestamptz not null default now(),
    unique (source, device_key, measured_at)
);
create index speedtest_geom_idx on speedtest using gist (geom);
create index speedtest_time_idx on speedtest (measured_at);
