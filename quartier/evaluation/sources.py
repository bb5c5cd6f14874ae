"""Reads from the store into the frames the pure indicator math takes (thin I/O, parameterised
SQL). Every function takes an open psycopg 3 connection (any row factory) and leaves transaction
handling to the caller.

The broadband and mobile data come from the geo part's coverage analysis (``coverage_run``,
``coverage_cell``, migrations 0010-0014), read here through a small adapter: the tables and the
columns used are checked (``to_regclass``, ``information_schema``) and when something is missing
the adapter returns no frame and the reason, so the indicators report "no data" instead of
failing.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from psycopg.rows import tuple_row

from quartier.evaluation.scopes import DISTRICT_LEVEL, Scopes
from quartier.geo import grid, run_store
from quartier.geo.analysis import covers
from quartier.store.db import Conn
from quartier.store.migrate import storage_path

log = logging.getLogger(__name__)

INTERVAL_HISTORY = timedelta(days=7)


def load_scopes(conn: Conn) -> Scopes:
    """The city and its Stadtbezirke from ``district`` (code "city" if no city row is loaded)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "select level, code, name from district where level in ('city', %s) "
            "order by level, length(code), code",
            (DISTRICT_LEVEL,),
        ).fetchall()
    city = next(((r[1], r[2]) for r in rows if r[0] == "city"), ("city", "Stadt"))
    districts = tuple((str(r[1]), str(r[2])) for r in rows if r[0] == DISTRICT_LEVEL)
    return Scopes(city_code=city[0], city_name=city[1], districts=districts)


# The Stadtbezirk containing a point (first by code on a shared boundary).
_DISTRICT_OF = """
    (select dist.code from district dist
     where dist.level = 'stadtbezirk' and ST_Intersects(dist.geom, {point})
     order by length(dist.code), dist.code limit 1)
"""
_THING_POINT = """
    (select ST_PointOnSurface(l.location) from thing_location tl
     join location l on l.id = tl.location_id
     where tl.thing_id = {thing} order by l.id desc limit 1)
"""


def _hourly_frames(
    conn: Conn, query: str, params: dict[str, Any]
) -> tuple[list[tuple[Any, ...]], pd.DataFrame, pd.DataFrame]:
    """Run an hourly-means query (rows of datastream, hour, value, …) and the stations query:
    the rows, the hourly frame and the datastream → district frame."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(query.encode(), params).fetchall()
        stations = cur.execute(_stations_sql().encode(), params).fetchall()
    hourly = pd.DataFrame(
        {
            "datastream_id": pd.Series([r[0] for r in rows], dtype=np.int64),
            "hour": pd.to_datetime(pd.Series([r[1] for r in rows], dtype=object), utc=True),
            "value": pd.Series([r[2] for r in rows], dtype=np.float64),
        }
    )
    station_frame = pd.DataFrame(
        {
            "datastream_id": pd.Series([r[0] for r in stations], dtype=np.int64),
            "district_code": pd.Series([r[1] for r in stations], dtype=object),
        }
    )
    return rows, hourly, station_frame


def _stations_sql() -> str:
    point = (
        "coalesce(ST_PointOnSurface(d.observed_area), "
        + _THING_POINT.format(thing="d.thing_id")
        + ")"
    )
    return (
        "select d.id, " + _DISTRICT_OF.format(point=point) + " from datastream d "
        "where d.properties->>'quantity' = %(q)s order by d.id"
    )


def load_hourly(
    conn: Conn,
    quantity: str,
    start: datetime,
    end: datetime,
    *,
    energetic: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Hourly values of every datastream of ``quantity`` in ``[start, end)`` (arithmetic means,
    or energetic means for levels in dB), the stations (datastream, Stadtbezirk) and provenance
    (readings used, data range)."""
    mean = "10 * log10(avg(power(10, o.result / 10)))" if energetic else "avg(o.result)"
    query = f"""
        select o.datastream_id, date_trunc('hour', o.phenomenon_time, 'UTC'), {mean}, count(*),
               min(o.phenomenon_time), max(o.phenomenon_time)
        from observation o join datastream d on d.id = o.datastream_id
        where d.properties->>'quantity' = %(q)s and o.result is not null
          and o.phenomenon_time >= %(start)s and o.phenomenon_time < %(end)s
        group by 1, 2 order by 1, 2
    """  # `mean` is one of two fixed expressions, values are parameters
    params = {"q": quantity, "start": start, "end": end}
    rows, hourly, station_frame = _hourly_frames(conn, query, params)
    provenance = {
        "source": "observation",
        "quantity": quantity,
        "readings_used": int(sum(r[3] for r in rows)),
        "datastreams": len(station_frame),
        "data_from": min(r[4] for r in rows).isoformat() if rows else None,
        "data_to": max(r[5] for r in rows).isoformat() if rows else None,
    }
    return hourly, station_frame, provenance


