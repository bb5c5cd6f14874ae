-- PostGIS for every geometry. TimescaleDB is enabled by the runner when the server has it.
create extension if not exists postgis;

create table if not exists quartier_meta (
    key   text primary key,
    value text not null
);
