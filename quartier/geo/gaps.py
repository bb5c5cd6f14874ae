"""Gap clusters: connected gap cells merged into polygons, with households, area, districts,
distance to the nearest gigabit-served cell and a priority score; pure and vectorised.

Cells are keyed ``row * KEY_MULT + col`` with ``row = n // 100`` and ``col = e // 100`` (the
lower-left corner of the INSPIRE cell in EPSG:3035 metres), so neighbours are ``key ± 1`` and
``key ± KEY_MULT``.

Priority score (0…1, higher first), a weighted mean of three terms in 0…1:

* ``households``: ``log(1 + h) / log(1 + h_max)``, the cluster's households against the largest
  cluster's (log, so that a few very large clusters do not flatten the rest),
* ``severity``: the household-weighted mean severity of the cells' classes (profile: white 1,
  grey 0.6, dark grey 0.3),
* ``proximity``: ``exp(-d / proximity_scale_m)`` with ``d`` the distance from the cluster to the
  nearest gigabit-served cell (0 when there is none): close to existing gigabit networks is cheap
  to close.

Weights are :class:`PriorityWeights` (default 0.5, 0.3, 0.2); ranks are by score, then
households, then cluster id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
from pydantic import BaseModel, ConfigDict, Field
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from quartier.geo import grid

KEY_MULT = 100_000
CELL = grid.CELL_SIZE_M

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class PriorityWeights(BaseModel):
    """Weights of the priority score terms; they need not sum to 1 (the score divides by the
    sum)."""

    model_config = ConfigDict(frozen=True)

    households: float = Field(default=0.5, ge=0)
    severity: float = Field(default=0.3, ge=0)
    proximity: float = Field(default=0.2, ge=0)


def keys_of(e: npt.ArrayLike, n: npt.ArrayLike) -> IntArray:
    """Cell keys for lower-left corners ``e``, ``n`` (metres)."""
    return (np.asarray(n, dtype=np.int64) // CELL) * KEY_MULT + np.asarray(
        e, dtype=np.int64
    ) // CELL


def corners_of(keys: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    """Lower-left corners ``(e, n)`` of cell keys."""
    k = np.asarray(keys, dtype=np.int64)
    return (k % KEY_MULT) * CELL, (k // KEY_MULT) * CELL


def label_clusters(keys: IntArray, connectivity: int = 4) -> IntArray:
    """Connected components of the cells ``keys`` (sorted, unique): a label 0…k-1 per cell,
    numbered in order of each component's first cell. ``connectivity`` 4 joins cells sharing an
    edge, 8 also cells sharing a corner."""
    if connectivity not in (4, 8):
        raise ValueError("connectivity must be 4 or 8")
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    steps = [1, KEY_MULT] + ([KEY_MULT + 1, KEY_MULT - 1] if connectivity == 8 else [])
    src: list[IntArray] = []
    dst: list[IntArray] = []
    for step in steps:
        target = keys + step
        pos = np.minimum(np.searchsorted(keys, target), n - 1)
        hit = keys[pos] == target
        src.append(np.flatnonzero(hit))
        dst.append(pos[hit])
    a, b = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n)).tocsr()
    _, raw = connected_components(graph, directed=False)
    # renumber by first appearance so labels follow the key order
    first = np.full(raw.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, raw, np.arange(n))
    order = np.argsort(first, kind="stable")
    relabel = np.empty_like(order)
    relabel[order] = np.arange(len(order))
    labels: IntArray = relabel[raw].astype(np.int64)
    return labels


_POLYGON_BATCH_CELLS = 100_000


def cluster_polygons(keys: IntArray, labels: IntArray, n_clusters: int) -> npt.NDArray[np.object_]:
    """One MultiPolygon per cluster (EPSG:4326): the union of its cells, dissolved in EPSG:3035
    (exact on the integer grid) and then projected. Clusters are dissolved in batches of about
    100,000 cells, so that the cell squares never all exist at once; a cluster of one cell is
    its square (the ring ``buffer(0)`` would give, without calling it)."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    bounds = np.searchsorted(sorted_labels, np.arange(n_clusters + 1))
    out: npt.NDArray[np.object_] = np.empty(n_clusters, dtype=object)
    first = 0
    while first < n_clusters:
        last = int(np.searchsorted(bounds, bounds[first] + _POLYGON_BATCH_CELLS, side="right"))
        last = min(max(last - 1, first + 1), n_clusters)  # at least one cluster per batch
        lo, hi = int(bounds[first]), int(bounds[last])
        e, n = corners_of(keys[order[lo:hi]])
        lab = sorted_labels[lo:hi] - first
        sizes = np.bincount(lab, minlength=last - first)
        if (sizes == 0).any():  # pragma: no cover - every label has a cell
            raise ValueError("cluster without cells")
        one = sizes[lab] == 1
        batch: npt.NDArray[np.object_] = np.empty(last - first, dtype=object)
        if one.any():
            x0, y0 = e[one].astype(np.float64), n[one].astype(np.float64)
            ring = np.stack(
                [
                    np.stack([x0 + CELL, x0, x0, x0 + CELL, x0 + CELL], axis=-1),
                    np.stack([y0, y0, y0 + CELL, y0 + CELL, y0], axis=-1),
                ],
                axis=-1,
            )  # clockwise from the lower-right corner, like buffer(0)
            batch[lab[one]] = shapely.multipolygons(shapely.polygons(ring).reshape(-1, 1))
        if not one.all():
            many = ~one
            present, inverse = np.unique(lab[many], return_inverse=True)
            squares = shapely.box(e[many], n[many], e[many] + CELL, n[many] + CELL)
            merged = shapely.multipolygons(squares, indices=inverse)
            del squares
            batch[present] = _dissolve(merged)
        out[first:last] = _project(batch)
        first = last
    return out


