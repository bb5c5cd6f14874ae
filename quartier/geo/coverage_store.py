"""Thin I/O of the coverage-gap analysis: inputs out of PostgreSQL (binary COPY straight into
numpy), results back in (``coverage_run``, ``coverage_cell``, ``coverage_gap``,
``coverage_district``), and the queries behind ``/coverage`` and ``/ogc``.

Every function takes an open psycopg 3 connection and leaves the transaction to the caller.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg
import shapely
import shapely.geometry
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from quartier.errors import BadRequestError, NotFoundError
from quartier.geo import grid
from quartier.geo import io as geo_io
from quartier.geo.analysis import (
    FIXED_TECHNOLOGIES,
    MOBILE_TECHNOLOGIES,
    AnalysisParams,
    CoverageInputs,
    CoverageResult,
)
from quartier.geo.memory import release_free_memory
from quartier.geo.profiles import PROFILES, Profile
from quartier.store.pgcopy import (
    Column,
    read_copy,
    read_table_columns,
    write_copy,
    write_copy_fixed,
)

log = logging.getLogger(__name__)

COORD_DECIMALS = 6


# --- inputs -------------------------------------------------------------------------------------


def _operators(conn: psycopg.Connection[Any]) -> list[str]:
    """The distinct operators of ``mobile_measurement`` (a loose index scan)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            """
            with recursive ops as (
                (select operator from mobile_measurement order by operator limit 1)
                union all
                select (select m.operator from mobile_measurement m
                        where m.operator > ops.operator order by m.operator limit 1)
                from ops where ops.operator is not null
            )
            select operator from ops where operator is not null
            """
        ).fetchall()
    return [str(r[0]) for r in rows]


def _read_signals(
    conn: psycopg.Connection[Any], window: str, period: dict[str, Any]
) -> tuple[list[str], dict[str, npt.NDArray[Any]]]:
    """The signal measurements with operator codes (index in the returned list) and technology
    codes (index in MOBILE_TECHNOLOGIES). PostgreSQL sends both in one int4: ``hashtext(operator)``
    with its lowest three bits replaced by the technology's digit - 2, which is cheaper than
    looking the texts up per row (and every column sent costs about 50 ns a row)."""
    ops = _operators(conn)
    with conn.cursor(row_factory=tuple_row) as cur:
        hashes: dict[str, int] = dict(
            cur.execute("select o, hashtext(o) & -8 from unnest(%s::text[]) o", (ops,)).fetchall()
        )
    signals = read_table_columns(
        conn,
        "mobile_measurement",
        [("cell_e", "int4", "cell_e"), ("cell_n", "int4", "cell_n"),
         ("optech", "int4", "(hashtext(operator) & -8) | (ascii(technology) - ascii('2'))"),
         ("level", "float4", "coalesce(rsrp_dbm, rssi_dbm, 'NaN'::real)")],
        window,
        period,
    )  # fmt: skip
    # technology: '2G' '3G' '4G' '5G' (the table's check) → 0…3, the order of MOBILE_TECHNOLOGIES
    assert [t[0] for t in MOBILE_TECHNOLOGIES] == ["2", "3", "4", "5"]
    optech = signals.pop("optech")
    signals["tech"] = (optech & 7).astype(np.int8)
    optech &= -8
    if len(set(hashes.values())) != len(ops):  # pragma: no cover - a hash collision
        raise ValueError("two operators with the same hashtext")
    op = np.zeros(len(optech), dtype=np.int8 if len(ops) < 128 else np.int16)
    for i, o in enumerate(ops[1:], start=1):
        op[optech == np.int32(hashes[o])] = i
    signals["op"] = op
    return ops, signals


