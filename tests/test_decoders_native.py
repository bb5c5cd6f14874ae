"""The native JSON format (docs/mqtt.md) and the shared validation, without servers."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from quartier.errors import DecodeError
from quartier.ingest.native import decode_native, decode_speedtest
from quartier.ingest.validate import validate

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def dec(doc: object, max_bytes: int = 1 << 16):
    payload = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return validate(decode_native("net", "dev", payload, max_bytes=max_bytes), NOW, 600)


def test_single_reading() -> None:
    up = dec({"time": "2026-11-27T10:00:00Z", "quantity": "pm25", "value": 12.5})
    assert [(r.quantity, r.time, r.value) for r in up.readings] == [
        ("pm25", datetime(2026, 11, 27, 10, tzinfo=UTC), 12.5)
    ]
    assert up.invalid == [] and up.location is None


def test_batch_inherits_time_converts_zones_and_keeps_location() -> None:
    up = dec(
        {
            "location": {"lat": 50.94, "lon": 6.96},
            "time": "2026-11-27T11:00:00+01:00",
            "readings": [
                {"quantity": "pm25", "value": 3},
                {"quantity": "no2", "value": 40.5, "time": 1795777200000},
                {"quantity": "temperature", "value": -3.5, "parameters": {"height_m": 4}},
            ],
        }
    )
    assert [r.time for r in up.readings] == [
        datetime(2026, 11, 27, 10, tzinfo=UTC),
        datetime.fromtimestamp(1795777200, tz=UTC),
        datetime(2026, 11, 27, 10, tzinfo=UTC),
    ]
    assert all(r.time.utcoffset().total_seconds() == 0 for r in up.readings)  # type: ignore[union-attr]
    assert up.readings[0].value == 3.0 and isinstance(up.readings[0].value, float)
    assert up.readings[2].parameters == {"height_m": 4}
    assert (up.location.lat, up.location.lon) == (50.94, 6.96)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b'{"time": "2026-11-27T10:00:00Z", "quantity": "pm25", "value": NaN}', "invalid_json"),
        (b'{"time": "2026-11-27T10:00:00Z", "quantity": "pm25", "value": 1e400}', "invalid_json"),
        (b"[1, 2]", "invalid_format"),
        (b'"text"', "invalid_format"),
        (b'{"something": 1}', "invalid_format"),
        (b'{"readings": []}', "invalid_format"),
        (b'{"readings": {"a": 1}}', "invalid_format"),
        (
            b'{"location": {"lat": 95, "lon": 6}, "quantity": "pm25", "value": 1, "time": 0}',
            "invalid_location",
        ),
        (b"[" * 5000 + b"]" * 5000, "invalid_json"),  # deeply nested
        (
            b'{"quantity": "pm25", "value": 1, "time": "2026-11-27T10:00:00Z", "pad": "'
            + b"x" * 70000
            + b'"}',
            "too_large",
        ),
    ],
)
def test_unusable_messages_raise_decode_error_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        dec(payload)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("reading", "reason", "needle"),
    [
        (
            {"quantity": "pm25", "value": "12", "time": "2026-11-27T10:00:00Z"},
            "invalid_reading",
            "must be a number",
        ),
        (
            {"quantity": "pm25", "value": True, "time": "2026-11-27T10:00:00Z"},
            "invalid_reading",
            "must be a number",
        ),
        (
            {"quantity": "pm25", "value": None, "time": "2026-11-27T10:00:00Z"},
            "invalid_reading",
            "must be a number",
        ),
        ({"quantity": "pm25", "value": 1}, "invalid_reading", "time is missing"),
        (
            {"quantity": "pm25", "value": 1, "time": "2026-11-27T10:00:00"},
            "invalid_reading",
            "no time zone",
        ),
        ({"quantity": "pm25", "value": 1, "time": "yesterday"}, "invalid_reading", "not RFC 3339"),
        ({"quantity": "pm25", "value": 1, "time": 1e20}, "invalid_reading", "out of range"),
        (
            {"quantity": "", "value": 1, "time": "2026-11-27T10:00:00Z"},
            "invalid_reading",
            "non-empty string",
        ),
        (
            {"quantity": "radon", "value": 1, "time": "2026-11-27T10:00:00Z"},
            "unknown_quantity",
            "radon",
        ),
        (
            {"quantity": "pm25", "value": -0.1, "time": "2026-11-27T10:00:00Z"},
            "out_of_range",
            "outside [0, 1000]",
        ),
        (
            {"quantity": "humidity", "value": 100.5, "time": "2026-11-27T10:00:00Z"},
            "out_of_range",
            "humidity",
        ),
        ({"quantity": "pm25", "value": 1, "time": "2026-11-27T12:11:00Z"}, "future_time", "future"),
        ({"quantity": "pm25", "value": 1, "time": "1970-01-02T00:00:00Z"}, "past_time", "before"),
        (
            {"quantity": "pm25", "value": 1, "time": "2026-11-27T10:00:00Z", "parameters": [1]},
            "invalid_reading",
            "parameters",
        ),
    ],
)
def test_bad_readings_are_listed_and_good_ones_kept(
    reading: dict, reason: str, needle: str
) -> None:
    good = {"quantity": "pm10", "value": 20.0, "time": "2026-11-27T10:00:00Z"}
    up = dec({"readings": [good, reading]})
    assert [r.quantity for r in up.readings] == ["pm10"]
    assert len(up.invalid) == 1
    _, got_reason, detail = up.invalid[0]
    assert got_reason == reason
    assert needle in detail


def test_speedtest() -> None:
    t = decode_speedtest(
        "crowd",
        "c-1",
        orjson.dumps(
            {
                "time": "2026-11-27T10:00:00Z",
                "lat": 50.9,
                "lon": 6.9,
                "download_mbps": 250.5,
                "upload_mbps": 40,
                "latency_ms": 12,
                "technology": "cable",
                "operator": "Vodafone",
            }
        ),
        max_bytes=4096,
    )
    assert (t.download_mbps, t.upload_mbps, t.technology, t.position.lat) == (
        250.5,
        40.0,
        "cable",
        50.9,
    )


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"time": "2026-11-27T10:00:00Z", "lat": 50.9, "lon": 6.9}, "invalid_speedtest"),
        (
            {"time": "2026-11-27T10:00:00Z", "lat": 50.9, "lon": 6.9, "download_mbps": -1},
            "out_of_range",
        ),
        (
            {"time": "2026-11-27T10:00:00Z", "lat": 91, "lon": 6.9, "download_mbps": 1},
            "invalid_speedtest",
        ),
        ({"lat": 50.9, "lon": 6.9, "download_mbps": 1}, "invalid_speedtest"),
        (
            {
                "time": "2026-11-27T10:00:00Z",
                "lat": 50.9,
                "lon": 6.9,
                "download_mbps": 1,
                "operator": 5,
            },
            "invalid_speedtest",
        ),
    ],
)
def test_bad_speedtests(doc: dict, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_speedtest("crowd", "c-1", orjson.dumps(doc), max_bytes=4096)
    assert err.value.reason == reason
