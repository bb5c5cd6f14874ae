"""Trend, projection, confidence band and the status rules, with hand-computed expectations."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from quartier.evaluation.progress import Point, assess, fit_trend, progress_of, t_quantile

T0 = datetime(2024, 1, 1, tzinfo=UTC)
YEAR = timedelta(days=365.25)


def _at(years: float) -> datetime:
    return T0 + years * YEAR


# values 10, 22, 28 at years 0, 1, 2: slope 18 / 2 = 9 per year, line 20 + 9 (x - 1);
# residuals -1, +2, -1, SSE 6, s = sqrt(6); at x = 4: 47, se = s sqrt(1/3 + 9/2) = 5.385,
# t(1 dof) = 6.314, half-width 34.00 -> band [13.00, 81.00]
HISTORY = [Point(_at(0), 10.0), Point(_at(1), 22.0), Point(_at(2), 28.0)]


def test_fit_trend_and_band_by_hand() -> None:
    trend = fit_trend(HISTORY)
    assert trend is not None
    assert trend.slope_per_year == pytest.approx(9.0)
    assert trend.value(_at(4)) == pytest.approx(47.0)
    assert trend.residual_sd == pytest.approx(math.sqrt(6))
    band = trend.band(_at(4))
    assert band is not None
    half = 6.314 * math.sqrt(6) * math.sqrt(1 / 3 + 9 / 2)
    assert half == pytest.approx(34.0, abs=0.01)
    assert band == (pytest.approx(47 - half), pytest.approx(47 + half))
    two = fit_trend(HISTORY[:2])
    assert two is not None and two.band(_at(4)) is None  # two points: a line, no band
    assert two.value(_at(4)) == pytest.approx(58.0)
    assert fit_trend([HISTORY[0], Point(_at(0), 11.0)]) is None  # one date only


def test_t_quantiles() -> None:
    assert t_quantile(1) == 6.314
    assert t_quantile(35) == 1.697  # between 30 and 40: the wider one
    assert t_quantile(500) == 1.645
    with pytest.raises(ValueError):
        t_quantile(0)


def test_progress_definition() -> None:
    assert progress_of(30, 10, 50, "increase") == pytest.approx(0.5)
    assert progress_of(30, 40, 20, "decrease") == pytest.approx(0.5)
    assert progress_of(0, 0, 0, "decrease") == 1.0
    assert progress_of(1, 0, 0, "decrease") == 0.0


def _assess(history, target, direction="increase", as_of=_at(2), baseline=10.0, deadline=_at(4)):
    return assess(
        history, baseline=baseline, baseline_at=_at(0), target=target, deadline=deadline,
        direction=direction, as_of=as_of,
    )  # fmt: skip


def test_status_on_track_when_the_projection_meets_the_target() -> None:
    a = _assess(HISTORY, 45.0)
    assert a.status == "on_track"
    assert a.current == 28.0 and a.current_at == _at(2)
    assert a.progress == pytest.approx(18 / 35)
    assert a.expected_progress == pytest.approx(0.5)
    assert a.projected == pytest.approx(47.0)
    assert a.projected_progress == pytest.approx(37 / 35)
    assert a.points_used == 3  # the baseline date has a point: not added twice


def test_status_at_risk_when_missed_narrowly_or_within_the_band() -> None:
    narrow = _assess(HISTORY, 50.0)  # projected progress 37/40 = 0.925 >= 0.9
    assert narrow.status == "at_risk"
    band = _assess(HISTORY, 75.0)  # projected progress 37/65, but the band reaches 81
    assert band.status == "at_risk"
    assert band.projected_high == pytest.approx(81.0, abs=0.01)


def test_status_off_track_when_even_the_band_misses() -> None:
    a = _assess(HISTORY, 100.0)
    assert a.status == "off_track"
    assert a.reason == "the trend misses the target by the deadline"


def test_decreasing_kpis_mirror_the_rules() -> None:
    # 40, 28, 22: line 30 - 9 (x - 1), at x = 4: 3
    down = [Point(_at(0), 40.0), Point(_at(1), 28.0), Point(_at(2), 22.0)]
    assert _assess(down, 5.0, "decrease", baseline=40.0).status == "on_track"
    assert _assess(down, 0.0, "decrease", baseline=40.0).status == "at_risk"  # 37/40 = 0.925
    assert _assess(down, -60.0, "decrease", baseline=40.0).status == "off_track"


def test_target_reached_but_falling_back_is_at_risk() -> None:
    # 10, 60, 52: current 52 meets 50; line 40.67 + 21 (x - 1) rises to 103.67: on track
    rising = [Point(_at(0), 10.0), Point(_at(1), 60.0), Point(_at(2), 52.0)]
    assert _assess(rising, 50.0).status == "on_track"
    # 60, 55, 51: line 55.33 - 4.5 (x - 1) falls to 41.83 at year 4
    falling = [Point(_at(0), 60.0), Point(_at(1), 55.0), Point(_at(2), 51.0)]
    a = _assess(falling, 50.0)
    assert a.status == "at_risk" and a.reason == "target reached, but the trend falls back"


def test_deadline_passed_and_no_data() -> None:
    late = _at(5)
    assert _assess(HISTORY, 25.0, as_of=late).status == "on_track"
    assert _assess(HISTORY, 45.0, as_of=late).status == "off_track"
    assert _assess([], 45.0).status == "no_data"
    assert _assess([Point(_at(3), 99.0)], 45.0).status == "no_data"  # only after as_of


def test_without_a_trend_progress_is_compared_with_the_schedule() -> None:
    # one value at the baseline date only: no trend; half the time gone (expected 0.5)
    only = [Point(_at(0), 30.0)]
    assert _assess(only, 50.0).status == "on_track"  # progress 20/40 = 0.5
    assert _assess(only, 60.0).status == "at_risk"  # 20/50 = 0.4 >= 0.75 * 0.5
    assert _assess(only, 90.0).status == "off_track"  # 20/80 = 0.25


def test_baseline_is_added_to_the_trend_when_no_point_has_its_date() -> None:
    # baseline 10 at year 0, one stored value 28 at year 2: a line 10 + 9 x, 46 at year 4
    a = _assess([Point(_at(2), 28.0)], 46.0)
    assert a.points_used == 2
    assert a.projected == pytest.approx(46.0)
    assert a.status == "on_track"
    assert a.projected_low is None  # two points: no band


def test_projection_and_band_are_clipped_to_the_indicator_range() -> None:
    # 80 -> 60 -> 45 %: line 61.67 - 17.5 (x - 1), at year 6: 61.67 - 87.5 = -25.8 %
    falling = [Point(_at(0), 80.0), Point(_at(1), 60.0), Point(_at(2), 45.0)]
    free = _assess(falling, 100.0, baseline=80.0, deadline=_at(6))
    assert free.projected == pytest.approx(61.6667 - 87.5, abs=1e-3)
    a = assess(
        falling, baseline=80.0, baseline_at=_at(0), target=100.0, deadline=_at(6),
        direction="increase", as_of=_at(2), bounds=(0.0, 100.0),
    )  # fmt: skip
    assert a.projected == 0.0 and a.projected_low == 0.0
    assert a.projected_high is not None and 0 <= a.projected_high <= 100
    assert a.status == "off_track"
