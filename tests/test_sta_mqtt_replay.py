"""SensorThings MQTT creates (OGC 18-088 A.7) delivered more than once, against the real
Mosquitto and PostgreSQL: a publisher's QoS 1 duplicate (the broker forwards every copy, without
DUP), and the broker's redelivery of creates that ``quartier sta-mqtt`` had stored but not yet
acknowledged when it stopped (its persistent session, DUP set). An Observation that names its
phenomenonTime is stored once, the first value kept (the key (Datastream, phenomenonTime) detects
the replay); docs/sensorthings.md says why one without phenomenonTime cannot be recognised."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from test_sta_mqtt import publish, running

from quartier.config import Settings
from quartier.ingest.model import Batch, Position, Reading, Uplink
from quartier.ingest.writer import BatchWriter
from quartier.sta_mqtt.service import StaMqtt

pytestmark = pytest.mark.services
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met within timeout")


def scalar(settings: Settings, query: str, *params: Any) -> Any:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


@pytest.fixture
def ds(settings: Settings) -> int:
    """A Datastream (of device city/c-1, one reading at T0)."""
    w = BatchWriter(settings.require_database_url(), auto_register=True)
    batch = Batch()
    place = Position(50.9, 6.9)
    batch.uplinks.append((Uplink("city", "c-1", [Reading("pm25", T0, 5.0)], place), "t", b"", T0))
    w.write(batch)
    w.close()
    return int(scalar(settings, "select max(datastream_id) from device_datastream"))


class _Unacknowledging(StaMqtt):
    """``quartier sta-mqtt`` that stops (as if killed) after its commits, before its PUBACKs."""

    def _connect(self) -> mqtt.Client:
        client = super()._connect()
        client.ack = lambda mid, qos: None  # type: ignore[method-assign]
        return client


def obs(minutes: int, result: float) -> bytes:
    t = T0 + timedelta(minutes=minutes)
    return orjson.dumps({"phenomenonTime": t.isoformat(), "result": result})


def results(settings: Settings, ds: int) -> list[float]:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        rows = conn.execute(
            "select result from observation where datastream_id = %s order by phenomenon_time",
            (ds,),
        ).fetchall()
    return [r[0] for r in rows]


def test_a_publishers_duplicates_are_stored_once_first_value_kept(
    settings: Settings, ds: int
) -> None:
    topic = f"v1.1/Datastreams({ds})/Observations"
    with running(StaMqtt(settings, client_id=f"sta-{uuid.uuid4().hex[:8]}")) as sta:
        # the same create three times (a QoS 1 resend reaches subscribers as a new message),
        # once with another result at the same instant; then a create that marks the end
        publish(
            settings,
            [(topic, obs(1, 6.5)), (topic, obs(1, 6.5)), (topic, obs(1, 99)), (topic, obs(2, 7))],
        )
        wait_for(lambda: len(results(settings, ds)) == 3)
        wait_for(lambda: sta.created == 2)
        assert results(settings, ds) == [5.0, 6.5, 7.0]
        assert sta.rejected == 0
        assert scalar(settings, "select count(*) from ingest_reject") == 0


def test_creates_redelivered_after_a_stop_before_the_acknowledgement_are_not_stored_twice(
    settings: Settings, ds: int
) -> None:
    topic = f"v1.1/Datastreams({ds})/Observations"
    client_id = f"sta-{uuid.uuid4().hex[:8]}"
    with running(_Unacknowledging(settings, client_id=client_id)) as first:
        publish(settings, [(topic, obs(1, 6.5)), (topic, obs(2, 7))])
        wait_for(lambda: first.created == 2)
    assert results(settings, ds) == [5.0, 6.5, 7.0]
    # stopped before its PUBACKs; created meanwhile, while it is down: kept by the broker
    publish(settings, [(topic, obs(3, 8))])
    with running(StaMqtt(settings, client_id=client_id)) as second:
        publish(settings, [(topic, obs(4, 9))])
        wait_for(lambda: len(results(settings, ds)) == 5)
        # the fault happened: the broker delivered the two unacknowledged creates again
        wait_for(lambda: second.redelivered == 2)
        wait_for(lambda: second.created == 2)  # only the two new ones
    assert results(settings, ds) == [5.0, 6.5, 7.0, 8.0, 9.0]
    assert scalar(settings, "select count(*) from ingest_reject") == 0
    # acknowledged this time: a third run gets nothing again
    with running(StaMqtt(settings, client_id=client_id)) as third:
        publish(settings, [(topic, obs(5, 10))])
        wait_for(lambda: third.created == 1)
        assert third.redelivered == 0
    assert results(settings, ds)[-1] == 10.0
