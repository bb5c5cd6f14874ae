"""Rollup, partition and retention upkeep on the plain PostgreSQL path (TimescaleDB does the same
with its own policies, see :mod:`quartier.store.timescale`).

* The ingest writer marks the 15-minute buckets each batch touched, in the batch's transaction:
  it COPYs rows straight into ``observation`` and then calls ``quartier_observations_written()``
  (migration 0021) with the touched buckets and the newest value per datastream, computed while
  it built the rows. Loaders that stage rows in ``_obs_stage`` instead (bulk loads, the store
  benchmark) call ``quartier_observations_staged()`` (migration 0005), which derives the same
  marks from the staging table. Both are one cheap statement per batch, on both paths.
* :func:`refresh` recomputes exactly the marked buckets: 15 min from raw rows, then the hours and
  days that contain them from the finer rollup. Rollups are never rebuilt in full; until a bucket
  is refreshed, :mod:`quartier.store.timeseries` reads it from raw rows. In the same transaction
  the packed rollups (migration 0045: the hours of a datastream's UTC day, the days of its UTC
  month, in one row each) are packed again for every day and month that holds a recomputed
  bucket (:func:`repack`).
* :func:`rebuild` recomputes a time range in bulk, for data loaded past the writer (imports,
  benchmarks).
* :func:`apply_retention` drops whole monthly partitions (and old rollup rows if configured);
  :func:`compact` rewrites closed months sorted by (datastream, time);
  :func:`maintain` does partitions ahead + retention + refresh + compaction, for a periodic job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from quartier.config import DatabaseSettings, PrivacySettings
from quartier.store import audit, timescale
from quartier.store.db import Conn
from quartier.store.migrate import StoragePath, storage_path
from quartier.store.policy import StorePolicy
from quartier.store.privacy import expire_personal
from quartier.store.timeseries import (
    ORIGIN,
    PACK_UNIT,
    PACKED,
    ROLLUPS,
    ceil_to,
    floor_to,
    month_floor,
)

log = logging.getLogger(__name__)

_REFRESH_LOCK = 0x5155_5231  # "QUR1": one refresher at a time
_MAINTAIN_LOCK = 0x5155_5232  # "QUR2": one maintenance round at a time
_FINER = {
    timedelta(hours=1): timedelta(minutes=15),
    timedelta(days=1): timedelta(hours=1),
}


@dataclass
class RefreshResult:
    buckets_15m: int = 0
    buckets_1h: int = 0
    buckets_1d: int = 0
    skipped: bool = False  # another refresher holds the lock


# ------------------------------------------------------------------------------------ refresh
_PICK = """
create temp table _rollup_dirty on commit drop as
with picked as (
    select datastream_id, bucket from observation_dirty
    order by bucket limit %(limit)s for update skip locked
), gone as (
    delete from observation_dirty o using picked p
    where o.datastream_id = p.datastream_id and o.bucket = p.bucket
    returning o.datastream_id, o.bucket
)
select datastream_id, bucket from gone"""

_DIRTY_AT = """
create temp table {target} on commit drop as
select distinct datastream_id, date_bin(%(w)s, bucket, %(origin)s) as bucket from {source}"""

_DELETE = """
delete from {rollup} r using {dirty} d
where r.datastream_id = d.datastream_id and r.bucket = d.bucket"""

_FROM_RAW = """
insert into observation_15m (datastream_id, bucket, n_all, n, s, lo, hi)
select d.datastream_id, d.bucket, a.n_all, a.n, a.s, a.lo, a.hi
from {dirty} d cross join lateral (
    select count(*) as n_all, count(o.result) as n, sum(o.result) as s, min(o.result) as lo,
           max(o.result) as hi
    from observation o
    where o.datastream_id = d.datastream_id and o.phenomenon_time >= d.bucket
      and o.phenomenon_time < d.bucket + interval '15 minutes'
) a
where a.n_all > 0"""

_FROM_FINER = """
insert into {rollup} (datastream_id, bucket, n_all, n, s, lo, hi)
select d.datastream_id, d.bucket, a.n_all, a.n, a.s, a.lo, a.hi
from {dirty} d cross join lateral (
    select sum(f.n_all) as n_all, sum(f.n) as n, sum(f.s) as s, min(f.lo) as lo, max(f.hi) as hi
    from {finer} f
    where f.datastream_id = d.datastream_id and f.bucket >= d.bucket
      and f.bucket < d.bucket + %(w)s
) a
where a.n_all > 0"""


def refresh(conn: Conn, *, limit: int = 50_000) -> RefreshResult:
    """Recompute the rollup buckets the ingester marked dirty (at most ``limit`` 15-minute marks,
    oldest first) in one transaction. Call it until it returns fewer than ``limit``
    (:func:`refresh_all`). Concurrent callers skip instead of waiting."""
    res = RefreshResult()
    with conn.transaction():
        locked = conn.execute("select pg_try_advisory_xact_lock(%s)", (_REFRESH_LOCK,)).fetchone()
        if not locked or not _scalar(locked):
            res.skipped = True
            return res
        conn.execute("set local jit = off")  # compiling costs more than these statements take
        conn.execute(_PICK, {"limit": limit})
        conn.execute("analyze _rollup_dirty")
        res.buckets_15m = _count(conn, sql.Identifier("_rollup_dirty"))
        if res.buckets_15m == 0:
            conn.execute("drop table _rollup_dirty")
            return res
        dirty = sql.Identifier("_rollup_dirty")
        conn.execute(sql.SQL(_DELETE).format(rollup=sql.Identifier("observation_15m"), dirty=dirty))
        conn.execute(sql.SQL(_FROM_RAW).format(dirty=dirty))
        finer = dirty
        for width in (timedelta(hours=1), timedelta(days=1)):
            target = sql.Identifier(f"_rollup_dirty_{ROLLUPS[width].removeprefix('observation_')}")
            conn.execute(
                sql.SQL(_DIRTY_AT).format(target=target, source=finer),
                {"w": width, "origin": ORIGIN},
            )
            conn.execute(sql.SQL("analyze {}").format(target))
            n = _count(conn, target)
            if width == timedelta(hours=1):
                res.buckets_1h = n
            else:
                res.buckets_1d = n
            rollup = sql.Identifier(ROLLUPS[width])
            conn.execute(sql.SQL(_DELETE).format(rollup=rollup, dirty=target))
            conn.execute(
                sql.SQL(_FROM_FINER).format(
                    rollup=rollup, dirty=target, finer=sql.Identifier(ROLLUPS[_FINER[width]])
                ),
                {"w": width},
            )
            finer = target
        # the days (hourly packed) and months (daily packed) that hold a recomputed bucket
        _repack_touched(conn, sql.Identifier("_rollup_dirty_1d"))
        conn.execute("drop table _rollup_dirty, _rollup_dirty_1h, _rollup_dirty_1d")
    log.debug("rollups refreshed: %s", res)
    return res


def refresh_all(conn: Conn, *, limit: int = 50_000, max_rounds: int = 1000) -> RefreshResult:
    """:func:`refresh` until nothing is dirty (or another refresher is at work)."""
    total = RefreshResult()
    for _ in range(max_rounds):
        r = refresh(conn, limit=limit)
        total.buckets_15m += r.buckets_15m
        total.buckets_1h += r.buckets_1h
        total.buckets_1d += r.buckets_1d
        total.skipped = r.skipped
        if r.skipped or r.buckets_15m < limit:
            break
    return total


def _scalar(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def _count(conn: Conn, table: sql.Identifier) -> int:
    row = conn.execute(sql.SQL("select count(*) from {}").format(table)).fetchone()
    return int(_scalar(row)) if row is not None else 0


# ------------------------------------------------------------------------------------ packing

_PACK_COLUMNS = """
       string_agg(int8send(extract(epoch from r.bucket)::int8), ''::bytea order by r.bucket),
       string_agg(int4send(r.n_all), ''::bytea order by r.bucket),
       string_agg(int4send(r.n), ''::bytea order by r.bucket),
       string_agg(float8send(coalesce(r.s, 'NaN')), ''::bytea order by r.bucket),
       string_agg(float8send(coalesce(r.lo, 'NaN')), ''::bytea order by r.bucket),
       string_agg(float8send(coalesce(r.hi, 'NaN')), ''::bytea order by r.bucket)"""
# the rows of {touched} (datastream_id, start) packed again from the rollup
_REPACK_DELETE = """
delete from {packed} p using {touched} d
where p.datastream_id = d.datastream_id and p.start = d.start"""
_REPACK_TOUCHED = (
    """
