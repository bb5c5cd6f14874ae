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

from quartier.maps.layers import (
    COARSE_STEPS,
    EMPTY,
    MapLayer,
    MapLayers,
    measured_layers,
    ratio_classes,
)
from quartier.maps.layers import RATIO_STEPS as RATIO_STEPS
from quartier.maps.render import (
    CellLayer,
    Lang,
    MapOptions,
    ZoomedCells,
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
#: the overview's classes: no 100 m cell well below the offer, then lightest to darkest
COARSE_COLOURS: tuple[str, ...] = (COMPARED_COLOUR, "#fc9272", "#de2d26", "#a50f15")
#: from this zoom on the map shows the 100 m cells of the visible area, below it the overview
#: per 1 km cell (a Köln-sized city opens at zoom 11; at 14 a screen holds about 4,000 cells)
FINE_MIN_ZOOM = 14


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
    cells merged, districts; legend with the cells per shade; zoomed out, the overview per 1 km
    cell.

    ``cells`` as from :func:`quartier.geo.run_store.load_cells` (``e``, ``n``, ``n_tests``,
    ``measured_down_mbps``, ``max_down_mbps``, ``measured_ratio``, ``disagreement``), limited
    to the cells that may be published; ``parameters`` the run's (``disagree_below``,
    ``min_tests``)."""
    below_share = float((parameters or {}).get("disagree_below", 0.3))
    layers = measured_layers(cells, disagree_below=below_share)
    return render_measured_layers(layers, districts, city=city, parameters=parameters,
                                  options=options, has_run=has_run)  # fmt: skip


def _heading(label: str) -> str:
    return f'<div style="font-weight:bold;margin:6px 0 2px">{html.escape(label)}</div>'


def _coarse_rows(coarse: MapLayer, lang: Lang) -> str:
    """The overview's legend: its classes with the 1 km cells in each."""
    steps = [float(v) for v in coarse.meta.get("steps", COARSE_STEPS)]
    counts = [int(v) for v in coarse.meta.get("classes", [0] * (len(steps) + 2))]
    bounds = [0.0, *steps]
    rows = _swatch(COARSE_COLOURS[0], html.escape(text(lang, "coarse_none", n=counts[0])))
    for i in range(1, len(steps) + 2):
        lower, n = bounds[i - 1], counts[i] if i < len(counts) else 0
        if i == 1:
            label = text(lang, "coarse_below", upper=_percent(steps[0], lang), n=n)
        elif i <= len(steps):
            label = text(lang, "coarse_between", lower=_percent(lower, lang),
                         upper=_percent(steps[i - 1], lang), n=n)  # fmt: skip
        else:
            label = text(lang, "coarse_above", lower=_percent(lower, lang), n=n)
        rows += _swatch(COARSE_COLOURS[min(i, len(COARSE_COLOURS) - 1)], html.escape(label))
    return rows


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
    :func:`quartier.maps.layers.measured_layers` (stored with the run or made for this page).

    Zoomed out (below :data:`FINE_MIN_ZOOM`) it shows the overview per 1 km cell (``coarse``);
    zoomed in, the 100 m cells of the visible area: fetched from ``options.cells_url``, or,
    without one (a file), from the layers ``below`` and ``compared`` inside the page."""
    options = options or MapOptions()
    lang = options.lang
    params = parameters or {}
    below_share = float(params.get("disagree_below", 0.3))
    fmap = _base_map(options, _bounds([city, districts]), text(lang, "measured_title"))
    if districts is not None and len(districts):
        _add_districts(fmap, districts, lang)
    rest = layers.get("compared") or MapLayer("compared", 0)
    below = layers.get("below") or MapLayer("below", 0)
    coarse = layers.get("coarse") or MapLayer("coarse", 0)
    classes = ratio_classes(float(below.meta.get("disagree_below", below_share)))
    shades = [int(s) for s in below.meta.get("shades", [0] * len(classes))]
    label = html.escape
    if coarse.cells:
        CellLayer(
            coarse.geojson, text(lang, "coarse_layer"),
            [_fill(c, 0.6 if i else 0.35) for i, c in enumerate(COARSE_COLOURS)], style_key="s",
            fields=[("b", label(text(lang, "below_cells")), None),
                    ("n", label(text(lang, "compared_n")), None),
                    ("t", label(text(lang, "tests")), None),
                    ("m", label(text(lang, "median_down")), None),
                    ("o", label(text(lang, "median_offer")), None),
                    ("r", label(text(lang, "median_ratio")), None),
                    ("c", label(text(lang, "cell_1km")), None)],
            canvas=True, max_zoom=FINE_MIN_ZOOM - 1,
        ).add_to(fmap)  # fmt: skip
    if rest.cells or below.cells:
        ZoomedCells(
            text(lang, "fine_layer", zoom=FINE_MIN_ZOOM),
            [*(_fill(RATIO_COLOURS[min(i, 2)], 0.75) for i in range(len(classes))),
             _fill(COMPARED_COLOUR, 0.35)],
            [(k, label(text(lang, name)), None)
             for k, name in (("m", "median_down"), ("o", "advertised"), ("r", "ratio"),
                             ("t", "tests"), ("c", "cell"))],
            min_zoom=FINE_MIN_ZOOM, url=options.cells_url,
            embedded=[g for g in (rest.geojson, below.geojson) if g != EMPTY],
            fallback=label(text(lang, "compared_cells")),
        ).add_to(fmap)  # fmt: skip
    rows = _heading(text(lang, "coarse_heading", zoom=FINE_MIN_ZOOM - 1))
    rows += _coarse_rows(coarse, lang)
    rows += _heading(text(lang, "fine_heading", zoom=FINE_MIN_ZOOM))
    rows += _swatch(COMPARED_COLOUR, html.escape(text(lang, "compared_row",
                                                      cells=_cells(rest.cells, lang))))  # fmt: skip
    for i, (lower, upper) in enumerate(classes):
        count = _cells(shades[i] if i < len(shades) else 0, lang)
        row = (
            text(lang, "ratio_row", upper=_percent(upper, lang), cells=count)
            if lower == 0
            else text(lang, "ratio_row_between", lower=_percent(lower, lang),
                      upper=_percent(upper, lang), cells=count)
        )  # fmt: skip
        rows += _swatch(RATIO_COLOURS[min(i, 2)], html.escape(row))
    note = (
        text(lang, "measured_note", below=_percent(below_share, lang),
             min_tests=int(params.get("min_tests", 5)), k=options.min_contributors)
        + " " + text(lang, "zoom_note", zoom=FINE_MIN_ZOOM)
        if has_run
        else text(lang, "no_run")
    )  # fmt: skip
    legend = _legend(text(lang, "legend_measured_vs"), rows, options, note)
    log.debug("rendered measured map: %d compared cells, %d below, %d 1 km cells",
              rest.cells, below.cells, coarse.cells)  # fmt: skip
    return _page(fmap, legend, options)
