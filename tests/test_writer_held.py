"""BatchWriter.begin/end (SensorThings ``$batch`` change sets): a held transaction stores all of
its writes at ``end(commit=True)`` and none of them at ``end(commit=False)``, also when a write
runs no SQL before its COPY (whose savepoint must not become the outer transaction)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from quartier.ingest.model import Batch, Reading, Uplink
from quartier.ingest.writer import BatchWriter

pytestmark = pytest.mark.services

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _batch(day: int, value: float) -> Batch:
    t = T0 + timedelta(days=day)
    b = Batch(source="http")
    b.uplinks.append((Uplink("city", "held-1", [Reading("pm25", t, value)]), "t", b"", t))
    return b


def _count(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("select count(*) from observation").fetchone()
        assert row is not None
        return int(row[0])


def test_a_rolled_back_held_transaction_stores_nothing(db_url: str) -> None:
    w = BatchWriter(db_url, auto_register=True)
    try:
        w.write(_batch(0, 1.0))  # registers the device; committed on its own
        assert _count(db_url) == 1
        w.begin()
        w.write(_batch(1, 2.0))  # no prepare: the COPY is the transaction's first statement
        w.write(_batch(2, 3.0))
        assert _count(db_url) == 1  # not visible outside before end()
        w.end(commit=False)
        assert _count(db_url) == 1
        w.begin()
        w.write(_batch(3, 4.0))
        w.write(_batch(4, 5.0))
        w.end(commit=True)
        assert _count(db_url) == 3
        w.write(_batch(5, 6.0))  # after end(), writes commit on their own again
        assert _count(db_url) == 4
    finally:
        w.close()
