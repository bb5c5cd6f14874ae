"""The district indicator map: a choropleth of one indicator per Stadtbezirk, each district in
the colour of its status in the strategy's evaluation (on track, at risk, off track, no data;
the rules of :mod:`quartier.evaluation.progress`), with value, target and status in the
tooltip. Without an evaluation of the indicator per district: coloured by value (five classes).

Pure: takes the districts, the values and the evaluation's results and writes HTML.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import folium
import geopandas as gpd
import numpy as np

from quartier.evaluation.charts import STATUS_COLOURS
from quartier.evaluation.progress import STATUSES
from quartier.evaluation.report import STATUS_LABELS
from quartier.maps.render import (
    Lang,
    MapOptions,
    _base_map,
    _bounds,
    _geojson,
    _legend,
    _number,
    _page,
    _swatch,
    _text,
    text,
)

#: ColorBrewer YlGnBu, five classes: the fill by value when no status is known
VALUE_COLOURS: tuple[str, ...] = ("#ffffcc", "#a1dab4", "#41b6c4", "#2c7fb8", "#253494")
NO_VALUE_COLOUR = "#e0e0e0"


@dataclass(frozen=True)
class DistrictStatus:
    """One district's result in a strategy evaluation."""

    status: str
    target: float
    deadline: str = ""
    kpi: str = ""


@dataclass(frozen=True)
class Evaluated:
    """What the legend says about the evaluation the statuses come from."""

    as_of: str
    strategy: str


def value_classes(values: np.ndarray[Any, Any], n: int = 5) -> list[float]:
    """Up to ``n + 1`` increasing class bounds (equal-count) over the finite ``values``."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return []
    bounds = sorted({float(b) for b in np.quantile(finite, np.linspace(0, 1, n + 1))})
    return bounds if len(bounds) > 1 else [bounds[0], bounds[0]]


def _fmt(value: float | None, unit: str, lang: Lang) -> str:
    if value is None or not math.isfinite(value):
        return text(lang, "no_value")
    return f"{_number(round(value, 2), lang)} {unit}".strip()


def status_label(status: str, lang: Lang) -> str:
    return STATUS_LABELS["en" if lang == "en" else "de"].get(status, status)


@dataclass(frozen=True)
class Choropleth:
    """How each district is filled and what the legend says: one place for the page and the
    PNG."""

    codes: list[str]
    values: np.ndarray[Any, Any]  # float, NaN for no value
    fills: list[str]
    #: legend rows: (colour, label)
    rows: list[tuple[str, str]]
    note: str
    #: filled by status (else by value)
    by_status: bool = False


def choropleth(
    codes: list[str],
    values: Mapping[str, float | None],
    statuses: Mapping[str, DistrictStatus],
    evaluated: Evaluated | None,
    unit: str,
    lang: Lang,
) -> Choropleth:
    """The fill of each district (its status colour, or with no statuses its value class) and
    the legend rows."""
    raw = np.array(
        [np.nan if values.get(c) is None else float(values[c] or 0.0) for c in codes], dtype=float
    )
    rows: list[tuple[str, str]] = []
    if statuses:
        of = [statuses[c].status if c in statuses else "no_data" for c in codes]
        fills = [STATUS_COLOURS.get(s, NO_VALUE_COLOUR) for s in of]
        for s in STATUSES:
            label = text(lang, "status_row", status=status_label(s, lang), n=of.count(s))
            rows.append((STATUS_COLOURS[s], label))
        note = (
            text(lang, "status_note", date=evaluated.as_of, strategy=evaluated.strategy)
            if evaluated
            else ""
        )
        return Choropleth(codes, raw, fills, rows, note, by_status=True)
    bounds = value_classes(raw)
    fills = []
    for value in raw:
        if not np.isfinite(value) or not bounds:
            fills.append(NO_VALUE_COLOUR)
        else:
            i = int(np.searchsorted(np.array(bounds[1:-1]), value, side="right"))
            fills.append(VALUE_COLOURS[min(i, len(VALUE_COLOURS) - 1)])
    for i, (lower, upper) in enumerate(itertools.pairwise(bounds)):
        colour = VALUE_COLOURS[min(i, len(VALUE_COLOURS) - 1)]
        label = text(lang, "value_row", lower=_number(round(lower, 2), lang),
                     upper=_number(round(upper, 2), lang), unit=unit,
                     n=sum(f == colour for f in fills))  # fmt: skip
        rows.append((colour, label))
    missing = int((~np.isfinite(raw)).sum())
    if missing or not bounds:
        rows.append((NO_VALUE_COLOUR, f"{text(lang, 'no_value')} ({missing})"))
    return Choropleth(codes, raw, fills, rows, text(lang, "no_evaluation"))


def render_district_map(
    districts: gpd.GeoDataFrame,
    values: Mapping[str, float | None],
    *,
    indicator_name: str,
    unit: str,
    statuses: Mapping[str, DistrictStatus] | None = None,
    evaluated: Evaluated | None = None,
    city: gpd.GeoDataFrame | None = None,
    options: MapOptions | None = None,
) -> str:
    """A standalone HTML page with one indicator per district: the fill is the district's status
    in the evaluation (``statuses`` by district code) or, with none, the value class; the
    tooltip has district, value, target, status and the deadline.

    ``districts`` with ``code``, ``name`` and polygons; ``values`` the current value by district
    code (None: no data)."""
    options = options or MapOptions()
    lang = options.lang
    statuses = statuses or {}
    fmap = _base_map(options, _bounds([city, districts]), text(lang, "districts_title"))
    frame = districts.to_crs(4326) if len(districts) else districts
    codes = [str(c) for c in frame["code"]] if len(frame) else []
    chart = choropleth(codes, values, statuses, evaluated, unit, lang)
    if len(frame):
        names = frame["name"] if "name" in frame.columns else frame["code"]
        layer = gpd.GeoDataFrame(
            {
                "name": names.astype(str).map(_text).to_numpy(),
                "value": [_text(_fmt(v, unit, lang)) for v in chart.values],
                "target": [
                    _text(_fmt(statuses[c].target, unit, lang)) if c in statuses else "–"
                    for c in codes
                ],
                "status": [
                    _text(status_label(statuses[c].status if c in statuses else "no_data", lang))
                    for c in codes
                ],
                "deadline": [_text(statuses[c].deadline) if c in statuses else "–" for c in codes],
                "fill": chart.fills,
            },
            geometry=frame.geometry.values,
            crs=4326,
        )
        folium.GeoJson(
            _geojson(layer), name=_text(indicator_name),
            style_function=lambda f: {"color": "#333333", "weight": 1.5,
                                      "fillColor": f["properties"]["fill"], "fillOpacity": 0.75},
            highlight_function=lambda _f: {"weight": 3},
            tooltip=folium.GeoJsonTooltip(
                fields=["name", "value", "target", "status", "deadline"],
                aliases=[text(lang, k) for k in ("district", "value", "target", "status",
                                                 "deadline")]),
        ).add_to(fmap)  # fmt: skip
    rows = "".join(_swatch(colour, html.escape(label)) for colour, label in chart.rows)
    title = f"{indicator_name} ({unit})" if unit else indicator_name
    return _page(fmap, _legend(title, rows, options, chart.note), options)