insert into {packed} (datastream_id, start, t, n_all, n, s, lo, hi)
select d.datastream_id, d.start, a.*
from {touched} d cross join lateral (
    select"""
    + _PACK_COLUMNS
    + """
    from {rollup} r
    where r.datastream_id = d.datastream_id and r.bucket >= d.start
      and r.bucket < ((d.start at time zone 'UTC') + {span}) at time zone 'UTC'
    having count(*) > 0
) a"""
)
# every row of a range of starts packed again
_REPACK_RANGE = (
    """
insert into {packed} (datastream_id, start, t, n_all, n, s, lo, hi)
select r.datastream_id, date_trunc({unit}, r.bucket, 'UTC'),"""
    + _PACK_COLUMNS
    + """
from {rollup} r
where r.bucket >= %(start)s and r.bucket < %(end)s
group by 1, 2"""
)


def _span(width: timedelta) -> sql.Composable:
    return sql.SQL("interval {}").format(sql.Literal(f"1 {PACK_UNIT[width]}"))


def _repack_touched(conn: Conn, days: sql.Identifier) -> None:
    """Pack again the rows that hold a bucket of ``days`` (a temp table of (datastream_id,
    bucket) with UTC days, the daily rollup's dirty set): the day's hours, the month's days."""
    for width, unit in PACK_UNIT.items():
        touched = sql.Identifier(f"_repack_{unit}")
        conn.execute(
            sql.SQL(
                "create temp table {} on commit drop as select distinct datastream_id,"
                " date_trunc({}, bucket, 'UTC') as start from {}"
            ).format(touched, sql.Literal(unit), days)
        )
        packed = sql.Identifier(PACKED[width])
        conn.execute(sql.SQL(_REPACK_DELETE).format(packed=packed, touched=touched))
        conn.execute(
            sql.SQL(_REPACK_TOUCHED).format(
                packed=packed,
                touched=touched,
                rollup=sql.Identifier(ROLLUPS[width]),
                span=_span(width),
            )
        )
        conn.execute(sql.SQL("drop table {}").format(touched))


def _month_ceil(t: datetime) -> datetime:
    f = month_floor(t)
    if f == t:
        return f
    return f.replace(year=f.year + 1, month=1) if f.month == 12 else f.replace(month=f.month + 1)


def repack(conn: Conn, start: datetime, end: datetime) -> None:
    """Pack again every packed row that holds a bucket in ``[start, end)``: the UTC days (hourly
    packed) and UTC months (daily packed) that overlap it, from the rollups as they are (after a
    bulk :func:`rebuild` or retention). Run it in the transaction that changed the rollups."""
    day = timedelta(days=1)
    for width, (lo, hi) in (
        (
            timedelta(hours=1),
            (floor_to(start.astimezone(UTC), day), ceil_to(end.astimezone(UTC), day)),
        ),
        (day, (month_floor(start), _month_ceil(end))),
    ):
        packed = sql.Identifier(PACKED[width])
        params = {"start": lo, "end": hi}
        conn.execute(
            sql.SQL("delete from {} where start >= %(start)s and start < %(end)s").format(packed),
            params,
        )
        conn.execute(
            sql.SQL(_REPACK_RANGE).format(
                packed=packed,
                unit=sql.Literal(PACK_UNIT[width]),
                rollup=sql.Identifier(ROLLUPS[width]),
            ),
            params,
        )


# ------------------------------------------------------------------------------------ rebuild
_REBUILD_15M = """
insert into observation_15m (datastream_id, bucket, n_all, n, s, lo, hi)
select datastream_id, date_bin('15 minutes', phenomenon_time, %(origin)s), count(*),
       count(result), sum(result), min(result), max(result)
from observation where phenomenon_time >= %(start)s and phenomenon_time < %(end)s
group by 1, 2 order by 1, 2"""
_REBUILD_FROM_FINER = """
insert into {rollup} (datastream_id, bucket, n_all, n, s, lo, hi)
select datastream_id, date_bin(%(w)s, bucket, %(origin)s), sum(n_all), sum(n), sum(s), min(lo),
       max(hi)
from {finer} where bucket >= %(start)s and bucket < %(end)s
group by 1, 2 order by 1, 2"""


def rebuild(conn: Conn, start: datetime, end: datetime, *, work_mem: str = "256MB") -> None:
    """Recompute every rollup over ``[start, end)`` (widened to whole UTC days) from raw rows in
    one transaction: for data loaded past the ingest writer. Dirty marks in the range are removed
    first, so rows committed meanwhile are marked again and refreshed later."""
    day = timedelta(days=1)
    start = floor_to(start.astimezone(UTC), day)
    end = ceil_to(end.astimezone(UTC), day)
    params = {"start": start, "end": end, "origin": ORIGIN}
    with conn.transaction():
        conn.execute(sql.SQL("set local work_mem = {}").format(sql.Literal(work_mem)))
        conn.execute(
            "delete from observation_dirty where bucket >= %(start)s and bucket < %(end)s", params
        )
        for width in (timedelta(minutes=15), timedelta(hours=1), timedelta(days=1)):
            rollup = sql.Identifier(ROLLUPS[width])
            conn.execute(
                sql.SQL("delete from {} where bucket >= %(start)s and bucket < %(end)s").format(
                    rollup
                ),
                params,
            )
            if width == timedelta(minutes=15):
                conn.execute(_REBUILD_15M, params)
            else:
                conn.execute(
                    sql.SQL(_REBUILD_FROM_FINER).format(
                        rollup=rollup, finer=sql.Identifier(ROLLUPS[_FINER[width]])
                    ),
                    {**params, "w": width},
                )
        repack(conn, start, end)


# ------------------------------------------------------------------------------------ retention
def apply_retention(conn: Conn, policy: StorePolicy, *, now: datetime | None = None) -> list[str]:
    """Drop raw partitions older than ``policy.retention`` (whole months) and rollup rows older
    than ``policy.rollup_retention`` (whole days). Returns what was dropped."""
    now = now or datetime.now(UTC)
    dropped: list[str] = []
    if policy.retention is not None:
        rows = conn.execute(
            "select quartier_drop_observation_partitions(%s)", (now - policy.retention,)
        ).fetchall()
        dropped += [str(_scalar(r)) for r in rows]
    if policy.rollup_retention is not None:
        cutoff = floor_to(now - policy.rollup_retention, timedelta(days=1))
        with conn.transaction():  # the packed rows go with the rollup rows they hold
            deleted = 0
            for rollup in ROLLUPS.values():
                cur = conn.execute(
                    sql.SQL("delete from {} where bucket < %s").format(sql.Identifier(rollup)),
                    (cutoff,),
                )
                deleted += max(cur.rowcount, 0)
                if cur.rowcount:
                    dropped.append(f"{rollup}: {cur.rowcount} rows before {cutoff.isoformat()}")
            if deleted:
                # whole packed rows before the cutoff's day (month), then its month again
                for width, packed in PACKED.items():
                    conn.execute(
                        sql.SQL("delete from {} where start < %s").format(sql.Identifier(packed)),
                        (month_floor(cutoff) if width == timedelta(days=1) else cutoff,),
                    )
                repack(conn, cutoff, cutoff + timedelta(days=1))
    for item in dropped:
        log.info("retention dropped %s", item)
    return dropped


_CLOSED_PARTITIONS = """
select c.relname,
       (to_date(substr(c.relname, 14), 'YYYYMM'))::timestamp at time zone 'UTC' as lo,
       (to_date(substr(c.relname, 14), 'YYYYMM') + interval '1 month')::timestamp
           at time zone 'UTC' as hi
from pg_inherits h
join pg_class c on c.oid = h.inhrelid
where h.inhparent = 'observation'::regclass and c.relname ~ '^observation_p[0-9]{6}$'
  and (to_date(substr(c.relname, 14), 'YYYYMM') + interval '1 month')::timestamp
      at time zone 'UTC' <= %s
  and not exists (select 1 from observation_partition_compacted p where p.relname = c.relname)
order by c.relname"""


def compact(conn: Conn, older_than: datetime, *, lock_timeout_s: float = 3.0) -> list[str]:
    """Rewrite each monthly partition that ended before ``older_than`` and was not compacted yet,
    sorted by (datastream, time), with packed indexes. Needs an autocommit connection. Returns the
    partitions compacted.

    The plain path's counterpart of compressing a chunk: rows arrive in time order, so one
    datastream's week is spread over ~1,000 heap pages; sorted, it sits on about ten, and a raw
    range read touches that many. The new table is filled while the old one stays readable
    (writes to that month wait: late data for a month closed ``compress_after`` ago is rare, and
    the ingester buffers meanwhile), then swapped in with a short exclusive lock on
    ``observation`` (given up after ``lock_timeout_s``; the month is retried next round).
    """
    done: list[str] = []
    for row in conn.execute(_CLOSED_PARTITIONS, (older_than,)).fetchall():
        relname, lo, hi = (row["relname"], row["lo"], row["hi"]) if isinstance(row, dict) else row
        try:
            rows = _rewrite_sorted(conn, relname, lo, hi, lock_timeout_s)
        except psycopg.errors.LockNotAvailable:
            log.warning("compaction of %s postponed: observation is busy", relname)
            continue
        except psycopg.errors.DeadlockDetected:
            log.warning("compaction of %s postponed: a writer needed the same locks", relname)
            continue
        conn.execute(sql.SQL("vacuum (freeze, analyze) {}").format(sql.Identifier(relname)))
        log.info("compacted %s (%d rows, sorted by datastream and time)", relname, rows)
        done.append(relname)
    return done


#: (parent index, index name) of the indexes of partition %s that belong to observation's indexes
_PARTITION_INDEXES = (
    "select h.inhparent, c.relname from pg_index i join pg_class c on c.oid = i.indexrelid"
    " join pg_inherits h on h.inhrelid = i.indexrelid where i.indrelid = %s::regclass"
)


def _rewrite_sorted(
    conn: Conn, relname: str, lo: datetime, hi: datetime, lock_timeout_s: float
) -> int:
    new = f"{relname}_sorted"
    ident, new_ident = sql.Identifier(relname), sql.Identifier(new)
    with conn.transaction():
        conn.execute("set local maintenance_work_mem = '512MB'")
        conn.execute("set local work_mem = '512MB'")
        conn.execute(sql.SQL("lock table {} in share mode").format(ident))  # reads go on
        conn.execute(sql.SQL("drop table if exists {}").format(new_ident))
        conn.execute(
            sql.SQL(
                "create table {} (like observation including defaults including constraints)"
            ).format(new_ident)
        )
        cur = conn.execute(
            sql.SQL(
                "insert into {} select * from {} order by datastream_id, phenomenon_time"
            ).format(new_ident, ident)
        )
        rows = max(cur.rowcount, 0)
        # the bound as a constraint lets ATTACH skip its validating scan
        conn.execute(
            sql.SQL(
                "alter table {} add constraint {} check "
                "(phenomenon_time >= {} and phenomenon_time < {})"
            ).format(new_ident, sql.Identifier(f"{new}_bound"), sql.Literal(lo), sql.Literal(hi))
        )
        conn.execute(
            sql.SQL(
                "alter table {} add constraint {} primary key (datastream_id, phenomenon_time)"
            ).format(new_ident, sql.Identifier(f"{relname}_pkey_s"))
        )
        conn.execute(
            sql.SQL(
                "create index {} on {} using brin (phenomenon_time) with (pages_per_range = 32)"
            ).format(sql.Identifier(f"{relname}_brin_s"), new_ident)
        )
        # the swap: a short exclusive lock on observation, not waited for long
        conn.execute(
            sql.SQL("set local lock_timeout = {}").format(
                sql.Literal(f"{int(lock_timeout_s * 1000)}ms")
            )
        )
        # the partition's indexes by the parent index each belongs to: ATTACH creates the ones
        # the new table lacks (e.g. migration 0041's partial FoI index) under generated names
        attached = conn.execute(_PARTITION_INDEXES, (relname,)).fetchall()
        conn.execute(sql.SQL("alter table observation detach partition {}").format(ident))
        conn.execute(
            sql.SQL(
                "alter table observation attach partition {} for values from ({}) to ({})"
            ).format(new_ident, sql.Literal(lo), sql.Literal(hi))
        )
        conn.execute(sql.SQL("drop table {}").format(ident))
        conn.execute(sql.SQL("alter table {} rename to {}").format(new_ident, ident))
        conn.execute(
            sql.SQL("alter table {} drop constraint {}").format(
                ident, sql.Identifier(f"{new}_bound")
            )
        )
        now = dict(conn.execute(_PARTITION_INDEXES, (relname,)).fetchall())
        # every index (the primary key's with its constraint) under the name it had before
        for parent, name in attached:
            if parent in now and now[parent] != name:
                conn.execute(
                    sql.SQL("alter index {} rename to {}").format(
                        sql.Identifier(now[parent]), sql.Identifier(name)
                    )
                )
        conn.execute(
            "insert into observation_partition_compacted (relname) values (%s) "
            "on conflict do nothing",
            (relname,),
        )
    return rows


def ensure_partitions_ahead(conn: Conn, months: int, *, now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=31 * (months + 1))
    row = conn.execute(
        "select quartier_ensure_observation_partitions(%s, %s)", (start, end)
    ).fetchone()
    return int(_scalar(row)) if row is not None else 0


def configure(conn: Conn, policy: StorePolicy) -> list[str]:
    """Apply ``policy`` after ``db migrate``, on either path (autocommit connection): on
    TimescaleDB the policies (:func:`quartier.store.timescale.configure`), on plain PostgreSQL the
    partitions ahead (retention and compaction run in :func:`maintain`)."""
    if storage_path(conn) == "timescaledb":
        return timescale.configure(conn, policy)
    made = ensure_partitions_ahead(conn, policy.partitions_ahead_months)
    return [f"{made} partition(s) created ahead"]


def maintain(conn: Conn, policy: StorePolicy, *, now: datetime | None = None) -> dict[str, Any]:
    """One round of upkeep on an autocommit connection. On plain PostgreSQL: partitions ahead,
    retention, the rollup refresh, and compaction of partitions closed for longer than
    ``policy.compress_after``. On TimescaleDB nothing: its jobs do all of it."""
    path: StoragePath = storage_path(conn)
    if path == "timescaledb":
        return {"path": path}
    now = now or datetime.now(UTC)
    locked = conn.execute("select pg_try_advisory_lock(%s)", (_MAINTAIN_LOCK,)).fetchone()
    if not locked or not _scalar(locked):  # another ingester's thread is at it
        return {"path": path, "skipped": True}
    try:
        made = ensure_partitions_ahead(conn, policy.partitions_ahead_months, now=now)
        dropped = apply_retention(conn, policy, now=now)
        refreshed = refresh_all(conn)
        compacted = compact(conn, now - policy.compress_after)
    finally:
        conn.execute("select pg_advisory_unlock(%s)", (_MAINTAIN_LOCK,))
    return {
        "path": path,
        "partitions_created": made,
        "dropped": dropped,
        "refreshed": refreshed,
        "compacted": compacted,
    }


def expire_rejects(conn: Conn, retention: timedelta, *, now: datetime | None = None) -> int:
    """Delete the refused messages (``ingest_reject``) received longer than ``retention`` ago;
    the number deleted."""
    cutoff = (now or datetime.now(UTC)) - retention
    cur = conn.execute("delete from ingest_reject where received_at < %s", (cutoff,))
    return max(cur.rowcount, 0)


def run_maintenance(
    url: str,
    policy: StorePolicy,
    stop: threading.Event,
    *,
    every_s: float = 30.0,
    reject_retention: timedelta | None = None,
    after_round: Callable[[Conn], None] | None = None,
    raw_retention: timedelta | None = None,
    audit_retention: timedelta | None = None,
) -> None:
    """:func:`maintain` every ``every_s`` seconds until ``stop`` is set (for a thread in
    ``quartier ingest``), with the rejects past ``reject_retention`` expired, then
    ``after_round(conn)`` (the composition root's hook, e.g. refreshing stale indicator values;
    its errors are logged, the upkeep goes on). Errors are logged and retried next round."""
    while not stop.is_set():
        try:
            with psycopg.connect(url, autocommit=True, application_name="quartier-rollups") as c:
                while not stop.is_set():
                    maintain(c, policy)
                    if reject_retention is not None:  # both storage paths
                        expire_rejects(c, reject_retention)
                    if raw_retention is not None:  # personal raw data (store/privacy.py)
                        expire_personal(c, raw_retention)
                    if audit_retention is not None:  # the audit trail (store/audit.py)
                        audit.expire(c, audit_retention)
                    if after_round is not None:
                        try:
                            after_round(c)
                        except Exception:  # the store's upkeep must survive a failing hook
                            log.exception("maintenance hook failed (retrying next round)")
                    stop.wait(every_s)
        except psycopg.Error as exc:
            log.warning("store maintenance failed (retrying in %.0f s): %s", every_s, exc)
            stop.wait(every_s)


def start_maintenance(
    url: str,
    database: DatabaseSettings,
    stop: threading.Event,
    *,
    after_round: Callable[[Conn], None] | None = None,
    raw_retention: timedelta | None = PrivacySettings().raw_retention,
) -> threading.Thread:
    """:func:`run_maintenance` with the policy of ``settings.database``, in a daemon thread;
    ``after_round``: see :func:`run_maintenance`."""
    thread = threading.Thread(
        target=run_maintenance,
        args=(url, StorePolicy.from_settings(database), stop),
        kwargs={
            "reject_retention": database.reject_retention,
            "after_round": after_round,
            "raw_retention": raw_retention,  # privacy.raw_retention
            "audit_retention": database.audit_retention,
        },
        name="store-maintenance",
        daemon=True,
    )
    thread.start()
    return thread
