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

import geopandas as gpd
import pandas as pd

from quartier.maps.layers import RATIO_STEPS as RATIO_STEPS
from quartier.maps.layers import MapLayer, MapLayers, measured_layers, ratio_classes
from quartier.maps.render import (
    CellLayer,
    Lang,
    MapOptions,
    _add_districts,
    _base_map,
    _bounds,
    _cells,
    _fill,
    _legend,
    _number,
    _page,
    _swatch,
    text,
)

log = logging.getLogger(__name__)

#: ColorBrewer Reds, darkest (furthest below) first
RATIO_COLOURS: tuple[str, ...] = ("#a50f15", "#de2d26", "#fc9272")
COMPARED_COLOUR = "#9ecae1"


def _percent(share: float, lang: Lang) -> str:
    return _number(round(100 * share, 1), lang)


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
    below_share = float((parameters or {}).get("disagree_below", 0.3))
    layers = measured_layers(cells, disagree_below=below_share)
    return render_measured_layers(layers, districts, city=city, parameters=parameters,
                                  options=options, has_run=has_run)  # fmt: skip


def render_measured_layers(
    layers: MapLayers,
    districts: gpd.GeoDataFrame | None = None,
    *,
    city: gpd.GeoDataFrame | None = None,
    parameters: dict[str, Any] | None = None,
    options: MapOptions | None = None,
    has_run: bool = True,
) -> str:
    """The measured map (:func:`render_measured_map`) of a run's layers as made by
    :func:`quartier.maps.layers.measured_layers` (stored with the run or made for this page)."""
    options = options or MapOptions()
    lang = options.lang
    params = parameters or {}
    below_share = float(params.get("disagree_below", 0.3))
    fmap = _base_map(options, _bounds([city, districts]), text(lang, "measured_title"))
    if districts is not None and len(districts):
        _add_districts(fmap, districts, lang)
    rest = layers.get("compared") or MapLayer("compared", 0)
    below = layers.get("below") or MapLayer("below", 0)
    if rest.cells:
        CellLayer(rest.geojson, text(lang, "compared_cells"),
                  [_fill(COMPARED_COLOUR, 0.35)]).add_to(fmap)  # fmt: skip
    rows = _swatch(COMPARED_COLOUR, html.escape(text(lang, "compared_row",
                                                     cells=_cells(rest.cells, lang))))  # fmt: skip
    classes = ratio_classes(float(below.meta.get("disagree_below", below_share)))
    shades = [int(s) for s in below.meta.get("shades", [0] * len(classes))]
    if below.cells:
        CellLayer(
            below.geojson, text(lang, "measured_below"),
            [_fill(RATIO_COLOURS[min(i, 2)], 0.75) for i in range(len(classes))], style_key="s",
            fields=[(k, html.escape(text(lang, label)), None)
                    for k, label in (("m", "median_down"), ("o", "advertised"), ("r", "ratio"),
                                     ("t", "tests"), ("c", "cell"))],
            canvas=True,
        ).add_to(fmap)  # fmt: skip
    for i, (lower, upper) in enumerate(classes):
        count = _cells(shades[i] if i < len(shades) else 0, lang)
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
    log.debug("rendered measured map: %d compared cells, %d below", rest.cells, below.cells)
    return _page(fmap, legend, options)
