"""The maps' layers of a coverage run in PostgreSQL (migration 0043): made once when the run is
stored (:func:`store_run_layers`, called by :func:`quartier.geo.service.analyse_and_store`) and
read by the pages (:func:`load_layers`), so that a map page is a read of stored geometry.

Privacy (docs/privacy.md, k-anonymity): the run's cells come only from cells with at least k
distinct devices (``load_inputs``); the layers are made from those cells, and the distinct
devices per cell are stored beside them (``coverage_map_cell``), so that a page asked at a higher
k than the layers were made at leaves out the cells below it without counting the raw rows.

Every function takes an open psycopg 3 connection and leaves the transaction to the caller.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from psycopg import sql
from psycopg.rows import tuple_row

from quartier.geo import run_store
from quartier.maps.layers import (
    EMPTY,
    MapLayer,
    MapLayers,
    measured_layers,
    mobile_layers,
    supply_layers,
)
from quartier.store.db import Conn

log = logging.getLogger(__name__)

#: the maps whose layers are stored with a run
MAPS = ("mobile", "measured", "coverage")


def device_counts(
    conn: Conn,
    table: str,
    e: Any,
    n: Any,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Per asked cell (``e``, ``n``), the distinct devices of ``table`` (``speedtest`` or
    ``mobile_measurement``) measured in it within ``[since, until]``: the run's own count (a
    device is its pseudonym's ``hashtext``, as the analysis counts them; 0 for a cell without
    rows)."""
    if table not in ("speedtest", "mobile_measurement"):
        raise ValueError(f"not a crowdsourced table: {table}")
    cell_e = np.asarray(e, dtype=np.int64).reshape(-1)
    cell_n = np.asarray(n, dtype=np.int64).reshape(-1)
    if not len(cell_e):
        return np.zeros(0, dtype=np.int64)
    query = sql.SQL(
        "select cell_e, cell_n, count(distinct hashtext(device_key)) from {} where cell_e is not"
        " null and (%(since)s::timestamptz is null or measured_at >= %(since)s)"
        " and (%(until)s::timestamptz is null or measured_at <= %(until)s) group by 1, 2"
    ).format(sql.Identifier(table))
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(query, {"since": since, "until": until}).fetchall()
    if not rows:
        return np.zeros(len(cell_e), dtype=np.int64)
    found = np.array(rows, dtype=np.int64).reshape(-1, 3)
    index = pd.MultiIndex.from_arrays([found[:, 0], found[:, 1]])
    at = index.get_indexer(pd.MultiIndex.from_arrays([cell_e, cell_n]))
    out = np.where(at >= 0, found[np.maximum(at, 0), 2], 0)
    return np.asarray(out, dtype=np.int64)


def make_layers(
    run: run_store.Run, cells: pd.DataFrame, min_contributors: int
) -> dict[str, MapLayers]:
    """The stored maps' layers of ``run`` from its cells (pure)."""
    params = run.parameters or {}
    return {
        "mobile": mobile_layers(
            cells, run.operators, run.technologies, min_contributors=min_contributors
        ),
        "measured": measured_layers(
            cells,
            disagree_below=float(params.get("disagree_below", 0.3)),
            min_contributors=min_contributors,
        ),
        "coverage": supply_layers(cells, run.class_keys),
    }


