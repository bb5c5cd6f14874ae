"""Adaptive batching (``ingest.batch_adaptive``): a light trickle is committed at once, message by
message; while the writers are busy, messages gather into large batches. First the decision
itself (the ingester's gathering stage, no servers), then the whole ingester against the real
broker and database."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest

from quartier.config import Settings
from quartier.ingest.mqtt import Ingester
from quartier.ingest.mqtt_client import mqtt_client
from quartier.ingest.pipeline import Message


def offline_ingester(**ingest: object) -> Ingester:
    """An ingester whose connections are never opened (its gathering stage only)."""
    return Ingester(
        Settings(
            _env_file=None,
            database={"url": "postgresql://nobody@127.0.0.1:1/none"},
            mqtt={"url": "mqtt://127.0.0.1:1"},  # type: ignore[call-arg]
            ingest=ingest,
        )
    )


def msg(i: int) -> tuple[Message, int, int]:
    return Message(f"quartier/v1/n/d{i}/up", b"{}", datetime.now(UTC)), i, 1


def timed_collect(ing: Ingester) -> tuple[list[int], float]:
    t = time.monotonic()
    items = ing._collect()
    return [mid for _, mid, _ in items], time.monotonic() - t


def test_a_free_writer_takes_a_message_at_once() -> None:
    ing = offline_ingester(batch_ms=2000, batch_min_ms=0)
    ing._buffer.append(msg(1))
    mids, took = timed_collect(ing)
    assert mids == [1]
    assert took < 0.5  # not the 2 s the fixed policy waits
    assert ing._in_flight == 1  # the batch is on its way to a writer


def test_while_every_writer_is_busy_messages_gather_until_one_is_free() -> None:
    ing = offline_ingester(batch_ms=5000, batch_min_ms=0, writers=2)
    ing._in_flight = 2  # both writers busy
    ing._buffer.append(msg(0))

    def traffic() -> None:
        for i in range(1, 50):
            ing._buffer.append(msg(i))
            time.sleep(0.004)
        with ing._in_flight_lock:  # a writer is done
            ing._in_flight -= 1
        ing._writer_done.set()

    feeder = threading.Thread(target=traffic)
    feeder.start()
    mids, took = timed_collect(ing)
    feeder.join()
    assert mids == list(range(50))  # everything that arrived while the writers were busy
    assert 0.15 < took < 2.5  # cut when the writer was free, not after batch_ms


def test_the_oldest_message_waits_at_most_batch_ms_even_with_busy_writers() -> None:
    ing = offline_ingester(batch_ms=300, batch_min_ms=0, writers=2)
    ing._in_flight = 2
    ing._buffer.append(msg(1))
    mids, took = timed_collect(ing)
    assert mids == [1]
    assert 0.25 < took < 2.0


def test_a_full_batch_is_taken_without_waiting_for_a_writer() -> None:
    ing = offline_ingester(batch_ms=5000, batch_max=100, writers=2)
    ing._in_flight = 2
    ing._buffer.extend(msg(i) for i in range(250))
    mids, took = timed_collect(ing)
    assert mids == list(range(100))
    assert took < 1.0


def test_without_adaptive_batching_a_batch_waits_for_batch_ms() -> None:
    ing = offline_ingester(batch_ms=400, batch_min_ms=0, batch_adaptive=False)
    ing._buffer.append(msg(1))
    mids, took = timed_collect(ing)
    assert mids == [1]
    assert took > 0.35


# ---------------------------------------------------------------- with the broker and database


@pytest.fixture
def adaptive(settings: Settings) -> Iterator[tuple[Ingester, list[tuple[float, list[Message]]]]]:
    """A running ingester whose gathering limit (1 s) is far above what adaptive batching needs;
    yields it with the list of its commits (time, messages), in order."""
    s = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"batch_ms": 1000})}
    )
    ing = Ingester(s)
    commits: list[tuple[float, list[Message]]] = []
    ing.on_committed = lambda msgs: commits.append((time.time(), msgs))
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    assert ing.connected.wait(10)
    yield ing, commits
    ing.stop_event.set()
    thread.join(15)
    assert not thread.is_alive()
    assert ing.failed is None


def reading(network: str, i: int) -> tuple[str, bytes]:
    return (
        f"quartier/v1/{network}/dev-{i % 50}/up",
        orjson.dumps(
            {"time": datetime.now(UTC).isoformat(), "quantity": "pm25", "value": (i % 500) / 10}
        ),
    )


def wait_committed(ing: Ingester, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while ing.committed() < n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ing.committed() == n, (ing.stats, ing.failed, ing.buffered(), ing._in_flight)


@pytest.mark.services
def test_a_light_trickle_is_committed_message_by_message_at_once(
    adaptive: tuple[Ingester, list[tuple[float, list[Message]]]], settings: Settings, network: str
) -> None:
    ing, commits = adaptive
    client, host, port = mqtt_client(settings.require_mqtt_url(), f"{network}-pub")
    client.connect(host, port)
    client.loop_start()
    try:
        # the first messages register their devices; the trickle is timed once they are known
        for i in range(50):
            client.publish(*reading(network, i), qos=1).wait_for_publish(10)
        wait_committed(ing, 50)
        commits.clear()
        published: dict[bytes, float] = {}
        for i in range(50, 80):  # 30 messages, one every 50 ms (20 msgs/s)
            topic, payload = reading(network, i)
            published[payload] = time.time()
            client.publish(topic, payload, qos=1)
            time.sleep(0.05)
        wait_committed(ing, 80)
    finally:
        client.disconnect()
        client.loop_stop()
    latency = [t - published[m.payload] for t, msgs in commits for m in msgs]
    assert len(latency) == 30
    # the fixed policy would hold every batch until its oldest message had waited 1 s
    assert statistics.median(latency) < 0.3, latency
    assert max(latency) < 0.9, latency
    sizes = [len(msgs) for _, msgs in commits]
    assert statistics.median(sizes) <= 2, sizes


@pytest.mark.services
def test_a_heavy_burst_is_written_in_large_batches(
    adaptive: tuple[Ingester, list[tuple[float, list[Message]]]], settings: Settings, network: str
) -> None:
    ing, commits = adaptive
    n = 20_000
    msgs = [reading(network, i) for i in range(n)]
    client, host, port = mqtt_client(settings.require_mqtt_url(), f"{network}-pub")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    try:
        infos = [client.publish(t, p, qos=1) for t, p in msgs]
        for info in infos:
            info.wait_for_publish(60)
        wait_committed(ing, n, timeout=120)
    finally:
        client.disconnect()
        client.loop_stop()
    sizes = [len(m) for _, m in commits]
    assert sum(sizes) == n  # each message committed (and acknowledged) once
    # far fewer batches than messages: while the writers were busy the batches grew
    assert max(sizes) >= 500, sizes
    assert len(sizes) <= n / 20, len(sizes)