def _dissolve(merged: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    dissolved = shapely.buffer(merged, 0)  # unions the touching squares of each cluster
    dissolved = shapely.simplify(dissolved, 0)  # drops the vertices inside straight edges
    single = shapely.get_type_id(dissolved) == 3
    dissolved[single] = shapely.multipolygons(dissolved[single].reshape(-1, 1))
    out: npt.NDArray[np.object_] = np.asarray(dissolved, dtype=object)
    return out


def _project(geoms: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    def project(coords: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        lon, lat = grid.from_grid_crs(coords[:, 0], coords[:, 1])
        return np.column_stack([lon, lat])

    out: npt.NDArray[np.object_] = np.asarray(shapely.transform(geoms, project), dtype=object)
    return out


def nearest_distances(keys: IntArray, targets: IntArray) -> FloatArray:
    """Distance (m) from each cell of ``keys`` to the nearest cell of ``targets`` (corner to
    corner, which is centre to centre); ``targets`` not empty."""
    ge, gn = corners_of(targets)
    ce, cn = corners_of(keys)
    d, _ = cKDTree(np.column_stack([ge, gn]).astype(np.float64)).query(
        np.column_stack([ce, cn]).astype(np.float64), k=1
    )
    out: FloatArray = np.asarray(d, dtype=np.float64)
    return out


def cluster_severity(hh_by_class: IntArray, class_severity: FloatArray) -> FloatArray:
    """Household-weighted mean severity per cluster from its households per class (clusters ×
    classes), summed class by class: the same figure however the households were added up."""
    hh = hh_by_class.sum(axis=1)
    sev_w = np.zeros(len(hh_by_class))
    for c in range(hh_by_class.shape[1]):
        sev_w += hh_by_class[:, c] * class_severity[c]
    with np.errstate(invalid="ignore", divide="ignore"):
        severity: FloatArray = np.where(hh > 0, sev_w / np.maximum(hh, 1), 0.0)
    return severity


def score_clusters(
    hh: IntArray,
    severity: FloatArray,
    dist: FloatArray,
    w: PriorityWeights,
    proximity_scale_m: float,
) -> tuple[FloatArray, IntArray]:
    """Priority score and rank (1 first: by score, then households, then cluster number) of
    clusters with households ``hh``, ``severity`` and distance to gigabit ``dist`` (inf or NaN:
    none)."""
    k = len(hh)
    total = w.households + w.severity + w.proximity
    h_term = np.log1p(hh) / np.log1p(max(int(hh.max()), 1)) if k else np.zeros(0)
    p_term = np.where(np.isfinite(dist), np.exp(-np.nan_to_num(dist) / proximity_scale_m), 0.0)
    priority: FloatArray = (
        (w.households * h_term + w.severity * severity + w.proximity * p_term) / total
        if total > 0
        else np.zeros(k)
    )
    order = np.lexsort((np.arange(k), -hh, -np.round(priority, 12)))
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(1, k + 1)
    return priority, rank


@dataclass(frozen=True)
class Clusters:
    """Per gap cell: ``labels`` (0-based); per cluster (index = label): the rest."""

    labels: IntArray
    cells: IntArray
    households: IntArray
    severity: FloatArray
    worst_class: IntArray
    distance_gigabit_m: FloatArray  # NaN without any gigabit cell
    priority: FloatArray
    rank: IntArray  # 1 = highest priority
    districts: list[str]
    geometry: npt.NDArray[np.object_]


def find_clusters(
    gap_keys: IntArray,
    gap_households: IntArray,
    gap_class: IntArray,
    gap_district: IntArray,
    district_codes: Sequence[str],
    class_severity: FloatArray,
    gigabit_keys: IntArray,
    *,
    connectivity: int = 4,
    weights: PriorityWeights | None = None,
    proximity_scale_m: float = 1000.0,
    with_polygons: bool = True,
) -> Clusters:
    """Clusters of the gap cells ``gap_keys`` (sorted, unique) with their households, class index
    and district (index into ``district_codes``, -1 outside); ``gigabit_keys`` are the cells
    served with gigabit."""
    w = weights or PriorityWeights()
    labels = label_clusters(gap_keys, connectivity)
    k = int(labels.max()) + 1 if len(labels) else 0
    cells = np.bincount(labels, minlength=k).astype(np.int64)
    n_cls = len(class_severity)
    hh_by_class = (
        np.bincount(labels * n_cls + gap_class, weights=gap_households, minlength=k * n_cls)
        .round()
        .astype(np.int64)
        .reshape(k, n_cls)
    )
    hh = hh_by_class.sum(axis=1)
    severity = cluster_severity(hh_by_class, class_severity)
    worst = np.full(k, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(worst, labels, gap_class.astype(np.int64))
    # distance from each gap cell centre to the nearest gigabit cell centre, minimum per cluster
    dist = np.full(k, np.nan)
    if k and len(gigabit_keys):
        d = nearest_distances(gap_keys, gigabit_keys)
        dist = np.full(k, np.inf)
        np.minimum.at(dist, labels, d)
    # districts: the distinct codes of each cluster, in district order, comma-joined
    districts = [""] * k
    valid = gap_district >= 0
    if valid.any():
        m = len(district_codes)
        pairs = np.unique(labels[valid] * m + gap_district[valid])
        lab, code_idx = pairs // m, pairs % m
        bounds = np.searchsorted(lab, np.arange(k + 1))
        districts = [
            ",".join(district_codes[i] for i in code_idx[bounds[j] : bounds[j + 1]])
            for j in range(k)
        ]
    priority, rank = score_clusters(hh, severity, dist, w, proximity_scale_m)
    geometry = (
        cluster_polygons(gap_keys, labels, k) if with_polygons and k else np.empty(0, dtype=object)
    )
    return Clusters(
        labels=labels,
        cells=cells,
        households=hh,
        severity=severity,
        worst_class=worst,
        distance_gigabit_m=np.where(np.isfinite(dist), dist, np.nan),
        priority=priority,
        rank=rank,
        districts=districts,
        geometry=geometry,
    )
