"""Exact ``@iot.count`` of Observations from the daily rollups (plain PostgreSQL path).

Counting every row of ``observation`` takes seconds at 10^7 rows; the daily rollup already holds
each datastream's count per UTC day, kept exact by the refresh (``store/rollups.py``) for every
bucket that is not marked dirty. :func:`count` adds them up, in one statement (one snapshot):

* **trusted days**: from the floor ``F`` on, in months that have their own monthly partition,
  the daily counts of the live datastreams: whole months from ``observation_1d_count`` (migration
  0047: one narrow row per datastream and month, the sum of the packed daily rollup's row of
  migration 0045, written by a trigger on it), the days of ``F``'s month from ``F`` on from
  ``observation_1d``;
* **dirty days** (a 15-minute mark pending refresh inside the day): their rollup count is taken
  out and their raw rows are counted instead (a primary-key range per datastream and day);
* **raw rows**: everything before ``F`` and everything in the default partition is counted row
  by row.

With a ``phenomenonTime`` range ``[start, end)`` (a ``$filter`` that says no more, see
``api/sensorthings.py``, ``time_range``) the trusted days are those wholly inside it, and the
partial days at its ends are counted row by row.

``F`` is the later of the oldest monthly partition's start and the rollup floor the caller
gives (:func:`rollup_floor`: the day before which rollup retention may have deleted rollup
rows; None when rollups are kept forever).

Why this equals ``count(*)``: raw rows disappear only by raw retention (whole monthly
partitions; the default partition's rows before a month start) or by deletes that mark their
buckets dirty (``store/sta_write.py``), so a day inside an existing monthly partition that is not
dirty holds exactly the rows its rollup counted, unless rollup retention deleted that day's
rollup rows: it deletes every one before its cutoff day, and a later refresh of an old dirty
mark can bring part of such a day back, so no rollup row before the cutoff is trusted (hence
``F``). Only live datastreams' rollups are summed (a deleted one's rows may wait for the
refresh, or were left behind by a path that deleted its observations without marking them);
raw rows are counted whoever they belong to, as a listing returns them.

TimescaleDB's continuous aggregates can miss late data until their refresh, so that path keeps
its own count (``store/sensorthings.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql
from psycopg.rows import tuple_row

from quartier.store.db import Conn
from quartier.store.timeseries import ORIGIN, ceil_to, floor_to

# {live}: the datastream ids whose rollups count (all live ones, or the one asked for);
# {scope_o}/{scope_x}: "and <alias>.datastream_id = %(ds)s" or nothing
_COUNT = """
with parts as materialized (
    select (to_date(substr(c.relname, 14), 'YYYYMM'))::timestamp at time zone 'UTC' as lo
    from pg_inherits i join pg_class c on c.oid = i.inhrelid
    where i.inhparent = 'observation'::regclass and c.relname ~ '^observation_p[0-9]{{6}}$'
), live as materialized (
    {live}
), b as materialized (
    -- trusted days [a, e): whole packed months [mca, mfe), the other days from observation_1d
    select a, e,
           case when a in ('infinity', '-infinity') or date_trunc('month', a, 'UTC') = a then a
                else date_trunc('month', a, 'UTC') + interval '1 month' end as mca,
           case when e in ('infinity', '-infinity') then e
                else date_trunc('month', e, 'UTC') end as mfe
    from (select greatest(coalesce((select min(lo) from parts), 'infinity'),
                          %(floor)s::timestamptz, %(lo_day)s::timestamptz) as a,
                 %(hi_day)s::timestamptz as e) x
), dirty as materialized (
    select distinct x.datastream_id as ds, date_bin('1 day', x.bucket, %(origin)s) as day
    from observation_dirty x
    where x.bucket >= (select a from b) and x.bucket < (select e from b) {scope_x}
      and x.datastream_id in (select id from live)
      and date_trunc('month', x.bucket, 'UTC') in (select lo from parts)
)
select
    (select count(*) from observation o
     where o.phenomenon_time >= %(lo)s::timestamptz
       and o.phenomenon_time < least((select a from b), %(hi)s::timestamptz) {scope_o})
  + (select count(*) from observation o
     where o.phenomenon_time >= greatest((select e from b), (select a from b))
       and o.phenomenon_time < %(hi)s::timestamptz {scope_o})
  + (select count(*) from observation_default o
     where o.phenomenon_time >= (select a from b) and o.phenomenon_time < (select e from b)
       {scope_o}) as raw_rows,
    (select coalesce(sum(c.n_all), 0) from observation_1d_count c
     where c.datastream_id in (select id from live)
       and c.start >= (select mca from b) and c.start < (select mfe from b)
       and c.start = any(array(select lo from parts))) as packed,
    -- the days of [a, e) outside the whole months [mca, mfe); a CASE runs a branch's probes
    -- (two per live datastream) only when its range holds a day
    (case when (select a from b) < least((select mca from b), (select e from b)) then
        (select coalesce(sum(x.n), 0) from live d cross join lateral (
            select r.n_all as n from observation_1d r
            where r.datastream_id = d.id
              and r.bucket >= (select a from b)
              and r.bucket < least((select mca from b), (select e from b))
              and date_trunc('month', r.bucket, 'UTC') = any(array(select lo from parts))) x)
     else 0 end)
  + (case when greatest((select mfe from b), (select mca from b)) < (select e from b) then
        (select coalesce(sum(x.n), 0) from live d cross join lateral (
            select r.n_all as n from observation_1d r
            where r.datastream_id = d.id
              and r.bucket >= greatest((select mfe from b), (select mca from b))
              and r.bucket < (select e from b)
              and date_trunc('month', r.bucket, 'UTC') = any(array(select lo from parts))) x)
     else 0 end) as other_days,
    (select coalesce(sum(r.n_all), 0) from dirty d join observation_1d r
     on r.datastream_id = d.ds and r.bucket = d.day) as dirty_rollup,
    (select count(*) from dirty d join observation o
     on o.datastream_id = d.ds and o.phenomenon_time >= d.day
        and o.phenomenon_time < d.day + interval '1 day') as dirty_raw"""

_LIVE_ALL = "select id from datastream union all select -id from multi_datastream"
_LIVE_ONE = "select %(ds)s::bigint as id"


def _statement(one: bool) -> sql.SQL:
    def scope(alias: str) -> str:
        return f"and {alias}.datastream_id = %(ds)s" if one else ""

    text = _COUNT.format(
        live=_LIVE_ONE if one else _LIVE_ALL,
        scope_o=scope("o"),
        scope_x=scope("x"),
    )
    return sql.SQL(text)  # built from the constants above only


_STATEMENTS = {False: _statement(False), True: _statement(True)}


#: the connection option of the API pool (store/db.py) that turns JIT compiling off
_JIT_OFF = "-c jit=off"


def rollup_floor(
    rollup_retention: timedelta | None, now: datetime | None = None
) -> datetime | None:
    """The day before which rollup rows may be gone (``database.rollup_retention``, the setting
    ``store/rollups.apply_retention`` applies; None: kept forever). Retention that ran earlier
    cut at an earlier day, so this is never before its cutoff."""
    if rollup_retention is None:
        return None
    return floor_to((now or datetime.now(UTC)) - rollup_retention, timedelta(days=1))


def count(
    conn: Conn,
    datastream_id: int | None = None,
    *,
    floor: datetime | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> int:
    """How many observations ``observation`` holds (``datastream_id`` None) or holds under one
    datastream id (a MultiDatastream's are stored under minus its id), exactly, on the plain
    PostgreSQL path (see the module's docstring); with ``start`` / ``end``, those with
    ``start <= phenomenon_time < end`` (the days partly inside counted row by row). ``floor``:
    :func:`rollup_floor`; rows before it are counted row by row."""
    day = timedelta(days=1)
    params: dict[str, Any] = {
        "origin": ORIGIN,
        "ds": datastream_id,
        "floor": "-infinity" if floor is None else floor,
        "lo": "-infinity" if start is None else start,
        "hi": "infinity" if end is None else end,
        "lo_day": "-infinity" if start is None else ceil_to(start.astimezone(UTC), day),
        "hi_day": "infinity" if end is None else floor_to(end.astimezone(UTC), day),
    }
    cur = conn.cursor(binary=True, row_factory=tuple_row)
    statement = _STATEMENTS[datastream_id is not None]
    # prepared on the connection: planning it (the partitioned table four times) costs more
    # than running it; PostgreSQL keeps a generic plan after a few runs (the partitions are
    # pruned when it runs). JIT compiling would cost tens of ms: the API pool's connections
    # have it off (store/db.py, make_pool); on others it is turned off for the statement. So
    # are parallel workers: the planner cannot see that the raw-row ranges are (nearly) empty
    # and plans a parallel scan for them, whose workers took 50–75 ms to start at 5·10^7
    # (docs/benchmarks.md, API, session 9).
    with conn.transaction():
        if _JIT_OFF not in conn.info.get_parameters().get("options", ""):
            conn.execute("set local jit = off")
        conn.execute("set local max_parallel_workers_per_gather = 0")
        row = cur.execute(statement, params, prepare=True).fetchone()
    assert row is not None
    raw_rows, packed, other_days, dirty_rollup, dirty_raw = row
    return int(raw_rows) + int(packed) + int(other_days) - int(dirty_rollup) + int(dirty_raw)
