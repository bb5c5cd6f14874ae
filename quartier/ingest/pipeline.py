"""Pure dispatch from (topic, payload) to a decoded item or a reject, and batch assembly."""

from __future__ import annotations

import logging
import re
from datetime import datetime

import msgspec

from quartier.config import IngestSettings
from quartier.errors import DecodeError
from quartier.ingest.model import Batch, Reject, SpeedTest, Uplink
from quartier.ingest.native import decode_native, decode_speedtest
from quartier.ingest.senml import decode_senml
from quartier.ingest.ttn import decode_ttn, parse_ttn_topic
from quartier.ingest.validate import EARLIEST, validate

log = logging.getLogger(__name__)

#: network and device: 1-64 of A-Z a-z 0-9 _ . - and not only dots (no "." or ".." keys)
TOPIC = re.compile(
    r"^quartier/v1/((?!\.+/)[A-Za-z0-9_.\-]{1,64})/((?!\.+/)[A-Za-z0-9_.\-]{1,64})"
    r"/(up|senml|speedtest)$"
)
#: Subscriptions of the ingester (documented in docs/mqtt.md).
SUBSCRIPTIONS = (
    "quartier/v1/+/+/up",
    "quartier/v1/+/+/senml",
    "quartier/v1/+/+/speedtest",
    "v3/+/devices/+/up",
)


class Message(msgspec.Struct, frozen=True, gc=False):
    """A message as it arrived (a ``msgspec.Struct``: made in C, by the ten thousand a second on
    the MQTT thread, at a third of a NamedTuple's cost)."""

    topic: str
    payload: bytes
    received_at: datetime


def build_batch(msgs: list[Message], cfg: IngestSettings, now: datetime) -> Batch:
    """Decode and validate many messages into one batch: plainly valid native messages through
    the columnar fast path (:mod:`quartier.ingest.columnar`), everything else one by one."""
    batch = Batch()
    add = batch.columns.add
    max_bytes = cfg.max_payload_bytes
    for msg in msgs:
        topic = msg.topic
        device = _native_up(topic)
        if device is not None:
            try:
                if add(device[0], device[1], topic, msg.payload, msg.received_at, max_bytes):
                    continue
            except Exception:  # a fast-path bug must not cost the message: the full decoder
                log.exception("fast path failed on a message on %s", topic)
        add_to_batch(batch, msg, cfg, now)
    for refused in batch.columns.validate(now, cfg.max_future_seconds):
        add_to_batch(batch, Message(refused.topic, refused.payload, refused.received_at), cfg, now)
    return batch


#: network and device of native uplink topics seen (``TOPIC`` once per topic, not per message)
_UP_TOPICS: dict[str, tuple[str, str] | None] = {}
_UP_TOPICS_MAX = 100_000


def _native_up(topic: str) -> tuple[str, str] | None:
    """(network, device) of a valid ``quartier/v1/{network}/{device}/up`` topic, else None."""
    try:
        return _UP_TOPICS[topic]
    except KeyError:
        pass
    m = TOPIC.match(topic) if topic.endswith("/up") else None
    found = (m[1], m[2]) if m is not None else None
    if len(_UP_TOPICS) >= _UP_TOPICS_MAX:
        _UP_TOPICS.clear()  # bounded: topics that change all the time cost only the regex
    _UP_TOPICS[topic] = found
    return found


def add_to_batch(batch: Batch, msg: Message, cfg: IngestSettings, now: datetime) -> None:
    """Decode and validate one message into ``batch`` (as data, or as a reject with a reason)."""
    try:
        if msg.topic.startswith("v3/"):
            t = parse_ttn_topic(msg.topic)
            uplink = decode_ttn(
                f"ttn-{t.application_id}",
                msg.payload,
                max_bytes=cfg.max_payload_bytes,
                codecs=cfg.ttn_codecs,
                expected_device=t.device_id,
            )
            add_uplink(batch, uplink, msg, cfg, now)
            return
        m = TOPIC.match(msg.topic)
        if m is None:
            raise DecodeError(
                "unknown_topic",
                "topic does not match quartier/v1/{network}/"
                "{device}/(up|senml|speedtest) or v3/{app}/devices/{device}/up",
            )
        network, device, kind = m.groups()
        if kind == "up":
            uplink = decode_native(network, device, msg.payload, max_bytes=cfg.max_payload_bytes)
            add_uplink(batch, uplink, msg, cfg, now)
        elif kind == "senml":
            uplink = decode_senml(
                network, device, msg.payload, max_bytes=cfg.max_payload_bytes, now=msg.received_at
            )
            add_uplink(batch, uplink, msg, cfg, now)
        else:
            test = decode_speedtest(network, device, msg.payload, max_bytes=cfg.max_payload_bytes)
            _check_speedtest_time(test, now, cfg.max_future_seconds)
            batch.speedtests.append(test)
    except DecodeError as exc:
        batch.rejects.append(
            Reject(msg.topic, msg.payload, exc.reason, exc.detail, msg.received_at)
        )
    except Exception as exc:  # a decoder bug must cost one message, kept, not the ingester
        log.exception("decoder failed on a message on %s", msg.topic)
        batch.rejects.append(
            Reject(
                msg.topic,
                msg.payload,
                "decoder_error",
                f"{type(exc).__name__}: {exc}",
                msg.received_at,
            )
        )


def add_uplink(
    batch: Batch, uplink: Uplink, msg: Message, cfg: IngestSettings, now: datetime
) -> None:
    """Validate a decoded uplink and add it (its invalid readings become a reject)."""
    validate(uplink, now, cfg.max_future_seconds)
    if not uplink.readings and not uplink.invalid:
        return  # e.g. a LoRaWAN status frame with nothing we measure: nothing to store or refuse
    batch.uplinks.append((uplink, msg.topic, msg.payload, msg.received_at))


def _check_speedtest_time(test: SpeedTest, now: datetime, max_future_seconds: int) -> None:
    if (test.time - now).total_seconds() > max_future_seconds:
        raise DecodeError("future_time", f"time {test.time.isoformat()} is in the future")
    if test.time < EARLIEST:
        raise DecodeError("past_time", f"time {test.time.isoformat()} is before {EARLIEST.date()}")
