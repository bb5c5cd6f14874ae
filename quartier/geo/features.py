"""The coverage results as the API hands them out: GeoJSON features of cells, gap clusters and
district statistics of one run, filtered by box, class, district and page.

Every function takes an open psycopg 3 connection and leaves the transaction to the caller.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg.rows import dict_row

from quartier.errors import BadRequestError, NotFoundError
from quartier.geo import grid
from quartier.geo.analysis import operator_lists
from quartier.geo.run_store import Run
from quartier.store.db import Conn


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
    conn: Conn,
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
    coords = np.round(np.stack([lon, lat], axis=-1).reshape(-1, 5, 2), grid.COORD_DECIMALS)
    return [[ring] for ring in coords.tolist()]


def cell_features(rows: list[dict[str, Any]], run: Run) -> list[dict[str, Any]]:
    if not rows:
        return []
    coords = cell_polygon_coords([r["e"] for r in rows], [r["n"] for r in rows])
    ids = grid.cell_ids([r["e"] for r in rows], [r["n"] for r in rows]).tolist()
    masks = [int(r["mobile_mask"]) for r in rows]
    ops_4g = operator_lists(masks, run.operators, run.technologies, "4G").tolist()
    ops_5g = operator_lists(masks, run.operators, run.technologies, "5G").tolist()
    feats = []
    for r, ring, cid, op4, op5 in zip(rows, coords, ids, ops_4g, ops_5g, strict=True):
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
            "operators_4g": op4,
            "operators_5g": op5,
            "dead_zone": r["dead_zone"],
            "single_operator": r["single_operator"],
            "cluster_id": r["cluster_id"],
        }
        feats.append({"type": "Feature", "id": cid, "geometry": {"type": "Polygon",
                      "coordinates": ring}, "properties": props})  # fmt: skip
    return feats


def get_cell(conn: Conn, run: Run, cell_id: str) -> dict[str, Any]:
    es, ns, ok = grid.parse_cell_ids([cell_id])
    if not ok[0]:
        raise NotFoundError(f"no cell {cell_id!r}")
    e, n = int(es[0]), int(ns[0])
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
    conn: Conn,
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
    conn: Conn,
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