def load_inputs(
    conn: psycopg.Connection[Any],
    *,
    district_level: str = "stadtbezirk",
    since: datetime | None = None,
    until: datetime | None = None,
    conninfo: str | None = None,
) -> CoverageInputs:
    """Households, offers, speed tests and signal measurements (the latter two measured in
    ``[since, until]``, either bound optional) by cell, and the districts of one level. With
    ``conninfo`` the signal measurements are read over a second connection at the same time."""
    period = {"since": since, "until": until}
    window = (
        "(%(since)s::timestamptz is null or measured_at >= %(since)s) and "
        "(%(until)s::timestamptz is null or measured_at <= %(until)s)"
    )
    pending: Future[tuple[list[str], dict[str, npt.NDArray[Any]]]] | None = None
    pool = ThreadPoolExecutor(max_workers=1) if conninfo else None
    if pool is not None and conninfo is not None:

        def other() -> tuple[list[str], dict[str, npt.NDArray[Any]]]:
            with psycopg.connect(conninfo) as second:
                return _read_signals(second, window, period)

        pending = pool.submit(other)
    hh = read_table_columns(
        conn,
        "household",
        [("cell_e", "int4", "cell_e"), ("cell_n", "int4", "cell_n"),
         ("households", "int4", "households")],
    )  # fmt: skip
    offers = read_table_columns(
        conn,
        "broadband_offer",
        [("cell_e", "int4", "cell_e"), ("cell_n", "int4", "cell_n"),
         ("tech", "int2", "(array_position(%(tech)s::text[], technology) - 1)::int2"),
         ("down", "float4", "max_down_mbps"),
         ("up", "float4", "coalesce(max_up_mbps, 'NaN'::real)")],
        params={"tech": list(FIXED_TECHNOLOGIES)},
    )  # fmt: skip
    tests = read_table_columns(
        conn,
        "speedtest",
        [("cell_e", "int4", "cell_e"), ("cell_n", "int4", "cell_n"),
         ("down", "float4", "download_mbps")],
        window,
        period,
    )  # fmt: skip
    if pending is not None and pool is not None:
        ops, signals = pending.result()
        pool.shutdown()
    else:
        ops, signals = _read_signals(conn, window, period)
    districts = geo_io.load_districts(conn, district_level)

    def frame(columns: dict[str, Any]) -> pd.DataFrame:
        return pd.DataFrame(columns, copy=False)

    release_free_memory()

    return CoverageInputs(
        households=frame(hh),
        offers=frame({
            "cell_e": offers["cell_e"], "cell_n": offers["cell_n"],
            "technology": pd.Categorical.from_codes(offers["tech"], FIXED_TECHNOLOGIES),
            "max_down_mbps": offers["down"], "max_up_mbps": offers["up"],
        }),
        speedtests=frame(
            {"cell_e": tests["cell_e"], "cell_n": tests["cell_n"], "download_mbps": tests["down"]}
        ),
        signals=frame({
            "cell_e": signals["cell_e"], "cell_n": signals["cell_n"],
            "operator": pd.Categorical.from_codes(signals["op"], ops),
            "technology": pd.Categorical.from_codes(signals["tech"], MOBILE_TECHNOLOGIES),
            "signal_dbm": signals["level"],
        }),
        districts=districts if len(districts) else None,
    )  # fmt: skip


# --- results ------------------------------------------------------------------------------------


def _classes_json(profile: Profile) -> str:
    return json.dumps([c.model_dump(mode="json") for c in profile.classes])


def _codes_of(values: pd.Series, vocabulary: Sequence[str]) -> npt.NDArray[np.int16]:
    """Codes of a categorical column in ``vocabulary`` (-1 for missing or unknown)."""
    cat = values.cat
    lookup = {v: i for i, v in enumerate(vocabulary)}
    table = np.array([lookup.get(str(c), -1) for c in cat.categories] + [-1], dtype=np.int16)
    codes = cat.codes.to_numpy()
    out: npt.NDArray[np.int16] = table[np.where(codes < 0, len(table) - 1, codes)]
    return out


def _cell_columns(
    cells: pd.DataFrame, district_codes: Sequence[str], class_keys: Sequence[str]
) -> list[tuple[str, str, npt.NDArray[Any]]]:
    """The columns of ``coverage_cell_data`` (migration 0023) for :func:`write_copy_fixed`."""
    c = cells
    cluster = c["cluster_id"]
    cluster_values = (
        cluster.to_numpy(dtype=np.int64, na_value=0)
        if isinstance(cluster.dtype, pd.api.extensions.ExtensionDtype)
        else cluster.to_numpy()
    )
    district = c["district_code"].cat.codes.to_numpy()
    if [str(x) for x in c["district_code"].cat.categories] != list(district_codes):
        district = _codes_of(c["district_code"], district_codes)
    disagreement = _codes_of(c["disagreement"], ["below", "above"])
    return [
        ("e", "int4", c["e"].to_numpy()),
        ("n", "int4", c["n"].to_numpy()),
        ("district", "int4", district),
        ("households", "int4", c["households"].to_numpy()),
        ("addresses", "int4", c["addresses"].to_numpy()),
        ("max_down_mbps", "float4", c["max_down_mbps"].to_numpy()),
        ("max_up_mbps", "float4", c["max_up_mbps"].to_numpy()),
        ("n_tests", "int4", c["n_tests"].to_numpy()),
        ("measured_down_mbps", "float4", c["measured_down_mbps"].to_numpy()),
        ("measured_ratio", "float4", c["measured_ratio"].to_numpy()),
        ("n_signal", "int4", c["n_signal"].to_numpy()),
        ("mobile_mask", "int4", c["mobile_mask"].to_numpy()),
        ("cluster_id", "int4", np.maximum(cluster_values, 0)),
        ("best_technology", "int2", _codes_of(c["best_technology"], FIXED_TECHNOLOGIES)),
        ("class", "int2", _codes_of(c["class_key"], class_keys)),
        ("disagreement", "int2", disagreement),
        ("operators_measured", "int2", c["operators_measured"].to_numpy()),
        ("operators_4g", "int2", c["operators_4g"].to_numpy()),
        ("operators_5g", "int2", c["operators_5g"].to_numpy()),
        ("is_gap", "bool", c["is_gap"].to_numpy()),
        ("dead_zone", "bool", c["dead_zone"].to_numpy()),
        ("single_operator", "bool", c["single_operator"].to_numpy()),
    ]


