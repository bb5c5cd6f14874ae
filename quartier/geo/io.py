"""The geo part's I/O: reference geography in and out of the ``district`` table, speed tests and
sensor locations out of the store. Every function takes an open psycopg 3 connection (any row
factory) and leaves transaction handling to the caller, except ``import_districts``, which writes
in one transaction.

Packaged reference data (Köln): Stadtbezirke and Stadtteile from the Offene-Daten-Portal der Stadt
Köln (CC BY), the city boundary from OpenStreetMap (ODbL), population 2012 from the Stadt Köln
statistics (CC BY).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from psycopg.rows import tuple_row

from quartier.errors import BadRequestError
from quartier.geo.grid import WGS84
from quartier.store.db import Conn

log = logging.getLogger(__name__)

LEVELS = ("city", "stadtbezirk", "stadtteil")
KOELN_CODE = "05315000"  # Amtlicher Gemeindeschlüssel
KOELN_NAME = "Köln"
_POPULATION_TABLE = "005"  # "Einwohner in Köln"


def _packaged(name: str) -> Path:
    return Path(str(resources.files("quartier").joinpath("data", name)))


def _read_geojson(path: Path) -> gpd.GeoDataFrame:
    """A GeoJSON FeatureCollection, Feature or bare geometry as a GeoDataFrame in EPSG:4326."""
    with path.open(encoding="utf-8") as f:
        doc: dict[str, Any] = json.load(f)
    kind = doc.get("type")
    if kind == "FeatureCollection":
        features = doc.get("features", [])
    elif kind == "Feature":
        features = [doc]
    else:
        features = [{"type": "Feature", "properties": {}, "geometry": doc}]
    crs_name = (doc.get("crs") or {}).get("properties", {}).get("name")
    crs = WGS84 if crs_name is None or crs_name.endswith("CRS84") else crs_name
    frame = gpd.GeoDataFrame.from_features(features, crs=crs)
    if not frame.crs.equals(WGS84):
        frame = frame.to_crs(WGS84)
    return frame


def _multipolygons(geoms: gpd.GeoSeries) -> np.ndarray[Any, np.dtype[np.object_]]:
    """Valid MultiPolygons: invalid rings repaired (polygonal parts kept), Polygons wrapped."""
    arr = np.array(geoms.values, dtype=object)  # a copy: written to below
    invalid = ~shapely.is_valid(arr)
    if invalid.any():
        arr[invalid] = shapely.make_valid(arr[invalid], method="structure", keep_collapsed=False)
    types = shapely.get_type_id(arr)
    if not np.isin(types, (3, 6)).all():  # Polygon, MultiPolygon
        raise ValueError("district geometries must be polygons")
    single = types == 3
    arr[single] = shapely.multipolygons(arr[single].reshape(-1, 1))
    return arr


def _population(path: Path) -> dict[str, int]:
    """Residents per raum_id from the Köln statistics CSV (table 005): "000" the city,
    "001".."009" the Stadtbezirke, 3 digits the Stadtteile."""
    frame = pd.read_csv(path, dtype=str)
    rows = frame[frame["tab_id"] == _POPULATION_TABLE]
    if rows["raum_id"].duplicated().any():
        raise ValueError(f"{path}: more than one population value per area in table 005")
    zahl = pd.to_numeric(rows["zahl"], errors="coerce")
    ok = zahl.notna()
    return dict(
        zip(rows.loc[ok, "raum_id"].tolist(), zahl[ok].round().astype(int).tolist(), strict=True)
    )


def _upsert(
    conn: Conn,
    level: str,
    codes: Sequence[str],
    names: Sequence[str],
    parents: Sequence[str | None],
    populations: Sequence[int | None],
    geoms: np.ndarray[Any, np.dtype[np.object_]],
) -> int:
    wkb = shapely.to_wkb(geoms, hex=False, output_dimension=2)
    params = [
        (level, code, name, parent, pop, bytes(g))
        for code, name, parent, pop, g in zip(codes, names, parents, populations, wkb, strict=True)
    ]
    with conn.cursor() as cur:
        cur.executemany(
            """
            insert into district (level, code, name, parent_code, population, geom)
            values (%s, %s, %s, %s, %s, ST_Multi(ST_GeomFromWKB(%s, 4326)))
            on conflict (level, code) do update
            set name = excluded.name, parent_code = excluded.parent_code,
                population = excluded.population, geom = excluded.geom
            """,
            params,
        )
    return len(params)


def import_districts(
    conn: Conn,
    stadtbezirke_path: Path | str | None = None,
    stadtteile_path: Path | str | None = None,
    city_path: Path | str | None = None,
    population_csv: Path | str | None = None,
    *,
    city_code: str = KOELN_CODE,
    city_name: str = KOELN_NAME,
) -> dict[str, int]:
    """Upsert the city, its Stadtbezirke and Stadtteile into ``district`` (by level and code).

    Defaults are the packaged Köln files. Stadtbezirke carry ``STB_NR``/``STB_NAME`` (code "1".."9",
    parent the city), Stadtteile ``STT_NR``/``STT_NAME`` (parent: the first digit, their
    Stadtbezirk); the city file may be a bare geometry. Population comes from the Köln statistics
    CSV (table 005, raum_id "000" city, "001".."009" Stadtbezirke, STT_NR Stadtteile). Returns the
    number of rows written per level.
    """
    stb = _read_geojson(Path(stadtbezirke_path or _packaged("koeln_stadtbezirke.geojson")))
    stt = _read_geojson(Path(stadtteile_path or _packaged("koeln_stadtteile.geojson")))
    city = _read_geojson(Path(city_path or _packaged("koeln_stadtgrenze_osm.geojson")))
    pop = _population(Path(population_csv or _packaged("koeln_bevoelkerung_2012_stadtteile.csv")))

    stb_codes = [str(int(c)) for c in stb["STB_NR"]]
    stt_codes = [str(c).strip() for c in stt["STT_NR"]]
    city_geom = np.array([shapely.union_all(_multipolygons(city.geometry))], dtype=object)
    counts: dict[str, int] = {}
    with conn.transaction():
        counts["city"] = _upsert(
            conn,
            "city",
            [city_code],
            [city_name],
            [None],
            [pop.get("000")],
            _multipolygons(gpd.GeoSeries(city_geom, crs=WGS84)),
        )
        counts["stadtbezirk"] = _upsert(
            conn,
            "stadtbezirk",
            stb_codes,
            [str(n) for n in stb["STB_NAME"]],
            [city_code] * len(stb_codes),
            [pop.get(f"{int(c):03d}") for c in stb_codes],
            _multipolygons(stb.geometry),
        )
        counts["stadtteil"] = _upsert(
            conn,
            "stadtteil",
            stt_codes,
            [str(n) for n in stt["STT_NAME"]],
            [c[0] for c in stt_codes],
            [pop.get(c) for c in stt_codes],
            _multipolygons(stt.geometry),
        )
    log.info("imported districts: %s", counts)
    return counts


def load_districts(conn: Conn, level: str = "stadtbezirk") -> gpd.GeoDataFrame:
    """Districts of one level: ``code``, ``name``, ``parent_code``, ``population``, ``geometry``
    (EPSG:4326), ordered by code."""
    if level not in LEVELS:
        raise BadRequestError(f"unknown district level {level!r}; one of {', '.join(LEVELS)}")
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            """
            select code, name, parent_code, population, ST_AsBinary(geom)
            from district where level = %s order by length(code), code
            """,
            (level,),
        ).fetchall()
    frame = pd.DataFrame(
        {
            "code": pd.Series([r[0] for r in rows], dtype=str),
            "name": pd.Series([r[1] for r in rows], dtype=str),
            "parent_code": pd.Series([r[2] for r in rows], dtype=str),
            "population": pd.array([r[3] for r in rows], dtype="Int64"),
        }
    )
    geoms = shapely.from_wkb(np.array([bytes(r[4]) for r in rows], dtype=object))
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, crs=WGS84), crs=WGS84)


SPEEDTEST_COLUMNS = [
    "id", "measured_at", "source", "device_key", "lon", "lat",
    "download_mbps", "upload_mbps", "latency_ms", "technology", "operator",
]  # fmt: skip


def load_speedtests(
    conn: Conn,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pd.DataFrame:
    """Speed tests measured in ``[since, until]`` (either bound optional), ordered by time, with
    the position as ``lon``/``lat`` (WGS84). Columns: :data:`SPEEDTEST_COLUMNS`. For aggregates
    only: ``measured_at`` is coarsened to the hour, ``device_key`` is the stored pseudonym
    (docs/privacy.md)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            """
            select id, date_trunc('hour', measured_at, 'UTC'), source, device_key,
                   ST_X(geom), ST_Y(geom),
                   download_mbps, upload_mbps, latency_ms, technology, operator
            from speedtest
            where (%(since)s::timestamptz is null or measured_at >= %(since)s)
              and (%(until)s::timestamptz is null or measured_at <= %(until)s)
            order by measured_at, id
            """,
            {"since": since, "until": until},
        ).fetchall()
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(SPEEDTEST_COLUMNS)
    data = dict(zip(SPEEDTEST_COLUMNS, cols, strict=True))
    return pd.DataFrame(
        {
            "id": pd.Series(data["id"], dtype=np.int64),
            "measured_at": pd.to_datetime(pd.Series(data["measured_at"], dtype=object), utc=True),
            "source": pd.Series(data["source"], dtype=str),
            "device_key": pd.Series(data["device_key"], dtype=str),
            "lon": pd.Series(data["lon"], dtype=np.float64),
            "lat": pd.Series(data["lat"], dtype=np.float64),
            "download_mbps": pd.Series(data["download_mbps"], dtype=np.float64),
            "upload_mbps": pd.Series(data["upload_mbps"], dtype=np.float64),
            "latency_ms": pd.Series(data["latency_ms"], dtype=np.float64),
            "technology": pd.Series(data["technology"], dtype=str),
            "operator": pd.Series(data["operator"], dtype=str),
        }
    )


