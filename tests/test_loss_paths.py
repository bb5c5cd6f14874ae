"""Paths where data could be lost, hidden or stalled (issue #10, items 1, 2, 3 and 5), each with
real Mosquitto and PostgreSQL: a replay that cannot store must not hide the reject; a failing
writer thread must stop the ingester; a database-wide error must not turn messages into rejects;
the latest value must be the stored one."""

from __future__ import annotations

import base64
import logging
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql
from test_ingest import count, publish, wait_for

from quartier.config import Settings
from quartier.ingest import rejects
from quartier.ingest.model import Batch, Position, Reject, SpeedTest
from quartier.ingest.mqtt import Ingester
from quartier.ingest.pipeline import Message, build_batch
from quartier.ingest.writer import BatchWriter

pytestmark = pytest.mark.services

T = datetime(2026, 11, 1, 10, tzinfo=UTC)
NOW = datetime(2026, 11, 2, tzinfo=UTC)


def _native(value: float, quantity: str = "pm25", time_: str = "2026-11-01T10:00:00Z") -> bytes:
    return orjson.dumps({"time": time_, "quantity": quantity, "value": value})


def _with_ingest(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"ingest": settings.ingest.model_copy(update=changes)})


def _open_rejects(url: str) -> list[tuple[str, str, bool]]:
    with psycopg.connect(url) as conn:
        return [
            (str(r[0]), str(r[1]), r[2] is not None)
            for r in conn.execute(
                "select topic, reason, replayed_at from ingest_reject order by id"
            ).fetchall()
        ]


# ---------------------------------------------------------------------------- 1. replay
def test_replay_of_an_unknown_device_keeps_the_reject_listed(settings: Settings, db_url: str):
    cfg = _with_ingest(settings, auto_register=False).ingest
    w = BatchWriter(db_url, auto_register=False)
    w.write(Batch(rejects=[Reject("quartier/v1/n/d/up", _native(5.0), "unknown_device", "x", T)]))
    w.close()

    res = rejects.replay(db_url, cfg, NOW)

    assert (res.tried, res.stored, res.still_failing) == (1, 0, 1)
    assert count(db_url, "select count(*) from observation") == 0
    # still listed (not marked replayed), once, with today's reason and detail
    listed = rejects.list_rejects(db_url)
    assert [(r["reason"], r["replayed_at"]) for r in listed] == [("unknown_device", None)]
    assert "not registered" in listed[0]["detail"]
    assert count(db_url, "select count(*) from ingest_reject") == 1

    # once the device may register, the same reject replays and is stored
    res = rejects.replay(db_url, _with_ingest(settings, auto_register=True).ingest, NOW)
    assert (res.tried, res.stored, res.still_failing) == (1, 1, 0)
    assert count(db_url, "select count(*) from observation") == 1
    assert rejects.list_rejects(db_url) == []


def test_replay_of_a_message_with_nothing_to_store_keeps_the_reject(
    settings: Settings, db_url: str
):
    # a Decentlab frame whose flags announce no sensor: decodes to no readings at all
    frm = base64.b64encode(bytes([2, 0x01, 0x02, 0x00, 0x00])).decode()
    payload = orjson.dumps(
        {
            "end_device_ids": {
                "device_id": "dev-1",
                "application_ids": {"application_id": "city-air"},
            },
            "received_at": "2026-11-01T10:00:00Z",
            "uplink_message": {"f_port": 1, "frm_payload": frm},
        }
    )
    topic = "v3/city-air/devices/dev-1/up"
    w = BatchWriter(db_url, auto_register=True)
    w.write(Batch(rejects=[Reject(topic, payload, "unknown_model", "no codec", T)]))
    w.close()
    cfg = _with_ingest(settings, ttn_codecs={"dev-1": "decentlab-dl-pm"}).ingest

    res = rejects.replay(db_url, cfg, NOW)

    assert (res.stored, res.still_failing) == (0, 1)
    assert _open_rejects(db_url) == [(topic, "no_readings", False)]


def test_replay_of_a_message_still_invalid_records_the_new_reason(settings, db_url):
    w = BatchWriter(db_url, auto_register=True)
    w.write(Batch(rejects=[Reject("quartier/v1/n/d/up", _native(-5.0), "decoder_error", "x", T)]))
    w.close()
    res = rejects.replay(db_url, settings.ingest, NOW)
    assert (res.stored, res.still_failing) == (0, 1)
    [row] = rejects.list_rejects(db_url)
    assert row["reason"] == "out_of_range" and row["replayed_at"] is None
    assert count(db_url, "select count(*) from observation") == 0


# ------------------------------------------------------------ 2. a writer thread fails
def _run(ing: Ingester) -> threading.Thread:
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    assert ing.connected.wait(10)
    return thread


