"""Ingest benchmark: how fast the ingester drains a backlog and how long a reading takes from
publish to commit under live load, against baselines and references measured in the same run.

    .venv/bin/python bench/ingest.py [--messages 50000] [--batched 5000] [--naive 10000]
        [--repeat 5] [--live-rate 5000,10000,15000] [--live-seconds 60]
        [--live-policy adaptive,fixed] [--broker-save 30s|change] [--no-drain]
        [--publisher auto|c|python|c,python] [--live-publishers N] [--live-batch-min-ms 2,20]
        [--ingesters 1,2]

Starts its own PostgreSQL (fsync and synchronous_commit on, as in production) and Mosquitto
unless QUARTIER_TEST_DATABASE_URL / QUARTIER_TEST_MQTT_URL are set; the header prints the
durability settings in force. Every MQTT case goes through the shared subscription production
uses (``$share/bench/…``). Drain cases publish their backlog into the subscriber's persistent
session first, then start the subscriber and time until the last message is committed (or, for
the broker-only reference, acknowledged), so the publisher does not compete for the CPU. Each
case runs ``--repeat`` times, on a fresh copy of one prepared database (devices registered); the
table shows min / median / max and the verdicts use medians.

Cases:
  (a) single-reading messages through the ingester (QoS 1, ack after commit)
  (b) batched messages (100 readings each) through the ingester
  (r) broker only: a subscriber on the same shared subscription that acknowledges every message
      without storing it (the broker's and the MQTT client's delivery limit)
  (n1) competent naive baseline: one connection, executemany of plain INSERTs, one commit per
      batch of up to 500 messages (or what one poll found), acknowledgements after the commit
  (n0) per-message baseline: one INSERT and one commit per message (many simple bridges)
  (c1) raw binary COPY of (b)'s number of rows, numpy buffer, one connection, no MQTT
  (cN) the same over as many connections as the ingester has writers, in parallel

Live: publishing processes on the same host (a gateway there would share the cores) publish
single readings at a fixed rate with QoS 1, each stamped with its publish time; the latency is
publish to commit (measured when the batch is acknowledged). ``--publisher c`` (chosen
automatically when it builds) is bench/mqtt_pub.c on libmosquitto, one process (15-32 us of CPU
a message, 10-25 times less than paho); ``--publisher python`` is paho
(sensors_sim.publisher), one process per 2,000 msgs/s, which with the rest of the pipeline
saturates two cores at about 5,000 msgs/s. Each live run reports the CPU each part used
(publishers, broker, this process = the ingester and its threads, the PostgreSQL cluster, and
the rest of the machine) from /proc, and the ingester's CPU per message (µs; load-robust, unlike
the latencies). ``--ingesters N[,M]`` runs the ingester as N processes on the one shared
subscription (as several ``quartier ingest`` would run), each its own session and driven by this
process over stdin/stdout; each N in the list is one run, same command, same run. Without it the
ingester runs inside this process (its CPU then includes this process's sampling threads).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import mqtt_pub
from quartier.config import Settings
from quartier.ingest.mqtt import Ingester
from quartier.ingest.mqtt_client import mqtt_client
from quartier.ingest.pipeline import Message
from quartier.services import LocalServices
from quartier.store.migrate import migrate

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GROUP = "bench"
TOPICS = ["quartier/v1/+/+/up", "quartier/v1/+/+/speedtest"]
DEVICES = 200


@dataclass
class Case:
    name: str
    messages: int
    readings: int
    seconds: list[float]

    def rate(self, per: str = "messages") -> list[float]:
        n = self.messages if per == "messages" else self.readings
        return [n / s for s in self.seconds]

    def median(self, per: str = "messages") -> float:
        return statistics.median(self.rate(per))


# ------------------------------------------------------------------ databases


def prepared_db(admin_url: str) -> str:
    """A migrated database with the benchmark's devices registered: the template of every case."""
    name = f"bench_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "select quartier_ensure_observation_partitions(%s, %s)",
            (T0 - timedelta(days=31), T0 + timedelta(days=62)),
        )
    register_devices(url, {f"dev-{i}" for i in range(DEVICES)})
    return name


def fresh_db(admin_url: str, template: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"create database {name} template {template}")
    return psycopg.conninfo.make_conninfo(admin_url, dbname=name)


