"""Compaction (rewriting a closed month sorted) while the ingester writes late data into that
month: the two deadlock, and PostgreSQL cancels one of them. Each side's way out is tested on its
own, with the deadlock made on purpose rather than hoped for:

1. compaction takes its share lock on the month and is held there (a second connection holds a
   leftover ``observation_p202401_sorted`` that compaction drops first);
2. the ingester writes late data into that month: it takes its lock on ``observation`` and waits
   for the month;
3. compaction is let go and, for the swap, waits for ``observation``: the cycle is closed.

Which of the two PostgreSQL cancels is the one whose deadlock check runs first; the tests pick it
with ``deadlock_timeout`` (the ingester's through the database's default, compaction's on its own
connection), so the outcome does not depend on timing."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from quartier.config import Settings
from quartier.ingest.model import Reading, Uplink
from quartier.ingest.mqtt import Ingester
from quartier.ingest.pipeline import Message
from quartier.ingest.writer import Batch
from quartier.store import rollups

pytestmark = pytest.mark.services

T0 = datetime(2024, 1, 1, tzinfo=UTC)
LATE = T0 + timedelta(days=20, seconds=7)
MONTH = "observation_p202401"
CUTOFF = datetime(2024, 2, 1, tzinfo=UTC)
INGEST_APP = "quartier-ingest"  # the writer's application_name


def _ingester(db_url: str, deadlock_timeout: str) -> Ingester:
    """An ingester whose connections check for deadlocks after ``deadlock_timeout``, with one
    reading stored in January 2024 (device and datastream registered, the month created)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("alter database {} set deadlock_timeout = {}").format(
                sql.Identifier(conn.info.dbname), sql.Literal(deadlock_timeout)
            )
        )
        conn.execute(
            "insert into observation (datastream_id, phenomenon_time, result) "
            "select 1000 + k, %s + g * interval '1 hour', 1 "
            "from generate_series(1, 100) g cross join generate_series(1, 3) k",
            (T0,),
        )
    ing = Ingester(
        Settings(_env_file=None, database={"url": db_url}, mqtt={"url": "mqtt://127.0.0.1:1"})
    )
    first = Batch()
    first.uplinks.append((Uplink("n", "d1", [Reading("pm25", T0, 1.0)]), "t", b"", T0))
    assert ing._store(ing._writers[0], [Message("t", b"", T0)], first)
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "select setting from pg_settings where name = 'deadlock_timeout'"
        ).fetchone()
        assert row is not None and int(row[0]) == int(deadlock_timeout.removesuffix("ms"))
    assert ing.stats.db_errors == 0
    return ing


def _waiting(conn: psycopg.Connection, relation: str, *, pid: int | None = None) -> bool:
    """Whether a backend (``pid``, or else the ingester's) waits for a lock on ``relation``."""
    row = conn.execute(
        "select count(*) from pg_locks l join pg_stat_activity a on a.pid = l.pid "
        "where not l.granted and l.relation = to_regclass(%s) "
        "and (a.pid = %s or (%s::int is null and a.application_name = %s))",
        (relation, pid, pid, INGEST_APP),
    ).fetchone()
    return row is not None and row[0] > 0


def _until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