def test_a_failing_writer_thread_stops_the_ingester_and_loses_nothing(
    settings: Settings, network: str, db_url: str, caplog: pytest.LogCaptureFixture
):
    settings = _with_ingest(settings, writers=2, batch_max=5, batch_ms=20)
    ing = Ingester(settings)
    slow, failing = ing._writers
    real_write = slow.write

    def slow_write(batch: Batch) -> Any:  # so that writer 1 surely gets batches too
        time.sleep(0.2)
        return real_write(batch)

    def broken_write(batch: Batch) -> Any:
        raise RuntimeError("injected writer failure")

    slow.write = slow_write  # type: ignore[method-assign]
    failing.write = broken_write  # type: ignore[method-assign]
    caplog.set_level(logging.CRITICAL, logger="quartier.ingest.mqtt")
    thread = _run(ing)
    n = 60
    topics = [
        (
            f"quartier/v1/{network}/d{i % 3}/up",
            _native(float(i), time_=f"2026-11-01T10:{i:02d}:00Z"),
        )
        for i in range(n)
    ]
    publish(settings, topics)

    thread.join(20)
    assert not thread.is_alive(), "the ingester kept running after a writer thread failed"
    assert isinstance(ing.failed, RuntimeError)
    assert any(
        "writer 1" in r.getMessage() and "injected writer failure" in r.getMessage()
        for r in caplog.records
    )
    stored_before = count(db_url, "select count(*) from observation")
    assert stored_before < n  # the failed batches were not stored …

    # … and not acknowledged: a new ingester on the same session receives them again
    again = Ingester(settings)
    thread = _run(again)
    wait_for(lambda: count(db_url, "select count(*) from observation") == n)
    again.stop_event.set()
    thread.join(15)
    assert again.failed is None
    assert count(db_url, "select count(*) from ingest_reject") == 0
    assert (
        count(db_url, "select count(distinct (datastream_id, phenomenon_time)) from observation")
        == n
    )


# ----------------------------------------------- 3. database-wide errors are retried
def _dbname(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])


def _admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname="postgres"), autocommit=True)


def _messages(network: str, start: int, n: int) -> list[tuple[str, bytes]]:
    return [
        (
            f"quartier/v1/{network}/d{i % 4}/up",
            _native(float(i), time_=f"2026-11-01T{10 + i // 60:02d}:{i % 60:02d}:00Z"),
        )
        for i in range(start, start + n)
    ]


def test_a_read_only_database_is_waited_for_not_turned_into_rejects(
    settings: Settings, network: str, db_url: str, caplog: pytest.LogCaptureFixture
):
    name = _dbname(db_url)
    ing = Ingester(settings)
    thread = _run(ing)
    publish(settings, _messages(network, 0, 20))
    wait_for(lambda: count(db_url, "select count(*) from observation") == 20)
    caplog.set_level(logging.WARNING, logger="quartier.ingest.mqtt")
    with _admin(db_url) as admin:
        admin.execute(
            sql.SQL("alter database {} set default_transaction_read_only = on").format(
                sql.Identifier(name)
            )
        )
        try:  # the writers' sessions end; the ones they open next are read-only
            admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where datname = %s and application_name = 'quartier-ingest'",
                (name,),
            )
            errors_before = ing.stats.db_errors
            publish(settings, _messages(network, 20, 40))
            wait_for(lambda: ing.stats.db_errors >= errors_before + 3)
            assert count(db_url, "select count(*) from observation") == 20
            assert count(db_url, "select count(*) from ingest_reject") == 0
        finally:
            admin.execute(
                sql.SQL("alter database {} reset default_transaction_read_only").format(
                    sql.Identifier(name)
                )
            )
    assert any("ReadOnlySqlTransaction" in r.getMessage() for r in caplog.records)
    wait_for(lambda: count(db_url, "select count(*) from observation") == 60, timeout=30)
    ing.stop_event.set()
    thread.join(15)
    assert ing.failed is None
    assert count(db_url, "select count(*) from ingest_reject") == 0


def test_a_revoked_privilege_is_waited_for_not_turned_into_rejects(
    settings: Settings, network: str, db_url: str
):
    role = f"ingest_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create role {} login password 'pw'").format(sql.Identifier(role)))
        for stmt in (
            "grant usage on schema public to {}",
            "grant select, insert, update, delete on all tables in schema public to {}",
            "grant usage, select on all sequences in schema public to {}",
            # as quartier_ingest may (migration 0034): the ingester calls it for each batch
            "grant execute on all functions in schema public to {}",
        ):
            conn.execute(sql.SQL(stmt).format(sql.Identifier(role)))
        # creating a month's partition needs the table's owner: done ahead, as in production
        conn.execute("select quartier_ensure_observation_partitions(%s, %s)", (T, T))
        conn.execute(sql.SQL("revoke insert on observation from {}").format(sql.Identifier(role)))
    role_url = psycopg.conninfo.make_conninfo(db_url, user=role, password="pw")
    settings = settings.model_copy(
        update={"database": settings.database.model_copy(update={"url": role_url})}
    )
    ing = Ingester(settings)
    thread = _run(ing)
    try:
        publish(settings, _messages(network, 0, 30))
        wait_for(lambda: ing.stats.db_errors >= 2)
        assert count(db_url, "select count(*) from observation") == 0
        assert count(db_url, "select count(*) from ingest_reject") == 0
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(sql.SQL("grant insert on observation to {}").format(sql.Identifier(role)))
        wait_for(lambda: count(db_url, "select count(*) from observation") == 30, timeout=30)
        assert count(db_url, "select count(*) from ingest_reject") == 0
    finally:
        ing.stop_event.set()
        thread.join(15)
        with _admin(db_url) as admin:
            admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s",
                (role,),
            )
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))
    assert ing.failed is None