def _cell_table(run_id: int) -> str:
    return f"coverage_cell_run_{run_id}"


def save_result(
    conn: psycopg.Connection[Any],
    result: CoverageResult,
    districts: gpd.GeoDataFrame | None = None,
) -> int:
    """Store one analysis run; returns its id. ``districts`` (``code``, polygons) adds the
    district outlines to ``coverage_district``. The cells go into a table of their own
    (``coverage_cell_run_<id>``, one fixed-width binary COPY FREEZE), indexed after loading
    and attached to ``coverage_cell_data`` (migration 0023)."""
    p = result.params
    c = result.cells
    district_codes = [str(x) for x in c["district_code"].cat.categories]
    class_keys = list(p.profile.keys)
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            """
            insert into coverage_run (profile, parameters, inputs, classes, operators, technologies,
                                      district_codes, class_keys, fixed_technologies)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s) returning id
            """,
            (
                p.profile.key,
                p.model_dump_json(),
                json.dumps(result.inputs),
                _classes_json(p.profile),
                result.operators,
                result.technologies,
                district_codes,
                class_keys,
                list(FIXED_TECHNOLOGIES),
            ),
        ).fetchone()
    assert row is not None
    run_id = int(row[0])
    n = len(c)
    table = sql.Identifier(_cell_table(run_id))
    conn.execute(
        sql.SQL("create table {} (like coverage_cell_data, check (run_id = {}))").format(
            table, sql.Literal(run_id)
        )
    )
    conn.execute(
        sql.SQL("alter table {} alter column run_id set default {}").format(
            table, sql.Literal(run_id)
        )
    )
    write_copy_fixed(
        conn, _cell_table(run_id), _cell_columns(c, district_codes, class_keys), freeze=True
    )
    conn.execute(
        sql.SQL("alter table coverage_cell_data attach partition {} for values in ({})").format(
            table, sql.Literal(run_id)
        )
    )
    g = result.gaps
    if len(g):
        wkb = shapely.to_wkb(
            shapely.set_srid(np.asarray(g.geometry.values, dtype=object), 4326),
            hex=True,
            include_srid=True,
        )
        with (
            conn.cursor() as cur,
            cur.copy(
                "copy coverage_gap (run_id, cluster_id, rank, cells, households, area_km2,"
                " district_codes, worst_class, severity, distance_gigabit_m, priority, geom)"
                " from stdin"
            ) as copy,
        ):
            dist = g["distance_gigabit_m"].to_numpy(dtype=np.float64)
            columns = [
                g[c].tolist()
                for c in ("cluster_id", "rank", "cells", "households", "area_km2",
                          "district_codes", "worst_class", "severity")
            ]  # fmt: skip
            distances = [None if d != d else d for d in dist.tolist()]  # NaN: none
            for row in zip(*columns, distances, g["priority"].tolist(), wkb.tolist(), strict=True):
                copy.write_row((run_id, *row))
    geoms: dict[str, str] = {}
    if districts is not None and len(districts):
        multi = geo_io._multipolygons(districts.to_crs(grid.WGS84).geometry)
        hexes = shapely.to_wkb(shapely.set_srid(multi, 4326), hex=True, include_srid=True)
        geoms = dict(zip(districts["code"].astype(str), hexes, strict=True))
    rows = [
        (run_id, code, name, hh, cells, json.dumps(classes), json.dumps(mobile), geoms.get(code))
        for code, name, hh, cells, classes, mobile in district_rows(result)
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "insert into coverage_district"
            " (run_id, code, name, households, cells, classes, mobile, geom)"
            " values (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::geometry)",
            rows,
        )
    log.info("stored coverage run %d: %d cells, %d gaps", run_id, n, len(g))
    release_free_memory()
    return run_id


def district_rows(
    result: CoverageResult,
) -> list[tuple[str, str, int, int, list[dict[str, Any]], list[dict[str, Any]]]]:
    """The district statistics as (code, name, households, cells, classes, mobile)."""
    s = result.districts
    out = []
    for i in range(len(s)):
        row = s.iloc[i]
        classes = [
            {
                "key": c.key,
                "label_de": c.label_de,
                "households": int(row[f"households_{c.key}"]),
                "share": round(float(row[f"share_{c.key}"]), 4),
                "cells": int(row[f"cells_{c.key}"]),
            }
            for c in result.params.profile.classes
        ]
        mobile = []
        for op in result.operators:
            for tech in ("4G", "5G"):
                v = float(row[f"area_{tech.lower()}_{op}"])
                mobile.append({
                    "operator": op, "technology": tech,
                    "area_share": None if np.isnan(v) else round(v, 4),
                })  # fmt: skip
        out.append((str(row["code"]), str(row["name"]), int(row["households"]),
                    int(row["cells"]), classes, mobile))  # fmt: skip
    return out


# --- queries for the API ------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    id: int
    created_at: datetime
    profile: str
    parameters: dict[str, Any]
    inputs: dict[str, Any]
    classes: list[dict[str, Any]]
    operators: list[str]
    technologies: list[str]

    @property
    def class_keys(self) -> list[str]:
        return [str(c["key"]) for c in self.classes]


