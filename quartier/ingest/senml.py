"""SenML JSON (RFC 8428): a pack of records with base fields (``bn``, ``bt``, ``bu``, ``bv``,
``bver``) that later records inherit. Each record is resolved (name = ``bn`` + ``n``, time = ``bt``
+ ``t``, unit = ``u`` or ``bu``, value = ``bv`` + ``v``) and its name and unit are mapped to a
quantity through the tables below (documented in ``docs/decoders.md``).

Times below 2**28 are relative to ``now`` (RFC 8428 §4.5.3), which the caller passes in.
Records with the units ``lat`` and ``lon`` give the device position instead of readings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from quartier.errors import DecodeError
from quartier.ingest.fields import load_json, number, position
from quartier.ingest.model import Position, Reading, Uplink

#: the SenML version this decoder understands (RFC 8428)
SENML_VERSION = 10
RELATIVE_LIMIT = 2**28

#: last segment of the resolved name after ``:`` or ``/`` (lower case, ``.`` and ``-`` as ``_``)
#: → quantity. Only whole segments match: ``soil_temperature`` is not ``temperature``.
NAMES: Mapping[str, str] = {
    **dict.fromkeys(("pm1", "pm1_0"), "pm1"),
    **dict.fromkeys(("pm25", "pm2_5"), "pm25"),
    **dict.fromkeys(("pm4", "pm4_0"), "pm4"),
    **dict.fromkeys(("pm10", "pm10_0"), "pm10"),
    "no2": "no2",
    **dict.fromkeys(("noise", "noise_laeq", "laeq", "sound_level"), "noise_laeq"),
    **dict.fromkeys(("temperature", "temp", "air_temperature"), "temperature"),
    **dict.fromkeys(("humidity", "hum", "rh", "relative_humidity"), "humidity"),
    **dict.fromkeys(
        ("pressure", "air_pressure", "barometric_pressure", "atmospheric_pressure"), "pressure"
    ),
    **dict.fromkeys(("co2", "carbon_dioxide"), "co2"),
    **dict.fromkeys(("traffic_count", "vehicle_count", "vehicles"), "traffic_count"),
    **dict.fromkeys(("parking_occupied", "occupied", "occupancy"), "parking_occupied"),
    **dict.fromkeys(("battery", "battery_level"), "battery"),
}

#: OMA LwM2M / IPSO objects, for names like ``3303/0/5700`` (object/instance/sensor value)
IPSO_OBJECTS: Mapping[int, str] = {
    3303: "temperature",
    3304: "humidity",
    3315: "pressure",
    3324: "noise_laeq",
}

_UG = {"ug/m3": (1.0, 0.0), "µg/m3": (1.0, 0.0)}

#: quantity → accepted SenML units → (factor, offset) to the catalogue unit. A record without a
#: unit is taken to be in the catalogue unit.
UNITS: Mapping[str, Mapping[str, tuple[float, float]]] = {
    "pm1": _UG,
    "pm25": _UG,
    "pm4": _UG,
    "pm10": _UG,
    "no2": _UG,
    "noise_laeq": {"dB": (1.0, 0.0), "dBA": (1.0, 0.0), "dB(A)": (1.0, 0.0)},
    "temperature": {"Cel": (1.0, 0.0), "K": (1.0, -273.15)},
    "humidity": {"%RH": (1.0, 0.0), "%": (1.0, 0.0)},
    "pressure": {"hPa": (1.0, 0.0), "Pa": (0.01, 0.0), "kPa": (10.0, 0.0)},
    "co2": {"ppm": (1.0, 0.0)},
    "traffic_count": {"count": (1.0, 0.0)},
    "parking_occupied": {"/": (1.0, 0.0), "count": (1.0, 0.0)},
    "battery": {"%": (1.0, 0.0), "%EL": (1.0, 0.0)},
}

#: quantities a SenML boolean (``vb``) may carry, as 1 / 0
BOOLEAN_QUANTITIES = frozenset({"parking_occupied"})

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-:./_]*$")
_IPSO = re.compile(r"(?:^|/)(\d{4,5})/\d+/5700$")
_VALUE_FIELDS = ("v", "vs", "vb", "vd")
_REGULAR_FIELDS = frozenset({"n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"})
_BASE_FIELDS = frozenset({"bn", "bt", "bu", "bv", "bs", "bver"})
_KNOWN_FIELDS = _REGULAR_FIELDS | _BASE_FIELDS


def quantity_for_name(name: str) -> str | None:
    """The quantity a resolved SenML name stands for, or ``None``."""
    ipso = _IPSO.search(name)
    if ipso is not None:
        return IPSO_OBJECTS.get(int(ipso[1]))
    tail = re.split(r"[:/]", name)[-1].lower()
    return NAMES.get(re.sub(r"[.-]", "_", tail))


class _Bases:
    def __init__(self) -> None:
        self.name = ""
        self.time = 0.0
        self.unit: str | None = None
        self.value: float | None = None

    def update(self, record: dict[str, Any]) -> None:
        if "bver" in record:
            version = record["bver"]
            if isinstance(version, bool) or not isinstance(version, int):
                raise DecodeError("invalid_format", "bver must be an integer")
            if version > SENML_VERSION:
                raise DecodeError(
                    "unsupported_version", f"SenML version {version}, at most {SENML_VERSION}"
                )
        try:
            if "bn" in record:
                self.name = _text(record["bn"], "bn")
            if "bt" in record:
                self.time = number(record["bt"], "bt")
            if "bu" in record:
                self.unit = _text(record["bu"], "bu")
            if "bv" in record:
                self.value = number(record["bv"], "bv")
            if "bs" in record:
                number(record["bs"], "bs")
        except ValueError as exc:
            raise DecodeError("invalid_format", f"base field: {exc}") from None


def decode_senml(
    network: str, device: str, payload: bytes, *, max_bytes: int, now: datetime
) -> Uplink:
    """A SenML JSON pack (``application/senml+json``) from one device. ``now`` (timezone-aware)
    resolves relative times."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    pack = load_json(payload, max_bytes)
    if not isinstance(pack, list) or not pack:
        raise DecodeError("invalid_format", "a SenML pack must be a non-empty JSON array")
    bases = _Bases()
    uplink = Uplink(network, device, [])
    lat: tuple[int, float] | None = None
    lon: tuple[int, float] | None = None
    for i, record in enumerate(pack):
        if not isinstance(record, dict):
            uplink.invalid.append((i, "invalid_reading", "a SenML record must be an object"))
            continue
        must_understand = sorted(k for k in record if k.endswith("_") and k not in _KNOWN_FIELDS)
        if must_understand:
            raise DecodeError(
                "unsupported_field", f"record {i} has must-understand fields {must_understand}"
            )
        bases.update(record)
        if not _REGULAR_FIELDS & record.keys():
            if not _BASE_FIELDS & record.keys():
                uplink.invalid.append((i, "no_value", "the record is empty"))
            continue  # a record of base fields only
        try:
            result = _resolve(record, bases, now)
        except _Invalid as exc:
            uplink.invalid.append((i, exc.reason, exc.detail))
            continue
        if isinstance(result, Reading):
            uplink.readings.append(result)
        elif result[0] == "lat":
            lat = (i, result[1])
        else:
            lon = (i, result[1])
    if lat is not None or lon is not None:
        uplink.location = _position(uplink, lat, lon)
    return uplink


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _text(raw: Any, what: str) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"{what} must be a string")
    return raw


