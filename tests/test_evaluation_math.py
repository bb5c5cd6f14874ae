"""Indicator math on small hand-made frames, each expectation computed by hand in the comments."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from quartier.evaluation import coverage_indicators as coverage
from quartier.evaluation import environment, network
from quartier.evaluation.indicators import CATALOGUE, to_values
from quartier.evaluation.scopes import Scopes

SCOPES = Scopes("05315000", "Köln", (("1", "Innenstadt"), ("2", "Rodenkirchen"), ("3", "Porz")))


def _by(results, variant=""):
    return {r.scope_code: r for r in results if r.variant == variant}


# ------------------------------------------------------------------------------ broadband


def _bb() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cell_id": ["a", "b", "c", "d", "e", "f"],
            "district_code": pd.Series(["1", "1", "1", "2", "2", None], dtype=object),
            "households": [10, 30, 60, 50, 0, 100],
            "max_download_mbps": [16, 100, 1000, 250, 1000, np.nan],
            "fibre": [False, False, True, False, True, None],
            "funding_class": ["white", "grey", "gigabit", "dark_grey", "gigabit", None],
        }
    )


def test_household_speed_shares_by_hand() -> None:
    # city: 250 households; >=30: b 30 + c 60 + d 50 = 140 -> 56 %; f has no known offer
    r30 = _by(coverage.households_with_speed(_bb(), SCOPES, 30))
    assert r30["05315000"].value == pytest.approx(56.0)
    assert (r30["05315000"].numerator, r30["05315000"].denominator) == (140, 250)
    # district 1: 100 households, >= 30: 90 -> 90 %; district 2: 50 of 50 (e has none) -> 100 %
    assert r30["1"].value == pytest.approx(90.0)
    assert r30["2"].value == pytest.approx(100.0)
    assert r30["3"].value is None and r30["3"].denominator == 0  # no households: no data
    r100 = _by(coverage.households_with_speed(_bb(), SCOPES, 100))
    assert r100["1"].value == pytest.approx(90.0)  # 100 Mbit/s exactly counts
    r1000 = _by(coverage.households_with_speed(_bb(), SCOPES, 1000))
    assert r1000["05315000"].value == pytest.approx(100 * 60 / 250)  # 24 %
    assert r1000["2"].value == 0.0  # e has gigabit but no households


def test_fibre_and_funding_classes_by_hand() -> None:
    fibre = _by(coverage.households_with_fibre(_bb(), SCOPES))
    assert fibre["05315000"].value == pytest.approx(24.0)  # c: 60 of 250
    white = _by(coverage.households_in_class(_bb(), SCOPES, "white"))
    assert white["05315000"].numerator == 10 and white["05315000"].value == pytest.approx(4.0)
    grey = _by(coverage.households_in_class(_bb(), SCOPES, "grey"))
    assert grey["1"].value == pytest.approx(30.0)
    dark = _by(coverage.households_in_class(_bb(), SCOPES, "dark_grey"))
    assert dark["2"].value == pytest.approx(100.0) and dark["1"].value == 0.0
    with pytest.raises(ValueError, match="funding class"):
        coverage.households_in_class(_bb(), SCOPES, "pink")
    with pytest.raises(ValueError, match="fibre"):
        coverage.households_with_fibre(_bb().drop(columns="fibre"), SCOPES)


# ------------------------------------------------------------------------------ mobile


def _mobile() -> tuple[pd.DataFrame, pd.DataFrame]:
    cells = pd.DataFrame(
        {
            "cell_id": ["a", "b", "c", "d"],
            "district_code": pd.Series(["1", "1", "2", "2"], dtype=object),
            "area_m2": [10_000.0, 10_000.0, 10_000.0, 30_000.0],
        }
    )
    offers = pd.DataFrame(
        {
            "cell_id": ["a", "a", "b", "c"],
            "operator": ["Telekom", "Vodafone", "Vodafone", "Telekom"],
            "technology": ["5g", "4g", "3g", "4G"],
        }
    )
    return cells, offers


def test_mobile_area_shares_by_hand() -> None:
    cells, offers = _mobile()
    r4 = coverage.area_with_technology(cells, offers, SCOPES, "4g")
    any4 = _by(r4)
    # 4G or better: a (5G, 4G) and c (4G) -> 20 000 of 60 000 m² -> 33.3 %
    assert any4["05315000"].value == pytest.approx(100 / 3)
    assert any4["05315000"].numerator == pytest.approx(0.02)  # km²
    assert any4["1"].value == pytest.approx(50.0)  # a of a, b
    assert any4["2"].value == pytest.approx(25.0)  # c of c, d (10 000 of 40 000)
    telekom = _by(r4, "operator:Telekom")
    vodafone = _by(r4, "operator:Vodafone")
    assert telekom["05315000"].value == pytest.approx(100 / 3)  # a (5G) and c
    assert vodafone["05315000"].value == pytest.approx(100 / 6)  # a only (b is 3G)
    r5 = _by(coverage.area_with_technology(cells, offers, SCOPES, "5g"))
    assert r5["05315000"].value == pytest.approx(100 / 6)
    assert r5["3"].value is None


def test_dead_zone_area_by_hand() -> None:
    cells, offers = _mobile()
    dead = _by(coverage.dead_zone_area(cells, offers, SCOPES))
    # no 4G or 5G: b (3G only, 10 000 m²) and d (nothing, 30 000 m²) of 60 000 m²
    assert dead["05315000"].value == pytest.approx(0.04)
    assert dead["05315000"].details["share"] == pytest.approx(200 / 3)
    assert dead["1"].value == pytest.approx(0.01)
    assert dead["3"].value is None


# ------------------------------------------------------------------------------ air quality

DAY = datetime(2026, 3, 2, tzinfo=UTC)  # 01:00 local on 2 March (CET = UTC+1)


def _hours(ds: int, start: datetime, values: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "datastream_id": ds,
            "hour": [start + timedelta(hours=i) for i in range(len(values))],
            "value": values,
        }
    )


def _local_day(ds: int, day: int, values: list[float]) -> pd.DataFrame:
    # local midnight of 2026-03-<day> is 23:00 UTC the day before
    return _hours(ds, datetime(2026, 3, day, tzinfo=UTC) - timedelta(hours=1), values)


STATIONS = pd.DataFrame(
    {"datastream_id": [1, 2, 3], "district_code": pd.Series(["1", "1", "2"], dtype=object)}
)
PERIOD = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))


def test_daily_means_use_local_days_and_the_coverage_rule() -> None:
    hourly = pd.concat(
        [
            _local_day(1, 2, [10.0] * 12 + [30.0] * 12),  # mean 20, 24 hours
            _local_day(1, 3, [40.0] * 17),  # 17 hours < 18: not valid
            _local_day(1, 4, [5.0] * 18),  # 18 hours: valid
        ]
    )
    daily = environment.daily_means(hourly, *PERIOD)
    assert daily["day"].astype(str).tolist() == ["2026-03-02", "2026-03-04"]
    assert daily["mean"].tolist() == [20.0, 5.0]
    assert daily["hours"].tolist() == [24, 18]


def test_mean_concentration_by_hand() -> None:
    hourly = pd.concat(
        [
            _local_day(1, 2, [20.0] * 24),
            _local_day(1, 3, [40.0] * 24),  # station 1: (20 + 40) / 2 = 30
            _local_day(2, 2, [10.0] * 24),  # station 2: 10
            _local_day(3, 2, [7.0] * 24),  # station 3: 7
            _local_day(9, 2, [99.0] * 24),  # not a known station: ignored
        ]
    )
    res = _by(environment.mean_concentration(hourly, STATIONS, SCOPES, *PERIOD))
    assert res["05315000"].value == pytest.approx((30 + 10 + 7) / 3)
    assert res["05315000"].denominator == 3
    assert res["05315000"].details["station_days"] == 4
    assert res["1"].value == pytest.approx(20.0)  # (30 + 10) / 2
    assert res["2"].value == pytest.approx(7.0)
    assert res["3"].value is None
    # the period bounds apply: only 3 March
    later = _by(
        environment.mean_concentration(
            hourly, STATIONS, SCOPES, datetime(2026, 3, 2, 23, tzinfo=UTC), PERIOD[1]
        )
    )
    assert later["05315000"].value == pytest.approx(40.0)


def test_exceedance_days_by_hand() -> None:
    hourly = pd.concat(
        [
            _local_day(1, 2, [60.0] * 24),  # over
            _local_day(1, 3, [50.0] * 24),  # exactly 50: not over
            _local_day(1, 4, [51.0] * 24),  # over -> station 1: 2 days
            _local_day(2, 2, [70.0] * 24),  # station 2: 1 day
            _local_day(3, 5, [10.0] * 24),  # station 3: 0 days
        ]
    )
    res = _by(environment.exceedance_days(hourly, STATIONS, SCOPES, *PERIOD, 50.0))
    assert res["05315000"].value == 2.0  # the worst station
    assert res["05315000"].details["days_over_by_datastream"] == {"1": 2, "2": 1, "3": 0}
    assert res["2"].value == 0.0
    assert res["3"].value is None


def test_lden_and_noise_share_by_hand() -> None:
    # a constant level L gives Lden = L + 10 log10((12 + 4·10^0.5 + 8·10) / 24) = L + 6.3946
    offset = 10 * math.log10((12 + 4 * 10**0.5 + 8 * 10) / 24)
    start = datetime(2026, 3, 1, 23, tzinfo=UTC)  # local midnight, 2 March
    hourly = pd.concat(
        [
            _hours(1, start, [50.0] * 24),  # 56.39 > 55
            _hours(2, start, [48.0] * 24),  # 54.39
            _hours(3, start, [60.0] * 10),  # only night and morning hours: no Lden
        ]
    )
    values = environment.lden(hourly, *PERIOD)
    assert values[1] == pytest.approx(50 + offset)
    assert values[2] == pytest.approx(48 + offset)
    assert 3 not in values.index
    res = _by(environment.noise_share_over(hourly, STATIONS, SCOPES, *PERIOD, 55.0))
    assert res["05315000"].value == pytest.approx(50.0)
    assert (res["05315000"].numerator, res["05315000"].denominator) == (1, 2)
    assert res["2"].value is None  # station 3 has no Lden


def test_lden_weights_evening_and_night() -> None:
    # day 60 dB for 12 h, evening 50 dB (4 h), night 40 dB (8 h):
    # 10 log10((12·10^6 + 4·10^5.5 + 8·10^5) / 24) = 10 log10(586 038) = 57.68
    start = datetime(2026, 3, 1, 23, tzinfo=UTC)  # 00:00 local
    levels = [40.0] * 7 + [60.0] * 12 + [50.0] * 4 + [40.0]
    values = environment.lden(_hours(1, start, levels), *PERIOD)
    expected = 10 * math.log10((12 * 10**6 + 4 * 10**5.5 + 8 * 10**5) / 24)
    assert values[1] == pytest.approx(expected)
    assert values[1] == pytest.approx(57.68, abs=0.01)


# ------------------------------------------------------------------------------ sensor network

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


def test_availability_by_hand() -> None:
    start = NOW - timedelta(hours=24)
    streams = pd.DataFrame(
        {
            "datastream_id": [1, 2, 3, 4],
            "district_code": pd.Series(["1", "1", "2", None], dtype=object),
            # 1: every 10 min over 24 h -> 144 expected, 144 received (plus duplicates capped)
            # 2: every 10 min since 6 h ago -> 36 expected, 18 received
            # 3: unknown interval -> left out; 4: hourly, 24 expected, 12 received
            "received": [150, 18, 5, 12],
            "interval_s": [600.0, 600.0, np.nan, 3600.0],
            "active_from": pd.to_datetime(
                [NOW - timedelta(days=30), NOW - timedelta(hours=6), NOW, NOW - timedelta(days=2)],
                utc=True,
            ),
        }
    )
    res = _by(network.availability(streams, SCOPES, start, NOW))
    assert (res["05315000"].numerator, res["05315000"].denominator) == (174, 204)
    assert res["05315000"].value == pytest.approx(100 * 174 / 204)
    assert res["1"].value == pytest.approx(100 * 162 / 180)
    assert res["2"].value is None  # only the stream without a known interval
    assert res["2"].details["streams_unknown_interval"] == 1


def test_stale_and_freshness_by_hand() -> None:
    things = pd.DataFrame(
        {
            "thing_id": [1, 2, 3, 4, 5],
            "district_code": pd.Series(["1", "1", "2", "2", None], dtype=object),
            "last_seen": pd.to_datetime(
                [
                    NOW - timedelta(minutes=5),
                    NOW - timedelta(minutes=30),
                    NOW - timedelta(hours=2),  # stale
                    None,  # never reported: stale
                    NOW - timedelta(days=40),  # stale, and not active for freshness
                ],
                utc=True,
            ),
        }
    )
    stale = _by(network.stale_sensors(things, SCOPES, NOW))
    assert stale["05315000"].value == 3 and stale["05315000"].denominator == 5
    assert stale["05315000"].details["share"] == pytest.approx(60.0)
    assert stale["1"].value == 0 and stale["2"].value == 2
    assert stale["3"].value is None
    fresh = _by(network.freshness(things, SCOPES, NOW))
    assert fresh["05315000"].value == pytest.approx(30.0)  # median of 5, 30, 120 minutes
    assert fresh["1"].value == pytest.approx(17.5)
    assert fresh["3"].value is None


def test_to_values_names_scopes_and_keeps_provenance() -> None:
    res = coverage.households_with_speed(_bb(), SCOPES, 30)
    values = to_values(
        CATALOGUE["bb_households_30"], res, SCOPES, period_start=None, period_end=NOW,
        computed_at=NOW, provenance={"coverage_run": 7},
    )  # fmt: skip
    assert [(v.scope_type, v.scope_name) for v in values] == [
        ("city", "Köln"), ("stadtbezirk", "Innenstadt"), ("stadtbezirk", "Rodenkirchen"),
        ("stadtbezirk", "Porz"),
    ]  # fmt: skip
    assert values[0].provenance == {"coverage_run": 7, "cells": 6}
    assert values[0].unit == "%" and values[3].value is None


def test_catalogue_entries_are_complete() -> None:
    required = {
        "bb_households_30", "bb_households_100", "bb_households_1000", "bb_households_fibre",
        "bb_households_white", "bb_households_grey", "bb_households_dark_grey",
        "mobile_4g_area_share", "mobile_5g_area_share", "mobile_dead_zone_area",
        "pm25_annual_mean", "pm10_annual_mean", "no2_annual_mean", "pm25_rolling_mean",
        "pm10_rolling_mean", "no2_rolling_mean", "pm10_days_over_50", "pm25_days_over_who",
        "noise_lden_over_55_share", "sensor_availability", "sensor_stale_count",
        "sensor_data_freshness", "ozg_services_online_share", "digital_skills_participants",
    }  # fmt: skip
    assert required <= set(CATALOGUE)
    for d in CATALOGUE.values():
        assert d.name_de and d.name_en and d.unit and d.description_de and d.description_en
        assert d.scopes and d.time_resolution
        assert (d.origin == "manual") == (d.family == "manual")
