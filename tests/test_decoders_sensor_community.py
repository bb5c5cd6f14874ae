"""Sensor.Community formats: the firmware's push, the archive CSV and data.json, on the real
samples in ``tests/data/air_quality`` (see ``tests/data/SOURCES.md``) and on malformed input."""

from __future__ import annotations

import contextlib
import csv
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from quartier.errors import DecodeError
from quartier.ingest.model import Position, Uplink
from quartier.ingest.sensor_community import (
    NETWORK,
    decode_sensor_community_archive_csv,
    decode_sensor_community_data_json,
    decode_sensor_community_push,
)
from quartier.ingest.validate import validate

AIR = Path(__file__).parent / "data" / "air_quality"
ARCHIVE = AIR / "stuttgart_2019-12-31_sds011_sensor_553.csv"
DATA_JSON = AIR / "sensor_community_data_json_v1_sample_berlin_2019-04-25.json"
NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
HEADER = "sensor_id;sensor_type;location;lat;lon;timestamp;P1;durP1;ratioP1;P2;durP2;ratioP2\n"


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _series(uplink: Uplink, quantity: str) -> list[tuple[datetime, float]]:
    return [(r.time, r.value) for r in uplink.readings if r.quantity == quantity]


# --- archive CSV -------------------------------------------------------------------------------


def test_archive_csv_sample() -> None:
    text = _read(ARCHIVE).decode()
    rows = list(csv.DictReader(text.splitlines(), delimiter=";"))
    assert len(rows) == 228
    (uplink,) = decode_sensor_community_archive_csv(text)
    assert (uplink.network, uplink.device) == (NETWORK, "553")
    assert uplink.location == Position(48.778, 9.156)
    assert uplink.invalid == []
    pm10, pm25 = _series(uplink, "pm10"), _series(uplink, "pm25")
    assert len(pm10) == len(pm25) == 228
    assert len(uplink.readings) == 456
    assert pm10[0] == (_utc("2019-12-31T00:01:50"), 37.5)
    assert pm25[0] == (_utc("2019-12-31T00:01:50"), 23.97)
    assert pm10[-1] == (_utc("2019-12-31T23:58:04"), 442.4)
    assert pm25[-1] == (_utc("2019-12-31T23:58:04"), 310.93)


def test_archive_csv_new_years_eve_spike_and_gap() -> None:
    (uplink,) = decode_sensor_community_archive_csv(_read(ARCHIVE).decode())
    pm10 = _series(uplink, "pm10")
    assert max(v for t, v in pm10 if t < _utc("2019-12-31T22:00:00")) < 100
    peak_time, peak = max(pm10, key=lambda tv: tv[1])
    assert (peak_time, peak) == (_utc("2019-12-31T23:33:33"), 577.67)
    assert min(v for t, v in pm10 if t > _utc("2019-12-31T23:30:00")) > 400
    gap = [t for t, _ in pm10 if _utc("2019-12-31T00:57:00") < t < _utc("2019-12-31T01:56:00")]
    assert gap == []
    # the spike is real air, not an error: it passes validation (PM10 range 0–2000 µg/m³)
    validate(uplink, NOW, max_future_seconds=600)
    assert len(uplink.readings) == 456 and uplink.invalid == []


def test_archive_csv_skips_empty_fields_and_lists_bad_rows() -> None:
    text = HEADER + (
        "553;SDS011;59;48.778;9.156;2019-12-31T00:01:50;37.50;;;;;\n"  # P2 empty
        "553;SDS011;59;48.778;9.156;not-a-time;37.50;;;23.97;;\n"
        "553;SDS011;59;48.778;9.156;2019-12-31T00:06:45;lots;;;25.77;;\n"
        "553;SDS011;59;48.778;9.156;2019-12-31T00:09:12;38.1\n"  # cut short
        "x;SDS011;59;48.778;9.156;2019-12-31T00:11:41;33.70;;;23.03;;\n"
        "\n"
        "553;SDS011;59;48.778;9.156;2019-12-31T00:14:00+01:00;nan;;;20.0;;\n"
    )
    (uplink,) = decode_sensor_community_archive_csv(text)
    assert [(r.quantity, r.time, r.value) for r in uplink.readings] == [
        ("pm10", _utc("2019-12-31T00:01:50"), 37.5),
        ("pm25", _utc("2019-12-31T00:06:45"), 25.77),
        ("pm25", _utc("2019-12-30T23:14:00"), 20.0),
    ]
    assert [(i, reason) for i, reason, _ in uplink.invalid] == [
        (1, "invalid_time"),
        (2, "invalid_reading"),
        (3, "invalid_reading"),
        (6, "invalid_reading"),
        (4, "invalid_reading"),
    ]


