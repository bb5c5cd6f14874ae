"""Read replicas: a pool per PostgreSQL standby, the one a read is sent to, and each one's state.

The API reads open data from standbys (``database.replica_urls``); writes and every request that
must see its own writes stay on the primary (``quartier.api.deps.get_conn`` decides). A
:class:`ReplicaSet` keeps one pool per standby and a checker thread that asks each standby,
every ``replica_check_seconds`` on its own connection, how far its replay is behind
(:data:`LAG_SQL`); a standby that does not answer, lags more than ``replica_max_lag_seconds``
or does not stream from its primary is skipped until a later check finds it fit. Reads go round
robin over the fit ones; with none fit, to the primary (``choose`` returns None).

What "behind" means: a standby that has received WAL it has not replayed yet is behind by the
age of the last transaction it replayed (PostgreSQL's ``pg_last_xact_replay_timestamp``); one
that has replayed all it received is not behind. A standby whose WAL receiver is not running
(its primary out of reach, or replication broken) may be behind without knowing it, so it counts
as lagging too. See docs/scaling.md.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from quartier.config import DatabaseSettings, _read_secret, _with_password, database_password

log = logging.getLogger(__name__)

#: How far a standby's replay is behind (seconds), whether it is a standby at all, and whether it
#: streams from its primary (the WAL receiver's pid is visible to any role; its other columns only
#: to ``pg_read_all_stats``).
LAG_SQL = """
select pg_is_in_recovery() as in_recovery,
       case when not pg_is_in_recovery()
                 or pg_last_wal_receive_lsn() is not distinct from pg_last_wal_replay_lsn()
            then 0.0
            else coalesce(extract(epoch from clock_timestamp()
                                  - pg_last_xact_replay_timestamp()), 0.0)::float8
       end as lag_seconds,
       (select pid from pg_stat_wal_receiver) is not null as streaming
