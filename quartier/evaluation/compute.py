"""Compute catalogued indicators from the store as of a moment: the thin I/O around the pure math.

Each family (speed tests, broadband, mobile, environment, sensor network) is loaded once and
feeds all of its indicators. A family without data yields a note ("no data: why") per indicator
instead of values, so callers can tell "0" from "not measured". Manual indicators are not
computed; their values come from :mod:`quartier.evaluation.storage`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pandas as pd

from quartier.evaluation import coverage_indicators, environment, network, sources
from quartier.evaluation.indicators import (
    CATALOGUE,
    IndicatorValue,
    gigabit_cell_share_by_district,
    to_values,
)
from quartier.evaluation.scopes import ScopeResult, Scopes
from quartier.geo import grid, speedtest_cells
from quartier.geo import io as geo_io
from quartier.store.db import Conn

log = logging.getLogger(__name__)

ROLLING = timedelta(days=365)
AVAILABILITY_WINDOW = timedelta(hours=24)
HourlySource = Literal["raw", "rollup"]


@dataclass
class Computation:
    """Values computed as of ``as_of``, and for indicators without values, why."""

    as_of: datetime
    values: list[IndicatorValue] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)


def year_start(now: datetime, tz: str = environment.LOCAL_TZ) -> datetime:
    """Midnight of 1 January (local time) of the year ``now`` lies in."""
    local = pd.Timestamp(now).tz_convert(tz)
    start: datetime = pd.Timestamp(year=local.year, month=1, day=1, tz=tz).to_pydatetime()
    return start


def _speedtest(conn: Conn, now: datetime, out: Computation) -> None:
    districts = geo_io.load_districts(conn, "stadtbezirk")
    if districts.empty:
        out.notes["gigabit_cell_share"] = "no Stadtbezirke in the district table"
        return
    tests = geo_io.load_speedtests(conn, until=now)
    cells = speedtest_cells.classify_cells(tests, districts)
    first = tests["measured_at"].min() if len(tests) else None
    last = tests["measured_at"].max() if len(tests) else None
    in_city = cells["district_code"].notna().to_numpy()
    provenance: dict[str, Any] = {
        "source": "speedtest",
        "tests_used": int(cells.loc[in_city, "n_tests"].sum()),
        "tests_loaded": len(tests),
        "data_from": first.isoformat() if first is not None else None,
        "data_to": last.isoformat() if last is not None else None,
        "sources": sorted(str(v) for v in tests["source"].dropna().unique()),
        "cells_measured": int(in_city.sum()),
        "grid": f"INSPIRE {grid.CELL_SIZE_M} m ({grid.GRID_CRS})",
        "cell_value": "median download_mbps",
        "district_assignment": "Stadtbezirk polygon containing the cell centre",
    }
    out.values += gigabit_cell_share_by_district(
        cells,
        districts,
        period_start=first.to_pydatetime() if first is not None else None,
        period_end=now,
        computed_at=now,
        provenance=provenance,
    )


def _broadband(conn: Conn, scopes: Scopes, now: datetime, out: Computation) -> None:
    ids = [d.id for d in CATALOGUE.values() if d.family == "broadband"]
    cells, prov, reason = sources.load_broadband_cells(conn)
    if cells is None:
        out.notes.update({i: f"no data: {reason}" for i in ids})
        return
    results = {
        "bb_households_30": coverage_indicators.households_with_speed(cells, scopes, 30),
        "bb_households_100": coverage_indicators.households_with_speed(cells, scopes, 100),
        "bb_households_1000": coverage_indicators.households_with_speed(cells, scopes, 1000),
        "bb_households_fibre": coverage_indicators.households_with_fibre(cells, scopes),
        "bb_households_white": coverage_indicators.households_in_class(cells, scopes, "white"),
        "bb_households_grey": coverage_indicators.households_in_class(cells, scopes, "grey"),
        "bb_households_dark_grey": coverage_indicators.households_in_class(
            cells, scopes, "dark_grey"
        ),
    }
    for key, res in results.items():
        out.values += to_values(
            CATALOGUE[key], res, scopes, period_start=None, period_end=now, computed_at=now,
            provenance=prov,
        )  # fmt: skip


def _mobile(conn: Conn, scopes: Scopes, now: datetime, out: Computation) -> None:
    ids = [d.id for d in CATALOGUE.values() if d.family == "mobile"]
    frames, prov, reason = sources.load_mobile(conn)
    if frames is None:
        out.notes.update({i: f"no data: {reason}" for i in ids})
        return
    cells, offers = frames
    results = {
        "mobile_4g_area_share": coverage_indicators.area_with_technology(
            cells, offers, scopes, "4g"
        ),
        "mobile_5g_area_share": coverage_indicators.area_with_technology(
            cells, offers, scopes, "5g"
        ),
        "mobile_dead_zone_area": coverage_indicators.dead_zone_area(cells, offers, scopes),
    }
    for key, res in results.items():
        out.values += to_values(
            CATALOGUE[key], res, scopes, period_start=None, period_end=now, computed_at=now,
            provenance=prov,
        )  # fmt: skip


def _environment(
    conn: Conn, scopes: Scopes, now: datetime, out: Computation, hourly_from: HourlySource
) -> None:
    if hourly_from == "rollup":
        _environment_in_sql(conn, scopes, now, out)
        return
    y0 = year_start(now)
    r0 = now - ROLLING
    for q in ("pm25", "pm10", "no2"):
        hourly, stations, prov = sources.load_hourly(conn, q, min(y0, r0), now)
        if hourly.empty:
            _no_air_data(q, now, out)
            continue
        for kind, start in (("annual", y0), ("rolling", r0)):
            res = environment.mean_concentration(hourly, stations, scopes, start, now)
            _mean_values(q, kind, res, scopes, start, now, prov, out)
        if q in EXCEEDANCE:
            threshold = EXCEEDANCE[q][1]
            res = environment.exceedance_days(hourly, stations, scopes, y0, now, threshold)
            _exceedance_values(q, res, scopes, y0, now, prov, out)
    hourly, stations, prov = sources.load_hourly(conn, "noise_laeq", y0, now, energetic=True)
    if hourly.empty:
        out.notes["noise_lden_over_55_share"] = "no data: no noise readings this year"
        return
    res = environment.noise_share_over(hourly, stations, scopes, y0, now, 55.0)
    _noise_values(res, scopes, y0, now, prov, out)


#: the exceedance-day indicator and its daily-mean threshold (µg/m³) per quantity
EXCEEDANCE = {"pm10": ("pm10_days_over_50", 50.0), "pm25": ("pm25_days_over_who", 15.0)}


def _environment_in_sql(conn: Conn, scopes: Scopes, now: datetime, out: Computation) -> None:
    """The environment family with the heavy part in PostgreSQL: daily means per station from
    the 1 h rollup (:func:`sources.load_daily_rollup`, one query per period so each period's
    edge days count only their hours inside it) and the noise period levels
    (:func:`sources.load_noise_periods`); the same values as the raw path (tested)."""
    y0 = year_start(now)
    r0 = now - ROLLING
    tz = environment.LOCAL_TZ
    for q in ("pm25", "pm10", "no2"):
        annual, stations, prov_a = sources.load_daily_rollup(conn, q, y0, now, tz=tz)
        rolling, _, prov_r = sources.load_daily_rollup(conn, q, r0, now, tz=tz)
        if annual.empty and rolling.empty:
            _no_air_data(q, now, out)
            continue
        for kind, start, daily, prov in (
            ("annual", y0, annual, prov_a),
            ("rolling", r0, rolling, prov_r),
        ):
            res = environment.mean_concentration_of_days(daily, stations, scopes)
            _mean_values(q, kind, res, scopes, start, now, prov, out)
        if q in EXCEEDANCE:
            res = environment.exceedance_days_of_days(annual, stations, scopes, EXCEEDANCE[q][1])
            _exceedance_values(q, res, scopes, y0, now, prov_a, out)
    periods, stations, prov = sources.load_noise_periods(conn, "noise_laeq", y0, now, tz=tz)
    if periods.empty:
        out.notes["noise_lden_over_55_share"] = "no data: no noise readings this year"
        return
    values = environment.lden_of_periods(periods)
    res = environment.noise_share_of_lden(values, stations, scopes, 55.0)
    _noise_values(res, scopes, y0, now, {**prov, "hourly": "energetic mean"}, out)


def _no_air_data(q: str, now: datetime, out: Computation) -> None:
    for kind in ("annual", "rolling"):
        out.notes[f"{q}_{kind}_mean"] = f"no data: no {q} readings before {now:%Y-%m-%d}"
    if q in EXCEEDANCE:
        out.notes[EXCEEDANCE[q][0]] = f"no data: no {q} readings"


def _mean_values(
    q: str,
    kind: str,
    res: list[ScopeResult],
    scopes: Scopes,
    start: datetime,
    now: datetime,
    prov: dict[str, Any],
    out: Computation,
) -> None:
    out.values += to_values(
        CATALOGUE[f"{q}_{kind}_mean"], res, scopes, period_start=start, period_end=now,
        computed_at=now, provenance={**prov, "method": "mean of valid daily means"},
    )  # fmt: skip


def _exceedance_values(
    q: str,
    res: list[ScopeResult],
    scopes: Scopes,
    y0: datetime,
    now: datetime,
    prov: dict[str, Any],
    out: Computation,
) -> None:
    key, threshold = EXCEEDANCE[q]
    out.values += to_values(
        CATALOGUE[key], res, scopes, period_start=y0, period_end=now, computed_at=now,
        provenance={**prov, "threshold_ug_m3": threshold},
    )  # fmt: skip


def _noise_values(
    res: list[ScopeResult],
    scopes: Scopes,
    y0: datetime,
    now: datetime,
    prov: dict[str, Any],
    out: Computation,
) -> None:
    out.values += to_values(
        CATALOGUE["noise_lden_over_55_share"], res, scopes, period_start=y0, period_end=now,
        computed_at=now, provenance={**prov, "limit_db": 55.0, "hourly": "energetic mean"},
    )  # fmt: skip


def _network(conn: Conn, scopes: Scopes, now: datetime, out: Computation) -> None:
    start = now - AVAILABILITY_WINDOW
    streams = sources.load_streams(conn, start, now)
    things = sources.load_things(conn, now)
    if things.empty:
        for i in ("sensor_availability", "sensor_stale_count", "sensor_data_freshness"):
            out.notes[i] = "no data: no sensors registered"
        return
    prov = {"source": "observation", "things": len(things), "datastreams": len(streams)}
    out.values += to_values(
        CATALOGUE["sensor_availability"], network.availability(streams, scopes, start, now),
        scopes, period_start=start, period_end=now, computed_at=now,
        provenance={**prov, "window_hours": 24},
    )  # fmt: skip
    out.values += to_values(
        CATALOGUE["sensor_stale_count"], network.stale_sensors(things, scopes, now), scopes,
        period_start=None, period_end=now, computed_at=now,
        provenance={**prov, "stale_after_minutes": network.STALE_AFTER.total_seconds() / 60},
    )  # fmt: skip
    out.values += to_values(
        CATALOGUE["sensor_data_freshness"], network.freshness(things, scopes, now), scopes,
        period_start=None, period_end=now, computed_at=now,
        provenance={**prov, "active_within_days": network.ACTIVE_WITHIN.days},
    )  # fmt: skip


def compute(
    conn: Conn,
    now: datetime,
    ids: Collection[str] | None = None,
    *,
    hourly_from: HourlySource = "raw",
) -> Computation:
    """Values of the computed indicators (all, or the families of ``ids``) as of ``now``.

    ``hourly_from``: the environment family from the raw rows in Python (the clear path, the
    reference) or with its heavy part in PostgreSQL (``"rollup"``: daily air-quality means from
    the 1 h rollup, noise period levels from raw rows, which the rollups cannot give: they keep
    arithmetic, not energetic sums); the same values (``tests/test_indicators_rollup.py``). The
    stored current values and the evaluation use ``"rollup"``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    wanted = set(CATALOGUE) if ids is None else set(ids)
    families = {CATALOGUE[i].family for i in wanted if i in CATALOGUE}
    out = Computation(as_of=now)
    scopes = sources.load_scopes(conn)
    if "speedtest" in families:
        _speedtest(conn, now, out)
    if "broadband" in families:
        _broadband(conn, scopes, now, out)
    if "mobile" in families:
        _mobile(conn, scopes, now, out)
    if "environment" in families:
        _environment(conn, scopes, now, out, hourly_from)
    if "network" in families:
        _network(conn, scopes, now, out)
    out.values = [v for v in out.values if v.indicator_id in wanted]
    out.notes = {k: v for k, v in out.notes.items() if k in wanted}
    log.info("computed %d indicator values as of %s", len(out.values), now.isoformat())
    return out


def compute_indicators(conn: Conn, now: datetime) -> list[IndicatorValue]:
    """Every computed indicator's values as of ``now`` (tz-aware)."""
    return compute(conn, now).values
