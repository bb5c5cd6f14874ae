"""Ingest benchmark: how fast the ingester drains a backlog, against baselines in the same run.

    .venv/bin/python bench/ingest.py [--messages 50000] [--batched 5000] [--live-rate 5000]
                                     [--live-seconds 60]

Starts its own PostgreSQL and Mosquitto (fsync on, as in production) unless
QUARTIER_TEST_DATABASE_URL / QUARTIER_TEST_MQTT_URL are set. Each case publishes its backlog into
the ingester's persistent session first, then starts the ingester and times the drain, so the
publisher does not compete for the CPU. Prints a table and ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quartier.config import Settings
from quartier.ingest.mqtt import Ingester
from quartier.ingest.mqtt_client import mqtt_client
from quartier.services import LocalServices
from quartier.store.migrate import migrate

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Result:
    name: str
    messages: int
    readings: int
    seconds: float

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.seconds


def fresh_db(admin_url: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "select quartier_ensure_observation_partitions(%s, %s)",
            (T0 - timedelta(days=31), T0 + timedelta(days=62)),
        )
    return url


def settings_for(db: str, mqtt: str, client_id: str) -> Settings:
    return Settings(
        _env_file=None,
        database={"url": db},
        mqtt={"url": mqtt},  # type: ignore[call-arg]
        ingest={"client_id": client_id, "share_group": None},
    )


def open_session(mqtt_url: str, client_id: str) -> None:
    """Create the ingester's persistent session and subscription, then leave."""
    client, host, port = mqtt_client(mqtt_url, client_id)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    done = threading.Event()
    client.on_subscribe = lambda *a: done.set()
    client.connect(host, port, clean_start=True, properties=props)
    client.loop_start()
    client.subscribe([("quartier/v1/+/+/up", 1), ("quartier/v1/+/+/speedtest", 1)])
    done.wait(5)
    client.disconnect()
    client.loop_stop()


def publish_all(mqtt_url: str, msgs: list[tuple[str, bytes]], inflight: int = 1000) -> float:
    client, host, port = mqtt_client(mqtt_url, f"bench-pub-{uuid.uuid4().hex[:6]}")
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    t = time.perf_counter()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in msgs]
    for info in infos:
        info.wait_for_publish(60)
    dt = time.perf_counter() - t
    client.disconnect()
    client.loop_stop()
    return dt


