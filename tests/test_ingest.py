"""The ingester against real Mosquitto and PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from quartier.config import Settings
from quartier.ingest.mqtt import Ingester
from quartier.ingest.mqtt_client import mqtt_client
from quartier.sensors_sim.fleet import Message
from quartier.sensors_sim.publisher import Publisher

pytestmark = pytest.mark.services


def wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met within timeout")


@pytest.fixture
def ingester(settings: Settings) -> Iterator[Ingester]:
    ing = Ingester(settings)
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    assert ing.connected.wait(10)
    yield ing
    ing.stop_event.set()
    thread.join(15)
    assert not thread.is_alive()


def publish(settings: Settings, msgs: list[tuple[str, bytes]]) -> None:
    client, host, port = mqtt_client(
        settings.require_mqtt_url(), f"{settings.ingest.client_id}-pub"
    )
    client.connect(host, port)
    client.loop_start()
    infos = [client.publish(t, p, qos=1) for t, p in msgs]
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def count(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])


def test_readings_are_stored_once_and_bad_ones_rejected(settings, ingester, network, db_url):
    good = {
        "location": {"lat": 50.94, "lon": 6.96},
        "time": "2026-11-01T10:00:00Z",
        "readings": [{"quantity": "pm25", "value": 11.5}, {"quantity": "pm10", "value": 20}],
    }
    single = {"time": "2026-11-01T10:01:00Z", "quantity": "pm25", "value": 12.0}
    partly = {
        "time": "2026-11-01T10:02:00Z",
        "readings": [
            {"quantity": "pm25", "value": 13.0},
            {"quantity": "pm25", "value": -5, "time": "2026-11-01T10:03:00Z"},
        ],
    }
    topic = f"quartier/v1/{network}/air-1/up"
    publish(
        settings,
        [
            (topic, orjson.dumps(good)),
            (topic, orjson.dumps(good)),  # duplicate: stored once
            (topic, orjson.dumps(single)),
            (topic, orjson.dumps(partly)),
            (topic, b"{not json"),
            (
                topic,
                orjson.dumps({"quantity": "pm25", "value": "high", "time": "2026-11-01T10:00Z"}),
            ),
            (
                f"quartier/v1/{network}/air-1/speedtest",
                orjson.dumps(
                    {
                        "time": "2026-11-01T10:00:00Z",
                        "lat": 50.9,
                        "lon": 6.9,
                        "download_mbps": 250.0,
                        "upload_mbps": 40.0,
                    }
                ),
            ),
        ],
    )
    wait_for(
        lambda: (
            count(db_url, "select count(*) from ingest_reject") == 3
            and count(db_url, "select count(*) from observation") == 4
            and count(db_url, "select count(*) from speedtest") == 1
        )
    )
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select op.properties->>'key', o.phenomenon_time, o.result from observation o "
            "join datastream d on d.id = o.datastream_id "
            "join observed_property op on op.id = d.observed_property_id order by 2, 1"
        ).fetchall()
        rejects = dict(conn.execute("select reason, payload from ingest_reject").fetchall())
        things = conn.execute("select count(*) from thing").fetchone()
        loc = conn.execute("select ST_X(location), ST_Y(location) from location").fetchone()
    assert [(k, r) for k, _, r in rows] == [
        ("pm10", 20.0),
        ("pm25", 11.5),
        ("pm25", 12.0),
        ("pm25", 13.0),
    ]
    assert set(rejects) == {"invalid_json", "invalid_reading", "out_of_range"}
    assert bytes(rejects["invalid_json"]) == b"{not json"
    assert things == (1,)
    assert loc == pytest.approx((6.96, 50.94))
    assert ingester.stats.duplicates >= 2


def test_unknown_device_is_rejected_when_auto_register_is_off(settings, network, db_url):
    settings = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"auto_register": False})}
    )
    ing = Ingester(settings)
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    assert ing.connected.wait(10)
    time.sleep(0.2)
    publish(
        settings,
        [
            (
                f"quartier/v1/{network}/x/up",
                orjson.dumps({"time": "2026-11-01T10:00:00Z", "quantity": "pm25", "value": 1.0}),
            )
        ],
    )
    wait_for(
        lambda: (
            count(db_url, "select count(*) from ingest_reject where reason = 'unknown_device'") == 1
        )
    )
    ing.stop_event.set()
    thread.join(10)
    assert count(db_url, "select count(*) from observation") == 0


def test_rejects_replay_stores_what_now_passes(settings, db_url):
    from datetime import UTC, datetime

    from quartier.ingest import rejects
    from quartier.ingest.writer import Batch, BatchWriter, Reject

    ok_now = orjson.dumps({"time": "2026-11-01T10:00:00Z", "quantity": "pm25", "value": 5.0})
    still_bad = b"{broken"
    t = datetime(2026, 11, 1, 10, tzinfo=UTC)
    w = BatchWriter(db_url, auto_register=True)
    # e.g. refused earlier because the device was unknown, then registration was switched on
    w.write(
        Batch(
            rejects=[
                Reject("quartier/v1/n/d/up", ok_now, "unknown_device", "x", t),
                Reject("quartier/v1/n/d/up", still_bad, "invalid_json", "x", t),
            ]
        )
    )
    w.close()
    res = rejects.replay(db_url, settings.ingest, datetime(2026, 11, 2, tzinfo=UTC))
    assert (res.tried, res.stored, res.still_failing) == (2, 1, 1)
    assert count(db_url, "select count(*) from observation") == 1
    open_ = rejects.list_rejects(db_url)
    assert [r["reason"] for r in open_] == ["invalid_json"]
    # replaying again changes nothing and stores nothing twice
    res = rejects.replay(db_url, settings.ingest, datetime(2026, 11, 2, tzinfo=UTC))
    assert (res.tried, res.stored) == (1, 0)
    assert count(db_url, "select count(*) from observation") == 1


TTN_DIR = Path(__file__).parent / "data" / "ttn_uplinks" / "thingsboard_data_converters"
#: what ThingsBoard decoded from Decentlab_DL-PM__payload.json (its __result.json), in the
#: catalogue's quantities and units: written down here, not computed by the codec under test
DL_PM_READINGS = {
    "pm1": 3.7,
    "pm25": 3.9,
    "pm4": 3.9,
    "pm10": 3.9,
    "temperature": 24.35660461425781,
    "humidity": 41.63221740722656,
    "pressure": 968.0,  # 96800 Pa
}


def test_things_stack_and_senml_uplinks_through_mqtt(settings, network, db_url):
    settings = settings.model_copy(
        update={
            "ingest": settings.ingest.model_copy(
                update={"ttn_codecs": {"03022": "decentlab-dl-pm"}}
            )
        }
    )
    ttn = (TTN_DIR / "Decentlab_DL-PM__payload.json").read_bytes()
    senml = orjson.dumps(
        [
            {
                "bn": "urn:dev:ow:10e2073a01080063:",
                "bt": 1.7955e9,
                "n": "temperature",
                "u": "Cel",
                "v": 23.1,
            },
            {"n": "humidity", "u": "%RH", "v": 40.5},
        ]
    )
    ing = Ingester(settings)
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    assert ing.connected.wait(10)
    time.sleep(0.2)
    publish(
        settings,
        [
            ("v3/test-decentlab@ttn/devices/03022/up", ttn),
            (f"quartier/v1/{network}/room-1/senml", senml),
        ],
    )
    total = len(DL_PM_READINGS) + 2
    wait_for(lambda: count(db_url, "select count(*) from observation") == total)
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select t.name, dd.quantity, o.result, o.parameters from observation o"
            " join device_datastream dd on dd.datastream_id = o.datastream_id"
            " join device d on d.id = dd.device_id join thing t on t.id = d.thing_id"
        ).fetchall()
    ing.stop_event.set()
    thread.join(10)
    ttn_rows = {q: v for name, q, v, _ in rows if name == "ttn-test-decentlab/03022"}
    assert ttn_rows == pytest.approx(DL_PM_READINGS, rel=1e-9)
    assert all(p and "f_cnt" in p for name, _, _, p in rows if name.startswith("ttn-"))
    senml_rows = {q: v for name, q, v, _ in rows if name == f"{network}/room-1"}
    assert senml_rows == {"temperature": 23.1, "humidity": 40.5}


def test_a_redelivered_reject_is_kept_once(db_url):
    from datetime import UTC, datetime

    from quartier.ingest.writer import Batch, BatchWriter, Reject

    t = datetime(2026, 11, 1, tzinfo=UTC)
    w = BatchWriter(db_url, auto_register=True)
    same = Reject("quartier/v1/n/d/up", b"{bad", "invalid_json", "x", t)
    other = Reject("quartier/v1/n/d/up", b"{bad 2", "invalid_json", "x", t)
    w.write(Batch(rejects=[same, other]))
    w.write(Batch(rejects=[same]))  # the broker redelivered it after a crash
    assert count(db_url, "select count(*) from ingest_reject") == 2
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update ingest_reject set replayed_at = now() where payload = '{bad'")
    w.write(Batch(rejects=[same]))  # refused again after a replay: kept again
    w.close()
    assert count(db_url, "select count(*) from ingest_reject") == 3


def test_writer_keeps_latest_values_and_marks_rollup_buckets(db_url):
    from datetime import UTC, datetime, timedelta

    from quartier.ingest.model import Reading, Uplink
    from quartier.ingest.writer import Batch, BatchWriter

    t0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    w = BatchWriter(db_url, auto_register=True)
    batch = Batch()
    readings = [Reading("pm25", t0 + timedelta(minutes=5 * i), float(i)) for i in range(7)]
    batch.uplinks.append((Uplink("n", "d", readings), "t", b"", t0))
    w.write(batch)
    older = Batch()  # a late reading must not replace the newest value
    older.uplinks.append(
        (Uplink("n", "d", [Reading("pm25", t0 - timedelta(hours=1), 99.0)]), "t", b"", t0)
    )
    w.write(older)
    w.close()
    with psycopg.connect(db_url) as conn:
        latest = conn.execute("select phenomenon_time, result from observation_latest").fetchall()
        dirty = [
            r[0] for r in conn.execute("select bucket from observation_dirty order by 1").fetchall()
        ]
    assert latest == [(t0 + timedelta(minutes=30), 6.0)]
    # 10:00-10:30 in 5-minute steps touch the buckets 10:00, 10:15, 10:30; the late one 09:00
    assert dirty == [
        t0 - timedelta(hours=1),
        t0,
        t0 + timedelta(minutes=15),
        t0 + timedelta(minutes=30),
    ]


def test_rollups_after_ingest_agree_with_the_readings_sent(db_url):
    """Readings written by the ingester's writer, rolled up by the store's refresh, give the
    hourly and daily aggregates computed here from the readings sent (minutes since midnight
    divided by the bucket width: integer arithmetic, not the store's bucket functions)."""
    import random
    from datetime import UTC, datetime, timedelta

    from quartier.ingest.model import Reading, Uplink
    from quartier.ingest.writer import Batch, BatchWriter
    from quartier.store import rollups, timeseries

    rnd = random.Random(5)
    t0 = datetime(2026, 10, 30, tzinfo=UTC)  # midnight UTC: a day and an hour bucket start here
    t0_epoch = 1_793_318_400  # 2026-10-30T00:00:00Z
    assert t0.timestamp() == t0_epoch
    sent: list[tuple[int, float]] = []  # (minutes after t0, value)
    w = BatchWriter(db_url, auto_register=True)
    for day in range(3):  # three batches, the last one late for the first day
        first = 0 if day == 2 else day * 1440
        offset = 7 if day == 2 else 0
        minutes = [first + offset + 10 * i for i in range(144)]
        values = [rnd.uniform(5, 80) for _ in minutes]
        sent += zip(minutes, values, strict=True)
        batch = Batch()
        readings = [
            Reading("no2", t0 + timedelta(minutes=m), v)
            for m, v in zip(minutes, values, strict=True)
        ]
        batch.uplinks.append((Uplink("n", "s1", readings), "t", b"", t0))
        w.write(batch)
    w.close()
    with psycopg.connect(db_url, autocommit=True) as conn:
        rollups.refresh_all(conn)
        ds = conn.execute("select datastream_id from device_datastream").fetchone()[0]
        for width_min, counts in ((60, [12] * 24 + [6] * 24), (1440, [288, 144])):
            buckets: dict[int, list[float]] = {}
            for m, v in sent:
                buckets.setdefault(m // width_min, []).append(v)
            keys = sorted(buckets)
            width = timedelta(minutes=width_min)
            agg = timeseries.aggregate(conn, [ds], width, t0, t0 + timedelta(days=2))
            assert agg.source != "raw"
            got = agg.series[0]
            assert got.epoch == [t0_epoch + k * width_min * 60 for k in keys]
            assert got.values["count"] == [len(buckets[k]) for k in keys] == counts
            assert got.values["min"] == [min(buckets[k]) for k in keys]
            assert got.values["max"] == [max(buckets[k]) for k in keys]
            want_avg = [sum(buckets[k]) / len(buckets[k]) for k in keys]
            assert got.values["avg"] == pytest.approx(want_avg, rel=1e-12)


def test_publishes_with_and_without_properties_take_their_paths(
    settings, ingester, network, db_url, monkeypatch
):
    """Plain PUBLISH packets take the client's lean path; one with MQTT 5 properties (here a
    message expiry and a user property) takes paho's; both are stored."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    fast = []
    lean = ingester._client.fast_on_messages
    monkeypatch.setattr(
        ingester._client,
        "fast_on_messages",
        lambda publishes: (fast.extend(p[0] for p in publishes), lean(publishes)),
    )
    topic = f"quartier/v1/{network}/props-1/up"
    client, host, port = mqtt_client(settings.require_mqtt_url(), "props-pub")
    client.connect(host, port)
    client.loop_start()
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 3600
    props.UserProperty = ("source", "test")
    a = {"time": "2026-11-01T10:00:00Z", "quantity": "pm25", "value": 1.0}
    b = {"time": "2026-11-01T10:01:00Z", "quantity": "pm25", "value": 2.0}
    infos = [
        client.publish(topic, orjson.dumps(a), qos=1, properties=props),
        client.publish(topic, orjson.dumps(b), qos=1),
    ]
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    wait_for(lambda: count(db_url, "select count(*) from observation") == 2)
    assert fast == [topic]  # only the one without properties went the lean way


def test_the_publisher_reports_messages_that_matched_no_subscription(
    settings: Settings, ingester: Ingester, network: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker acknowledges a QoS 1 message that matches no subscription and then drops it
    (MQTT 5 PUBACK reason "No matching subscribers"); a device publishing before the ingester's
    session ever subscribed loses its message that way. The publisher counts and reports it."""
    url = settings.require_mqtt_url()
    routed = [Message(f"quartier/v1/{network}/dev-r/up", b"{}")] * 3
    unrouted = [Message(f"nobody-listens/{network}/x", b"1")] * 4
    with Publisher(url, client_id=f"{network}-pub-routing") as publisher:
        assert publisher.send(routed) == 3
        assert publisher.unrouted == 0  # the ingester's subscription matched them
        with caplog.at_level(logging.WARNING, logger="quartier.sensors_sim.publisher"):
            assert publisher.send(unrouted) == 4  # acknowledged, and yet dropped:
        assert publisher.unrouted == 4
    assert "4 of 4 messages matched no subscription" in caplog.text
