"""Sensor.Community (formerly luftdaten.info) formats:

* the JSON the airRohr firmware pushes to a custom API (one POST per measurement interval, all
  sensors of the node in it; no time, so the time of receipt is used);
* the archive CSV files of archive.sensor.community (one file per sensor and day, ``;``-separated,
  times in UTC without a zone marker);
* the data.json array of the public API (``/static/v1/data.json`` and friends).

Value names are mapped to quantities by the tables below; pressures come in Pa and are stored in
hPa. See ``docs/decoders.md``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from quartier.errors import DecodeError
from quartier.ingest.fields import load_json, position
from quartier.ingest.model import Position, Reading, Uplink

NETWORK = "sensor.community"
PUSH_MAX_BYTES = 64 * 1024
DATA_JSON_MAX_BYTES = 256 * 1024 * 1024

_PA = 0.01  # Pa → hPa

#: ``value_type`` of the firmware's push → (quantity, factor)
PUSH_VALUE_TYPES: Mapping[str, tuple[str, float]] = {
    "SDS_P1": ("pm10", 1.0),
    "SDS_P2": ("pm25", 1.0),
    "PMS_P0": ("pm1", 1.0),
    "PMS_P1": ("pm10", 1.0),
    "PMS_P2": ("pm25", 1.0),
    "HPM_P1": ("pm10", 1.0),
    "HPM_P2": ("pm25", 1.0),
    "SPS30_P0": ("pm1", 1.0),
    "SPS30_P2": ("pm25", 1.0),
    "SPS30_P4": ("pm4", 1.0),
    "SPS30_P1": ("pm10", 1.0),
    "NPM_P0": ("pm1", 1.0),
    "NPM_P2": ("pm25", 1.0),
    "NPM_P1": ("pm10", 1.0),
    "temperature": ("temperature", 1.0),  # DHT22
    "humidity": ("humidity", 1.0),  # DHT22
    "BME280_temperature": ("temperature", 1.0),
    "BME280_humidity": ("humidity", 1.0),
    "BME280_pressure": ("pressure", _PA),
    "BMP280_temperature": ("temperature", 1.0),
    "BMP280_pressure": ("pressure", _PA),
    "BMP_temperature": ("temperature", 1.0),  # BMP180
    "BMP_pressure": ("pressure", _PA),
    "SHT3X_temperature": ("temperature", 1.0),
    "SHT3X_humidity": ("humidity", 1.0),
    "HTU21D_temperature": ("temperature", 1.0),
    "HTU21D_humidity": ("humidity", 1.0),
    "DS18B20_temperature": ("temperature", 1.0),
    "SCD30_temperature": ("temperature", 1.0),
    "SCD30_humidity": ("humidity", 1.0),
    "SCD30_co2_ppm": ("co2", 1.0),
    "DNMS_noise_LAeq": ("noise_laeq", 1.0),
}

#: push values that are known and deliberately not stored (diagnostics, counts, GPS handled apart)
PUSH_IGNORED = frozenset(
    {
        "samples",
        "min_micro",
        "max_micro",
        "interval",
        "signal",
        "GPS_lat",
        "GPS_lon",
        "GPS_height",
        "GPS_date",
        "GPS_time",
        "GPS_timestamp",
        "DNMS_noise_LA_min",
        "DNMS_noise_LA_max",
        "SPS30_N05",
        "SPS30_N1",
        "SPS30_N25",
        "SPS30_N4",
        "SPS30_N10",
        "SPS30_TS",
        "NPM_N1",
        "NPM_N10",
        "NPM_N25",
    }
)

#: value names of the archive CSV columns and of data.json → (quantity, factor)
ARCHIVE_VALUE_TYPES: Mapping[str, tuple[str, float]] = {
    "P0": ("pm1", 1.0),
    "P1": ("pm10", 1.0),
    "P2": ("pm25", 1.0),
    "P4": ("pm4", 1.0),
    "temperature": ("temperature", 1.0),
    "humidity": ("humidity", 1.0),
    "pressure": ("pressure", _PA),
    "noise_LAeq": ("noise_laeq", 1.0),
    "co2_ppm": ("co2", 1.0),
}

#: archive columns / data.json names known and not stored
ARCHIVE_IGNORED = frozenset(
    {
        "sensor_id",
        "sensor_type",
        "location",
        "lat",
        "lon",
        "timestamp",
        "durP1",
        "ratioP1",
        "durP2",
        "ratioP2",
        "N05",
        "N1",
        "N25",
        "N4",
        "N10",
        "TS",
        "altitude",
        "pressure_sealevel",
        "noise_LA_min",
        "noise_LA_max",
    }
)

_DEVICE = re.compile(r"^(?!\.+$)[A-Za-z0-9_.-]{1,64}$")  # not only dots: no "." or ".."
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


def _number_text(raw: Any, what: str) -> float:
    """Sensor.Community sends numbers as text ("12.30"); plain numbers are accepted too."""
    if isinstance(raw, bool):
        raise ValueError(f"{what} must be a number, got a boolean")
    text_ok = isinstance(raw, str) and _NUMBER.match(raw.strip()) is not None
    if not (isinstance(raw, int | float) or text_ok):
        raise ValueError(f"{what} {raw!r} is not a number")
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"{what} is not finite")
    return value


def _utc(raw: Any, what: str) -> datetime:
    """ISO time; without a zone it is UTC (as in the archive and data.json)."""
    if not isinstance(raw, str):
        raise ValueError(f"{what} must be text")
    try:
        t = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ValueError(f"{what} {raw!r} is not an ISO time") from None
    try:
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    except OverflowError:  # e.g. year 1 with a positive offset
        raise ValueError(f"{what} {raw!r} is out of range") from None


def _lat_lon(lat: Any, lon: Any) -> Position | None:
    try:
        return position({"lat": _number_text(lat, "lat"), "lon": _number_text(lon, "lon")})
    except ValueError:
        return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def push_device(headers: Mapping[str, str], doc: Mapping[str, Any]) -> str:
    """The node's device key: the ``X-Sensor`` header (``esp8266-12345``) or ``esp8266id``."""
    header = _header(headers, "X-Sensor")
    chip = doc.get("esp8266id")
    chip_id = str(chip) if isinstance(chip, int | str) and not isinstance(chip, bool) else None
    if header is not None:
        device = header.strip()
        if not _DEVICE.match(device):
            raise DecodeError("invalid_device", f"X-Sensor {header!r} is not a valid device key")
        if chip_id and not device.endswith(f"-{chip_id}"):
            raise DecodeError(
                "device_mismatch", f"X-Sensor {device!r} but esp8266id {chip_id!r} in the body"
            )
        return device
    if chip_id:
        device = f"esp8266-{chip_id}"
        if _DEVICE.match(device):
            return device
        raise DecodeError("invalid_device", f"esp8266id {chip_id!r} is not a valid device key")
    raise DecodeError("unknown_device", "no X-Sensor header and no esp8266id in the body")


