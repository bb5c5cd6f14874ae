"""What ``quartier db status`` shows, as data: which storage path is in use, how big things are,
how old the data is, and whether the upkeep (policies on TimescaleDB, the rollup refresh on plain
PostgreSQL) keeps up.

:func:`collect` reads everything into a :class:`StoreStatus` (plain data); the CLI
(``quartier.cli.db``) renders it. A database that is not migrated is :class:`NotMigratedError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from quartier.store import timescale
from quartier.store.db import Conn
from quartier.store.migrate import storage_path


@dataclass
class Part:
    """A monthly partition (plain PostgreSQL) or a chunk (TimescaleDB)."""

    name: str
    start: datetime | None
    end: datetime | None
    bytes: int
    state: str  # "compressed", "compacted", "" …


@dataclass
class StoreStatus:
    path: str
    server_version: str
    observation_rows_estimate: int
    observation_bytes: int
    oldest: datetime | None
    newest: datetime | None
    datastreams_with_data: int
    parts: list[Part] = field(default_factory=list)
    rollups: dict[str, int] = field(default_factory=dict)  # name -> bytes
    compression_ratio: float | None = None
    compression_note: str = ""
    dirty_buckets: int | None = None  # plain PostgreSQL: 15-minute buckets awaiting refresh
    oldest_dirty: datetime | None = None
    jobs: list[dict[str, Any]] = field(default_factory=list)
    timescaledb_version: str | None = None

    @property
    def bytes_per_observation(self) -> float | None:
        if self.observation_rows_estimate <= 0:
            return None
        return self.observation_bytes / self.observation_rows_estimate


def _one(conn: Conn, query: str | psycopg.sql.Composed, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    if row is None:
        return None
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def _rows(conn: Conn, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    return [
        tuple(r.values()) if isinstance(r, dict) else tuple(r)
        for r in conn.execute(query, params).fetchall()
    ]


def collect(conn: Conn) -> StoreStatus:
    path = storage_path(conn)
    newest = _one(conn, "select max(phenomenon_time) from observation_latest")
    st = StoreStatus(
        path=path,
        server_version=str(_one(conn, "show server_version")),
        observation_rows_estimate=0,
        observation_bytes=0,
        oldest=None,
        newest=newest,
        datastreams_with_data=int(_one(conn, "select count(*) from observation_latest") or 0),
    )
    if path == "timescaledb":
        _timescale(conn, st)
    else:
        _plain(conn, st)
    return st


def _plain(conn: Conn, st: StoreStatus) -> None:
    parts = _rows(
        conn,
        """
        select c.relname, pg_total_relation_size(c.oid), greatest(c.reltuples, 0)::bigint,
               exists (select 1 from observation_partition_compacted p
                       where p.relname = c.relname)
        from pg_inherits i join pg_class c on c.oid = i.inhrelid
        where i.inhparent = 'observation'::regclass
        order by c.relname""",
    )
    for name, size, rows, compacted in parts:
        start = end = None
        if re.fullmatch(r"observation_p\d{6}", name):
            start = datetime(int(name[13:17]), int(name[17:19]), 1, tzinfo=UTC)
            end = datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)
        st.parts.append(Part(name, start, end, int(size), "compacted" if compacted else ""))
        st.observation_bytes += int(size)
        st.observation_rows_estimate += int(rows)
    for name in ("observation_15m", "observation_1h", "observation_1d"):
        st.rollups[name] = int(_one(conn, "select pg_total_relation_size(%s::regclass)", (name,)))
    st.oldest = _plain_oldest(conn, st.parts)
    st.compression_note = (
        "no compression on plain PostgreSQL; closed months get their index packed "
        f"({sum(p.state == 'compacted' for p in st.parts)} compacted)"
    )
    st.dirty_buckets = int(_one(conn, "select count(*) from observation_dirty") or 0)
    st.oldest_dirty = _one(conn, "select min(bucket) from observation_dirty")
    st.jobs = [
        {
            "name": "rollup refresh + partitions + retention + compaction",
            "runs": "quartier.store.rollups.maintain (ingester thread or `quartier db maintain`)",
            "backlog": f"{st.dirty_buckets} dirty 15-min buckets"
            + (f", oldest {st.oldest_dirty:%Y-%m-%d %H:%M}Z" if st.oldest_dirty else ""),
        }
    ]


def _plain_oldest(conn: Conn, parts: list[Part]) -> datetime | None:
    """The oldest observation without scanning everything: the first non-empty monthly partition,
    searched a day, a week, then all of it (BRIN on phenomenon_time), and the default one."""
    found: list[datetime] = []
    default = _one(conn, "select min(phenomenon_time) from observation_default")
    if default is not None:
        found.append(default)
    for p in sorted((p for p in parts if p.start is not None), key=lambda p: p.start or 0):
        table = psycopg.sql.Identifier(p.name)
        if _one(conn, psycopg.sql.SQL("select 1 from {} limit 1").format(table)) is None:
            continue
        for days in (1, 7, 31):
            assert p.start is not None
            t = _one(
                conn,
                psycopg.sql.SQL(
                    "select min(phenomenon_time) from {} where phenomenon_time < %s"
                ).format(table),
                (p.start + timedelta(days=days),),
            )
            if t is not None:
                found.append(t)
                break
        break
    return min(found) if found else None


def _timescale(conn: Conn, st: StoreStatus) -> None:
    ts = timescale.status(conn)
    st.timescaledb_version = ts.version
    for c in ts.chunks:
        st.parts.append(
            Part(
                c["name"],
                c["range_start"],
                c["range_end"],
                int(c["bytes"] or 0),
                "compressed" if c["is_compressed"] else "",
            )
        )
    st.observation_bytes = int(_one(conn, "select hypertable_size('observation')") or 0)
    st.observation_rows_estimate = int(
        _one(conn, "select approximate_row_count('observation')") or 0
    )
    row = _rows(conn, "select min(phenomenon_time), max(phenomenon_time) from observation")[0]
    st.oldest, st.newest = row[0], row[1] or st.newest
    st.compression_ratio = ts.compression_ratio
    st.compression_note = (
        f"{sum(p.state == 'compressed' for p in st.parts)} of {len(st.parts)} chunks compressed"
        + (
            f", {ts.before_compression_bytes:,} → {ts.after_compression_bytes:,} bytes"
            if ts.before_compression_bytes and ts.after_compression_bytes
            else ""
        )
    )
    for a in ts.aggregates:
        st.rollups[a["name"]] = int(a["bytes"] or 0)
    st.jobs = ts.jobs
