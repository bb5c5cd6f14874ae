"""Queries behind the fast ``$expand`` of Things → Datastreams → Observations
(``quartier.api.sta_expand_latest``): the Datastreams of many Things in one query, and their
``phenomenonTime`` spans without probing every monthly partition.

A Datastream's span is ``min``/``max(phenomenon_time)`` of its observations. On the plain
PostgreSQL path ``observation`` is range-partitioned by month with a default partition, so the
planner answers each ``min``/``max`` with a Merge Append that descends the primary key of every
partition (two dozen probes per Datastream after a year). Here each bound is read by one
ordered probe that a hint limits to the partitions that can hold it:

* the newest: ``observation_latest`` (kept by the ingest writer) names a time ``hi``; the
  newest observation at or after ``hi`` is the newest of all, if there is one;
* the oldest: the first daily rollup bucket (``observation_1d``) names a day; the oldest
  observation before the end of that day is the oldest of all, if there is one.

Both are range conditions on the primary key that run-time partition pruning limits to the
partitions that can hold such rows. The newest is also bounded by the month after the newest
hint of the request, unless any observation is stored from that month on, and the oldest by the
start of the oldest monthly partition, unless any observation is stored before it (one look
each for the whole request), so partitions made ahead of time and the default partition are
pruned from the probes. When the hinted probe finds nothing (the hint is stale, missing, or names
deleted rows) that bound is read by the plain ordered probe over every partition, so the span is
exact whatever the hints say. The newest (oldest) observation's whole row comes from the same
probe. Three index probes per Datastream (the day hint and one per bound) where the proofs of
session 7 (the hinted row, nothing beyond it, then the row again) took six: docs/benchmarks.md,
API, session 9.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import psycopg
from psycopg.types.numeric import Int8BinaryLoader

from quartier.store.db import DictConn
from quartier.store.pgcopy import Int8Array

#: The Datastream columns of ``store.sensorthings`` without the span subqueries.
_DATASTREAM_COLUMNS = """d.id, d.name, d.description, d.observation_type,
       d.unit_of_measurement::text as unit_of_measurement,
       d.thing_id, d.sensor_id, d.observed_property_id, d.properties,
       ST_AsGeoJSON(d.observed_area)::json as observed_area"""

_DATASTREAMS_OF_THINGS = f"""
select _p.id as _parent, _x.*
from thing _p cross join lateral (
    select {_DATASTREAM_COLUMNS} from datastream d where d.thing_id = _p.id
    order by d.id asc limit %(_top)s offset %(_skip)s) _x
