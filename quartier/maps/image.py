"""Static PNG images of the broadband and district maps, for reports and council slides
(matplotlib, no browser): drawn in the grid's CRS (EPSG:3035, metres, so 100 m cells are
squares and the scale bar is true), with title, legend, a metric scale bar and the source line.

The broadband cells are drawn as one raster (a pixel per 100 m cell), so a city of 40,000 cells
or a Land of millions takes well under a second. Pure: no database access.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import matplotlib as mpl
import numpy as np
import numpy.typing as npt
import shapely
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from quartier.geo import grid
from quartier.maps.districts import Choropleth
from quartier.maps.render import BACKGROUND, DISTRICT_COLOUR, Lang, _number, text

#: inches at 150 dpi: 1500 × 1200 pixels, readable on a slide and in an A4 report
FIGSIZE = (10.0, 8.0)
DPI = 150
#: characters per line of the legend (beside the map)
LEGEND_WIDTH = 48
_RC: Any = {"font.family": "DejaVu Sans", "font.size": 9}


@dataclass(frozen=True)
class CellLayer:
    """100 m cells (lower-left corners ``e``, ``n`` in EPSG:3035) each with an index into
    ``colours`` (-1: not drawn), and the legend's labels per colour."""

    e: npt.NDArray[np.int64]
    n: npt.NDArray[np.int64]
    colour_index: npt.NDArray[np.int64]
    colours: Sequence[str]
    labels: Sequence[str]


def _raster(layer: CellLayer) -> tuple[npt.NDArray[np.float64], tuple[float, float, float, float]]:
    """An RGBA image with one pixel per cell of the layer's bounding box (transparent where no
    cell is drawn) and its extent (left, right, bottom, top) in metres."""
    size = grid.CELL_SIZE_M
    drawn = (layer.colour_index >= 0) & (layer.colour_index < len(layer.colours))
    e, n, idx = layer.e[drawn], layer.n[drawn], layer.colour_index[drawn]
    e0, n0 = int(e.min()), int(n.min())
    cols = (e - e0) // size
    rows = (n - n0) // size
    width, height = int(cols.max()) + 1, int(rows.max()) + 1
    palette = np.array([to_rgba(c) for c in layer.colours], dtype=np.float64)
    image = np.zeros((height, width, 4), dtype=np.float64)
    image[rows, cols] = palette[idx]
    return image, (e0, e0 + width * size, n0, n0 + height * size)


def _nice_length(span_m: float) -> float:
    """A round scale bar length (1, 2 or 5 × 10^k metres) of about a fifth of ``span_m``."""
    target = max(span_m / 5, 1.0)
    power = 10 ** math.floor(math.log10(target))
    return float(max(f * power for f in (1, 2, 5) if f * power <= target))


def _scale_bar(ax: Axes, lang: Lang) -> None:
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    length = _nice_length(x1 - x0)
    x = x1 - (x1 - x0) * 0.04 - length
    y = y0 + (y1 - y0) * 0.04
    height = (y1 - y0) * 0.008
    ax.add_patch(Rectangle((x, y), length, height, facecolor="#222222", edgecolor="none",
                           zorder=10))  # fmt: skip
    label = f"{_number(length / 1000, lang)} km" if length >= 1000 else f"{_number(length, lang)} m"
    ax.text(x + length / 2, y + height * 2, label, ha="center", va="bottom", fontsize=8,
            zorder=10)  # fmt: skip


