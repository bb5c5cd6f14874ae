"""Coverage runs in PostgreSQL: a result stored as a new run (``coverage_run``, the run's own
``coverage_cell_run_<id>`` partition, ``coverage_gap``, ``coverage_district``) and read back.

Every function takes an open psycopg 3 connection and leaves the transaction to the caller.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from quartier.errors import NotFoundError
from quartier.geo import grid
from quartier.geo import io as geo_io
from quartier.geo.analysis import (
    FIXED_TECHNOLOGIES,
    MOBILE_TECHNOLOGIES,
    AnalysisParams,
    CoverageResult,
)
from quartier.geo.memory import release_free_memory
from quartier.geo.profiles import Profile
from quartier.store.db import Conn
from quartier.store.pgcopy import read_copy, write_copy_fixed

log = logging.getLogger(__name__)


# --- storing ------------------------------------------------------------------------------------


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
    conn: Conn,
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
    run_id = insert_run(conn, p, result.inputs, result.operators, district_codes)
    create_cell_table(conn, run_id)
    write_cells(conn, run_id, c, district_codes, list(p.profile.keys), freeze=True)
    attach_cells(conn, run_id)
    write_gaps(conn, run_id, result.gaps)
    write_districts(conn, run_id, district_rows(result), districts)
    log.info("stored coverage run %d: %d cells, %d gaps", run_id, len(c), len(result.gaps))
    release_free_memory()
    return run_id


def reserve_run_id(conn: Conn) -> int:
    """A new run id from ``coverage_run``'s sequence, for a run whose cells are written (by
    :func:`write_cells` over several connections) before :func:`insert_run` stores it."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("select nextval(pg_get_serial_sequence('coverage_run', 'id'))").fetchone()
    assert row is not None
    return int(row[0])


def insert_run(
    conn: Conn,
    p: AnalysisParams,
    inputs: dict[str, int],
    operators: list[str],
    district_codes: list[str],
    run_id: int | None = None,
) -> int:
    """The ``coverage_run`` row (with the id ``run_id`` when given); returns its id."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            """
            insert into coverage_run (id, profile, parameters, inputs, classes, operators,
                                      technologies, district_codes, class_keys, fixed_technologies)
            values (coalesce(%s, nextval(pg_get_serial_sequence('coverage_run', 'id'))),
                    %s, %s, %s, %s, %s, %s, %s, %s, %s) returning id
            """,
            (
                run_id,
                p.profile.key,
                p.model_dump_json(),
                json.dumps(inputs),
                _classes_json(p.profile),
                operators,
                list(MOBILE_TECHNOLOGIES),
                district_codes,
                list(p.profile.keys),
                list(FIXED_TECHNOLOGIES),
            ),
        ).fetchone()
    assert row is not None
    return int(row[0])


def create_cell_table(conn: Conn, run_id: int) -> None:
    """The run's own cell table, not yet attached (``coverage_cell`` does not show it)."""
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


def drop_cell_table(conn: Conn, run_id: int) -> None:
    """Drop the cell table of a run that was never stored (a failed run)."""
    conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(_cell_table(run_id))))


def write_cells(
    conn: Conn,
    run_id: int,
    cells: pd.DataFrame,
    district_codes: Sequence[str],
    class_keys: Sequence[str],
    *,
    freeze: bool,
) -> int:
    """One fixed-width binary COPY of ``cells`` into the run's table (``freeze`` only in the
    transaction that created it)."""
    write_copy_fixed(
        conn, _cell_table(run_id), _cell_columns(cells, district_codes, class_keys), freeze=freeze
    )
    return len(cells)


@dataclass(frozen=True)
class CellTableWriter:
    """Writes cells into a run's table over a connection of its own, committed: what each tile
    of a tiled run (:mod:`quartier.geo.distributed`) does in its worker. Picklable."""

    conninfo: str
    run_id: int
    district_codes: tuple[str, ...]
    class_keys: tuple[str, ...]

    def write(self, cells: pd.DataFrame) -> int:
        import psycopg

        with psycopg.connect(self.conninfo) as conn:
            n = write_cells(conn, self.run_id, cells, self.district_codes, self.class_keys,
                            freeze=False)  # fmt: skip
            conn.commit()
        return n


def attach_cells(conn: Conn, run_id: int) -> None:
    """Attach the run's cell table to ``coverage_cell_data`` (builds its primary key)."""
    conn.execute(
        sql.SQL("alter table coverage_cell_data attach partition {} for values in ({})").format(
            sql.Identifier(_cell_table(run_id)), sql.Literal(run_id)
        )
    )


def write_gaps(conn: Conn, run_id: int, g: gpd.GeoDataFrame) -> None:
    """The run's gap clusters (one COPY)."""
    if not len(g):
        return
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


DistrictRow = tuple[str, str, int, int, list[dict[str, Any]], list[dict[str, Any]]]


def write_districts(
    conn: Conn, run_id: int, rows: list[DistrictRow], districts: gpd.GeoDataFrame | None
) -> None:
    """The run's district statistics (:func:`district_rows`) with the outlines of
    ``districts``."""
    geoms: dict[str, str] = {}
    if districts is not None and len(districts):
        multi = geo_io._multipolygons(districts.to_crs(grid.WGS84).geometry)
        hexes = shapely.to_wkb(shapely.set_srid(multi, 4326), hex=True, include_srid=True)
        geoms = dict(zip(districts["code"].astype(str), hexes, strict=True))
    values = [
        (run_id, code, name, hh, cells, json.dumps(classes), json.dumps(mobile), geoms.get(code))
        for code, name, hh, cells, classes, mobile in rows
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "insert into coverage_district"
            " (run_id, code, name, households, cells, classes, mobile, geom)"
            " values (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::geometry)",
            values,
        )


def district_rows(result: CoverageResult | Any) -> list[DistrictRow]:
    """The district statistics as (code, name, households, cells, classes, mobile); ``result``
    anything with the ``params``, ``districts`` and ``operators`` of a :class:`CoverageResult`
    (also a tiled run's)."""
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


# --- reading back -------------------------------------------------------------------------------


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


#: The profile whose runs are "current" before any other's: the indicators' broadband classes
#: (white, grey, dark_grey) are those of the German profile.
CURRENT_PROFILE = "de"


def current_run_id(conn: Conn) -> int | None:
    """The current coverage run: the newest run of the German profile, else the newest run of
    any profile; None if there is none. The one rule for the map, the ``/coverage`` API and the
    indicators."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "select id from coverage_run order by (profile = %s) desc, id desc limit 1",
            (CURRENT_PROFILE,),
        ).fetchone()
    return None if row is None else int(row[0])


def get_run(conn: Conn, run_id: int | None = None) -> Run:
    """The run ``run_id``, or the current one (:func:`current_run_id`); NotFoundError if there
    is none."""
    if run_id is None:
        run_id = current_run_id(conn)
        if run_id is None:
            raise NotFoundError("no coverage analysis stored yet: run `quartier coverage analyse`")
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


def load_cells(conn: Conn, run: Run) -> pd.DataFrame:
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


def load_gaps(conn: Conn, run: Run) -> gpd.GeoDataFrame:
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
