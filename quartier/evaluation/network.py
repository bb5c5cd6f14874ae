"""Sensor network indicators: pure math on per-datastream and per-Thing summaries.

Input interfaces:

Streams, one row per datastream:
    ``datastream_id``, ``district_code``, ``received`` (readings in the window),
    ``interval_s`` (expected seconds between readings; NaN: unknown, the stream is left out),
    ``active_from`` (first reading ever, tz-aware; NaT: never reported).
Things, one row per Thing (sensor):
    ``thing_id``, ``district_code``, ``last_seen`` (latest reading of any of its datastreams,
    tz-aware; NaT: never reported).

Rules:

- availability: expected readings of a stream in the window ``[start, end)`` are
  ``ceil((end - max(start, active_from)) / interval_s)``; received readings count up to the
  expected number; the scope's availability is 100 · Σ counted / Σ expected;
- a Thing is stale when its latest reading is older than ``stale_after`` (or it never reported);
- data freshness: the median age in minutes of the latest reading of the Things that reported
  within ``active_within`` (longer silent Things count as stale, not in the median).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from quartier.evaluation.scopes import ScopeResult, Scopes, per_scope, ratio

STALE_AFTER = timedelta(hours=1)
ACTIVE_WITHIN = timedelta(days=30)


def availability(
    streams: pd.DataFrame, scopes: Scopes, start: datetime, end: datetime
) -> list[ScopeResult]:
    """Share (%) of expected readings received in ``[start, end)``; numerator and denominator are
    readings (counted, expected)."""
    missing = {"datastream_id", "district_code", "received", "interval_s", "active_from"} - set(
        streams.columns
    )
    if missing:
        raise ValueError(f"streams lack columns: {', '.join(sorted(missing))}")
    interval = pd.to_numeric(streams["interval_s"], errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    active = pd.to_datetime(streams["active_from"], utc=True)
    begin = active.where(active > pd.Timestamp(start), pd.Timestamp(start))
    seconds = (
        (pd.Timestamp(end) - begin).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
    )
    usable = np.isfinite(interval) & (interval > 0) & np.isfinite(seconds) & (seconds > 0)
    expected = np.where(
        usable, np.ceil(np.where(usable, seconds, 0) / np.where(usable, interval, 1)), 0
    )
    received = (
        pd.to_numeric(streams["received"], errors="coerce").fillna(0).to_numpy(dtype=np.float64)
    )
    frame = pd.DataFrame(
        {
            "district_code": streams["district_code"],
            "usable": usable,
            "expected": expected,
            "counted": np.minimum(received, expected),
        }
    )

    def measure(
        part: pd.DataFrame,
    ) -> tuple[float | None, float | None, float | None, dict[str, Any]]:
        exp = float(part["expected"].sum())
        got = float(part["counted"].sum())
        return (
            ratio(got, exp),
            got,
            exp,
            {
                "streams": int(part["usable"].sum()),
                "streams_unknown_interval": int((~part["usable"]).sum()),
            },
        )

    return per_scope(frame, scopes, measure)


def _things(things: pd.DataFrame, now: datetime) -> pd.DataFrame:
    missing = {"thing_id", "district_code", "last_seen"} - set(things.columns)
    if missing:
        raise ValueError(f"things lack columns: {', '.join(sorted(missing))}")
    last = pd.to_datetime(things["last_seen"], utc=True)
    age = (pd.Timestamp(now) - last).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.DataFrame({"district_code": things["district_code"], "age_s": age})


def stale_sensors(
    things: pd.DataFrame, scopes: Scopes, now: datetime, stale_after: timedelta = STALE_AFTER
) -> list[ScopeResult]:
    """Number of stale Things (see the module rules); the share (%) in ``details["share"]``.
    Numerator: stale Things, denominator: all Things."""
    frame = _things(things, now)
    limit = stale_after.total_seconds()

    def measure(
        part: pd.DataFrame,
    ) -> tuple[float | None, float | None, float | None, dict[str, Any]]:
        stale = float((~(part["age_s"] <= limit)).sum())  # NaN (never seen) counts as stale
        total = float(len(part))
        if total == 0:
            return None, 0.0, 0.0, {}
        return stale, stale, total, {"share": ratio(stale, total)}

    return per_scope(frame, scopes, measure)


def freshness(
    things: pd.DataFrame, scopes: Scopes, now: datetime, active_within: timedelta = ACTIVE_WITHIN
) -> list[ScopeResult]:
    """Median age (minutes) of the latest reading of the Things active within ``active_within``.
    Denominator: the active Things."""
    frame = _things(things, now)
    limit = active_within.total_seconds()

    def measure(
        part: pd.DataFrame,
    ) -> tuple[float | None, float | None, float | None, dict[str, Any]]:
        ages = part.loc[part["age_s"] <= limit, "age_s"]
        if ages.empty:
            return None, None, 0.0, {}
        return float(ages.median() / 60.0), None, float(len(ages)), {}

    return per_scope(frame, scopes, measure)
