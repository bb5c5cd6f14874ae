"""The simulator: deterministic placement and values, plausible patterns, payloads the ingester's
decoders accept, and publishing to a real broker."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import paho.mqtt.client as mqtt
import pytest
import shapely
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from shapely.geometry import shape

from quartier.config import Settings, parse_mqtt_url
from quartier.errors import ServiceError
from quartier.ingest.native import decode_native, decode_speedtest
from quartier.ingest.quantities import QUANTITIES
from quartier.sensors_sim import run
from quartier.sensors_sim.fleet import KIND_QUANTITIES, Fleet, Message, kind_counts
from quartier.sensors_sim.publisher import publish

DATA = Path(__file__).resolve().parents[1] / "quartier" / "data"
BERLIN = ZoneInfo("Europe/Berlin")
MAX_BYTES = 256 * 1024
WEEKDAY = datetime(2026, 3, 11, tzinfo=BERLIN)  # a Wednesday


def _polygons(name: str, key: str) -> dict[str, shapely.Geometry]:
    doc = json.loads((DATA / name).read_text(encoding="utf-8"))
    return {f["properties"][key]: shapely.make_valid(shape(f["geometry"])) for f in doc["features"]}


def _day(start: datetime, step_min: int = 15) -> list[datetime]:
    return [start + timedelta(minutes=m) for m in range(0, 24 * 60, step_min)]


def _values(fleet: Fleet, t: datetime, quantity: str) -> list[float]:
    out = []
    for message in fleet.readings_at(t):
        for r in orjson.loads(message.payload)["readings"]:
            if r["quantity"] == quantity:
                out.append(r["value"])
    return out


# --- placement ------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_in_any_order() -> None:
    t1 = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    t2 = t1 + timedelta(minutes=5)
    a, b = Fleet(7), Fleet(7)
    first = a.readings_at(t1), a.readings_at(t2), a.speedtests(t1, 5)
    later_t2 = b.readings_at(t2)
    assert b.speedtests(t1, 5) == first[2]
    assert b.readings_at(t1) == first[0]
    assert later_t2 == first[1]
    assert a.readings_at(t1) == first[0]  # calling again changes nothing
    assert b.speedtests(t1, 3) == first[2][:3]  # test i depends on (seed, t, i) only
    assert a.readings_at(t1 + timedelta(microseconds=400_000)) == first[0]  # whole seconds


def test_different_seed_places_sensors_elsewhere() -> None:
    a, b = Fleet(1), Fleet(2)
    assert [s.key for s in a.sensors] == [s.key for s in b.sensors]
    assert [(s.lat, s.lon) for s in a.sensors] != [(s.lat, s.lon) for s in b.sensors]
    t = datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert a.speedtests(t, 3) != b.speedtests(t, 3)


def test_kind_mix_keys_and_topics() -> None:
    fleet = Fleet(3, n_sensors=40, network="city-sim")
    kinds = Counter(s.kind for s in fleet.sensors)
    assert kinds == {"air": 16, "noise": 8, "climate": 8, "traffic": 8}
    keys = [s.key for s in fleet.sensors]
    assert len(set(keys)) == 40
    assert "air-0000" in keys and "traffic-0007" in keys
    topics = {m.topic for m in fleet.readings_at(datetime(2026, 1, 1, tzinfo=UTC))}
    assert topics == {f"quartier/v1/city-sim/{k}/up" for k in keys}
    assert all(sum(kind_counts(n).values()) == n for n in range(50))
    assert kind_counts(1) == {"air": 1, "noise": 0, "climate": 0, "traffic": 0}
    assert fleet.readings_per_tick == 16 * 3 + 8 + 8 * 2 + 8


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        Fleet(1, network="no/slash")
    with pytest.raises(ValueError):
        Fleet(-1)
    with pytest.raises(ValueError):
        Fleet(1).readings_at(datetime(2026, 1, 1))  # naive


def test_sensors_lie_in_their_stadtteil_and_in_koeln() -> None:
    stadtteile = _polygons("koeln_stadtteile.geojson", "STT_NR")
    bezirke = _polygons("koeln_stadtbezirke.geojson", "STB_NR")
    koeln = shapely.union_all(list(bezirke.values()))
    fleet = Fleet(11, n_sensors=150)
    for s in fleet.sensors:
        assert s.stadtteil in stadtteile and s.stadtbezirk == s.stadtteil[0]
        assert shapely.contains_xy(stadtteile[s.stadtteil], s.lon, s.lat), s
        assert shapely.contains_xy(bezirke[s.stadtbezirk], s.lon, s.lat), s
        assert shapely.contains_xy(koeln, s.lon, s.lat), s
    # weighted by population: busy Stadtbezirke get more sensors than small outskirts
    assert len({s.stadtbezirk for s in fleet.sensors}) == 9


# --- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "day", [datetime(2026, 1, 14, tzinfo=BERLIN), datetime(2026, 7, 18, tzinfo=BERLIN)]
)
def test_a_whole_day_decodes_inside_the_quantity_ranges(day: datetime) -> None:
    fleet = Fleet(5, network="sim")
    kinds = {s.key: s.kind for s in fleet.sensors}
    positions = {s.key: (s.lat, s.lon) for s in fleet.sensors}
    for t in _day(day):
        for message in fleet.readings_at(t):
            _, _, network, device, kind = message.topic.split("/")
            assert (network, kind) == ("sim", "up")
            uplink = decode_native(network, device, message.payload, max_bytes=MAX_BYTES)
            assert uplink.invalid == []
            assert uplink.location is not None
            assert (uplink.location.lat, uplink.location.lon) == positions[device]
            values = {r.quantity: r.value for r in uplink.readings}
            assert tuple(values) == KIND_QUANTITIES[kinds[device]]
            for r in uplink.readings:
                q = QUANTITIES[r.quantity]
                assert q.min_value <= r.value <= q.max_value, (r, device)
                assert r.time == t.astimezone(UTC)
            if "pm25" in values:
                assert values["pm10"] > values["pm25"]
            if "noise_laeq" in values:
                assert 35 <= values["noise_laeq"] <= 95
            if "temperature" in values:
                assert -25 < values["temperature"] < 40


def test_daily_patterns_in_local_time() -> None:
    fleet = Fleet(9, n_sensors=60)

    def total(hour: int, quantity: str) -> float:
        return sum(_values(fleet, WEEKDAY.replace(hour=hour), quantity))

    assert total(8, "traffic_count") > 3 * total(3, "traffic_count")
    assert total(17, "traffic_count") > 3 * total(3, "traffic_count")
    assert total(8, "no2") > total(3, "no2")
    assert total(8, "noise_laeq") > total(3, "noise_laeq")
    assert total(15, "temperature") > total(5, "temperature") + 3 * len(
        _values(fleet, WEEKDAY, "temperature")
    )
    assert total(5, "humidity") > total(15, "humidity")
    summer = datetime(2026, 7, 15, 15, tzinfo=BERLIN)
    winter = datetime(2026, 1, 15, 15, tzinfo=BERLIN)
    assert sum(_values(fleet, summer, "temperature")) > sum(_values(fleet, winter, "temperature"))


def test_speedtests_decode_and_differ_by_district() -> None:
    fleet = Fleet(4, network="crowd")
    bezirke = _polygons("koeln_stadtbezirke.geojson", "STB_NR")
    t = datetime(2026, 5, 4, 18, 30, tzinfo=UTC)
    messages = fleet.speedtests(t, 1500)
    devices = [m.topic.split("/")[3] for m in messages]
    assert len(set(devices)) == len(devices)
    by_bezirk: dict[str, list[float]] = {}
    for m, device in zip(messages, devices, strict=True):
        assert m.topic == f"quartier/v1/crowd/{device}/speedtest"
        assert device.startswith("crowd-")
        test = decode_speedtest("crowd", device, m.payload, max_bytes=MAX_BYTES)
        assert test.time == t
        assert test.operator in {"Telekom", "Vodafone", "NetCologne", "1&1", "O2"}
        assert test.upload_mbps is not None and test.latency_ms is not None
        assert 0 < test.upload_mbps <= test.download_mbps
        low, high = {"ftth": (200, 2100), "cable": (50, 1100), "dsl": (9, 260), "lte": (5, 150)}[
            str(test.technology)
        ]
        assert low <= test.download_mbps <= high, test
        where = [
            code
            for code, geom in bezirke.items()
            if shapely.contains_xy(geom, test.position.lon, test.position.lat)
        ]
        assert len(where) == 1
        by_bezirk.setdefault(where[0], []).append(test.download_mbps)

    def gigabit_share(codes: str) -> float:
        speeds = [v for c in codes for v in by_bezirk[c]]
        return sum(v >= 500 for v in speeds) / len(speeds)

    assert gigabit_share("1") > gigabit_share("67") + 0.1


# --- the loop (with a stand-in for the broker) ------------------------------------------------


class _FakePublisher:
    sent: list[Message]

    def __init__(self, url: str, **kwargs: object) -> None:
        _FakePublisher.sent = []

    def __enter__(self) -> _FakePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def send(self, messages, *, rate=None, progress=None) -> int:  # type: ignore[no-untyped-def]
        batch = list(messages)
        _FakePublisher.sent.extend(batch)
        if progress:
            progress(len(batch))
        return len(batch)


def _settings() -> Settings:
    return Settings(_env_file=None, mqtt={"url": "mqtt://127.0.0.1:1"})


def test_simulate_replay_steps_a_virtual_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "Publisher", _FakePublisher)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    seen: list[int] = []
    stats = run.simulate(
        _settings(), seed=1, sensors=10, interval_s=300, start=start, count=None,
        duration_s=3600, speedtests_per_tick=2, stop_event=None, progress=seen.append,
    )  # fmt: skip
    assert stats.ticks == 12
    assert stats.messages == 12 * 12 == len(_FakePublisher.sent) == seen[-1]
    assert stats.speedtests == 24
    assert stats.readings == 12 * Fleet(1, 10).readings_per_tick
    assert (stats.first_time, stats.last_time) == (start, start + timedelta(minutes=55))
    assert _FakePublisher.sent[:10] == Fleet(1, 10).readings_at(start)


def test_simulate_live_stops_on_count_and_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "Publisher", _FakePublisher)
    kwargs = dict(seed=1, sensors=3, start=None, duration_s=None, speedtests_per_tick=0)
    stats = run.simulate(_settings(), interval_s=0.05, count=3, stop_event=None, **kwargs)  # type: ignore[arg-type]
    assert stats.ticks == 3 and stats.messages == 9
    assert stats.last_time is not None
    assert abs((datetime.now(UTC) - stats.last_time).total_seconds()) < 2
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    stats = run.simulate(_settings(), interval_s=0.1, count=None, stop_event=stop, **kwargs)  # type: ignore[arg-type]
    assert time.monotonic() - began < 2
    assert 1 <= stats.ticks <= 6


def test_parse_mqtt_url() -> None:
    assert parse_mqtt_url("mqtt://127.0.0.1:1884") == ("127.0.0.1", 1884, None, None, False)
    assert parse_mqtt_url("mqtt://u%40x:p%3Aw@broker") == ("broker", 1883, "u@x", "p:w", False)
    assert parse_mqtt_url("mqtts://broker")[1:] == (8883, None, None, True)


def test_publish_to_an_unreachable_broker_fails_clearly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ServiceError, match="cannot connect"):
        publish(f"mqtt://127.0.0.1:{port}", [], rate=None, client_id="nobody")


# --- a real broker --------------------------------------------------------------------------


@pytest.mark.services
def test_publish_delivers_exactly_the_messages(service_urls) -> None:  # type: ignore[no-untyped-def]
    network = f"t{uuid.uuid4().hex[:8]}"
    fleet = Fleet(21, n_sensors=12, network=network)
    t0 = datetime(2026, 11, 27, 6, tzinfo=UTC)
    messages = [m for k in range(5) for m in fleet.readings_at(t0 + timedelta(minutes=5 * k))]

    received: list[tuple[str, bytes]] = []
    subscribed = threading.Event()
    lock = threading.Lock()

    def on_message(client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        with lock:
            received.append((msg.topic, msg.payload))

    host, port, *_ = parse_mqtt_url(service_urls.mqtt_url)
    sub = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"sub-{network}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    sub.on_message = on_message
    sub.on_subscribe = lambda *args: subscribed.set()
    sub.on_connect = lambda client, *args: client.subscribe(f"quartier/v1/{network}/+/up", qos=1)
    sub.connect(host, port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        counted: list[int] = []
        n = publish(
            service_urls.mqtt_url, messages, rate=None, client_id=f"pub-{network}",
            progress=counted.append,
        )  # fmt: skip
        assert n == len(messages) == 60
        assert counted[-1] == 60
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if len(received) >= len(messages):
                    break
            time.sleep(0.02)
        time.sleep(0.1)  # anything extra would show up now
        with lock:
            assert Counter(received) == Counter((m.topic, m.payload) for m in messages)
    finally:
        sub.disconnect()
        sub.loop_stop()
