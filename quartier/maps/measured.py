"""The measured-vs-advertised map: the 100 m cells of a coverage run where the crowdsourced
speed tests fall well below the best advertised offer (``disagreement`` "below": the median
measured download under ``disagree_below`` of the advertised maximum, with at least
``min_tests`` tests), in three shades by how far below, with the number of tests; the other
compared cells (tests and an offer, measurement as expected) as one merged context layer.

Pure: takes the run's cells (already limited to those that may be published, k-anonymity) and
writes HTML; no database access.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import folium
import geopandas as gpd
import numpy as np
import pandas as pd

from quartier.geo import grid
from quartier.maps.render import (
    CANVAS,
    CELL_DECIMALS,
    Lang,
    MapOptions,
    _add_districts,
    _base_map,
    _bounds,
    _cells,
    _geojson,
    _legend,
    _merged_cells,
    _number,
    _page,
    _swatch,
    text,
)

log = logging.getLogger(__name__)

#: upper bounds (share of the offer) of the shades below ``disagree_below``, darkest first
RATIO_STEPS: tuple[float, ...] = (0.1, 0.2)
#: ColorBrewer Reds, darkest (furthest below) first
RATIO_COLOURS: tuple[str, ...] = ("#a50f15", "#de2d26", "#fc9272")
COMPARED_COLOUR = "#9ecae1"


def _percent(share: float, lang: Lang) -> str:
    return _number(round(100 * share, 1), lang)


def ratio_classes(disagree_below: float) -> list[tuple[float, float]]:
    """The shades' [lower, upper) bounds (shares of the offer), from 0 to ``disagree_below``."""
    uppers = [s for s in RATIO_STEPS if s < disagree_below] + [disagree_below]
    return list(zip([0.0, *uppers[:-1]], uppers, strict=True))


def below_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells where the measurement is well below the offer (``disagreement`` "below")."""
    if not len(cells):
        return cells
    return cells[(cells["disagreement"] == "below").to_numpy(dtype=bool, na_value=False)]


def render_measured_map(
    cells: pd.DataFrame,
    districts: gpd.GeoDataFrame | None = None,
    *,
    city: gpd.GeoDataFrame | None = None,
    parameters: dict[str, Any] | None = None,
    options: MapOptions | None = None,
    has_run: bool = True,
) -> str:
    """A standalone HTML page: cells whose measured median download is well below the best
    offer, shaded by the ratio (tooltip: measured, offer, ratio, tests, cell), the other compared
    cells merged, districts; legend with the cells per shade.

    ``cells`` as from :func:`quartier.geo.run_store.load_cells` (``e``, ``n``, ``n_tests``,
    ``measured_down_mbps``, ``max_down_mbps``, ``measured_ratio``, ``disagreement``), limited
    to the cells that may be published; ``parameters`` the run's (``disagree_below``,
    ``min_tests``)."""
    options = options or MapOptions()
    lang = options.lang
    params = parameters or {}
    below_share = float(params.get("disagree_below", 0.3))
    fmap = _base_map(options, _bounds([city, districts]), text(lang, "measured_title"))
    if districts is not None and len(districts):
        _add_districts(fmap, districts, lang)
    rows = ""
    compared = (
        cells[np.isfinite(cells["measured_ratio"].to_numpy(dtype=np.float64))]
        if len(cells)
        else cells
    )
    below = below_cells(compared)
    rest = compared[~compared.index.isin(below.index)] if len(compared) else compared
    if len(rest):
        layer = _merged_cells(rest["e"].to_numpy(), rest["n"].to_numpy())
        folium.GeoJson(
            _geojson(layer, CELL_DECIMALS), name=text(lang, "compared_cells"),
            style_function=lambda _f: {"color": COMPARED_COLOUR, "weight": 0.5,
                                       "fillColor": COMPARED_COLOUR, "fillOpacity": 0.35},
        ).add_to(fmap)  # fmt: skip
    rows += _swatch(COMPARED_COLOUR, html.escape(text(lang, "compared_row",
                                                      cells=_cells(len(rest), lang))))  # fmt: skip
    classes = ratio_classes(below_share)
    ratio = below["measured_ratio"].to_numpy(dtype=np.float64) if len(below) else np.zeros(0)
    shade = np.searchsorted(np.array([u for _l, u in classes[:-1]]), ratio, side="right")
    if len(below):
        e, n = below["e"].to_numpy(), below["n"].to_numpy()
        layer = gpd.GeoDataFrame(
            {  # one-letter keys: a Köln-sized run has over 10,000 such cells
                "s": shade.astype(int),
                "m": below["measured_down_mbps"].astype(float).round(1).to_numpy(),
                "o": below["max_down_mbps"].astype(float).round(0).to_numpy(),
                "r": np.round(100 * ratio, 1),
                "t": below["n_tests"].astype(int).to_numpy(),
                "c": np.char.replace(grid.cell_ids(e, n).astype(str), grid.CELL_ID_PREFIX, ""),
            },
            geometry=grid.cell_polygons(e, n),
            crs=4326,
        )

        def style(feature: dict[str, Any]) -> dict[str, Any]:
            colour = RATIO_COLOURS[min(int(feature["properties"]["s"]), 2)]
            return {"color": colour, "weight": 0.5, "fillColor": colour, "fillOpacity": 0.75}

        folium.GeoJson(
            _geojson(layer, CELL_DECIMALS), name=text(lang, "measured_below"),
            style_function=style, renderer=CANVAS,
            tooltip=folium.GeoJsonTooltip(
                fields=["m", "o", "r", "t", "c"],
                aliases=[text(lang, k) for k in ("median_down", "advertised", "ratio", "tests",
                                                 "cell")]),
        ).add_to(fmap)  # fmt: skip
    for i, (lower, upper) in enumerate(classes):
        count = _cells(int((shade == i).sum()), lang)
        label = (
            text(lang, "ratio_row", upper=_percent(upper, lang), cells=count)
            if lower == 0
            else text(lang, "ratio_row_between", lower=_percent(lower, lang),
                      upper=_percent(upper, lang), cells=count)
        )  # fmt: skip
        rows += _swatch(RATIO_COLOURS[min(i, 2)], html.escape(label))
    note = (
        text(lang, "measured_note", below=_percent(below_share, lang),
             min_tests=int(params.get("min_tests", 5)), k=options.min_contributors)
        if has_run
        else text(lang, "no_run")
    )  # fmt: skip
    legend = _legend(text(lang, "legend_measured_vs"), rows, options, note)
    log.debug("rendered measured map: %d compared cells, %d below", len(compared), len(below))
    return _page(fmap, legend, options)