where _p.id = any(%(_ids)s) order by _p.id"""

#: the start of the oldest monthly partition (plain PostgreSQL path; the names of
#: ``quartier_ensure_observation_partitions``, as ``store/sensorthings_count.py`` reads them)
_OLDEST_PARTITION = """(
    select min(to_date(substr(c.relname, 14), 'YYYYMM'))::timestamp at time zone 'UTC'
    from pg_inherits i join pg_class c on c.oid = i.inhrelid
    where i.inhparent = 'observation'::regclass and c.relname ~ '^observation_p[0-9]{6}$')"""

#: the first day with a rollup row: the hint of the oldest observation (plain PostgreSQL path)
_FIRST_DAY = (
    "(select r.bucket from observation_1d r where r.datastream_id = d.id order by r.bucket limit 1)"
)

#: the columns of an observation row as ``store.sensorthings`` reads them
OBSERVATION_COLUMNS = (
    "o.datastream_id, o.phenomenon_time, o.result, o.result_json, o.result_time, o.parameters,"
    " o.foi_id, case when o.datastream_id < 0 then -o.datastream_id end as multi_datastream_id"
)


def _bound(alias: str, columns: str, newest: bool) -> str:
    """The LATERAL join of one bound of the span of ``h.id``: the hinted probe, then the plain
    one over every partition, run only when the hinted one finds nothing (``limit 1`` over a
    ``union all`` stops at the first branch's row)."""
    order = " desc" if newest else ""
    hinted = (
        "o.phenomenon_time >= h.hi and o.phenomenon_time < (select before from bound)"
        if newest
        else "o.phenomenon_time >= (select after from bound)"
        " and o.phenomenon_time < h.lo_day + interval '1 day'"
    )
    probe = (
        f"select {columns} from observation o where o.datastream_id = h.id{{}}"
        f" order by o.phenomenon_time{order} limit 1"
    )
    return (
        f"left join lateral (({probe.format(f' and {hinted}')})"
        f" union all ({probe.format('')}) limit 1) {alias} on true"
    )


#: ``bound``: the newest probes look before the month after the newest hint (so partitions made
#: ahead of time and the default partition are pruned from them) unless any observation is
#: stored from that month on; the oldest probes look from the start of the oldest monthly
#: partition on (so the default partition is pruned from them) unless any observation is stored
#: before it (in the default partition); one look each
_SPANS = """
with h as materialized (
    select d.id, l.phenomenon_time as hi, {first_day} as lo_day
    from unnest(%(_ids)s) d(id)
    left join observation_latest l on l.datastream_id = d.id
), m as materialized (
    select date_trunc('month', max(h.hi), 'UTC') + interval '1 month' as m,
           {oldest_partition} as p
    from h
), bound as materialized (
    select case when exists (select from observation o where o.phenomenon_time >= m.m)
                then 'infinity'::timestamptz else m.m end as before,
           case when m.p is null
                  or exists (select from observation o where o.phenomenon_time < m.p)
                then '-infinity'::timestamptz else m.p end as after
    from m
)
select h.id, lo.phenomenon_time as t_min, hi.phenomenon_time as t_max{end_columns}
from h
{lo}
{hi}"""


def _spans_query(timescaledb: bool, end: Literal["first", "last"] | None) -> str:
    # TimescaleDB's observation_1d is a continuous aggregate (a view): no day hint there; its
    # ordered chunk scans answer the plain probe without visiting every chunk anyway
    return _SPANS.format(
        first_day="null::timestamptz" if timescaledb else _FIRST_DAY,
        oldest_partition="null::timestamptz" if timescaledb else _OLDEST_PARTITION,
        end_columns={None: "", "first": ", lo.*", "last": ", hi.*"}[end],
        lo=_bound("lo", OBSERVATION_COLUMNS if end == "first" else "o.phenomenon_time", False),
        hi=_bound("hi", OBSERVATION_COLUMNS if end == "last" else "o.phenomenon_time", True),
    )


_ENDS: tuple[Literal["first", "last"] | None, ...] = (None, "first", "last")
_QUERIES = {(ts, end): _spans_query(ts, end) for ts in (False, True) for end in _ENDS}


def datastreams_of_things(
    conn: DictConn, thing_ids: list[int], top: int, skip: int
) -> list[dict[str, Any]]:
    """For each Thing of ``thing_ids``, one page (``top`` plus one row, after ``skip``) of its
    Datastreams by id, each row with its Thing's id as ``_parent``: the rows of
    ``store.sensorthings.expand_many`` for this navigation, without ``t_min``/``t_max``
    (:func:`spans` adds them). ``unit_of_measurement`` is read as text and loaded as psycopg
    loads ``jsonb`` (``json.loads``), once per distinct unit: a page of Datastreams shares a few."""
    if not thing_ids:
        return []
    params = {"_ids": Int8Array(np.array(thing_ids, np.int64)), "_top": top + 1, "_skip": skip}
    rows = conn.execute(_DATASTREAMS_OF_THINGS, params, prepare=True).fetchall()
    units: dict[str, Any] = {}
    for r in rows:
        text = r["unit_of_measurement"]
        unit = units.get(text)
        if unit is None:
            unit = units[text] = json.loads(text)
        r["unit_of_measurement"] = unit
    return rows


def spans(
    conn: DictConn,
    datastream_ids: list[int],
    timescaledb: bool = False,
    end: Literal["first", "last"] | None = None,
) -> dict[int, dict[str, Any]]:
    """Each Datastream's ``t_min`` and ``t_max``: ``min``/``max(phenomenon_time)`` of its
    observations, exactly (``None`` when it has none; see the module's description), by id.
    With ``end``, each row also holds the columns of the observation at ``t_min`` (``first``)
    or ``t_max`` (``last``), all ``None`` when there is none."""
    if not datastream_ids:
        return {}
    query = _QUERIES[timescaledb, end]
    params = {"_ids": Int8Array(np.array(datastream_ids, np.int64))}
    # prepared at once: planning this statement takes longer than running it (7 ms against
    # 2–5 ms for 200 Datastreams), and the pool hands requests to its connections in turn
    return {int(r["id"]): r for r in conn.execute(query, params, prepare=True).fetchall()}


def span_rows(
    conn: DictConn,
    datastream_ids: list[int],
    timescaledb: bool = False,
    end: Literal["first", "last"] | None = None,
) -> list[tuple[Any, ...]]:
    """:func:`spans` as tuples in binary, for writing bodies without a datetime per value:
    ``(id, t_min, t_max)`` and with ``end`` the columns of ``OBSERVATION_COLUMNS``, every
    ``timestamptz`` as it is stored (µs since 2000-01-01 UTC, ``None`` where there is none)."""
    if not datastream_ids:
        return []
    params = {"_ids": Int8Array(np.array(datastream_ids, np.int64))}
    with conn.cursor(binary=True, row_factory=psycopg.rows.tuple_row) as cur:
        cur.adapters.register_loader("timestamptz", Int8BinaryLoader)
        return cur.execute(_QUERIES[timescaledb, end], params, prepare=True).fetchall()
