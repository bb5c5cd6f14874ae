"""The TimescaleDB-specific SQL, in one place (besides migrations 0003/0005 ``.timescaledb.sql``).

* :func:`configure` applies the settings (chunk interval, compression after, retention of raw
  data and of the continuous aggregates) as TimescaleDB policies. Run it after ``db migrate``.
* :func:`refresh_aggregates` and :func:`run_jobs` run what the background workers run (for
  backfills, and for engines without background workers such as the PGlite test engine);
  :func:`refresh_after_backfill` is what an archive import calls when it is done.
* :func:`status` reads sizes, chunks, compression and job state for ``quartier db status``.

Functions here need an autocommit connection: refreshing a continuous aggregate cannot run in a
transaction block.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from quartier.store.db import Conn
from quartier.store.migrate import storage_path, timescaledb_version
from quartier.store.policy import StorePolicy

log = logging.getLogger(__name__)

AGGREGATES = ("observation_15m", "observation_1h", "observation_1d")
#: refresh policy per aggregate: (start_offset, end_offset, schedule_interval). A start offset
#: bounds the work of each run; late data older than it is materialized by the next policy up
#: only if it is within that policy's window, so the day aggregate looks back furthest.
REFRESH = {
    "observation_15m": (timedelta(days=3), timedelta(minutes=15), timedelta(minutes=5)),
    "observation_1h": (timedelta(days=7), timedelta(hours=1), timedelta(minutes=15)),
    "observation_1d": (timedelta(days=31), timedelta(days=1), timedelta(hours=1)),
}


def _rows(conn: Conn, query: str, params: Any = None) -> list[dict[str, Any]]:
    cur = conn.execute(query, params)
    names = [d.name for d in cur.description or ()]
    return [
        dict(r) if isinstance(r, dict) else dict(zip(names, r, strict=True)) for r in cur.fetchall()
    ]


def configure(conn: Conn, policy: StorePolicy) -> list[str]:
    """(Re)apply the policies of ``policy``; idempotent. The first call also materializes the
    continuous aggregates over their whole range (data stored before migration 0005; the refresh
    policies only look back a few weeks). Returns what was done, for the log."""
    done: list[str] = []
    conn.execute(
        "select set_chunk_time_interval('observation', %s::interval)", (policy.chunk_interval,)
    )
    done.append(f"chunk interval {policy.chunk_interval}")
    conn.execute("select remove_compression_policy('observation', if_exists => true)")
    conn.execute(
        "select add_compression_policy('observation', compress_after => %s::interval)",
        (policy.compress_after,),
    )
    done.append(f"compression after {policy.compress_after}")
    conn.execute("select remove_retention_policy('observation', if_exists => true)")
    if policy.retention is not None:
        conn.execute(
            "select add_retention_policy('observation', drop_after => %s::interval)",
            (policy.retention,),
        )
        done.append(f"retention {policy.retention}")
    for agg, (start, end, every) in REFRESH.items():
        if policy.retention is not None:
            # never refresh over dropped raw data: that would empty the aggregate there
            start = min(start, policy.retention - end)
        conn.execute("select remove_continuous_aggregate_policy(%s, if_exists => true)", (agg,))
        conn.execute(
            "select add_continuous_aggregate_policy(%s, start_offset => %s::interval, "
            "end_offset => %s::interval, schedule_interval => %s::interval)",
            (agg, start, end, every),
        )
        conn.execute("select remove_retention_policy(%s, if_exists => true)", (agg,))
        if policy.rollup_retention is not None:
            conn.execute(
                "select add_retention_policy(%s, drop_after => %s::interval)",
                (agg, policy.rollup_retention),
            )
    done.append("continuous aggregate policies")
    # the policies only look back a few weeks: materialize everything once (existing data)
    key = "timescaledb_aggregates_initialized"
    if not _rows(conn, "select 1 from quartier_meta where key = %s", (key,)):
        refresh_aggregates(conn)
        conn.execute(
            "insert into quartier_meta (key, value) values (%s, now()::text) "
            "on conflict do nothing",
            (key,),
        )
        done.append("continuous aggregates materialized over their whole range")
    for item in done:
        log.info("timescaledb: %s", item)
    return done


def refresh_aggregates(
    conn: Conn, start: datetime | None = None, end: datetime | None = None
) -> None:
    """Materialize the continuous aggregates over ``[start, end)`` (None: unbounded)."""
    for agg in AGGREGATES:
        conn.execute(
            "call refresh_continuous_aggregate(%s, %s::timestamptz, %s::timestamptz)",
            (agg, start, end),
        )


def refresh_after_backfill(conn: Conn, start: datetime, end: datetime) -> bool:
    """After old data was written (an archive import): materialize the continuous aggregates
    over every bucket that ``[start, end]`` touches, whole UTC days (the widest bucket). Without
    it, data below an aggregate's materialization watermark stays invisible in the aggregate
    (real-time aggregation only covers what is newer than the watermark, and the refresh
    policies only look back days to weeks). Returns False (nothing done) on the plain
    PostgreSQL path, whose rollups the writer marks dirty as it writes."""
    if storage_path(conn) != "timescaledb":
        return False
    day = timedelta(days=1)
    first = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last = end.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + day
    log.info("timescaledb: refreshing the continuous aggregates over %s .. %s", first, last)
    refresh_aggregates(conn, first, last)
    return True


def job_ids(conn: Conn) -> list[int]:
    """Quartier's policy jobs (on observation and its continuous aggregates)."""
    rows = _rows(
        conn,
        "select job_id from timescaledb_information.jobs "
        "where hypertable_schema = current_schema() "
        "and hypertable_name = any(%s) order by job_id",
        (["observation", *AGGREGATES],),
    )
    return [int(r["job_id"]) for r in rows]


