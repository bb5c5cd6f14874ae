"""The maps as standalone HTML pages (Leaflet via folium): the coverage map (measured 100 m cells
by speed class, or a stored gap analysis) and the sensor map, with German (default) or English
legends, a metric scale bar and a source line, opened on the city's extent.

Every script and style comes from Quartier itself (:mod:`quartier.maps.assets`: linked from its
``/static`` or inline); the basemap is the configured tile server or none at all, so without one
the browser asks no other server for anything. The server only writes HTML; no database access.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from branca.element import Element, Figure, MacroElement
from folium.map import Layer
from folium.plugins import MarkerCluster
from folium.template import Template
from folium.utilities import JsCode

from quartier.config import MapSettings, Settings
from quartier.geo import grid
from quartier.geo.speedtest_cells import MIN_CONTRIBUTORS, SPEED_CLASS_BY_KEY, SPEED_CLASSES
from quartier.maps.assets import Assets, use_shipped
from quartier.maps.layers import (
    MAX_MAP_CELLS as MAX_MAP_CELLS,
)
from quartier.maps.layers import (
    MapLayer,
    MapLayers,
    features_geojson,
    mobile_layers,
    supply_layers,
)

log = logging.getLogger(__name__)

Lang = Literal["de", "en"]
LANGS: tuple[Lang, ...] = ("de", "en")

#: Germany ([[south, west], [north, east]]): where a map opens when no city, district or data is
#: loaded
GERMANY_BOUNDS = [[47.27, 5.87], [55.06, 15.04]]
DEFAULT_ZOOM = 11
#: The plain background without a basemap.
BACKGROUND = "#f3f2ee"

#: Fill colour per speed class (ColorBrewer RdYlBu, colour-blind safe): red is slow, blue gigabit.
CLASS_COLOURS: dict[str, str] = {
    "below_30": "#d7191c",
    "30_to_100": "#fdae61",
    "100_to_1000": "#abd9e9",
    "gigabit": "#2c7bb6",
}
SENSOR_COLOUR = "#3f007d"
STALE_COLOUR = "#9e9e9e"
DISTRICT_COLOUR = "#333333"

#: Every text the maps show, German and English.
TEXTS: dict[str, tuple[str, str]] = {
    "coverage_title": ("Breitbandversorgung", "Broadband coverage"),
    "legend_measured": (
        "Gemessene Download-Geschwindigkeit (Median je 100-m-Zelle)",
        "Measured download speed (median per 100 m cell)",
    ),
    "legend_gaps": (
        "Breitbandversorgung je 100-m-Zelle (bestes Angebot)",
        "Broadband supply per 100 m cell (best offer)",
    ),
    "districts": ("Stadtbezirke", "Districts"),
    "district": ("Bezirk", "District"),
    "measured_cells": ("Gemessene Zellen", "Measured cells"),
    "class": ("Klasse", "Class"),
    "median_down": ("Median Download (Mbit/s)", "Median download (Mbit/s)"),
    "tests": ("Messungen", "Tests"),
    "cell": ("Zelle", "Cell"),
    "cell_1": ("Zelle", "cell"),
    "cell_n": ("Zellen", "cells"),
    "sensors": ("Sensoren", "Sensors"),
    "sensor": ("Sensor", "Sensor"),
    "measures": ("Messgrößen", "Measures"),
    "supply": ("Versorgung je Zelle", "Supply per cell"),
    "households": ("Haushalte", "Households"),
    "best_offer": ("bestes Angebot (Mbit/s)", "best offer (Mbit/s)"),
    "gaps": ("Versorgungslücken", "Coverage gaps"),
    "gap_row": (
        "Versorgungslücke (zusammenhängend, {n} Cluster)",
        "Coverage gap (contiguous, {n} clusters)",
    ),
    "rank": ("Rang", "Rank"),
    "area": ("Fläche (km²)", "Area (km²)"),
    "priority": ("Priorität", "Priority"),
    "distance": ("Abstand zu Gigabit (m)", "Distance to gigabit (m)"),
    "district_list": ("Bezirke", "Districts"),
    "dead_zones": ("Funklöcher", "Dead zones"),
    "dead_zone": ("Funkloch", "Dead zone"),
    "dead_row": (
        "Funkloch: kein 4G/5G gemessen ({cells})",
        "Dead zone: no 4G/5G measured ({cells})",
    ),
    "gap_note": (
        "Gezeigt: Zellen mit Haushalten außer Gigabit; Förderkategorien nach Gigabit-Richtlinie"
        " 2.0",
        "Shown: cells with households except gigabit; funding categories of the Gigabit-Richtlinie"
        " 2.0",
    ),
    "gap_note_all": (
        "Gezeigt: Zellen mit Haushalten; Förderkategorien nach Gigabit-Richtlinie 2.0",
        "Shown: cells with households; funding categories of the Gigabit-Richtlinie 2.0",
    ),
    "basemap": ("Hintergrundkarte", "Basemap"),
    "source": ("Daten", "Data"),
    "sensors_title": ("Sensoren", "Sensors"),
    "legend_sensors": ("Sensoren und letzte Messwerte", "Sensors and latest readings"),
    "sensor_current": ("Sensor mit aktuellen Werten", "Sensor with current readings"),
    "sensor_stale": (
        "Sensor ohne Werte seit über {hours} h (veraltet)",
        "Sensor without readings for over {hours} h (stale)",
    ),
    "stale": ("veraltet", "stale"),
    "no_readings": ("keine Messwerte", "no readings"),
    "ago": ("vor {age}", "{age} ago"),
    "latest": ("Letzte Werte", "Latest readings"),
    "n_sensors": ("{n} Sensoren", "{n} sensors"),
    "mobile_title": ("Mobilfunkversorgung", "Mobile coverage"),
    "legend_mobile": (
        "Mobilfunkversorgung je 100-m-Zelle (gemessen)",
        "Mobile coverage per 100 m cell (measured)",
    ),
    "mobile_layer": ("{operator}: {technology} versorgt", "{operator}: {technology} covered"),
    "mobile_row": ("{operator} {technology} ({cells})", "{operator} {technology} ({cells})"),
    "mobile_measured": ("Zellen mit Messungen", "Cells with measurements"),
    "mobile_measured_row": ("{cells} mit Messungen", "{cells} with measurements"),
    "mobile_note": (
        "Versorgt: mindestens {share} % der Messungen eines Netzbetreibers über der Signalschwelle"
        " (4G/5G: RSRP ≥ {threshold} dBm). Nur Zellen mit Messungen von mindestens {k} Geräten."
        " Netzbetreiber und Technik einzeln in der Ebenenauswahl (oben rechts).",
        "Covered: at least {share} % of an operator's measurements above the signal threshold"
        " (4G/5G: RSRP ≥ {threshold} dBm). Only cells measured by at least {k} devices."
        " Each operator and technology in the layer control (top right).",
    ),
    "no_run": (
        "Noch keine Versorgungsanalyse gespeichert (quartier coverage analyse).",
        "No coverage analysis stored yet (quartier coverage analyse).",
    ),
    "measured_title": ("Gemessen gegen beworben", "Measured vs advertised"),
    "legend_measured_vs": (
        "Gemessene Download-Geschwindigkeit gegen das beste Angebot je 100-m-Zelle",
        "Measured download speed against the best offer per 100 m cell",
    ),
    "measured_below": ("Messung deutlich unter dem Angebot", "Measured well below the offer"),
    "ratio_row": (
        "Median unter {upper} % des Angebots ({cells})",
        "Median below {upper} % of the offer ({cells})",
    ),
    "ratio_row_between": (
        "Median {lower} bis unter {upper} % des Angebots ({cells})",
        "Median {lower} to below {upper} % of the offer ({cells})",
    ),
    "compared_cells": ("Verglichene Zellen", "Compared cells"),
    "compared_row": (
        "{cells} mit Messungen und Angebot, Messung im Rahmen",
        "{cells} with tests and an offer, measurement as expected",
    ),
    "advertised": ("Angebot (Mbit/s)", "Offer (Mbit/s)"),
    "ratio": ("Messung / Angebot (%)", "Measured / offer (%)"),
    "measured_note": (
        "Deutlich darunter: Median der Messungen unter {below} % der höchsten beworbenen"
        " Download-Geschwindigkeit, bei mindestens {min_tests} Messungen. Nur Zellen mit Messungen"
        " von mindestens {k} Geräten.",
        "Well below: the median of the tests under {below} % of the highest advertised download"
        " speed, with at least {min_tests} tests. Only cells measured by at least {k} devices.",
    ),
    "coarse_layer": ("Übersicht je 1-km-Zelle", "Overview per 1 km cell"),
    "fine_layer": ("100-m-Zellen (ab Zoomstufe {zoom})", "100 m cells (from zoom {zoom})"),
    "coarse_heading": (
        "Übersicht je 1-km-Zelle (bis Zoomstufe {zoom}): Anteil der verglichenen 100-m-Zellen"
        " deutlich unter dem Angebot",
        "Overview per 1 km cell (up to zoom {zoom}): share of the compared 100 m cells well below"
        " the offer",
    ),
    "coarse_none": ("keine ({n} 1-km-Zellen)", "none ({n} 1 km cells)"),
    "coarse_below": ("unter {upper} % ({n} 1-km-Zellen)", "under {upper} % ({n} 1 km cells)"),
    "coarse_between": (
        "{lower} bis unter {upper} % ({n} 1-km-Zellen)",
        "{lower} to under {upper} % ({n} 1 km cells)",
    ),
    "coarse_above": ("{lower} % und mehr ({n} 1-km-Zellen)", "{lower} % and more ({n} 1 km cells)"),
    "fine_heading": (
        "Je 100-m-Zelle (ab Zoomstufe {zoom}: hineinzoomen)",
        "Per 100 m cell (from zoom {zoom}: zoom in)",
    ),
    "zoom_note": (
        "Herausgezoomt je 1-km-Zelle des INSPIRE-Gitters zusammengefasst (Summen und Mediane ihrer"
        " 100-m-Zellen), ab Zoomstufe {zoom} je 100-m-Zelle.",
        "Zoomed out: per 1 km cell of the INSPIRE grid (sums and medians of its 100 m cells);"
        " from zoom {zoom}: per 100 m cell.",
    ),
    "cell_1km": ("1-km-Zelle", "1 km cell"),
    "below_cells": ("100-m-Zellen deutlich unter dem Angebot", "100 m cells well below the offer"),
    "compared_n": ("Verglichene 100-m-Zellen", "Compared 100 m cells"),
    "median_offer": ("Median Angebot (Mbit/s)", "Median offer (Mbit/s)"),
    "median_ratio": ("Median Messung / Angebot (%)", "Median measured / offer (%)"),
    "districts_title": ("Indikatoren je Stadtbezirk", "Indicators per district"),
    "value": ("Wert", "Value"),
    "target": ("Ziel", "Target"),
    "status": ("Status", "Status"),
    "deadline": ("Frist", "Deadline"),
    "kpi": ("Kennzahl", "KPI"),
    "no_value": ("kein Wert", "no value"),
    "status_row": ("{status} ({n} Bezirke)", "{status} ({n} districts)"),
    "value_row": (
        "{lower} bis {upper} {unit} ({n} Bezirke)",
        "{lower} to {upper} {unit} ({n} districts)",
    ),
    "status_note": (
        "Status nach der Strategie-Bewertung vom {date} ({strategy}); Wert: aktueller Stand.",
        "Status from the strategy evaluation of {date} ({strategy}); value: current.",
    ),
    "no_evaluation": (
        "Keine Bewertung dieses Indikators je Stadtbezirk gespeichert (quartier evaluate):"
        " Farbe nach Wert.",
        "No evaluation of this indicator per district stored (quartier evaluate): colour by value.",
    ),
}


def text(lang: Lang, key: str, **values: object) -> str:
    """The map text ``key`` in ``lang`` (German unless ``en``), with ``values`` filled in."""
    de, en = TEXTS[key]
    return (en if lang == "en" else de).format(**values)


@dataclass(frozen=True)
class MapOptions:
    """What every map needs besides its data: language, where the scripts come from, the basemap
    (none without ``tile_url``) and the source line (plain text)."""

    lang: Lang = "de"
    assets: Assets = field(default_factory=Assets)
    tile_url: str | None = None
    tile_attribution: str = ""
    tile_max_zoom: int = 19
    data_source: str = field(default_factory=lambda: MapSettings().data_source)

    #: cells of measured speeds shown only with at least this many distinct devices (privacy)
    min_contributors: int = MIN_CONTRIBUTORS
    #: the district map's indicator (``/maps/districts?indicator=ID``)
    indicator: str | None = None
    #: stored indicator values older than this are recomputed first (api setting)
    indicators_max_age_seconds: float = 300.0
    #: where the measured map fetches its 100 m cells when zoomed in (``/maps/measured/cells``
    #: as the browser sees it); None: they go into the page (a file that works offline)
    cells_url: str | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        lang: Lang = "de",
        assets: Assets | None = None,
        indicator: str | None = None,
        cells_url: str | None = None,
    ) -> MapOptions:
        maps = settings.maps
        return cls(
            lang=lang,
            assets=assets or Assets(),
            tile_url=maps.tile_url,
            tile_attribution=maps.tile_attribution,
            tile_max_zoom=maps.tile_max_zoom,
            data_source=maps.data_source,
            min_contributors=settings.privacy.min_contributors,
            indicator=indicator,
            indicators_max_age_seconds=settings.api.indicators_max_age_seconds,
            cells_url=cells_url,
        )


# Characters that folium's JavaScript template literals would interpret.
_JS_TEMPLATE_SAFE = str.maketrans({"`": "&#96;", "$": "&#36;", "{": "&#123;", "}": "&#125;",
                                   "\\": "&#92;", "\n": " ", "\r": " "})  # fmt: skip


def _text(value: object) -> str:
    """Untrusted text as HTML that is also inert inside a JavaScript template literal."""
    return html.escape(str(value), quote=True).translate(_JS_TEMPLATE_SAFE)


def _as_names(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable):
        return [str(v) for v in value]
    return []


def _cells(count: int, lang: Lang) -> str:
    return f"{count} {text(lang, 'cell_1' if count == 1 else 'cell_n')}"


class _MetricScale(MacroElement):
    """Leaflet's scale bar in metres and kilometres only (folium's ``control_scale`` adds miles)."""

    _template = Template(
        """{% macro script(this, kwargs) %}
        L.control.scale({imperial: false, maxWidth: 160}).addTo({{ this._parent.get_name() }});
        {% endmacro %}"""
    )

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._name = "MetricScale"


def _swatch(colour: str, label: str, round_: bool = False) -> str:
    radius = "border-radius:50%;" if round_ else ""
    return (
        '<div style="margin:2px 0"><span style="display:inline-block;width:14px;height:14px;'
        f"margin-right:6px;vertical-align:middle;background:{colour};{radius}"
        f'opacity:0.8;border:1px solid #555"></span>{label}</div>'
    )


def _legend(title: str, rows: str, options: MapOptions, note: str = "") -> str:
    note_html = f'<div style="color:#666;margin-top:4px">{html.escape(note)}</div>' if note else ""
    return (
        '<div id="quartier-legend" style="position:fixed;bottom:24px;left:12px;z-index:9999;'
        "background:rgba(255,255,255,0.92);padding:8px 10px;border-radius:4px;"
        'font:12px/1.4 sans-serif;box-shadow:0 1px 4px rgba(0,0,0,0.3);max-width:340px">'
        f'<div style="font-weight:bold;margin-bottom:4px">{html.escape(title)}</div>'
        f"{rows}{note_html}"
        '<div id="quartier-source" style="color:#666;margin-top:6px;font-size:11px">'
        f"{html.escape(text(options.lang, 'source'))}: {html.escape(options.data_source)}</div>"
        "</div>"
    )


#: Leaflet's canvas renderer for layers of one polygon per 100 m cell (thousands of them):
#: drawn on one canvas instead of one SVG element each, so the page is interactive sooner
CANVAS = JsCode("L.canvas()")

#: decimals of the maps' 100 m cells (1e-5 degrees: about 1 m, a hundredth of a cell)
CELL_DECIMALS = 5


def _geojson(frame: gpd.GeoDataFrame, decimals: int = grid.COORD_DECIMALS) -> dict[str, Any]:
    """A compact FeatureCollection: coordinates rounded to ``decimals`` (default 1e-6 degrees,
    about 0.1 m), no bboxes."""
    rounded = shapely.transform(
        np.asarray(frame.geometry.values, dtype=object), lambda c: np.round(c, decimals)
    )
    compact = frame.set_geometry(gpd.GeoSeries(rounded, index=frame.index, crs=frame.crs))
    data: dict[str, Any] = compact.to_geo_dict(show_bbox=False)
    return data


def _bounds(frames: Sequence[gpd.GeoDataFrame | None]) -> list[list[float]] | None:
    """[[south, west], [north, east]] of the first non-empty frame (city, districts, data)."""
    for frame in frames:
        if frame is not None and len(frame) and not frame.geometry.is_empty.all():
            west, south, east, north = (float(v) for v in frame.to_crs(4326).total_bounds)
            if np.isfinite([west, south, east, north]).all():
                return [[south, west], [north, east]]
    return None


def _points(frame: pd.DataFrame) -> gpd.GeoDataFrame | None:
    if not len(frame):
        return None
    return gpd.GeoDataFrame(
        geometry=gpd.points_from_xy(frame["lon"].astype(float), frame["lat"].astype(float)),
        crs=4326,
    )


def _base_map(options: MapOptions, bounds: list[list[float]] | None, title: str) -> folium.Map:
    """An empty map on ``bounds`` (Germany without), with the basemap if one is configured and a
    metric scale bar."""
    box = bounds or GERMANY_BOUNDS
    centre = ((box[0][0] + box[1][0]) / 2, (box[0][1] + box[1][1]) / 2)
    fmap = folium.Map(location=centre, zoom_start=DEFAULT_ZOOM if bounds else 6, tiles=None,
                      control_scale=False)  # fmt: skip
    # without a tile layer Leaflet has no maxZoom, which marker clustering needs
    fmap.options["maxZoom"] = options.tile_max_zoom
    if options.tile_url:
        folium.TileLayer(
            tiles=options.tile_url,
            attr=_text(options.tile_attribution or options.tile_url.split("/")[2]),
            name=text(options.lang, "basemap"),
            max_zoom=options.tile_max_zoom,
        ).add_to(fmap)
    _MetricScale().add_to(fmap)
    fmap.fit_bounds(box)
    root = _root(fmap)
    root.title = f"{title} – Quartier"
    if not options.tile_url:
        root.header.add_child(
            Element(f"<style>.leaflet-container {{ background: {BACKGROUND}; }}</style>"),
            name="quartier_background",
        )
    return fmap


def _root(fmap: folium.Map) -> Figure:
    root = fmap.get_root()
    if not isinstance(root, Figure):  # pragma: no cover - folium always gives a Figure
        raise TypeError("folium map without a Figure root")
    return root


def _page(fmap: folium.Map, legend: str, options: MapOptions) -> str:
    folium.LayerControl(collapsed=True).add_to(fmap)
    root = _root(fmap)
    root.html.add_child(Element(legend))
    use_shipped(fmap, options.assets)
    page: str = root.render()
    return page.replace("<html>", f'<html lang="{options.lang}">', 1)


def _add_districts(fmap: folium.Map, districts: gpd.GeoDataFrame, lang: Lang) -> None:
    frame = districts.to_crs(4326)
    names = frame["name"] if "name" in frame.columns else frame["code"]
    props = [{"code": str(c), "name": str(nm)} for c, nm in zip(frame["code"], names, strict=True)]
    CellLayer(
        features_geojson(frame.geometry.values, props),
        text(lang, "districts"),
        [{"color": DISTRICT_COLOUR, "weight": 2, "fill": False}],
        fields=[("name", html.escape(text(lang, "district")), None)],
    ).add_to(fmap)


def _add_cells(fmap: folium.Map, cells: gpd.GeoDataFrame, lang: Lang) -> None:
    frame = cells.to_crs(4326)
    keys = frame["class_key"].astype(str)

    def label(key: str) -> str:
        c = SPEED_CLASS_BY_KEY.get(key)
        return key if c is None else (c.label_en if lang == "en" else c.label_de)

    layer = gpd.GeoDataFrame(
        {
            "cell_id": frame["cell_id"].astype(str).map(_text),
            "class_key": keys,
            "class_label": keys.map(label),
            "median_download_mbps": frame["median_download_mbps"].astype(float).round(1),
            "n_tests": frame["n_tests"].astype(int),
        },
        geometry=frame.geometry.values,
        crs=4326,
    )

    def style(feature: dict[str, Any]) -> dict[str, Any]:
        colour = CLASS_COLOURS.get(feature["properties"]["class_key"], "#999999")
        return {"color": colour, "weight": 0.5, "fillColor": colour, "fillOpacity": 0.65}

    folium.GeoJson(
        _geojson(layer),
        name=text(lang, "measured_cells"),
        style_function=style,
        tooltip=folium.GeoJsonTooltip(
            fields=["class_label", "median_download_mbps", "n_tests", "cell_id"],
            aliases=[text(lang, k) for k in ("class", "median_down", "tests", "cell")],
        ),
    ).add_to(fmap)


def _add_sensors(fmap: folium.Map, sensors: pd.DataFrame, lang: Lang) -> None:
    group = folium.FeatureGroup(name=text(lang, "sensors"))
    for thing_id, name, lon, lat, props in zip(
        sensors["thing_id"], sensors["name"], sensors["lon"], sensors["lat"],
        sensors["observed_properties"], strict=True,
    ):  # fmt: skip
        names = _as_names(props)
        measured = ", ".join(_text(p) for p in names) if names else "–"
        popup = (
            f"<b>{_text(name)}</b><br>Thing {int(thing_id)}<br>{text(lang, 'measures')}: {measured}"
        )
        folium.CircleMarker(
            location=(float(lat), float(lon)),
            radius=6,
            color="#ffffff",
            weight=1.5,
            fill=True,
            fill_color=SENSOR_COLOUR,
            fill_opacity=0.9,
            popup=folium.Popup(popup, max_width=300),
            tooltip=folium.Tooltip(_text(name)),
        ).add_to(group)
    group.add_to(fmap)


def _finite_sensors(sensors: pd.DataFrame) -> pd.DataFrame:
    if not len(sensors):
        return sensors
    ok = np.isfinite(sensors["lon"].to_numpy(dtype=float)) & np.isfinite(
        sensors["lat"].to_numpy(dtype=float)
    )
    return sensors[ok]


def render_coverage_map(
    cells: gpd.GeoDataFrame,
    sensors: pd.DataFrame,
    districts: gpd.GeoDataFrame | None = None,
    *,
    city: gpd.GeoDataFrame | None = None,
    options: MapOptions | None = None,
) -> str:
    """A complete standalone HTML page with the coverage map of measured speeds.

    ``cells`` as from :func:`quartier.geo.speedtest_cells.classify_cells`, ``sensors`` as from
    :func:`quartier.geo.io.load_sensor_locations` (``thing_id``, ``name``, ``lon``, ``lat``,
    ``observed_properties``), ``districts`` with ``code``, ``name`` and polygons, ``city`` the
    city's outline (the map opens on it; else on the districts, the cells, or Germany). Any of
    them may be empty.
    """
    options = options or MapOptions()
    lang = options.lang
    sensors = _finite_sensors(sensors)
    bounds = _bounds([city, districts, cells, _points(sensors)])
    fmap = _base_map(options, bounds, text(lang, "coverage_title"))
    if districts is not None and len(districts):
        _add_districts(fmap, districts, lang)
    if len(cells):
        _add_cells(fmap, cells, lang)
    if len(sensors):
        _add_sensors(fmap, sensors, lang)
    counts = cells["class_key"].value_counts().to_dict() if len(cells) else dict[Any, int]()
    rows = "".join(
        _swatch(CLASS_COLOURS[c.key], f"{html.escape(c.label_en if lang == 'en' else c.label_de)} "
                f'<span style="color:#666">({_cells(int(counts.get(c.key, 0)), lang)})</span>')
        for c in SPEED_CLASSES
    )  # fmt: skip
    if len(sensors):
        rows += _swatch(SENSOR_COLOUR, text(lang, "sensor"), round_=True)
    page = _page(fmap, _legend(text(lang, "legend_measured"), rows, options), options)
    log.debug("rendered coverage map: %d cells, %d sensors", len(cells), len(sensors))
    return page


# --- the gap map: results of the coverage-gap analysis ------------------------------------------

GAP_COLOUR = "#7b3294"
DEAD_ZONE_COLOUR = "#000000"


def render_gap_map(
    cells: pd.DataFrame,
    gaps: gpd.GeoDataFrame,
    districts: gpd.GeoDataFrame | None,
    classes: Sequence[dict[str, Any]],
    sensors: pd.DataFrame | None = None,
    *,
    city: gpd.GeoDataFrame | None = None,
    options: MapOptions | None = None,
) -> str:
    """A standalone HTML page with the results of a coverage-gap run: cells with households
    coloured by class (all but the best class, worst first, at most :data:`MAX_MAP_CELLS`),
    the gap clusters with rank and priority, dead zones, districts and sensors.

    ``cells`` as from :func:`quartier.geo.run_store.load_cells` (``e``, ``n``,
    ``class_key``, ``households``, ``dead_zone``…), ``gaps`` as from ``load_gaps``, ``classes``
    the profile's classes as dicts (``key``, ``label_de``, ``label_en``, ``colour``).
    """
    layers = supply_layers(cells, [str(c["key"]) for c in classes])
    return render_gap_layers(layers, gaps, districts, classes, sensors, city=city,
                             options=options)  # fmt: skip


def render_gap_layers(
    layers: MapLayers,
    gaps: gpd.GeoDataFrame,
    districts: gpd.GeoDataFrame | None,
    classes: Sequence[dict[str, Any]],
    sensors: pd.DataFrame | None = None,
    *,
    city: gpd.GeoDataFrame | None = None,
    options: MapOptions | None = None,
) -> str:
    """The gap map (:func:`render_gap_map`) of a run's layers as made by
    :func:`quartier.maps.layers.supply_layers` (stored with the run or made for this page)."""
    options = options or MapOptions()
    lang = options.lang
    keys = [str(c["key"]) for c in classes]
    colours = {str(c["key"]): str(c.get("colour", "#999999")) for c in classes}
    labels = {
        str(c["key"]): str(c.get("label_en", c["label_de"]) if lang == "en" else c["label_de"])
        for c in classes
    }
    supply = layers.get("supply") or MapLayer("supply", 0)
    dead = layers.get("dead") or MapLayer("dead", 0)
    # the layer's class index is into the keys it was made with
    made_keys = [str(k) for k in supply.meta.get("class_keys", keys)]
    counts = {str(k): int(v) for k, v in dict(supply.meta.get("counts", {})).items()}
    sensors = _finite_sensors(sensors) if sensors is not None else None
    bounds = _bounds([city, districts, gaps])
    fmap = _base_map(options, bounds, text(lang, "coverage_title"))
    if districts is not None and len(districts):
        _add_districts(fmap, districts, lang)
    if supply.cells:
        CellLayer(
            supply.geojson, text(lang, "supply"),
            [_fill(colours.get(k, "#999999"), 0.7) for k in made_keys], style_key="k",
            fields=[("k", html.escape(text(lang, "class")),
                     [html.escape(labels.get(k, k)) for k in made_keys]),
                    ("h", html.escape(text(lang, "households")), None),
                    ("o", html.escape(text(lang, "best_offer")), None),
                    ("c", html.escape(text(lang, "cell")), None)],
            canvas=True,
        ).add_to(fmap)  # fmt: skip
    if len(gaps):
        g = gaps.to_crs(4326)
        distance = g["distance_gigabit_m"].astype(float).round(0).fillna(-1)
        props = [
            {"rang": int(r), "haushalte": int(h), "flaeche": round(float(a), 2),
             "prioritaet": round(float(p), 3), "abstand": float(d), "bezirke": str(b)}
            for r, h, a, p, d, b in zip(g["rank"], g["households"], g["area_km2"], g["priority"],
                                        distance, g["district_codes"], strict=True)
        ]  # fmt: skip
        CellLayer(
            features_geojson(g.geometry.values, props), text(lang, "gaps"),
            [{"color": GAP_COLOUR, "weight": 2, "fill": False}],
            fields=[(k, html.escape(text(lang, label)), None)
                    for k, label in (("rang", "rank"), ("haushalte", "households"),
                                     ("flaeche", "area"), ("prioritaet", "priority"),
                                     ("abstand", "distance"), ("bezirke", "district_list"))],
        ).add_to(fmap)  # fmt: skip
    if dead.cells:
        CellLayer(dead.geojson, text(lang, "dead_zones"), [_fill(DEAD_ZONE_COLOUR, 0.5, 1)],
                  fields=[("c", html.escape(text(lang, "dead_zone")), None)],
                  canvas=True).add_to(fmap)  # fmt: skip
    has_sensors = sensors is not None and len(sensors) > 0
    if sensors is not None and has_sensors:
        _add_sensors(fmap, sensors, lang)
    rows = "".join(
        _swatch(colours[k], f"{html.escape(labels[k])} "
                f'<span style="color:#666">({_cells(int(counts.get(k, 0)), lang)})</span>')
        for k in keys
    )  # fmt: skip
    rows += _swatch(GAP_COLOUR, html.escape(text(lang, "gap_row", n=len(gaps))))
    dead_row = text(lang, "dead_row", cells=_cells(dead.cells, lang))
    rows += _swatch(DEAD_ZONE_COLOUR, html.escape(dead_row))
    if has_sensors:
        rows += _swatch(SENSOR_COLOUR, text(lang, "sensor"), round_=True)
    legend = _legend(text(lang, "legend_gaps"), rows, options, text(lang, "gap_note"))
    return _page(fmap, legend, options)


# --- the sensor map ------------------------------------------------------------------------------


def _age(seconds: float, lang: Lang) -> str:
    if seconds < 90:
        value = f"{max(0, round(seconds))} s"
    elif seconds < 5400:
        value = f"{round(seconds / 60)} min"
    elif seconds < 2 * 86400:
        value = f"{round(seconds / 3600)} h"
    else:
        value = f"{round(seconds / 86400)} d" if lang == "en" else f"{round(seconds / 86400)} Tg."
    return text(lang, "ago", age=value)


def _number(value: float, lang: Lang) -> str:
    shown = f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    return shown.replace(".", ",") if lang == "de" else shown


def render_sensor_map(
    sensors: pd.DataFrame,
    latest: pd.DataFrame,
    districts: gpd.GeoDataFrame | None = None,
    *,
    now: datetime,
    stale_after_seconds: float = 6 * 3600,
    city: gpd.GeoDataFrame | None = None,
    options: MapOptions | None = None,
) -> str:
    """Every sensor (clustered markers) with its latest value per datastream, unit and age;
    sensors without a reading for ``stale_after_seconds`` (or none at all) are grey and marked
    stale.

    ``sensors`` as from :func:`quartier.geo.io.load_sensor_locations`; ``latest`` one row per
    datastream: ``thing_id``, ``name`` (what is measured), ``unit``, ``value``, ``time`` (UTC).
    """
    options = options or MapOptions()
    lang = options.lang
    sensors = _finite_sensors(sensors)
    bounds = _bounds([city, districts, _points(sensors)])
    fmap = _base_map(options, bounds, text(lang, "sensors_title"))
    if districts is not None and len(districts):
        _add_districts(fmap, districts, lang)
    by_thing: dict[int, list[tuple[str, str, float, datetime]]] = {}
    for thing_id, name, unit, value, time in zip(
        latest["thing_id"], latest["name"], latest["unit"], latest["value"], latest["time"],
        strict=True,
    ):  # fmt: skip
        if value is None or time is None or pd.isna(value) or pd.isna(time):
            continue
        by_thing.setdefault(int(thing_id), []).append(
            (str(name), str(unit or ""), float(value), pd.Timestamp(time).to_pydatetime())
        )
    cluster = MarkerCluster(  # type: ignore[no-untyped-call]
        name=text(lang, "sensors"), show_coverage_on_hover=False
    )
    n_stale = 0
    for thing_id, name, lon, lat in zip(
        sensors["thing_id"], sensors["name"], sensors["lon"], sensors["lat"], strict=True
    ):
        readings = sorted(by_thing.get(int(thing_id), []))
        newest = max((t for *_r, t in readings), default=None)
        stale = newest is None or (now - newest).total_seconds() > stale_after_seconds
        n_stale += stale
        lines = (
            "".join(
                f"<br>{_text(what)}: {_number(value, lang)} {_text(unit)} "
                f'<span style="color:#666">({_age((now - t).total_seconds(), lang)})</span>'
                for what, unit, value, t in readings
            )
            or f"<br>{text(lang, 'no_readings')}"
        )
        mark = f' <b style="color:#b00">({text(lang, "stale")})</b>' if stale else ""
        popup = f"<b>{_text(name)}</b>{mark}<br>{text(lang, 'latest')}:{lines}"
        folium.CircleMarker(
            location=(float(lat), float(lon)),
            radius=7,
            color="#ffffff",
            weight=1.5,
            fill=True,
            fill_color=STALE_COLOUR if stale else SENSOR_COLOUR,
            fill_opacity=0.9,
            popup=folium.Popup(popup, max_width=320),
            tooltip=folium.Tooltip(_text(name) + (f" ({text(lang, 'stale')})" if stale else "")),
            class_name="quartier-sensor-stale" if stale else "quartier-sensor",
        ).add_to(cluster)
    cluster.add_to(fmap)
    hours = _number(stale_after_seconds / 3600, lang)
    rows = _swatch(SENSOR_COLOUR, html.escape(text(lang, "sensor_current")), round_=True)
    rows += _swatch(STALE_COLOUR, html.escape(text(lang, "sensor_stale", hours=hours)), True)
    rows += (
        f'<div style="color:#666">{html.escape(text(lang, "n_sensors", n=len(sensors)))}, '
        f"{n_stale} {html.escape(text(lang, 'stale'))}</div>"
    )
    return _page(fmap, _legend(text(lang, "legend_sensors"), rows, options), options)


# --- stored layers: a run's cells drawn as they were made ---------------------------------------


def _script_json(value: object) -> str:
    """``value`` as JSON that is inert inside a ``<script>`` element."""
    return _script_safe(json.dumps(value))


def _script_safe(text_: str) -> str:
    return (
        text_.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        .replace("'", "\\u0027")
    )  # fmt: skip


#: the maps' own script for stored cell layers (:class:`CellLayer`, :class:`ZoomedCells`), put
#: into each page once: styles by a feature property, one tooltip function per layer (a table of
#: fields), layers shown only within a zoom band, and the zoomed-in cells of the visible area,
#: fetched from Quartier or read from JSON inside the page (a file that works offline)
CELLS_JS = """
var quartierCells = (function () {
    function esc(v) { return String(v).replace(/&/g, '&amp;').replace(/</g, '&lt;'); }
    function style(styles, key, fallback) {
        return function (f) {
            var v = key === null ? undefined : f.properties[key];
            return styles[v === undefined ? fallback : v] || styles[fallback];
        };
    }
    function table(rows, fallback) {
        return function (layer) {
            var p = layer.feature.properties, out = '<table>';
            if (fallback !== null && p[rows[0][0]] === undefined) return fallback;
            for (var i = 0; i < rows.length; i++) {
                var v = p[rows[i][0]];
                if (rows[i][2]) v = rows[i][2][v];
                out += '<tr><th style="text-align:left;padding-right:6px">' + rows[i][1]
                    + '</th><td>' + esc(v) + '</td></tr>';
            }
            return out + '</table>';
        };
    }
    function band(inner, minZoom, maxZoom) {
        var group = L.layerGroup(), map = null;
        function update() {
            if (!map) return;
            var z = map.getZoom(), on = z >= minZoom && z <= maxZoom;
            if (on && !group.hasLayer(inner)) group.addLayer(inner);
            else if (!on && group.hasLayer(inner)) group.removeLayer(inner);
        }
        group.on('add', function () { map = group._map; map.on('zoomend', update); update(); });
        group.on('remove', function () { if (map) map.off('zoomend', update); map = null; });
        return group;
    }
    function bounds(coords, b) {
        if (typeof coords[0] === 'number') { b.extend([coords[1], coords[0]]); return b; }
        for (var i = 0; i < coords.length; i++) bounds(coords[i], b);
        return b;
    }
    function fine(o) {
        var group = L.layerGroup(), map = null, cells = null, loaded = null, seq = 0, all = null;
        function show(fc, want) {
            if (cells) group.removeLayer(cells);
            cells = L.geoJson(fc, {renderer: o.renderer, style: o.style});
            cells.bindTooltip(o.tooltip, {sticky: true});
            group.addLayer(cells);
            loaded = want;
            group.pending = false;
            group.fire('quartier:loaded', {features: fc.features.length});
        }
        function embedded(want) {
            if (all === null) {
                all = [];
                o.sources.forEach(function (id) {
                    JSON.parse(document.getElementById(id).textContent).features.forEach(
                        function (f) { f.bbox_ = bounds(f.geometry.coordinates, L.latLngBounds([]));
                                       all.push(f); });
                });
            }
            return {type: 'FeatureCollection',
                    features: all.filter(function (f) { return want.intersects(f.bbox_); })};
        }
        function update() {
            if (!map) return;
            if (map.getZoom() < o.minZoom) {
                if (cells) group.removeLayer(cells);
                cells = null; loaded = null; seq++;
                return;
            }
            if (loaded && loaded.contains(map.getBounds())) return;
            var want = map.getBounds().pad(0.1), n = ++seq;
            if (!o.url) { show(embedded(want), want); return; }
            group.pending = true;
            var bbox = [want.getWest(), want.getSouth(), want.getEast(), want.getNorth()]
                .map(function (v) { return v.toFixed(5); }).join(',');
            fetch(o.url + '?bbox=' + bbox, {credentials: 'same-origin'})
                .then(function (r) {
                    if (!r.ok) throw new Error('HTTP ' + r.status);
                    return r.json();
                })
                .then(function (fc) { if (n === seq && map) show(fc, want); })
                .catch(function (err) {
                    group.pending = false;
                    console.warn('Quartier: 100 m cells not loaded: ' + err);
                });
        }
        group.on('add', function () { map = group._map; map.on('moveend', update); update(); });
        group.on('remove', function () {
            if (map) map.off('moveend', update);
            if (cells) group.removeLayer(cells);
            map = null; cells = null; loaded = null; seq++;
        });
        return group;
    }
    return {style: style, table: table, band: band, fine: fine};
})();
"""


def _add_cells_js(element: Element) -> None:
    _root_of(element).header.add_child(
        _Raw(f"<script>{CELLS_JS}</script>"), name="quartier_cells_js"
    )


def _fields_json(fields: Sequence[tuple[str, str, Sequence[str] | None]]) -> str:
    return _script_json(
        [[k, label, list(labels) if labels else None] for k, label, labels in fields]
    )


class CellLayer(Layer):
    """A layer of :mod:`quartier.maps.layers` (a FeatureCollection as text) on the map as it is:
    no per-feature work on the server (folium's ``GeoJson`` calls a style function per feature
    and writes a ``switch`` over every feature id); the style is picked in the browser from
    ``styles`` by the feature's property ``style_key`` (None: the first style); the tooltip is
    ``tooltip`` (HTML) or a table of ``fields`` (property, label, optional labels by value;
    labels are HTML). A layer not shown at first is built when it is switched on. With
    ``max_zoom`` (and ``min_zoom``) its features are drawn only within that zoom band."""

    _template = Template(
        """{% macro script(this, kwargs) %}
        var {{ this.get_name() }}_cells = L.geoJson(null, {
            {%- if this.canvas %}renderer: L.canvas(),{% endif %}
            style: quartierCells.style({{ this.styles }}, {{ this.style_key }}, 0)
        });
        {%- if this.max_zoom is none %}
        var {{ this.get_name() }} = {{ this.get_name() }}_cells;
        {%- else %}
        var {{ this.get_name() }} = quartierCells.band({{ this.get_name() }}_cells,
            {{ this.min_zoom }}, {{ this.max_zoom }});
        {%- endif %}
        {%- if this.show %}
        {{ this.get_name() }}_cells.addData({{ this.get_name() }}_data);
        {%- else %}
        {# a layer off at first is built when it is switched on, not while the page loads #}
        {{ this.get_name() }}.once('add', function () {
            {{ this.get_name() }}_cells.addData({{ this.get_name() }}_data);
        });
        {%- endif %}
        {%- if this.tooltip is not none %}
        {{ this.get_name() }}_cells.bindTooltip({{ this.tooltip }}, {sticky: true});
        {%- elif this.fields is not none %}
        {{ this.get_name() }}_cells.bindTooltip(quartierCells.table({{ this.fields }}, null),
            {sticky: true});
        {%- endif %}
        {% endmacro %}"""
    )

    def __init__(
        self,
        geojson: str,
        name: str,
        styles: Sequence[dict[str, Any]],
        *,
        style_key: str | None = None,
        tooltip: str | None = None,
        fields: Sequence[tuple[str, str, Sequence[str] | None]] | None = None,
        canvas: bool = False,
        show: bool = True,
        min_zoom: int = 0,
        max_zoom: int | None = None,
    ) -> None:
        super().__init__(name=name, overlay=True, control=True, show=show)
        self._name = "CellLayer"
        self.data = _script_safe(geojson)
        self.styles = _script_json(list(styles))
        self.style_key = _script_json(style_key)
        self.tooltip = None if tooltip is None else _script_json(tooltip)
        self.fields = None if fields is None else _fields_json(fields)
        self.canvas = canvas
        self.min_zoom = int(min_zoom)
        self.max_zoom = None if max_zoom is None else int(max_zoom)

    def render(self, **kwargs: Any) -> str:
        # the data goes into the page as it is: through folium's templates, a script element
        # is parsed again as a Jinja template, which for megabytes of GeoJSON took seconds
        _add_cells_js(self)
        _root_of(self).script.add_child(
            _Raw(f"var {self.get_name()}_data = {self.data};"), name=f"{self.get_name()}_data"
        )
        super().render(**kwargs)  # type: ignore[no-untyped-call]
        return ""


class ZoomedCells(Layer):
    """Cells drawn only from zoom ``min_zoom`` on, for the visible area (a tenth more on each
    side), on Leaflet's canvas: fetched from ``url`` (``?bbox=west,south,east,north``, answering
    a GeoJSON FeatureCollection) each time the view leaves the area loaded, or, without a
    ``url`` (a file that works offline), taken from the FeatureCollections ``embedded`` (text),
    which go into the page as JSON that the browser parses only when first zoomed in. Styled by
    the property ``style_key`` (features without it: the last style), one tooltip function: a
    table of ``fields``, or ``fallback`` (HTML) for a feature without the first field."""

    _template = Template(
        """{% macro script(this, kwargs) %}
        var {{ this.get_name() }} = quartierCells.fine({
            url: {{ this.url }}, sources: {{ this.sources }}, minZoom: {{ this.min_zoom }},
            renderer: L.canvas({padding: 0.1}),
            style: quartierCells.style({{ this.styles }}, {{ this.style_key }},
                                       {{ this.n_styles }} - 1),
            tooltip: quartierCells.table({{ this.fields }}, {{ this.fallback }})
        });
        {% endmacro %}"""
    )

    def __init__(
        self,
        name: str,
        styles: Sequence[dict[str, Any]],
        fields: Sequence[tuple[str, str, Sequence[str] | None]],
        *,
        min_zoom: int,
        url: str | None = None,
        embedded: Sequence[str] = (),
        style_key: str = "s",
        fallback: str | None = None,
    ) -> None:
        super().__init__(name=name, overlay=True, control=True, show=True)
        self._name = "ZoomedCells"
        self.url = _script_json(url)
        self.embedded = [_script_safe(text_) for text_ in embedded] if url is None else []
        self.styles = _script_json(list(styles))
        self.n_styles = len(styles)
        self.style_key = _script_json(style_key)
        self.fields = _fields_json(fields)
        self.fallback = _script_json(fallback)
        self.min_zoom = int(min_zoom)

    @property
    def sources(self) -> str:
        return _script_json([f"{self.get_name()}_json_{i}" for i in range(len(self.embedded))])

    def render(self, **kwargs: Any) -> str:
        _add_cells_js(self)
        root = _root_of(self)
        for i, data in enumerate(self.embedded):
            ident = f"{self.get_name()}_json_{i}"
            root.html.add_child(
                _Raw(f'<script type="application/json" id="{ident}">{data}</script>'), name=ident
            )
        super().render(**kwargs)  # type: ignore[no-untyped-call]
        return ""


class _Raw(Element):
    """Text put into the page as it is (no template)."""

    def __init__(self, text_: str) -> None:
        super().__init__()
        self._text = text_

    def render(self, **kwargs: Any) -> str:
        return self._text


def _root_of(element: Element) -> Figure:
    root = element.get_root()
    if not isinstance(root, Figure):  # pragma: no cover - folium always gives a Figure
        raise TypeError("folium element without a Figure root")
    return root


def _fill(colour: str, opacity: float, weight: float = 0.5) -> dict[str, Any]:
    return {"color": colour, "weight": weight, "fillColor": colour, "fillOpacity": opacity}


# --- the mobile map: measured 4G/5G coverage per operator ---------------------------------------

#: ColorBrewer "Paired": per operator a light (4G) and a dark (5G) shade of one hue
MOBILE_COLOURS: tuple[tuple[str, str], ...] = (
    ("#a6cee3", "#1f78b4"), ("#b2df8a", "#33a02c"), ("#fdbf6f", "#ff7f00"),
    ("#cab2d6", "#6a3d9a"), ("#fb9a99", "#e31a1c"), ("#ffff99", "#b15928"),
)  # fmt: skip
MEASURED_COLOUR = "#bdbdbd"


def render_mobile_map(
    cells: pd.DataFrame,
    operators: Sequence[str],
    technologies: Sequence[str],
    districts: gpd.GeoDataFrame | None = None,
    *,
    city: gpd.GeoDataFrame | None = None,
    parameters: dict[str, Any] | None = None,
    options: MapOptions | None = None,
) -> str:
    """A standalone HTML page with the measured mobile coverage of a coverage run: per operator
    and technology (4G, 5G) a layer of the cells it covers (merged into polygons), the dead zones
    (no 4G/5G from any operator), the cells with measurements, districts; a layer control and a
    German (or English) legend with the number of cells per layer.

    ``cells`` as from :func:`quartier.geo.run_store.load_cells` (``e``, ``n``, ``n_signal``,
    ``mobile_mask``, ``dead_zone``), already limited to the cells that may be published;
    ``operators`` and ``technologies`` the run's (the bit layout of ``mobile_mask``);
    ``parameters`` the run's analysis parameters (for the legend's thresholds). ``cells`` None
    or empty: a map with the districts and a note that no analysis is stored."""
    layers = mobile_layers(cells, operators, technologies) if len(cells) else None
    return render_mobile_layers(
        layers, districts, city=city, parameters=parameters, options=options
    )


def render_mobile_layers(
    layers: MapLayers | None,
    districts: gpd.GeoDataFrame | None = None,
    *,
    city: gpd.GeoDataFrame | None = None,
    parameters: dict[str, Any] | None = None,
    options: MapOptions | None = None,
) -> str:
    """The mobile map (:func:`render_mobile_map`) of a run's layers as made by
    :func:`quartier.maps.layers.mobile_layers` (stored with the run or made for this page);
    None: no analysis stored."""
    options = options or MapOptions()
    lang = options.lang
    params = parameters or {}
    fmap = _base_map(options, _bounds([city, districts]), text(lang, "mobile_title"))
    if districts is not None and len(districts):
        _add_districts(fmap, districts, lang)
    rows = ""
    measured = layers.get("measured") if layers is not None else None
    if measured is not None and measured.cells:
        CellLayer(measured.geojson, text(lang, "mobile_measured"),
                  [_fill(MEASURED_COLOUR, 0.3)]).add_to(fmap)  # fmt: skip
        rows += _swatch(
            MEASURED_COLOUR, html.escape(text(lang, "mobile_measured_row",
                                              cells=_cells(measured.cells, lang)))
        )  # fmt: skip
    first = True
    for layer in layers.starting("op:") if layers is not None else []:
        operator, tech = str(layer.meta["operator"]), str(layer.meta["technology"])
        colour = MOBILE_COLOURS[int(layer.meta["index"]) % len(MOBILE_COLOURS)][
            int(layer.meta["shade"])
        ]
        name = _text(text(lang, "mobile_layer", operator=operator, technology=tech))
        if layer.cells:
            CellLayer(layer.geojson, name, [_fill(colour, 0.6)], tooltip=name,
                      show=first).add_to(fmap)  # fmt: skip
            first = False
        label = text(lang, "mobile_row", operator=operator, technology=tech,
                     cells=_cells(layer.cells, lang))  # fmt: skip
        rows += _swatch(colour, html.escape(label))
    dead = layers.get("dead") if layers is not None else None
    n_dead = dead.cells if dead is not None else 0
    if dead is not None and dead.cells:
        CellLayer(dead.geojson, text(lang, "dead_zones"), [_fill(DEAD_ZONE_COLOUR, 0.6, 1)],
                  fields=[("c", html.escape(text(lang, "dead_zone")), None)],
                  canvas=True).add_to(fmap)  # fmt: skip
    rows += _swatch(
        DEAD_ZONE_COLOUR, html.escape(text(lang, "dead_row", cells=_cells(n_dead, lang)))
    )
    thresholds = params.get("signal_threshold_dbm") or {}
    note = (
        text(lang, "mobile_note",
             share=_number(100 * float(params.get("signal_min_share", 0.5)), lang),
             threshold=_number(float(thresholds.get("4G", -110.0)), lang),
             k=options.min_contributors)
        if layers is not None
        else text(lang, "no_run")
    )  # fmt: skip
    legend = _legend(text(lang, "legend_mobile"), rows, options, note)
    log.debug("rendered mobile map: %d measured cells, %d dead zones",
              measured.cells if measured else 0, n_dead)  # fmt: skip
    return _page(fmap, legend, options)