def get_run(conn: psycopg.Connection[Any], run_id: int | None = None) -> Run:
    """The run ``run_id``, or the latest; NotFoundError if there is none."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "select id, created_at, profile, parameters, inputs, classes, operators, technologies"
            " from coverage_run where (%(id)s::bigint is null or id = %(id)s)"
            " order by id desc limit 1",
            {"id": run_id},
        ).fetchone()
    if row is None:
        raise NotFoundError(
            "no coverage analysis stored yet: run `quartier coverage analyse`"
            if run_id is None
            else f"no coverage run {run_id}"
        )
    return Run(**row)


def check_bbox(bbox: Sequence[float] | None) -> tuple[float, float, float, float] | None:
    """A WGS84 ``minlon, minlat, maxlon, maxlat`` box, checked."""
    if bbox is None:
        return None
    if len(bbox) != 4:
        raise BadRequestError("bbox needs four numbers: minlon,minlat,maxlon,maxlat")
    x0, y0, x1, y1 = (float(v) for v in bbox)
    if not (np.isfinite([x0, y0, x1, y1]).all() and -180 <= x0 <= x1 <= 180
            and -90 <= y0 <= y1 <= 90):  # fmt: skip
        raise BadRequestError("bbox must be minlon,minlat,maxlon,maxlat in WGS84 degrees")
    return x0, y0, x1, y1


def _grid_range(bbox: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """Lower-left corners (e0, e1, n0, n1) of every cell that can meet the WGS84 box."""
    x0, y0, x1, y1 = bbox
    t = np.linspace(0, 1, 33)
    lon = np.concatenate([x0 + (x1 - x0) * t, np.full(33, x1), x1 - (x1 - x0) * t, np.full(33, x0)])
    lat = np.concatenate([np.full(33, y0), y0 + (y1 - y0) * t, np.full(33, y1), y1 - (y1 - y0) * t])
    x, y = grid.to_grid_crs(lon, lat)
    size = grid.CELL_SIZE_M
    return (
        int(np.floor(x.min() / size) * size) - size,
        int(np.floor(x.max() / size) * size),
        int(np.floor(y.min() / size) * size) - size,
        int(np.floor(y.max() / size) * size),
    )


CELL_COLUMNS = (
    "e", "n", "district_code", "households", "addresses", "best_technology", "max_down_mbps",
    "max_up_mbps", "class_key", "is_gap", "n_tests", "measured_down_mbps", "measured_ratio",
    "disagreement", "n_signal", "mobile_mask", "operators_measured", "operators_4g",
    "operators_5g", "dead_zone",
    "single_operator", "cluster_id",
)  # fmt: skip


def query_cells(
    conn: psycopg.Connection[Any],
    run: Run,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    classes: Sequence[str] | None = None,
    gaps_only: bool = False,
    limit: int = 1000,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Cells of ``run`` ordered by (n, e), as GeoJSON features."""
    if classes:
        unknown = sorted(set(classes) - set(run.class_keys))
        if unknown:
            raise BadRequestError(
                f"unknown class {', '.join(unknown)}; one of {', '.join(run.class_keys)}"
            )
    e0 = e1 = n0 = n1 = None
    if bbox is not None:
        e0, e1, n0, n1 = _grid_range(bbox)
    query = f"""
        select {", ".join(CELL_COLUMNS)} from coverage_cell
        where run_id = %(run)s
          and (%(n0)s::int is null or (n between %(n0)s and %(n1)s and e between %(e0)s and %(e1)s
               and ST_Intersects(ST_Transform(ST_MakeEnvelope(e, n, e + 100, n + 100, 3035), 4326),
                                 ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326))))
          and (%(classes)s::text[] is null or class_key = any(%(classes)s))
          and (not %(gaps)s or is_gap)
        order by n, e limit %(limit)s offset %(offset)s
    """
    x0, y0, x1, y1 = bbox if bbox is not None else (None, None, None, None)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            query,  # only constant column names are formatted in
            {"run": run.id, "n0": n0, "n1": n1, "e0": e0, "e1": e1, "x0": x0, "y0": y0,
             "x1": x1, "y1": y1, "classes": list(classes) if classes else None,
             "gaps": gaps_only, "limit": limit, "offset": offset},
        ).fetchall()  # fmt: skip
    return cell_features(rows, run)


def _round(v: float | None, digits: int = 2) -> float | None:
    return None if v is None or v != v else round(float(v), digits)