def run_jobs(conn: Conn) -> list[int]:
    """Run every policy job of Quartier once, now (``CALL run_job``)."""
    ids = job_ids(conn)
    for job in ids:
        conn.execute("call run_job(%s)", (job,))
    return ids


def compress_all(conn: Conn, older_than: timedelta) -> int:
    """Compress every chunk of ``observation`` older than ``older_than`` now."""
    rows = _rows(
        conn,
        "select compress_chunk(c, if_not_compressed => true) as c "
        "from show_chunks('observation', older_than => %s::interval) c",
        (older_than,),
    )
    return len(rows)


# ------------------------------------------------------------------------------------ status
@dataclass
class TimescaleStatus:
    version: str
    chunk_interval: timedelta | None
    chunks: list[dict[str, Any]] = field(default_factory=list)
    before_compression_bytes: int | None = None
    after_compression_bytes: int | None = None
    aggregates: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def compression_ratio(self) -> float | None:
        if not self.before_compression_bytes or not self.after_compression_bytes:
            return None
        return self.before_compression_bytes / self.after_compression_bytes


def status(conn: Conn) -> TimescaleStatus:
    version = timescaledb_version(conn)
    dims = _rows(
        conn,
        "select time_interval from timescaledb_information.dimensions "
        "where hypertable_schema = current_schema() and hypertable_name = 'observation'",
    )
    st = TimescaleStatus(str(version), dims[0]["time_interval"] if dims else None)
    st.chunks = _rows(
        conn,
        """
        select c.chunk_name as name, c.range_start, c.range_end, c.is_compressed,
               pg_total_relation_size(format('%I.%I', c.chunk_schema, c.chunk_name)::regclass)
                   as bytes
        from timescaledb_information.chunks c
        where c.hypertable_schema = current_schema() and c.hypertable_name = 'observation'
        order by c.range_start""",
    )
    comp = _rows(
        conn,
        "select sum(before_compression_total_bytes) as before, "
        "sum(after_compression_total_bytes) as after "
        "from hypertable_compression_stats('observation')",
    )
    if comp:
        st.before_compression_bytes = _int_or_none(comp[0]["before"])
        st.after_compression_bytes = _int_or_none(comp[0]["after"])
    st.aggregates = _rows(
        conn,
        """
        select view_name as name, materialized_only,
               hypertable_size(format('%I.%I', materialization_hypertable_schema,
                                      materialization_hypertable_name)::regclass) as bytes
        from timescaledb_information.continuous_aggregates
        where view_schema = current_schema() order by view_name""",
    )
    st.jobs = _rows(
        conn,
        """
        select j.job_id, j.application_name as name, j.hypertable_name as target,
               j.schedule_interval, j.scheduled, s.last_run_status, s.last_run_started_at,
               s.next_start, s.total_failures
        from timescaledb_information.jobs j
        left join timescaledb_information.job_stats s using (job_id)
        where j.hypertable_schema = current_schema()
        order by j.job_id""",
    )
    return st


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)
