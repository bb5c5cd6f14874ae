"""Publish simulated messages to an MQTT broker the way devices do: MQTT 5, QoS 1.

``Publisher`` keeps one connection open (the simulator's loop uses it across ticks); ``publish``
is the one-shot form. Both wait for the broker's PUBACK of every message before they report it as
sent, so a returned count means the broker has taken responsibility for those messages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from quartier.config import parse_mqtt_url
from quartier.errors import ServiceError
from quartier.ingest.mqtt_client import tls_context
from quartier.sensors_sim.fleet import Message

logger = logging.getLogger(__name__)


def _drop_loop_noise(record: logging.LogRecord) -> bool:
    """paho 2.2's network thread may run once more after a clean ``disconnect()`` and log
    "Client is not connected" as an error; a real connection loss is reported by
    ``on_disconnect`` instead."""
    return not str(record.msg).startswith("Client is not connected")


logger.addFilter(_drop_loop_noise)

MAX_INFLIGHT = 1000
#: Messages handed to paho but not yet acknowledged before ``send`` waits (bounds memory).
WINDOW = 2 * MAX_INFLIGHT
QOS = 1
#: the PUBACK reason code of a message that matched no subscription (MQTT 5, 3.4.2.1)
NO_MATCHING_SUBSCRIBERS = 0x10


class Publisher:
    """One MQTT 5 connection publishing with QoS 1; use as a context manager.

    ``send`` returns once every message it was given is acknowledged by the broker. Paho
    reconnects by itself and resends unacknowledged messages; if no acknowledgement arrives for
    ``ack_timeout_s`` seconds, ``send`` raises ``ServiceError``.
    """

    def __init__(
        self,
        mqtt_url: str,
        *,
        client_id: str,
        keepalive: int = 30,
        connect_timeout_s: float = 10.0,
        ack_timeout_s: float = 60.0,
        ca_file: Path | str | None = None,
    ) -> None:
        self._host, self._port, user, password, tls = parse_mqtt_url(mqtt_url)
        self._keepalive = keepalive
        self._connect_timeout_s = connect_timeout_s
        self._ack_timeout_s = ack_timeout_s
        self._cond = threading.Condition()
        self._connected = False
        self._connect_error: str | None = None
        self._acked = 0
        self._failed = 0
        #: acknowledged with "No matching subscribers" (MQTT 5 reason 0x10): the broker had no
        #: subscription for the topic and dropped the message (e.g. no ingester session yet)
        self._unrouted = 0
        self._handed = 0  # messages given to paho
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.enable_logger(logging.getLogger(__name__))
        if user is not None:
            self._client.username_pw_set(user, password)
        if tls:  # verifies the broker's certificate against ca_file (or the system's CAs)
            self._client.tls_set_context(tls_context(ca_file))
        self._client.max_inflight_messages_set(MAX_INFLIGHT)
        self._client.max_queued_messages_set(0)  # unbounded; ``send`` keeps a window instead
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    # paho callbacks run in paho's network thread

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        with self._cond:
            if reason.is_failure:
                self._connect_error = str(reason)
            else:
                self._connected = True
                logger.debug("connected to %s:%s", self._host, self._port)
            self._cond.notify_all()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        with self._cond:
            self._connected = False
            self._cond.notify_all()
        if reason.is_failure:
            logger.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        with self._cond:
            self._acked += 1
            if reason.value == NO_MATCHING_SUBSCRIBERS:
                self._unrouted += 1
            if reason.is_failure:
                self._failed += 1
                logger.warning("broker refused message %s: %s", mid, reason)
            self._cond.notify_all()

    # lifecycle

    def __enter__(self) -> Publisher:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        try:
            self._client.connect(self._host, self._port, keepalive=self._keepalive)
        except OSError as exc:
            raise ServiceError(
                f"cannot connect to the MQTT broker at {self._host}:{self._port}: {exc}"
            ) from None
        self._client.loop_start()
        with self._cond:
            done = self._cond.wait_for(
                lambda: self._connected or self._connect_error is not None,
                timeout=self._connect_timeout_s,
            )
            error = self._connect_error
        if error is not None or not done:
            self.close()
            raise ServiceError(
                f"the MQTT broker at {self._host}:{self._port} refused the connection: "
                f"{error or 'no CONNACK in time'}"
            )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    # publishing

    @property
    def acknowledged(self) -> int:
        """Messages the broker acknowledged without an error, since the connection opened."""
        with self._cond:
            return self._acked - self._failed

    @property
    def unrouted(self) -> int:
        """Messages the broker acknowledged as matching no subscription (and so dropped)."""
        with self._cond:
            return self._unrouted

    def send(
        self,
        messages: Iterable[Message],
        *,
        rate: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Publish ``messages`` (at ``rate`` messages/s if given) and wait for all PUBACKs.
        ``progress`` is called with the number published so far in this call. Returns the
        number of messages the broker acknowledged without an error."""
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        with self._cond:
            start_handed, start_ok = self._handed, self._acked - self._failed
            start_unrouted = self._unrouted
        started = time.monotonic()
        for sent, message in enumerate(messages, 1):
            if rate is not None:
                delay = started + (sent - 1) / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self._wait_acked(lambda: self._handed - self._acked < WINDOW)
            info = self._client.publish(message.topic, message.payload, qos=QOS)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                # NO_CONN: paho keeps the message and sends it after reconnecting
                raise ServiceError(
                    f"cannot publish to {message.topic}: {mqtt.error_string(info.rc)}"
                )
            with self._cond:
                self._handed += 1
            if progress is not None:
                progress(sent)
        self._wait_acked(lambda: self._acked >= self._handed)
        with self._cond:
            ok = self._acked - self._failed - start_ok
            handed = self._handed - start_handed
            unrouted = self._unrouted - start_unrouted
        if ok < handed:
            logger.warning("the broker refused %d of %d messages", handed - ok, handed)
        if unrouted:
            logger.warning(
                "%d of %d messages matched no subscription, and the broker dropped them: is the "
                "ingester's session subscribed yet? (`quartier ingest` must have connected once)",
                unrouted,
                handed,
            )
        return ok

    def _wait_acked(self, ready: Callable[[], bool]) -> None:
        """Wait until ``ready()``, failing only when no PUBACK arrives for ``ack_timeout_s``."""
        with self._cond:
            while not ready():
                before = self._acked

                def ready_or_progress(before: int = before) -> bool:
                    return ready() or self._acked != before

                self._cond.wait_for(ready_or_progress, timeout=self._ack_timeout_s)
                if not ready() and self._acked == before:
                    raise ServiceError(
                        f"no acknowledgement from the MQTT broker at {self._host}:{self._port} "
                        f"for {self._ack_timeout_s:.0f} s ({self._handed - self._acked} pending)"
                    )


def publish(
    mqtt_url: str,
    messages: Iterable[Message],
    *,
    rate: float | None,
    client_id: str,
    progress: Callable[[int], None] | None = None,
    ca_file: Path | str | None = None,
) -> int:
    """Connect, publish ``messages`` with QoS 1 (at ``rate`` messages/s if given), wait until the
    broker acknowledged every one, disconnect. Returns the number acknowledged without error
    (a message the broker refuses, e.g. a topic the account may not publish to, is not)."""
    with Publisher(mqtt_url, client_id=client_id, ca_file=ca_file) as publisher:
        return publisher.send(messages, rate=rate, progress=progress)