def cell_polygon_coords(e: npt.ArrayLike, n: npt.ArrayLike) -> list[list[list[list[float]]]]:
    """GeoJSON Polygon coordinates (WGS84, 6 decimals) for cells with lower-left ``e``, ``n``."""
    e_arr = np.asarray(e, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    size = float(grid.CELL_SIZE_M)
    xs = e_arr[:, None] + np.array([0.0, size, size, 0.0, 0.0])
    ys = n_arr[:, None] + np.array([0.0, 0.0, size, size, 0.0])
    lon, lat = grid.from_grid_crs(xs.reshape(-1), ys.reshape(-1))
    coords = np.round(np.stack([lon, lat], axis=-1).reshape(-1, 5, 2), COORD_DECIMALS)
    return [[ring] for ring in coords.tolist()]


def mobile_operators(mask: int, run: Run, tech: str) -> list[str]:
    n_t = len(run.technologies)
    if tech not in run.technologies:
        return []
    j = run.technologies.index(tech)
    return [op for i, op in enumerate(run.operators) if (mask >> (i * n_t + j)) & 1]


def cell_features(rows: list[dict[str, Any]], run: Run) -> list[dict[str, Any]]:
    if not rows:
        return []
    coords = cell_polygon_coords([r["e"] for r in rows], [r["n"] for r in rows])
    ids = grid.cell_ids([r["e"] for r in rows], [r["n"] for r in rows]).tolist()
    feats = []
    for r, ring, cid in zip(rows, coords, ids, strict=True):
        mask = int(r["mobile_mask"])
        props = {
            "cell_id": cid,
            "district_code": r["district_code"],
            "households": r["households"],
            "addresses": r["addresses"],
            "class_key": r["class_key"],
            "is_gap": r["is_gap"],
            "best_technology": r["best_technology"],
            "max_down_mbps": _round(r["max_down_mbps"]),
            "max_up_mbps": _round(r["max_up_mbps"]),
            "n_tests": r["n_tests"],
            "measured_down_mbps": _round(r["measured_down_mbps"]),
            "measured_ratio": _round(r["measured_ratio"], 4),
            "disagreement": r["disagreement"],
            "n_signal": r["n_signal"],
            "operators_4g": ",".join(mobile_operators(mask, run, "4G")),
            "operators_5g": ",".join(mobile_operators(mask, run, "5G")),
            "dead_zone": r["dead_zone"],
            "single_operator": r["single_operator"],
            "cluster_id": r["cluster_id"],
        }
        feats.append({"type": "Feature", "id": cid, "geometry": {"type": "Polygon",
                      "coordinates": ring}, "properties": props})  # fmt: skip
    return feats


def get_cell(conn: psycopg.Connection[Any], run: Run, cell_id: str) -> dict[str, Any]:
    prefix = f"{grid.CELL_ID_PREFIX}N"
    try:
        if not cell_id.startswith(prefix):
            raise ValueError
        n_text, e_text = cell_id[len(prefix) :].split("E")
        e, n = int(e_text), int(n_text)
    except ValueError:
        raise NotFoundError(f"no cell {cell_id!r}") from None
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"select {', '.join(CELL_COLUMNS)} from coverage_cell"
            " where run_id = %s and e = %s and n = %s",
            (run.id, e, n),
        ).fetchone()
    if row is None:
        raise NotFoundError(f"no cell {cell_id!r} in coverage run {run.id}")
    return cell_features([row], run)[0]


def query_gaps(
    conn: psycopg.Connection[Any],
    run: Run,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    district: str | None = None,
    cluster_id: int | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Gap clusters of ``run`` by rank, as GeoJSON features."""
    x0, y0, x1, y1 = bbox if bbox is not None else (None, None, None, None)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            select cluster_id, rank, cells, households, area_km2, district_codes, worst_class,
                   severity, distance_gigabit_m, priority, ST_AsGeoJSON(geom, 6) as geometry
            from coverage_gap
            where run_id = %(run)s
              and (%(x0)s::float8 is null
                   or geom && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326))
              and (%(district)s::text is null
                   or %(district)s = any(string_to_array(district_codes, ',')))
              and (%(cluster)s::int is null or cluster_id = %(cluster)s)
            order by rank limit %(limit)s offset %(offset)s
            """,
            {"run": run.id, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "district": district,
             "cluster": cluster_id, "limit": limit, "offset": offset},
        ).fetchall()  # fmt: skip
    return [
        {
            "type": "Feature",
            "id": r["cluster_id"],
            "geometry": json.loads(r["geometry"]),
            "properties": {
                "cluster_id": r["cluster_id"],
                "rank": r["rank"],
                "cells": r["cells"],
                "households": r["households"],
                "area_km2": round(r["area_km2"], 4),
                "district_codes": r["district_codes"],
                "worst_class": r["worst_class"],
                "severity": round(r["severity"], 4),
                "distance_gigabit_m": _round(r["distance_gigabit_m"], 1),
                "priority": round(r["priority"], 6),
            },
        }
        for r in rows
    ]


def query_districts(
    conn: psycopg.Connection[Any],
    run: Run,
    *,
    code: str | None = None,
    limit: int = 1000,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """District statistics of ``run`` (the whole area last, code "all"), as GeoJSON features
    (geometry null where the run has no outline)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            select code, name, households, cells, classes, mobile,
                   ST_AsGeoJSON(geom, 6) as geometry
            from coverage_district where run_id = %(run)s
              and (%(code)s::text is null or code = %(code)s)
            order by code = 'all', length(code), code limit %(limit)s offset %(offset)s
            """,
            {"run": run.id, "code": code, "limit": limit, "offset": offset},
        ).fetchall()
    return [
        {
            "type": "Feature",
            "id": r["code"],
            "geometry": json.loads(r["geometry"]) if r["geometry"] else None,
            "properties": {
                "code": r["code"],
                "name": r["name"],
                "households": r["households"],
                "cells": r["cells"],
                "classes": r["classes"],
                "mobile": r["mobile"],
            },
        }
        for r in rows
    ]


