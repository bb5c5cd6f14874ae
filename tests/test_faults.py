"""Fault tests with real processes: the ingester is a `quartier ingest` subprocess, PostgreSQL and
Mosquitto are this module's own (so stopping them does not disturb other tests). After each fault,
every valid reading sent is in the database exactly once and every invalid one in ingest_reject.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import pytest

from quartier.sensors_sim.fleet import Message
from quartier.sensors_sim.publisher import publish
from quartier.services import LocalServices, ServiceState, free_port
from quartier.store.migrate import migrate

pytestmark = pytest.mark.services
T0 = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def own_services() -> Iterator[tuple[LocalServices, ServiceState]]:
    state_dir = Path(tempfile.mkdtemp(prefix="quartier-faults-"))
    os.chmod(state_dir, 0o755)
    local = LocalServices(state_dir, fast_unsafe=False)
    try:
        state = local.up()
        migrate(state.database_url)
        yield local, state
    finally:
        local.down()
        shutil.rmtree(state_dir, ignore_errors=True)


class World:
    """One test's database, network name and ingester processes."""

    def __init__(self, local: LocalServices, state: ServiceState) -> None:
        self.local, self.state = local, state
        self.network = f"f{uuid.uuid4().hex[:8]}"
        self.group = f"g{uuid.uuid4().hex[:8]}"
        name = f"faults_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(state.database_url, autocommit=True) as conn:
            conn.execute(f"create database {name}")
        self.db = psycopg.conninfo.make_conninfo(state.database_url, dbname=name)
        migrate(self.db)
        with psycopg.connect(self.db, autocommit=True) as conn:
            conn.execute(
                "select quartier_ensure_observation_partitions(%s, %s)",
                (T0 - timedelta(days=31), T0 + timedelta(days=62)),
            )
        self.procs: list[subprocess.Popen[bytes]] = []

    def start_ingester(
        self, client_id: str = "w1", *args: str, **env_extra: str
    ) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "QUARTIER_DATABASE__URL": self.db,
            "QUARTIER_MQTT__URL": self.state.mqtt_url,
            "QUARTIER_INGEST__CLIENT_ID": f"{self.network}-{client_id}",
            "QUARTIER_INGEST__SHARE_GROUP": self.group,
            "QUARTIER_INGEST__BATCH_MS": "50",
            **env_extra,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "quartier.cli", "ingest", *args],
            env=env,
            cwd=tempfile.gettempdir(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> list[str]:
        logs = []
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            out, _ = p.communicate(timeout=30)
            logs.append(out.decode(errors="replace"))
        self.procs.clear()
        return logs

    def readings(self, n: int, start: int = 0, bad_every: int = 0) -> tuple[list[Message], int]:
        msgs, bad = [], 0
        for i in range(start, start + n):
            topic = f"quartier/v1/{self.network}/dev-{i % 20}/up"
            if bad_every and i % bad_every == 0:
                msgs.append(
                    Message(
                        topic,
                        b'{"value": oops %d' % i
                        if i % 2
                        else orjson.dumps(
                            {
                                "time": (T0 + timedelta(seconds=i)).isoformat(),
                                "quantity": "pm25",
                                "value": -1,
                            }
                        ),
                    )
                )
                bad += 1
                continue
            msgs.append(
                Message(
                    topic,
                    orjson.dumps(
                        {
                            "time": (T0 + timedelta(seconds=i)).isoformat(),
                            "quantity": "pm25",
                            "value": i % 997 / 10,
                        }
                    ),
                )
            )
        return msgs, bad

    def count(self, sql: str) -> int:
        with psycopg.connect(self.db) as conn:
            row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])

    def wait(self, cond: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if cond():
                    return
            except psycopg.OperationalError:
                pass
            time.sleep(0.1)
        raise AssertionError("timed out waiting for the database to catch up")

    def assert_exactly(self, good: int, bad: int) -> None:
        self.wait(
            lambda: (
                self.count("select count(*) from observation") >= good
                and self.count("select count(*) from ingest_reject") >= bad
            )
        )
        time.sleep(0.5)  # nothing more may arrive
        assert self.count("select count(*) from observation") == good
        assert self.count("select count(distinct phenomenon_time) from observation") == good
        assert self.count("select count(*) from ingest_reject") == bad


@pytest.fixture
def world(own_services: tuple[LocalServices, ServiceState]) -> Iterator[World]:
    w = World(*own_services)
    yield w
    w.stop_all()


def _publish_async(w: World, msgs: list[Message], rate: float | None) -> threading.Thread:
    t = threading.Thread(
        target=publish,
        args=(w.state.mqtt_url, msgs),
        kwargs={"rate": rate, "client_id": f"pub-{uuid.uuid4().hex[:6]}"},
        daemon=True,
    )
    t.start()
    return t


def test_kill_9_mid_stream_then_restart(world: World) -> None:
    msgs, bad = world.readings(20_000, bad_every=50)
    proc = world.start_ingester()
    time.sleep(1.5)
    pub = _publish_async(world, msgs, rate=8000)
    world.wait(lambda: world.count("select count(*) from observation") > 3000)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    world.start_ingester()
    pub.join(60)
    world.assert_exactly(len(msgs) - bad, bad)


def test_mosquitto_restart_keeps_queued_messages(world: World) -> None:
    proc = world.start_ingester()
    time.sleep(1.5)
    first, bad1 = world.readings(3000, bad_every=10)
    publish(world.state.mqtt_url, first, rate=None, client_id="pub-a")
    world.wait(lambda: world.count("select count(*) from observation") == len(first) - bad1)
    proc.send_signal(signal.SIGTERM)  # the ingester goes away; its session stays
    proc.wait(30)
    second, bad2 = world.readings(3000, start=3000, bad_every=10)
    publish(world.state.mqtt_url, second, rate=None, client_id="pub-b")  # queued for it
    world.local.stop_mosquitto()  # graceful: Mosquitto saves sessions and queues
    world.local.up()
    world.start_ingester()
    world.assert_exactly(6000 - bad1 - bad2, bad1 + bad2)


def _metric(port: int, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"metric {name} not found")


def test_postgres_down_for_10_seconds(world: World) -> None:
    port = free_port()
    world.start_ingester("w1", "--metrics-port", str(port), QUARTIER_INGEST__BUFFER_MAX="2000")
    time.sleep(1.5)
    msgs, bad = world.readings(30_000, bad_every=10)
    pub = _publish_async(world, msgs, rate=2000)  # 15 s of traffic
    time.sleep(3)
    world.local.stop_postgres()
    peak = 0.0
    for _ in range(20):  # 10 s down: the buffer fills up to its bound and no further
        time.sleep(0.5)
        peak = max(peak, _metric(port, "quartier_ingest_buffer_messages"))
    assert 0 < peak <= 2000
    assert _metric(port, "quartier_ingest_db_errors_total") > 0
    world.local.up()
    pub.join(60)
    world.assert_exactly(len(msgs) - bad, bad)
    (log,) = world.stop_all()
    assert "database unavailable" in log  # the outage was seen, retried, and nothing lost


def test_two_workers_share_the_load(world: World) -> None:
    world.start_ingester("w1")
    world.start_ingester("w2")
    time.sleep(2)
    msgs, bad = world.readings(20_000, bad_every=10)  # 10 % malformed
    publish(world.state.mqtt_url, msgs, rate=None, client_id="pub-c")
    world.assert_exactly(len(msgs) - bad, bad)
    logs = world.stop_all()
    received = []
    for log in logs:
        flat = " ".join(log.split())
        assert "IngestStats(received=" in flat, log[-2000:]
        received.append(int(flat.split("IngestStats(received=")[1].split(",")[0]))
    assert all(r > 0 for r in received), received  # both did work
    # each message went to one of them (a redelivery after a dropped connection may add a few;
    # the database check above is what proves nothing was stored twice)
    assert len(msgs) <= sum(received) <= len(msgs) * 1.05, received