def drop_db(admin_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")


def register_devices(db: str, devices: set[str]) -> None:
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


def count_rows(url: str) -> int:
    """Observations stored besides the one registration reading per device."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select count(*) from observation where phenomenon_time >= %s", (T0,)
        ).fetchone()
    return int(row[0]) if row else 0


def settings_for(db: str, mqtt: str, client_id: str, **ingest: Any) -> Settings:
    return Settings(
        _env_file=None,
        database={"url": db},
        mqtt={"url": mqtt},  # type: ignore[call-arg]
        ingest={"client_id": client_id, "share_group": GROUP, **ingest},
    )


def durability(admin_url: str, local: LocalServices | None) -> list[str]:
    with psycopg.connect(admin_url) as conn:
        pg = {
            k: conn.execute(f"show {k}").fetchone()[0]  # type: ignore[index]
            for k in ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method")
        }
    lines = ["PostgreSQL: " + ", ".join(f"{k} = {v}" for k, v in pg.items())]
    if local is None:
        lines.append("Mosquitto: external broker (QUARTIER_TEST_MQTT_URL), settings unknown")
    else:
        conf = (local.state_dir / "mqtt" / "mosquitto.conf").read_text().splitlines()
        keep = [
            ln.strip()
            for ln in conf
            if ln.strip().startswith(("persistence ", "autosave", "max_inflight_messages"))
        ]
        lines.append("Mosquitto: " + "; ".join(keep))
    return lines


# ------------------------------------------------------------------ MQTT helpers


def open_session(mqtt_url: str, client_id: str) -> None:
    """Create a subscriber's persistent session on the shared subscription, then leave."""
    client, host, port = mqtt_client(mqtt_url, client_id)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    done = threading.Event()
    client.on_subscribe = lambda *a: done.set()
    client.connect(host, port, clean_start=True, properties=props)
    client.loop_start()
    client.subscribe([(f"$share/{GROUP}/{t}", 1) for t in TOPICS])
    done.wait(5)
    client.disconnect()
    client.loop_stop()


def forget_session(mqtt_url: str, client_id: str) -> None:
    client, host, port = mqtt_client(mqtt_url, client_id)
    client.connect(host, port, clean_start=True)  # session expiry 0: gone on disconnect
    client.loop_start()
    deadline = time.monotonic() + 5
    while not client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.01)
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
        info.wait_for_publish(600)
    dt = time.perf_counter() - t
    client.disconnect()
    client.loop_stop()
    return dt


def persistent_connect(client: Any, host: str, port: int) -> None:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 65535
    client.connect(host, port, clean_start=False, properties=props)


# ------------------------------------------------------------------ subscribers


class BrokerOnly:
    """Reference: the ingester's MQTT client on the same shared subscription, acknowledging every
    message (in one write per millisecond or so, as the ingester does per batch) without
    decoding or storing it: the broker's delivery limit as a Python subscriber sees it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        self.acked = 0

    def committed(self) -> int:
        return self.acked

    def run(self) -> None:
        client, host, port = mqtt_client(
            self.settings.require_mqtt_url(), self.settings.ingest.client_id
        )
        client.manual_ack_set(True)
        mids: list[int] = []
        client.fast_on_messages = lambda publishes: mids.extend([mid for _, _, mid in publishes])
        persistent_connect(client, host, port)
        client.loop_start()
        while not self.stop_event.wait(0.001):
            if mids:
                taken = mids[:]
                del mids[: len(taken)]
                client.ack_many(taken)
                self.acked += len(taken)
        client.disconnect()
        client.loop_stop()


class _Naive:
    """Shared by the naive baselines: paho's ordinary message path (``on_message``), the full
    native decoder, one connection, a cached datastream id per device."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        self.rows = 0
        self.streams: dict[str, int] = {}

    def committed(self) -> int:
        return self.rows

    def rows_of(self, conn: psycopg.Connection[Any], topic: str, payload: bytes) -> list[tuple]:
        from quartier.ingest.native import decode_native

        _, _, net, dev, _ = topic.split("/")
        up = decode_native(net, dev, payload, max_bytes=1 << 20)
        ds = self.streams.get(dev)
        if ds is None:
            row = conn.execute(
                "select dd.datastream_id from device d join device_datastream dd"
                " on dd.device_id = d.id where d.device_key = %s",
                (dev,),
            ).fetchone()
            ds = self.streams[dev] = row[0] if row else -1
        return [(ds, r.time, r.value) for r in up.readings]


INSERT = (
    "insert into observation (datastream_id, phenomenon_time, result) values (%s, %s, %s)"
    " on conflict do nothing"
)


class PerMessageNaive(_Naive):
    """(n0) One INSERT and one commit per message; paho acknowledges after ``on_message``
    returned, that is after the commit."""

    def run(self) -> None:
        conn = psycopg.connect(self.settings.require_database_url())
        client, host, port = mqtt_client(
            self.settings.require_mqtt_url(), self.settings.ingest.client_id
        )

        def on_message(c: Any, u: Any, msg: Any) -> None:
            rows = self.rows_of(conn, msg.topic, msg.payload)
            for r in rows:
                conn.execute(INSERT, r)
            conn.commit()
            self.rows += len(rows)

        client.on_message = on_message
        persistent_connect(client, host, port)
        client.loop_start()
        self.stop_event.wait()
        client.disconnect()
        client.loop_stop()
        conn.close()


class BatchedNaive(_Naive):
    """(n1) The competent simple bridge: paho's thread queues the messages; a worker takes up to
    500 at a time (or whatever one poll found), decodes them, ``executemany`` of plain INSERTs
    (psycopg pipelines them), one commit, then acknowledges each of them."""

    BATCH = 500

    def run(self) -> None:
        conn = psycopg.connect(self.settings.require_database_url())
        client, host, port = mqtt_client(
            self.settings.require_mqtt_url(), self.settings.ingest.client_id
        )
        client.manual_ack_set(True)
        pending: list[Any] = []
        lock = threading.Lock()
        full = threading.Event()

        def on_message(c: Any, u: Any, msg: Any) -> None:
            with lock:
                pending.append((msg.topic, msg.payload, msg.mid))
                if len(pending) >= self.BATCH:
                    full.set()

        client.on_message = on_message
        persistent_connect(client, host, port)
        client.loop_start()
        while not self.stop_event.is_set():
            full.wait(0.01)
            with lock:
                taken = pending[: self.BATCH]
                del pending[: len(taken)]
                if len(pending) < self.BATCH:
                    full.clear()
            if not taken:
                continue
            rows = [r for topic, payload, _ in taken for r in self.rows_of(conn, topic, payload)]
            with conn.cursor() as cur:
                cur.executemany(INSERT, rows)
            conn.commit()
            for _, _, mid in taken:
                client.ack(mid, 1)
            self.rows += len(rows)
        client.disconnect()
        client.loop_stop()
        conn.close()


