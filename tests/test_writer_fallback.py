"""BatchWriter without COPY (``copy=False``, what it does on PGlite) stores exactly what it stores
with COPY: the same observations, parameters, duplicates, latest values and speed tests, batch by
batch, on two fresh plain PostgreSQL databases. ``sample_batches`` is also what
tests/test_timescaledb.py writes through BatchWriter on the TimescaleDB engine."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from dbs import clone, drop

from quartier.config import IngestSettings
from quartier.ingest import writer as writer_module
from quartier.ingest.model import Batch, Position, SpeedTest, WriteResult
from quartier.ingest.pipeline import Message, build_batch
from quartier.ingest.writer import BatchWriter
from quartier.pseudonym import Pseudonymizer

pytestmark = pytest.mark.services

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CFG = IngestSettings(max_future_seconds=600)
T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
SECRET = b"test-secret-of-32-bytes-exactly!"  # speed tests are stored under pseudonyms


def _msg(net: str, device: str, readings: list[dict[str, Any]], **extra: Any) -> Message:
    return Message(
        f"quartier/v1/{net}/{device}/up", orjson.dumps({"readings": readings, **extra}), NOW
    )


def _reading(q: str, t: datetime, v: float, **extra: Any) -> dict[str, Any]:
    return {"quantity": q, "time": t.isoformat(), "value": v, **extra}


def sample_batches(net: str = "fb", t0: datetime = T0, days: int = 12) -> list[Batch]:
    """Three batches of native messages over ``days`` days from ``t0``: plain readings (the
    columnar fast path), readings with parameters (the row path), a reading twice in one batch,
    a second batch that redelivers part of the first with other values plus new readings, speed
    tests, and a message with a refused reading."""
    first: list[Message] = []
    for d in range(days):
        for dev, q in (("s-1", "pm10"), ("s-2", "pm25"), ("s-2", "temperature")):
            base = 10.0 if q != "temperature" else -3.0
            first.append(
                _msg(
                    net,
                    dev,
                    [
                        _reading(q, t0 + timedelta(days=d, minutes=10 * k), base + d + k / 8)
                        for k in range(60)
                    ],
                    location={"lat": 52.5 + d / 1000, "lon": 13.4},
                )
            )
    # parameters: only the full decoder takes them (rows with jsonb)
    with_params = [
        _reading("pm10", t0 + timedelta(hours=h, minutes=5), 30.0 + h, parameters={"rssi": -h})
        for h in range(24)
    ]
    first.append(_msg(net, "s-3", with_params))
    # the same reading twice within the batch (first wins), once on each path
    first.append(_msg(net, "s-1", [_reading("pm10", t0, 999.0)]))
    first.append(
        _msg(
            net, "s-3", [_reading("pm10", t0 + timedelta(minutes=5), 888.0, parameters={"rssi": 1})]
        )
    )
    # a refused reading (a negative PM value) beside a good one
    first.append(
        _msg(
            net, "s-4", [_reading("pm10", t0, -5.0), _reading("pm10", t0 + timedelta(hours=1), 7.5)]
        )
    )
    second = [
        # redelivered with other values: stored once, the first value stays
        _msg(
            net, "s-2", [_reading("pm25", t0 + timedelta(minutes=10 * k), 500.0) for k in range(30)]
        ),
        _msg(
            net,
            "s-3",
            [_reading("pm10", t0 + timedelta(hours=2, minutes=5), 1.0, parameters={"rssi": 9})],
        ),
        # new
        _msg(
            net,
            "s-5",
            [
                _reading("humidity", t0 + timedelta(days=days, minutes=k), 40.0 + k)
                for k in range(90)
            ],
        ),
    ]
    batches = [build_batch(first, CFG, NOW), build_batch(second, CFG, NOW)]
    speed = Batch()
    speed.speedtests = [
        SpeedTest(
            "breitbandmessung",
            f"st-{i}",
            t0 + timedelta(hours=i),
            Position(52.52 + i / 100, 13.405 - i / 100),
            100.0 / 3 + i,
            None if i % 2 else 9.7,
            12.3456789 + i,
            "ftth" if i % 3 else None,
            "Telekom",
        )
        for i in range(6)
    ]
    speed.speedtests.append(speed.speedtests[0])  # a redelivered speed test
    batches.append(speed)
    return batches


def result_tuple(res: WriteResult) -> tuple[int, int, int, int]:
    return (res.observations, res.duplicates, res.speedtests, res.rejects)


def stored(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a batch writes, keyed by device and quantity (not by generated ids)."""
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        conn.execute("set timezone = 'UTC'")

        def q(query: str) -> list[tuple[Any, ...]]:
            return list(conn.execute(query).fetchall())  # type: ignore[arg-type]

        stream = (
            "from device_datastream dd join device d on d.id = dd.device_id "
            "join {t} o on o.datastream_id = dd.datastream_id"
        )
        return {
            "observation": q(
                "select d.device_key, dd.quantity, o.phenomenon_time, o.result, o.parameters "
                + stream.format(t="observation")
                + " order by 1, 2, 3"
            ),
            "latest": q(
                "select d.device_key, dd.quantity, o.phenomenon_time, o.result "
                + stream.format(t="observation_latest")
                + " order by 1, 2"
            ),
            "speedtest": q(
                "select measured_at, source, device_key, geom::text, download_mbps, upload_mbps,"
                " latency_ms, technology, operator from speedtest order by 1, 3"
            ),
            "rejects": q("select topic, reason, source from ingest_reject order by 1, 2"),
        }