def profile_of(run: Run) -> Profile | None:
    return PROFILES.get(run.profile)


def params_of(run: Run) -> AnalysisParams:
    return AnalysisParams.model_validate(run.parameters)


def district_frame(result: CoverageResult) -> pd.DataFrame:
    """The district statistics as a flat table (for CSV)."""
    return result.districts.copy()


ANALYSIS_STEPS = ("Eingangsdaten lesen", "Analysieren", "Ergebnisse speichern")


def analyse_and_store(
    conn: psycopg.Connection[Any],
    params: AnalysisParams | None = None,
    *,
    district_level: str = "stadtbezirk",
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Callable[[str], None] | None = None,
    conninfo: str | None = None,
) -> tuple[int, CoverageResult]:
    """Load the inputs, analyse, store; returns the run id and the result. The caller commits.
    ``progress`` is called with each of :data:`ANALYSIS_STEPS` before it starts; ``conninfo``
    (the database URL) lets the inputs be read over two connections at once."""
    from quartier.geo.analysis import analyse

    step = progress or (lambda _s: None)
    step(ANALYSIS_STEPS[0])
    inputs = load_inputs(
        conn, district_level=district_level, since=since, until=until, conninfo=conninfo
    )
    step(ANALYSIS_STEPS[1])
    result = analyse(inputs, params)
    step(ANALYSIS_STEPS[2])
    run_id = save_result(conn, result, inputs.districts)
    return run_id, result


# --- writing inputs -----------------------------------------------------------------------------


def _text(name: str, values: Any) -> Column:
    codes, cats = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    return Column(name, "text", codes.astype(np.int64), categories=[str(c) for c in cats])


def _float_col(name: str, values: Any, kind: str = "float8") -> Column:
    return Column(name, kind, pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan))  # fmt: skip


def _time_col(name: str, values: Any) -> Column:
    """timestamptz as microseconds since 2000-01-01 UTC (the PostgreSQL epoch)."""
    ts = pd.to_datetime(pd.Series(values), utc=True)
    micros = (ts - pd.Timestamp("2000-01-01", tz="UTC")) // pd.Timedelta(microseconds=1)
    return Column(name, "int8", micros.to_numpy(dtype=np.int64))


_EPOCH_2000 = "'2000-01-01 00:00:00+00'::timestamptz"


def _write_points(
    conn: psycopg.Connection[Any],
    table: str,
    frame: pd.DataFrame,
    cols: list[Column],
    stage_types: dict[str, str],
) -> int:
    """Stage ``cols`` plus ``lon``/``lat`` with binary COPY, then insert into ``table`` with a
    WGS84 point ``geom`` (the cells are generated columns). Stage columns named ``*_at`` are
    microseconds since 2000 (timestamptz), ``valid_days`` days since 2000 (``valid_on``)."""
    stage = f"_stage_{table}"
    defs = ", ".join(f"{name} {kind}" for name, kind in {"lon": "float8", "lat": "float8",
                                                          **stage_types}.items())  # fmt: skip
    conn.execute(f"create temp table {stage} ({defs}) on commit drop")
    write_copy(conn, stage, [_float_col("lon", frame["lon"]), _float_col("lat", frame["lat"]),
                             *cols])  # fmt: skip
    targets, selects = [], []
    for name in stage_types:
        if name.endswith("_at"):
            targets.append(name)
            selects.append(f"{_EPOCH_2000} + make_interval(secs => {name} / 1e6)")
        elif name == "valid_days":
            targets.append("valid_on")
            selects.append("date '2000-01-01' + valid_days")
        else:
            targets.append(name)
            selects.append(name)
    conflict = " on conflict do nothing" if table in ("speedtest", "mobile_measurement") else ""
    with conn.cursor() as cur:
        cur.execute(
            f"insert into {table} ({', '.join(targets)}, geom)"
            f" select {', '.join(selects)}, ST_SetSRID(ST_MakePoint(lon, lat), 4326)"
            f" from {stage}{conflict}"
        )
        n = max(cur.rowcount, 0)
    conn.execute(f"drop table {stage}")
    return n


def write_households(conn: psycopg.Connection[Any], frame: pd.DataFrame, source: str) -> int:
    """Append address points (``lon``, ``lat``, ``households``, optional ``address_key``)."""
    keys = frame["address_key"] if "address_key" in frame.columns else [None] * len(frame)
    return _write_points(
        conn, "household", frame,
        [_text("source", [source] * len(frame)), _text("address_key", keys),
         Column("households", "int4", frame["households"].to_numpy(dtype=np.int64))],
        {"source": "text", "address_key": "text", "households": "int4"},
    )  # fmt: skip