def test_archive_csv_other_sensor_types_and_several_sensors() -> None:
    text = (
        "\ufeffsensor_id;sensor_type;location;lat;lon;timestamp;pressure;altitude;"
        "pressure_sealevel;temperature;humidity;radon\n"
        "7;BME280;3;50.94;6.96;2024-01-01T00:00:00;100512.00;;;3.5;81.2;\n"
        "8;BME280;4;50.95;6.97;2024-01-01T00:00:10;99800;;;3.1;;12\n"
    )
    first, second = decode_sensor_community_archive_csv(text)
    assert (first.device, second.device) == ("7", "8")
    assert second.location == Position(50.95, 6.97)
    assert [(r.quantity, r.value) for r in first.readings] == [
        ("pressure", pytest.approx(1005.12)),
        ("temperature", 3.5),
        ("humidity", 81.2),
    ]
    assert [r.quantity for r in second.readings] == ["pressure", "temperature"]
    assert [(i, reason) for i, reason, _ in second.invalid] == [(1, "unknown_quantity")]


@pytest.mark.parametrize(
    "text",
    ["", "a;b;c\n1;2;3\n", HEADER + "x;SDS011;59;48.7;9.1;2019-12-31T00:01:50;1;;;2;;\n"],
)
def test_archive_csv_unusable_file(text: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_sensor_community_archive_csv(text)
    assert err.value.reason == "invalid_format"


def test_archive_csv_header_only() -> None:
    assert decode_sensor_community_archive_csv(HEADER) == []


# --- data.json ---------------------------------------------------------------------------------


def test_data_json_sample() -> None:
    uplinks = decode_sensor_community_data_json(_read(DATA_JSON))
    by_device = {u.device: u for u in uplinks}
    assert list(by_device) == ["2129", "2130", "657"]
    sds, dht, other = by_device["2129"], by_device["2130"], by_device["657"]
    assert sds.location == dht.location == Position(52.544, 13.374)
    assert other.location == Position(48.778, 9.236)
    assert _series(sds, "pm10") == [
        (_utc("2019-04-25T01:51:12"), 19.13),
        (_utc("2019-04-25T01:53:40"), 18.4),
    ]
    assert _series(sds, "pm25") == [
        (_utc("2019-04-25T01:51:12"), 16.23),
        (_utc("2019-04-25T01:53:40"), 16.8),
    ]
    assert _series(dht, "temperature") == [
        (_utc("2019-04-25T01:51:13"), 18.8),
        (_utc("2019-04-25T01:53:41"), 18.7),
    ]
    assert _series(other, "humidity") == [(_utc("2019-04-25T01:52:18"), 68.4)]
    assert all(u.invalid == [] and u.network == NETWORK for u in uplinks)


def _record(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": 1,
        "timestamp": "2019-04-25 01:51:12",
        "location": {"id": 9, "latitude": "52.5", "longitude": "13.4"},
        "sensor": {"id": 42, "sensor_type": {"name": "BME280"}},
        "sensordatavalues": [
            {"value_type": "pressure", "value": "101300.00"},
            {"value_type": "temperature", "value": "11.20"},
            {"value_type": "pressure_at_sealevel", "value": "102000"},
            {"value_type": "humidity", "value": ""},
        ],
    }
    record.update(overrides)
    return record


def test_data_json_malformed_records() -> None:
    records = [
        _record(),
        _record(timestamp="yesterday"),
        _record(sensordatavalues=[{"value": "1"}, {"value_type": "P1", "value": "x"}]),
        _record(sensordatavalues="none"),
        _record(sensor={}),
        "junk",
        _record(location={"latitude": "999", "longitude": "0"}, sensor={"id": 43}),
    ]
    first, second = decode_sensor_community_data_json(orjson.dumps(records))
    assert first.device == "42"
    assert [(r.quantity, r.value) for r in first.readings] == [
        ("pressure", pytest.approx(1013.0)),
        ("temperature", 11.2),
    ]
    assert [(i, reason) for i, reason, _ in first.invalid] == [
        (0, "unknown_quantity"),  # pressure_at_sealevel
        (1, "invalid_time"),
        (2, "invalid_reading"),
        (2, "invalid_reading"),
        (3, "invalid_reading"),
        (4, "invalid_reading"),
        (5, "invalid_reading"),
    ]
    assert second.device == "43" and second.location is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"{", "invalid_json"), (b"{}", "invalid_format"), (b'[{"sensor": {}}]', "invalid_format")],
)
def test_data_json_unusable(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_sensor_community_data_json(payload)
    assert err.value.reason == reason


# --- firmware push -----------------------------------------------------------------------------

PUSH = {
    "esp8266id": "12345",
    "software_version": "NRZ-2020-133",
    "sensordatavalues": [
        {"value_type": "SDS_P1", "value": "12.30"},
        {"value_type": "SDS_P2", "value": "7.10"},
        {"value_type": "BME280_temperature", "value": "4.56"},
        {"value_type": "BME280_humidity", "value": "88.20"},
        {"value_type": "BME280_pressure", "value": "100891.50"},
        {"value_type": "DNMS_noise_LAeq", "value": "54.2"},
        {"value_type": "DNMS_noise_LA_min", "value": "40.1"},
        {"value_type": "samples", "value": "880311"},
        {"value_type": "min_micro", "value": "28"},
        {"value_type": "max_micro", "value": "20058"},
        {"value_type": "interval", "value": "145000"},
        {"value_type": "signal", "value": "-71"},
    ],
}


def _push(body: Any, headers: dict[str, str] | None = None) -> Uplink:
    return decode_sensor_community_push(
        orjson.dumps(body),
        headers={"X-Sensor": "esp8266-12345", "X-PIN": "1"} if headers is None else headers,
        now=NOW,
    )


def test_push() -> None:
    uplink = _push(PUSH)
    assert (uplink.network, uplink.device, uplink.location, uplink.invalid) == (
        NETWORK,
        "esp8266-12345",
        None,
        [],
    )
    assert [(r.quantity, r.time, r.value, r.parameters) for r in uplink.readings] == [
        ("pm10", NOW, 12.3, {"value_type": "SDS_P1"}),
        ("pm25", NOW, 7.1, {"value_type": "SDS_P2"}),
        ("temperature", NOW, 4.56, {"value_type": "BME280_temperature"}),
        ("humidity", NOW, 88.2, {"value_type": "BME280_humidity"}),
        ("pressure", NOW, pytest.approx(1008.915), {"value_type": "BME280_pressure"}),
        ("noise_laeq", NOW, 54.2, {"value_type": "DNMS_noise_LAeq"}),
    ]


@pytest.mark.parametrize(
    ("value_type", "quantity"),
    [
        ("PMS_P0", "pm1"),
        ("PMS_P1", "pm10"),
        ("PMS_P2", "pm25"),
        ("SPS30_P0", "pm1"),
        ("SPS30_P2", "pm25"),
        ("SPS30_P4", "pm4"),
        ("SPS30_P1", "pm10"),
        ("NPM_P2", "pm25"),
        ("HPM_P1", "pm10"),
        ("temperature", "temperature"),
        ("humidity", "humidity"),
        ("SHT3X_temperature", "temperature"),
        ("HTU21D_humidity", "humidity"),
        ("DS18B20_temperature", "temperature"),
        ("SCD30_co2_ppm", "co2"),
    ],
)
def test_push_value_types(value_type: str, quantity: str) -> None:
    body = {"esp8266id": "1", "sensordatavalues": [{"value_type": value_type, "value": "42"}]}
    (reading,) = _push(body, headers={}).readings
    assert (reading.quantity, reading.value) == (quantity, 42.0)


def test_push_device_from_body_and_header_case() -> None:
    assert _push(PUSH, headers={}).device == "esp8266-12345"
    assert _push(PUSH, headers={"x-sensor": "esp8266-12345"}).device == "esp8266-12345"
    body = {"sensordatavalues": PUSH["sensordatavalues"]}
    assert _push(body, headers={"X-Sensor": "esp32-9f8e7d"}).device == "esp32-9f8e7d"


def test_push_gps_position() -> None:
    body = {
        **PUSH,
        "sensordatavalues": [
            {"value_type": "GPS_lat", "value": "50.937531"},
            {"value_type": "GPS_lon", "value": "6.960279"},
            {"value_type": "GPS_height", "value": "55.40"},
            {"value_type": "SDS_P1", "value": "10"},
        ],
    }
    uplink = _push(body)
    assert uplink.location == Position(50.937531, 6.960279)
    assert [r.quantity for r in uplink.readings] == ["pm10"]
    no_fix = {**body, "sensordatavalues": [{"value_type": "GPS_lat", "value": "-200.000000"}]}
    assert _push(no_fix).location is None


def test_push_bad_items_are_listed() -> None:
    body = {
        **PUSH,
        "sensordatavalues": [
            {"value_type": "SDS_P1", "value": "n/a"},
            {"value_type": "RADON_bq", "value": "12"},
            {"value": "1"},
            "junk",
            {"value_type": "SDS_P2", "value": 5.5},
        ],
    }
    uplink = _push(body)
    assert [(r.quantity, r.value) for r in uplink.readings] == [("pm25", 5.5)]
    assert [(i, reason) for i, reason, _ in uplink.invalid] == [
        (0, "invalid_reading"),
        (1, "unknown_quantity"),
        (2, "invalid_reading"),
        (3, "invalid_reading"),
    ]


@pytest.mark.parametrize(
    ("payload", "headers", "reason"),
    [
        (b"not json", {}, "invalid_json"),
        (b"[]", {}, "invalid_format"),
        (b'{"esp8266id": "1"}', {}, "invalid_format"),
        (b'{"esp8266id": "1", "sensordatavalues": []}', {}, "invalid_format"),
        (b'{"sensordatavalues": [{"value_type": "SDS_P1", "value": "1"}]}', {}, "unknown_device"),
        (b'{"esp8266id": "1", "sensordatavalues": [1]}', {"X-Sensor": "a b"}, "invalid_device"),
        (
            b'{"esp8266id": "1", "sensordatavalues": [1]}',
            {"X-Sensor": "esp8266-2"},
            "device_mismatch",
        ),
        (b'{"esp8266id": "1/2", "sensordatavalues": [1]}', {}, "invalid_device"),
    ],
)
def test_push_refused(payload: bytes, headers: dict[str, str], reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_sensor_community_push(payload, headers=headers, now=NOW)
    assert err.value.reason == reason


def test_push_too_large() -> None:
    with pytest.raises(DecodeError) as err:
        decode_sensor_community_push(orjson.dumps(PUSH), headers={}, now=NOW, max_bytes=100)
    assert err.value.reason == "too_large"


ODD_VALUES: list[Any] = [None, 0, -1, 1.5, True, "", "x", "1e999", [], {}, [1], {"a": 1}]


def _replace_everywhere(original: Any) -> list[Any]:
    """Copies of ``original`` with one field (at any depth) replaced by an odd value each."""
    variants: list[Any] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(items):
            for odd in ODD_VALUES:
                copy = orjson.loads(orjson.dumps(original))
                target = copy
                for step in path:
                    target = target[step]
                target[key] = odd
                variants.append(copy)
            if isinstance(value, dict | list):
                walk(value, (*path, key))

    walk(original, ())
    return variants


def test_push_any_field_replaced_raises_only_decode_error() -> None:
    for body in _replace_everywhere(PUSH):
        with contextlib.suppress(DecodeError):
            decode_sensor_community_push(orjson.dumps(body), headers={}, now=NOW)


def test_data_json_any_field_replaced_raises_only_decode_error() -> None:
    records = orjson.loads(_read(DATA_JSON))[:2]
    for variant in _replace_everywhere(records):
        with contextlib.suppress(DecodeError):
            decode_sensor_community_data_json(orjson.dumps(variant))


def test_archive_csv_garbage_raises_only_decode_error() -> None:
    rng = random.Random(553)
    lines = _read(ARCHIVE).decode().splitlines()[:6]
    alphabet = ";;;;,.-:T0123456789abc \t\"'\n"
    for _ in range(300):
        text = "\n".join(lines)
        pos = rng.randrange(len(text))
        junk = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        with contextlib.suppress(DecodeError):
            decode_sensor_community_archive_csv(text[:pos] + junk + text[pos + 1 :])