def single_messages(n: int, devices: int = 1000) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        d = i % devices
        t = T0 + timedelta(seconds=i // devices)
        out.append(
            (
                f"quartier/v1/bench/dev-{d}/up",
                orjson.dumps({"time": t.isoformat(), "quantity": "pm25", "value": (i % 500) / 10}),
            )
        )
    return out


def batched_messages(n: int, per: int = 100, devices: int = 200) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        d = i % devices
        base = T0 + timedelta(minutes=(i // devices) * per)
        out.append(
            (
                f"quartier/v1/bench/dev-{d}/up",
                orjson.dumps(
                    {
                        "readings": [
                            {
                                "time": (base + timedelta(minutes=k)).isoformat(),
                                "quantity": "pm25",
                                "value": k / 10,
                            }
                            for k in range(per)
                        ]
                    }
                ),
            )
        )
    return out


def wait_stored(counter: Callable[[], int], expected: int, timeout: float = 600) -> float:
    """Poll the ingester's own counter of committed rows (no load on the database)."""
    t = time.perf_counter()
    while time.perf_counter() - t < timeout:
        if counter() >= expected:
            return time.perf_counter()
        time.sleep(0.005)
    raise RuntimeError(f"only {counter()} of {expected} rows after {timeout} s")


def count_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("select count(*) from observation").fetchone()
    return int(row[0]) if row else 0


def drain(
    name: str,
    admin: str,
    mqtt_url: str,
    msgs: list[tuple[str, bytes]],
    readings: int,
    make_ingester: Callable[[Settings], object],
) -> Result:
    db = fresh_db(admin)
    cid = f"bench-{uuid.uuid4().hex[:6]}"
    s = settings_for(db, mqtt_url, cid)
    # register the devices first so that the timed part measures steady state
    seed = register_devices(db, {topic.split("/")[3] for topic, _ in msgs})
    readings += seed
    open_session(mqtt_url, cid)
    pub_s = publish_all(mqtt_url, msgs)
    print(f"  {name}: published {len(msgs)} messages in {pub_s:.1f} s", flush=True)
    ing = make_ingester(s)
    t0 = time.perf_counter()
    thread = threading.Thread(target=ing.run, daemon=True)  # type: ignore[attr-defined]
    thread.start()
    t1 = wait_stored(ing.committed, readings - seed)  # type: ignore[attr-defined]
    ing.stop_event.set()  # type: ignore[attr-defined]
    thread.join(30)
    stored = count_rows(db)
    if stored != readings:
        raise RuntimeError(f"{name}: {stored} rows stored, {readings} expected")
    return Result(name, len(msgs), readings - seed, t1 - t0)


def register_devices(db: str, devices: set[str]) -> int:
    from quartier.ingest.model import Batch, Reading, Uplink
    from quartier.ingest.writer import BatchWriter

    w = BatchWriter(db, auto_register=True)
    batch = Batch()
    for d in sorted(devices):
        batch.uplinks.append(
            (Uplink("bench", d, [Reading("pm25", T0 - timedelta(days=1), 1.0)]), "", b"", T0)
        )
    w.write(batch)
    w.close()
    return len(devices)


class NaiveIngester:
    """Baseline: one INSERT and one commit per message, auto-ack (how many simple bridges work)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        self.rows = 0

    def committed(self) -> int:
        return self.rows

    def run(self) -> None:
        from quartier.ingest.native import decode_native

        conn = psycopg.connect(self.settings.require_database_url())
        streams: dict[str, int] = {}
        client, host, port = mqtt_client(
            self.settings.require_mqtt_url(), self.settings.ingest.client_id
        )

        def on_message(c, u, msg):  # type: ignore[no-untyped-def]
            _, _, net, dev, _ = msg.topic.split("/")
            up = decode_native(net, dev, msg.payload, max_bytes=1 << 20)
            ds = streams.get(dev)
            if ds is None:
                row = conn.execute(
                    "select dd.datastream_id from device d join device_datastream dd"
                    " on dd.device_id = d.id where d.device_key = %s",
                    (dev,),
                ).fetchone()
                ds = streams[dev] = row[0] if row else -1
            for r in up.readings:
                conn.execute(
                    "insert into observation (datastream_id, phenomenon_time, result)"
                    " values (%s, %s, %s) on conflict do nothing",
                    (ds, r.time, r.value),
                )
            conn.commit()
            self.rows += len(up.readings)

        client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect(host, port, clean_start=False, properties=props)
        client.loop_start()
        self.stop_event.wait()
        client.disconnect()
        client.loop_stop()
        conn.close()


def copy_limit(admin: str, rows: int) -> list[Result]:
    """The same number of rows COPYed straight into observation, no MQTT, no decoding: with
    psycopg's binary ``write_row`` (its C fast path), and as one buffer built by numpy."""
    from quartier.store.pgcopy import PG_EPOCH_US, Column, write_copy

    out = []
    db = fresh_db(admin)
    data = [(1 + i % 1000, T0 + timedelta(seconds=i // 1000), (i % 500) / 10) for i in range(rows)]
    with psycopg.connect(db) as conn:
        t = time.perf_counter()
        with conn.cursor().copy(
            "copy observation (datastream_id, phenomenon_time, result) from stdin (format binary)"
        ) as cp:
            cp.set_types(["int8", "timestamptz", "float8"])
            for r in data:
                cp.write_row(r)
        conn.commit()
        out.append(
            Result("(d) raw binary COPY, write_row (no MQTT)", rows, rows, time.perf_counter() - t)
        )
    db = fresh_db(admin)
    i = np.arange(rows, dtype=np.int64)
    t0_us = int(T0.timestamp()) * 1_000_000
    with psycopg.connect(db) as conn:
        t = time.perf_counter()
        write_copy(
            conn,
            "observation",
            [
                Column("datastream_id", "int8", 1 + i % 1000),
                Column("phenomenon_time", "int8", t0_us + (i // 1000) * 1_000_000 - PG_EPOCH_US),
                Column("result", "float8", (i % 500) / 10),
            ],
        )
        conn.commit()
        out.append(
            Result(
                "(d') raw binary COPY, numpy buffer (no MQTT)", rows, rows, time.perf_counter() - t
            )
        )
    return out


def live_publisher(mqtt_url: str, rate: float, seconds: float, devices: int = 1000) -> None:
    """Child process: publish single readings stamped with their publish time, at ``rate``."""
    from quartier.sensors_sim.fleet import Message
    from quartier.sensors_sim.publisher import publish

    n = int(rate * seconds)

    def gen():  # type: ignore[no-untyped-def]
        for i in range(n):
            yield Message(
                f"quartier/v1/bench/dev-{i % devices}/up",
                orjson.dumps(
                    {
                        "time": datetime.now(UTC).isoformat(),
                        "quantity": "pm25",
                        "value": (i % 500) / 10,
                    }
                ),
            )

    publish(mqtt_url, gen(), rate=rate, client_id=f"bench-live-{uuid.uuid4().hex[:6]}")


def live(admin: str, mqtt_url: str, rate: float, seconds: float) -> dict[str, float]:
    db = fresh_db(admin)
    register_devices(db, {f"dev-{i}" for i in range(1000)})
    s = settings_for(db, mqtt_url, f"bench-{uuid.uuid4().hex[:6]}")
    ing = Ingester(s)
    commits: list[tuple[float, list[bytes]]] = []
    ing.on_committed = lambda msgs: commits.append((time.time(), [m.payload for m in msgs]))
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    ing.connected.wait(10)
    time.sleep(0.5)
    expected = int(rate * seconds)
    import subprocess

    child = subprocess.Popen(
        [sys.executable, __file__, "--live-child", mqtt_url, str(rate), str(seconds)]
    )
    child.wait()
    try:
        wait_stored(ing.committed, expected, timeout=120)
    finally:
        ing.stop_event.set()
        thread.join(30)
    lat = []
    for t_commit, payloads in commits:
        for p in payloads:
            t_pub = datetime.fromisoformat(orjson.loads(p)["time"]).timestamp()
            lat.append(t_commit - t_pub)
    lat.sort()
    stored = count_rows(db) - 1000
    return {
        "sent": expected,
        "stored": stored,
        "lost": expected - stored,
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)],
        "max_ms": 1000 * lat[-1],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--live-child":
        live_publisher(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--batched", type=int, default=5_000)
    ap.add_argument("--naive", type=int, default=10_000)
    ap.add_argument("--live-rate", type=float, default=5000)
    ap.add_argument("--live-seconds", type=float, default=60)
    args = ap.parse_args()

    db = os.environ.get("QUARTIER_TEST_DATABASE_URL")
    mq = os.environ.get("QUARTIER_TEST_MQTT_URL")
    local = None
    if not (db and mq):
        state = Path(tempfile.mkdtemp(prefix="quartier-bench-"))
        os.chmod(state, 0o755)
        local = LocalServices(state)
        st = local.up()
        db, mq = st.database_url, st.mqtt_url
    try:
        results = []
        print("preparing …", flush=True)
        results.append(
            drain(
                "(a) single-reading messages",
                db,
                mq,
                single_messages(args.messages),
                args.messages,
                Ingester,
            )
        )
        results.append(
            drain(
                "(b) batched messages (100 readings)",
                db,
                mq,
                batched_messages(args.batched),
                args.batched * 100,
                Ingester,
            )
        )
        results.append(
            drain(
                "(c) naive baseline (INSERT+commit per message)",
                db,
                mq,
                single_messages(args.naive),
                args.naive,
                NaiveIngester,
            )
        )
        results += copy_limit(db, args.batched * 100)
        print()
        print(f"{'case':50} {'msgs':>8} {'readings':>9} {'s':>7} {'msgs/s':>9} {'readings/s':>11}")
        for r in results:
            print(
                f"{r.name:50} {r.messages:8d} {r.readings:9d} {r.seconds:7.2f} "
                f"{r.msgs_per_s:9.0f} {r.readings_per_s:11.0f}"
            )
        a, b, c, d, d2 = results
        print()
        print(f"single-reading vs naive baseline: {a.msgs_per_s / c.msgs_per_s:.1f}x")
        print(
            f"batched readings/s vs raw COPY (write_row):    "
            f"{100 * b.readings_per_s / d.readings_per_s:.0f} %"
        )
        print(
            f"batched readings/s vs raw COPY (numpy buffer): "
            f"{100 * b.readings_per_s / d2.readings_per_s:.0f} %"
        )
        if args.live_seconds > 0:
            print(f"\nlive: {args.live_rate:.0f} msgs/s for {args.live_seconds:.0f} s", flush=True)
            lv = live(db, mq, args.live_rate, args.live_seconds)
            print(
                f"live: sent {lv['sent']:.0f}, stored {lv['stored']:.0f}, lost {lv['lost']:.0f};"
                f" publish-to-commit p50 {lv['p50_ms']:.0f} ms, p99 {lv['p99_ms']:.0f} ms,"
                f" max {lv['max_ms']:.0f} ms"
            )
    finally:
        if local is not None:
            local.down()
            shutil.rmtree(local.state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