def _frame(frame: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame | None:
    if frame is None or not len(frame) or frame.geometry.is_empty.all():
        return None
    return frame.to_crs(grid.GRID_CRS)


def _figure(title: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, facecolor="white")
    ax = fig.add_axes((0.02, 0.08, 0.6, 0.84))
    ax.set_facecolor(BACKGROUND)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.suptitle(title, x=0.02, y=0.97, ha="left", fontsize=14, fontweight="bold")
    return fig, ax


def _finish(
    fig: Figure, ax: Axes, extent: gpd.GeoDataFrame | None, handles: list[Patch],
    legend_title: str, note: str, data_source: str, lang: Lang,
) -> bytes:  # fmt: skip
    if extent is not None:
        west, south, east, north = extent.total_bounds
        pad = max(east - west, north - south) * 0.03
        ax.set_xlim(west - pad, east + pad)
        ax.set_ylim(south - pad, north + pad)
    ax.set_xlabel("")
    ax.set_ylabel("")
    _scale_bar(ax, lang)
    if handles:
        for handle in handles:
            handle.set_label(textwrap.fill(str(handle.get_label()), LEGEND_WIDTH))
        legend = ax.legend(handles=handles, title=textwrap.fill(legend_title, LEGEND_WIDTH),
                           loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8,
                           title_fontsize=9, frameon=False, alignment="left")  # fmt: skip
        legend.set_zorder(20)
    footer = f"{text(lang, 'source')}: {data_source}"
    if note:
        footer = f"{note}\n{footer}"
    fig.text(0.02, 0.015, footer, fontsize=7, color="#555555", ha="left", va="bottom", wrap=True)
    buf = io.BytesIO()
    with mpl.rc_context(_RC):
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": "Quartier"})
    return buf.getvalue()


def broadband_png(
    cells: CellLayer,
    *,
    title: str,
    legend_title: str,
    lang: Lang,
    data_source: str,
    districts: gpd.GeoDataFrame | None = None,
    city: gpd.GeoDataFrame | None = None,
    outlines: gpd.GeoDataFrame | None = None,
    outline_colour: str = "#7b3294",
    outline_label: str = "",
    note: str = "",
) -> bytes:
    """A PNG of the broadband map: the cells as a raster coloured by class, ``outlines`` (the
    gap clusters) drawn over them, district boundaries, the city outline; legend with the
    labels (and the cells per class), scale bar, source line. Opens on the city (else the
    districts, else the cells)."""
    with mpl.rc_context(_RC):
        fig, ax = _figure(title)
        city3035, districts3035 = _frame(city), _frame(districts)
        handles: list[Patch] = []
        shown = (cells.colour_index >= 0) & (cells.colour_index < len(cells.colours))
        if shown.any():
            image, extent = _raster(cells)
            ax.imshow(image, extent=extent, origin="lower", interpolation="nearest", zorder=2)
        counts = np.bincount(cells.colour_index[shown], minlength=len(cells.colours))
        for colour, label, count in zip(cells.colours, cells.labels, counts, strict=True):
            cells_text = f"{int(count)} {text(lang, 'cell_1' if count == 1 else 'cell_n')}"
            handles.append(Patch(facecolor=colour, edgecolor="#555555",
                                 label=f"{label} ({cells_text})"))  # fmt: skip
        if districts3035 is not None:
            districts3035.boundary.plot(ax=ax, color=DISTRICT_COLOUR, linewidth=0.8, zorder=3)
            handles.append(Patch(facecolor="none", edgecolor=DISTRICT_COLOUR,
                                 label=text(lang, "districts")))  # fmt: skip
        outline3035 = _frame(outlines)
        if outline3035 is not None:
            outline3035.boundary.plot(ax=ax, color=outline_colour, linewidth=1.2, zorder=4)
            handles.append(Patch(facecolor="none", edgecolor=outline_colour, label=outline_label))
        if city3035 is not None:
            city3035.boundary.plot(ax=ax, color="#000000", linewidth=1.4, zorder=5)
        extent_frame = city3035 if city3035 is not None else districts3035
        if extent_frame is None and len(cells.e):
            size = grid.CELL_SIZE_M
            extent_frame = gpd.GeoDataFrame(
                geometry=[shapely.box(cells.e.min(), cells.n.min(), cells.e.max() + size,
                                      cells.n.max() + size)], crs=grid.GRID_CRS,
            )  # fmt: skip
        return _finish(fig, ax, extent_frame, handles, legend_title, note, data_source, lang)


def district_png(
    districts: gpd.GeoDataFrame,
    chart: Choropleth,
    *,
    title: str,
    unit: str,
    lang: Lang,
    data_source: str,
    city: gpd.GeoDataFrame | None = None,
) -> bytes:
    """A PNG of the district map: each district filled as on the page (status colour or value
    class), its value written in it, legend, scale bar, source line."""
    with mpl.rc_context(_RC):
        fig, ax = _figure(f"{title} ({unit})" if unit else title)
        frame = _frame(districts)
        handles = [Patch(facecolor=c, edgecolor="#333333", label=label) for c, label in chart.rows]
        if frame is not None:
            by_code = dict(zip(chart.codes, zip(chart.fills, chart.values, strict=True),
                               strict=True))  # fmt: skip
            codes = [str(c) for c in frame["code"]]
            fills = [by_code.get(c, ("#e0e0e0", np.nan))[0] for c in codes]
            frame.plot(ax=ax, color=fills, edgecolor="#333333", linewidth=0.9, zorder=2)
            points = frame.geometry.representative_point()
            names = frame["name"] if "name" in frame.columns else frame["code"]
            for point, name, code in zip(points, names, codes, strict=True):
                value = by_code.get(code, ("", np.nan))[1]
                shown = (
                    f"{_number(round(float(value), 1), lang)} {unit}".strip()
                    if np.isfinite(value)
                    else "–"
                )
                ax.text(point.x, point.y, f"{name}\n{shown}", ha="center", va="center",
                        fontsize=7, zorder=6,
                        bbox={"boxstyle": "round,pad=0.2", "facecolor": "white",
                              "alpha": 0.7, "edgecolor": "none"})  # fmt: skip
        city3035 = _frame(city)
        if city3035 is not None:
            city3035.boundary.plot(ax=ax, color="#000000", linewidth=1.4, zorder=5)
        extent_frame = city3035 if city3035 is not None else frame
        legend_title = text(lang, "status") if chart.by_status else unit
        return _finish(fig, ax, extent_frame, handles, legend_title, chart.note, data_source, lang)