def _hour_ceil(t: datetime) -> datetime:
    floor = t.replace(minute=0, second=0, microsecond=0)
    return floor if floor == t else floor + timedelta(hours=1)


# Hours of the plain path's 1 h rollup not yet recomputed (a dirty 15-minute bucket); TimescaleDB's
# continuous aggregates are real-time, so none there.
_DIRTY_HOURS = """
    select distinct x.datastream_id, date_trunc('hour', x.bucket, 'UTC') as hour
    from observation_dirty x join ds on ds.id = x.datastream_id
    where x.bucket >= %(a)s and x.bucket < %(b)s
"""
_NO_DIRTY = "select null::bigint as datastream_id, null::timestamptz as hour where false"


def _hourly_rollup_sql(conn: Conn) -> str:
    """The hourly means of ``ds`` (a CTE the caller's query must define: the datastreams) in
    ``[start, end)`` as CTEs ending in ``hourly (datastream_id, hour, value, n)``: whole hours
    ``[a, b)`` from the 1 h rollup, the partial hours at both ends and the hours with a pending
    (dirty) 15-minute bucket from the raw rows."""
    return """
        dirty as ({dirty}), rolled as (
            select h.datastream_id, h.bucket, h.s / h.n, h.n
            from observation_1h h join ds on ds.id = h.datastream_id
            where h.bucket >= %(a)s and h.bucket < %(b)s and h.n > 0
              and not exists (select 1 from dirty where dirty.datastream_id = h.datastream_id
                              and dirty.hour = h.bucket)
        ), raw_rows as (
            select o.datastream_id, o.phenomenon_time, o.result from observation o
            join ds on ds.id = o.datastream_id
            where o.result is not null and o.phenomenon_time >= %(start)s
              and o.phenomenon_time < %(a)s
            union all
            select o.datastream_id, o.phenomenon_time, o.result from observation o
            join ds on ds.id = o.datastream_id
            where o.result is not null and o.phenomenon_time >= %(b)s
              and o.phenomenon_time < %(end)s
            union all
            select o.datastream_id, o.phenomenon_time, o.result from dirty
            join observation o on o.datastream_id = dirty.datastream_id
              and o.phenomenon_time >= dirty.hour
              and o.phenomenon_time < dirty.hour + interval '1 hour'
            where o.result is not null
        ), raw as (
            select datastream_id, date_trunc('hour', phenomenon_time, 'UTC'), avg(result),
                   count(*)
            from raw_rows group by 1, 2
        ), hourly (datastream_id, hour, value, n) as (
            select * from rolled union all select * from raw
        )
    """.replace("{dirty}", _NO_DIRTY if storage_path(conn) == "timescaledb" else _DIRTY_HOURS)
    # one of two fixed texts; values are parameters


def _rollup_params(quantity: str, start: datetime, end: datetime) -> dict[str, Any]:
    a = min(max(_hour_ceil(start), start), end)
    b = max(end.replace(minute=0, second=0, microsecond=0), a)
    return {"q": quantity, "start": start, "end": end, "a": a, "b": b}


