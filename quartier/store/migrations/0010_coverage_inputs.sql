-- Coverage-gap analysis inputs: households, fixed broadband offers, mobile signal measurements.
-- Every point table carries the INSPIRE 100 m cell of its point (lower-left corner in EPSG:3035
-- metres) as generated columns, so the analysis reads integer cells and never projects points.

create or replace function quartier_cell_e(g geometry) returns integer
    language sql immutable strict parallel safe
    as $$ select (floor(ST_X(ST_Transform(g, 3035)) / 100) * 100)::integer $$;
create or replace function quartier_cell_n(g geometry) returns integer
    language sql immutable strict parallel safe
    as $$ select (floor(ST_Y(ST_Transform(g, 3035)) / 100) * 100)::integer $$;

-- Households per address point, or per grid cell (stored at the cell centre).
create table household (
    id          bigserial primary key,
    source      text not null,
    address_key text,
    households  integer not null check (households >= 0),
    geom        geometry(Point, 4326) not null,
    cell_e      integer generated always as (quartier_cell_e(geom)) stored,
    cell_n      integer generated always as (quartier_cell_n(geom)) stored
);
create index household_geom_idx on household using gist (geom);
create index household_address_idx on household (source, address_key);

-- Fixed broadband supply per address point or grid cell (at the cell centre).
create table broadband_offer (
    id             bigserial primary key,
    source         text not null,
    address_key    text,
    technology     text not null check (technology in ('ftth', 'fttb', 'hfc', 'vdsl', 'adsl', 'fwa', 'other')),
    max_down_mbps  real not null check (max_down_mbps >= 0),
    max_up_mbps    real check (max_up_mbps >= 0),
    operator       text,
    valid_on       date,
    geom           geometry(Point, 4326) not null,
    cell_e         integer generated always as (quartier_cell_e(geom)) stored,
    cell_n         integer generated always as (quartier_cell_n(geom)) stored,
    imported_at    timestamptz not null default now()
);
create index broadband_offer_geom_idx on broadband_offer using gist (geom);

-- Crowdsourced mobile signal measurements (written by the ingester). rsrp_dbm/rsrq_db for 4G/5G
-- (for 5G the SS-RSRP/SS-RSRQ); for 2G, which has no RSRP, rssi_dbm.
create table mobile_measurement (
    id           bigserial primary key,
    measured_at  timestamptz not null,
    source       text not null,
    device_key   text not null,
    geom         geometry(Point, 4326) not null,
    technology   text not null check (technology in ('2G', '3G', '4G', '5G')),
    operator     text not null,
    rsrp_dbm     real check (rsrp_dbm between -160 and -20),
    rsrq_db      real check (rsrq_db between -40 and 10),
    rssi_dbm     real check (rssi_dbm between -130 and 0),
    received_at  timestamptz not null default now(),
    cell_e       integer generated always as (quartier_cell_e(geom)) stored,
    cell_n       integer generated always as (quartier_cell_n(geom)) stored,
    unique (source, device_key, measured_at)
);
create index mobile_measurement_geom_idx on mobile_measurement using gist (geom);
create index mobile_measurement_time_idx on mobile_measurement (measured_at);
-- the analysis lists the operators with a loose index scan
create index mobile_measurement_operator_idx on mobile_measurement (operator);

alter table speedtest
    add column cell_e integer generated always as (quartier_cell_e(geom)) stored,
    add column cell_n integer generated always as (quartier_cell_n(geom)) stored;