"""

#: Seconds a read waits for a standby's pooled connection before it goes to the primary.
CONNECTION_TIMEOUT = 2.0

State = Literal["unknown", "ok", "lagging", "down"]


@dataclass(frozen=True)
class ReplicaStatus:
    """What ``/health`` shows of a standby (its name, never its address)."""

    name: str
    state: State
    lag_seconds: float | None
    reads: int
    detail: str


def replica_urls(db: DatabaseSettings) -> list[str]:
    """``db.replica_urls``, each with the password of ``replica_password_file`` when its URL
    has none (:class:`~quartier.errors.ConfigError` if the file cannot be read)."""
    if not db.replica_urls or db.replica_password_file is None:
        return list(db.replica_urls)
    password = _read_secret(db.replica_password_file)
    return [
        url if database_password(url) is not None else _with_password(url, password)
        for url in db.replica_urls
    ]


def address(url: str) -> str:
    """``host:port/dbname`` of a PostgreSQL URL or conninfo string, for logs (no password)."""
    if "://" in url:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port or 5432}{parts.path}"
    info = conninfo_to_dict(url)
    return f"{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


class Replica:
    """One standby: its pool, its last checked state and how many reads it served."""

    def __init__(self, index: int, url: str, pool: ConnectionPool) -> None:
        self.name = f"replica-{index}"
        self.url = url
        self.address = address(url)
        self.pool = pool
        self.state: State = "unknown"
        self.lag_seconds: float | None = None
        self.detail = "not checked yet"
        self.reads = 0
        self._check_conn: psycopg.Connection[Any] | None = None

    def status(self) -> ReplicaStatus:
        return ReplicaStatus(self.name, self.state, self.lag_seconds, self.reads, self.detail)


class ReplicaSet:
    """The API's standbys. ``make_pool(url, name)`` makes an unopened pool like the primary's;
    :meth:`open` opens them and starts the checker thread, :meth:`close` stops both."""

    def __init__(
        self,
        urls: list[str],
        make_pool: Callable[[str, str], ConnectionPool],
        *,
        max_lag_seconds: float,
        check_seconds: float,
    ) -> None:
        self.replicas = [
            Replica(i, url, make_pool(url, f"quartier-api-replica-{i}"))
            for i, url in enumerate(urls, start=1)
        ]
        self.max_lag_seconds = max_lag_seconds
        self.check_seconds = check_seconds
        #: reads that went to the primary although they could have gone to a standby
        self.primary_reads = 0
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifetime
    def open(self) -> None:
        for replica in self.replicas:
            replica.pool.open(wait=False)
        self.check()  # the first answer before the first request
        self._thread = threading.Thread(target=self._run, name="replica-check", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for replica in self.replicas:
            if replica._check_conn is not None:
                replica._check_conn.close()
            replica.pool.close()

    def _run(self) -> None:
        while not self._stop.wait(self.check_seconds):
            self.check()

    # ---------------------------------------------------------------- state
    def check(self) -> None:
        """Ask every standby how far behind it is, and set its state."""
        for replica in self.replicas:
            self._check_one(replica)

    def _check_one(self, replica: Replica) -> None:
        timeout = max(1, round(min(self.check_seconds * 2, 5)))
        try:
            if replica._check_conn is None or replica._check_conn.closed:
                replica._check_conn = psycopg.connect(
                    replica.url,
                    autocommit=True,
                    connect_timeout=timeout,
                    application_name=f"quartier-api-{replica.name}-check",
                    options=f"-c statement_timeout={timeout * 1000}",
                )
            row = replica._check_conn.execute(LAG_SQL).fetchone()
        except psycopg.Error as exc:
            if replica._check_conn is not None:
                replica._check_conn.close()
                replica._check_conn = None
            self._set(replica, "down", None, "does not answer", exc)
            return
        assert row is not None
        in_recovery, lag, streaming = bool(row[0]), float(row[1]), bool(row[2])
        if in_recovery and not streaming:
            self._set(replica, "lagging", lag, "not streaming from its primary")
        elif lag > self.max_lag_seconds:
            self._set(
                replica, "lagging", lag, f"{lag:.1f} s behind (limit {self.max_lag_seconds:g} s)"
            )
        else:
            self._set(replica, "ok", lag, "ok")

    def _set(
        self,
        replica: Replica,
        state: State,
        lag: float | None,
        detail: str,
        exc: BaseException | None = None,
    ) -> None:
        with self._lock:
            before = replica.state
            replica.state, replica.lag_seconds, replica.detail = state, lag, detail
        if state != before:
            level = logging.INFO if state == "ok" else logging.WARNING
            log.log(
                level,
                "read replica %s (%s): %s%s",
                replica.name,
                replica.address,
                detail,
                f" ({str(exc).strip()})" if exc is not None else "",
            )

    def mark_down(self, replica: Replica, exc: BaseException) -> None:
        """A read found ``replica`` broken: skip it until a check finds it fit again."""
        self._set(replica, "down", None, "does not answer", exc)

    def statuses(self) -> list[ReplicaStatus]:
        with self._lock:
            return [replica.status() for replica in self.replicas]

    # ---------------------------------------------------------------- reads
    def choose(self) -> Replica | None:
        """The next fit standby (round robin), or None (then the read goes to the primary)."""
        with self._lock:
            fit = [r for r in self.replicas if r.state == "ok"]
            if not fit:
                return None
            return fit[next(self._turn) % len(fit)]

    def getconn(self, replica: Replica) -> psycopg.Connection[Any] | None:
        """A pooled connection to ``replica`` (give it back with ``replica.pool.putconn``),
        counted as one of its reads; None, and ``replica`` marked down, when it cannot give one
        within :data:`CONNECTION_TIMEOUT` (the pool checks a connection before handing it out)."""
        try:
            conn = replica.pool.getconn(timeout=CONNECTION_TIMEOUT)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            self.mark_down(replica, exc)
            return None
        with self._lock:
            replica.reads += 1
        return conn

    def count_primary_read(self) -> None:
        with self._lock:
            self.primary_reads += 1