def test_a_message_whose_data_the_database_refuses_is_still_isolated(
    settings: Settings, db_url: str
):
    """The other side of item 3: an error that belongs to the data still costs only that message
    (a text value with a NUL byte, which PostgreSQL cannot store)."""
    ing = Ingester(settings)
    good = Message("quartier/v1/n/a/speedtest", b"", T)
    bad = Message("quartier/v1/n/b/speedtest", b"", T)
    batch = Batch()
    for msg, operator in ((good, "Telekom"), (bad, "Tele\x00kom")):
        batch.speedtests.append(
            SpeedTest("app", msg.topic, T, Position(50.94, 6.96), 100.0, 40.0, 12.0, "5G", operator)
        )
    per_message = {good.topic: batch.speedtests[0], bad.topic: batch.speedtests[1]}
    ing._batch = lambda msgs: Batch(speedtests=[per_message[m.topic] for m in msgs])  # type: ignore[method-assign]
    try:
        assert ing._store(ing._writers[0], [good, bad], batch)
    finally:
        ing._writers[0].close()
    assert count(db_url, "select count(*) from speedtest") == 1
    assert _open_rejects(db_url) == [(bad.topic, "store_error", False)]
    assert ing.stats.db_errors == 0


def test_a_value_beyond_a_database_limit_costs_only_its_message(settings: Settings, db_url: str):
    """A value that exceeds one of PostgreSQL's program limits (class 54, here an index entry
    larger than a btree page allows) belongs to the data too: only that message becomes a
    reject, and the ingester does not retry it forever (it did, acknowledging nothing)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("create index speedtest_operator_test_idx on speedtest (operator)")
    ing = Ingester(settings)
    good = Message("quartier/v1/n/a/speedtest", b"", T)
    bad = Message("quartier/v1/n/b/speedtest", b"", T)
    huge = secrets.token_urlsafe(9000)  # 12,000 random characters: they do not compress
    batch = Batch()
    for msg, operator in ((good, "Telekom"), (bad, huge)):
        batch.speedtests.append(
            SpeedTest("app", msg.topic, T, Position(50.94, 6.96), 100.0, 40.0, 12.0, "5G", operator)
        )
    per_message = {good.topic: batch.speedtests[0], bad.topic: batch.speedtests[1]}
    ing._batch = lambda msgs: Batch(speedtests=[per_message[m.topic] for m in msgs])  # type: ignore[method-assign]
    try:
        assert ing._store(ing._writers[0], [good, bad], batch)
    finally:
        ing._writers[0].close()
    assert count(db_url, "select count(*) from speedtest") == 1
    assert _open_rejects(db_url) == [(bad.topic, "store_error", False)]
    assert ing.stats.db_errors == 0


# ----------------------------------------------------- 5. latest agrees with stored
@pytest.mark.parametrize("path", ["columnar", "one by one", "mixed"])
def test_latest_value_is_the_stored_one_for_a_repeated_reading(db_url: str, path: str):
    """Two readings for one datastream and time in one batch: the first is stored ("first stored
    wins"), and observation_latest says the same."""
    first = _native(1.0)
    second = _native(2.0)
    if path == "one by one":  # SenML goes through the full decoder
        first = orjson.dumps([{"bn": "x:", "n": "pm25", "v": 1.0, "t": 1793527200}])
        second = orjson.dumps([{"bn": "x:", "n": "pm25", "v": 2.0, "t": 1793527200}])
    kinds = {"columnar": ("up", "up"), "one by one": ("senml", "senml"), "mixed": ("up", "senml")}
    if path == "mixed":
        second = orjson.dumps([{"bn": "x:", "n": "pm25", "v": 2.0, "t": 1793527200}])
    k1, k2 = kinds[path]
    msgs = [
        Message(f"quartier/v1/n/d/{k1}", first, T),
        Message(f"quartier/v1/n/d/{k2}", second, T),
    ]
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    batch = build_batch(msgs, settings.ingest, NOW)
    assert not batch.rejects
    w = BatchWriter(db_url, auto_register=True)
    res = w.write(batch)
    w.close()
    assert (res.observations, res.duplicates) == (1, 1)
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("select phenomenon_time, result from observation").fetchall()
        latest = conn.execute("select phenomenon_time, result from observation_latest").fetchall()
    assert len(stored) == 1 and stored[0][0] == T
    if path != "mixed":  # messages of one kind: the first in the batch
        assert stored[0][1] == 1.0
    assert latest == stored
