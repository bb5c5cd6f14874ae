"""The whole path: the simulator publishes over MQTT, the ingester stores, the API returns exactly
the readings that were sent."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from quartier.api import models as m
from quartier.api.app import create_app
from quartier.config import Settings
from quartier.ingest.mqtt import Ingester
from quartier.ingest.mqtt_client import mqtt_client
from quartier.sensors_sim.fleet import Fleet
from quartier.sensors_sim.run import simulate

pytestmark = pytest.mark.services
START = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
SEED, SENSORS, TICKS, STEP = 7, 8, 6, 600


#: the simulated fleet (seed 7, 8 sensors) and what each sensor sends, written down by hand
QUANTITIES = {
    "air-0000": ["pm25", "pm10", "no2"],
    "air-0001": ["pm25", "pm10", "no2"],
    "air-0002": ["pm25", "pm10", "no2"],
    "noise-0000": ["noise_laeq"],
    "noise-0001": ["noise_laeq"],
    "climate-0000": ["temperature", "humidity"],
    "climate-0001": ["temperature", "humidity"],
    "traffic-0000": ["traffic_count"],
}
#: a few readings of that fleet, written down by hand: (device, quantity, time, value)
KNOWN = [
    ("air-0000", "pm25", "2026-11-01T06:00:00.000Z", 12.9),
    ("air-0000", "pm10", "2026-11-01T06:00:00.000Z", 19.3),
    ("air-0000", "no2", "2026-11-01T06:00:00.000Z", 14.0),
    ("noise-0000", "noise_laeq", "2026-11-01T06:00:00.000Z", 48.7),
    ("climate-0001", "temperature", "2026-11-01T06:00:00.000Z", 9.2),
    ("climate-0001", "humidity", "2026-11-01T06:00:00.000Z", 86.3),
    ("traffic-0000", "traffic_count", "2026-11-01T06:50:00.000Z", 9),
]


def _expected(network: str) -> set[tuple[str, str, str, float]]:
    """The readings the simulator sends, read from its JSON with nothing but a JSON parser (not
    the platform's decoder); the times follow from START and STEP, the API's format by hand."""
    fleet = Fleet(SEED, SENSORS, network=network)
    out = set()
    for k in range(TICKS):
        minute = k * STEP // 60  # 06:00, 06:10, … 06:50
        sent_at = f"2026-11-01T06:{minute:02d}:00Z"
        api_time = f"2026-11-01T06:{minute:02d}:00.000Z"
        for msg in fleet.readings_at(START + timedelta(seconds=k * STEP)):
            prefix, version, net, dev, kind = msg.topic.split("/")
            assert (prefix, version, net, kind) == ("quartier", "v1", network, "up")
            doc = orjson.loads(msg.payload)
            assert doc["time"] == sent_at
            assert [r["quantity"] for r in doc["readings"]] == QUANTITIES[dev]
            for r in doc["readings"]:
                assert "time" not in r  # every reading has the message's time
                out.add((f"{net}/{dev}", r["quantity"], api_time, r["value"]))
    assert len(out) == TICKS * 16  # 16 readings a tick: 3 air x 3, 2 noise, 2 climate x 2, 1
    assert {(f"{network}/{d}", q, t, v) for d, q, t, v in KNOWN} <= out
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
