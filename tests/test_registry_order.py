"""Two writers storing batches of the same new devices at the same time (two ingest connections,
or two ingesters on one shared subscription, at a fleet's first contact): the registrations of a
batch take locks held until it commits, so unless every writer takes them in one order, the
writers deadlock and PostgreSQL aborts one batch after a second's wait (``Registry.prepare``)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from quartier.ingest.model import Batch, Reading, Uplink
from quartier.ingest.writer import BatchWriter

pytestmark = pytest.mark.services

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DEVICES = 40


def _batch(round_: int, order: list[int], offset: int) -> Batch:
    b = Batch(source="http")
    t = T0 + timedelta(minutes=offset)
    for i in order:
        readings = [Reading("pm25", t, float(i)), Reading("pm10", t, float(i))]
        up = Uplink("order", f"r{round_}-d{i:02d}", readings)
        b.uplinks.append((up, "t", b"", t))
    return b


def test_writers_registering_the_same_new_devices_in_opposite_orders_do_not_deadlock(
    db_url: str,
) -> None:
    writers = [BatchWriter(db_url, auto_register=True) for _ in range(2)]
    errors: list[BaseException] = []
    try:
        for w in writers:
            w.write(Batch(source="http"))  # connect and preload before the race
        for round_ in range(4):
            forward = list(range(DEVICES))
            batches = [_batch(round_, forward, 0), _batch(round_, forward[::-1], 1)]
            start = threading.Barrier(2)

            def run(w: BatchWriter, b: Batch, start: threading.Barrier = start) -> None:
                start.wait()
                try:
                    w.write(b)
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [
                threading.Thread(target=run, args=(w, b))
                for w, b in zip(writers, batches, strict=True)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        assert not errors, errors
        with psycopg.connect(db_url) as conn:
            row = conn.execute(
                "select count(distinct d.id), count(distinct dd.datastream_id), count(o.*)"
                " from device d join device_datastream dd on dd.device_id = d.id"
                " join observation o on o.datastream_id = dd.datastream_id"
                " where d.network = 'order'"
            ).fetchone()
        # every device once, two datastreams each, each writer's reading of each stored
        assert row == (4 * DEVICES, 4 * DEVICES * 2, 4 * DEVICES * 2 * 2)
    finally:
        for w in writers:
            w.close()
