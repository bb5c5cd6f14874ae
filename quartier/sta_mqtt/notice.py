"""Commit notices: how every process that stores data tells ``quartier sta-mqtt`` what it
stored, at little cost to itself.

With ``sta.mqtt_publish`` on, :func:`install` sets ``BatchWriter.after_commit`` (every write
path goes through a ``BatchWriter``: MQTT ingest, the HTTP push, SensorThings REST writes,
``CreateObservations``, ``$batch``, archive imports, reject replays, creates over MQTT). The hook
only puts the batch on a bounded queue; a thread of the same process turns it into compact
notices (which readings of which device, which Observations by Datastream id; zlib'd JSON, at
most :data:`MAX_NOTICE` characters each) and sends them with ``pg_notify`` on its own
connection. PostgreSQL hands them to the listening ``quartier sta-mqtt``, which reads what was
stored and publishes it. The data is never copied twice: the notice names readings, the
publisher reads the stored rows (so a subscriber gets exactly what the REST API returns).

Delivery is best effort, like any live feed: a full queue (the publisher side slower than
ingest for a long time), a notice sent while ``quartier sta-mqtt`` is not listening, or a crash
between commit and notice loses the publication, never data.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import psycopg

if TYPE_CHECKING:
    from quartier.config import Settings
    from quartier.ingest.model import Batch, WriteResult
    from quartier.ingest.writer import BatchWriter

log = logging.getLogger(__name__)

#: The PostgreSQL channel of the notices.
CHANNEL = "quartier_sta"
#: A notice's payload at most (PostgreSQL's limit is 8,000 bytes).
MAX_NOTICE = 7800
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass
class Notice:
    """What one committed batch stored, by the names the writer got them under."""

    #: the batch's source: mqtt, http, import
    source: str = "mqtt"
    #: (network, device, quantity) → phenomenon times (µs since 1970) of readings
    readings: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    #: (datastream id, phenomenon time in µs) of observations addressed by id
    observations: list[tuple[int, int]] = field(default_factory=list)
    #: the batch may have created or changed entities (a SensorThings write, a registration)
    entities: bool = False


def from_batch(batch: Batch, result: WriteResult) -> Notice:
    """The notice of a committed batch (readings named by device; what the writer refused or
    found stored already is left for the publisher to find out from the store)."""
    n = Notice(source=batch.source)
    readings = n.readings
    cols = batch.columns
    if cols.messages:
        times = cols.time_us
        for m in cols.messages:
            span = times[m.start : m.start + m.n].tolist()
            if type(m.quantity) is str:
                readings.setdefault((m.network, m.device, m.quantity), []).extend(span)
            else:
                for q, t in zip(m.quantity, span, strict=True):
                    readings.setdefault((m.network, m.device, q), []).append(t)
    for uplink, _topic, _payload, _received in batch.uplinks:
        for r in uplink.readings:
            key = (uplink.network, uplink.device, r.quantity)
            readings.setdefault(key, []).append((r.time - _EPOCH) // _US)
    skip = set(result.not_stored)
    n.observations = [
        (o.datastream_id, (o.time - _EPOCH) // _US)
        for i, o in enumerate(batch.observations)
        if i not in skip
    ]
    # a batch without readings is a SensorThings entity write (or a registration's): look
    n.entities = batch.source != "mqtt" or (not readings and not n.observations)
    return n


def encode(n: Notice) -> list[str]:
    """The notice as payloads of at most :data:`MAX_NOTICE` characters (split when larger)."""
    doc: dict[str, Any] = {
        "s": n.source,
        "e": n.entities,
        "r": [[net, dev, q, ts] for (net, dev, q), ts in n.readings.items()],
        "o": n.observations,
    }
    text = base64.b64encode(zlib.compress(msgspec.json.encode(doc), 1)).decode()
    if len(text) <= MAX_NOTICE:
        return [text]
    return [p for part in _halves(n) for p in encode(part)]


def _halves(n: Notice) -> Iterator[Notice]:
    items = list(n.readings.items())
    if len(items) > 1 or (not items and len(n.observations) > 1):
        half = len(items) // 2
        k = len(n.observations) // 2
        yield Notice(n.source, dict(items[:half]), n.observations[:k], n.entities)
        yield Notice(n.source, dict(items[half:]), n.observations[k:], False)
        return
    if items and n.observations:
        yield Notice(n.source, dict(items), [], n.entities)
        yield Notice(n.source, {}, n.observations, False)
        return
    # one device's quantity with many times
    ((key, times),) = items
    half = len(times) // 2
    yield Notice(n.source, {key: times[:half]}, [], n.entities)
    yield Notice(n.source, {key: times[half:]}, [], False)


def decode(text: str) -> Notice:
    doc = msgspec.json.decode(zlib.decompress(base64.b64decode(text)))
    return Notice(
        source=str(doc["s"]),
        readings={(str(r[0]), str(r[1]), str(r[2])): [int(t) for t in r[3]] for r in doc["r"]},
        observations=[(int(d), int(t)) for d, t in doc["o"]],
        entities=bool(doc["e"]),
    )


class Notifier:
    """The ``after_commit`` hook: hands each committed batch to a thread that sends its notices
    on a connection of its own (the writer's login). Never blocks the writer: when
    ``queue_max`` batches wait, further ones are dropped (and counted)."""

    def __init__(self, queue_max: int = 1000) -> None:
        self._queue: queue.Queue[tuple[str, Batch, WriteResult] | None] = queue.Queue(queue_max)
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self._conns: dict[str, psycopg.Connection[Any]] = {}
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self._warned = 0.0

    def __call__(self, writer: BatchWriter, batch: Batch, result: WriteResult) -> None:
        if (
            result.observations == 0
            and batch.source == "mqtt"
            and not batch.observations
            and (batch.uplinks or batch.columns.messages or batch.rejects or batch.speedtests)
        ):
            return  # duplicates, rejects, speed tests: nothing to publish
        if self._thread is None:
            with self._start:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="sta-mqtt-notify", daemon=True
                    )
                    self._thread.start()
        try:
            self._queue.put_nowait((writer.url, batch, result))
        except queue.Full:
            self.dropped += 1
            now = time.monotonic()
            if now - self._warned > 60:
                self._warned = now
                log.warning(
                    "SensorThings MQTT: %d committed batches not announced (the notice queue is"
                    " full)",
                    self.dropped,
                )

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            url, batch, result = item
            try:
                payloads = encode(from_batch(batch, result))
                conn = self._conn(url)
                for p in payloads:
                    conn.execute("select pg_notify(%s, %s)", (CHANNEL, p))
                self.sent += len(payloads)
            except psycopg.Error as exc:
                self.failed += 1
                log.warning("SensorThings MQTT: a commit notice was lost (%s)", exc)
                bad = self._conns.pop(url, None)
                if bad is not None:
                    bad.close()
            except Exception:  # a bug here must not stop the notices of later batches
                self.failed += 1
                log.exception("SensorThings MQTT: a commit notice could not be made")
            finally:
                self._queue.task_done()

    def _conn(self, url: str) -> psycopg.Connection[Any]:
        conn = self._conns.get(url)
        if conn is None or conn.closed:
            conn = psycopg.connect(url, autocommit=True, application_name="quartier-sta-notify")
            self._conns[url] = conn
        return conn

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued batch has been announced (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


def install(notifier: Notifier | None = None) -> Notifier:
    """Make every BatchWriter of this process announce its commits; the notifier."""
    from quartier.ingest.writer import BatchWriter

    n = notifier or Notifier()
    BatchWriter.after_commit = n
    return n


def uninstall() -> None:
    from quartier.ingest.writer import BatchWriter

    hook = BatchWriter.after_commit
    BatchWriter.after_commit = None
    if isinstance(hook, Notifier):
        hook.close()


def install_if_enabled(settings: Settings | None = None) -> Notifier | None:
    """:func:`install` when ``sta.mqtt_publish`` is on (the CLI calls it for every command;
    settings that cannot be read are the command's to report)."""
    if settings is None:
        from quartier.config import Settings

        try:
            settings = Settings()
        except Exception:
            return None
    return install() if settings.sta.mqtt_publish else None