# ------------------------------------------------------------------ cases


def drain(
    admin: str,
    template: str,
    mqtt_url: str,
    msgs: list[tuple[str, bytes]],
    expected: int,
    make: Callable[[Settings], Any],
    *,
    stores: bool = True,
) -> tuple[float, float]:
    """Publish ``msgs`` into a new persistent session on the shared subscription, then start the
    subscriber and time until it has committed ``expected`` readings (or acknowledged that many
    messages). Returns (drain seconds, publish seconds)."""
    db = fresh_db(admin, template)
    cid = f"bench-{uuid.uuid4().hex[:6]}"
    try:
        open_session(mqtt_url, cid)
        pub_s = publish_all(mqtt_url, msgs)
        sub = make(settings_for(db, mqtt_url, cid))
        t0 = time.perf_counter()
        thread = threading.Thread(target=sub.run, daemon=True)
        thread.start()
        t1 = wait_stored(sub.committed, expected)
        sub.stop_event.set()
        thread.join(30)
        if stores:
            stored = count_rows(db)
            if stored != expected:
                raise RuntimeError(f"{stored} rows stored, {expected} expected")
        return t1 - t0, pub_s
    finally:
        forget_session(mqtt_url, cid)
        drop_db(admin, db)


def copy_rows(admin: str, template: str, rows: int, connections: int) -> float:
    """``rows`` observations COPYed straight into ``observation`` (numpy-built binary buffer, no
    MQTT, no decoding) over ``connections`` connections in parallel, each one transaction."""
    from quartier.store.pgcopy import PG_EPOCH_US, Column, write_copy

    db = fresh_db(admin, template)
    try:
        with psycopg.connect(db) as conn:
            ids = np.array(
                [r[0] for r in conn.execute("select id from datastream order by id")],
                dtype=np.int64,
            )
        i = np.arange(rows, dtype=np.int64)
        t0_us = int(T0.timestamp()) * 1_000_000
        cols = {
            "datastream_id": ids[i % len(ids)],
            "phenomenon_time": t0_us + (i // len(ids)) * 1_000_000 - PG_EPOCH_US,
            "result": (i % 500) / 10,
        }
        kinds = {"datastream_id": "int8", "phenomenon_time": "int8", "result": "float8"}
        parts = np.array_split(i, connections)
        conns = [psycopg.connect(db) for _ in range(connections)]
        start = threading.Barrier(connections + 1)

        def load(conn: psycopg.Connection[Any], part: np.ndarray[Any, Any]) -> None:
            start.wait()
            write_copy(conn, "observation", [Column(k, kinds[k], v[part]) for k, v in cols.items()])
            conn.commit()

        threads = [
            threading.Thread(target=load, args=(c, p)) for c, p in zip(conns, parts, strict=True)
        ]
        for t in threads:
            t.start()
        start.wait()
        t = time.perf_counter()
        for th in threads:
            th.join()
        dt = time.perf_counter() - t
        for c in conns:
            c.close()
        if count_rows(db) != rows:
            raise RuntimeError("raw COPY stored the wrong number of rows")
        return dt
    finally:
        drop_db(admin, db)


def single_messages(n: int, devices: int = DEVICES) -> list[tuple[str, bytes]]:
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


def live_publisher(
    mqtt_url: str, rate: float, seconds: float, part: int = 0, parts: int = 1
) -> None:
    """Child process ``part`` of ``parts`` (``--publisher python``): publish single readings
    stamped with their publish time, at ``rate``, from its own devices (those whose number is
    ``part`` modulo ``parts``, so that two children never stamp one device's reading with the
    same time). Prints the line bench/mqtt_pub.c prints (``mqtt_pub.parse_result``)."""
    from quartier.sensors_sim.fleet import Message as SimMessage
    from quartier.sensors_sim.publisher import publish

    n = int(rate * seconds)
    sent_at: list[float] = []
    lag = [0.0]

    def gen() -> Iterator[SimMessage]:
        for i in range(n):
            yield SimMessage(
                f"quartier/v1/bench/dev-{part + parts * (i % (DEVICES // parts))}/up",
                orjson.dumps(
                    {
                        "time": datetime.now(UTC).isoformat(),
                        "quantity": "pm25",
                        "value": (i % 500) / 10,
                    }
                ),
            )

    def progress(k: int) -> None:
        now = time.perf_counter()
        lag[0] = max(lag[0], now - (t0 + (k - 1) / rate))
        if k == n:
            sent_at.append(now)

    t0 = time.perf_counter()
    acked = publish(
        mqtt_url,
        gen(),
        rate=rate,
        client_id=f"bench-live-{uuid.uuid4().hex[:6]}",
        progress=progress,
    )
    t1 = time.perf_counter()
    print(
        f"sent={n} acked={acked} failed={n - acked} seconds={t1 - t0:.3f}"
        f" send_seconds={(sent_at[0] if sent_at else t1) - t0:.3f} lag_max_ms={lag[0] * 1000:.1f}"
    )


# ------------------------------------------------------------------ CPU per part (from /proc)

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _cpu_s(pids: list[int]) -> float:
    """utime + stime of ``pids`` in seconds (a process gone meanwhile counts 0)."""
    total = 0
    for pid in pids:
        f = _proc_stat(pid)
        if f is not None:
            total += int(f[11]) + int(f[12])
    return total / _TICK


def _cpu_s_task(tid: int) -> float:
    """utime + stime of one thread of this process, in seconds."""
    try:
        f = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / _TICK


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        f = _proc_stat(int(stat.parent.name))
        if f is not None and int(f[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def postmaster_of(url: str) -> int | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("select pg_backend_pid()").fetchone()
    f = _proc_stat(int(row[0])) if row else None
    return int(f[1]) if f else None  # None: the server runs elsewhere


def _machine_busy_s() -> float:
    """CPU seconds all processes of the machine used so far (every core)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


#: thread names (prefixes) of the ingester's stages
STAGES = (("paho-mqtt", "mqtt"), ("ingest-decode", "decode"), ("ingest-write", "writers"))


def stage_cpu_s() -> dict[str, float]:
    """CPU seconds of this process's ingester threads by stage (``ingester:mqtt`` …)."""
    out = {f"ingester:{stage}": 0.0 for _, stage in STAGES}
    for t in threading.enumerate():
        # writer 0 is the thread that runs Ingester.run
        name = "ingest-write-0" if t.name.endswith("(run)") else t.name
        stage = next((s for prefix, s in STAGES if name.startswith(prefix)), None)
        if stage is not None and t.native_id is not None:
            out[f"ingester:{stage}"] += _cpu_s_task(t.native_id)
    return out


@dataclass
class CpuSplit:
    """CPU seconds per part of the pipeline over one live run, sampled before the publishers
    start and once the last reading is committed. Publishers: the finished child processes
    (``RUSAGE_CHILDREN``); ingester: this process (its MQTT, decode and writer threads, plus the
    benchmark's polling); PostgreSQL: the postmaster and every backend alive at the samples
    (the writers' two connections are); rest: the machine's other work. The ingester's own
    threads are split out too (``ingester:mqtt``, ``:decode``, ``:writers``), from
    /proc/self/task."""

    broker_pid: int | None
    postmaster_pid: int | None

    def sample(self) -> dict[str, float]:
        pg = [self.postmaster_pid, *_children(self.postmaster_pid)] if self.postmaster_pid else []
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = {
            "publishers": kids.ru_utime + kids.ru_stime,
            "broker": _cpu_s([self.broker_pid]) if self.broker_pid else 0.0,
            "ingester": own.ru_utime + own.ru_stime,
            "postgres": _cpu_s(pg),
            "machine": _machine_busy_s(),
            "wall": time.monotonic(),
        }
        out.update(stage_cpu_s())
        return out

    @staticmethod
    def share(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """Each part's CPU in % of one core over the run; "rest" is the machine's other work."""
        wall = after["wall"] - before["wall"]
        d = {k: after[k] - before[k] for k in before if k != "wall"}
        # backends that ended between the samples are missing: postgres is a lower bound
        parts = sum(v for k, v in d.items() if ":" not in k and k != "machine")
        d["rest"] = max(0.0, d.pop("machine") - parts)
        return {k: 100 * v / wall for k, v in d.items()}


def live(
    admin: str,
    template: str,
    mqtt_url: str,
    rate: float,
    seconds: float,
    adaptive: bool,
    publishers: int = 1,
    publisher: str = "python",
    cpu: CpuSplit | None = None,
    **ingest: Any,
) -> dict[str, Any]:
    """One live run: ``publishers`` processes of kind ``publisher`` (``c`` or ``python``)
    together publish ``rate`` msgs/s for ``seconds``; every reading must be stored."""
    db = fresh_db(admin, template)
    cid = f"bench-{uuid.uuid4().hex[:6]}"
    ing = Ingester(settings_for(db, mqtt_url, cid, batch_adaptive=adaptive, **ingest))
    # the callback runs in a writer thread under the ingester's acknowledgement lock: keep only
    # references there (unpacking each message there cost the acks measurably in py-spy)
    commits: list[tuple[float, list[Message]]] = []
    ing.on_committed = lambda msgs: commits.append((time.time(), msgs))
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    try:
        ing.connected.wait(10)
        time.sleep(0.5)
        expected = int(rate / publishers * seconds) * publishers
        load_before = os.getloadavg()[0]
        cmds = publisher_cmds(mqtt_url, rate, seconds, publishers, publisher)
        cpu0 = cpu.sample() if cpu else None
        children = [
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for cmd in cmds
        ]
        # how many messages the ingester holds unacknowledged (received, not yet acked): the
        # broker sends an MQTT 5 client no more than its Receive Maximum (the ingester: 65,535)
        held = [0]
        sampling = threading.Event()

        def sample_held() -> None:
            while not sampling.wait(0.01):
                acked = sum(len(m) for _, m in commits[:])
                held[0] = max(held[0], ing.stats.received + ing.buffered() - acked)

        sampler = threading.Thread(target=sample_held, daemon=True)
        sampler.start()
        outs = [c.communicate() for c in children]
        if any(c.returncode for c in children):
            raise RuntimeError(f"a publisher failed: {[err[-500:] for _, err in outs]}")
        pubs = [mqtt_pub.parse_result(out.strip().splitlines()[-1]) for out, _ in outs]
        try:
            wait_stored(ing.committed, expected, timeout=300)
            cpu1 = cpu.sample() if cpu else None
        finally:
            sampling.set()
            ing.stop_event.set()
            thread.join(30)
        load_after = os.getloadavg()[0]
        stored = count_rows(db)
        return {
            "sent": expected,
            "stored": stored,
            "lost": expected - stored,
            **publisher_stats(pubs),
            **latency_stats(*commit_arrays(commits)),
            "held_max": held[0],
            "load": max(load_before, load_after),
            "cpu": CpuSplit.share(cpu0, cpu1) if cpu0 and cpu1 else None,
            "cpu_us": cpu_us(cpu0, cpu1, expected),
        }
    finally:
        forget_session(mqtt_url, cid)
        drop_db(admin, db)


def publisher_stats(pubs: list[Any]) -> dict[str, float]:
    return {
        "acked_by_broker": sum(p.acked - p.failed for p in pubs),
        # the offered rate reached: messages over the time the slowest publisher took to send
        # them (its last PUBACK may come later)
        "rate": sum(p.sent for p in pubs) / max(p.send_seconds for p in pubs),
        "pub_lag_max_ms": max(p.lag_max_ms for p in pubs),
    }


def commit_arrays(
    commits: list[tuple[float, list[Message]]],
) -> tuple[list[float], list[float], list[float], list[int]]:
    """Per message: publish to commit, publish to arrival in the ingester (the publisher's
    socket, the broker, the ingester's socket), arrival to commit (the ingester's share), in
    seconds; and the size of every batch."""
    sent_at = [
        (datetime.fromisoformat(orjson.loads(m.payload)["time"]).timestamp(), m, t_commit)
        for t_commit, msgs in commits
        for m in msgs
    ]
    lat = [t_commit - t_pub for t_pub, _, t_commit in sent_at]
    before = [m.received_at.timestamp() - t_pub for t_pub, m, _ in sent_at]
    own = [t_commit - m.received_at.timestamp() for t_commit, msgs in commits for m in msgs]
    return lat, before, own, [len(p) for _, p in commits]


def latency_stats(
    lat: list[float], before: list[float], own: list[float], sizes: list[int]
) -> dict[str, float]:
    lat, before, own = sorted(lat), sorted(before), sorted(own)
    return {
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)],
        "max_ms": 1000 * lat[-1],
        "to_p50_ms": 1000 * before[len(before) // 2],
        "to_p99_ms": 1000 * before[int(len(before) * 0.99)],
        "in_p50_ms": 1000 * own[len(own) // 2],
        "in_p99_ms": 1000 * own[int(len(own) * 0.99)],
        "batches": len(sizes),
        "batch_mean": statistics.mean(sizes),
        "batch_p99": sorted(sizes)[int(len(sizes) * 0.99)],
        "batch_max": max(sizes),
    }


def cpu_us(cpu0: dict[str, float] | None, cpu1: dict[str, float] | None, n: int) -> float | None:
    """The ingester's CPU per message in µs (all its threads; load-robust, unlike latency)."""
    if not cpu0 or not cpu1:
        return None
    return (cpu1["ingester"] - cpu0["ingester"]) / n * 1e6


def publisher_cmds(
    mqtt_url: str, rate: float, seconds: float, publishers: int, publisher: str
) -> list[list[str]]:
    each = int(rate / publishers * seconds)
    if publisher == "c":
        return [
            mqtt_pub.command(
                mqtt_url,
                rate=rate / publishers,
                count=each,
                devices=DEVICES // publishers,
                part=k,
                parts=publishers,
                client_id=f"bench-cpub-{uuid.uuid4().hex[:6]}",
            )
            for k in range(publishers)
        ]
    child = [sys.executable, __file__, "--live-child", mqtt_url, str(rate / publishers)]
    return [[*child, str(seconds), str(k), str(publishers)] for k in range(publishers)]


def ingest_child(db: str, mqtt_url: str, cid: str, ingest_json: str, out_path: str) -> None:
    """One ingester process of a ``--ingesters N`` live run (``--ingest-child``), driven over
    stdin/stdout: prints ``ready`` once subscribed, samples its CPU at ``start`` and ``stop``,
    prints ``committed N`` every 50 ms meanwhile, and at ``stop`` writes its latencies, batch
    sizes and CPU (by stage) to ``out_path`` (JSON)."""
    ing = Ingester(settings_for(db, mqtt_url, cid, **orjson.loads(ingest_json)))
    commits: list[tuple[float, list[Message]]] = []
    ing.on_committed = lambda msgs: commits.append((time.time(), msgs))
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    if not ing.connected.wait(30):
        sys.exit("ingester did not connect")
    time.sleep(0.5)
    print("ready", flush=True)

    def sample() -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return {"ingester": own.ru_utime + own.ru_stime, **stage_cpu_s()}

    assert sys.stdin.readline().strip() == "start"
    cpu0 = sample()
    held = [0]
    done = threading.Event()

    def report() -> None:
        while not done.wait(0.05):
            acked = sum(len(m) for _, m in commits[:])
            held[0] = max(held[0], ing.stats.received + ing.buffered() - acked)
            print(f"committed {ing.committed()}", flush=True)

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    assert sys.stdin.readline().strip() == "stop"
    cpu1 = sample()
    done.set()
    ing.stop_event.set()
    thread.join(30)
    lat, before, own, sizes = commit_arrays(commits)
    Path(out_path).write_bytes(
        orjson.dumps(
            {
                "lat": lat,
                "before": before,
                "own": own,
                "sizes": sizes,
                "held_max": held[0],
                "cpu": {k: cpu1[k] - cpu0[k] for k in cpu0},
            }
        )
    )
    print("done", flush=True)


def live_procs(
    admin: str,
    template: str,
    mqtt_url: str,
    rate: float,
    seconds: float,
    adaptive: bool,
    ingesters: int,
    publishers: int = 1,
    publisher: str = "c",
    cpu: CpuSplit | None = None,
    **ingest: Any,
) -> dict[str, Any]:
    """One live run with ``ingesters`` ingester processes on the one shared subscription (as
    several ``quartier ingest`` would run), each its own client id and session; otherwise as
    :func:`live`. The ingesters' CPU is theirs alone (no benchmark threads in them)."""
    db = fresh_db(admin, template)
    cids = [f"bench-{uuid.uuid4().hex[:6]}" for _ in range(ingesters)]
    tmp = Path(tempfile.mkdtemp(prefix="quartier-bench-live-"))
    settings = orjson.dumps({"batch_adaptive": adaptive, **ingest}).decode()
    procs: list[subprocess.Popen[str]] = []
    try:
        for k, cid in enumerate(cids):
            cmd = [sys.executable, __file__, "--ingest-child", db, mqtt_url, cid, settings]
            procs.append(
                subprocess.Popen(
                    [*cmd, str(tmp / f"{k}.json")],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("an ingester process did not start")
        committed = [0] * ingesters

        def follow(k: int, p: subprocess.Popen[str]) -> None:
            assert p.stdout is not None
            for line in p.stdout:
                if line.startswith("committed "):
                    committed[k] = int(line.split()[1])

        followers = [
            threading.Thread(target=follow, args=(k, p), daemon=True) for k, p in enumerate(procs)
        ]
        for t in followers:
            t.start()
        cmds = publisher_cmds(mqtt_url, rate, seconds, publishers, publisher)
        expected = int(rate / publishers * seconds) * publishers
        load_before = os.getloadavg()[0]
        pids = [p.pid for p in procs]
        cpu0 = {**cpu.sample(), "ingester": _cpu_s(pids)} if cpu else None
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("start\n")
            p.stdin.flush()
        children = [
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for cmd in cmds
        ]
        outs = [c.communicate() for c in children]
        if any(c.returncode for c in children):
            raise RuntimeError(f"a publisher failed: {[err[-500:] for _, err in outs]}")
        pubs = [mqtt_pub.parse_result(out.strip().splitlines()[-1]) for out, _ in outs]
        wait_stored(lambda: sum(committed), expected, timeout=300)
        cpu1 = {**cpu.sample(), "ingester": _cpu_s(pids)} if cpu else None
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("stop\n")
            p.stdin.flush()
        for p in procs:
            p.wait(60)
        for t in followers:
            t.join(5)
        load_after = os.getloadavg()[0]
        parts = [orjson.loads((tmp / f"{k}.json").read_bytes()) for k in range(ingesters)]
        stored = count_rows(db)
        split = None
        if cpu0 and cpu1:
            # this process's own threads are not the ingesters': the children's stages instead
            for key in [k for k in cpu0 if k.startswith("ingester:")]:
                cpu0[key] = 0.0
                cpu1[key] = sum(part["cpu"][key] for part in parts)
            split = CpuSplit.share(cpu0, cpu1)
        return {
            "sent": expected,
            "stored": stored,
            "lost": expected - stored,
            **publisher_stats(pubs),
            **latency_stats(
                *(
                    [x for part in parts for x in part[key]]
                    for key in ("lat", "before", "own", "sizes")
                )
            ),
            "held_max": max(part["held_max"] for part in parts),
            "load": max(load_before, load_after),
            "cpu": split,
            "cpu_us": cpu_us(cpu0, cpu1, expected),
            "per_ingester": [sum(part["sizes"]) for part in parts],
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for cid in cids:
            forget_session(mqtt_url, cid)
        drop_db(admin, db)
        shutil.rmtree(tmp, ignore_errors=True)


def spread(values: list[float]) -> str:
    return f"{min(values):>9,.0f} {statistics.median(values):>9,.0f} {max(values):>9,.0f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--ingest-child":
        ingest_child(*sys.argv[2:7])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--live-child":
        live_publisher(
            sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
        )
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=50_000, help="single-reading messages")
    ap.add_argument("--batched", type=int, default=5_000, help="messages of 100 readings")
    ap.add_argument("--naive", type=int, default=10_000, help="messages for the baselines")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each drain case")
    ap.add_argument("--no-drain", action="store_true", help="live runs only")
    ap.add_argument("--live-rate", default="5000,10000,15000", help="msgs/s, comma-separated")
    ap.add_argument("--live-seconds", type=float, default=60, help="0: no live runs")
    ap.add_argument(
        "--live-publishers",
        type=int,
        default=0,
        help="publishing processes (one MQTT connection each); 0: one C publisher, or one"
        " Python publisher per 2,000 msgs/s",
    )
    ap.add_argument(
        "--publisher",
        default="auto",
        help="live publisher: c (bench/mqtt_pub.c on libmosquitto, built on first use), python"
        " (paho), both in turn (c,python: same-run comparison), or auto: c when it builds here,"
        " else python",
    )
    ap.add_argument(
        "--live-batch-min-ms",
        default="",
        help="ingest.batch_min_ms for the live runs, comma-separated for a same-run comparison"
        " (default: the setting's default)",
    )
    ap.add_argument(
        "--live-policy",
        default="adaptive",
        help="adaptive, fixed (ingest.batch_adaptive off) or both: adaptive,fixed",
    )
    ap.add_argument(
        "--ingesters",
        default="",
        help="ingester processes on the one shared subscription, comma-separated for a same-run"
        " comparison (e.g. 1,2); default: one ingester inside this process, as before",
    )
    ap.add_argument(
        "--broker-save",
        choices=["30s", "change"],
        default="30s",
        help="the local broker saves every 30 s or after every change (production config)",
    )
    args = ap.parse_args()
    kinds = [k.strip() for k in args.publisher.split(",")]
    if any(k not in ("auto", "c", "python") for k in kinds):
        ap.error("--publisher: auto, c, python or c,python")
    if "auto" in kinds:
        try:
            mqtt_pub.build()
            kinds = ["c" if k == "auto" else k for k in kinds]
        except mqtt_pub.BuildError as exc:
            print(f"publisher: python ({exc})")
            kinds = ["python" if k == "auto" else k for k in kinds]
    if "c" in kinds:
        try:
            mqtt_pub.build()
        except mqtt_pub.BuildError as exc:
            sys.exit(f"error: {exc}")
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))  # stop the local servers on the way out

    admin = os.environ.get("QUARTIER_TEST_DATABASE_URL")
    mq = os.environ.get("QUARTIER_TEST_MQTT_URL")
    local = None
    broker_pid = None
    if not (admin and mq):
        state = Path(tempfile.mkdtemp(prefix="quartier-bench-"))
        os.chmod(state, 0o755)
        # no accounts on the loopback broker: with them every client of one URL gets the same
        # client id (use_username_as_clientid) and the publisher would take the subscriber's place
        local = LocalServices(
            state, durable_broker=args.broker_save == "change", allow_anonymous=True
        )
        st = local.up()
        admin, mq = st.database_url, st.mqtt_url
        broker_pid = LocalServices._mosquitto_pid(Path(st.mqtt_dir))
    try:
        print(f"bench/ingest.py {' '.join(sys.argv[1:])}")
        print(f"started {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()}")
        for line in durability(admin, local):
            print("  " + line)
        print("  subscription: $share/bench/… (as production); QoS 1; acknowledged after commit")
        print("preparing …", flush=True)
        template = prepared_db(admin)
        writers = Settings(_env_file=None).ingest.writers  # type: ignore[call-arg]
        if not args.no_drain:
            run_drains(args, admin, template, mq, writers)
        cpu = CpuSplit(broker_pid, postmaster_of(admin))
        variants: list[dict[str, Any]] = [
            {"batch_min_ms": float(v)} for v in args.live_batch_min_ms.split(",") if v
        ] or [{}]
        procs = [int(n) for n in args.ingesters.split(",") if n] or [0]
        runs = [
            (float(rate), policy, kind, ingest, n)
            for rate in (args.live_rate.split(",") if args.live_seconds else [])
            for policy in args.live_policy.split(",")
            for kind in kinds
            for ingest in variants
            for n in procs
        ]
        for rate, policy, kind, ingest, n in runs:
            pubs = args.live_publishers or (1 if kind == "c" else max(1, math.ceil(rate / 2000)))
            common = (admin, template, mq, rate, args.live_seconds, policy == "adaptive")
            if n:
                lv = live_procs(*common, n, pubs, kind, cpu, **ingest)
            else:
                lv = live(*common, pubs, kind, cpu, **ingest)
            label = policy + "".join(f", {k} {v:g}" for k, v in ingest.items())
            if n:
                label += f", {n} ingester process{'es' if n > 1 else ''}"
            print(live_line(rate, label, args.live_seconds, pubs, kind, lv))
            print(
                "  " + verdict_line(rate, lv) + f"; load average {lv['load']:.1f}",
                flush=True,
            )
    finally:
        if local is not None:
            local.down()
            shutil.rmtree(local.state_dir, ignore_errors=True)


def live_line(
    rate: float, policy: str, seconds: float, pubs: int, kind: str, lv: dict[str, Any]
) -> str:
    cpu = lv["cpu"]
    split = "; CPU % of a core: " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items()) if cpu else ""
    return (
        f"live {rate:,.0f} msgs/s ({policy}, {seconds:.0f} s, {pubs} {kind} publisher(s);"
        f" reached {lv['rate']:,.0f}/s, publisher behind schedule at most"
        f" {lv['pub_lag_max_ms']:,.0f} ms): sent {lv['sent']:,.0f}, broker acked"
        f" {lv['acked_by_broker']:,.0f}, stored {lv['stored']:,.0f}, lost {lv['lost']:.0f};"
        f" publish-to-commit p50 {lv['p50_ms']:,.0f} ms, p99 {lv['p99_ms']:,.0f} ms,"
        f" max {lv['max_ms']:,.0f} ms; publish-to-arrival (broker and sockets) p50"
        f" {lv['to_p50_ms']:,.0f} ms, p99 {lv['to_p99_ms']:,.0f} ms;"
        f" arrival-to-commit p50 {lv['in_p50_ms']:,.0f} ms,"
        f" p99 {lv['in_p99_ms']:,.0f} ms; {lv['batches']:,.0f} batches, mean"
        f" {lv['batch_mean']:,.0f}, p99 {lv['batch_p99']:,.0f}, largest {lv['batch_max']:,.0f};"
        f" unacknowledged in the ingester at most {lv['held_max']:,.0f}"
        + (f"; ingester CPU {lv['cpu_us']:.1f} µs/msg" if lv.get("cpu_us") else "")
        + (f" (messages per process {lv['per_ingester']})" if lv.get("per_ingester") else "")
        + split
    )


#: issue #14's live targets: p99 publish-to-commit at or below, by rate asked
LIVE_P99_TARGET_MS = {5000.0: 250.0, 15000.0: 500.0}


def verdict_line(rate: float, lv: dict[str, Any]) -> str:
    """The run against issue #14's targets: zero loss always; the p99 target where the issue
    sets one, and only if the offered rate was reached (within 2 %)."""
    out = f"loss {verdict(lv['lost'] == 0)} (zero)"
    target = LIVE_P99_TARGET_MS.get(rate)
    if target is not None:
        reached = lv["rate"] >= 0.98 * rate
        ok = reached and lv["p99_ms"] <= target
        why = "" if reached else f", rate not reached ({lv['rate']:,.0f}/s)"
        out += f"; p99 {lv['p99_ms']:,.0f} ms vs <= {target:,.0f} ms: {verdict(ok)}{why}"
    return out


def run_drains(args: argparse.Namespace, admin: str, template: str, mq: str, writers: int) -> None:
    single = single_messages(args.messages)
    naive = single_messages(args.naive)
    batched = batched_messages(args.batched)
    rows = args.batched * 100
    cases = {
        "a": Case("(a) single-reading messages, ingester", args.messages, args.messages, []),
        "r": Case("(r) broker only: ack without storing", args.messages, args.messages, []),
        "n1": Case("(n1) competent naive: executemany, commit/500", args.naive, args.naive, []),
        "n0": Case("(n0) naive: INSERT + commit per message", args.naive, args.naive, []),
        "b": Case("(b) batched messages (100 readings), ingester", args.batched, rows, []),
        "c1": Case("(c1) raw binary COPY, 1 connection", rows, rows, []),
        "cN": Case(f"(c{writers}) raw binary COPY, {writers} connections", rows, rows, []),
    }
    runs: dict[str, Callable[[], float]] = {
        "a": lambda: drain(admin, template, mq, single, args.messages, Ingester)[0],
        "r": lambda: drain(admin, template, mq, single, args.messages, BrokerOnly, stores=False)[0],
        "n1": lambda: drain(admin, template, mq, naive, args.naive, BatchedNaive)[0],
        "n0": lambda: drain(admin, template, mq, naive, args.naive, PerMessageNaive)[0],
        "b": lambda: drain(admin, template, mq, batched, rows, Ingester)[0],
        "c1": lambda: copy_rows(admin, template, rows, 1),
        "cN": lambda: copy_rows(admin, template, rows, writers),
    }
    for k in range(args.repeat):  # round-robin: a change of load hits every case alike
        for key, run in runs.items():
            cases[key].seconds.append(run())
            print(
                f"  run {k + 1}/{args.repeat} {cases[key].name}: {cases[key].seconds[-1]:.2f} s"
                f" (load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    print()
    print(f"{'case':50} {'msgs':>7} {'readings':>8}   rate/s: {'min':>9} {'median':>9} {'max':>9}")
    for key, c in cases.items():
        per = "readings" if key in ("b", "c1", "cN") else "messages"
        print(f"{c.name:50} {c.messages:7d} {c.readings:8d} {per[:4]:>8}: {spread(c.rate(per))}")
    a, r, n1, n0 = (
        cases["a"].median(),
        cases["r"].median(),
        cases["n1"].median(),
        cases["n0"].median(),
    )
    b, c1, cn = (cases[k].median("readings") for k in ("b", "c1", "cN"))
    print()
    print(f"(a) / (r) broker only:        {a / r:.2f} (target >= 0.70: {verdict(a / r >= 0.70)})")
    ok = verdict(b / cn >= 0.9)
    print(f"(b) / (c{writers}) raw COPY, {writers} conn.: {b / cn:.2f} (target >= 0.90: {ok})")
    print(f"(b) / (c1) raw COPY, 1 conn.:  {b / c1:.2f}")
    print(f"(a) / (n1) competent naive:   {a / n1:.1f}x (target >= 5x: {verdict(a / n1 >= 5)})")
    print(f"(a) / (n0) per-message naive: {a / n0:.1f}x")
    print(f"load average after the drains: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