def load_hourly_rollup(
    conn: Conn, quantity: str, start: datetime, end: datetime
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The same frames as :func:`load_hourly` (arithmetic means), read from the 1 h rollup
    (``observation_1h``: mean = sum / count of numeric results) for the whole hours inside
    ``[start, end)`` whose 15-minute buckets are all rolled up; the partial hours at both ends and
    the hours with a pending (dirty) bucket come from the raw rows, so the result equals
    :func:`load_hourly`'s on the same data."""
    params = _rollup_params(quantity, start, end)
    query = (
        "with ds as (select id from datastream where properties->>'quantity' = %(q)s), "
        + _hourly_rollup_sql(conn)
        + " select * from hourly order by 1, 2"
    )
    rows, hourly, station_frame = _hourly_frames(conn, query, params)
    provenance = {
        "source": "observation_1h",
        "quantity": quantity,
        "readings_used": int(sum(r[3] for r in rows)),
        "datastreams": len(station_frame),
        "data_from": min(r[1] for r in rows).isoformat() if rows else None,
        "data_to": max(r[1] for r in rows).isoformat() if rows else None,
        "rollup_range": [params["a"].isoformat(), params["b"].isoformat()],
        "data_range": "hours with readings (the rollup keeps no reading times)",
    }
    return hourly, station_frame, provenance


def load_daily_rollup(
    conn: Conn, quantity: str, start: datetime, end: datetime, *, tz: str
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Daily means of every datastream of ``quantity`` over ``[start, end)``, computed in
    PostgreSQL from the hourly means of :func:`load_hourly_rollup` (the 1 h rollup, raw rows at
    the edges and for pending buckets): ``datastream_id``, ``day`` (date in ``tz``), ``mean``
    (mean of the day's hourly means in the window), ``hours`` (how many; an hour counts when it
    starts in the window, as in ``environment``'s rule); every day, valid or not
    (``environment.valid_days`` applies the rule). The same numbers as
    ``environment.daily_means`` of the hourly frame, without moving a year of hours into
    Python. Also the stations and provenance."""
    params = {**_rollup_params(quantity, start, end), "tz": tz}
    query = (
        "with ds as (select id from datastream where properties->>'quantity' = %(q)s), "
        + _hourly_rollup_sql(conn)
        + """ select datastream_id, (hour at time zone %(tz)s)::date, avg(value), count(*),
                     sum(n), min(hour), max(hour)
              from hourly where hour >= %(start)s group by 1, 2 order by 1, 2"""
    )
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(query.encode(), params).fetchall()
        stations = cur.execute(_stations_sql().encode(), params).fetchall()
    daily = pd.DataFrame(
        {
            "datastream_id": pd.Series([r[0] for r in rows], dtype=np.int64),
            "day": pd.Series([r[1] for r in rows], dtype=object),
            "mean": pd.Series([r[2] for r in rows], dtype=np.float64),
            "hours": pd.Series([r[3] for r in rows], dtype=np.int64),
        }
    )
    station_frame = pd.DataFrame(
        {
            "datastream_id": pd.Series([r[0] for r in stations], dtype=np.int64),
            "district_code": pd.Series([r[1] for r in stations], dtype=object),
        }
    )
    provenance = {
        "source": "observation_1h",
        "quantity": quantity,
        "readings_used": int(sum(r[4] for r in rows)),
        "datastreams": len(station_frame),
        "data_from": min(r[5] for r in rows).isoformat() if rows else None,
        "data_to": max(r[6] for r in rows).isoformat() if rows else None,
        "rollup_range": [params["a"].isoformat(), params["b"].isoformat()],
        "data_range": "hours with readings (the rollup keeps no reading times)",
        "daily_means": "in PostgreSQL from the hourly means",
    }
    return daily, station_frame, provenance


def load_noise_periods(
    conn: Conn, quantity: str, start: datetime, end: datetime, *, tz: str
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Per datastream of ``quantity`` (levels in dB) and Lden period (``d`` 07–19, ``e`` 19–23,
    ``n`` 23–07 local time in ``tz``): ``level``, the energetic mean of the hourly energetic
    means of ``[start, end)`` (``10·log10(avg over hours of avg over readings of
    10^(L/10))``), and ``hours``. Computed in PostgreSQL from the raw rows: the rollups keep
    arithmetic sums, not energetic ones. The same numbers as the period levels
    :func:`quartier.evaluation.environment.lden` computes from :func:`load_hourly` with
    ``energetic=True``. Also the stations and provenance."""
    query = """
        with hourly as (
            select o.datastream_id, date_trunc('hour', o.phenomenon_time, 'UTC') as h,
                   avg(power(10, o.result / 10)) as p, count(*) as n,
                   min(o.phenomenon_time) as t0, max(o.phenomenon_time) as t1
            from observation o join datastream d on d.id = o.datastream_id
            where d.properties->>'quantity' = %(q)s and o.result is not null
              and o.phenomenon_time >= %(start)s and o.phenomenon_time < %(end)s
            group by 1, 2
            having date_trunc('hour', o.phenomenon_time, 'UTC') >= %(start)s
        ), per as (
            select datastream_id,
                   case when extract(hour from h at time zone %(tz)s) between 7 and 18
                        then 'd'
                        when extract(hour from h at time zone %(tz)s) between 19 and 22
                        then 'e' else 'n' end as period,
                   10 * log10(avg(p)) as level, count(*) as hours,
                   sum(n) as n, min(t0) as t0, max(t1) as t1
            from hourly group by 1, 2
        )
        select datastream_id, period, level, hours, n, t0, t1 from per order by 1, 2
    """
    params = {"q": quantity, "start": start, "end": end, "tz": tz}
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(query.encode(), params).fetchall()
        stations = cur.execute(_stations_sql().encode(), params).fetchall()
    periods = pd.DataFrame(
        {
            "datastream_id": pd.Series([r[0] for r in rows], dtype=np.int64),
            "period": pd.Series([r[1] for r in rows], dtype=object),
            "level": pd.Series([r[2] for r in rows], dtype=np.float64),
            "hours": pd.Series([r[3] for r in rows], dtype=np.int64),
        }
    )
    station_frame = pd.DataFrame(
        {
            "datastream_id": pd.Series([r[0] for r in stations], dtype=np.int64),
            "district_code": pd.Series([r[1] for r in stations], dtype=object),
        }
    )
    provenance = {
        "source": "observation",
        "quantity": quantity,
        "readings_used": int(sum(r[4] for r in rows)),
        "datastreams": len(station_frame),
        "data_from": min(r[5] for r in rows).isoformat() if rows else None,
        "data_to": max(r[6] for r in rows).isoformat() if rows else None,
    }
    return periods, station_frame, provenance


def load_streams(conn: Conn, start: datetime, end: datetime) -> pd.DataFrame:
    """Per datastream: ``datastream_id``, ``district_code``, ``received`` in ``[start, end)``,
    ``interval_s`` (property ``interval_s``, else the median gap over the 7 days before ``end``)
    and ``active_from`` (first reading before ``end``)."""
    point = _THING_POINT.format(thing="d.thing_id")
    query = f"""
        select d.id, {_DISTRICT_OF.format(point=point)},
            (select count(*) from observation o where o.datastream_id = d.id
               and o.phenomenon_time >= %(start)s and o.phenomenon_time < %(end)s),
            coalesce(
              case when d.properties->>'interval_s' ~ '^[0-9]+(\\.[0-9]+)?$'
                   then (d.properties->>'interval_s')::float8 end,
              (select percentile_cont(0.5) within group (order by g.gap) from (
                 select extract(epoch from o.phenomenon_time
                                - lag(o.phenomenon_time) over (order by o.phenomenon_time)) gap
                 from observation o where o.datastream_id = d.id
                   and o.phenomenon_time >= %(hist)s and o.phenomenon_time < %(end)s) g
               where g.gap > 0)),
            (select min(o.phenomenon_time) from observation o where o.datastream_id = d.id
               and o.phenomenon_time < %(end)s)
        from datastream d order by d.id
    """
    params = {"start": start, "end": end, "hist": end - INTERVAL_HISTORY}
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(query.encode(), params).fetchall()
    return pd.DataFrame(
        {
            "datastream_id": pd.Series([r[0] for r in rows], dtype=np.int64),
            "district_code": pd.Series([r[1] for r in rows], dtype=object),
            "received": pd.Series([r[2] for r in rows], dtype=np.int64),
            "interval_s": pd.Series([r[3] for r in rows], dtype=np.float64),
            "active_from": pd.to_datetime(pd.Series([r[4] for r in rows], dtype=object), utc=True),
        }
    )


def load_things(conn: Conn, until: datetime) -> pd.DataFrame:
    """Per Thing: ``thing_id``, ``district_code``, ``last_seen`` (latest reading up to ``until``
    of any of its datastreams; NaT if none)."""
    point = _THING_POINT.format(thing="t.id")
    query = f"""
        select t.id, {_DISTRICT_OF.format(point=point)},
            (select max(m.last) from datastream d cross join lateral (
               select max(o.phenomenon_time) as last from observation o
               where o.datastream_id = d.id and o.phenomenon_time <= %(until)s) m
             where d.thing_id = t.id)
        from thing t order by t.id
    """
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(query.encode(), {"until": until}).fetchall()
    return pd.DataFrame(
        {
            "thing_id": pd.Series([r[0] for r in rows], dtype=np.int64),
            "district_code": pd.Series([r[1] for r in rows], dtype=object),
            "last_seen": pd.to_datetime(pd.Series([r[2] for r in rows], dtype=object), utc=True),
        }
    )


_CELL_COLUMNS = (
    "run_id", "e", "n", "district_code", "households", "best_technology", "max_down_mbps",
    "class_key", "operators_4g", "operators_5g", "dead_zone", "n_signal", "mobile_mask",
)  # fmt: skip
CELL_AREA_M2 = 10_000.0


def _latest_coverage_run(
    conn: Conn,
) -> tuple[tuple[int, datetime, str, list[str], list[str]] | None, str | None]:
    """The current run of the geo part's coverage analysis (:func:`run_store.current_run_id`),
    or why there is none."""
    with conn.cursor(row_factory=tuple_row) as cur:
        found = cur.execute(
            "select to_regclass('coverage_run')::text, to_regclass('coverage_cell')::text"
        ).fetchone()
        if found is None or None in found:
            return None, "the coverage analysis tables do not exist (geo migrations not applied)"
        cols = {
            r[0]
            for r in cur.execute(
                "select column_name from information_schema.columns "
                "where table_schema = current_schema() and table_name = 'coverage_cell'"
            )
        }
        lacking = [c for c in _CELL_COLUMNS if c not in cols]
        if lacking:
            return None, f"coverage_cell lacks columns {', '.join(lacking)}"
        current = run_store.current_run_id(conn)
        run = (
            None
            if current is None
            else cur.execute(
                "select id, created_at, profile, operators, technologies from coverage_run "
                "where id = %s",
                (current,),
            ).fetchone()
        )
    if run is None:
        return None, "no coverage analysis has been run (quartier.geo)"
    return (int(run[0]), run[1], str(run[2]), list(run[3] or []), list(run[4] or [])), None


def _coverage_cells(conn: Conn, run_id: int) -> list[tuple[Any, ...]]:
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "select e, n, district_code, households, best_technology, max_down_mbps, class_key,"
            " operators_4g, operators_5g, dead_zone, n_signal, mobile_mask"
            " from coverage_cell where run_id = %s order by n, e",
            (run_id,),
        ).fetchall()
    ids = grid.cell_ids([r[0] for r in rows], [r[1] for r in rows]).tolist()
    return [(cid, *r[2:]) for cid, r in zip(ids, rows, strict=True)]


def load_broadband_cells(
    conn: Conn,
) -> tuple[pd.DataFrame | None, dict[str, Any], str | None]:
    """Broadband cells (``coverage_indicators.BROADBAND_COLUMNS``) of the newest coverage run, its
    provenance, or None and why. ``fibre``: the cell's best technology is FTTH or FTTB."""
    run, reason = _latest_coverage_run(conn)
    if run is None:
        return None, {}, reason
    rows = _coverage_cells(conn, run[0])
    if not rows:
        return None, {}, f"coverage run {run[0]} has no cells"
    frame = pd.DataFrame(
        {
            "cell_id": [r[0] for r in rows],
            "district_code": pd.Series([r[1] for r in rows], dtype=object),
            "households": pd.Series([r[2] for r in rows], dtype=np.float64),
            "max_download_mbps": pd.Series([r[4] for r in rows], dtype=np.float64),
            "fibre": [r[3] in ("ftth", "fttb") for r in rows],
            "funding_class": pd.Series([r[5] for r in rows], dtype=object),
        }
    )
    prov = {
        "source": "coverage_cell",
        "coverage_run": run[0],
        "coverage_run_at": run[1].isoformat(),
        "profile": run[2],
        "cells": len(frame),
    }
    return frame, prov, None


def load_mobile(
    conn: Conn,
) -> tuple[tuple[pd.DataFrame, pd.DataFrame] | None, dict[str, Any], str | None]:
    """Mobile cells (``coverage_indicators.MOBILE_CELL_COLUMNS``, 100 m x 100 m each) and offers
    of the newest coverage run. The analysed area is the cells with signal measurements, as in the
    geo analysis; offers come from ``mobile_mask`` (decoded by ``quartier.geo.analysis.covers``)."""
    run, reason = _latest_coverage_run(conn)
    if run is None:
        return None, {}, reason
    rows = [r for r in _coverage_cells(conn, run[0]) if r[9] and r[9] > 0]
    if not rows:
        return None, {}, f"coverage run {run[0]} has no cells with signal measurements"
    operators, technologies = run[3], [t.lower() for t in run[4]]
    cells = pd.DataFrame(
        {
            "cell_id": [r[0] for r in rows],
            "district_code": pd.Series([r[1] for r in rows], dtype=object),
            "area_m2": CELL_AREA_M2,
        }
    )
    masks = np.array([int(r[10] or 0) for r in rows], dtype=np.int64)
    hits = [
        (k, i * len(technologies) + j, op, tech)
        for i, op in enumerate(operators)
        for j, tech in enumerate(technologies)
        for k in np.flatnonzero(covers(masks, i, j, len(technologies))).tolist()
    ]
    offers = [(rows[k][0], op, tech) for k, _, op, tech in sorted(hits, key=lambda h: h[:2])]
    prov = {
        "source": "coverage_cell",
        "coverage_run": run[0],
        "coverage_run_at": run[1].isoformat(),
        "cells": len(cells),
        "operators": operators,
        "area": "cells with signal measurements, 100 m x 100 m each",
    }
    return (cells, pd.DataFrame(offers, columns=["cell_id", "operator", "technology"])), prov, None
