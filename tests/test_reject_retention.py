"""Refused payloads are capped in ``ingest_reject`` (a prefix, with the whole payload's length and
sha256) and expire after ``database.reject_retention`` (issue #12 item 3)."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from quartier.ingest.model import Batch, Reject
from quartier.ingest.writer import BatchWriter
from quartier.store import rollups
from quartier.store.policy import StorePolicy

pytestmark = pytest.mark.services
NOW = datetime.now(UTC)


def rejects(url: str, topic: str) -> list[tuple[bytes, bytes, int, bool]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select payload, payload_sha256, payload_bytes, payload_truncated from ingest_reject"
            " where topic = %s order by id",
            (topic,),
        ).fetchall()


def test_an_oversized_reject_is_kept_as_a_prefix_with_the_whole_hash(db_url: str) -> None:
    topic = "quartier/v1/limits/big/up"
    w = BatchWriter(db_url, auto_register=False, reject_payload_max_bytes=1024)
    big = b"{" + b"x" * 5000 + b"}"
    other = big[:-1] + b"]"  # the same first 1024 bytes, a different payload
    small = b"not json"
    try:
        for payload in (big, big, other, small):  # the second ``big`` is a redelivery
            w.write(Batch(rejects=[Reject(topic, payload, "invalid_json", "x", NOW)]))
    finally:
        w.close()
    rows = rejects(db_url, topic)
    assert rows == [
        (big[:1024], hashlib.sha256(big).digest(), len(big), True),
        (other[:1024], hashlib.sha256(other).digest(), len(other), True),
        (small, hashlib.sha256(small).digest(), len(small), False),
    ]


def test_rejects_older_than_the_retention_are_deleted(db_url: str) -> None:
    topic = "quartier/v1/limits/old/up"
    w = BatchWriter(db_url, auto_register=False)
    try:
        w.write(
            Batch(
                rejects=[
                    Reject(topic, b"old", "invalid_json", "x", NOW - timedelta(days=40)),
                    Reject(topic, b"recent", "invalid_json", "x", NOW - timedelta(days=2)),
                ]
            )
        )
    finally:
        w.close()
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert rollups.expire_rejects(conn, timedelta(days=30), now=NOW) >= 1
    assert [r[0] for r in rejects(db_url, topic)] == [b"recent"]


def test_the_maintenance_thread_expires_rejects(db_url: str) -> None:
    topic = "quartier/v1/limits/maint/up"
    w = BatchWriter(db_url, auto_register=False)
    try:
        w.write(
            Batch(
                rejects=[
                    Reject(topic, b"old", "invalid_json", "x", NOW - timedelta(days=3)),
                    Reject(topic, b"new", "invalid_json", "x", NOW),
                ]
            )
        )
    finally:
        w.close()
    stop = threading.Event()
    thread = threading.Thread(
        target=rollups.run_maintenance,
        args=(db_url, StorePolicy(), stop),
        kwargs={"every_s": 0.1, "reject_retention": timedelta(days=1)},
        daemon=True,
    )
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while len(rejects(db_url, topic)) > 1:
            assert time.monotonic() < deadline, "the maintenance thread did not expire the reject"
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(10)
    assert [r[0] for r in rejects(db_url, topic)] == [b"new"]


def test_a_truncated_reject_is_not_replayed(db_url: str) -> None:
    """Only its beginning was kept: a replay would decode a different message."""
    from quartier.config import IngestSettings
    from quartier.ingest import rejects as replays

    topic = "quartier/v1/limits/big/up"
    w = BatchWriter(db_url, auto_register=True, reject_payload_max_bytes=16)
    w.write(Batch(rejects=[Reject(topic, b'{"value": ' + b"1" * 40 + b"}", "too_large", "x", NOW)]))
    w.write(Batch(rejects=[Reject(topic, b"{bad", "invalid_json", "x", NOW)]))
    w.close()
    res = replays.replay(db_url, IngestSettings(), NOW)
    assert res.tried == 1  # the short one only
    with psycopg.connect(db_url) as conn:
        open_ = conn.execute(
            "select payload_truncated, reason from ingest_reject where replayed_at is null"
            " order by id"
        ).fetchall()
    assert open_ == [(True, "too_large"), (False, "invalid_json")]
