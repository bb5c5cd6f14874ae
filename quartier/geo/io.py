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
from dataclasses import dataclass
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


#: The levels a district file can be imported as (the city outline has its own import).
DISTRICT_LEVELS = ("stadtbezirk", "stadtteil")
#: The column names a district file is read with unless told otherwise (Köln's own).
DEFAULT_COLUMNS: dict[str, tuple[str, str]] = {
    "stadtbezirk": ("STB_NR", "STB_NAME"),
    "stadtteil": ("STT_NR", "STT_NAME"),
}
#: VG250 (BKG, Verwaltungsgebiete 1:250 000): the Amtlicher Gemeindeschlüssel, the name, and the
#: Geofaktor (4: land areas; 2: water areas such as lakes and the sea)
VG250_CODE, VG250_NAME, VG250_GEOFAKTOR = "AGS", "GEN", "GF"


@dataclass(frozen=True)
class DistrictColumns:
    """Which column of a district file holds what (None: not in the file)."""

    code: str
    name: str
    parent: str | None = None
    population: str | None = None


def _label(value: object) -> str | None:
    """A code or name cell as text: integral numbers without ".0", blanks and NaN as None."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def read_boundaries(
    path: Path | str, *, layer: str | None = None, crs: str | None = None
) -> gpd.GeoDataFrame:
    """A GeoJSON, GeoPackage or Shapefile of polygons in any CRS, as EPSG:4326 with valid
    MultiPolygons. ``crs`` names the CRS of a file that does not declare one (a Shapefile without
    its .prj). BadRequestError, in one line, for a missing or unreadable file or layer, an unknown
    CRS, an empty or non-polygon geometry, or coordinates that do not fit the CRS."""
    import pyogrio
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    p = Path(path)
    if not p.exists():
        raise BadRequestError(f"no such file: {p}")
    try:
        frame = pyogrio.read_dataframe(p, layer=layer)
    except Exception as exc:  # pyogrio's errors carry GDAL's message; one line is enough
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        what = f"layer {layer!r} of {p}" if layer else str(p)
        raise BadRequestError(f"cannot read {what}: {first}") from None
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name not in frame.columns:
        raise BadRequestError(
            f"{p} has no geometries (a GeoJSON, GeoPackage or Shapefile of areas)"
        )
    if crs is not None:
        try:
            given = CRS.from_user_input(crs)
        except CRSError:
            raise BadRequestError(f"unknown CRS {crs!r} (e.g. EPSG:25832)") from None
        if frame.crs is not None and not frame.crs.equals(given):
            raise BadRequestError(
                f"{p} declares its CRS ({frame.crs.to_string()}); --crs only names a missing one"
            )
        frame = frame.set_crs(given)
    if frame.crs is None:
        raise BadRequestError(
            f"{p} does not say which coordinate reference system it uses (a Shapefile needs its "
            ".prj); name it with --crs, e.g. --crs EPSG:25832"
        )
    geoms = frame.geometry
    empty = geoms.isna() | geoms.is_empty
    if empty.any():
        rows = ", ".join(str(i + 1) for i in np.flatnonzero(empty.to_numpy())[:5])
        raise BadRequestError(f"{p}: empty geometry in row {rows} (every area needs a polygon)")
    if len(frame) == 0:
        raise BadRequestError(f"{p} holds no areas")
    try:
        frame = frame.to_crs(WGS84)
    except Exception:
        raise BadRequestError(f"{p}: cannot reproject from {frame.crs.to_string()}") from None
    west, south, east, north = frame.total_bounds
    if not (np.isfinite([west, south, east, north]).all() and -180 <= west <= east <= 180
            and -90 <= south <= north <= 90):  # fmt: skip
        raise BadRequestError(
            f"{p}: coordinates do not fit its CRS {frame.crs.to_string()}; is the CRS right?"
        )
    try:
        polygons = _multipolygons(frame.geometry)
    except ValueError:
        raise BadRequestError(f"{p}: district geometries must be polygons") from None
    return frame.set_geometry(gpd.GeoSeries(polygons, index=frame.index, crs=WGS84))


def _column(frame: gpd.GeoDataFrame, path: Path, what: str, name: str) -> pd.Series:
    if name not in frame.columns or name == frame.geometry.name:
        have = ", ".join(str(c) for c in frame.columns if c != frame.geometry.name)
        raise BadRequestError(f"{path}: no {what} column {name!r}; the file has: {have}")
    return frame[name]


def _city_code(conn: Conn) -> str | None:
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute("select code from district where level = 'city'").fetchall()
    return str(rows[0][0]) if len(rows) == 1 else None


def import_district_file(
    conn: Conn,
    path: Path | str,
    columns: DistrictColumns | None = None,
    *,
    level: str = "stadtbezirk",
    layer: str | None = None,
    crs: str | None = None,
) -> int:
    """Replace the districts of ``level`` with those of a GeoJSON/GeoPackage/Shapefile (any CRS,
    stored in EPSG:4326), read through a column mapping (default: Köln's column names).

    The parent is the ``parent`` column's value; without one, a Stadtbezirk's parent is the
    stored city and a Stadtteil's the stored Stadtbezirk that holds a point of it. Districts of
    ``level`` not in the file are removed (one municipality per database). Returns the number
    of districts. One transaction."""
    if level not in DISTRICT_LEVELS:
        raise BadRequestError(f"unknown level {level!r}; one of {', '.join(DISTRICT_LEVELS)}")
    p = Path(path)
    cols = columns or DistrictColumns(*DEFAULT_COLUMNS[level])
    frame = read_boundaries(p, layer=layer, crs=crs)
    codes = [_label(v) for v in _column(frame, p, "code", cols.code)]
    names = [_label(v) for v in _column(frame, p, "name", cols.name)]
    for what, values in (("code", codes), ("name", names)):
        missing = [i + 1 for i, v in enumerate(values) if v is None]
        if missing:
            raise BadRequestError(f"{p}: no {what} in row {', '.join(map(str, missing[:5]))}")
    seen = pd.Series(codes)
    if seen.duplicated().any():
        dup = ", ".join(sorted(set(seen[seen.duplicated()].astype(str)))[:5])
        raise BadRequestError(f"{p}: the code {dup} is used by more than one area")
    parents: list[str | None]
    if cols.parent is not None:
        parents = [_label(v) for v in _column(frame, p, "parent", cols.parent)]
    else:
        parents = [_city_code(conn) if level == "stadtbezirk" else None] * len(codes)
    populations: list[int | None] = [None] * len(codes)
    if cols.population is not None:
        raw = _column(frame, p, "population", cols.population)
        text = raw.astype(str).str.strip().str.replace(".", "", regex=False)  # 12.345 (German)
        nums = pd.to_numeric(text.where(raw.notna()), errors="coerce")
        bad = raw.notna() & (nums.isna() | (nums < 0))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise BadRequestError(f"{p}: population {raw.iloc[i]!r} in row {i + 1} is not a number")
        populations = [None if pd.isna(v) else round(v) for v in nums]
    geoms = np.array(frame.geometry.values, dtype=object)
    with conn.transaction():
        with conn.cursor() as cur:
            cur.execute(
                "delete from district where level = %s and not (code = any(%s))", (level, codes)
            )
        n = _upsert(conn, level, codes, names, parents, populations, geoms)  # type: ignore[arg-type]
        if level == "stadtteil" and cols.parent is None:
            with conn.cursor() as cur:
                cur.execute(
                    """
                    update district t set parent_code = (
                        select b.code from district b
                        where b.level = 'stadtbezirk'
                          and ST_Intersects(b.geom, ST_PointOnSurface(t.geom))
                        order by length(b.code), b.code limit 1)
                    where t.level = 'stadtteil'
                    """
                )
    log.info("imported %d %s from %s", n, level, p)
    return n


def import_city_outline(
    conn: Conn,
    path: Path | str,
    *,
    ags: str | None = None,
    code_column: str = VG250_CODE,
    name_column: str = VG250_NAME,
    code: str | None = None,
    name: str | None = None,
    layer: str | None = None,
    crs: str | None = None,
) -> tuple[str, str]:
    """Replace the city outline with a municipality from a boundary file: VG250 Gemeinden (BKG;
    columns AGS and GEN, land areas only where a GF column says so) chosen by its Amtlicher
    Gemeindeschlüssel ``ags``, or any one-area file (``code``/``name`` given where the file lacks
    the columns). The Stadtbezirke without a parent get the city as their parent. Returns the
    city's code and name."""
    p = Path(path)
    frame = read_boundaries(p, layer=layer, crs=crs)
    if ags is not None:
        key = ags.strip()
        if not key.isdigit() or len(key) > 8:
            raise BadRequestError(f"--ags {ags!r} is not an Amtlicher Gemeindeschlüssel (8 digits)")
        key = key.zfill(8)
        codes = _column(frame, p, "AGS", code_column).map(_label).astype(str).str.zfill(8)
        frame = frame[(codes == key).to_numpy()]
        if len(frame) == 0:
            raise BadRequestError(f"{p}: no municipality with AGS {key}")
        if VG250_GEOFAKTOR in frame.columns and (frame[VG250_GEOFAKTOR].astype(str) == "4").any():
            frame = frame[(frame[VG250_GEOFAKTOR].astype(str) == "4").to_numpy()]
        code = code or key
    elif len(frame) > 1:
        raise BadRequestError(
            f"{p} holds {len(frame)} areas; choose the municipality with --ags (e.g. 05315000)"
        )
    if code is None:
        code = _label(_column(frame, p, "code", code_column).iloc[0])
    if name is None:
        name = _label(_column(frame, p, "name", name_column).iloc[0])
    if not code or not name:
        raise BadRequestError(f"{p}: the municipality has no code or no name; give --code/--name")
    outline = np.array([shapely.union_all(np.array(frame.geometry.values, dtype=object))])
    geom = _multipolygons(gpd.GeoSeries(outline, crs=WGS84))
    with conn.transaction():
        with conn.cursor() as cur:
            cur.execute("delete from district where level = 'city' and code <> %s", (code,))
        _upsert(conn, "city", [code], [name], [None], [None], geom)
        with conn.cursor() as cur:
            cur.execute(
                "update district set parent_code = %s "
                "where level = 'stadtbezirk' and (parent_code is null or parent_code not in "
                "(select code from district where level = 'city'))",
                (code,),
            )
    log.info("imported the outline of %s (%s) from %s", name, code, p)
    return code, name


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