def _resolve(record: dict[str, Any], bases: _Bases, now: datetime) -> Reading | tuple[str, float]:
    """A reading, or ("lat" | "lon", degrees) for a position record."""
    try:
        name = bases.name + _text(record.get("n", ""), "n")
        unit = _text(record["u"], "u") if "u" in record else bases.unit
    except ValueError as exc:
        raise _Invalid("invalid_reading", str(exc)) from None
    if not _NAME.match(name):
        raise _Invalid("invalid_name", f"resolved name {name!r} is not a valid SenML name")
    present = [k for k in _VALUE_FIELDS if k in record]
    if len(present) > 1:
        raise _Invalid("invalid_reading", f"{name}: more than one value field {present}")

    if unit in ("lat", "lon") and present == ["v"]:
        try:
            return unit, _numeric_value(record, bases, name)
        except ValueError as exc:
            raise _Invalid("invalid_location", str(exc)) from None

    quantity = quantity_for_name(name)
    if quantity is None:
        raise _Invalid("unknown_quantity", f"SenML name {name!r} maps to no quantity")
    time = _time(record, bases, now, name)

    if present == ["v"]:
        try:
            value = _numeric_value(record, bases, name)
        except ValueError as exc:
            raise _Invalid("invalid_reading", str(exc)) from None
    elif present == ["vb"] and quantity in BOOLEAN_QUANTITIES:
        if not isinstance(record["vb"], bool):
            raise _Invalid("invalid_reading", f"{name}: vb must be true or false")
        value = 1.0 if record["vb"] else 0.0
    elif present:
        kind = {"vs": "string", "vb": "boolean", "vd": "data"}[present[0]]
        raise _Invalid("not_numeric", f"{name}: a {kind} value ({present[0]}) is not a number")
    else:
        what = "only a sum (s)" if "s" in record else "no value"
        raise _Invalid("no_value", f"{name}: the record has {what}")

    if present == ["vb"]:
        unit = record.get("u")  # an inherited base unit does not apply to a boolean
    if unit is not None:
        conversion = UNITS.get(quantity, {}).get(unit)
        if conversion is None:
            accepted = ", ".join(UNITS.get(quantity, {})) or "none"
            raise _Invalid(
                "unsupported_unit", f"{name}: unit {unit!r} for {quantity} (accepted: {accepted})"
            )
        factor, offset = conversion
        value = value * factor + offset
    return Reading(quantity, time, value)


def _numeric_value(record: dict[str, Any], bases: _Bases, name: str) -> float:
    value = number(record["v"], f"{name} value") + (bases.value or 0.0)
    if not math.isfinite(value):
        raise ValueError(f"{name} value is not finite")
    return value


def _time(record: dict[str, Any], bases: _Bases, now: datetime, name: str) -> datetime:
    try:
        t = bases.time + (number(record["t"], "t") if "t" in record else 0.0)
        if t < RELATIVE_LIMIT:
            return now.astimezone(UTC) + timedelta(seconds=t)
        return datetime.fromtimestamp(t, tz=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise _Invalid("invalid_time", f"{name}: {exc}") from None


def _position(
    uplink: Uplink, lat: tuple[int, float] | None, lon: tuple[int, float] | None
) -> Position | None:
    if lat is None or lon is None:
        i = (lat or lon or (0, 0.0))[0]
        uplink.invalid.append((i, "invalid_location", "a position needs both lat and lon"))
        return None
    try:
        return position({"lat": lat[1], "lon": lon[1]})
    except ValueError as exc:
        uplink.invalid.append((lat[0], "invalid_location", str(exc)))
        return None