def write_offers(conn: psycopg.Connection[Any], frame: pd.DataFrame, source: str) -> int:
    """Append fixed broadband offers (``lon``, ``lat``, ``technology``, ``max_down_mbps``,
    ``max_up_mbps``, optional ``operator``, ``valid_on``, ``address_key``)."""
    n = len(frame)

    def opt(col: str) -> Any:
        return frame[col] if col in frame.columns else [None] * n

    valid = pd.to_datetime(pd.Series(opt("valid_on")), errors="coerce")
    days = (valid - pd.Timestamp("2000-01-01")).dt.days
    return _write_points(
        conn, "broadband_offer", frame,
        [_text("source", [source] * n), _text("address_key", opt("address_key")),
         _text("technology", frame["technology"]),
         _float_col("max_down_mbps", frame["max_down_mbps"], "float4"),
         _float_col("max_up_mbps", opt("max_up_mbps"), "float4"),
         _text("operator", opt("operator")),
         Column("valid_days", "int4", days.fillna(0).to_numpy(dtype=np.int64),
                null=days.isna().to_numpy())],
        {"source": "text", "address_key": "text", "technology": "text", "max_down_mbps": "real",
         "max_up_mbps": "real", "operator": "text", "valid_days": "int4"},
    ) if n else 0  # fmt: skip


def write_speedtests(conn: psycopg.Connection[Any], frame: pd.DataFrame, source: str) -> int:
    """Append speed tests (``measured_at``, ``device_key``, ``lon``, ``lat``, ``download_mbps``,
    optional ``upload_mbps``, ``latency_ms``, ``technology``, ``operator``); duplicates of
    (source, device_key, measured_at) are skipped."""
    n = len(frame)

    def opt(col: str) -> Any:
        return frame[col] if col in frame.columns else [None] * n

    return _write_points(
        conn, "speedtest", frame,
        [_text("source", [source] * n), _text("device_key", frame["device_key"]),
         _time_col("measured_at", frame["measured_at"]),
         _float_col("download_mbps", frame["download_mbps"], "float4"),
         _float_col("upload_mbps", opt("upload_mbps"), "float4"),
         _float_col("latency_ms", opt("latency_ms"), "float4"),
         _text("technology", opt("technology")), _text("operator", opt("operator"))],
        {"source": "text", "device_key": "text", "measured_at": "int8", "download_mbps": "real",
         "upload_mbps": "real", "latency_ms": "real", "technology": "text", "operator": "text"},
    ) if n else 0  # fmt: skip


def write_signals(conn: psycopg.Connection[Any], frame: pd.DataFrame, source: str) -> int:
    """Append mobile signal measurements (``measured_at``, ``device_key``, ``lon``, ``lat``,
    ``technology``, ``operator``, ``rsrp_dbm``, ``rsrq_db``, ``rssi_dbm``); duplicates of
    (source, device_key, measured_at) are skipped."""
    n = len(frame)

    def opt(col: str) -> Any:
        return frame[col] if col in frame.columns else [None] * n

    return _write_points(
        conn, "mobile_measurement", frame,
        [_text("source", [source] * n), _text("device_key", frame["device_key"]),
         _time_col("measured_at", frame["measured_at"]),
         _text("technology", frame["technology"]), _text("operator", frame["operator"]),
         _float_col("rsrp_dbm", opt("rsrp_dbm"), "float4"),
         _float_col("rsrq_db", opt("rsrq_db"), "float4"),
         _float_col("rssi_dbm", opt("rssi_dbm"), "float4")],
        {"source": "text", "device_key": "text", "measured_at": "int8", "technology": "text",
         "operator": "text", "rsrp_dbm": "real", "rsrq_db": "real", "rssi_dbm": "real"},
    ) if n else 0  # fmt: skip


# --- reading results back -----------------------------------------------------------------------


