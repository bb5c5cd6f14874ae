-- A PostGIS STAND-IN for the PGlite test engine. It is NOT PostGIS and does no geometry.
--
-- PGlite with TimescaleDB has no PostGIS (PostGIS built for other PGlite versions does not load
-- into it), so Quartier's migrations, which start with `create extension postgis`, could not run
-- there. server.mjs installs this file as the extension `postgis` (only with --postgis-standin) so
-- that the real migration runner applies every migration unchanged on the TimescaleDB engine.
--
-- What it provides: a `geometry` type that takes and ignores type modifiers (geometry(Point,
-- 4326)) and stores its input text as is (EWKT such as 'SRID=4326;POINT(13.4 52.5)'), a default
-- GiST operator class (btree_gist's bytea support functions: an ordinary ordered index, no spatial
-- search), and the handful of ST_ functions the migrations and the ingest writer call. ST_X/ST_Y
-- read the first coordinate pair; ST_Transform only relabels the SRID (NO reprojection);
-- ST_PointOnSurface returns the first vertex; ST_Intersects is always true. Anything spatial
-- tested through it proves nothing: spatial behaviour is covered by the PostgreSQL/PostGIS tests.

create type geometry;

create function geometry_in(cstring) returns geometry
    language internal immutable strict parallel safe as 'textin';
create function geometry_out(geometry) returns cstring
    language internal immutable strict parallel safe as 'textout';
create function geometry_recv(internal) returns geometry
    language internal immutable strict parallel safe as 'textrecv';
create function geometry_send(geometry) returns bytea
    language internal immutable strict parallel safe as 'textsend';
-- geometry(Point, 4326): accepted, not enforced
create function geometry_typmod_in(cstring[]) returns integer
    language sql immutable strict parallel safe as $$ select -1 $$;

create type geometry (
    input = geometry_in, output = geometry_out, receive = geometry_recv, send = geometry_send,
    typmod_in = geometry_typmod_in, internallength = variable, storage = extended,
    alignment = int4
);

create cast (text as geometry) without function as implicit;
create cast (geometry as text) without function;
create cast (varchar as geometry) without function as implicit;

-- byte-wise ordering (what btree_gist's bytea operator class expects)
create function geometry_lt(geometry, geometry) returns boolean
    language internal immutable strict parallel safe as 'bytealt';
create function geometry_le(geometry, geometry) returns boolean
    language internal immutable strict parallel safe as 'byteale';
create function geometry_eq(geometry, geometry) returns boolean
    language internal immutable strict parallel safe as 'byteaeq';
create function geometry_ge(geometry, geometry) returns boolean
    language internal immutable strict parallel safe as 'byteage';
create function geometry_gt(geometry, geometry) returns boolean
    language internal immutable strict parallel safe as 'byteagt';
create function geometry_cmp(geometry, geometry) returns integer
    language internal immutable strict parallel safe as 'byteacmp';
create operator < (leftarg = geometry, rightarg = geometry, function = geometry_lt);
create operator <= (leftarg = geometry, rightarg = geometry, function = geometry_le);
create operator = (leftarg = geometry, rightarg = geometry, function = geometry_eq);
create operator >= (leftarg = geometry, rightarg = geometry, function = geometry_ge);
create operator > (leftarg = geometry, rightarg = geometry, function = geometry_gt);

create operator class btree_geometry_ops default for type geometry using btree as
    operator 1 <, operator 2 <=, operator 3 =, operator 4 >=, operator 5 >,
    function 1 geometry_cmp(geometry, geometry);

create operator class gist_geometry_ops default for type geometry using gist as
    operator 1 <, operator 2 <=, operator 3 =, operator 4 >=, operator 5 >,
    function 1 gbt_bytea_consistent(internal, bytea, int2, oid, internal),
    function 2 gbt_bytea_union(internal, internal),
    function 3 gbt_bytea_compress(internal),
    function 4 gbt_var_decompress(internal),
    function 5 gbt_bytea_penalty(internal, internal, internal),
    function 6 gbt_bytea_picksplit(internal, internal),
    function 7 gbt_bytea_same(gbtreekey_var, gbtreekey_var, internal),
    storage gbtreekey_var;

-- ---------------------------------------------------------------- the few ST_ functions used
create function _standin_body(g geometry) returns text
    language sql immutable strict parallel safe
    as $$ select regexp_replace(g::text, '^SRID=\d+;', '') $$;

create function _standin_coord(g geometry, i integer) returns double precision
    language sql immutable strict parallel safe as $$
    select (regexp_match(_standin_body(g),
            '(-?[0-9.eE+-]+)\s+(-?[0-9.eE+-]+)'))[i]::double precision $$;

create function ST_SetSRID(g geometry, srid integer) returns geometry
    language sql immutable strict parallel safe
    as $$ select ('SRID=' || srid || ';' || _standin_body(g))::geometry $$;

create function ST_SRID(g geometry) returns integer
    language sql immutable strict parallel safe
    as $$ select coalesce((regexp_match(g::text, '^SRID=(\d+);'))[1]::integer, 0) $$;

create function ST_MakePoint(x double precision, y double precision) returns geometry
    language sql immutable strict parallel safe
    as $$ select ('POINT(' || x || ' ' || y || ')')::geometry $$;

create function ST_X(g geometry) returns double precision
    language sql immutable strict parallel safe as $$ select _standin_coord(g, 1) $$;

create function ST_Y(g geometry) returns double precision
    language sql immutable strict parallel safe as $$ select _standin_coord(g, 2) $$;

create function ST_PointOnSurface(g geometry) returns geometry
    language sql immutable strict parallel safe as $$
    select ('SRID=' || ST_SRID(g) || ';POINT(' || _standin_coord(g, 1) || ' '
            || _standin_coord(g, 2) || ')')::geometry $$;

-- NO reprojection: only the SRID label changes
create function ST_Transform(g geometry, srid integer) returns geometry
    language sql immutable strict parallel safe as $$ select ST_SetSRID(g, srid) $$;

create function ST_MakeEnvelope(
    xmin double precision, ymin double precision, xmax double precision, ymax double precision,
    srid integer default 0
) returns geometry language sql immutable strict parallel safe as $$
    select ('SRID=' || srid || ';POLYGON((' || xmin || ' ' || ymin || ',' || xmin || ' ' || ymax
            || ',' || xmax || ' ' || ymax || ',' || xmax || ' ' || ymin || ',' || xmin || ' '
            || ymin || '))')::geometry $$;

create function ST_GeomFromText(wkt text, srid integer default 0) returns geometry
    language sql immutable strict parallel safe
    as $$ select ('SRID=' || srid || ';' || wkt)::geometry $$;

create function ST_AsText(g geometry) returns text
    language sql immutable strict parallel safe as $$ select _standin_body(g) $$;

create function ST_AsGeoJSON(g geometry) returns text
    language sql immutable strict parallel safe as $$
    select json_build_object('type', 'Point',
                             'coordinates', json_build_array(ST_X(g), ST_Y(g)))::text $$;

create function ST_Intersects(a geometry, b geometry) returns boolean
    language sql immutable strict parallel safe as $$ select true $$;

create function postgis_version() returns text
    language sql immutable as $$ select 'STAND-IN (not PostGIS; Quartier PGlite test engine)' $$;