def load_sensor_locations(conn: Conn) -> pd.DataFrame:
    """One row per Thing with a Location: ``thing_id``, ``name``, ``lon``, ``lat`` (a point on the
    Thing's most recently created Location) and ``observed_properties`` (sorted list of the names
    of the ObservedProperties of its Datastreams)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            """
            select distinct on (t.id)
                   t.id, t.name,
                   ST_X(ST_PointOnSurface(l.location)), ST_Y(ST_PointOnSurface(l.location)),
                   coalesce((select array_agg(distinct op.name order by op.name)
                             from datastream ds
                             join observed_property op on op.id = ds.observed_property_id
                             where ds.thing_id = t.id), '{}')
            from thing t
            join thing_location tl on tl.thing_id = t.id
            join location l on l.id = tl.location_id
            where not ST_IsEmpty(l.location)
            order by t.id, l.id desc
            """
        ).fetchall()
    return pd.DataFrame(
        {
            "thing_id": pd.Series([r[0] for r in rows], dtype=np.int64),
            "name": pd.Series([r[1] for r in rows], dtype=str),
            "lon": pd.Series([r[2] for r in rows], dtype=np.float64),
            "lat": pd.Series([r[3] for r in rows], dtype=np.float64),
            "observed_properties": pd.Series([list(r[4]) for r in rows], dtype=object),
        }
    )