def decode_sensor_community_push(
    payload: bytes,
    *,
    headers: Mapping[str, str],
    now: datetime,
    max_bytes: int = PUSH_MAX_BYTES,
    network: str = NETWORK,
) -> Uplink:
    """The firmware's POST to a custom API: ``{"esp8266id", "software_version",
    "sensordatavalues": [{"value_type", "value"}, ...]}``. ``now`` (the time of receipt,
    timezone-aware) is the time of every reading; ``value_type`` goes to ``parameters``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    doc = load_json(payload, max_bytes)
    if not isinstance(doc, dict):
        raise DecodeError("invalid_format", "payload must be a JSON object")
    values = doc.get("sensordatavalues")
    if not isinstance(values, list) or not values:
        raise DecodeError("invalid_format", "sensordatavalues must be a non-empty array")
    uplink = Uplink(network, push_device(headers, doc), [])
    time = now.astimezone(UTC)
    gps: dict[str, Any] = {}
    for i, item in enumerate(values):
        if not isinstance(item, dict) or not isinstance(item.get("value_type"), str):
            uplink.invalid.append((i, "invalid_reading", "an item needs a value_type and a value"))
            continue
        value_type: str = item["value_type"]
        if value_type in ("GPS_lat", "GPS_lon"):
            gps[value_type] = item.get("value")
        target = PUSH_VALUE_TYPES.get(value_type)
        if target is None:
            if value_type not in PUSH_IGNORED:
                uplink.invalid.append(
                    (i, "unknown_quantity", f"value_type {value_type!r} maps to no quantity")
                )
            continue
        quantity, factor = target
        try:
            value = _number_text(item.get("value"), value_type) * factor
        except ValueError as exc:
            uplink.invalid.append((i, "invalid_reading", str(exc)))
            continue
        uplink.readings.append(Reading(quantity, time, value, {"value_type": value_type}))
    if gps:  # no fix reads as out-of-range coordinates: then there is no position
        uplink.location = _lat_lon(gps.get("GPS_lat"), gps.get("GPS_lon"))
    return uplink


def decode_sensor_community_archive_csv(text: str, *, network: str = NETWORK) -> list[Uplink]:
    """An archive CSV (``2019-12-31_sds011_sensor_553.csv``): one Uplink per ``sensor_id``, with
    the position from ``lat``/``lon``. Empty fields are skipped; a row that cannot be used is
    listed in ``invalid`` with its index among the data rows (0 = the row after the header)."""
    try:
        rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff")), delimiter=";"))
    except csv.Error as exc:
        raise DecodeError("invalid_format", f"CSV: {exc}") from None
    reader = iter(rows)
    header = next(reader, None)
    if header is None:
        raise DecodeError("invalid_format", "the CSV file is empty")
    header = [h.strip() for h in header]
    if "sensor_id" not in header or "timestamp" not in header:
        raise DecodeError("invalid_format", "the CSV header lacks sensor_id or timestamp")
    uplinks: dict[str, Uplink] = {}
    orphans = Uplink(network, "", [])  # invalid rows without a usable sensor id
    for i, row in enumerate(reader):
        if not row:
            continue
        fields = dict(zip(header, (f.strip() for f in row), strict=False))
        sensor = fields.get("sensor_id", "")
        if not sensor.isdigit():
            orphans.invalid.append((i, "invalid_reading", f"sensor_id {sensor!r} is not a number"))
            continue
        uplink = uplinks.setdefault(sensor, Uplink(network, sensor, []))
        if len(row) != len(header):
            uplink.invalid.append(
                (i, "invalid_reading", f"row has {len(row)} fields, header {len(header)}")
            )
            continue
        if uplink.location is None:
            uplink.location = _lat_lon(fields.get("lat"), fields.get("lon"))
        _archive_values(uplink, i, fields.get("timestamp"), fields.items())
    if orphans.invalid:
        if not uplinks:
            detail = "; ".join(f"row {i}: {d}" for i, _, d in orphans.invalid[:3])
            raise DecodeError("invalid_format", f"no row has a sensor_id: {detail}")
        next(iter(uplinks.values())).invalid.extend(orphans.invalid)
    return list(uplinks.values())


def decode_sensor_community_data_json(
    payload: bytes, *, max_bytes: int = DATA_JSON_MAX_BYTES, network: str = NETWORK
) -> list[Uplink]:
    """The data.json array: one Uplink per ``sensor.id``, readings at each record's
    ``timestamp`` (UTC), the position from ``location``. A record that cannot be used is listed in
    ``invalid`` with its index in the array."""
    doc = load_json(payload, max_bytes)
    if not isinstance(doc, list):
        raise DecodeError("invalid_format", "data.json must be a JSON array")
    uplinks: dict[str, Uplink] = {}
    orphans: list[tuple[int, str, str]] = []
    for i, record in enumerate(doc):
        if not isinstance(record, dict):
            orphans.append((i, "invalid_reading", "a record must be an object"))
            continue
        sensor = record.get("sensor")
        sensor_id = sensor.get("id") if isinstance(sensor, dict) else None
        if isinstance(sensor_id, bool) or not isinstance(sensor_id, int | str) or not sensor_id:
            orphans.append((i, "invalid_reading", "the record has no sensor.id"))
            continue
        key = str(sensor_id)
        uplink = uplinks.setdefault(key, Uplink(network, key, []))
        values = record.get("sensordatavalues")
        if not isinstance(values, list):
            uplink.invalid.append((i, "invalid_reading", "sensordatavalues must be an array"))
            continue
        loc = record.get("location")
        if uplink.location is None and isinstance(loc, dict):
            uplink.location = _lat_lon(loc.get("latitude"), loc.get("longitude"))
        pairs = [
            (v.get("value_type"), v.get("value")) if isinstance(v, dict) else (None, None)
            for v in values
        ]
        _archive_values(uplink, i, record.get("timestamp"), pairs)
    if orphans:
        if not uplinks:
            raise DecodeError("invalid_format", "no record has a sensor.id")
        next(iter(uplinks.values())).invalid.extend(orphans)
    return list(uplinks.values())


def _archive_values(uplink: Uplink, index: int, raw_time: Any, pairs: Any) -> None:
    """Readings of one archive row / data.json record; problems go to ``invalid`` under
    ``index``."""
    try:
        time = _utc(raw_time, "timestamp")
    except ValueError as exc:
        uplink.invalid.append((index, "invalid_time", str(exc)))
        return
    for name, raw in pairs:
        if not isinstance(name, str):
            uplink.invalid.append((index, "invalid_reading", "a value has no value_type"))
            continue
        target = ARCHIVE_VALUE_TYPES.get(name)
        if target is None:
            if name not in ARCHIVE_IGNORED and raw not in (None, ""):
                uplink.invalid.append((index, "unknown_quantity", f"{name!r} maps to no quantity"))
            continue
        if raw is None or raw == "":
            continue
        quantity, factor = target
        try:
            value = _number_text(raw, name) * factor
        except ValueError as exc:
            uplink.invalid.append((index, "invalid_reading", str(exc)))
            continue
        uplink.readings.append(Reading(quantity, time, value))
