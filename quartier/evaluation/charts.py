"""Static charts for the report (matplotlib, Agg backend, SVG): a KPI's history with baseline,
target line, trend, projection and confidence band; a district map coloured by status.
Every function returns SVG text and keeps no global figure state.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import geopandas as gpd
import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from quartier.evaluation.progress import Point, clip, fit_trend

STATUS_COLOURS = {
    "on_track": "#1a9850",
    "at_risk": "#f39c12",
    "off_track": "#d73027",
    "no_data": "#bdbdbd",
}
_RC: Any = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "svg.hashsalt": "quartier",
    "svg.fonttype": "none",  # text stays text: smaller files, rendered with the page fonts
}


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    with mpl.rc_context(_RC):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    return buf.getvalue()


def _dt(d: date | datetime) -> datetime:
    return d if isinstance(d, datetime) else datetime(d.year, d.month, d.day, tzinfo=UTC)


def decimal_year(t: datetime) -> float:
    """2024-07-02 -> about 2024.5 (the x axis of the charts)."""
    start = datetime(t.year, 1, 1, tzinfo=t.tzinfo or UTC)
    end = datetime(t.year + 1, 1, 1, tzinfo=t.tzinfo or UTC)
    return t.year + (t - start).total_seconds() / (end - start).total_seconds()


def _years(ts: Sequence[datetime]) -> list[float]:
    return [decimal_year(t) for t in ts]


def kpi_chart(
    history: Sequence[tuple[datetime, float]],
    *,
    baseline: float,
    baseline_date: date,
    target: float,
    deadline: date,
    as_of: datetime,
    unit: str,
    labels: Mapping[str, str],
    status: str,
    bounds: tuple[float | None, float | None] = (None, None),
) -> str:
    """History (points), baseline, target line to the deadline, and the trend with its 90 %
    band from the baseline date to the deadline (same fit as ``progress.assess``), clipped to
    ``bounds``."""
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(6.4, 2.6))
        ax = fig.add_subplot()
        b_at, end = _dt(baseline_date), _dt(deadline)
        pts = [Point(t, v) for t, v in history if t <= as_of]
        used = [p for p in pts if p.at >= b_at]
        if not any(p.at == b_at for p in used):
            used = [Point(b_at, baseline), *used]
        trend = fit_trend(used)
        if trend is not None:
            steps = 40
            span = end - b_at
            xs = [b_at + span * (i / steps) for i in range(steps + 1)]
            ax.plot(_years(xs), [clip(trend.value(x), bounds) for x in xs], color="#4575b4", lw=1.2,
                    ls="--", label=labels["trend"])  # fmt: skip
            bands = [trend.band(x) for x in xs]
            if all(b is not None for b in bands):
                lo = [clip(b[0], bounds) for b in bands if b is not None]
                hi = [clip(b[1], bounds) for b in bands if b is not None]
                ax.fill_between(_years(xs), lo, hi, color="#4575b4", alpha=0.15, lw=0,
                                label=labels["band"])  # fmt: skip
            projected = clip(trend.value(end), bounds)
            ax.plot(_years([end]), [projected], marker="D", color="#4575b4", ms=5,
                    label=labels["projection"])  # fmt: skip
        ax.hlines(target, decimal_year(b_at), decimal_year(end), colors=STATUS_COLOURS["on_track"],
                  lw=1.2,
                  label=labels["target"])  # fmt: skip
        ax.plot(_years([b_at]), [baseline], marker="s", color="#666666", ms=5, ls="",
                label=labels["baseline"])  # fmt: skip
        if pts:
            colour = STATUS_COLOURS.get(status, "#333333")
            ax.plot(_years([p.at for p in pts]), [p.value for p in pts], marker="o", ms=3.5,
                    color=colour, lw=1, label=labels["values"])  # fmt: skip
        ax.axvline(decimal_year(as_of), color="#999999", lw=0.8, ls=":")
        ax.set_ylabel(unit)
        first = decimal_year(min([b_at, *(p.at for p in pts)]))
        last = decimal_year(end)
        ax.set_xlim(first - 0.1, last + 0.15)
        ax.set_xticks(list(range(int(first) + (first > int(first)), int(last) + 1)))
        ax.grid(True, axis="y", color="#e0e0e0", lw=0.6)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=7)
        return _svg(fig)


def district_map(
    districts: gpd.GeoDataFrame,
    statuses: Mapping[str, str],
    values: Mapping[str, str],
    *,
    status_labels: Mapping[str, str],
) -> str:
    """The districts (``code``, ``name``, geometry) coloured by KPI status, each labelled with
    its formatted value."""
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(4.6, 4.2))
        ax = fig.add_subplot()
        frame = districts.to_crs(3035)
        frame = frame.set_geometry(frame.geometry.simplify(25))  # metres: plenty for a page map
        colours = [STATUS_COLOURS[statuses.get(str(c), "no_data")] for c in frame["code"]]
        frame.plot(ax=ax, color=colours, edgecolor="white", linewidth=0.8)
        for code, name, geom in zip(frame["code"], frame["name"], frame.geometry, strict=True):
            p = geom.representative_point()
            ax.annotate(f"{name}\n{values.get(str(code), '–')}", (p.x, p.y), ha="center",
                        va="center", fontsize=6.5)  # fmt: skip
        ax.set_axis_off()
        used = [s for s in STATUS_COLOURS if s in set(statuses.values())] or ["no_data"]
        ax.legend(
            handles=[Patch(color=STATUS_COLOURS[s], label=status_labels[s]) for s in used],
            loc="lower left", frameon=False, fontsize=7,
        )  # fmt: skip
        return _svg(fig)
