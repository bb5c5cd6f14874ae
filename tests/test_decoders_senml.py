"""SenML JSON (RFC 8428) packs: base-field resolution, relative times, the name and unit table,
and records that cannot be stored."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from quartier.errors import DecodeError
from quartier.ingest.model import Position
from quartier.ingest.senml import decode_senml, quantity_for_name
from quartier.ingest.validate import validate

NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
MAX = 64 * 1024


def _decode(pack: Any, **kwargs: Any) -> Any:
    return decode_senml("city", "node-7", orjson.dumps(pack), max_bytes=MAX, now=NOW, **kwargs)


def _reason(payload: bytes) -> str:
    with pytest.raises(DecodeError) as err:
        decode_senml("city", "node-7", payload, max_bytes=MAX, now=NOW)
    assert err.value.detail
    return err.value.reason


def test_base_fields_resolve_names_times_units_and_values() -> None:
    pack = [
        {
            "bn": "urn:dev:mac:0024befffe804ff1:",
            "bt": 1.7645e9,
            "bu": "Cel",
            "n": "temp",
            "v": 21.5,
        },
        {"n": "humidity", "u": "%RH", "v": 40, "t": -30},
        {"n": "pressure", "u": "Pa", "v": 101325},
        {"bv": 400, "n": "co2", "u": "ppm", "v": 12},
        {"n": "temperature", "v": 0.5},  # bu "Cel" still applies, bv does too
    ]
    uplink = _decode(pack)
    assert (uplink.network, uplink.device, uplink.invalid) == ("city", "node-7", [])
    t0 = datetime.fromtimestamp(1.7645e9, tz=UTC)
    assert [(r.quantity, r.time, r.value) for r in uplink.readings] == [
        ("temperature", t0, 21.5),
        ("humidity", t0 - timedelta(seconds=30), 40.0),
        ("pressure", t0, pytest.approx(1013.25)),
        ("co2", t0, 412.0),
        ("temperature", t0, 400.5),
    ]


def test_relative_times_are_relative_to_now() -> None:
    pack = [
        {"n": "temp", "u": "Cel", "v": 20.0},  # no time: now
        {"n": "temp", "u": "Cel", "v": 19.5, "t": -600},  # ten minutes ago
        {"bt": -3600, "n": "temp", "u": "Cel", "v": 19.0, "t": 60},  # 59 minutes ago
        {"bt": 0, "n": "temp", "u": "Cel", "v": 19.0, "t": 2**28},  # absolute: 1978
    ]
    times = [r.time for r in _decode(pack).readings]
    assert times == [
        NOW,
        NOW - timedelta(minutes=10),
        NOW - timedelta(minutes=59),
        datetime.fromtimestamp(2**28, tz=UTC),
    ]


def test_future_relative_time_is_caught_by_validation() -> None:
    uplink = _decode([{"n": "pm10", "u": "ug/m3", "v": 20, "t": 3600}])
    assert uplink.readings[0].time == NOW + timedelta(hours=1)
    validate(uplink, NOW, max_future_seconds=600)
    assert uplink.readings == [] and uplink.invalid[0][1] == "future_time"


@pytest.mark.parametrize(
    ("name", "quantity"),
    [
        ("temperature", "temperature"),
        ("urn:dev:ow:10e2073a01080063:temp", "temperature"),
        ("air-temperature", "temperature"),
        ("humidity", "humidity"),
        ("rh", "humidity"),
        ("pm2.5", "pm25"),
        ("pm2_5", "pm25"),
        ("PM25", "pm25"),
        ("pm1.0", "pm1"),
        ("pm10", "pm10"),
        ("pm4", "pm4"),
        ("no2", "no2"),
        ("noise", "noise_laeq"),
        ("LAeq", "noise_laeq"),
        ("co2", "co2"),
        ("pressure", "pressure"),
        ("occupied", "parking_occupied"),
        ("traffic_count", "traffic_count"),
        ("battery", "battery"),
        ("sensors/box1/pm2.5", "pm25"),
        ("box1.pm2.5", None),
        ("3303/0/5700", "temperature"),
        ("dev/3304/1/5700", "humidity"),
        ("3315/0/5700", "pressure"),
        ("voltage", None),
        ("urn:dev:ow:10e2073a01080063", None),
        ("3303/0/5601", None),
        ("soil_temperature", None),
    ],
)
def test_name_table(name: str, quantity: str | None) -> None:
    assert quantity_for_name(name) == quantity


@pytest.mark.parametrize(
    ("record", "quantity", "value"),
    [
        ({"n": "temp", "u": "K", "v": 293.15}, "temperature", 20.0),
        ({"n": "pressure", "u": "hPa", "v": 1002.5}, "pressure", 1002.5),
        ({"n": "pressure", "u": "kPa", "v": 100.25}, "pressure", 1002.5),
        ({"n": "humidity", "u": "%", "v": 55}, "humidity", 55.0),
        ({"n": "pm10", "u": "µg/m3", "v": 31}, "pm10", 31.0),
        ({"n": "noise", "u": "dB", "v": 61.2}, "noise_laeq", 61.2),
        ({"n": "battery", "u": "%EL", "v": 87}, "battery", 87.0),
        ({"n": "temp", "v": 18.25}, "temperature", 18.25),  # no unit: the catalogue's
        ({"n": "occupied", "vb": True}, "parking_occupied", 1.0),
        ({"n": "occupied", "vb": False}, "parking_occupied", 0.0),
        ({"n": "occupied", "v": 1}, "parking_occupied", 1.0),
    ],
)
def test_units_convert_to_the_catalogue(
    record: dict[str, Any], quantity: str, value: float
) -> None:
    (reading,) = _decode([record]).readings
    assert (reading.quantity, reading.value) == (quantity, pytest.approx(value))


def test_boolean_ignores_an_inherited_unit() -> None:
    uplink = _decode([{"bu": "Cel", "n": "temp", "v": 20}, {"n": "occupied", "vb": True}])
    assert [r.quantity for r in uplink.readings] == ["temperature", "parking_occupied"]


def test_unusable_records_are_listed_and_the_rest_kept() -> None:
    pack = [
        {"bn": "node-7/", "n": "temp", "u": "Cel", "v": 21},
        {"n": "voltage", "u": "V", "v": 3.3},
        {"n": "temp", "vs": "warm"},
        {"n": "temp", "vb": True},
        {"n": "temp", "vd": "aGVsbG8"},
        {"n": "temp", "s": 100},
        {"n": "temp", "u": "degF", "v": 70},
        {"n": "temp", "v": "21"},
        {"n": "temp", "v": 20, "vs": "x"},
        {"n": "temp", "v": 20, "t": "soon"},
        {"n": "temp", "v": 20, "t": 1e20},
        "not a record",
        {},
        {"bn": "-bad", "n": "temp", "v": 1},
        {"bn": "node-7/", "n": "pm25", "u": "ug/m3", "v": 9.5},
    ]
    uplink = _decode(pack)
    assert [(r.quantity, r.value) for r in uplink.readings] == [
        ("temperature", 21.0),
        ("pm25", 9.5),
    ]
    assert [(i, reason) for i, reason, _ in uplink.invalid] == [
        (1, "unknown_quantity"),
        (2, "not_numeric"),
        (3, "not_numeric"),
        (4, "not_numeric"),
        (5, "no_value"),
        (6, "unsupported_unit"),
        (7, "invalid_reading"),
        (8, "invalid_reading"),
        (9, "invalid_time"),
        (10, "invalid_time"),
        (11, "invalid_reading"),
        (12, "no_value"),
        (13, "invalid_name"),
    ]
    assert "node-7/voltage" in uplink.invalid[0][2]


def test_base_only_record_is_not_a_reading() -> None:
    uplink = _decode([{"bn": "node-7/", "bt": 1.7e9}, {"n": "temp", "v": 20}])
    assert len(uplink.readings) == 1 and uplink.invalid == []
    assert uplink.readings[0].time == datetime.fromtimestamp(1.7e9, tz=UTC)


def test_position_records() -> None:
    pack = [
        {"bn": "urn:dev:ow:10e2073a01080063:", "n": "lat", "u": "lat", "v": 50.9375},
        {"n": "lon", "u": "lon", "v": 6.9603},
        {"n": "temp", "u": "Cel", "v": 3.5},
    ]
    uplink = _decode(pack)
    assert uplink.location == Position(50.9375, 6.9603)
    assert [r.quantity for r in uplink.readings] == ["temperature"]


def test_incomplete_or_impossible_position_is_listed() -> None:
    assert _decode([{"n": "lat", "u": "lat", "v": 50.9}]).invalid[0][1] == "invalid_location"
    uplink = _decode([{"n": "lat", "u": "lat", "v": 99}, {"n": "lon", "u": "lon", "v": 6.9}])
    assert uplink.location is None and uplink.invalid[0][1] == "invalid_location"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "invalid_json"),
        (b"{}", "invalid_format"),
        (b"[]", "invalid_format"),
        (b'{"n": "temp", "v": 1}', "invalid_format"),
        (b'[{"bn": 5, "n": "temp", "v": 1}]', "invalid_format"),
        (b'[{"bt": "now", "n": "temp", "v": 1}]', "invalid_format"),
        (b'[{"bver": 11, "n": "temp", "v": 1}]', "unsupported_version"),
        (b'[{"bver": "10", "n": "temp", "v": 1}]', "invalid_format"),
        (b'[{"n": "temp", "v": 1, "crit_": true}]', "unsupported_field"),
    ],
)
def test_whole_pack_refused(payload: bytes, reason: str) -> None:
    assert _reason(payload) == reason


def test_too_large() -> None:
    with pytest.raises(DecodeError) as err:
        decode_senml("city", "n", b"[" + b" " * 100 + b"]", max_bytes=50, now=NOW)
    assert err.value.reason == "too_large"


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone"):
        decode_senml("city", "n", b"[]", max_bytes=MAX, now=datetime(2026, 1, 1))


ODD_VALUES: list[Any] = [None, 0, -1, 1e300, -1e300, True, "", "x_", [], {}, [1], {"a": 1}]
VALID_PACK: list[dict[str, Any]] = [
    {"bn": "urn:dev:mac:1:", "bt": 1.7e9, "bu": "Cel", "bv": 0, "bver": 10, "n": "temp", "v": 1},
    {"n": "humidity", "u": "%RH", "v": 40, "t": -30, "s": 1, "ut": 5},
    {"n": "occupied", "vb": True},
    {"n": "lat", "u": "lat", "v": 50.9},
    {"n": "lon", "u": "lon", "v": 6.9},
]


def test_any_field_replaced_raises_only_decode_error() -> None:
    """Every field of every record, replaced by values of other types: an Uplink or a
    DecodeError, never another exception."""
    for i, record in enumerate(VALID_PACK):
        for key in [*record, "vs", "vd", "x_"]:
            for odd in ODD_VALUES:
                pack = [dict(r) for r in VALID_PACK]
                pack[i][key] = odd
                with contextlib.suppress(DecodeError):
                    _decode(pack)