def store_run_layers(
    conn: Conn,
    run_id: int,
    *,
    min_contributors: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, MapLayers]:
    """Make and store the maps' layers of the stored run ``run_id`` (its cells as stored,
    analysed at privacy threshold ``min_contributors`` over the measurements of ``[since,
    until]``) with the distinct devices per measured cell; the layers of older runs go, except
    the current run's (a new run replaces them). Returns the layers."""
    t = time.perf_counter()
    run = run_store.get_run(conn, run_id)
    cells = run_store.load_cells(conn, run)
    layers = make_layers(run, cells, min_contributors)
    tested = cells[(cells["n_tests"].to_numpy() > 0) | (cells["n_signal"].to_numpy() > 0)]
    e, n = tested["e"].to_numpy(), tested["n"].to_numpy()
    # only the kind of measurement the run has for a cell (it met k there); a count below k
    # (the other kind's rows of a cell, or rows erased since) is never stored
    tests = np.where(
        tested["n_tests"].to_numpy() > 0,
        device_counts(conn, "speedtest", e, n, since=since, until=until),
        0,
    )
    signals = np.where(
        tested["n_signal"].to_numpy() > 0,
        device_counts(conn, "mobile_measurement", e, n, since=since, until=until),
        0,
    )
    tests[tests < min_contributors] = 0
    signals[signals < min_contributors] = 0
    with conn.cursor() as cur:
        current = run_store.current_run_id(conn)
        cur.execute(
            "delete from coverage_map where run_id <> %s and run_id is distinct from %s",
            (run_id, current),
        )
        cur.execute("delete from coverage_map where run_id = %s", (run_id,))
        cur.execute(
            "insert into coverage_map (run_id, min_contributors) values (%s, %s)",
            (run_id, min_contributors),
        )
        with cur.copy(
            "copy coverage_map_layer (run_id, map, layer, ord, cells, meta, geojson) from stdin"
        ) as copy:
            for name in MAPS:
                for i, layer in enumerate(layers[name].layers):
                    copy.write_row(
                        (run_id, name, layer.key, i, layer.cells, json.dumps(layer.meta),
                         layer.geojson)
                    )  # fmt: skip
        with cur.copy(
            "copy coverage_map_cell (run_id, e, n, test_devices, signal_devices) from stdin"
        ) as copy:
            for row in zip(e.tolist(), n.tolist(), tests.tolist(), signals.tolist(), strict=True):
                copy.write_row((run_id, *row))
    log.info(
        "stored the map layers of coverage run %d (%d measured cells) in %.1f s",
        run_id, len(tested), time.perf_counter() - t,
    )  # fmt: skip
    return layers


def load_layers(
    conn: Conn, run_id: int, name: str, *, geojson_of: Collection[str] | None = None
) -> MapLayers | None:
    """The stored layers of map ``name`` of run ``run_id``; None if they were not stored (a run
    stored before migration 0043, or by a path that does not store them). ``geojson_of``: only
    these layers' GeoJSON is read (the others' is :data:`EMPTY`, their counts and meta read);
    None: every layer's."""
    with conn.cursor(row_factory=tuple_row) as cur:
        found = cur.execute(
            "select min_contributors from coverage_map where run_id = %s", (run_id,)
        ).fetchone()
        if found is None:
            return None
        rows = cur.execute(
            "select layer, cells, meta, case when %(keys)s::text[] is null"
            " or layer = any(%(keys)s::text[]) then geojson else %(empty)s end"
            " from coverage_map_layer where run_id = %(run)s and map = %(map)s order by ord",
            {"run": run_id, "map": name, "empty": EMPTY,
             "keys": None if geojson_of is None else list(geojson_of)},
        ).fetchall()  # fmt: skip
    layers = tuple(
        MapLayer(str(key), int(cells), str(geojson), dict(meta or {}))
        for key, cells, meta, geojson in rows
    )
    return MapLayers(name, layers, int(found[0]))


def stored_threshold(conn: Conn, run_id: int) -> int | None:
    """The privacy threshold k the stored layers of run ``run_id`` were made at; None if they
    were not stored."""
    with conn.cursor(row_factory=tuple_row) as cur:
        found = cur.execute(
            "select min_contributors from coverage_map where run_id = %s", (run_id,)
        ).fetchone()
    return None if found is None else int(found[0])


def load_device_counts(conn: Conn, run_id: int) -> pd.DataFrame | None:
    """The distinct devices per measured cell of run ``run_id`` as stored with its layers
    (``e``, ``n``, ``test_devices``, ``signal_devices``); None without stored layers."""
    with conn.cursor(row_factory=tuple_row) as cur:
        if (
            cur.execute("select 1 from coverage_map where run_id = %s", (run_id,)).fetchone()
            is None
        ):
            return None
        rows = cur.execute(
            "select e, n, test_devices, signal_devices from coverage_map_cell where run_id = %s",
            (run_id,),
        ).fetchall()
    data = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return pd.DataFrame(data, columns=["e", "n", "test_devices", "signal_devices"])


def devices_of(counts: pd.DataFrame, e: Any, n: Any, column: str) -> np.ndarray[Any, Any]:
    """``counts``' ``column`` for the cells ``e``, ``n`` (0 for a cell not in it)."""
    index = pd.MultiIndex.from_arrays([counts["e"].to_numpy(), counts["n"].to_numpy()])
    at = index.get_indexer(
        pd.MultiIndex.from_arrays([np.asarray(e, dtype=np.int64), np.asarray(n, dtype=np.int64)])
    )
    values = counts[column].to_numpy(dtype=np.int64)
    return np.where(at >= 0, values[np.maximum(at, 0)] if len(values) else 0, 0)
