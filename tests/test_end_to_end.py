"""The whole path: the simulator publishes over MQTT, the ingester stores, the API returns exactly
the readings that were sent."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from quartier.api import models as m
from quartier.api.app import create_app
from quartier.config import Settings
from quartier.ingest.decoders import decode_native
from quartier.ingest.mqtt import Ingester, mqtt_client
from quartier.sensors_sim.fleet import Fleet
from quartier.sensors_sim.run import simulate

pytestmark = pytest.mark.services
START = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
SEED, SENSORS, TICKS, STEP = 7, 8, 6, 600


def _expected(network: str) -> set[tuple[str, str, str, float]]:
    fleet = Fleet(SEED, SENSORS, network=network)
    out = set()
    for k in range(TICKS):
        for msg in fleet.readings_at(START + timedelta(seconds=k * STEP)):
            _, _, net, dev, _ = msg.topic.split("/")
            up = decode_native(net, dev, msg.payload, max_bytes=1 << 20)
            assert not up.invalid
            for r in up.readings:
                t = r.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                out.add((f"{net}/{dev}", r.quantity, t, r.value))
    return out


def _wait(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"select count(*) from {table}").fetchone()
    assert row is not None
    return int(row[0])


def _all(client: TestClient, url: str) -> list[dict]:  # type: ignore[type-arg]
    items: list[dict] = []  # type: ignore[type-arg]
    next_url: str | None = url
    while next_url:
        body = client.get(next_url).json()
        items += body["value"]
        next_url = body.get("@iot.nextLink")
    return items


def test_simulated_readings_arrive_exactly_through_mqtt_store_and_api(
    settings: Settings, network: str, db_url: str
) -> None:
    expected = _expected(network)
    ing = Ingester(settings)
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    assert ing.connected.wait(10)
    time.sleep(0.2)

    stats = simulate(
        settings,
        seed=SEED,
        sensors=SENSORS,
        interval_s=STEP,
        start=START,
        count=TICKS,
        duration_s=None,
        speedtests_per_tick=3,
        stop_event=None,
        network=network,
        client_id=f"sim-{network}",
    )
    # a broken device in the middle of the traffic
    client, host, port = mqtt_client(settings.require_mqtt_url(), f"bad-{network}")
    client.connect(host, port)
    client.loop_start()
    client.publish(
        f"quartier/v1/{network}/broken/up", b"\xff\xfe not json", qos=1
    ).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()

    assert stats.readings == len(expected)
    _wait(
        lambda: (
            _count(db_url, "observation") == len(expected)
            and _count(db_url, "ingest_reject") == 1
            and _count(db_url, "speedtest") == TICKS * 3
        )
    )
    assert thread.is_alive()  # the bad payload did not stop the ingester

    with TestClient(create_app(settings)) as api:
        seen = set()
        things = [m.Thing.model_validate(t) for t in _all(api, "/v1.1/Things?$top=3")]
        assert len(things) == SENSORS
        for thing in things:
            for ds in _all(api, thing.datastreams_link):
                quantity = ds["properties"]["quantity"]
                for obs in _all(api, ds["Observations@iot.navigationLink"] + "?$top=4"):
                    seen.add((thing.name, quantity, obs["phenomenonTime"], obs["result"]))
    assert seen == expected

    ing.stop_event.set()
    thread.join(10)
    with psycopg.connect(db_url) as conn:
        reason, payload = conn.execute("select reason, payload from ingest_reject").fetchone()  # type: ignore[misc]
    assert reason == "invalid_json"
    assert bytes(payload) == b"\xff\xfe not json"
