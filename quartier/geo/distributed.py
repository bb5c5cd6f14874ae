"""The coverage analysis on dask.distributed, tile by tile, with the result of :func:`analyse`.

Tiles are squares of ``tile_cells`` × ``tile_cells`` cells of the EPSG:3035 100 m grid (default
500 × 500: 50 km), aligned on multiples of their size. Each tile is a Dask task:

0. **Inputs** come from where the tasks run. Stored inputs (:func:`analyse_store`, the
   service's path): one task a band of tiles (a tile row: one range of the ``(cell_n,
   cell_e)`` index) reads the band with k-anonymity per cell (:meth:`StoreInputs.load_band`)
   and analyses its tiles one after the other, so that a worker holds one band's inputs at a
   time, however many bands the run has; the run's operators are the stored ones, checked
   against the tiles' counts after k-anonymity. Or each task reads one of N equal ranges of
   every input table's blocks (:func:`read_store`: every input row in the workers before the
   first tile), each tile joining its pieces; or a :class:`TileSource` makes a tile's inputs
   in its task (a generator); or the client hands them over (:func:`split_inputs`,
   :func:`scatter_tiles`).
1. **Cells** (:func:`quartier.geo.analysis.analyse_cells`): everything a cell gets from its own
   inputs (classes, measurements, mobile coverage, district) needs no other tile. The operators
   are fixed for the whole run beforehand (the most measured, as :func:`analyse` picks them);
   the districts handed to a tile are those whose bounding box meets it, in their order.
2. **Gap clusters within the tile** (:func:`quartier.geo.gaps.label_clusters`), with per local
   cluster: first cell, cells, households per class, worst class, districts; and the tile's
   gap cells on its outermost ring of cells. That one-cell ring is the overlap clustering needs:
   two gap cells of different tiles are neighbours only if both lie on their tiles' rings.
3. The client **merges** the local clusters joined across tile borders (connected components of
   the ring cells' neighbours) and numbers the clusters by their first cell in key order, as
   :func:`label_clusters` does for the whole grid; households, classes and districts are added up
   per cluster (whole numbers, so the sums are exact in any order).
4. **Distance to gigabit** per tile from the gigabit cells of the tile and its 8 neighbours; a gap
   cell whose nearest gigabit cell so found is farther than the edge of that neighbourhood is
   looked up again among all gigabit cells (rare where gigabit is common). Priority and rank then
   come from :func:`quartier.geo.gaps.score_clusters` over all clusters.
5. **Polygons**: a cluster within one tile is dissolved by that tile's task, a cluster across tiles
   by a task that gets its cells (in key order: the same input, so the same polygon).
6. **Cells written**: each tile puts the cluster ids into its cells and writes them with its own
   binary COPY into the run's cell table (or hands them back), as soon as the cluster numbers
   are known (after 3), at a lower priority than the tasks of 4 and 5: the workers write while
   the client scores the clusters and gathers the polygons.

Every figure equals the single-process one (``tests/test_coverage_dask.py`` compares them).
The client holds only per-cluster and per-district figures; the cells stay on the workers, in
files of their local directories between 1 and 6 (:class:`TilePart`): in memory a tile keeps
its gap cells' keys and labels, its gigabit cells and its summary.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from quartier.geo import grid
from quartier.geo.analysis import (
    AnalysisParams,
    CellAnalysis,
    CoverageInputs,
    CoverageResult,
    _cells,
    analyse_cells,
    class_severities,
    district_frame,
    district_names,
    district_sums,
    gaps_frame,
    operator_counts,
    top_operators,
)
from quartier.geo.gaps import (
    CELL,
    KEY_MULT,
    Clusters,
    cluster_polygons,
    cluster_severity,
    label_clusters,
    nearest_distances,
    score_clusters,
)
from quartier.geo.memory import release_free_memory
from quartier.geo.speedtest_cells import MIN_CONTRIBUTORS, contributed_cells

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
#: 50 km × 50 km: few tasks (the client's work is per tile), tiles large enough that reading and
#: analysing them outweighs Dask's per-task cost; measured in docs/benchmarks.md (Coverage)
TILE_CELLS = 500
Tile = tuple[int, int]  # (row // tile_cells, column // tile_cells)


class TileSource(Protocol):
    """Makes a tile's inputs where the task runs (PostgreSQL, a generator), so that they never
    pass through the client."""

    def load(self, tile: Tile, tile_cells: int) -> CoverageInputs: ...


@dataclass(frozen=True)
class StoreInputs:
    """Reads the stored inputs in the workers as the single process reads them: each of ``n``
    tasks reads one of ``n`` equal ranges of every input table's blocks (TID range scans,
    :func:`quartier.geo.input_store.load_inputs` with ``part``), with the device of each
    measurement, and cuts it into tiles (:func:`split_inputs`); each tile then joins its pieces
    and applies k-anonymity per cell over all of them (:func:`_join_tile`), the single
    process's rule. Picklable: the workers need ``conninfo`` to reach PostgreSQL.

    (Reading a band of tiles through the ``(cell_n, cell_e)`` index instead cost PostgreSQL
    1.2-2.4 times the CPU of the whole read, and a band is spread over every block unless the
    table is ordered by cell: docs/benchmarks.md, Coverage, session 7.)"""

    conninfo: str
    since: datetime | None = None
    until: datetime | None = None
    min_contributors: int = MIN_CONTRIBUTORS

    def load_part(self, i: int, n: int, tile_cells: int) -> dict[Tile, CoverageInputs]:
        import psycopg

        from quartier.geo.input_store import load_inputs

        with psycopg.connect(self.conninfo) as conn:
            inputs = load_inputs(
                conn, district_level=None, since=self.since, until=self.until,
                min_contributors=self.min_contributors, part=(i, n),
            )  # fmt: skip
        return split_inputs(inputs, tile_cells) if _rows(inputs) else {}

    def load_band(
        self, band: int, tile_cells: int, columns: tuple[int, int] | None = None
    ) -> dict[Tile, CoverageInputs]:
        """The inputs of one band of tiles (tile row ``band``: a range of the ``(cell_n,
        cell_e)`` index, migration 0044), or of its tile columns ``columns`` = [c0, c1), with
        k-anonymity per cell (a cell lies in one band), cut into tiles. A bitmap heap scan
        returns the rows in the table's order, as the whole read does; on a table filled band
        by band (the country's generator) a band is one contiguous part of it."""
        import psycopg

        from quartier.geo.input_store import load_inputs

        side = tile_cells * CELL
        with psycopg.connect(self.conninfo) as conn:
            conn.execute("set enable_seqscan = off")
            conn.execute("set enable_indexscan = off")
            inputs = load_inputs(
                conn, district_level=None, since=self.since, until=self.until,
                min_contributors=self.min_contributors, rows=(band * side, (band + 1) * side),
                columns=(columns[0] * side, columns[1] * side) if columns else None,
            )  # fmt: skip
        return split_inputs(inputs, tile_cells) if _rows(inputs) else {}


def _load_part(source: StoreInputs, i: int, n: int, tile_cells: int) -> dict[Tile, CoverageInputs]:
    return source.load_part(i, n, tile_cells)


def _part_tiles(tiles: dict[Tile, CoverageInputs]) -> list[Tile]:
    return sorted(tiles)


def _pick(tiles: dict[Tile, CoverageInputs], tile: Tile) -> CoverageInputs:
    return tiles[tile]


def _join_tile(min_contributors: int, *pieces: CoverageInputs) -> CoverageInputs:
    """A tile's inputs from its pieces (in the order of the table ranges they were read from:
    the single process's row order), speed tests and signal measurements only of cells with
    ``min_contributors`` distinct devices, each kind counted on its own."""

    def joined(name: str) -> pd.DataFrame:
        frames = [getattr(p, name) for p in pieces]
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        if "device" not in frame.columns:
            return frame
        keep = contributed_cells(
            frame["cell_e"].to_numpy(), frame["cell_n"].to_numpy(), frame["device"].to_numpy(),
            min_contributors,
        )  # fmt: skip
        kept = frame.drop(columns="device")
        return kept if keep.all() else kept[keep].reset_index(drop=True)

    return CoverageInputs(
        joined("households"), joined("offers"), joined("speedtests"), joined("signals")
    )


def read_store(
    client: Any,
    conn: Any,
    source: StoreInputs,
    tile_cells: int = TILE_CELLS,
    parts: int | None = None,
) -> tuple[dict[Tile, Any], list[str]]:
    """Each tile's inputs read by the workers (see :class:`StoreInputs`; ``parts`` ranges of
    each table, default one per worker), as futures held there, and the run's operators
    picked from the tiles' counts as :func:`analyse` picks them (tiles without a row after
    k-anonymity are left out). ``conn`` is unused (kept for the callers). For
    :func:`analyse_tiled`."""
    del conn
    n = parts or max(1, len(client.scheduler_info().get("workers", {})))
    [src_f] = client.scatter([source], broadcast=True, hash=False)
    part_fs = [client.submit(_load_part, src_f, i, n, tile_cells, priority=n - i)
               for i in range(n)]  # fmt: skip
    found = client.gather([client.submit(_part_tiles, f) for f in part_fs])
    tiles: dict[Tile, Any] = {}
    for i, t in enumerate(sorted(set().union(*found)) if found else []):
        pieces = [client.submit(_pick, f, t) for f, has in zip(part_fs, found, strict=True)
                  if t in has]  # fmt: skip
        tiles[t] = client.submit(_join_tile, source.min_contributors, *pieces, priority=-i)
    del part_fs
    counted = client.gather([client.submit(_input_counts, tiles[t]) for t in sorted(tiles)])
    totals: dict[str, int] = {}
    for t, (rows, per_operator) in zip(sorted(tiles), counted, strict=True):
        for name, k in per_operator.items():
            totals[name] = totals.get(name, 0) + k
        if rows == 0:
            del tiles[t]
    log.info("read %d parts of the inputs: %d tiles", n, len(tiles))
    return tiles, top_operators(totals)


#: tiles a task reads and analyses at most: a band wider than this (a country's, the EU's) is
#: read in parts of this many tile columns, so that a worker's memory does not grow with the
#: width of the run either
BAND_TILES = 4
Chunk = tuple[int, tuple[int, int]]  # (band, [first, last + 1) tile columns)


def store_chunks(
    conn: Any, tile_cells: int = TILE_CELLS, band_tiles: int = BAND_TILES
) -> list[Chunk]:
    """The parts of the bands of tiles (tile rows) to read, from the lowest to the highest
    stored cell row, each at most ``band_tiles`` tiles wide (the extent: two probes of the
    ``(cell_n, cell_e)`` index and a scan of the other end's per table)."""
    from psycopg import sql

    side = tile_cells * CELL
    extent = sql.SQL("select min(cell_n), max(cell_n), min(cell_e), max(cell_e) from {}")
    found = [
        conn.execute(extent.format(sql.Identifier(table))).fetchone()
        for table in ("household", "broadband_offer", "speedtest", "mobile_measurement")
    ]
    ends = [row for row in found if row is not None and row[0] is not None]
    if not ends:
        return []
    b0, b1 = min(int(r[0]) for r in ends) // side, max(int(r[1]) for r in ends) // side
    c0, c1 = min(int(r[2]) for r in ends) // side, max(int(r[3]) for r in ends) // side + 1
    return [(b, (c, min(c + band_tiles, c1))) for b in range(b0, b1 + 1)
            for c in range(c0, c1, band_tiles)]  # fmt: skip


def _analyse_band(
    source: StoreInputs, chunk: Chunk, tile_cells: int, ctx: _Context
) -> dict[Tile, TilePart]:
    """A part of a band's tiles read and analysed one after the other (each tile's cells filed
    away): the worker holds one part's inputs and one tile's analysis at a time."""
    tiles = source.load_band(chunk[0], tile_cells, chunk[1])
    parts: dict[Tile, TilePart] = {}
    for t in sorted(tiles):
        parts[t] = _analyse_tile(tiles.pop(t), t, tile_cells, ctx)
    release_free_memory()
    return parts


def _band_tiles(parts: dict[Tile, TilePart]) -> list[Tile]:
    return sorted(parts)


def _pick_part(parts: dict[Tile, TilePart], tile: Tile) -> TilePart:
    return parts[tile]


def _band_operator_counts(source: StoreInputs, chunk: Chunk, tile_cells: int) -> dict[str, int]:
    """A part of a band's measurements per operator after k-anonymity (then dropped)."""
    totals: dict[str, int] = {}
    for inputs in source.load_band(chunk[0], tile_cells, chunk[1]).values():
        for name, n in operator_counts(inputs.signals).items():
            totals[name] = totals.get(name, 0) + n
    return totals


class _OperatorsChanged(Exception):
    def __init__(self, operators: list[str]) -> None:
        super().__init__(operators)
        self.operators = operators


def analyse_store(
    client: Any,
    source: StoreInputs,
    districts: gpd.GeoDataFrame | None,
    params: AnalysisParams | None = None,
    *,
    tile_cells: int = TILE_CELLS,
    sink: CellSink | None = None,
    keep_cells: bool = False,
    operators: Sequence[str] | None = None,
    band_tiles: int = BAND_TILES,
) -> TiledResult:
    """The stored inputs analysed band by band of tiles with bounded memory per worker: one
    task a band (a tile row), or a part of ``band_tiles`` tiles of a wider one, reads it
    (:meth:`StoreInputs.load_band`) and analyses its tiles one after the other, keeping of each
    only what the merge needs (:class:`TilePart`); the rest as :func:`analyse_tiled`. A
    worker's peak memory then grows with one part's inputs, not with the number of bands
    (``tests/test_coverage_dask.py``).

    The run's operators are needed before the first tile: the stored operators (a loose index
    scan) when there are no more than the analysis takes, checked against the tiles' counts
    after k-anonymity (an operator measured only in cells k-anonymity leaves out: the run is
    made again with the right ones); with more, a first pass counts them per band."""
    import psycopg

    from quartier.geo.analysis import MAX_OPERATORS
    from quartier.geo.input_store import _operators as stored_operators

    p = params or AnalysisParams()
    clock = _Clock()
    with psycopg.connect(source.conninfo) as conn:
        bands = store_chunks(conn, tile_cells, band_tiles)
        stored = stored_operators(conn)
    [src_f] = client.scatter([source], broadcast=True, hash=False)
    exact = operators is not None
    if operators is None and len(stored) > MAX_OPERATORS:
        totals: dict[str, int] = {}
        counts = client.gather(
            [
                client.submit(_band_operator_counts, src_f, b, tile_cells, priority=-i)
                for i, b in enumerate(bands)
            ]
        )
        for per_band in counts:
            for name, n in per_band.items():
                totals[name] = totals.get(name, 0) + n
        operators, exact = top_operators(totals), True
        clock.lap("inputs")
    run_operators = list(operators) if operators is not None else sorted(stored)
    ctx = _context(p, run_operators, districts)
    [ctx_f] = client.scatter([ctx], broadcast=True, hash=False)
    band_fs = [client.submit(_analyse_band, src_f, b, tile_cells, ctx_f, priority=-i)
               for i, b in enumerate(bands)]  # fmt: skip
    found = client.gather([client.submit(_band_tiles, f, priority=-i)
                           for i, f in enumerate(band_fs)])  # fmt: skip
    parts: dict[Tile, Any] = {}
    for f, tiles in zip(band_fs, found, strict=True):
        for t in tiles:
            parts[t] = client.submit(_pick_part, f, t)
    del band_fs
    tile_list = sorted(parts)
    summaries: list[TileSummary] = client.gather(
        [client.submit(_summary, parts[t]) for t in tile_list]
    )
    log.info("read and analysed %d bands: %d tiles", len(bands), len(tile_list))
    clock.lap("tiles")
    if not exact:
        measured: dict[str, int] = {}
        for s in summaries:
            for name, n in s.operator_counts.items():
                measured[name] = measured.get(name, 0) + n
        if top_operators(measured) != run_operators:
            log.warning("operators %s after k-anonymity, not %s: the run is made again",
                        top_operators(measured), run_operators)  # fmt: skip
            del parts, summaries
            return analyse_store(
                client, source, districts, p, tile_cells=tile_cells, sink=sink,
                keep_cells=keep_cells, operators=top_operators(measured), band_tiles=band_tiles,
            )  # fmt: skip
    return _complete(client, parts, tile_list, summaries, ctx, clock, sink, keep_cells)


def _rows(inputs: CoverageInputs) -> int:
    return sum(len(f) for f in (inputs.households, inputs.offers, inputs.speedtests,
                                inputs.signals))  # fmt: skip


# --- splitting inputs held by the client ---------------------------------------------------------


def split_inputs(
    inputs: CoverageInputs, tile_cells: int = TILE_CELLS
) -> dict[Tile, CoverageInputs]:
    """The inputs per tile (without districts). Rows without a valid position go to the first
    tile, where the analysis counts and ignores them as it would."""
    frames = {
        "households": inputs.households,
        "offers": inputs.offers,
        "speedtests": inputs.speedtests,
        "signals": inputs.signals,
    }
    located = {}
    for name, frame in frames.items():
        rows, cols, ok = _cells(frame, name)
        tr = np.floor_divide(rows, tile_cells).astype(np.int64)
        tc = np.floor_divide(cols, tile_cells).astype(np.int64)
        located[name] = (tr, tc, ok)
    valid = [(tr[ok], tc[ok]) for tr, tc, ok in located.values() if ok.any()]
    first = (
        min((int(tr.min()), int(tc[tr == tr.min()].min())) for tr, tc in valid) if valid else (0, 0)
    )
    parts: dict[Tile, dict[str, pd.DataFrame]] = {}
    for name, frame in frames.items():
        tr, tc, ok = located[name]
        if not len(frame):
            continue
        tr = np.where(ok, tr, first[0])
        tc = np.where(ok, tc, first[1])
        order = np.lexsort((tc, tr))
        change = (np.diff(tr[order]) != 0) | (np.diff(tc[order]) != 0)
        for chunk in np.split(order, np.flatnonzero(change) + 1):
            tile = (int(tr[chunk[0]]), int(tc[chunk[0]]))
            parts.setdefault(tile, {})[name] = frame.iloc[chunk].reset_index(drop=True)
    empty = {name: frame.iloc[:0] for name, frame in frames.items()}
    return {
        tile: CoverageInputs(**{name: got.get(name, empty[name]) for name in frames})
        for tile, got in sorted(parts.items())
    }


# --- the tile tasks ------------------------------------------------------------------------------


@dataclass
class TileSummary:
    """What the client needs of a tile: counts, district sums, its local clusters and its gap
    cells on the tile's outer ring."""

    tile: Tile
    counts: dict[str, int]
    district_sums: dict[str, FloatArray]
    first_key: IntArray  # per local cluster
    cells: IntArray
    hh_by_class: IntArray  # local clusters × classes
    worst: IntArray
    district_pairs: IntArray  # (local cluster, district) rows, unique
    ring_keys: IntArray
    ring_labels: IntArray
    dead_zones: int
    #: measurements per operator after k-anonymity (the run's operators are checked with them)
    operator_counts: dict[str, int] = field(default_factory=dict)


class TilePart:
    """A tile's analysis, kept on its worker until its cells are written. Only what the merge,
    the distances and the polygons need stays in memory (the gap cells' keys and local labels,
    the gigabit cells, the summary); the cells' columns wait in a file of the worker's local
    directory until :func:`_finish_tile` writes them, so that a worker's memory does not grow
    with the tiles it has analysed (docs/benchmarks.md, Coverage, session 8). Pickled (moved
    to another worker, spilled by Dask), it carries its columns and files them again there."""

    def __init__(self, tile: Tile, tile_cells: int, keys: IntArray, columns: dict[str, Any],
                 gap_rows: IntArray, labels: IntArray, gigabit_keys: IntArray,
                 summary: TileSummary) -> None:  # fmt: skip
        self.tile = tile
        self.tile_cells = tile_cells
        self.gap_keys = keys[gap_rows]
        self.labels = labels
        self.gigabit_keys = gigabit_keys
        self.summary = summary
        self._path: str | None = None
        self._file({"keys": keys, "columns": columns, "gap_rows": gap_rows})

    def _file(self, cells: dict[str, Any]) -> None:
        fd, path = tempfile.mkstemp(prefix="tile-", suffix=".pickle", dir=_spill_dir())
        with os.fdopen(fd, "wb") as f:
            pickle.dump(cells, f, protocol=pickle.HIGHEST_PROTOCOL)
        self._path = path

    def cells(self) -> dict[str, Any]:
        """The tile's cells: ``keys``, ``columns`` and ``gap_rows`` (read back from the file)."""
        if self._path is None:
            raise ValueError("the tile's cells were released")
        with open(self._path, "rb") as f:
            got: dict[str, Any] = pickle.load(f)
        return got

    def release(self) -> None:
        """Delete the file of the tile's cells."""
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)
            self._path = None

    def __del__(self) -> None:
        self.release()

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "_path"}
        state["_cells"] = self.cells() if self._path is not None else None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        cells = state.pop("_cells")
        self.__dict__.update(state)
        self._path = None
        if cells is not None:
            self._file(cells)