class Deadlock:
    """Runs compaction and a late write into the month it compacts so that they deadlock."""

    def __init__(self, db_url: str, ing: Ingester, compaction: psycopg.Connection) -> None:
        self.db_url, self.ing, self.compaction = db_url, ing, compaction
        self.done: list[list[str]] = []
        self.stored: list[bool] = []
        self.cycle_seen = False

    def run(self, lock_timeout_s: float) -> None:
        writer = self.ing._writers[0]
        late = Batch()
        late.uplinks.append((Uplink("n", "d1", [Reading("pm25", LATE, 2.0)]), "t", b"", T0))
        cpid = self.compaction.info.backend_pid
        compact = threading.Thread(
            target=lambda: self.done.append(
                rollups.compact(self.compaction, CUTOFF, lock_timeout_s=lock_timeout_s)
            )
        )
        write = threading.Thread(
            target=lambda: self.stored.append(
                self.ing._store(writer, [Message("t", b"", T0)], late)
            )
        )
        with (
            psycopg.connect(self.db_url, autocommit=True) as look,
            psycopg.connect(self.db_url) as holder,
        ):
            holder.execute(
                sql.SQL("create table {} (x int)").format(sql.Identifier(f"{MONTH}_sorted"))
            )
            holder.commit()
            holder.execute(
                sql.SQL("lock table {} in access share mode").format(
                    sql.Identifier(f"{MONTH}_sorted")
                )
            )
            compact.start()
            # 1. compaction holds its share lock on the month and waits for the leftover table
            _until("compaction waits", lambda: _waiting(look, f"{MONTH}_sorted", pid=cpid))
            held = look.execute(
                "select mode from pg_locks where pid = %s and granted "
                "and relation = to_regclass(%s)",
                (cpid, MONTH),
            ).fetchall()
            assert ("ShareLock",) in held
            # 2. the late write takes observation and waits for the month
            write.start()
            _until("the late write waits for the month", lambda: _waiting(look, MONTH))
            # 3. compaction goes on to the swap and waits for observation: a cycle
            holder.commit()
            _until(
                "compaction waits for observation while the writer waits for the month",
                lambda: (
                    (_waiting(look, "observation", pid=cpid) and _waiting(look, MONTH))
                    or not compact.is_alive()
                ),
            )
            self.cycle_seen = compact.is_alive()
            compact.join(60)
            write.join(60)
        assert not compact.is_alive() and not write.is_alive()
        writer.close()

    def late_row(self) -> tuple[str, float] | None:
        with psycopg.connect(self.db_url) as conn:
            row = conn.execute(
                "select tableoid::regclass::text, result from observation "
                "where phenomenon_time = %s",
                (LATE,),
            ).fetchone()
        return None if row is None else (row[0], row[1])


def _messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_writer_cancelled_by_the_deadlock_retries_and_compaction_completes(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The ingester's check runs first (4 s after it began to wait; compaction's only after
    60 s): PostgreSQL cancels the late write, the ingester counts a database error, logs that the
    database gave up the transaction, and writes the batch again once the swap is done."""
    caplog.set_level(logging.WARNING)
    ing = _ingester(db_url, "4000ms")
    with psycopg.connect(db_url, autocommit=True) as compaction:
        compaction.execute("set deadlock_timeout = '60s'")
        run = Deadlock(db_url, ing, compaction)
        run.run(lock_timeout_s=60)
    assert run.cycle_seen
    assert run.done == [[MONTH]]  # compacted in this round: it was not the one cancelled
    assert run.stored == [True]
    assert ing.stats.db_errors == 1  # one retry
    gave_up = _messages(caplog, "database gave up the transaction")
    assert len(gave_up) == 1 and "deadlock detected" in gave_up[0]
    assert _messages(caplog, "postponed") == []
    assert run.late_row() == (MONTH, 2.0)  # in the compacted month


def test_compaction_cancelled_by_the_deadlock_is_done_next_round(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Compaction's check runs first (1 s after it began to wait; the ingester's only after 60 s):
    PostgreSQL cancels compaction, which logs that the month is postponed; the late write goes
    through without a retry, and the next round compacts the month, late row included."""
    caplog.set_level(logging.WARNING)
    ing = _ingester(db_url, "60000ms")
    with psycopg.connect(db_url, autocommit=True) as compaction:
        compaction.execute("set deadlock_timeout = '1s'")
        run = Deadlock(db_url, ing, compaction)
        run.run(lock_timeout_s=60)
        assert run.cycle_seen
        assert run.done == [[]]  # cancelled: nothing compacted this round
        assert _messages(caplog, f"compaction of {MONTH} postponed") == [
            f"compaction of {MONTH} postponed: a writer needed the same locks"
        ]
        assert run.stored == [True]
        assert ing.stats.db_errors == 0  # the writer was not the one cancelled
        assert _messages(caplog, "database gave up the transaction") == []
        assert compaction.execute(
            "select count(*) from observation_partition_compacted where relname = %s", (MONTH,)
        ).fetchone() == (0,)
        assert rollups.compact(compaction, CUTOFF) == [MONTH]  # the next round
        assert compaction.execute(
            "select count(*) from observation_partition_compacted where relname = %s", (MONTH,)
        ).fetchone() == (1,)
    assert run.late_row() == (MONTH, 2.0)
