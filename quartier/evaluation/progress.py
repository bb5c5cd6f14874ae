"""Progress toward a target, trend, projection and status of one KPI: pure math on plain data.

Definitions (``b`` baseline, ``t`` target, ``x`` a value):

- *progress* of a value: ``(x - b) / (t - b)`` (1 = target reached; may be < 0 or > 1); when
  ``t == b`` it is 1 if the value meets the target, else 0;
- *expected progress* at a date: the share of the time from the baseline date to the deadline
  that has passed (0…1);
- a value *meets* the target when ``x >= t`` (direction "increase") or ``x <= t`` ("decrease");
- *trend*: an ordinary least-squares line through the history points dated on or after the
  baseline date, plus the baseline itself unless a point has the baseline's date; it needs two
  distinct dates. The *projection* is the line's value at the deadline; its *confidence band* is
  the 90 % confidence interval of the line there (Student t, n - 2 degrees of freedom; needs at
  least three points).

Status rules, first match wins (documented in docs/evaluation.md):

1. ``no_data``: no value on or before the evaluation date;
2. deadline passed: ``on_track`` if the current value meets the target, else ``off_track``;
3. current value meets the target: ``on_track``, unless the projection falls back behind the
   target (then ``at_risk``);
4. no trend (fewer than two dates): ``on_track`` if progress ≥ expected progress, ``at_risk`` if
   progress ≥ 75 % of the expected progress, else ``off_track``;
5. projection meets the target: ``on_track``;
6. projection misses, but the favourable edge of the confidence band meets it, or the projected
   progress is at least 90 %: ``at_risk``;
7. otherwise ``off_track``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel

Direction = Literal["increase", "decrease"]
Status = Literal["on_track", "at_risk", "off_track", "no_data"]
STATUSES: tuple[Status, ...] = ("on_track", "at_risk", "off_track", "no_data")

CONFIDENCE = 0.90
AT_RISK_PROJECTED_PROGRESS = 0.9
AT_RISK_SCHEDULE_SHARE = 0.75
YEAR_S = 365.25 * 86400

# one-sided 95 % quantiles of Student's t (two-sided 90 % interval), by degrees of freedom
_T95 = {
    1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833,
    10: 1.812, 11: 1.796, 12: 1.782, 13: 1.771, 14: 1.761, 15: 1.753, 16: 1.746, 17: 1.740,
    18: 1.734, 19: 1.729, 20: 1.725, 21: 1.721, 22: 1.717, 23: 1.714, 24: 1.711, 25: 1.708,
    26: 1.706, 27: 1.703, 28: 1.701, 29: 1.699, 30: 1.697, 40: 1.684, 60: 1.671, 120: 1.658,
}  # fmt: skip


def t_quantile(dof: int) -> float:
    """The t quantile for the 90 % band; between table entries the next smaller dof's value
    (slightly wider, on the safe side); 1.645 beyond 120."""
    if dof < 1:
        raise ValueError("need at least one degree of freedom")
    if dof > 120:
        return 1.645
    return _T95[max(k for k in _T95 if k <= dof)]


@dataclass(frozen=True)
class Point:
    at: datetime
    value: float


class Trend(BaseModel):
    """``value(at) = mean_value + slope_per_year * (years(at) - mean_year)``."""

    origin: datetime
    mean_year: float
    mean_value: float
    slope_per_year: float
    n: int
    sxx: float
    residual_sd: float | None  # None with two points

    def years(self, at: datetime) -> float:
        return (at - self.origin).total_seconds() / YEAR_S

    def value(self, at: datetime) -> float:
        return self.mean_value + self.slope_per_year * (self.years(at) - self.mean_year)

    def band(self, at: datetime) -> tuple[float, float] | None:
        """The 90 % confidence interval of the line at ``at`` (None with fewer than 3 points)."""
        if self.residual_sd is None:
            return None
        x = self.years(at)
        se = self.residual_sd * math.sqrt(1 / self.n + (x - self.mean_year) ** 2 / self.sxx)
        half = t_quantile(self.n - 2) * se
        y = self.value(at)
        return y - half, y + half


def fit_trend(points: Sequence[Point]) -> Trend | None:
    """Least-squares line through ``points``; None with fewer than two distinct dates."""
    if len({p.at for p in points}) < 2:
        return None
    origin = min(p.at for p in points)
    xs = [(p.at - origin).total_seconds() / YEAR_S for p in points]
    ys = [p.value for p in points]
    n = len(points)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    sd: float | None = None
    if n >= 3:
        sse = sum((y - (my + slope * (x - mx))) ** 2 for x, y in zip(xs, ys, strict=True))
        sd = math.sqrt(sse / (n - 2))
    return Trend(
        origin=origin, mean_year=mx, mean_value=my, slope_per_year=slope, n=n, sxx=sxx,
        residual_sd=sd,
    )  # fmt: skip


def meets(value: float, target: float, direction: Direction) -> bool:
    return value >= target if direction == "increase" else value <= target


def progress_of(value: float, baseline: float, target: float, direction: Direction) -> float:
    if target == baseline:
        return 1.0 if meets(value, target, direction) else 0.0
    return (value - baseline) / (target - baseline)


def clip(x: float, bounds: tuple[float | None, float | None]) -> float:
    lo, hi = bounds
    if lo is not None and x < lo:
        return lo
    if hi is not None and x > hi:
        return hi
    return x


def _as_datetime(d: date | datetime, like: datetime) -> datetime:
    if isinstance(d, datetime):
        return d
    return datetime(d.year, d.month, d.day, tzinfo=like.tzinfo)


class Assessment(BaseModel):
    """Where one KPI stands on the evaluation date."""

    status: Status
    reason: str
    current: float | None = None
    current_at: datetime | None = None
    progress: float | None = None
    expected_progress: float | None = None
    projected: float | None = None
    projected_low: float | None = None
    projected_high: float | None = None
    projected_progress: float | None = None
    slope_per_year: float | None = None
    points_used: int = 0


def assess(
    history: Sequence[Point],
    *,
    baseline: float,
    baseline_at: date | datetime,
    target: float,
    deadline: date | datetime,
    direction: Direction,
    as_of: datetime,
    bounds: tuple[float | None, float | None] = (None, None),
) -> Assessment:
    """Progress, trend, projection and status (module rules) from the history up to ``as_of``.

    ``history``: the KPI's stored values (any order); points after ``as_of`` are ignored.
    ``bounds``: the range the indicator can take (e.g. 0…100 for a share); the projection and
    its band are clipped to it.
    """
    b_at = _as_datetime(baseline_at, as_of)
    end = _as_datetime(deadline, as_of)
    past = sorted((p for p in history if p.at <= as_of), key=lambda p: p.at)
    if not past:
        return Assessment(status="no_data", reason="no value on or before the evaluation date")
    current = past[-1]
    progress = progress_of(current.value, baseline, target, direction)
    span = (end - b_at).total_seconds()
    expected = min(1.0, max(0.0, (as_of - b_at).total_seconds() / span)) if span > 0 else 1.0
    used = [p for p in past if p.at >= b_at]
    if not any(p.at == b_at for p in used):
        used = [Point(b_at, baseline), *used]
    trend = fit_trend(used)
    base = {
        "current": current.value,
        "current_at": current.at,
        "progress": progress,
        "expected_progress": expected,
        "points_used": len(used),
    }
    reached = meets(current.value, target, direction)
    if as_of >= end:
        status: Status = "on_track" if reached else "off_track"
        reason = "deadline passed, target reached" if reached else "deadline passed, target missed"
        return Assessment(status=status, reason=reason, projected=current.value, **base)
    if trend is None:
        if progress >= expected:
            status, reason = "on_track", "no trend yet; progress keeps pace with the schedule"
        elif progress >= AT_RISK_SCHEDULE_SHARE * expected:
            status, reason = "at_risk", "no trend yet; progress slightly behind the schedule"
        else:
            status, reason = "off_track", "no trend yet; progress behind the schedule"
        if reached:
            status, reason = "on_track", "target reached"
        return Assessment(status=status, reason=reason, **base)
    projected = clip(trend.value(end), bounds)
    raw_band = trend.band(end)
    band = None if raw_band is None else (clip(raw_band[0], bounds), clip(raw_band[1], bounds))
    projected_progress = progress_of(projected, baseline, target, direction)
    proj = {
        "projected": projected,
        "projected_low": band[0] if band else None,
        "projected_high": band[1] if band else None,
        "projected_progress": projected_progress,
        "slope_per_year": trend.slope_per_year,
    }
    favourable = None if band is None else (band[1] if direction == "increase" else band[0])
    if reached:
        if meets(projected, target, direction):
            return Assessment(status="on_track", reason="target reached", **base, **proj)
        return Assessment(
            status="at_risk", reason="target reached, but the trend falls back", **base, **proj
        )
    if meets(projected, target, direction):
        return Assessment(
            status="on_track", reason="the trend reaches the target by the deadline",
            **base, **proj,
        )  # fmt: skip
    narrow = projected_progress >= AT_RISK_PROJECTED_PROGRESS
    if narrow or (favourable is not None and meets(favourable, target, direction)):
        return Assessment(
            status="at_risk", reason="the trend misses the target narrowly or uncertainly",
            **base, **proj,
        )  # fmt: skip
    return Assessment(
        status="off_track", reason="the trend misses the target by the deadline", **base, **proj
    )
