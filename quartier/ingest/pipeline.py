"""Pure dispatch from (topic, payload) to a decoded item or a reject, and batch assembly."""

from __future__ import annotations

import re
from datetime import datetime
from typing import NamedTuple

from quartier.config import IngestSettings
from quartier.errors import DecodeError
from quartier.ingest.decoders import decode_native, decode_speedtest
from quartier.ingest.model import SpeedTest
from quartier.ingest.validate import EARLIEST, validate
from quartier.ingest.writer import Batch, Reject

TOPIC = re.compile(r"^quartier/v1/([A-Za-z0-9_.\-]{1,64})/([A-Za-z0-9_.\-]{1,64})/(up|speedtest)$")
#: Subscriptions of the ingester (documented in docs/mqtt.md).
SUBSCRIPTIONS = ("quartier/v1/+/+/up", "quartier/v1/+/+/speedtest")


class Message(NamedTuple):
    topic: str
    payload: bytes
    received_at: datetime


def add_to_batch(batch: Batch, msg: Message, cfg: IngestSettings, now: datetime) -> None:
    """Decode and validate one message into ``batch`` (as data, or as a reject with a reason)."""
    m = TOPIC.match(msg.topic)
    if m is None:
        batch.rejects.append(
            Reject(
                msg.topic,
                msg.payload,
                "unknown_topic",
                "topic does not match quartier/v1/{network}/{device}/(up|speedtest)",
                msg.received_at,
            )
        )
        return
    network, device, kind = m.groups()
    try:
        if kind == "up":
            uplink = decode_native(network, device, msg.payload, max_bytes=cfg.max_payload_bytes)
            validate(uplink, now, cfg.max_future_seconds)
            batch.uplinks.append((uplink, msg.topic, msg.payload, msg.received_at))
        else:
            test = decode_speedtest(network, device, msg.payload, max_bytes=cfg.max_payload_bytes)
            _check_speedtest_time(test, now, cfg.max_future_seconds)
            batch.speedtests.append(test)
    except DecodeError as exc:
        batch.rejects.append(
            Reject(msg.topic, msg.payload, exc.reason, exc.detail, msg.received_at)
        )


def _check_speedtest_time(test: SpeedTest, now: datetime, max_future_seconds: int) -> None:
    if (test.time - now).total_seconds() > max_future_seconds:
        raise DecodeError("future_time", f"time {test.time.isoformat()} is in the future")
    if test.time < EARLIEST:
        raise DecodeError("past_time", f"time {test.time.isoformat()} is before {EARLIEST.date()}")
