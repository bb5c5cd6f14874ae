"""The INSPIRE 100 m grid in ETRS89-LAEA (EPSG:3035), the grid of the Breitbandatlas, the
Mobilfunk-Monitoring and the Zensus.

A cell is named by its lower-left corner in metres, ``CRS3035RES100mN{northing}E{easting}``, with
``northing = floor(y / 100) * 100`` and ``easting = floor(x / 100) * 100``. Cells are analysed in
EPSG:3035 and handed out as polygons in EPSG:4326.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from pyproj import Transformer

GRID_CRS = "EPSG:3035"
WGS84 = "EPSG:4326"
CELL_SIZE_M = 100
CELL_ID_PREFIX = f"CRS3035RES{CELL_SIZE_M}m"
CELL_ID_PATTERN = re.compile(rf"^{CELL_ID_PREFIX}N(\d+)E(\d+)$")
#: decimals of WGS84 coordinates handed out (GeoJSON, maps): 6 is about 0.1 m
COORD_DECIMALS = 6

# pyproj Transformers are not thread-safe: each thread builds its own, once.
_local = threading.local()


def _transformer(direction: str) -> Transformer:
    cached: Transformer | None = getattr(_local, direction, None)
    if cached is None:
        src, dst = (WGS84, GRID_CRS) if direction == "forward" else (GRID_CRS, WGS84)
        cached = Transformer.from_crs(src, dst, always_xy=True)
        setattr(_local, direction, cached)
    return cached


def to_grid_crs(
    lon: npt.ArrayLike, lat: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Project WGS84 longitude/latitude (degrees) to EPSG:3035 x (easting), y (northing), metres."""
    x, y = _transformer("forward").transform(
        np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    )
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def from_grid_crs(
    x: npt.ArrayLike, y: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Project EPSG:3035 x, y (metres) back to WGS84 longitude, latitude (degrees)."""
    lon, lat = _transformer("inverse").transform(
        np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    )
    return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)


def cell_ids(e: npt.ArrayLike, n: npt.ArrayLike) -> npt.NDArray[np.str_]:
    """Cell ids for lower-left corners ``e`` (easting) and ``n`` (northing) in metres."""
    e_str = np.asarray(e, dtype=np.int64).astype(np.str_)
    n_str = np.asarray(n, dtype=np.int64).astype(np.str_)
    return np.char.add(np.char.add(f"{CELL_ID_PREFIX}N", n_str), np.char.add("E", e_str))


def parse_cell_ids(
    ids: Iterable[object],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Lower-left corners ``e``, ``n`` of cell ids (surrounding spaces ignored) and which ids
    are well-formed; ``e`` and ``n`` are 0 where not."""
    text = pd.Series(list(ids), dtype=object).astype(str).str.strip()
    parts = text.str.extract(CELL_ID_PATTERN)
    ok = parts[0].notna().to_numpy(dtype=bool)
    n = pd.to_numeric(parts[0], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
    e = pd.to_numeric(parts[1], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
    return e, n, ok


def cell_index(
    lon: npt.ArrayLike, lat: npt.ArrayLike
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The 100 m cell of each WGS84 point: ``(cell_ids, e, n)``, ``e``/``n`` the lower-left corner.

    Raises ``ValueError`` if a coordinate is not finite or cannot be projected.
    """
    x, y = to_grid_crs(lon, lat)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("coordinates must be finite WGS84 longitude/latitude")
    e = (np.floor(x / CELL_SIZE_M) * CELL_SIZE_M).astype(np.int64)
    n = (np.floor(y / CELL_SIZE_M) * CELL_SIZE_M).astype(np.int64)
    return cell_ids(e, n), e, n


def cell_centres(
    e: npt.ArrayLike, n: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """WGS84 longitude, latitude of the centres of the cells with lower-left corner ``e``, ``n``."""
    half = CELL_SIZE_M / 2
    return from_grid_crs(
        np.asarray(e, dtype=np.float64) + half, np.asarray(n, dtype=np.float64) + half
    )


def cell_polygons(e: npt.ArrayLike, n: npt.ArrayLike) -> npt.NDArray[np.object_]:
    """Cell polygons in EPSG:4326 for lower-left corners ``e``, ``n`` (the 4 corners projected)."""
    e_arr = np.asarray(e, dtype=np.float64).reshape(-1)
    n_arr = np.asarray(n, dtype=np.float64).reshape(-1)
    size = float(CELL_SIZE_M)
    # corners counter-clockwise from lower-left, shape (k, 4)
    xs = e_arr[:, None] + np.array([0.0, size, size, 0.0])
    ys = n_arr[:, None] + np.array([0.0, 0.0, size, size])
    lon, lat = from_grid_crs(xs.reshape(-1), ys.reshape(-1))
    coords = np.stack([lon, lat], axis=-1).reshape(-1, 4, 2)
    polygons: npt.NDArray[np.object_] = np.asarray(shapely.polygons(coords), dtype=object)
    return polygons.reshape(-1)