def load_cells(conn: psycopg.Connection[Any], run: Run) -> pd.DataFrame:
    """The stored cells of ``run`` with the columns of :attr:`CoverageResult.cells`."""
    with conn.cursor(row_factory=tuple_row) as cur:
        found = cur.execute(
            "select district_codes, class_keys, fixed_technologies from coverage_run"
            " where id = %s", (run.id,)).fetchone()  # fmt: skip
    codes, class_keys, technologies = found if found is not None else ([], run.class_keys, [])
    codes = [str(x) for x in codes]
    data = read_copy(
        conn,
        "select e, n, households, addresses, max_down_mbps, max_up_mbps, is_gap::int::int2,"
        " n_tests, measured_down_mbps, measured_ratio, n_signal, mobile_mask,"
        " operators_measured, operators_4g, operators_5g, dead_zone::int::int2,"
        " single_operator::int::int2, cluster_id, district, best_technology, class,"
        " disagreement from coverage_cell_data where run_id = %(run)s order by n, e",
        [("e", "int4"), ("n", "int4"), ("households", "int4"), ("addresses", "int4"),
         ("max_down_mbps", "float4"), ("max_up_mbps", "float4"), ("is_gap", "int2"),
         ("n_tests", "int4"), ("measured_down_mbps", "float4"), ("measured_ratio", "float4"),
         ("n_signal", "int4"), ("mobile_mask", "int4"), ("operators_measured", "int2"),
         ("operators_4g", "int2"), ("operators_5g", "int2"), ("dead_zone", "int2"),
         ("single_operator", "int2"), ("cluster_id", "int4"), ("district_code", "int4"),
         ("best_technology", "int2"), ("class_key", "int2"), ("disagreement", "int2")],
        {"run": run.id},
    )  # fmt: skip
    if list(technologies) != list(FIXED_TECHNOLOGIES):  # pragma: no cover - a future vocabulary
        lookup = {t: i for i, t in enumerate(FIXED_TECHNOLOGIES)}
        table = np.array([lookup.get(str(t), -1) for t in technologies] + [-1], dtype=np.int16)
        bt = data["best_technology"]
        data["best_technology"] = table[np.where(bt < 0, len(table) - 1, bt)]
    cluster = data["cluster_id"].astype(np.int64)
    out = pd.DataFrame({
        "e": data["e"].astype(np.int64), "n": data["n"].astype(np.int64),
        "district_code": pd.Categorical.from_codes(data["district_code"].astype(np.int64), codes),
        "households": data["households"].astype(np.int64),
        "addresses": data["addresses"].astype(np.int64),
        "best_technology": pd.Categorical.from_codes(
            data["best_technology"].astype(np.int64), FIXED_TECHNOLOGIES),
        "max_down_mbps": data["max_down_mbps"].astype(np.float64),
        "max_up_mbps": data["max_up_mbps"].astype(np.float64),
        "class_key": pd.Categorical.from_codes(data["class_key"].astype(np.int64),
                                               [str(k) for k in class_keys]),
        "is_gap": data["is_gap"].astype(bool),
        "n_tests": data["n_tests"].astype(np.int64),
        "measured_down_mbps": data["measured_down_mbps"].astype(np.float64),
        "measured_ratio": data["measured_ratio"].astype(np.float64),
        "disagreement": pd.Categorical.from_codes(data["disagreement"].astype(np.int64),
                                                  ["below", "above"]),
        "n_signal": data["n_signal"].astype(np.int64),
        "mobile_mask": data["mobile_mask"].astype(np.int64),
        "operators_measured": data["operators_measured"].astype(np.int64),
        "operators_4g": data["operators_4g"].astype(np.int64),
        "operators_5g": data["operators_5g"].astype(np.int64),
        "dead_zone": data["dead_zone"].astype(bool),
        "single_operator": data["single_operator"].astype(bool),
        "cluster_id": pd.arrays.IntegerArray(np.maximum(cluster, 0), cluster <= 0),
    })  # fmt: skip
    return out


def load_gaps(conn: psycopg.Connection[Any], run: Run) -> gpd.GeoDataFrame:
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "select cluster_id, rank, cells, households, area_km2, district_codes, worst_class,"
            " severity, distance_gigabit_m, priority, ST_AsBinary(geom) from coverage_gap"
            " where run_id = %s order by rank", (run.id,)).fetchall()  # fmt: skip
    names = ["cluster_id", "rank", "cells", "households", "area_km2", "district_codes",
             "worst_class", "severity", "distance_gigabit_m", "priority"]  # fmt: skip
    frame = pd.DataFrame([r[:-1] for r in rows], columns=names)
    frame["distance_gigabit_m"] = frame["distance_gigabit_m"].astype(float)
    geoms = shapely.from_wkb(np.array([bytes(r[-1]) for r in rows], dtype=object))
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, crs=grid.WGS84), crs=grid.WGS84)


def load_districts_stats(conn: psycopg.Connection[Any], run: Run) -> gpd.GeoDataFrame:
    """District statistics flattened (``households_<class>``, ``share_<class>``,
    ``area_4g_<op>``…) with outlines."""
    feats = query_districts(conn, run, limit=100_000)
    rows = []
    for f in feats:
        p = dict(f["properties"])
        for c in p.pop("classes"):
            p[f"households_{c['key']}"] = c["households"]
            p[f"share_{c['key']}"] = c["share"]
            p[f"cells_{c['key']}"] = c["cells"]
        for m in p.pop("mobile"):
            p[f"area_{m['technology'].lower()}_{m['operator']}"] = m["area_share"]
        rows.append(p)
    geoms = [shapely.geometry.shape(f["geometry"]) if f["geometry"] else None for f in feats]
    return gpd.GeoDataFrame(pd.DataFrame(rows), geometry=gpd.GeoSeries(geoms, crs=grid.WGS84),
                            crs=grid.WGS84)  # fmt: skip


def write_inputs(
    conn: psycopg.Connection[Any],
    addresses: pd.DataFrame,
    offers: pd.DataFrame,
    speedtests: pd.DataFrame,
    signals: pd.DataFrame,
    source: str,
) -> tuple[int, int, int, int]:
    """All four inputs of an analysis at once (e.g. a simulated world); the caller commits."""
    return (
        write_households(conn, addresses, source),
        write_offers(conn, offers, source),
        write_speedtests(conn, speedtests, source),
        write_signals(conn, signals, source),
    )
