"""Parsing of the JSON fields every payload format shares (pure): the payload itself with its size
limit, times, numbers and positions. Each raises ``DecodeError`` with a reason key."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson

from quartier.errors import DecodeError
from quartier.ingest.model import Position


def load_json(payload: bytes, max_bytes: int) -> Any:
    if len(payload) > max_bytes:
        raise DecodeError("too_large", f"payload has {len(payload)} bytes, limit {max_bytes}")
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("invalid_json", str(exc)) from None


def parse_time(raw: Any) -> datetime:
    """RFC 3339 text with a zone, or epoch milliseconds."""
    if isinstance(raw, bool):
        raise ValueError("time must be RFC 3339 text or epoch milliseconds, got a boolean")
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            raise ValueError("time is not finite")
        try:
            return datetime.fromtimestamp(raw / 1000.0, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"time {raw!r} (epoch milliseconds) is out of range") from None
    if isinstance(raw, str):
        try:
            t = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(f"time {raw!r} is not RFC 3339") from None
        if t.tzinfo is None:
            raise ValueError(f"time {raw!r} has no time zone")
        try:
            return t.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            raise ValueError(f"time {raw!r} is out of range") from None
    raise ValueError(f"time must be RFC 3339 text or epoch milliseconds, got {type(raw).__name__}")


def number(raw: Any, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"{what} must be a number, got {type(raw).__name__}")
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"{what} is not finite")
    return value


def position(raw: Any) -> Position:
    if not isinstance(raw, dict):
        raise ValueError("location must be an object with lat and lon")
    lat, lon = number(raw.get("lat"), "lat"), number(raw.get("lon"), "lon")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"location ({lat}, {lon}) is outside WGS84 bounds")
    return Position(lat, lon)
