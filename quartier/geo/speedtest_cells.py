"""Coverage from crowdsourced speed tests: each measured 100 m cell gets the median measured
download and a speed class.

Classes (lower bound inclusive, upper bound exclusive, Mbit/s): below 30, 30 to under 100,
100 to under 1000, 1000 and more (gigabit). A cell is assigned to the district whose polygon
contains (or touches) the cell centre.

k-anonymity (docs/privacy.md): a cell is published only when at least ``min_contributors``
distinct devices measured in it (:func:`contributed_cells`); the tests of other cells are left
out before anything is counted, so no count below k (and no "n_tests: 1") leaves the system.
The coverage analysis reads its inputs through the same rule (``geo/input_store.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely

from quartier.config import PrivacySettings
from quartier.geo import grid

log = logging.getLogger(__name__)

#: k: the fewest distinct devices a published cell aggregate may stem from (privacy setting)
MIN_CONTRIBUTORS: int = PrivacySettings.model_fields["min_contributors"].default


def contributed_cells(
    cell_e: npt.ArrayLike, cell_n: npt.ArrayLike, device: npt.ArrayLike, min_contributors: int
) -> npt.NDArray[np.bool_]:
    """Per row (a measurement in cell ``cell_e``/``cell_n`` by ``device``, any hashable codes):
    whether its cell has at least ``min_contributors`` distinct devices. Rows of other cells must
    not reach a published aggregate."""
    e = np.asarray(cell_e, dtype=np.int64).reshape(-1)
    n = np.asarray(cell_n, dtype=np.int64).reshape(-1)
    if len(e) == 0 or min_contributors <= 1:
        return np.ones(len(e), dtype=np.bool_)
    dev_codes = pd.factorize(pd.Series(np.asarray(device).reshape(-1)), use_na_sentinel=False)[0]
    frame = pd.DataFrame({"e": e, "n": n, "d": dev_codes})
    distinct = frame.drop_duplicates().groupby(["e", "n"]).size()
    enough = distinct[distinct >= min_contributors]
    if enough.empty:
        return np.zeros(len(e), dtype=np.bool_)
    keep = pd.MultiIndex.from_arrays([e, n]).isin(enough.index)
    return np.asarray(keep, dtype=np.bool_)


@dataclass(frozen=True)
class SpeedClass:
    """A download speed class: ``lower_mbps`` inclusive, ``upper_mbps`` exclusive (None: open)."""

    key: str
    lower_mbps: float
    upper_mbps: float | None
    label_de: str
    label_en: str


SPEED_CLASSES: tuple[SpeedClass, ...] = (
    SpeedClass("below_30", 0.0, 30.0, "unter 30 Mbit/s", "below 30 Mbit/s"),
    SpeedClass("30_to_100", 30.0, 100.0, "30 bis unter 100 Mbit/s", "30 to below 100 Mbit/s"),
    SpeedClass(
        "100_to_1000", 100.0, 1000.0, "100 bis unter 1000 Mbit/s", "100 to below 1000 Mbit/s"
    ),
    SpeedClass(
        "gigabit", 1000.0, None, "ab 1000 Mbit/s (Gigabit)", "1000 Mbit/s and more (gigabit)"
    ),
)
SPEED_CLASS_BY_KEY: dict[str, SpeedClass] = {c.key: c for c in SPEED_CLASSES}
GIGABIT_CLASS = "gigabit"

_CLASS_KEYS = np.array([c.key for c in SPEED_CLASSES], dtype=object)
_CLASS_BOUNDS = np.array([c.lower_mbps for c in SPEED_CLASSES[1:]], dtype=np.float64)

CELL_COLUMNS = [
    "cell_id",
    "n_tests",
    "median_download_mbps",
    "class_key",
    "district_code",
    "geometry",
]


def classify_download(download_mbps: npt.ArrayLike) -> npt.NDArray[np.object_]:
    """The speed class key for each download speed (Mbit/s); values must be finite and >= 0."""
    values = np.asarray(download_mbps, dtype=np.float64)
    if not (np.isfinite(values).all() and (values >= 0).all()):
        raise ValueError("download speeds must be finite and not negative")
    # side="right": a value exactly on a bound belongs to the class that starts there
    idx = np.searchsorted(_CLASS_BOUNDS, values, side="right")
    keys: npt.NDArray[np.object_] = _CLASS_KEYS[idx]
    return keys


def assign_districts(
    lon: npt.ArrayLike, lat: npt.ArrayLike, districts: gpd.GeoDataFrame
) -> npt.NDArray[np.object_]:
    """The ``code`` of the district containing each WGS84 point, None outside every district.

    A point on a shared boundary goes to the first matching district in ``districts`` order.
    """
    points = shapely.points(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    codes: npt.NDArray[np.object_] = np.full(len(points), None, dtype=object)
    if len(points) == 0 or len(districts) == 0:
        return codes
    geoms = districts.geometry
    if districts.crs is not None and not districts.crs.equals(grid.WGS84):
        geoms = geoms.to_crs(grid.WGS84)
    # The tree holds the points and the districts query it: each district polygon is prepared once,
    # which is an order of magnitude faster than testing every point against the raw polygons.
    district_idx, point_idx = shapely.STRtree(points).query(
        np.asarray(geoms.values, dtype=object), predicate="intersects"
    )
    if len(point_idx):
        order = np.lexsort((district_idx, point_idx))
        point_idx, district_idx = point_idx[order], district_idx[order]
        first = np.unique(point_idx, return_index=True)[1]
        district_codes = np.asarray(districts["code"].astype(object).to_numpy(), dtype=object)
        codes[point_idx[first]] = district_codes[district_idx[first]]
    return codes


def empty_cells() -> gpd.GeoDataFrame:
    """A cell table without rows, with the columns and types of :func:`classify_cells`."""
    frame = pd.DataFrame(
        {
            "cell_id": pd.Series([], dtype=str),
            "n_tests": pd.Series([], dtype=np.int64),
            "median_download_mbps": pd.Series([], dtype=np.float64),
            "class_key": pd.Series([], dtype=str),
            "district_code": pd.Series([], dtype=str),
        }
    )
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries([], crs=grid.WGS84), crs=grid.WGS84)


def classify_cells(
    tests: pd.DataFrame,
    districts: gpd.GeoDataFrame | None = None,
    *,
    min_contributors: int = MIN_CONTRIBUTORS,
) -> gpd.GeoDataFrame:
    """One row per measured 100 m cell with at least ``min_contributors`` distinct devices
    (k-anonymity; the other cells are left out whole), sorted by ``cell_id``.

    ``tests`` needs columns ``lon``, ``lat`` (WGS84), ``download_mbps`` and (unless
    ``min_contributors`` is 1) ``device_key``; rows
    with a missing, non-finite or negative value are dropped (and counted in the log).
    ``districts`` (columns ``code`` and ``geometry``) assigns each cell the district containing
    its centre.

    Columns: ``cell_id``, ``n_tests``, ``median_download_mbps``, ``class_key`` (see
    :data:`SPEED_CLASSES`), ``district_code`` (None without districts or outside all of them) and
    ``geometry`` (the cell polygon, EPSG:4326). Text columns are pandas strings; a missing
    ``district_code`` is NA (test with ``pd.isna``).
    """
    needed = {"lon", "lat", "download_mbps"} | ({"device_key"} if min_contributors > 1 else set())
    missing = needed - set(tests.columns)
    if missing:
        raise ValueError(f"speed tests lack columns: {', '.join(sorted(missing))}")
    lon = pd.to_numeric(tests["lon"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    lat = pd.to_numeric(tests["lat"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    down = pd.to_numeric(tests["download_mbps"], errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    ok = (
        np.isfinite(lon)
        & np.isfinite(lat)
        & (np.abs(lon) <= 180)
        & (np.abs(lat) <= 90)
        & np.isfinite(down)
        & (down >= 0)
    )
    dropped = int((~ok).sum())
    if dropped:
        log.warning("ignored %d of %d speed tests with invalid position or speed", dropped, len(ok))
    if not ok.any():
        return empty_cells()
    ids, e, n = grid.cell_index(lon[ok], lat[ok])
    if min_contributors > 1:
        devices = tests["device_key"].to_numpy(dtype=object)[ok]
        public = contributed_cells(e, n, devices, min_contributors)
    else:  # every cell public: only for tests of the classification itself
        public = np.ones(len(e), dtype=np.bool_)
    if not public.all():
        log.info(
            "left out %d of %d speed tests in cells with fewer than %d devices",
            int((~public).sum()),
            len(public),
            min_contributors,
        )
        if not public.any():
            return empty_cells()
        ids, e, n = ids[public], e[public], n[public]
    per_test = pd.DataFrame({"cell_id": ids, "e": e, "n": n, "down": down[ok][public]})
    per_cell = (
        per_test.groupby("cell_id", sort=True)
        .agg(
            n_tests=("down", "size"),
            median_download_mbps=("down", "median"),
            e=("e", "first"),
            n=("n", "first"),
        )
        .reset_index()
    )
    cell_e = per_cell["e"].to_numpy(dtype=np.int64)
    cell_n = per_cell["n"].to_numpy(dtype=np.int64)
    medians = per_cell["median_download_mbps"].to_numpy(dtype=np.float64)
    if districts is None:
        codes: npt.NDArray[np.object_] = np.full(len(per_cell), None, dtype=object)
    else:
        codes = assign_districts(*grid.cell_centres(cell_e, cell_n), districts)
    frame = pd.DataFrame(
        {
            "cell_id": pd.Series(per_cell["cell_id"].to_numpy(), dtype=str),
            "n_tests": per_cell["n_tests"].to_numpy(dtype=np.int64),
            "median_download_mbps": medians,
            "class_key": pd.Series(classify_download(medians), dtype=str),
            "district_code": pd.Series(codes, dtype=str),
        }
    )
    return gpd.GeoDataFrame(
        frame,
        geometry=gpd.GeoSeries(grid.cell_polygons(cell_e, cell_n), crs=grid.WGS84),
        crs=grid.WGS84,
    )
