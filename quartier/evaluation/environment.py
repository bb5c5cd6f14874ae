"""Air quality and noise indicators: pure math on hourly values per station.

Input interface:

Hourly values, one row per datastream and hour:
    ``datastream_id``, ``hour`` (start of the hour, tz-aware), ``value`` (the hourly mean; for
    noise the energetic mean ``10·log10(mean(10^(L/10)))`` of the readings of the hour).
Stations, one row per datastream:
    ``datastream_id``, ``district_code`` (NA outside every district).
Or, computed from the hourly values elsewhere (in PostgreSQL, from the rollups: see
``sources.load_daily_rollup`` / ``load_noise_periods``), the daily means (``datastream_id``,
``day``, ``mean``, ``hours``) or the Lden period levels (``datastream_id``, ``period``,
``level``), which the ``*_of_days`` / ``*_of_periods`` functions take.

Rules (following Directive 2008/50/EC and its data-capture rule, days in local time):

- a daily mean is the mean of the hourly values of a calendar day (Europe/Berlin) inside the
  period; it is valid when at least ``min_hours`` (default 18 = 75 %) hourly values exist. At the
  period's edges only the hours that start inside it count: a partial first or last day is
  valid only if it still has ``min_hours`` such hours; an hour the period starts in after its
  first minute is left out, the hour the period ends in counts with the readings before the
  end (for the evaluation "now": the current hour so far);
- a station's period mean is the mean of its valid daily means in the period;
- the mean of a scope is the mean of the period means of its stations;
- exceedance days of a scope: the most days with a valid daily mean above the threshold at any
  one station (limit values are assessed per station);
- Lden per station (Directive 2002/49/EC): energetic means over the period of the day (07–19),
  evening (19–23) and night (23–07) hours, ``Lden = 10·log10((12·10^(Ld/10) + 4·10^((Le+5)/10)
  + 8·10^((Ln+10)/10)) / 24)``; a station needs hours in all three periods.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from quartier.evaluation.scopes import ScopeResult, Scopes, per_scope, ratio

LOCAL_TZ = "Europe/Berlin"
MIN_HOURS = 18
HOURLY_COLUMNS = ("datastream_id", "hour", "value")


def _in_period(hourly: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    missing = set(HOURLY_COLUMNS) - set(hourly.columns)
    if missing:
        raise ValueError(f"hourly values lack columns: {', '.join(sorted(missing))}")
    hours = pd.to_datetime(hourly["hour"], utc=True)
    keep = (hours >= pd.Timestamp(start)) & (hours < pd.Timestamp(end)) & hourly["value"].notna()
    out = hourly.loc[keep.to_numpy(dtype=bool), ["datastream_id", "value"]].copy()
    out["hour"] = hours[keep.to_numpy(dtype=bool)]
    return out


def daily_means(
    hourly: pd.DataFrame,
    start: datetime,
    end: datetime,
    *,
    tz: str = LOCAL_TZ,
    min_hours: int = MIN_HOURS,
) -> pd.DataFrame:
    """Valid daily means in ``[start, end)``: ``datastream_id``, ``day`` (local date), ``mean``,
    ``hours``."""
    part = _in_period(hourly, start, end)
    part["day"] = part["hour"].dt.tz_convert(tz).dt.date
    daily = (
        part.groupby(["datastream_id", "day"], sort=True)
        .agg(mean=("value", "mean"), hours=("value", "size"))
        .reset_index()
    )
    return valid_days(daily, min_hours)


def valid_days(daily: pd.DataFrame, min_hours: int = MIN_HOURS) -> pd.DataFrame:
    """The daily means with at least ``min_hours`` hourly values."""
    return daily[daily["hours"] >= min_hours].reset_index(drop=True)


def _with_stations(per_station: pd.DataFrame, stations: pd.DataFrame) -> pd.DataFrame:
    return per_station.merge(
        stations[["datastream_id", "district_code"]], on="datastream_id", how="inner"
    )


def mean_concentration(
    hourly: pd.DataFrame,
    stations: pd.DataFrame,
    scopes: Scopes,
    start: datetime,
    end: datetime,
    *,
    tz: str = LOCAL_TZ,
    min_hours: int = MIN_HOURS,
) -> list[ScopeResult]:
    """Mean concentration in ``[start, end)`` per scope (see the module rules). Denominator: the
    stations with at least one valid day; ``details``: station-days used."""
    daily = daily_means(hourly, start, end, tz=tz, min_hours=min_hours)
    return mean_concentration_of_days(daily, stations, scopes, min_hours=min_hours)


def mean_concentration_of_days(
    daily: pd.DataFrame, stations: pd.DataFrame, scopes: Scopes, *, min_hours: int = MIN_HOURS
) -> list[ScopeResult]:
    """:func:`mean_concentration` from the daily means of the period (``daily_means``, or
    computed elsewhere; the days with fewer than ``min_hours`` hours are left out)."""
    daily = valid_days(daily, min_hours)
    per_station = (
        daily.groupby("datastream_id").agg(mean=("mean", "mean"), days=("mean", "size"))
    ).reset_index()
    frame = _with_stations(per_station, stations)

    def measure(
        part: pd.DataFrame,
    ) -> tuple[float | None, float | None, float | None, dict[str, Any]]:
        if part.empty:
            return None, None, 0.0, {"station_days": 0}
        return (
            float(part["mean"].mean()),
            None,
            float(len(part)),
            {"station_days": int(part["days"].sum())},
        )

    return per_scope(frame, scopes, measure)


def exceedance_days(
    hourly: pd.DataFrame,
    stations: pd.DataFrame,
    scopes: Scopes,
    start: datetime,
    end: datetime,
    threshold: float,
    *,
    tz: str = LOCAL_TZ,
    min_hours: int = MIN_HOURS,
) -> list[ScopeResult]:
    """Days in ``[start, end)`` with a valid daily mean above ``threshold``, at the station with
    the most such days. Denominator: stations with valid days; ``details``: days per station."""
    daily = daily_means(hourly, start, end, tz=tz, min_hours=min_hours)
    return exceedance_days_of_days(daily, stations, scopes, threshold, min_hours=min_hours)


def exceedance_days_of_days(
    daily: pd.DataFrame,
    stations: pd.DataFrame,
    scopes: Scopes,
    threshold: float,
    *,
    min_hours: int = MIN_HOURS,
) -> list[ScopeResult]:
    """:func:`exceedance_days` from the daily means of the period."""
    daily = valid_days(daily, min_hours).copy()
    daily["over"] = daily["mean"] > threshold
    per_station = (
        daily.groupby("datastream_id").agg(over=("over", "sum"), days=("over", "size"))
    ).reset_index()
    frame = _with_stations(per_station, stations)

    def measure(
        part: pd.DataFrame,
    ) -> tuple[float | None, float | None, float | None, dict[str, Any]]:
        if part.empty:
            return None, None, 0.0, {}
        worst = float(part["over"].max())
        per = {str(k): int(v) for k, v in zip(part["datastream_id"], part["over"], strict=True)}
        return worst, worst, float(len(part)), {"days_over_by_datastream": per}

    return per_scope(frame, scopes, measure)


def _energetic_mean(levels: pd.Series) -> float:
    return float(10.0 * np.log10(np.mean(np.power(10.0, levels.to_numpy(dtype=np.float64) / 10.0))))


def lden(hourly: pd.DataFrame, start: datetime, end: datetime, *, tz: str = LOCAL_TZ) -> pd.Series:
    """Lden (dB) per ``datastream_id`` over ``[start, end)``; stations lacking day, evening or
    night hours are left out."""
    part = _in_period(hourly, start, end)
    local_hour = part["hour"].dt.tz_convert(tz).dt.hour
    part["period"] = np.select(
        [(local_hour >= 7) & (local_hour < 19), (local_hour >= 19) & (local_hour < 23)],
        ["d", "e"],
        default="n",
    )
    levels = part.groupby(["datastream_id", "period"])["value"].apply(_energetic_mean)
    return lden_of_periods(levels.rename("level").reset_index())


def lden_of_periods(periods: pd.DataFrame) -> pd.Series:
    """Lden (dB) per ``datastream_id`` from the energetic mean ``level`` of each of its periods
    (``period`` d, e, n); stations lacking one are left out."""
    if periods.empty:
        return pd.Series([], dtype=np.float64, name="lden")
    levels = periods.pivot_table(
        index="datastream_id", columns="period", values="level", aggfunc="first"
    )
    levels = levels.reindex(columns=["d", "e", "n"]).dropna()
    if levels.empty:
        return pd.Series([], dtype=np.float64, name="lden")
    power = (
        12 * np.power(10.0, levels["d"] / 10)
        + 4 * np.power(10.0, (levels["e"] + 5) / 10)
        + 8 * np.power(10.0, (levels["n"] + 10) / 10)
    ) / 24
    return pd.Series(10 * np.log10(power), name="lden")


def noise_share_over(
    hourly: pd.DataFrame,
    stations: pd.DataFrame,
    scopes: Scopes,
    start: datetime,
    end: datetime,
    limit_db: float = 55.0,
    *,
    tz: str = LOCAL_TZ,
) -> list[ScopeResult]:
    """Share (%) of noise stations whose Lden over ``[start, end)`` exceeds ``limit_db``.
    Numerator: stations over the limit, denominator: stations with an Lden."""
    return noise_share_of_lden(lden(hourly, start, end, tz=tz), stations, scopes, limit_db)


def noise_share_of_lden(
    values: pd.Series, stations: pd.DataFrame, scopes: Scopes, limit_db: float = 55.0
) -> list[ScopeResult]:
    """:func:`noise_share_over` from the Lden per station (``lden`` or ``lden_of_periods``)."""
    per_station = pd.DataFrame({"datastream_id": values.index, "lden": values.to_numpy()})
    frame = _with_stations(per_station, stations)

    def measure(
        part: pd.DataFrame,
    ) -> tuple[float | None, float | None, float | None, dict[str, Any]]:
        over = float((part["lden"] > limit_db).sum())
        per = {
            str(k): round(float(v), 2)
            for k, v in zip(part["datastream_id"], part["lden"], strict=True)
        }
        return ratio(over, float(len(part))), over, float(len(part)), {"lden_by_datastream": per}

    return per_scope(frame, scopes, measure)