def _spill_dir() -> str:
    """The Dask worker's local directory (removed with the worker), else the temporary one."""
    try:
        from distributed import get_worker

        return str(get_worker().local_directory)
    except (ImportError, ValueError):
        return tempfile.gettempdir()


@dataclass(frozen=True)
class _Context:
    """What every tile task gets (scattered once)."""

    params: AnalysisParams
    operators: list[str]
    codes: list[str]
    names: list[str]
    districts: gpd.GeoDataFrame | None  # EPSG:3035
    district_bounds: FloatArray  # minx, miny, maxx, maxy per district


def _tile_bounds(tile: Tile, tile_cells: int) -> tuple[float, float, float, float]:
    r, c = tile
    side = tile_cells * CELL
    return c * side, r * side, (c + 1) * side, (r + 1) * side


def _load_tile(source: TileSource, tile: Tile, tile_cells: int) -> CoverageInputs:
    return source.load(tile, tile_cells)


def _input_counts(inputs: CoverageInputs) -> tuple[int, dict[str, int]]:
    """A tile's input rows and its measurements per operator."""
    return _rows(inputs), operator_counts(inputs.signals)


def _analyse_tile(
    data: CoverageInputs | TileSource, tile: Tile, tile_cells: int, ctx: _Context
) -> TilePart:
    inputs = data if isinstance(data, CoverageInputs) else data.load(tile, tile_cells)
    measured = operator_counts(inputs.signals)
    positions = None
    districts = None
    if ctx.districts is not None and len(ctx.districts):
        x0, y0, x1, y1 = _tile_bounds(tile, tile_cells)
        b = ctx.district_bounds
        positions = np.flatnonzero(
            (b[:, 0] <= x1) & (b[:, 2] >= x0) & (b[:, 1] <= y1) & (b[:, 3] >= y0)
        )
        districts = ctx.districts.iloc[positions]
    local = CoverageInputs(
        inputs.households, inputs.offers, inputs.speedtests, inputs.signals, districts
    )
    del inputs
    p = ctx.params
    part: CellAnalysis = analyse_cells(local, p, ctx.operators, ctx.codes, ctx.names, positions)
    del local
    cols = part.columns
    keys = part.keys
    gap_rows = np.flatnonzero(cols["is_gap"])
    gap_keys = keys[gap_rows]
    labels = label_clusters(gap_keys, p.cluster_connectivity)
    k = int(labels.max()) + 1 if len(labels) else 0
    n_cls = len(p.profile.classes)
    gap_class = cols["class_key"].codes[gap_rows].astype(np.int64)
    hh = cols["households"][gap_rows].astype(np.int64)
    hh_by_class = (
        np.bincount(labels * n_cls + gap_class, weights=hh, minlength=k * n_cls)
        .round()
        .astype(np.int64)
        .reshape(k, n_cls)
    )
    first_key = np.full(k, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_key, labels, gap_keys)
    worst = np.full(k, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(worst, labels, gap_class)
    dist = cols["district_code"].codes[gap_rows].astype(np.int64)
    m = max(len(ctx.codes), 1)
    pairs = np.unique(labels[dist >= 0] * m + dist[dist >= 0])
    rows, colsn = gap_keys // KEY_MULT, gap_keys % KEY_MULT
    r0, c0 = tile[0] * tile_cells, tile[1] * tile_cells
    on_ring = (
        (rows == r0)
        | (rows == r0 + tile_cells - 1)
        | (colsn == c0)
        | (colsn == c0 + tile_cells - 1)
    )
    cells_frame = pd.DataFrame(
        {"district_code": cols["district_code"], "households": cols["households"],
         "class_key": cols["class_key"], "n_signal": cols["n_signal"],
         "mobile_mask": cols["mobile_mask"], "operators_measured": cols["operators_measured"]},
        copy=False,
    )  # fmt: skip
    summary = TileSummary(
        tile=tile,
        counts=part.counts,
        district_sums=district_sums(cells_frame, len(ctx.codes), len(ctx.operators), p.profile),
        first_key=first_key,
        cells=np.bincount(labels, minlength=k).astype(np.int64),
        hh_by_class=hh_by_class,
        worst=worst,
        district_pairs=np.column_stack([pairs // m, pairs % m]),
        ring_keys=gap_keys[on_ring],
        ring_labels=labels[on_ring],
        dead_zones=int(cols["dead_zone"].sum()),
        operator_counts=measured,
    )
    del cells_frame
    release_free_memory()
    return TilePart(tile, tile_cells, keys, cols, gap_rows, labels, part.gigabit_keys, summary)


def _summary(part: TilePart) -> TileSummary:
    return part.summary


def _gigabit(part: TilePart) -> IntArray:
    return part.gigabit_keys


def _tile_distances(
    part: TilePart, neighbourhood: list[IntArray]
) -> tuple[FloatArray, IntArray, IntArray]:
    """Per local cluster, the smallest distance to a gigabit cell of the tile and its 8
    neighbours (inf: none), and the gap cells (keys, local labels) for which that may not be
    the nearest gigabit cell of all."""
    k = len(part.summary.cells)
    gap_keys = part.gap_keys
    dist = np.full(k, np.inf)
    targets = np.concatenate(neighbourhood) if neighbourhood else np.zeros(0, dtype=np.int64)
    if len(gap_keys) == 0:
        return dist, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    d = nearest_distances(gap_keys, targets) if len(targets) else np.full(len(gap_keys), np.inf)
    # a gigabit cell outside the 3 × 3 tiles is at least this far from the cell
    t = part.tile_cells
    r0, c0 = (part.tile[0] - 1) * t, (part.tile[1] - 1) * t
    r1, c1 = (part.tile[0] + 2) * t, (part.tile[1] + 2) * t
    x, y = (gap_keys % KEY_MULT) * CELL, (gap_keys // KEY_MULT) * CELL
    margin = np.minimum.reduce(
        [x - (c0 - 1) * CELL, c1 * CELL - x, y - (r0 - 1) * CELL, r1 * CELL - y]
    )
    exact = d <= margin
    np.minimum.at(dist, part.labels[exact], d[exact])
    return dist, gap_keys[~exact], part.labels[~exact]


def _tile_polygons(part: TilePart, whole: IntArray) -> npt.NDArray[np.object_]:
    """Polygons of the local clusters ``whole`` (sorted), which lie in this tile alone."""
    if len(whole) == 0:
        return np.empty(0, dtype=object)
    sel = np.isin(part.labels, whole)
    compact = np.searchsorted(whole, part.labels[sel])
    return cluster_polygons(part.gap_keys[sel], compact, len(whole))


def _tile_crossing_cells(part: TilePart, crossing: IntArray) -> tuple[IntArray, IntArray]:
    """Keys and local labels of the gap cells of the local clusters ``crossing``."""
    sel = np.isin(part.labels, crossing)
    return part.gap_keys[sel], part.labels[sel]


def _polygons_of(keys: IntArray, ids: IntArray) -> npt.NDArray[np.object_]:
    """Polygons of the clusters of cells ``keys`` with cluster numbers ``ids``, each cluster's
    cells in key order; one per distinct id, in id order."""
    order = np.lexsort((keys, ids))
    present, compact = np.unique(ids[order], return_inverse=True)
    return cluster_polygons(keys[order], compact, len(present))


def _finish_tile(
    part: TilePart, global_labels: IntArray, sink: CellSink | None
) -> pd.DataFrame | int:
    """The tile's cells with their cluster ids, written by ``sink`` (then the number of cells)
    or handed back."""
    got = part.cells()
    part.release()
    cluster_id = np.zeros(len(got["keys"]), dtype=np.int32)
    cluster_id[got["gap_rows"]] = global_labels[part.labels] + 1
    columns = dict(got["columns"])
    del got
    columns["cluster_id"] = pd.arrays.IntegerArray(cluster_id, cluster_id == 0)
    cells = pd.DataFrame(columns, copy=False)
    if sink is None:
        return cells
    n = sink.write(cells)
    del cells, columns
    release_free_memory()
    return n


class CellSink(Protocol):
    """Writes a tile's cells (in the worker) and returns their number."""

    def write(self, cells: pd.DataFrame) -> int: ...


# --- the run -------------------------------------------------------------------------------------


@dataclass
class TiledResult:
    """A tiled analysis: everything :class:`CoverageResult` has but the cells, which were written
    by the tiles (``cells`` is None) or are handed back with ``keep_cells`` (sorted as
    :func:`analyse` sorts them)."""

    params: AnalysisParams
    gaps: gpd.GeoDataFrame
    districts: pd.DataFrame
    operators: list[str]
    inputs: dict[str, int] = field(default_factory=dict)
    tiles: int = 0
    dead_zones: int = 0
    cells: pd.DataFrame | None = None
    #: the client's wall seconds per phase (tiles analysed, clusters merged, distances,
    #: polygons, cells written): where a run's time goes (docs/benchmarks.md, Coverage)
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def technologies(self) -> list[str]:
        from quartier.geo.analysis import MOBILE_TECHNOLOGIES

        return list(MOBILE_TECHNOLOGIES)

    def as_result(self) -> CoverageResult:
        """The :class:`CoverageResult` (needs ``keep_cells``)."""
        if self.cells is None:
            raise ValueError("the cells were written by the tiles, not kept")
        return CoverageResult(self.params, self.cells, self.gaps, self.districts, self.operators,
                              self.inputs)  # fmt: skip


def analyse_tiled(
    client: Any,
    tiles: Mapping[Tile, CoverageInputs | Any] | Iterable[Tile],
    operators: Sequence[str] | None,
    districts: gpd.GeoDataFrame | None,
    params: AnalysisParams | None = None,
    *,
    tile_cells: int = TILE_CELLS,
    source: TileSource | None = None,
    sink: CellSink | None = None,
    keep_cells: bool = False,
) -> TiledResult:
    """Analyse tile by tile on ``client``'s cluster. ``tiles``: each tile's inputs (in memory or
    futures, see :func:`split_inputs`), or only the tiles when ``source`` makes their inputs in
    the workers. ``operators``: those of the run (:func:`quartier.geo.analysis.top_operators`),
    or None: the tiles' inputs are made first (and kept in the workers), counted per operator,
    and the run's operators picked from the sums, as :func:`analyse` picks them; tiles without
    a row are then left out. ``sink`` writes each tile's cells in its worker; ``keep_cells``
    gathers them instead."""
    p = params or AnalysisParams()
    clock = _Clock()
    if isinstance(tiles, Mapping):
        tile_list = sorted(tiles)
        data: dict[Tile, Any] = dict(tiles)
    else:
        if source is None:
            raise ValueError("tiles without inputs need a source")
        tile_list = sorted(set(tiles))
        [src_f] = client.scatter([source], broadcast=True, hash=False)
        if operators is None:
            data = {t: client.submit(_load_tile, src_f, t, tile_cells, priority=-i)
                    for i, t in enumerate(tile_list)}  # fmt: skip
        else:
            data = dict.fromkeys(tile_list, src_f)
    if operators is None:
        counted = client.gather([client.submit(_input_counts, data[t]) for t in tile_list])
        totals: dict[str, int] = {}
        for _, per_operator in counted:
            for name, n in per_operator.items():
                totals[name] = totals.get(name, 0) + n
        operators = top_operators(totals)
        empty = [t for t, (rows, _) in zip(tile_list, counted, strict=True) if rows == 0]
        for t in empty:
            del data[t]
        tile_list = [t for t in tile_list if t in data]
        log.info("%d tiles read, %d of them empty", len(counted), len(empty))
        clock.lap("inputs")
    ctx = _context(p, operators, districts)
    [ctx_f] = client.scatter([ctx], broadcast=True, hash=False)
    parts = {
        t: client.submit(_analyse_tile, data[t], t, tile_cells, ctx_f, priority=-i)
        for i, t in enumerate(tile_list)
    }
    del data
    summaries: list[TileSummary] = client.gather(
        [client.submit(_summary, parts[t]) for t in tile_list]
    )
    log.info("analysed %d tiles", len(tile_list))
    clock.lap("tiles")
    return _complete(client, parts, tile_list, summaries, ctx, clock, sink, keep_cells)


def _context(
    p: AnalysisParams, operators: Sequence[str], districts: gpd.GeoDataFrame | None
) -> _Context:
    codes, names = district_names(districts)
    projected = (
        districts.to_crs(grid.GRID_CRS) if districts is not None and len(districts) else None
    )
    bounds = (
        np.asarray(shapely.bounds(np.asarray(projected.geometry.values, dtype=object)))
        if projected is not None
        else np.zeros((0, 4))
    )
    return _Context(p, list(operators), codes, names, projected, bounds)


def _complete(
    client: Any,
    parts: dict[Tile, Any],
    tile_list: list[Tile],
    summaries: list[TileSummary],
    ctx: _Context,
    clock: _Clock,
    sink: CellSink | None,
    keep_cells: bool,
) -> TiledResult:
    """The run from the analysed tiles (``parts``: futures of :class:`TilePart`): clusters
    merged across tile borders, distances, polygons, district figures, cells written."""
    p, codes, names, operators = ctx.params, ctx.codes, ctx.names, ctx.operators

    # merge the local clusters across tile borders
    sizes = np.array([len(s.cells) for s in summaries], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n_nodes = int(offsets[-1])
    ring_keys = np.concatenate([s.ring_keys for s in summaries] + [np.zeros(0, np.int64)])
    ring_nodes = np.concatenate(
        [s.ring_labels + offsets[i] for i, s in enumerate(summaries)] + [np.zeros(0, np.int64)]
    )
    order = np.argsort(ring_keys, kind="stable")
    ring_keys, ring_nodes = ring_keys[order], ring_nodes[order]
    steps = [1, KEY_MULT] + ([KEY_MULT + 1, KEY_MULT - 1] if p.cluster_connectivity == 8 else [])
    src: list[IntArray] = []
    dst: list[IntArray] = []
    if len(ring_keys):
        for step in steps:
            target = ring_keys + step
            pos = np.minimum(np.searchsorted(ring_keys, target), len(ring_keys) - 1)
            hit = ring_keys[pos] == target
            src.append(ring_nodes[hit])
            dst.append(ring_nodes[pos[hit]])
    a = np.concatenate(src) if src else np.zeros(0, np.int64)
    b = np.concatenate(dst) if dst else np.zeros(0, np.int64)
    if n_nodes:
        graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n_nodes, n_nodes))
        _, comp = connected_components(graph.tocsr(), directed=False)
    else:
        comp = np.zeros(0, dtype=np.int64)
    first_node = np.concatenate([s.first_key for s in summaries] + [np.zeros(0, np.int64)])
    n_comp = int(comp.max()) + 1 if n_nodes else 0
    first = np.full(n_comp, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, comp, first_node)
    numbering = np.empty(n_comp, dtype=np.int64)
    numbering[np.argsort(first, kind="stable")] = np.arange(n_comp)
    node_label = numbering[comp] if n_nodes else np.zeros(0, np.int64)  # global cluster per node
    k = n_comp
    n_cls = len(p.profile.classes)
    node_cells = np.concatenate([s.cells for s in summaries] + [np.zeros(0, np.int64)])
    cells = np.bincount(node_label, weights=node_cells, minlength=k).round().astype(np.int64)
    hh_by_class = np.zeros((k, n_cls), dtype=np.int64)
    worst = np.full(k, np.iinfo(np.int64).max, dtype=np.int64)
    pairs: list[IntArray] = []
    for i, s in enumerate(summaries):
        lab = node_label[offsets[i] : offsets[i + 1]]
        np.add.at(hh_by_class, lab, s.hh_by_class)
        np.minimum.at(worst, lab, s.worst)
        if len(s.district_pairs):
            pairs.append(lab[s.district_pairs[:, 0]] * max(len(codes), 1) + s.district_pairs[:, 1])
    hh = hh_by_class.sum(axis=1)
    severity = cluster_severity(hh_by_class, class_severities(p.profile))
    cluster_districts = [""] * k
    if pairs:
        m = max(len(codes), 1)
        joined = np.unique(np.concatenate(pairs))
        lab, code_idx = joined // m, joined % m
        bnd = np.searchsorted(lab, np.arange(k + 1))
        cluster_districts = [
            ",".join(codes[j] for j in code_idx[bnd[c] : bnd[c + 1]]) for c in range(k)
        ]
    label_fs = dict(
        zip(
            tile_list,
            client.scatter(
                [node_label[offsets[i] : offsets[i + 1]] for i in range(len(tile_list))],
                hash=False,
            ),
            strict=True,
        )
    )

    # the cells can be written now: started here, behind the distance and polygon tasks, so
    # that the workers write while the client scores the clusters and gathers the polygons
    done = [client.submit(_finish_tile, parts[t], label_fs[t], sink, priority=-10)
            for t in tile_list]  # fmt: skip
    clock.lap("merge")

    # distances to the nearest gigabit cell
    gig = {t: client.submit(_gigabit, parts[t]) for t in tile_list}
    dist_fs = []
    for t in tile_list:
        near = [gig[(t[0] + dr, t[1] + dc)] for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                if (t[0] + dr, t[1] + dc) in gig]  # fmt: skip
        dist_fs.append(client.submit(_tile_distances, parts[t], near))
    dist = np.full(k, np.inf)
    again_keys: list[IntArray] = []
    again_labels: list[IntArray] = []
    for i, (d, rk, rl) in enumerate(client.gather(dist_fs)):
        lab = node_label[offsets[i] : offsets[i + 1]]
        np.minimum.at(dist, lab, d)
        if len(rk):
            again_keys.append(rk)
            again_labels.append(lab[rl])
    if again_keys:
        all_gigabit = np.concatenate(client.gather([gig[t] for t in tile_list]))
        if len(all_gigabit):
            keys_again = np.concatenate(again_keys)
            d_again = nearest_distances(keys_again, all_gigabit)
            np.minimum.at(dist, np.concatenate(again_labels), d_again)
        log.info("%d gap cells looked up among all gigabit cells", sum(len(x) for x in again_keys))
        del all_gigabit
    del gig, dist_fs
    priority, rank = score_clusters(hh, severity, dist, p.weights, p.proximity_scale_m)
    clock.lap("distances")

    # polygons: a cluster in one tile by its tile, the others from their cells
    nodes_per_cluster = np.bincount(node_label, minlength=k)
    geometry: npt.NDArray[np.object_] = np.empty(k, dtype=object)
    poly_fs = []
    cross_fs = []
    for i, t in enumerate(tile_list):
        lab = node_label[offsets[i] : offsets[i + 1]]
        single = nodes_per_cluster[lab] == 1
        whole = np.flatnonzero(single)
        crossing = np.flatnonzero(~single)
        poly_fs.append((lab[whole], client.submit(_tile_polygons, parts[t], whole)))
        if len(crossing):
            cross_fs.append((lab, client.submit(_tile_crossing_cells, parts[t], crossing)))
    for (ids, _), polygons in zip(poly_fs, client.gather([f for _, f in poly_fs]), strict=True):
        geometry[ids] = polygons
    if cross_fs:
        keys_c = []
        ids_c = []
        for (lab, _), (ck, cl) in zip(
            cross_fs, client.gather([f for _, f in cross_fs]), strict=True
        ):
            keys_c.append(ck)
            ids_c.append(lab[cl])
        all_keys, all_ids = np.concatenate(keys_c), np.concatenate(ids_c)
        geometry[np.unique(all_ids)] = client.submit(_polygons_of, all_keys, all_ids).result()
    clusters = Clusters(
        labels=np.zeros(0, dtype=np.int64),
        cells=cells,
        households=hh,
        severity=severity,
        worst_class=worst,
        distance_gigabit_m=np.where(np.isfinite(dist), dist, np.nan),
        priority=priority,
        rank=rank,
        districts=cluster_districts,
        geometry=geometry,
    )
    gaps = gaps_frame(clusters, p.profile)
    clock.lap("polygons")

    # district figures and counts
    sums = {name: np.sum([s.district_sums[name] for s in summaries], axis=0)
            for name in summaries[0].district_sums} if summaries else {}  # fmt: skip
    if not summaries:
        sums = district_sums(_empty_cells(codes), len(codes), len(operators), p.profile)
    stats = district_frame(sums, codes, names, list(operators), p.profile)
    counts: dict[str, int] = {}
    for s in summaries:
        for name, v in s.counts.items():
            counts[name] = counts.get(name, 0) + int(v)
    counts.update({"gap_cells": int(cells.sum()), "clusters": k})
    dead_zones = sum(s.dead_zones for s in summaries)
    del summaries

    # the cells with their cluster ids, written by each tile (or gathered)
    del parts
    kept = None
    if keep_cells:
        frames = client.gather(done)
        kept = _sorted_cells(frames)
    else:
        written = int(sum(client.gather(done)))
        log.info("wrote %d cells from %d tiles", written, len(tile_list))
    clock.lap("cells")
    return TiledResult(p, gaps, stats, list(operators), counts, len(tile_list), dead_zones, kept,
                       clock.phases)  # fmt: skip


class _Clock:
    """Wall seconds per phase of the client."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self._last
        self._last = now


def _empty_cells(codes: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "district_code": pd.Categorical.from_codes(np.zeros(0, dtype=np.int8), codes),
        "households": np.zeros(0, np.int32), "class_key": pd.Categorical([]),
        "n_signal": np.zeros(0, np.int32), "mobile_mask": np.zeros(0, np.int32),
        "operators_measured": np.zeros(0, np.int16),
    })  # fmt: skip


def _sorted_cells(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The tiles' cells in one frame, ordered like :func:`analyse` orders them (by n, then e)."""
    if not frames:
        raise ValueError("no tiles")
    cells = pd.concat(frames, ignore_index=True)
    order = np.lexsort((cells["e"].to_numpy(), cells["n"].to_numpy()))
    return cells.iloc[order].reset_index(drop=True)


#: Dask settings of :func:`local_cluster`: its fixed cost per second of wall time, which a
#: loaded machine stretches (docs/benchmarks.md, Coverage, sessions 7 and 9). No statistical
#: profiler in the workers (it samples the running task every 10 ms for a dashboard nobody opens
#: here); the system monitor of every worker, nanny and the scheduler (psutil reads of the
#: process, the host's network and disk counters) every 2 s instead of every 0.5 s and without
#: the disk; the nannies' memory check every 0.5 s instead of every 0.1 s (the workers' memory
#: is bounded by a band's part, not policed by the nanny); the event loop's health tick every
#: 0.1 s instead of every 20 ms.
QUIET_DASK = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.system-monitor.disk": False,
    "distributed.worker.memory.monitor-interval": "500ms",
    "distributed.admin.tick.interval": "100ms",
}


def local_cluster(workers: int, *, memory_limit: str | None = None, processes: bool = True) -> Any:
    """A LocalCluster of ``workers`` single-threaded worker processes (no GIL shared between
    the tiles' tasks), with :data:`QUIET_DASK`: without Dask's statistical profiler in the
    workers (a worker waiting on PostgreSQL for 20 s: 1.6 CPU-s with it, 1.2 without,
    docs/benchmarks.md, session 7) and with its monitors polled less often."""
    import dask
    import distributed

    cluster: Any = distributed.LocalCluster
    with dask.config.set(QUIET_DASK):
        return cluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=processes,
            memory_limit=memory_limit or 0,
            dashboard_address=":0",
        )


def scatter_tiles(client: Any, parts: dict[Tile, CoverageInputs]) -> dict[Tile, Any]:
    """Hand each tile's inputs to a worker."""
    futures = client.scatter(list(parts.values()), hash=False)
    return dict(zip(parts.keys(), futures, strict=True))


__all__ = ["QUIET_DASK", "TILE_CELLS", "CellSink", "StoreInputs", "TileSource", "TiledResult",
           "analyse_store", "analyse_tiled", "local_cluster", "read_store", "scatter_tiles",
           "split_inputs"]  # fmt: skip
