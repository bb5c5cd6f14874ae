"""Queries behind the fast ``$expand`` of Things → Datastreams → Observations
(``quartier.api.sta_expand_latest``): the Datastreams of many Things in one query, and their
``phenomenonTime`` spans without probing every monthly partition.

A Datastream's span is ``min``/``max(phenomenon_time)`` of its observations. On the plain
PostgreSQL path ``observation`` is range-partitioned by month with a default partition, so the
planner answers each ``min``/``max`` with a Merge Append that descends the primary key of every
partition (two dozen probes per Datastream after a year). Here each bound starts from a hint
that points at one partition and is then proved against the observations themselves:

* the newest: ``observation_latest`` (kept by the ingest writer) names a time ``hi``; it is the
  maximum if an observation exists at ``hi`` and none after it;
* the oldest: the first daily rollup bucket (``observation_1d``) names a day; the first
  observation of that day is the minimum if none exists before it.

Both proofs are range conditions on the primary key that run-time partition pruning limits to
the partitions that can hold such rows (the hinted month's and the default partition). When a
proof fails (a hint is stale, missing, or points at deleted rows) that Datastream's bound is the
plain ``min``/``max``, so the span is exact whatever the hints say.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from quartier.store.db import DictConn
from quartier.store.pgcopy import Int8Array

#: The Datastream columns of ``store.sensorthings`` without the span subqueries.
_DATASTREAM_COLUMNS = """d.id, d.name, d.description, d.observation_type, d.unit_of_measurement,
       d.thing_id, d.sensor_id, d.observed_property_id, d.properties,
       ST_AsGeoJSON(d.observed_area)::json as observed_area"""

_DATASTREAMS_OF_THINGS = f"""
select _p.id as _parent, _x.*
from thing _p cross join lateral (
    select {_DATASTREAM_COLUMNS} from datastream d where d.thing_id = _p.id
    order by d.id asc limit %(_top)s offset %(_skip)s) _x
where _p.id = any(%(_ids)s) order by _p.id"""

#: the first day with a rollup row: the hint of the oldest observation (plain PostgreSQL path)
_FIRST_DAY = (
    "(select r.bucket from observation_1d r where r.datastream_id = d.id order by r.bucket limit 1)"
)

_SPANS = """
with hint as materialized (
    select d.id, l.phenomenon_time as hi, {first_day} as lo_day
    from unnest(%(_ids)s) d(id)
    left join observation_latest l on l.datastream_id = d.id
), lo as materialized (
    select h.id, h.hi,
           (select o.phenomenon_time from observation o
            where o.datastream_id = h.id and o.phenomenon_time >= h.lo_day
              and o.phenomenon_time < h.lo_day + interval '1 day'
            order by o.phenomenon_time limit 1) as lo
    from hint h
)
select x.id,
       case when x.lo is not null and not exists (
                select from observation o where o.datastream_id = x.id and o.phenomenon_time < x.lo)
            then x.lo
            else (select min(o.phenomenon_time) from observation o where o.datastream_id = x.id)
       end as t_min,
       case when x.hi is not null
             and exists (select from observation o
                         where o.datastream_id = x.id and o.phenomenon_time = x.hi)
             and not exists (select from observation o
                             where o.datastream_id = x.id and o.phenomenon_time > x.hi)
            then x.hi
            else (select max(o.phenomenon_time) from observation o where o.datastream_id = x.id)
       end as t_max
from lo x"""

#: with the observation at each span's end (``last``) or start: the "$top=1" observation,
#: read by primary key (run-time pruning visits the one partition that can hold it)
_WITH_END = """
select s.id, s.t_min, s.t_max, e.*
from ({spans}) s
left join lateral (
    select {columns} from observation o
    where o.datastream_id = s.id and o.phenomenon_time = (case when %(_last)s then s.t_max
                                                               else s.t_min end)
) e on true"""


def _spans_query(timescaledb: bool, end: bool) -> str:
    spans = _SPANS.format(first_day="null::timestamptz" if timescaledb else _FIRST_DAY)
    # TimescaleDB's observation_1d is a continuous aggregate (a view): no day hint there; its
    # ordered chunk scans answer min() without visiting every chunk anyway
    if not end:
        return spans
    return _WITH_END.format(spans=spans, columns=OBSERVATION_COLUMNS)


#: the columns of an observation row as ``store.sensorthings`` reads them
OBSERVATION_COLUMNS = (
    "o.datastream_id, o.phenomenon_time, o.result, o.result_json, o.result_time, o.parameters,"
    " o.foi_id, case when o.datastream_id < 0 then -o.datastream_id end as multi_datastream_id"
)

_QUERIES = {(ts, end): _spans_query(ts, end) for ts in (False, True) for end in (False, True)}


def datastreams_of_things(
    conn: DictConn, thing_ids: list[int], top: int, skip: int
) -> list[dict[str, Any]]:
    """For each Thing of ``thing_ids``, one page (``top`` plus one row, after ``skip``) of its
    Datastreams by id, each row with its Thing's id as ``_parent``: the rows of
    ``store.sensorthings.expand_many`` for this navigation, without ``t_min``/``t_max``
    (:func:`spans` adds them)."""
    if not thing_ids:
        return []
    params = {"_ids": Int8Array(np.array(thing_ids, np.int64)), "_top": top + 1, "_skip": skip}
    return conn.execute(_DATASTREAMS_OF_THINGS, params, prepare=True).fetchall()


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
    query = _QUERIES[timescaledb, end is not None]
    params = {
        "_ids": Int8Array(np.array(datastream_ids, np.int64)),
        "_last": end == "last",
    }
    # prepared at once: planning this statement takes longer than running it (7 ms against
    # 2–5 ms for 200 Datastreams), and the pool hands requests to its connections in turn
    return {int(r["id"]): r for r in conn.execute(query, params, prepare=True).fetchall()}
