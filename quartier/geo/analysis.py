"""Coverage-gap analysis on the INSPIRE 100 m grid: pure and vectorised.

:func:`analyse` takes households, fixed broadband offers, speed tests and mobile signal
measurements (each located by ``cell_e``/``cell_n``, the lower-left corner of its cell in EPSG:3035
metres, or by WGS84 ``lon``/``lat``) and districts, and returns

* ``cells``: one row per cell with any input: district (the polygon containing the cell centre,
  the first in ``districts`` order on a shared edge), households and addresses, the best offer
  (highest download, then upload) and the cell class of the profile (any offer in the cell that
  meets a criterion counts), the median measured download against the advertised maximum where
  the cell has at least ``min_tests`` tests (``disagreement`` "below" when the ratio is under
  ``disagree_below``, "above" over ``disagree_above``), mobile coverage per operator and
  technology as a bit mask, dead zones and single-operator cells, and the gap cluster;
* ``gaps``: the ranked gap clusters (see :mod:`quartier.geo.gaps`) with polygons;
* ``districts``: per district and for the whole area (code ``"all"``): households and shares per
  class, cells per class, and the 4G/5G area share per operator.

A gap cell is a cell with households whose class is a gap class of the profile. Cells without
households and without offers have no class (``class_key`` NA).

Mobile: an operator covers a cell with a technology when the cell has at least
``signal_min_measurements`` measurements of that operator and technology and at least
``signal_min_share`` of them reach the technology's threshold (RSRP for 4G/5G, RSSI for 2G). A
cell with at least ``verdict_min_measurements`` measurements but 4G or 5G from no operator is a
dead zone; from exactly one, a single-operator cell. Area shares count cells: per operator,
covered cells / cells with measurements of that operator; the 4G share counts 5G cells too.
Bit ``i * len(MOBILE_TECHNOLOGIES) + j`` of ``mobile_mask`` is operator ``operators[i]`` with
technology ``MOBILE_TECHNOLOGIES[j]``.

Length: one job, one pipeline (cells, classes, clusters, district statistics) whose vectorised
steps share the same frames; each step is a function of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from pydantic import BaseModel, ConfigDict, Field

from quartier.geo import grid
from quartier.geo.gaps import CELL, KEY_MULT, Clusters, PriorityWeights, find_clusters
from quartier.geo.memory import release_free_memory
from quartier.geo.profiles import GERMAN_FUNDING, Profile

log = logging.getLogger(__name__)

FIXED_TECHNOLOGIES: tuple[str, ...] = ("ftth", "fttb", "hfc", "vdsl", "adsl", "fwa", "other")
MOBILE_TECHNOLOGIES: tuple[str, ...] = ("2G", "3G", "4G", "5G")
MAX_OPERATORS = 7  # the mask is an int32
CITY_CODE = "all"
_DENSE_LIMIT = 64_000_000  # cells in the bounding box up to which cells are indexed densely

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def covers(
    mask: npt.ArrayLike,
    operator: int,
    technology: int,
    n_technologies: int = len(MOBILE_TECHNOLOGIES),
) -> BoolArray:
    """Whether operator number ``operator`` covers each cell with technology number
    ``technology``, from ``mobile_mask`` (bit ``operator * n_technologies + technology``). The one
    place that knows the bit layout."""
    m = np.asarray(mask)
    if m.dtype.kind not in "iu":
        m = m.astype(np.int64)
    bits = m >> (operator * n_technologies + technology)
    covered: BoolArray = (bits & 1) == 1
    return covered


def operator_lists(
    mask: npt.ArrayLike, operators: Sequence[str], technologies: Sequence[str], technology: str
) -> npt.NDArray[np.object_]:
    """Per cell, the operators covering it with ``technology``, comma-separated in the order of
    ``operators`` ("" for none, and for a technology not in ``technologies``)."""
    masks = np.asarray(mask, dtype=np.int64).reshape(-1)
    out: npt.NDArray[np.object_] = np.full(len(masks), "", dtype=object)
    if technology not in technologies:
        return out
    j = list(technologies).index(technology)
    for i, op in enumerate(operators):
        has = covers(masks, i, j, len(technologies))
        out[has] = out[has] + op + ","
    return np.array([s[:-1] for s in out], dtype=object) if len(out) else out


class AnalysisParams(BaseModel):
    """Everything configurable about the analysis (defaults: German funding terms)."""

    model_config = ConfigDict(frozen=True)

    profile: Profile = GERMAN_FUNDING
    min_tests: int = Field(default=5, ge=1)
    disagree_below: float = Field(default=0.3, ge=0)
    disagree_above: float = Field(default=1.5, ge=0)
    signal_threshold_dbm: dict[str, float] = Field(
        default_factory=lambda: {"2G": -100.0, "3G": -105.0, "4G": -110.0, "5G": -110.0}
    )
    signal_min_measurements: int = Field(default=1, ge=1)
    signal_min_share: float = Field(default=0.5, ge=0, le=1)
    #: a cell needs this many measurements before it can be a dead zone or single-operator cell
    verdict_min_measurements: int = Field(default=3, ge=1)
    cluster_connectivity: Literal[4, 8] = 4
    weights: PriorityWeights = PriorityWeights()
    proximity_scale_m: float = Field(default=1000.0, gt=0)


@dataclass(frozen=True)
class CoverageInputs:
    """The analysis inputs. Every frame locates its rows by ``cell_e``/``cell_n`` or ``lon``/
    ``lat``. ``households``: ``households``; ``offers``: ``technology`` (one of
    :data:`FIXED_TECHNOLOGIES`), ``max_down_mbps``, ``max_up_mbps`` (NaN unknown);
    ``speedtests``: ``download_mbps``; ``signals``: ``operator``, ``technology`` (one of
    :data:`MOBILE_TECHNOLOGIES`), ``signal_dbm`` (or ``rsrp_dbm`` and ``rssi_dbm``); text columns
    may be pandas categoricals. ``districts``: ``code``, ``name``, polygons."""

    households: pd.DataFrame
    offers: pd.DataFrame
    speedtests: pd.DataFrame
    signals: pd.DataFrame
    districts: gpd.GeoDataFrame | None = None


@dataclass(frozen=True)
class CoverageResult:
    params: AnalysisParams
    cells: pd.DataFrame
    gaps: gpd.GeoDataFrame
    districts: pd.DataFrame
    operators: list[str]
    inputs: dict[str, int] = field(default_factory=dict)

    @property
    def technologies(self) -> list[str]:
        return list(MOBILE_TECHNOLOGIES)


# --- input handling ---------------------------------------------------------------------------


def _float(frame: pd.DataFrame, col: str) -> FloatArray:
    """The column as floats (float32 columns stay float32), NaN where missing."""
    if col not in frame.columns:
        return np.full(len(frame), np.nan)
    if frame[col].dtype == np.float32:
        same: FloatArray = frame[col].to_numpy()
        return same
    out: FloatArray = pd.to_numeric(frame[col], errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    return out


Int32Array = npt.NDArray[np.int32]
CellIndex = npt.NDArray[np.integer[Any]]  # positions of rows in the cells (int32)
_MAX_COORD = 1e9  # metres: beyond any EPSG:3035 coordinate, and row/column fit an int32


def _cells(frame: pd.DataFrame, what: str) -> tuple[Int32Array, Int32Array, BoolArray]:
    """Cell row (``n // 100``) and column (``e // 100``) of the rows as int32, and which rows have
    a valid position."""
    if {"cell_e", "cell_n"} <= set(frame.columns):
        if frame["cell_e"].dtype.kind in "iu" and frame["cell_n"].dtype.kind in "iu":
            return (
                (frame["cell_n"].to_numpy() // CELL).astype(np.int32, copy=False),
                (frame["cell_e"].to_numpy() // CELL).astype(np.int32, copy=False),
                np.ones(len(frame), dtype=bool),
            )
        e = _float(frame, "cell_e")
        n = _float(frame, "cell_n")
    elif {"lon", "lat"} <= set(frame.columns):
        lon, lat = _float(frame, "lon"), _float(frame, "lat")
        ok = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180) & (np.abs(lat) <= 90)
        e, n = grid.to_grid_crs(np.where(ok, lon, 0), np.where(ok, lat, 0))
        e, n = np.where(ok, e, np.nan), np.where(ok, n, np.nan)
    else:
        raise ValueError(f"{what} need cell_e/cell_n or lon/lat columns")
    ok = np.isfinite(e) & np.isfinite(n) & (np.abs(e) < _MAX_COORD) & (np.abs(n) < _MAX_COORD)
    rows = np.floor(np.where(ok, n, 0) / CELL).astype(np.int32)
    cols = np.floor(np.where(ok, e, 0) / CELL).astype(np.int32)
    return rows, cols, ok


def _codes(
    frame: pd.DataFrame, col: str, vocabulary: tuple[str, ...] | list[str]
) -> npt.NDArray[np.int16]:
    """Codes (int16) of the column's values in ``vocabulary`` (case-insensitive), -1 for
    others."""
    if col not in frame.columns:
        return np.full(len(frame), -1, dtype=np.int16)
    cat = frame[col]
    if not isinstance(cat.dtype, pd.CategoricalDtype):
        cat = cat.astype("category")
    lookup = {v.lower(): i for i, v in enumerate(vocabulary)}
    table = np.array(
        [lookup.get(str(c).lower(), -1) for c in cat.cat.categories] + [-1], dtype=np.int16
    )
    codes = cat.cat.codes.to_numpy()
    out: npt.NDArray[np.int16] = table[np.where(codes < 0, len(table) - 1, codes)]
    return out


class _Indexer:
    """Maps cells (int32 row and column) to positions 0…n-1 in the sorted list of distinct cell
    keys: a dense int32 lookup table over the bounding box when it is small enough, else a sort.
    No input is ever widened to int64 keys on the dense path."""

    def __init__(self, cells: list[tuple[Int32Array, Int32Array]]) -> None:
        cells = [(r, c) for r, c in cells if len(r)]
        self._dense = False
        if not cells:
            self.keys: IntArray = np.zeros(0, dtype=np.int64)
            return
        self._r0 = min(int(r.min()) for r, _ in cells)
        self._c0 = min(int(c.min()) for _, c in cells)
        r1 = max(int(r.max()) for r, _ in cells)
        self._w = max(int(c.max()) for _, c in cells) - self._c0 + 1
        size = (r1 - self._r0 + 1) * self._w
        if size <= _DENSE_LIMIT:
            self._dense = True
            present = np.zeros(size, dtype=bool)
            for r, c in cells:
                present[self._flat(r, c)] = True
            flat = np.flatnonzero(present)
            del present
            self._lut = np.full(size, -1, dtype=np.int32)
            self._lut[flat] = np.arange(len(flat), dtype=np.int32)
            self.keys = (flat // self._w + self._r0) * KEY_MULT + flat % self._w + self._c0
        else:
            self.keys = np.unique(np.concatenate([self._key(r, c) for r, c in cells]))

    def _flat(self, rows: Int32Array, cols: Int32Array) -> Int32Array:
        out: Int32Array = (rows - np.int32(self._r0)) * np.int32(self._w)
        out += cols
        out -= np.int32(self._c0)
        return out

    @staticmethod
    def _key(rows: Int32Array, cols: Int32Array) -> IntArray:
        out: IntArray = rows.astype(np.int64) * KEY_MULT + cols
        return out

    def __call__(self, rows: Int32Array, cols: Int32Array) -> Int32Array:
        if self._dense:
            dense: Int32Array = self._lut[self._flat(rows, cols)]
            return dense
        found: Int32Array = np.searchsorted(self.keys, self._key(rows, cols)).astype(np.int32)
        return found


def district_of_cells(keys: IntArray, districts: gpd.GeoDataFrame | None) -> IntArray:
    """Index (in ``districts``) of the district containing each cell centre, -1 outside all;
    ``keys`` sorted. On a shared edge the first district wins."""
    out = np.full(len(keys), -1, dtype=np.int64)
    if districts is None or len(districts) == 0 or len(keys) == 0:
        return out
    geoms = np.asarray(districts.to_crs(grid.GRID_CRS).geometry.values, dtype=object)
    shapely.prepare(geoms)
    cx = (keys % KEY_MULT).astype(np.float64) * CELL + CELL / 2
    cy = (keys // KEY_MULT).astype(np.float64) * CELL + CELL / 2  # sorted ascending
    bounds = shapely.bounds(geoms)
    for i, geom in enumerate(geoms):
        minx, miny, maxx, maxy = bounds[i]
        if not np.isfinite(minx):
            continue
        lo = int(np.searchsorted(cy, miny, side="left"))
        hi = int(np.searchsorted(cy, maxy, side="right"))
        cand = lo + np.flatnonzero((cx[lo:hi] >= minx) & (cx[lo:hi] <= maxx) & (out[lo:hi] < 0))
        hit = shapely.intersects_xy(geom, cx[cand], cy[cand])
        out[cand[hit]] = i
    return out


# --- per-cell pieces ----------------------------------------------------------------------------


def _group_median(idx: CellIndex, values: FloatArray, n_cells: int) -> tuple[IntArray, FloatArray]:
    """Count and median of ``values`` per cell index."""
    counts = np.bincount(idx, minlength=n_cells).astype(np.int64)
    med = np.full(n_cells, np.nan)
    if len(idx) == 0:
        return counts, med
    order = np.lexsort((values, idx))
    sorted_vals = values[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    med[has] = (sorted_vals[lo] + sorted_vals[hi]) / 2
    return counts, med


def _classify(
    idx: CellIndex, down: FloatArray, up: FloatArray, n_cells: int, profile: Profile
) -> tuple[IntArray, BoolArray]:
    """Class index per cell (from the offers ``idx``/``down``/``up``) and whether it has an
    offer meeting the gigabit download."""
    up0 = np.nan_to_num(up, nan=0.0)
    met: dict[int, BoolArray] = {}
    for i, crit in enumerate(profile.criteria()):
        ok = (down >= crit.down_mbps) & (up0 >= crit.up_mbps)
        met[i] = np.bincount(idx[ok], minlength=n_cells) > 0
    crit_index = {c: i for i, c in enumerate(profile.criteria())}
    last = len(profile.classes) - 1
    cls = np.full(n_cells, last, dtype=np.int64)
    for ci in range(last - 1, -1, -1):
        leaves = np.zeros(n_cells, dtype=bool)
        for crit in profile.classes[ci].exit:
            leaves |= met[crit_index[crit]]
        cls[~leaves] = ci
    gigabit = np.bincount(idx[down >= profile.gigabit_mbps], minlength=n_cells) > 0
    return cls, gigabit


def _best_offer(idx: CellIndex, down: FloatArray, up: FloatArray, n_cells: int) -> IntArray:
    """Row of the best offer per cell (highest download, then upload; -1 none)."""
    # float64: a float32 score would lose the upload (and be slow in maximum.at)
    score = down.astype(np.float64) * 1e6 + np.nan_to_num(up, nan=0.0)
    best = np.full(n_cells, -np.inf)
    np.maximum.at(best, idx, score)
    row = np.full(n_cells, -1, dtype=np.int64)
    winners = np.flatnonzero(score == best[idx])
    row[idx[winners[::-1]]] = winners[::-1]  # the first of equal offers wins
    return row


def _mobile(
    idx: CellIndex,
    op: npt.NDArray[np.integer[Any]],
    tech: npt.NDArray[np.integer[Any]],
    level: FloatArray,
    n_cells: int,
    n_ops: int,
    params: AnalysisParams,
) -> tuple[IntArray, IntArray, IntArray]:
    """Per cell: the coverage bit mask, the mask of operators measured (bit i: operator i) and
    the number of measurements."""
    n_tech = len(MOBILE_TECHNOLOGIES)
    thresholds = np.array([params.signal_threshold_dbm.get(t, np.inf) for t in MOBILE_TECHNOLOGIES])
    ok = (op >= 0) & (tech >= 0)
    if not ok.all():
        idx, op, tech, level = idx[ok], op[ok], tech[ok], level[ok]
    del ok
    good = np.zeros(len(level), dtype=bool)  # NaN levels are not good
    for j, threshold in enumerate(thresholds):
        this_tech = tech == j
        good[this_tech] = level[this_tech] >= np.float64(threshold)
    combo = op.astype(np.int16) * np.int16(n_tech) + tech.astype(np.int16)
    mask = np.zeros(n_cells, dtype=np.int64)
    measured = np.zeros(n_cells, dtype=np.int64)
    for k in np.flatnonzero(np.bincount(combo) if len(combo) else []).tolist():
        this = combo == k
        total = np.bincount(idx[this], minlength=n_cells)
        measured[total > 0] |= 1 << (k // n_tech)
        this &= good
        hits = np.bincount(idx[this], minlength=n_cells)
        del this
        covered = (
            (total >= params.signal_min_measurements)
            & (hits >= params.signal_min_share * total)
            & (hits > 0)
        )
        mask[covered] |= 1 << k
    return mask, measured, np.bincount(idx, minlength=n_cells).astype(np.int64)


def operator_counts(signals: pd.DataFrame) -> dict[str, int]:
    """Measurements per operator name (those with at least one)."""
    if "operator" not in signals.columns or len(signals) == 0:
        return {}
    counts = signals["operator"].value_counts(sort=False)
    return {str(k): int(v) for k, v in counts.items() if v > 0}


def _operators(signals: pd.DataFrame) -> list[str]:
    """The operators of the measurements: the most measured :data:`MAX_OPERATORS`, by name."""
    return top_operators(operator_counts(signals))


def top_operators(measurements: dict[str, int]) -> list[str]:
    """The :data:`MAX_OPERATORS` operators with the most measurements (``measurements``: count
    per name; ties by name), sorted by name."""
    counts = pd.Series({k: v for k, v in sorted(measurements.items()) if v > 0}, dtype=np.int64)
    top = counts.sort_values(ascending=False, kind="stable").head(MAX_OPERATORS)
    if len(counts) > MAX_OPERATORS:
        log.warning("only the %d most measured of %d operators are analysed", MAX_OPERATORS,
                    len(counts))  # fmt: skip
    return sorted(str(o) for o in top.index)


# --- the analysis -------------------------------------------------------------------------------


def analyse(inputs: CoverageInputs, params: AnalysisParams | None = None) -> CoverageResult:
    """Run the whole analysis; see the module docstring."""
    p = params or AnalysisParams()
    codes, names = district_names(inputs.districts)
    operators = _operators(inputs.signals)
    part = analyse_cells(inputs, p, operators, codes, names)
    columns, counts = part.columns, part.counts
    keys = part.keys
    gap_rows = np.flatnonzero(columns["is_gap"])
    clusters = find_clusters(
        keys[gap_rows],
        columns["households"][gap_rows].astype(np.int64),
        columns["class_key"].codes[gap_rows].astype(np.int64),
        columns["district_code"].codes[gap_rows].astype(np.int64),
        codes,
        class_severities(p.profile),
        part.gigabit_keys,
        connectivity=p.cluster_connectivity,
        weights=p.weights,
        proximity_scale_m=p.proximity_scale_m,
    )
    cluster_id = np.zeros(len(keys), dtype=np.int32)
    cluster_id[gap_rows] = clusters.labels + 1
    columns["cluster_id"] = pd.arrays.IntegerArray(cluster_id, cluster_id == 0)
    del keys, cluster_id
    cells = pd.DataFrame(columns, copy=False)
    del columns, part
    release_free_memory()
    gaps = gaps_frame(clusters, p.profile)
    stats = district_stats(cells, codes, names, operators, p.profile)
    counts.update({"gap_cells": len(gap_rows), "clusters": len(clusters.cells)})
    del gap_rows, clusters
    release_free_memory()
    return CoverageResult(p, cells, gaps, stats, operators, counts)


def district_names(districts: gpd.GeoDataFrame | None) -> tuple[list[str], list[str]]:
    """The codes and names of the districts (the codes where there is no name column)."""
    if districts is None or len(districts) == 0:
        return [], []
    codes = [str(c) for c in districts["code"]]
    names = [str(c) for c in (districts["name"] if "name" in districts.columns else codes)]
    return codes, names


def class_severities(profile: Profile) -> FloatArray:
    return np.array([c.severity for c in profile.classes], dtype=np.float64)


@dataclass
class CellAnalysis:
    """The per-cell part of an analysis: ``columns`` are those of :attr:`CoverageResult.cells`
    but ``cluster_id``, for the cells ``keys`` (sorted); ``gigabit_keys`` the cells served with
    gigabit; ``counts`` the input counts and ``cells``."""

    keys: IntArray
    columns: dict[str, Any]
    gigabit_keys: IntArray
    counts: dict[str, int]


def analyse_cells(
    inputs: CoverageInputs,
    p: AnalysisParams,
    operators: list[str],
    codes: list[str],
    names: list[str],
    district_positions: IntArray | None = None,
) -> CellAnalysis:
    """Everything of :func:`analyse` that each cell gets from its own inputs: cells, classes,
    measurements, mobile coverage and districts, with the given ``operators`` and district
    ``codes``. ``inputs.districts`` may be a subset of the districts of ``codes``, with
    ``district_positions`` their positions in ``codes`` (a tile's neighbourhood)."""
    profile = p.profile
    counts: dict[str, int] = {}

    hh_r, hh_c, hh_ok = _cells(inputs.households, "households")
    hh_n = _float(inputs.households, "households")
    hh_ok &= np.isfinite(hh_n) & (hh_n >= 0)
    of_r, of_c, of_ok = _cells(inputs.offers, "offers")
    of_tech = _codes(inputs.offers, "technology", FIXED_TECHNOLOGIES)
    of_down = _float(inputs.offers, "max_down_mbps")
    of_up = _float(inputs.offers, "max_up_mbps")
    of_ok &= np.isfinite(of_down) & (of_down >= 0) & (of_tech >= 0) & ~(of_up < 0)
    st_r, st_c, st_ok = _cells(inputs.speedtests, "speedtests")
    st_down = _float(inputs.speedtests, "download_mbps")
    st_ok &= np.isfinite(st_down) & (st_down >= 0)
    sg_r, sg_c, sg_ok = _cells(inputs.signals, "signals")
    sg_op = _codes(inputs.signals, "operator", operators)
    sg_tech = _codes(inputs.signals, "technology", MOBILE_TECHNOLOGIES)
    if "signal_dbm" in inputs.signals.columns:
        sg_level = _float(inputs.signals, "signal_dbm")
    else:
        rsrp = _float(inputs.signals, "rsrp_dbm")
        sg_level = np.where(np.isnan(rsrp), _float(inputs.signals, "rssi_dbm"), rsrp)
    sg_ok &= (sg_op >= 0) & (sg_tech >= 0)
    for name, ok in (("households", hh_ok), ("offers", of_ok), ("speedtests", st_ok),
                     ("signals", sg_ok)):  # fmt: skip
        counts[f"{name}_rows"] = len(ok)
        counts[f"{name}_used"] = int(ok.sum())
        if not ok.all():
            log.warning("ignored %d of %d %s rows", int((~ok).sum()), len(ok), name)

    def keep(ok: BoolArray, *arrays: npt.NDArray[Any]) -> list[npt.NDArray[Any]]:
        return list(arrays) if ok.all() else [a[ok] for a in arrays]

    hh_r, hh_c, hh_n = keep(hh_ok, hh_r, hh_c, hh_n)
    of_r, of_c, of_tech, of_down, of_up = keep(of_ok, of_r, of_c, of_tech, of_down, of_up)
    st_r, st_c, st_down = keep(st_ok, st_r, st_c, st_down)
    sg_r, sg_c, sg_op, sg_tech, sg_level = keep(sg_ok, sg_r, sg_c, sg_op, sg_tech, sg_level)
    del hh_ok, of_ok, st_ok, sg_ok

    index = _Indexer([(hh_r, hh_c), (of_r, of_c), (st_r, st_c), (sg_r, sg_c)])
    keys = index.keys
    n_cells = len(keys)
    hh_i, of_i, st_i = index(hh_r, hh_c), index(of_r, of_c), index(st_r, st_c)
    del hh_r, hh_c, of_r, of_c, st_r, st_c
    sg_i = index(sg_r, sg_c)
    del sg_r, sg_c, index

    # every per-cell array in the narrowest type that holds it, inputs dropped once used
    households = np.bincount(hh_i, weights=hh_n, minlength=n_cells).round().astype(np.int32)
    addresses = np.bincount(hh_i, minlength=n_cells).astype(np.int32)
    del hh_i, hh_n
    cls64, gigabit = _classify(of_i, of_down, of_up, n_cells, profile)
    cls = cls64.astype(np.int8)
    del cls64
    classified = (np.bincount(of_i, minlength=n_cells) > 0) | (households > 0)
    gap_class = np.array([c.gap for c in profile.classes])
    is_gap = classified & gap_class[cls] & (households > 0)
    best = _best_offer(of_i, of_down, of_up, n_cells)
    del of_i
    has_offer = best >= 0
    best0 = np.maximum(best, 0)
    del best
    if not len(of_down):  # no offers at all (a tile without any): pick from one "none"
        of_down, of_up, of_tech = np.full(1, np.nan), np.full(1, np.nan), np.full(1, -1)
    max_down = np.where(has_offer, of_down[best0], np.nan).astype(np.float32)
    max_up = np.where(has_offer, of_up[best0], np.nan).astype(np.float32)
    best_tech = np.where(has_offer, of_tech[best0], -1).astype(np.int8)
    del best0, of_down, of_up, of_tech

    n_tests64, median = _group_median(st_i, st_down, n_cells)
    del st_i, st_down
    enough = n_tests64 >= p.min_tests
    n_tests = n_tests64.astype(np.int32)
    del n_tests64
    measured = np.where(enough, median, np.nan)
    del median
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(enough & has_offer & (max_down > 0), measured / max_down, np.nan)
    del enough, has_offer
    disagreement = np.full(n_cells, -1, dtype=np.int8)
    disagreement[ratio < p.disagree_below] = 0
    disagreement[ratio > p.disagree_above] = 1
    measured32, ratio32 = measured.astype(np.float32), ratio.astype(np.float32)
    del measured, ratio

    mask64, ops_measured64, n_signal64 = _mobile(
        sg_i, sg_op, sg_tech, sg_level, n_cells, len(operators), p
    )
    del sg_i, sg_op, sg_tech, sg_level
    release_free_memory()
    mask = mask64.astype(np.int32)  # MAX_OPERATORS × 4 technologies < 31 bits
    ops_measured = ops_measured64.astype(np.int16)
    n_signal = n_signal64.astype(np.int32)
    del mask64, ops_measured64, n_signal64
    t4, t5 = MOBILE_TECHNOLOGIES.index("4G"), MOBILE_TECHNOLOGIES.index("5G")
    broadband_mobile = np.zeros(n_cells, dtype=np.int16)
    ops_5g = np.zeros(n_cells, dtype=np.int16)
    for i in range(len(operators)):
        has5 = covers(mask, i, t5)
        broadband_mobile += (covers(mask, i, t4) | has5).astype(np.int16)
        ops_5g += has5.astype(np.int16)
    verdict = n_signal >= p.verdict_min_measurements
    dead_zone = verdict & (broadband_mobile == 0)
    single = verdict & (broadband_mobile == 1)
    del verdict

    dist_idx = district_of_cells(keys, inputs.districts)
    if district_positions is not None and len(district_positions):
        dist_idx = np.where(dist_idx >= 0, district_positions[np.maximum(dist_idx, 0)], -1)
    dist_idx = dist_idx.astype(np.int32)
    gigabit_keys = keys[gigabit]
    del gigabit
    e = ((keys % KEY_MULT) * CELL).astype(np.int32)
    n = ((keys // KEY_MULT) * CELL).astype(np.int32)
    class_keys = profile.keys
    columns: dict[str, Any] = {
        "e": e,
        "n": n,
        "district_code": pd.Categorical.from_codes(dist_idx, categories=codes)
        if codes
        else pd.Categorical.from_codes(np.full(n_cells, -1, dtype=np.int8), categories=[]),
        "households": households,
        "addresses": addresses,
        "best_technology": pd.Categorical.from_codes(best_tech, FIXED_TECHNOLOGIES),
        "max_down_mbps": max_down,
        "max_up_mbps": max_up,
        "class_key": pd.Categorical.from_codes(np.where(classified, cls, -1), class_keys),
        "is_gap": is_gap,
        "n_tests": n_tests,
        "measured_down_mbps": measured32,
        "measured_ratio": ratio32,
        "disagreement": pd.Categorical.from_codes(disagreement, ["below", "above"]),
        "n_signal": n_signal,
        "mobile_mask": mask,
        "operators_measured": ops_measured,
        "operators_4g": broadband_mobile,
        "operators_5g": ops_5g,
        "dead_zone": dead_zone,
        "single_operator": single,
    }
    del e, n, dist_idx, households, addresses, best_tech, max_down, max_up, classified, cls
    del is_gap, n_tests, measured32, ratio32, disagreement, n_signal, mask, ops_measured
    del broadband_mobile, ops_5g, dead_zone, single
    release_free_memory()
    counts["cells"] = n_cells
    return CellAnalysis(keys, columns, gigabit_keys, counts)


def gaps_frame(clusters: Clusters, profile: Profile) -> gpd.GeoDataFrame:
    """The ranked gap clusters as :attr:`CoverageResult.gaps`."""
    class_keys = profile.keys
    k = len(clusters.cells)
    return gpd.GeoDataFrame(
        {
            "cluster_id": np.arange(1, k + 1, dtype=np.int64),
            "rank": clusters.rank,
            "cells": clusters.cells,
            "households": clusters.households,
            "area_km2": clusters.cells * (CELL * CELL / 1e6),
            "district_codes": clusters.districts,
            "worst_class": [class_keys[int(i)] for i in clusters.worst_class],
            "severity": clusters.severity,
            "distance_gigabit_m": clusters.distance_gigabit_m,
            "priority": clusters.priority,
        },
        geometry=gpd.GeoSeries(clusters.geometry, crs=grid.WGS84),
        crs=grid.WGS84,
    ).sort_values("rank", kind="stable", ignore_index=True)


def district_stats(
    cells: pd.DataFrame,
    codes: list[str],
    names: list[str],
    operators: list[str],
    profile: Profile,
) -> pd.DataFrame:
    """One row per district (in ``codes`` order) and one for everything (code ``"all"``):
    ``households``, ``cells`` (with households), per class ``households_<k>``, ``share_<k>`` (% of
    households; 0 where there are none, else they sum to 100) and ``cells_<k>``; ``signal_cells``
    (cells with measurements) and per operator ``area_4g_<op>``/``area_5g_<op>``: % of the cells
    with measurements of the operator where it covers with 4G (or 5G, which runs on 4G) / 5G."""
    return district_frame(
        district_sums(cells, len(codes), len(operators), profile), codes, names, operators, profile
    )


def district_sums(
    cells: pd.DataFrame, m: int, n_operators: int, profile: Profile
) -> dict[str, FloatArray]:
    """The counts behind :func:`district_stats` for ``m`` districts (slot ``m``: everything), as
    whole numbers in float64: exact, so the sums of parts of the cells (tiles) add up to the
    same figures."""
    d = (
        cells["district_code"].cat.codes.to_numpy().astype(np.int64)
        if m
        else np.full(len(cells), -1, dtype=np.int64)
    )
    slot = np.where(d >= 0, d, m)  # m: outside every district, only in "all"
    hh = cells["households"].to_numpy(dtype=np.int64)
    cls = cells["class_key"].cat.codes.to_numpy().astype(np.int64)
    populated = hh > 0
    out: dict[str, FloatArray] = {}

    def per_slot(weights: npt.ArrayLike, sel: BoolArray) -> FloatArray:
        w = np.asarray(weights, dtype=np.float64)[sel]
        sums: FloatArray = np.bincount(slot[sel], weights=w, minlength=m + 1).astype(np.float64)
        sums[m] = w.sum()
        return sums

    ones = np.ones(len(hh))
    out["households"] = per_slot(hh, populated)
    out["cells"] = per_slot(ones, populated)
    for ci, c in enumerate(profile.classes):
        sel = populated & (cls == ci)
        out[f"households_{c.key}"] = per_slot(hh, sel)
        out[f"cells_{c.key}"] = per_slot(ones, sel)
    out["signal_cells"] = per_slot(ones, cells["n_signal"].to_numpy() > 0)
    mask = cells["mobile_mask"].to_numpy(dtype=np.int64)
    seen = cells["operators_measured"].to_numpy(dtype=np.int64)
    t4, t5 = MOBILE_TECHNOLOGIES.index("4G"), MOBILE_TECHNOLOGIES.index("5G")
    for i in range(n_operators):
        op_seen = ((seen >> i) & 1) == 1
        out[f"measured_{i}"] = per_slot(ones, op_seen)
        has5 = covers(mask, i, t5)
        has4 = covers(mask, i, t4) | has5  # 5G (NSA) runs on 4G
        out[f"covered_4g_{i}"] = per_slot(ones, op_seen & has4)
        out[f"covered_5g_{i}"] = per_slot(ones, op_seen & has5)
    return out


def district_frame(
    sums: dict[str, FloatArray],
    codes: list[str],
    names: list[str],
    operators: list[str],
    profile: Profile,
) -> pd.DataFrame:
    """:func:`district_stats` from :func:`district_sums` (of all cells, or added up)."""
    out: dict[str, Any] = {"code": [*codes, CITY_CODE], "name": [*names, "Gesamt"]}
    total_hh = sums["households"]
    out["households"] = total_hh.round().astype(np.int64)
    out["cells"] = sums["cells"].round().astype(np.int64)
    for c in profile.classes:
        h = sums[f"households_{c.key}"]
        out[f"households_{c.key}"] = h.round().astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"share_{c.key}"] = np.where(total_hh > 0, 100.0 * h / np.maximum(total_hh, 1), 0.0)
        out[f"cells_{c.key}"] = sums[f"cells_{c.key}"].round().astype(np.int64)
    out["signal_cells"] = sums["signal_cells"].round().astype(np.int64)
    for i, op in enumerate(operators):
        measured = sums[f"measured_{i}"]
        for tech in ("4g", "5g"):
            covered = sums[f"covered_{tech}_{i}"]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"area_{tech}_{op}"] = np.where(
                    measured > 0, 100.0 * covered / np.maximum(measured, 1), np.nan
                )
    return pd.DataFrame(out)
