"""The maps' data layers of a coverage run, made once (when the run is stored, or for a page that
cannot use stored ones) and drawn as they are: per layer a GeoJSON FeatureCollection as text, in
EPSG:4326 with coordinates rounded to :data:`DECIMALS` (about 1 m, a hundredth of a cell), the
number of cells it holds and what the legend needs.

* layers without a per-cell tooltip (the mobile map's measured cells and operator layers, the
  measured map's compared cells) are the cells merged into as few polygons as touch;
* layers with one (the measured map's cells below the offer, the broadband map's supply cells,
  dead zones) are one square per cell with short property keys.

Texts (layer names, tooltip labels, the legend) are not in the layers: the page adds them in
German or English. Pure: cells in, layers out; no database access.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd
import shapely

from quartier.geo import grid
from quartier.geo.analysis import covers

#: decimals of the layers' WGS84 coordinates: 1e-5 degrees, about 1 m (a hundredth of a cell)
DECIMALS = 5
#: the mobile map's layers: these technologies per operator
MOBILE_MAP_TECHNOLOGIES: tuple[str, ...] = ("4G", "5G")
#: the broadband map draws at most this many supply cells (the worst classes first)
MAX_MAP_CELLS = 20_000
#: upper bounds (share of the offer) of the measured map's shades below ``disagree_below``
RATIO_STEPS: tuple[float, ...] = (0.1, 0.2)
#: the measured map's overview (zoomed out): cells of the INSPIRE 1 km grid (``CRS3035RES1000m``)
COARSE_CELL_M = 1000
COARSE_ID_PREFIX = f"CRS3035RES{COARSE_CELL_M}m"
#: upper bounds of the overview's classes (share of a 1 km cell's compared 100 m cells that are
#: well below the offer): class 0 none below, 1 under 10 %, 2 10 to under 30 %, 3 30 % and more
COARSE_STEPS: tuple[float, ...] = (0.1, 0.3)

EMPTY = '{"type": "FeatureCollection", "features": []}'


@dataclass(frozen=True)
class MapLayer:
    """One layer of one map: ``key`` (e.g. ``op:0:4G``), the cells it holds, ``geojson`` (a
    FeatureCollection as text) and ``meta`` (what the legend needs besides the count)."""

    key: str
    cells: int
    geojson: str = EMPTY
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MapLayers:
    """The layers of one map, in drawing order, and the privacy threshold they were made at."""

    map: str
    layers: tuple[MapLayer, ...]
    min_contributors: int = 1

    def get(self, key: str) -> MapLayer | None:
        return next((layer for layer in self.layers if layer.key == key), None)

    def starting(self, prefix: str) -> list[MapLayer]:
        return [layer for layer in self.layers if layer.key.startswith(prefix)]


# --- geometry ------------------------------------------------------------------------------------


def merged_cells(e: npt.ArrayLike, n: npt.ArrayLike) -> gpd.GeoDataFrame:
    """The 100 m cells with lower-left corners ``e``, ``n`` merged into as few polygons as touch
    (one feature instead of thousands), in EPSG:4326."""
    size = float(grid.CELL_SIZE_M)
    x, y = np.asarray(e, dtype=np.float64), np.asarray(n, dtype=np.float64)
    squares = shapely.box(x, y, x + size, y + size)
    merged = shapely.coverage_union_all(squares) if len(squares) else shapely.Polygon()
    # without the vertices in the middle of straight edges (one per cell side)
    parts = shapely.simplify(shapely.get_parts(merged), 0.0)
    frame = gpd.GeoDataFrame(geometry=gpd.GeoSeries(parts, crs=grid.GRID_CRS))
    return frame.to_crs(4326)


def features_geojson(geometries: npt.ArrayLike, properties: Sequence[dict[str, Any]]) -> str:
    """A FeatureCollection (text) of shapely ``geometries`` (EPSG:4326, coordinates rounded to
    :data:`DECIMALS`) with ``properties`` (one dict per geometry); the geometries are written
    by GEOS, not through Python objects."""
    geoms = np.asarray(geometries, dtype=object).reshape(-1)
    if not len(geoms):
        return EMPTY
    rounded = shapely.transform(geoms, lambda c: np.round(c, DECIMALS))
    texts = shapely.to_geojson(rounded).tolist()
    features = ",".join(
        f'{{"type": "Feature", "properties": {json.dumps(p)}, "geometry": {g}}}'
        for p, g in zip(properties, texts, strict=True)
    )
    return f'{{"type": "FeatureCollection", "features": [{features}]}}'


def merged_geojson(e: npt.ArrayLike, n: npt.ArrayLike) -> str:
    """The cells merged (:func:`merged_cells`) as a FeatureCollection without properties."""
    if not len(np.asarray(e)):
        return EMPTY
    frame = merged_cells(e, n)
    return features_geojson(frame.geometry.values, [{}] * len(frame))


def cell_geojson(
    e: npt.ArrayLike,
    n: npt.ArrayLike,
    properties: dict[str, Sequence[Any]],
    size_m: int = grid.CELL_SIZE_M,
    *,
    compact: bool = False,
) -> str:
    """One square per cell (lower-left corners ``e``, ``n``, sides ``size_m``; its 4 corners
    projected) with the per-cell ``properties`` (short keys: a Köln-sized layer has 10,000+
    cells). ``compact``: written by orjson, without spaces (the same GeoJSON, some ten times
    faster: what ``/maps/measured/cells`` answers); else by :func:`json.dumps`, as stored."""
    e_arr = np.asarray(e, dtype=np.float64).reshape(-1)
    n_arr = np.asarray(n, dtype=np.float64).reshape(-1)
    if not len(e_arr):
        return EMPTY
    size = float(size_m)
    xs = e_arr[:, None] + np.array([0.0, size, size, 0.0, 0.0])
    ys = n_arr[:, None] + np.array([0.0, 0.0, size, size, 0.0])
    lon, lat = grid.from_grid_crs(xs.reshape(-1), ys.reshape(-1))
    ring = np.stack([np.round(lon, DECIMALS), np.round(lat, DECIMALS)], axis=-1)
    squares = ring.reshape(-1, 5, 2)
    rings = squares if compact else squares.tolist()
    columns = {k: list(v) for k, v in properties.items()}
    features = [
        {
            "type": "Feature",
            "properties": {k: v[i] for k, v in columns.items()},
            "geometry": {"type": "Polygon", "coordinates": [rings[i]]},
        }
        for i in range(len(rings))
    ]
    collection = {"type": "FeatureCollection", "features": features}
    if compact:
        return orjson.dumps(collection, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return json.dumps(collection)


def _ints(values: pd.Series) -> list[int]:
    out: list[int] = values.to_numpy(dtype=np.int64).tolist()
    return out


def _floats(values: npt.ArrayLike, decimals: int) -> list[float]:
    out: list[float] = np.round(np.asarray(values, dtype=np.float64), decimals).tolist()
    return out


def short_cell_ids(e: npt.ArrayLike, n: npt.ArrayLike) -> list[str]:
    """Cell ids without the ``CRS3035RES100m`` prefix (``N…E…``)."""
    ids = np.char.replace(grid.cell_ids(e, n).astype(str), grid.CELL_ID_PREFIX, "")
    out: list[str] = ids.tolist()
    return out


# --- the maps ----------------------------------------------------------------------------------


def mobile_layers(
    cells: pd.DataFrame,
    operators: Sequence[str],
    technologies: Sequence[str],
    *,
    min_contributors: int = 1,
) -> MapLayers:
    """The mobile map: ``measured`` (the cells with signal measurements, merged), per operator
    ``i`` and technology ``op:i:4G`` / ``op:i:5G`` (the cells it covers, merged; meta
    ``operator``, ``technology``, ``index``, ``shade`` 0 for 4G and 1 for 5G; only
    technologies the run has), ``dead`` (dead zones, one square per cell, property ``c`` the cell
    id). ``cells`` as from :func:`quartier.geo.run_store.load_cells`, already limited to the
    cells that may be published."""
    measured = cells[cells["n_signal"].to_numpy() > 0] if len(cells) else cells
    out = [
        MapLayer(
            "measured",
            len(measured),
            merged_geojson(measured["e"], measured["n"]) if len(measured) else EMPTY,
        )
    ]
    mask = measured["mobile_mask"].to_numpy(dtype=np.int64) if len(measured) else None
    for i, operator in enumerate(operators):
        for shade, tech in enumerate(MOBILE_MAP_TECHNOLOGIES):
            if tech not in technologies:
                continue
            has = (
                covers(mask, i, list(technologies).index(tech), len(technologies))
                if mask is not None
                else np.zeros(0, dtype=bool)
            )
            covered = measured[has] if len(measured) else measured
            out.append(
                MapLayer(
                    f"op:{i}:{tech}",
                    len(covered),
                    merged_geojson(covered["e"], covered["n"]) if len(covered) else EMPTY,
                    {"operator": str(operator), "technology": tech, "index": i, "shade": shade},
                )
            )
    dead = measured[measured["dead_zone"].to_numpy(dtype=bool)] if len(measured) else measured
    e, n = (dead["e"].to_numpy(), dead["n"].to_numpy()) if len(dead) else ([], [])
    ids = grid.cell_ids(e, n).tolist() if len(dead) else []
    out.append(MapLayer("dead", len(dead), cell_geojson(e, n, {"c": ids})))
    return MapLayers("mobile", tuple(out), min_contributors)


def ratio_classes(disagree_below: float) -> list[tuple[float, float]]:
    """The measured map's shades' [lower, upper) bounds (shares of the offer), from 0 to
    ``disagree_below``."""
    uppers = [s for s in RATIO_STEPS if s < disagree_below] + [disagree_below]
    return list(zip([0.0, *uppers[:-1]], uppers, strict=True))


def _compared(cells: pd.DataFrame) -> tuple[pd.DataFrame, npt.NDArray[np.bool_]]:
    """The compared cells (a finite measured ratio: tests and an offer) and which of them are
    well below the offer (``disagreement`` "below")."""
    if not len(cells):
        return cells, np.zeros(0, dtype=bool)
    compared = cells[np.isfinite(cells["measured_ratio"].to_numpy(dtype=np.float64))]
    is_below = (compared["disagreement"] == "below").to_numpy(dtype=bool, na_value=False)
    return compared, is_below


def _shades(ratio: npt.ArrayLike, classes: Sequence[tuple[float, float]]) -> npt.NDArray[np.int64]:
    """The shade (index into ``classes``) of each ratio below the offer."""
    uppers = np.array([u for _l, u in classes[:-1]], dtype=np.float64)
    return np.searchsorted(uppers, np.asarray(ratio, dtype=np.float64), side="right").astype(
        np.int64
    )


def _cell_properties(cells: pd.DataFrame, shade: npt.ArrayLike) -> dict[str, Sequence[Any]]:
    """The measured map's per-cell tooltip properties (``s`` shade, ``m`` measured median, ``o``
    offer, ``r`` ratio in %, ``t`` tests, ``c`` the short cell id)."""
    e, n = cells["e"].to_numpy(), cells["n"].to_numpy()
    ratio = cells["measured_ratio"].to_numpy(dtype=np.float64)
    return {
        "s": np.asarray(shade, dtype=np.int64).tolist(),
        "m": _floats(cells["measured_down_mbps"], 1),
        "o": _floats(cells["max_down_mbps"], 0),
        "r": _floats(100 * ratio, 1),
        "t": _ints(cells["n_tests"]),
        "c": short_cell_ids(e, n),
    }


def fine_geojson(cells: pd.DataFrame, *, disagree_below: float = 0.3) -> str:
    """The measured map's zoomed-in view: one square per compared 100 m cell of ``cells`` with
    its tooltip properties; ``s`` is the shade of :func:`ratio_classes` for a cell well below
    the offer and ``len(ratio_classes(...))`` for one whose measurement is as expected. ``cells``
    limited to the cells that may be published."""
    compared, is_below = _compared(cells)
    if not len(compared):
        return EMPTY
    classes = ratio_classes(disagree_below)
    shade = np.where(
        is_below, _shades(compared["measured_ratio"].to_numpy(dtype=np.float64), classes),
        len(classes),
    )  # fmt: skip
    return cell_geojson(
        compared["e"], compared["n"], _cell_properties(compared, shade), compact=True
    )


def coarse_cells(cells: pd.DataFrame, *, disagree_below: float = 0.3) -> pd.DataFrame:
    """The measured map's overview: per cell of the INSPIRE 1 km grid holding compared 100 m
    cells of ``cells``, ``e``, ``n`` (its lower-left corner), ``cells`` (the compared 100 m
    cells), ``below`` (those well below the offer), ``shade_0`` … (of them per shade of
    :func:`ratio_classes`), ``tests`` (the sum of their tests), ``measured`` (the median of their
    measured medians, Mbit/s), ``offer`` (the median of their best offers), ``ratio`` (the
    median of their ratios, a share), ``share`` (``below`` / ``cells``) and ``klass`` (0 none
    below, then by :data:`COARSE_STEPS`), ordered by ``n``, ``e``.

    Privacy (docs/privacy.md): made only of the cells given, which are the published ones (at
    least k distinct devices each), so every 1 km cell holds at least k distinct devices too and
    shows nothing a published 100 m cell does not."""
    classes = ratio_classes(disagree_below)
    shade_cols = [f"shade_{i}" for i in range(len(classes))]
    columns = ["e", "n", "cells", "below", *shade_cols, "tests", "measured", "offer", "ratio",
               "share", "klass"]  # fmt: skip
    compared, is_below = _compared(cells)
    if not len(compared):
        return pd.DataFrame({c: pd.Series(dtype=np.float64) for c in columns})
    ratio = compared["measured_ratio"].to_numpy(dtype=np.float64)
    shade = np.where(is_below, _shades(ratio, classes), -1)
    size = COARSE_CELL_M
    frame = pd.DataFrame({
        "e": compared["e"].to_numpy(dtype=np.int64) // size * size,
        "n": compared["n"].to_numpy(dtype=np.int64) // size * size,
        "below": is_below.astype(np.int64),
        **{col: (shade == i).astype(np.int64) for i, col in enumerate(shade_cols)},
        "tests": compared["n_tests"].to_numpy(dtype=np.int64),
        "measured": compared["measured_down_mbps"].to_numpy(dtype=np.float64),
        "offer": compared["max_down_mbps"].to_numpy(dtype=np.float64),
        "ratio": ratio,
    })  # fmt: skip
    grouped = frame.groupby(["n", "e"], sort=True)
    sums = grouped[["below", *shade_cols, "tests"]].sum()
    medians = grouped[["measured", "offer", "ratio"]].median()
    out = pd.concat([grouped.size().rename("cells"), sums, medians], axis=1).reset_index()
    out["share"] = out["below"] / out["cells"]
    steps = np.array(COARSE_STEPS, dtype=np.float64)
    out["klass"] = np.where(
        out["below"].to_numpy() > 0,
        1 + np.searchsorted(steps, out["share"].to_numpy(dtype=np.float64), side="right"),
        0,
    )
    return out[columns]


def coarse_ids(e: npt.ArrayLike, n: npt.ArrayLike) -> list[str]:
    """INSPIRE ids of 1 km cells (``CRS3035RES1000mN…E…``, corners in metres)."""
    e_str = np.asarray(e, dtype=np.int64).astype(np.str_)
    n_str = np.asarray(n, dtype=np.int64).astype(np.str_)
    ids = np.char.add(np.char.add(f"{COARSE_ID_PREFIX}N", n_str), np.char.add("E", e_str))
    out: list[str] = ids.tolist()
    return out


def coarse_layer(cells: pd.DataFrame, *, disagree_below: float = 0.3) -> MapLayer:
    """``coarse``: the overview of :func:`coarse_cells` as one 1 km square per cell with ``s``
    its class, ``b`` the 100 m cells well below the offer, ``n`` the compared ones, ``t`` the
    tests, ``m`` the median measured, ``o`` the median offer (Mbit/s), ``r`` the median ratio in
    %, ``c`` the INSPIRE id; meta ``classes`` (1 km cells per class) and ``steps``."""
    coarse = coarse_cells(cells, disagree_below=disagree_below)
    counts = [int((coarse["klass"] == i).sum()) for i in range(len(COARSE_STEPS) + 2)]
    meta = {"classes": counts, "steps": list(COARSE_STEPS), "cell_m": COARSE_CELL_M}
    if not len(coarse):
        return MapLayer("coarse", 0, EMPTY, meta)
    e, n = coarse["e"].to_numpy(), coarse["n"].to_numpy()
    geojson = cell_geojson(e, n, {
        "s": _ints(coarse["klass"]), "b": _ints(coarse["below"]), "n": _ints(coarse["cells"]),
        "t": _ints(coarse["tests"]), "m": _floats(coarse["measured"], 1),
        "o": _floats(coarse["offer"], 0), "r": _floats(100 * coarse["ratio"], 1),
        "c": coarse_ids(e, n),
    }, COARSE_CELL_M)  # fmt: skip
    return MapLayer("coarse", len(coarse), geojson, meta)


def measured_layers(
    cells: pd.DataFrame, *, disagree_below: float = 0.3, min_contributors: int = 1
) -> MapLayers:
    """The measured-vs-advertised map: ``compared`` (cells with tests and an offer where the
    measurement is as expected, merged), ``below`` (the cells whose measured median is well
    below the offer, ``disagreement`` "below": one square per cell with ``s`` the shade of
    :func:`ratio_classes`, ``m`` the measured median, ``o`` the offer, ``r`` the ratio in %, ``t``
    the tests, ``c`` the short cell id; meta ``shades``: the cells per shade) and ``coarse`` (the
    overview per 1 km cell, :func:`coarse_layer`). The page shows ``coarse`` zoomed out and the
    100 m cells zoomed in (from ``/maps/measured/cells``, or, in a file, from ``below`` and
    ``compared``)."""
    compared, is_below = _compared(cells)
    below, rest = compared[is_below], compared[~is_below]
    classes = ratio_classes(disagree_below)
    ratio = below["measured_ratio"].to_numpy(dtype=np.float64) if len(below) else np.zeros(0)
    shade = _shades(ratio, classes)
    shades = [int((shade == i).sum()) for i in range(len(classes))]
    compared_layer = MapLayer(
        "compared", len(rest), merged_geojson(rest["e"], rest["n"]) if len(rest) else EMPTY
    )
    geojson = (
        cell_geojson(below["e"], below["n"], _cell_properties(below, shade)) if len(below)
        else EMPTY
    )  # fmt: skip
    below_layer = MapLayer(
        "below", len(below), geojson, {"shades": shades, "disagree_below": disagree_below}
    )
    coarse = coarse_layer(cells, disagree_below=disagree_below)
    return MapLayers("measured", (compared_layer, below_layer, coarse), min_contributors)


def supply_layers(cells: pd.DataFrame, class_keys: Sequence[str]) -> MapLayers:
    """The broadband map's run layers: ``supply`` (cells with households by the profile's class,
    all but the best class, worst first, at most :data:`MAX_MAP_CELLS`; one square per cell with
    ``k`` the class's index in ``class_keys``, ``h`` households, ``o`` the best offer in Mbit/s,
    ``c`` the cell id; meta ``counts``: the populated cells per class key) and ``dead`` (dead
    zones, at most :data:`MAX_MAP_CELLS`)."""
    keys = [str(k) for k in class_keys]
    if len(cells):
        populated = cells[
            (cells["households"].to_numpy() > 0) & cells["class_key"].notna().to_numpy()
        ]
    else:
        populated = cells
    key_text = populated["class_key"].astype(str) if len(populated) else pd.Series(dtype=str)
    counts = {str(k): int(v) for k, v in key_text.value_counts().items()}
    rank = key_text.map({k: i for i, k in enumerate(keys)})
    if len(populated):
        shown = (
            populated[(rank < len(keys) - 1).to_numpy()]
            .assign(_rank=rank)
            .sort_values("_rank", kind="stable")
            .head(MAX_MAP_CELLS)
        )
    else:
        shown = populated
    e, n = (shown["e"].to_numpy(), shown["n"].to_numpy()) if len(shown) else ([], [])
    supply = cell_geojson(e, n, {
        "k": _ints(shown["_rank"]) if len(shown) else [],
        "h": _ints(shown["households"]) if len(shown) else [],
        "o": _floats(shown["max_down_mbps"].fillna(0), 0) if len(shown) else [],
        "c": grid.cell_ids(e, n).tolist() if len(shown) else [],
    })  # fmt: skip
    dead = (
        cells[cells["dead_zone"].to_numpy(dtype=bool)].head(MAX_MAP_CELLS) if len(cells) else cells
    )
    de, dn = (dead["e"].to_numpy(), dead["n"].to_numpy()) if len(dead) else ([], [])
    ids = grid.cell_ids(de, dn).tolist() if len(dead) else []
    return MapLayers(
        "coverage",
        (
            MapLayer("supply", len(shown), supply, {"counts": counts, "class_keys": keys}),
            MapLayer("dead", len(dead), cell_geojson(de, dn, {"c": ids})),
        ),
    )
