"""The ingester process: an MQTT 5 client on a persistent session that hands messages to a writer
thread, which stores them in batches and acknowledges each message only after its batch has
committed (paho manual acks). A crash at any point makes the broker redeliver; storage is
idempotent, so nothing is lost and nothing is stored twice.

Backpressure: the in-memory buffer is bounded (``ingest.buffer_max``). When PostgreSQL is slow or
down, the writer retries the same batch with backoff and acknowledges nothing; the buffer fills,
the MQTT thread blocks on it and the broker keeps the rest queued in the session.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from quartier.config import Settings
from quartier.ingest.model import Batch, Reject, WriteResult
from quartier.ingest.mqtt_client import Publish, mqtt_client
from quartier.ingest.pipeline import SUBSCRIPTIONS, Message, build_batch
from quartier.ingest.writer import BatchWriter
from quartier.pseudonym import pseudonymizer

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    speedtests: int = 0
    rejected: int = 0
    batches: int = 0
    db_errors: int = 0
    last_batch_ms: float = 0.0
    last_batch_size: int = 0
    #: seconds between a message's arrival and the commit of its batch, for the newest batch
    lag_s: float = 0.0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    batch_ms_total: float = 0.0
    batch_messages_total: int = 0
    started: float = field(default_factory=time.monotonic)


#: a decoded batch: its number (acknowledgements go out in this order), the messages with their
#: MQTT ids, and the batch
Work = tuple[int, list[tuple[Message, int, int]], list[Message], Batch]


class Ingester:
    def __init__(self, settings: Settings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.cfg = settings.ingest
        self.stop_event = stop or threading.Event()
        self.stats = IngestStats()
        self.connected = threading.Event()
        # A deque is thread-safe for append/popleft and much cheaper than queue.Queue on the
        # MQTT thread, which is the ingester's bottleneck; the event wakes the writer.
        self._buffer: deque[tuple[Message, int, int]] = deque()
        self._has_data = threading.Event()
        self._bytes_in = 0
        self._bytes_out = 0
        #: called with the messages of each batch right after it committed (benchmarks, tests)
        self.on_committed: Callable[[list[Message]], None] | None = None
        # decoded batches waiting for the database (stage 1 -> stage 2)
        n_writers = max(1, self.cfg.writers)
        self._pipe: queue.Queue[Work | None] = queue.Queue(maxsize=n_writers + 1)
        self._db_done = threading.Event()
        pseudonyms = pseudonymizer(settings)  # no secret outside development: refuse to start
        self._writers = [
            BatchWriter(
                settings.require_database_url(),
                auto_register=self.cfg.auto_register,
                reject_payload_max_bytes=self.cfg.reject_payload_max_bytes,
                pseudonyms=pseudonyms,
                personal_networks=settings.privacy.personal_networks,
            )
            for _ in range(n_writers)
        ]
        self._seq = 0  # next batch number (decoding thread only)
        #: batches cut and not yet committed (adaptive batching: all writers busy or not)
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        #: set by a writer when it has finished a batch (wakes the gathering decoder)
        self._writer_done = threading.Event()
        self._ack_lock = threading.Lock()
        self._next_ack = 0
        self._committed: dict[int, list[tuple[Message, int, int]]] = {}
        self._stats_lock = threading.Lock()
        #: the internal error that stopped the ingester, if one did
        self.failed: BaseException | None = None
        self._client, self._host, self._port = mqtt_client(
            settings.require_mqtt_url(), self.cfg.client_id, ca_file=settings.mqtt.ca_file
        )
        self._client.manual_ack_set(True)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.fast_on_messages = self._received_many
        self._client.reconnect_delay_set(1, 5)

    def buffered(self) -> int:
        """Messages received and not yet handed to the writer."""
        return len(self._buffer)

    def committed(self) -> int:
        """Readings committed so far (new rows plus duplicates), for tests and benchmarks."""
        return self.stats.stored + self.stats.duplicates

    # ------------------------------------------------------------------ MQTT callbacks
    def _topics(self) -> list[str]:
        group = self.cfg.share_group
        topics = self.cfg.topics or SUBSCRIPTIONS
        return [f"$share/{group}/{t}" if group else t for t in topics]

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason: object,
        properties: object,
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.error("MQTT connect refused: %s", reason)
            return
        client.subscribe([(t, 1) for t in self._topics()])
        log.info("connected to mqtt://%s:%s, subscribing", self._host, self._port)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[Any],
        properties: object,
    ) -> None:
        """The broker's SUBACK. Only now does the session match what devices publish: a
        message published before it matches no subscription, and the broker drops it (its PUBACK
        says "No matching subscribers"). So ``connected`` (the health metric) is set here, and
        only if every topic was granted."""
        topics = self._topics()
        refused = [f"{t} ({r})" for t, r in zip(topics, reasons, strict=False) if r.is_failure]
        if refused:
            log.error(
                "the MQTT broker refused the subscription to %s: nothing published there reaches "
                "this ingester (check the ingest account's access rules)",
                ", ".join(refused),
            )
            return
        log.info("subscribed to %s", ", ".join(topics))
        self.connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason: object,
        properties: object,
    ) -> None:
        self.connected.clear()
        if not self.stop_event.is_set():
            log.warning("MQTT disconnected (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._received(msg.topic, bytes(msg.payload), msg.mid, msg.qos)

    def _received(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        if self._wait_for_room():
            self._bytes_in += len(payload)  # written only by this (the MQTT) thread
            self._buffer.append((Message(topic, payload, datetime.now(UTC)), mid, qos))
            if not self._has_data.is_set():
                self._has_data.set()

    def _received_many(self, publishes: list[Publish]) -> None:
        """The lean QoS 1 PUBLISHes of one socket read (``FastClient.fast_on_messages``), with
        one arrival time: they arrived together."""
        if self._wait_for_room():
            now = datetime.now(UTC)
            self._bytes_in += sum([len(p) for _, p, _ in publishes])
            self._buffer.extend([(Message(t, p, now), mid, 1) for t, p, mid in publishes])
            if not self._has_data.is_set():
                self._has_data.set()

    def _wait_for_room(self) -> bool:
        """Block while the buffer is full: backpressure onto the broker session (what one socket
        read brings may take it past its bounds once). False when stopping: the messages are not
        acknowledged, the broker keeps them for the next run."""
        while (
            len(self._buffer) >= self.cfg.buffer_max
            or self._bytes_in - self._bytes_out >= self.cfg.buffer_max_bytes
        ) and not self.stop_event.is_set():
            time.sleep(0.005)
        return not self.stop_event.is_set()

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        """Connect, ingest until the stop event is set, then flush and disconnect."""
        if self.cfg.switch_interval_ms is not None:
            sys.setswitchinterval(self.cfg.switch_interval_ms / 1000)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.cfg.session_expiry_seconds
        props.ReceiveMaximum = 65535
        self._client.connect_async(
            self._host,
            self._port,
            self.settings.mqtt.keepalive,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()
        try:
            self._write_loop()
        finally:
            self._client.disconnect()
            self._client.loop_stop()
            for w in self._writers:
                w.close()
            log.info("ingester stopped: %s", self.stats)

    def _collect(self) -> list[tuple[Message, int, int]]:
        """Take the next batch: at most ``batch_max`` messages or ``batch_max_bytes`` of payload.

        How long it gathers adapts to the load (``batch_adaptive``): once its oldest message has
        waited ``batch_min_ms``, the batch is cut as soon as a writer is free to take it, so a
        light trickle is committed at once, message by message. While every writer is busy, a
        batch cut now would only wait in line: the messages arriving meanwhile gather into it,
        and the batch grows with the traffic. Either way the oldest message waits at most
        ``batch_ms`` (then the batch is cut even if it must queue), and a backlog that fills
        ``batch_max`` is taken at once. Without ``batch_adaptive`` every batch waits for
        ``batch_ms`` or ``batch_max``.
        """
        buf = self._buffer
        if not buf:
            # The event can be set while the buffer is empty (a message arrived after the last
            # clear and was taken with the batch before it): the buffer itself decides.
            self._has_data.wait(0.2)
            if not buf:
                self._has_data.clear()
                return []  # a message appended just now is seen by the next call
        cfg = self.cfg
        waited = (datetime.now(UTC) - buf[0][0].received_at).total_seconds()
        now = time.monotonic()
        deadline = now + max(0.0, cfg.batch_ms / 1000 - waited)
        earliest = now + max(0.0, cfg.batch_min_ms / 1000 - waited)
        n_writers = len(self._writers)
        while len(buf) < cfg.batch_max and not self.stop_event.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            if cfg.batch_adaptive and self._in_flight < n_writers:
                if now >= earliest:
                    break  # a writer is free: this batch goes to it at once
                time.sleep(earliest - now)
                continue
            if cfg.batch_adaptive:
                # every writer busy: gather until one is done (or the batch is full / too old)
                self._writer_done.clear()
                if self._in_flight >= n_writers:
                    self._writer_done.wait(min(0.005, deadline - now))
            else:
                time.sleep(0.002)
        self._has_data.clear()
        items: list[tuple[Message, int, int]] = []
        size = 0
        while buf and len(items) < cfg.batch_max and size < cfg.batch_max_bytes:
            item = buf.popleft()
            size += len(item[0].payload)
            items.append(item)
        self._bytes_out += size  # written only by the decoding thread
        if buf:
            self._has_data.set()
        if items:
            with self._in_flight_lock:
                self._in_flight += 1
        return items

    def _decode_loop(self) -> None:
        """Stage 1 (own thread): collect and decode batches while stage 2 writes the previous
        one, so that Python decoding overlaps with PostgreSQL's work."""
        try:
            self._decode_batches()
        except Exception as exc:
            self._fail(exc, "decoder")
        finally:
            if not self._db_done.is_set():
                self._pipe.put(None)  # the writers are still consuming: tell them we are done

    def _fail(self, exc: BaseException, where: str) -> None:
        """An unexpected error in any of the ingester's threads stops the ingester (``failed``
        says why; ``quartier ingest`` exits non-zero so that its supervisor restarts it). Nothing
        that was not committed has been acknowledged, so the broker redelivers it."""
        log.critical(
            "ingester stopped by an internal error in the %s: %s: %s",
            where,
            type(exc).__name__,
            _first_line(exc),
            exc_info=exc,
        )
        with self._stats_lock:
            if self.failed is None:
                self.failed = exc
        self.stop_event.set()  # the writers take no more work (see _writer_loop)

    def _decode_batches(self) -> None:
        while not self._db_done.is_set():
            items = self._collect()
            if not items:
                if self.stop_event.is_set() and not self._buffer:
                    return
                continue
            self.stats.received += len(items)
            msgs = [msg for msg, _, _ in items]
            work = (self._seq, items, msgs, self._batch(msgs))
            self._seq += 1
            while not self._db_done.is_set():
                try:
                    self._pipe.put(work, timeout=0.2)
                    break
                except queue.Full:
                    continue

    def _write_loop(self) -> None:
        """Stage 2: ``ingest.writers`` threads, each with its own connection, store decoded
        batches in parallel (one commits while the next is copied); acknowledgements go out in
        the order the batches were received, each after its batch (and all before it) committed.
        """
        decoder = threading.Thread(target=self._decode_loop, name="ingest-decode", daemon=True)
        decoder.start()
        others = [
            threading.Thread(target=self._writer_thread, args=(w, i), name=f"ingest-write-{i}")
            for i, w in enumerate(self._writers[1:], 1)
        ]
        for t in others:
            t.start()
        try:
            self._writer_thread(self._writers[0], 0)
        finally:
            self._db_done.set()
            for t in others:
                t.join(30)
            decoder.join(10)

    def _writer_thread(self, writer: BatchWriter, number: int) -> None:
        try:
            self._writer_loop(writer)
        except Exception as exc:
            self._fail(exc, f"writer {number}")

    def _writer_loop(self, writer: BatchWriter) -> None:
        while self.failed is None:  # after a failure elsewhere, take no more work
            try:
                work = self._pipe.get(timeout=0.2)
            except queue.Empty:
                if self._db_done.is_set():
                    return
                continue
            if work is None:
                self._pipe.put(None)  # the end, for the other writers too
                return
            seq, items, msgs, batch = work
            if not self._store(writer, msgs, batch):
                self._db_done.set()
                return  # stopped while the database was down: unacked, the broker keeps them
            self._acknowledge(seq, items)
            with self._in_flight_lock:
                self._in_flight -= 1
            self._writer_done.set()

    def _acknowledge(self, seq: int, items: list[tuple[Message, int, int]]) -> None:
        """Acknowledge batch ``seq`` once every batch before it has committed too (MQTT wants
        PUBACKs in the order the messages came)."""
        with self._ack_lock:
            self._committed[seq] = items
            while self._next_ack in self._committed:
                done = self._committed.pop(self._next_ack)
                self._next_ack += 1
                if self.on_committed is not None:
                    self.on_committed([msg for msg, _, _ in done])
                self._client.ack_many([mid for _, mid, qos in done if qos == 1])
                for _, mid, qos in done:
                    if qos == 2:
                        self._client.ack(mid, qos)

    def _batch(self, msgs: list[Message]) -> Batch:
        return build_batch(msgs, self.cfg, datetime.now(UTC))

    def _store(self, writer: BatchWriter, msgs: list[Message], batch: Batch | None = None) -> bool:
        """Store the messages; True once they are committed (data or rejects), False if stopped
        before the database took them.

        Only an error that belongs to the data (``DataError``, ``IntegrityError``) is the
        messages' fault: the batch is split until the message at fault is found, and that one is
        kept as a ``store_error`` reject. Any other error is the database's (down, read-only,
        permission denied, a cancelled transaction …): the same batch is retried with backoff and
        nothing is acknowledged meanwhile."""
        delay = 0.2
        refusal = False  # the batch in hand is the store_error reject of msgs[0]
        while True:
            t0 = time.perf_counter()
            try:
                res = writer.write(batch if batch is not None else self._batch(msgs))
            except _DATA_ERRORS as exc:
                if refusal:
                    raise  # even the reject cannot be stored: stop, acknowledge nothing
                if len(msgs) > 1:
                    half = len(msgs) // 2
                    return self._store(writer, msgs[:half]) and self._store(writer, msgs[half:])
                msg = msgs[0]
                log.warning("message on %s cannot be stored: %s", msg.topic, _first_line(exc))
                reject = Reject(
                    msg.topic, msg.payload, "store_error", _first_line(exc), msg.received_at
                )
                batch, refusal = Batch(rejects=[reject]), True
                continue
            except psycopg.Error as exc:
                self.stats.db_errors += 1
                if isinstance(exc, _GAVE_UP):
                    what = "database gave up the transaction"  # deadlock victim, lock timeout …
                elif isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                    what = "database unavailable"
                else:
                    what = "database refused the write"  # read-only, no privilege, internal …
                log.warning(
                    "%s (%s: %s); nothing acknowledged, retrying in %.1f s",
                    what,
                    type(exc).__name__,
                    _first_line(exc),
                    delay,
                )
                writer.close()
                if self.stop_event.wait(delay):
                    return False
                delay = min(delay * 2, 10.0)
                continue
            with self._stats_lock:
                self._count(res, msgs, t0)
            return True

    def _count(self, res: WriteResult, msgs: list[Message], t0: float) -> None:
        st = self.stats
        st.batches += 1
        st.stored += res.observations
        st.duplicates += res.duplicates
        st.speedtests += res.speedtests
        st.rejected += res.rejects
        for reason, n in res.reasons.items():
            st.rejected_by_reason[reason] = st.rejected_by_reason.get(reason, 0) + n
        st.last_batch_ms = (time.perf_counter() - t0) * 1000
        st.last_batch_size = len(msgs)
        st.batch_ms_total += st.last_batch_ms
        st.batch_messages_total += len(msgs)
        st.lag_s = (datetime.now(UTC) - msgs[0].received_at).total_seconds()


#: errors that belong to the data written, not to the database: only these make messages rejects.
#: A program limit (class 54: e.g. a value too large for an index entry) is one message's too;
#: retried, it would fail forever and stall every message behind it.
_DATA_ERRORS = (
    psycopg.errors.DataError,
    psycopg.errors.IntegrityError,
    psycopg.errors.ProgramLimitExceeded,
)

_GAVE_UP = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.TransactionRollback,
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
