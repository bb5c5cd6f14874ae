"""The coverage map: measured 100 m cells coloured by speed class, district outlines and sensor
markers, as one standalone HTML page (Leaflet via folium). The browser loads the OpenStreetMap
tiles; the server only writes HTML.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from quartier.geo import grid
from quartier.geo.speedtest_cells import SPEED_CLASS_BY_KEY, SPEED_CLASSES

log = logging.getLogger(__name__)

KOELN_CENTRE = (50.9375, 6.9603)  # lat, lon
DEFAULT_ZOOM = 11
OSM_TILES = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
DEFAULT_ATTRIBUTION = (
    '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a>-Mitwirkende'
    " | Stadtgrenzen: Stadt Köln, "
    '<a href="https://creativecommons.org/licenses/by/4.0/deed.de">CC BY</a>'
)
LEGEND_TITLE = "Gemessene Download-Geschwindigkeit (Median je 100-m-Zelle)"

#: Fill colour per speed class (ColorBrewer RdYlBu, colour-blind safe): red is slow, blue gigabit.
CLASS_COLOURS: dict[str, str] = {
    "below_30": "#d7191c",
    "30_to_100": "#fdae61",
    "100_to_1000": "#abd9e9",
    "gigabit": "#2c7bb6",
}
SENSOR_COLOUR = "#3f007d"
DISTRICT_COLOUR = "#333333"

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


def _cells_de(count: int) -> str:
    return f"{count} Zelle" if count == 1 else f"{count} Zellen"


def _legend_html(cells: gpd.GeoDataFrame, has_sensors: bool) -> str:
    counts = cells["class_key"].value_counts().to_dict() if len(cells) else dict[Any, int]()
    rows = "".join(
        '<div style="margin:2px 0"><span style="display:inline-block;width:14px;height:14px;'
        f"margin-right:6px;vertical-align:middle;background:{CLASS_COLOURS[c.key]};"
        f'opacity:0.8;border:1px solid #555"></span>{html.escape(c.label_de)} '
        f'<span style="color:#666">({_cells_de(int(counts.get(c.key, 0)))})</span></div>'
        for c in SPEED_CLASSES
    )
    if has_sensors:
        rows += (
            '<div style="margin:6px 0 2px"><span style="display:inline-block;width:12px;'
            f"height:12px;margin:0 7px 0 1px;border-radius:50%;background:{SENSOR_COLOUR};"
            'vertical-align:middle"></span>Sensor</div>'
        )
    return (
        '<div id="quartier-legend" style="position:fixed;bottom:24px;left:12px;z-index:9999;'
        "background:rgba(255,255,255,0.92);padding:8px 10px;border-radius:4px;"
        'font:12px/1.4 sans-serif;box-shadow:0 1px 4px rgba(0,0,0,0.3);max-width:300px">'
        f'<div style="font-weight:bold;margin-bottom:4px">{html.escape(LEGEND_TITLE)}</div>'
        f"{rows}</div>"
    )


def _geojson(frame: gpd.GeoDataFrame) -> dict[str, Any]:
    """A compact FeatureCollection: coordinates rounded to 1e-6 degrees (about 0.1 m), no bboxes."""
    rounded = shapely.transform(
        np.asarray(frame.geometry.values, dtype=object), lambda c: np.round(c, grid.COORD_DECIMALS)
    )
    compact = frame.set_geometry(gpd.GeoSeries(rounded, index=frame.index, crs=frame.crs))
    data: dict[str, Any] = compact.to_geo_dict(show_bbox=False)
    return data


def _bounds(frames: Sequence[gpd.GeoDataFrame]) -> list[list[float]] | None:
    """[[south, west], [north, east]] of the first non-empty frame (districts, then cells)."""
    for frame in frames:
        if frame is not None and len(frame) and not frame.geometry.is_empty.all():
            west, south, east, north = (float(v) for v in frame.to_crs(4326).total_bounds)
            if np.isfinite([west, south, east, north]).all():
                return [[south, west], [north, east]]
    return None


def _add_districts(fmap: folium.Map, districts: gpd.GeoDataFrame) -> None:
    frame = districts.to_crs(4326)
    names = frame["name"] if "name" in frame.columns else frame["code"]
    layer = gpd.GeoDataFrame(
        {
            "code": frame["code"].astype(str).map(_text),
            "name": names.astype(str).map(_text),
        },
        geometry=frame.geometry.values,
        crs=4326,
    )
    folium.GeoJson(
        _geojson(layer),
        name="Stadtbezirke",
        style_function=lambda _f: {"color": DISTRICT_COLOUR, "weight": 2, "fill": False},
        tooltip=folium.GeoJsonTooltip(fields=["name"], aliases=["Bezirk"]),
    ).add_to(fmap)


def _add_cells(fmap: folium.Map, cells: gpd.GeoDataFrame) -> None:
    frame = cells.to_crs(4326)
    keys = frame["class_key"].astype(str)
    layer = gpd.GeoDataFrame(
        {
            "cell_id": frame["cell_id"].astype(str).map(_text),
            "class_key": keys,
            "class_label": keys.map(
                lambda k: SPEED_CLASS_BY_KEY[k].label_de if k in SPEED_CLASS_BY_KEY else k
            ),
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
        name="Gemessene Zellen",
        style_function=style,
        tooltip=folium.GeoJsonTooltip(
            fields=["class_label", "median_download_mbps", "n_tests", "cell_id"],
            aliases=["Klasse", "Median Download (Mbit/s)", "Messungen", "Zelle"],
        ),
    ).add_to(fmap)


def _add_sensors(fmap: folium.Map, sensors: pd.DataFrame) -> None:
    group = folium.FeatureGroup(name="Sensoren")
    for thing_id, name, lon, lat, props in zip(
        sensors["thing_id"], sensors["name"], sensors["lon"], sensors["lat"],
        sensors["observed_properties"], strict=True,
    ):  # fmt: skip
        names = _as_names(props)
        measured = ", ".join(_text(p) for p in names) if names else "–"
        popup = f"<b>{_text(name)}</b><br>Thing {int(thing_id)}<br>Messgrößen: {measured}"
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


def render_coverage_map(
    cells: gpd.GeoDataFrame,
    sensors: pd.DataFrame,
    districts: gpd.GeoDataFrame | None = None,
    *,
    attribution: str = DEFAULT_ATTRIBUTION,
) -> str:
    """A complete standalone HTML page with the coverage map.

    ``cells`` as from :func:`quartier.geo.speedtest_cells.classify_cells`, ``sensors`` as from
    :func:`quartier.geo.io.load_sensor_locations` (``thing_id``, ``name``, ``lon``, ``lat``,
    ``observed_properties``), ``districts`` with ``code``, ``name`` and polygons. Any of them may
    be empty; the map then still opens on Köln. ``attribution`` is trusted HTML.
    """
    if len(sensors):
        ok = np.isfinite(sensors["lon"].to_numpy(dtype=float)) & np.isfinite(
            sensors["lat"].to_numpy(dtype=float)
        )
        sensors = sensors[ok]
    fmap = folium.Map(
        location=KOELN_CENTRE, zoom_start=DEFAULT_ZOOM, tiles=None, control_scale=True
    )
    folium.TileLayer(tiles=OSM_TILES, attr=attribution, name="OpenStreetMap", max_zoom=19).add_to(
        fmap
    )
    if districts is not None and len(districts):
        _add_districts(fmap, districts)
    if len(cells):
        _add_cells(fmap, cells)
    if len(sensors):
        _add_sensors(fmap, sensors)
    folium.LayerControl(collapsed=True).add_to(fmap)
    root = fmap.get_root()
    if not isinstance(root, folium.Figure):  # pragma: no cover - folium always gives a Figure
        raise TypeError("folium map without a Figure root")
    root.html.add_child(folium.Element(_legend_html(cells, len(sensors) > 0)))
    bounds = _bounds([f for f in (districts, cells) if f is not None])
    if bounds is not None:
        fmap.fit_bounds(bounds)
    html_page: str = root.render()
    log.debug("rendered coverage map: %d cells, %d sensors", len(cells), len(sensors))
    return html_page


# --- the gap map: results of the coverage-gap analysis ------------------------------------------

GAP_LEGEND_TITLE = "Breitbandversorgung je 100-m-Zelle (bestes Angebot)"
GAP_COLOUR = "#7b3294"
DEAD_ZONE_COLOUR = "#000000"
#: at most this many cells are drawn (the worst classes first); the rest is in the export
MAX_MAP_CELLS = 20_000


def _gap_legend(classes: Sequence[dict[str, Any]], counts: dict[str, int], n_gaps: int,
                n_dead: int, has_sensors: bool) -> str:  # fmt: skip
    def swatch(colour: str, text: str, round_: bool = False) -> str:
        radius = "border-radius:50%;" if round_ else ""
        return (
            '<div style="margin:2px 0"><span style="display:inline-block;width:14px;height:14px;'
            f"margin-right:6px;vertical-align:middle;background:{colour};{radius}"
            f'opacity:0.8;border:1px solid #555"></span>{text}</div>'
        )

    rows = "".join(
        swatch(str(c.get("colour", "#999999")), f"{html.escape(str(c['label_de']))} "
               f'<span style="color:#666">({_cells_de(int(counts.get(str(c["key"]), 0)))})</span>')
        for c in classes
    )  # fmt: skip
    rows += swatch(GAP_COLOUR, f"Versorgungslücke (zusammenhängend, {n_gaps} Cluster)")
    rows += swatch(DEAD_ZONE_COLOUR, f"Funkloch: kein 4G/5G gemessen ({_cells_de(n_dead)})")
    if has_sensors:
        rows += swatch(SENSOR_COLOUR, "Sensor", round_=True)
    return (
        '<div id="quartier-legend" style="position:fixed;bottom:24px;left:12px;z-index:9999;'
        "background:rgba(255,255,255,0.92);padding:8px 10px;border-radius:4px;"
        'font:12px/1.4 sans-serif;box-shadow:0 1px 4px rgba(0,0,0,0.3);max-width:340px">'
        f'<div style="font-weight:bold;margin-bottom:4px">{html.escape(GAP_LEGEND_TITLE)}</div>'
        f'{rows}<div style="color:#666;margin-top:4px">Gezeigt: Zellen mit Haushalten außer '
        "Gigabit; Förderkategorien nach Gigabit-Richtlinie 2.0</div></div>"
    )


def render_gap_map(
    cells: pd.DataFrame,
    gaps: gpd.GeoDataFrame,
    districts: gpd.GeoDataFrame | None,
    classes: Sequence[dict[str, Any]],
    sensors: pd.DataFrame | None = None,
    *,
    attribution: str = DEFAULT_ATTRIBUTION,
) -> str:
    """A standalone HTML page with the results of a coverage-gap run: cells with households
    coloured by class (all but the best class, worst first, at most :data:`MAX_MAP_CELLS`),
    the gap clusters with rank and priority, dead zones, districts and sensors; German legend.

    ``cells`` as from :func:`quartier.geo.run_store.load_cells` (``e``, ``n``,
    ``class_key``, ``households``, ``dead_zone``…), ``gaps`` as from ``load_gaps``, ``classes``
    the profile's classes as dicts (``key``, ``label_de``, ``colour``).
    """
    keys = [str(c["key"]) for c in classes]
    colours = {str(c["key"]): str(c.get("colour", "#999999")) for c in classes}
    labels = {str(c["key"]): str(c["label_de"]) for c in classes}
    populated = cells[(cells["households"] > 0) & cells["class_key"].notna()]
    counts = populated["class_key"].astype(str).value_counts().to_dict()
    rank = populated["class_key"].astype(str).map({k: i for i, k in enumerate(keys)})
    shown = (
        populated[rank < len(keys) - 1].assign(_rank=rank).sort_values("_rank").head(MAX_MAP_CELLS)
    )
    dead = cells[cells["dead_zone"]].head(MAX_MAP_CELLS)
    fmap = folium.Map(location=KOELN_CENTRE, zoom_start=DEFAULT_ZOOM, tiles=None,
                      control_scale=True)  # fmt: skip
    folium.TileLayer(tiles=OSM_TILES, attr=attribution, name="OpenStreetMap", max_zoom=19).add_to(
        fmap
    )
    if districts is not None and len(districts):
        _add_districts(fmap, districts)
    if len(shown):
        e, n = shown["e"].to_numpy(), shown["n"].to_numpy()
        layer = gpd.GeoDataFrame(
            {
                "cell_id": grid.cell_ids(e, n),
                "class_key": shown["class_key"].astype(str).to_numpy(),
                "klasse": shown["class_key"].astype(str).map(labels).to_numpy(),
                "haushalte": shown["households"].astype(int).to_numpy(),
                "max_down": shown["max_down_mbps"].astype(float).round(0).fillna(0).to_numpy(),
            },
            geometry=grid.cell_polygons(e, n),
            crs=4326,
        )

        def style(feature: dict[str, Any]) -> dict[str, Any]:
            colour = colours.get(feature["properties"]["class_key"], "#999999")
            return {"color": colour, "weight": 0.5, "fillColor": colour, "fillOpacity": 0.7}

        folium.GeoJson(
            _geojson(layer), name="Versorgung je Zelle", style_function=style,
            tooltip=folium.GeoJsonTooltip(
                fields=["klasse", "haushalte", "max_down", "cell_id"],
                aliases=["Klasse", "Haushalte", "bestes Angebot (Mbit/s)", "Zelle"]),
        ).add_to(fmap)  # fmt: skip
    if len(gaps):
        g = gaps.to_crs(4326)
        layer = gpd.GeoDataFrame(
            {
                "rang": g["rank"].astype(int),
                "haushalte": g["households"].astype(int),
                "flaeche": g["area_km2"].astype(float).round(2),
                "prioritaet": g["priority"].astype(float).round(3),
                "abstand": g["distance_gigabit_m"].astype(float).round(0).fillna(-1),
                "bezirke": g["district_codes"].astype(str).map(_text),
            },
            geometry=g.geometry.values,
            crs=4326,
        )
        folium.GeoJson(
            _geojson(layer), name="Versorgungslücken",
            style_function=lambda _f: {"color": GAP_COLOUR, "weight": 2, "fill": False},
            tooltip=folium.GeoJsonTooltip(
                fields=["rang", "haushalte", "flaeche", "prioritaet", "abstand", "bezirke"],
                aliases=["Rang", "Haushalte", "Fläche (km²)", "Priorität",
                         "Abstand zu Gigabit (m)", "Bezirke"]),
        ).add_to(fmap)  # fmt: skip
    if len(dead):
        e, n = dead["e"].to_numpy(), dead["n"].to_numpy()
        layer = gpd.GeoDataFrame({"cell_id": grid.cell_ids(e, n)}, geometry=grid.cell_polygons(
            e, n), crs=4326)  # fmt: skip
        folium.GeoJson(
            _geojson(layer), name="Funklöcher",
            style_function=lambda _f: {"color": DEAD_ZONE_COLOUR, "weight": 1,
                                       "fillColor": DEAD_ZONE_COLOUR, "fillOpacity": 0.5},
            tooltip=folium.GeoJsonTooltip(fields=["cell_id"], aliases=["Funkloch"]),
        ).add_to(fmap)  # fmt: skip
    has_sensors = sensors is not None and len(sensors) > 0
    if sensors is not None and has_sensors:
        _add_sensors(fmap, sensors)
    folium.LayerControl(collapsed=True).add_to(fmap)
    root = fmap.get_root()
    if not isinstance(root, folium.Figure):  # pragma: no cover
        raise TypeError("folium map without a Figure root")
    root.html.add_child(
        folium.Element(_gap_legend(classes, counts, len(gaps), len(dead), has_sensors))
    )
    bounds = _bounds([f for f in (districts, gaps) if f is not None])
    if bounds is not None:
        fmap.fit_bounds(bounds)
    page: str = root.render()
    return page
