"""Compaction (rewriting a closed month sorted) while the ingester writes late data into that
month: the two may deadlock; whichever PostgreSQL cancels retries, and nothing is lost."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from quartier.config import Settings
from quartier.ingest.model import Reading, Uplink
from quartier.ingest.mqtt import Ingester
from quartier.ingest.pipeline import Message
from quartier.ingest.writer import Batch
from quartier.store import rollups

pytestmark = pytest.mark.services

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_late_data_during_compaction_is_stored(db_url: str) -> None:
    ing = Ingester(
        Settings(_env_file=None, database={"url": db_url}, mqtt={"url": "mqtt://127.0.0.1:1"})
    )
    writer = ing._writers[0]
    first = Batch()
    first.uplinks.append((Uplink("n", "d1", [Reading("pm25", T0, 1.0)]), "t", b"", T0))
    assert ing._store(writer, [Message("t", b"", T0)], first)
    with psycopg.connect(db_url, autocommit=True) as conn:
        # a month big enough that rewriting it takes a while (1.5 M rows in time order)
        n = conn.execute(
            "insert into observation (datastream_id, phenomenon_time, result) "
            "select 1000 + k, %s + g * interval '1 minute', 1 "
            "from generate_series(1, 43000) g cross join generate_series(1, 35) k",
            (T0,),
        ).rowcount
        assert n == 1_505_000
    late_time = T0 + timedelta(days=20, seconds=7)
    late = Batch()
    late.uplinks.append((Uplink("n", "d1", [Reading("pm25", late_time, 2.0)]), "t", b"", T0))
    stored: list[bool] = []

    def write_late() -> None:
        time.sleep(0.3)  # while the month is being copied
        stored.append(ing._store(writer, [Message("t", b"", T0)], late))

    thread = threading.Thread(target=write_late)
    thread.start()
    with psycopg.connect(db_url, autocommit=True) as conn:
        done = rollups.compact(conn, datetime(2024, 2, 1, tzinfo=UTC))
        thread.join(60)
        if not done:  # PostgreSQL cancelled the compaction instead: the next round does it
            done = rollups.compact(conn, datetime(2024, 2, 1, tzinfo=UTC))
        row = conn.execute(
            "select result from observation where phenomenon_time = %s", (late_time,)
        ).fetchone()
    writer.close()
    assert stored == [True]
    assert done == ["observation_p202401"]
    assert row == (2.0,)