@pytest.fixture
def second_db_url(service_urls: Any, template_db: str) -> Iterator[str]:
    """One more fresh migrated database (the conftest's db_url is the first)."""
    url = clone(service_urls.database_url, template_db, "quartier_t")
    yield url
    drop(service_urls.database_url, url)


def test_insert_fallback_stores_exactly_what_copy_stores(
    db_url: str, second_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    results: dict[bool, list[tuple[int, int, int, int]]] = {}
    fallbacks: dict[bool, int] = {}
    for use_copy, url in ((True, db_url), (False, second_db_url)):
        w = BatchWriter(url, auto_register=True, copy=use_copy, pseudonyms=Pseudonymizer(SECRET))
        try:
            if not use_copy:  # prove the fallback never reaches COPY

                def no_copy(*_: Any, **__: Any) -> Any:
                    raise AssertionError("COPY used by a writer with copy=False")

                monkeypatch.setattr(writer_module, "write_copy", no_copy)
                monkeypatch.setattr(psycopg.Cursor, "copy", no_copy)
            results[use_copy] = [result_tuple(w.write(b)) for b in sample_batches()]
            fallbacks[use_copy] = w.fallbacks
        finally:
            w.close()
            monkeypatch.undo()
    assert results[True] == results[False]
    assert fallbacks[True] == fallbacks[False] == 1  # the redelivery took the staging path
    on_copy, on_insert = stored(db_url), stored(second_db_url)
    assert on_copy == on_insert
    obs = on_copy["observation"]
    # the sample is what it claims to be: parameters kept, first value won, nothing doubled
    assert ("s-3", "pm10", T0 + timedelta(minutes=5), 30.0, {"rssi": 0}) in obs
    assert ("s-1", "pm10", T0, 10.0, None) in obs
    assert ("s-2", "pm25", T0, 10.0, None) in obs  # not the redelivered 500.0
    assert ("s-3", "pm10", T0 + timedelta(hours=2, minutes=5), 32.0, {"rssi": -2}) in obs
    assert not any(r[3] in (500.0, 999.0, 888.0) for r in obs)
    assert len(obs) == len({r[:3] for r in obs}) == results[True][0][0] + results[True][1][0]
    assert len(on_copy["speedtest"]) == 6 and on_copy["rejects"]


def test_copy_is_chosen_from_the_server(db_url: str) -> None:
    """copy=None (the default) uses COPY on PostgreSQL; PGlite is recognised by version()."""
    w = BatchWriter(db_url, auto_register=True)
    try:
        assert w._session(w._connection()) == (True, False)
    finally:
        w.close()


def test_fallback_rows_equal_copy_rows_for_nan_none_and_parameters(db_url: str) -> None:
    """Row by row, through BatchWriter._copy into its staging table: NaN in the numpy columns is
    stored as NULL, NaN in rows stays NaN, and parameters (jsonb or none) are kept."""
    import numpy as np
    from psycopg.types.json import Jsonb

    t = datetime(2026, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    us = (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    columns = (
        np.array([1, 2, 3], dtype=np.int64),
        np.array([us, us + 1, us - 10**12], dtype=np.int64),
        np.array([1.5, np.nan, -0.0], dtype=np.float64),
    )
    rows = [
        (4, t, float("nan"), None),
        (5, t, 2.25, Jsonb({"rssi": -80, "snr": 7.5})),
        (6, t - timedelta(days=400), 1e300, Jsonb([1, "x"])),
    ]
    got = {}
    for use_copy in (True, False):
        w = BatchWriter(db_url, auto_register=False, copy=use_copy)
        try:
            conn = w._connection()
            with conn.transaction():
                w._copy(conn, "_obs_stage", rows, columns)
                got[use_copy] = conn.execute(
                    "select datastream_id, phenomenon_time, result::text, parameters "
                    "from _obs_stage order by 1"
                ).fetchall()
        finally:
            w.close()
    assert got[True] == got[False]
    assert [r[2] for r in got[True]] == ["1.5", None, "-0", "NaN", "2.25", "1e+300"]
    assert got[True][4][3] == {"rssi": -80, "snr": 7.5}
