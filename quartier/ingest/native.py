"""The native format's decoders (documented in ``docs/mqtt.md``): bytes in, ``Uplink`` /
``SpeedTest`` out, ``DecodeError`` when a whole message is unusable. A reading that is unusable on
its own is listed in ``Uplink.invalid`` and the rest of the message is kept. Range and time checks
live in ``validate``, shared by all formats; JSON field parsing in ``fields``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from quartier.errors import DecodeError
from quartier.ingest.fields import load_json, number, parse_time, position
from quartier.ingest.model import Reading, SpeedTest, Uplink


def _native_reading(item: Any, base_time: Any) -> Reading:
    if type(item) is not dict:
        raise ValueError("a reading must be an object")
    quantity = item.get("quantity")
    if type(quantity) is not str or not quantity:
        raise ValueError("quantity must be a non-empty string")
    raw_time = item.get("time", base_time)
    if raw_time is None:
        raise ValueError("time is missing")
    # fast path for the common case: RFC 3339 text with a zone and a float value
    t = _fast_time(raw_time) if type(raw_time) is str else None
    value = item.get("value")
    if type(value) is not float or not math.isfinite(value):
        value = number(value, "value")
    params = item.get("parameters")
    if params is not None and type(params) is not dict:
        raise ValueError("parameters must be an object")
    return Reading(quantity, t if t is not None else parse_time(raw_time), value, params)


def _fast_time(raw: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    try:
        return t if t.utcoffset() == _ZERO else t.astimezone(UTC)
    except OverflowError:  # out of range in UTC: parse_time says so
        return None


_ZERO = timedelta(0)


def decode_native(network: str, device: str, payload: bytes, *, max_bytes: int) -> Uplink:
    """One reading ``{"time", "quantity", "value"}`` or a batch ``{"readings": [...]}``, with an
    optional ``"location": {"lat", "lon"}`` and a ``"time"`` that readings may inherit."""
    doc = load_json(payload, max_bytes)
    if not isinstance(doc, dict):
        raise DecodeError("invalid_format", "payload must be a JSON object")
    location = None
    if "location" in doc:
        try:
            location = position(doc["location"])
        except ValueError as exc:
            raise DecodeError("invalid_location", str(exc)) from None
    if "readings" in doc:
        items = doc["readings"]
        if not isinstance(items, list) or not items:
            raise DecodeError("invalid_format", "readings must be a non-empty array")
    elif "quantity" in doc:
        items = [doc]
    else:
        raise DecodeError("invalid_format", "expected 'readings' or a single reading")
    uplink = Uplink(network, device, [], location)
    base_time = doc.get("time")
    for i, item in enumerate(items):
        try:
            uplink.readings.append(_native_reading(item, base_time))
        except ValueError as exc:
            uplink.invalid.append((i, "invalid_reading", str(exc)))
    return uplink


def decode_speedtest(source: str, device: str, payload: bytes, *, max_bytes: int) -> SpeedTest:
    doc = load_json(payload, max_bytes)
    if not isinstance(doc, dict):
        raise DecodeError("invalid_format", "payload must be a JSON object")
    try:
        down = number(doc.get("download_mbps"), "download_mbps")
        up = doc.get("upload_mbps")
        latency = doc.get("latency_ms")
        test = SpeedTest(
            source=source,
            device=device,
            time=parse_time(doc.get("time")),
            position=position({"lat": doc.get("lat"), "lon": doc.get("lon")}),
            download_mbps=down,
            upload_mbps=None if up is None else number(up, "upload_mbps"),
            latency_ms=None if latency is None else number(latency, "latency_ms"),
            technology=_opt_str(doc.get("technology"), "technology"),
            operator=_opt_str(doc.get("operator"), "operator"),
        )
    except ValueError as exc:
        raise DecodeError("invalid_speedtest", str(exc)) from None
    for what, v, hi in (
        ("download_mbps", test.download_mbps, 100_000),
        ("upload_mbps", test.upload_mbps, 100_000),
        ("latency_ms", test.latency_ms, 60_000),
    ):
        if v is not None and not 0 <= v <= hi:
            raise DecodeError("out_of_range", f"{what} {v} outside [0, {hi}]")
    return test


def _opt_str(raw: Any, what: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > 64:
        raise ValueError(f"{what} must be a string of at most 64 characters")
    return raw
