"""The Things Stack (v3) application uplinks: the JSON on MQTT topic
``v3/{application}@{tenant}/devices/{device}/up``, the same body a webhook receives, or the event
envelope (``{"name": "as.up.data.forward", "data": {"@type": "...ApplicationUp", ...}}``) of the
event stream.

Values come from ``uplink_message.decoded_payload`` when the network decoded the frame, else from
``frm_payload`` (base64) through a codec of ``quartier.ingest.codecs``, chosen by configuration
(device id → codec name) or by the device's ``version_ids`` (LoRaWAN Device Repository brand and
model). Every reading carries the radio context in ``parameters``. See ``docs/decoders.md``.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from quartier.errors import DecodeError
from quartier.ingest.codecs import REGISTRY, Codec, FieldMap, codec_for_model
from quartier.ingest.fields import load_json, number, parse_time, position
from quartier.ingest.model import Position, Reading, Uplink

APPLICATION_UP = "ttn.lorawan.v3.ApplicationUp"

#: field names of a ``decoded_payload`` (lower case, runs of other characters as ``_``) mapped to
#: quantities when no codec is known for the device. Units are assumed to be the catalogue's:
#: a pressure in Pa under one of these names is rejected later as out of range, not stored wrong.
GENERIC_FIELDS: FieldMap = {
    **dict.fromkeys(
        ("temperature", "temp", "air_temperature", "ambient_temperature", "temperature_c"),
        ("temperature", 1.0),
    ),
    **dict.fromkeys(
        ("humidity", "hum", "rh", "relative_humidity", "air_humidity", "humidity_rh"),
        ("humidity", 1.0),
    ),
    **dict.fromkeys(
        ("pressure", "air_pressure", "barometric_pressure", "pressure_hpa"), ("pressure", 1.0)
    ),
    **dict.fromkeys(("co2", "co2_ppm", "co2_concentration", "carbon_dioxide"), ("co2", 1.0)),
    **dict.fromkeys(("pm1", "pm1_0", "pm1_0_mass_concentration"), ("pm1", 1.0)),
    **dict.fromkeys(("pm25", "pm2_5", "pm2_5_mass_concentration"), ("pm25", 1.0)),
    **dict.fromkeys(("pm4", "pm4_0", "pm4_mass_concentration"), ("pm4", 1.0)),
    **dict.fromkeys(("pm10", "pm10_0", "pm10_mass_concentration"), ("pm10", 1.0)),
    **dict.fromkeys(("no2",), ("no2", 1.0)),
    **dict.fromkeys(("noise", "laeq", "noise_laeq", "sound_level"), ("noise_laeq", 1.0)),
    **dict.fromkeys(("battery_level", "battery_percent", "battery_percentage"), ("battery", 1.0)),
    **dict.fromkeys(("occupied", "parking_occupied", "occupancy"), ("parking_occupied", 1.0)),
    **dict.fromkeys(("traffic_count", "vehicle_count", "vehicles"), ("traffic_count", 1.0)),
}

_DEVICE = re.compile(r"^(?!\.+$)[A-Za-z0-9_.-]{1,64}$")  # not only dots: no "." or ".."
_TOPIC = re.compile(
    r"^v3/(?P<app>[a-z0-9](?:-?[a-z0-9]){2,35})(?:@(?P<tenant>[a-z0-9-]{1,36}))?"
    r"/devices/(?P<device>[a-z0-9](?:-?[a-z0-9]){2,35})/(?P<kind>[a-z/.]+)$"
)


@dataclass(frozen=True, slots=True)
class TtnTopic:
    application_id: str
    tenant_id: str | None
    device_id: str
    kind: str  # "up", "join", "down/ack", "service/data", ...


def parse_ttn_topic(topic: str) -> TtnTopic:
    """Split ``v3/{application}[@{tenant}]/devices/{device}/{kind}``."""
    m = _TOPIC.match(topic)
    if m is None:
        raise DecodeError("invalid_topic", f"{topic!r} is not v3/{{app}}@{{tenant}}/devices/...")
    return TtnTopic(m["app"], m["tenant"], m["device"], m["kind"])


def decode_ttn(
    network: str,
    payload: bytes,
    *,
    max_bytes: int,
    codecs: Mapping[str, str] | None = None,
    expected_device: str | None = None,
    registry: Mapping[str, Codec] = REGISTRY,
) -> Uplink:
    """Decode one application uplink. ``codecs`` maps a device id to a codec name (it wins over
    ``version_ids``); ``expected_device`` is the device id of the topic, checked against the body.
    The Uplink's device is ``end_device_ids.device_id``."""
    doc = _application_up(load_json(payload, max_bytes))
    ids = doc.get("end_device_ids")
    device = ids.get("device_id") if isinstance(ids, dict) else None
    if not isinstance(device, str) or not device:
        raise DecodeError("invalid_format", "end_device_ids.device_id is missing")
    if not _DEVICE.match(device):
        raise DecodeError("invalid_device", f"device_id {device!r} is not a valid device key")
    if expected_device is not None and device != expected_device:
        raise DecodeError(
            "device_mismatch", f"topic names device {expected_device!r}, body {device!r}"
        )
    up = doc.get("uplink_message")
    if not isinstance(up, dict):
        raise DecodeError("invalid_format", "no uplink_message: the message is not an uplink")

    time = _uplink_time(doc, up)
    f_port = up.get("f_port", 0)  # The Things Stack leaves out fields that are zero
    f_cnt = up.get("f_cnt", 0)
    if isinstance(f_port, bool) or not isinstance(f_port, int) or not 0 <= f_port <= 255:
        raise DecodeError("invalid_format", f"f_port {f_port!r} is not 0–255")
    if isinstance(f_cnt, bool) or not isinstance(f_cnt, int):
        raise DecodeError("invalid_format", f"f_cnt {f_cnt!r} is not an integer")
    if f_port == 0:
        raise DecodeError("no_payload", "f_port 0 carries MAC commands only")

    rx_metadata = up.get("rx_metadata")
    gateways = (
        [g for g in rx_metadata if isinstance(g, dict)] if isinstance(rx_metadata, list) else []
    )
    params = _parameters(up, f_cnt, f_port, _best_gateway(gateways))
    location, from_gateway = _location(up)

    codec = _choose_codec(device, up, codecs, registry)
    uplink = Uplink(network, device, [], location, location_from_gateway=from_gateway)
    decoded = up.get("decoded_payload")
    if isinstance(decoded, dict) and decoded:
        mapping = codec.quantities if codec is not None else GENERIC_FIELDS
        fields = decoded if codec is not None else _normalized(decoded)
        if codec is None or any(k in mapping for k in fields) or "frm_payload" not in up:
            _add(uplink, fields.items(), mapping, time, params)
            if codec is None and not uplink.readings and not uplink.invalid:
                raise DecodeError(
                    "unknown_quantity",
                    f"no field of decoded_payload maps to a quantity ({', '.join(decoded)}); "
                    "configure a codec for the device",
                )
            return uplink
    if codec is None:
        model = _model(up)
        raise DecodeError(
            "unknown_model",
            f"device {device!r} ({model or 'no version_ids'}) sends no decoded_payload and has no "
            f"codec; configure one of {', '.join(sorted(registry))}",
        )
    data = _frm_payload(up)
    try:
        values = codec.decode(f_port, data)
        stored = codec.history(f_port, data) if codec.history is not None else []
    except (ValueError, IndexError, KeyError, struct.error) as exc:
        raise DecodeError("invalid_payload", f"{codec.name}: {exc}") from None
    _add(uplink, values.items(), codec.quantities, time, params)
    offset = len(values)
    for when, old in stored:  # records the device kept and sends later, with their own time
        _add(uplink, old.items(), codec.quantities, when, params, offset=offset)
        offset += len(old)
    return uplink


def _application_up(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise DecodeError("invalid_format", "payload must be a JSON object")
    doc: dict[str, Any] = raw
    result = doc.get("result")
    if isinstance(result, dict):  # the event stream's {"result": event}
        doc = result
    data = doc.get("data")
    if "uplink_message" not in doc and isinstance(data, dict):
        kind = data.get("@type", "")
        if not isinstance(kind, str) or not kind.endswith(APPLICATION_UP):
            raise DecodeError("invalid_format", f"event data is {kind!r}, not an ApplicationUp")
        return data
    return doc


def _uplink_time(doc: dict[str, Any], up: dict[str, Any]) -> datetime:
    for raw in (up.get("received_at"), doc.get("received_at")):
        if raw is not None:
            try:
                return parse_time(raw)
            except ValueError as exc:
                raise DecodeError("invalid_time", f"received_at: {exc}") from None
    raise DecodeError("invalid_format", "uplink_message.received_at is missing")


def _radio(gateway: dict[str, Any], key: str) -> float | None:
    """RSSI (falling back to the channel RSSI) or SNR as the network sent it, if a number."""
    raw = gateway.get(key, gateway.get("channel_rssi") if key == "rssi" else None)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        return None
    return raw


def _parameters(
    up: dict[str, Any], f_cnt: int, f_port: int, best: dict[str, Any] | None
) -> dict[str, Any]:
    """What every reading keeps of the radio: frame counter and port, the strongest gateway's
    RSSI and SNR, and the network's time of receipt as sent. Never a gateway's id: gateways are
    often at people's homes and the parameters are published (docs/privacy.md)."""
    params: dict[str, Any] = {"f_cnt": f_cnt, "f_port": f_port}
    if best is not None:
        for key in ("rssi", "snr"):
            value = _radio(best, key)
            if value is not None:
                params[key] = value
    received_at = up.get("received_at")
    if isinstance(received_at, str):
        params["received_at"] = received_at
    if up.get("simulated") is True:
        params["simulated"] = True
    return params


def _best_gateway(gateways: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The gateway with the strongest signal (RSSI, then SNR)."""
    if not gateways:
        return None

    def strength(g: dict[str, Any]) -> tuple[float, float]:
        return (_radio(g, "rssi") or -1e9, _radio(g, "snr") or -1e9)

    return max(gateways, key=strength)


def _lat_lon(raw: Any) -> Position | None:
    if not isinstance(raw, dict) or not ("latitude" in raw or "longitude" in raw):
        return None
    try:
        return position({"lat": raw.get("latitude", 0.0), "lon": raw.get("longitude", 0.0)})
    except ValueError:
        return None


def _location(up: dict[str, Any]) -> tuple[Position | None, bool]:
    """The device's own location (``locations``: "user" first), else none: a receiving gateway's
    position is not the device's, and is often someone's home (docs/privacy.md). The flag (a
    gateway's position) is always False now; it stays in the model for other sources."""
    locations = up.get("locations")
    if isinstance(locations, dict):
        for key in sorted(locations, key=lambda k: k != "user"):
            found = _lat_lon(locations[key])
            if found is not None:
                return found, False
    return None, False


def _model(up: dict[str, Any]) -> str | None:
    v = up.get("version_ids")
    if isinstance(v, dict) and isinstance(v.get("brand_id"), str):
        return f"{v['brand_id']}/{v.get('model_id')}"
    return None


def _choose_codec(
    device: str, up: dict[str, Any], codecs: Mapping[str, str] | None, registry: Mapping[str, Codec]
) -> Codec | None:
    name = (codecs or {}).get(device)
    if name is not None:
        if name not in registry:
            raise DecodeError(
                "unknown_codec",
                f"codec {name!r} configured for {device!r} is not one of "
                f"{', '.join(sorted(registry))}",
            )
        return registry[name]
    v = up.get("version_ids")
    if isinstance(v, dict):
        brand, model = v.get("brand_id"), v.get("model_id")
        if isinstance(brand, str) and isinstance(model, str):
            return codec_for_model(brand, model, registry)
    return None


def _frm_payload(up: dict[str, Any]) -> bytes:
    raw = up.get("frm_payload")
    if raw is None:
        raise DecodeError("no_payload", "the uplink has neither decoded_payload nor frm_payload")
    if not isinstance(raw, str):
        raise DecodeError("invalid_base64", "frm_payload must be a base64 string")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError("invalid_base64", f"frm_payload: {exc}") from None


def _normalized(fields: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        out.setdefault(re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_"), value)
    return out


def _value(raw: Any, field: str) -> float:
    if isinstance(raw, dict) and "value" in raw:  # {"value": .., "unit": ..}, e.g. Decentlab's
        raw = raw["value"]
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    return number(raw, field)


def _add(
    uplink: Uplink,
    fields: Iterable[tuple[str, Any]],
    mapping: FieldMap,
    time: datetime,
    params: dict[str, Any],
    offset: int = 0,
) -> None:
    """Append a reading for each field ``mapping`` knows; list the ones with unusable values."""
    for i, (field, raw) in enumerate(fields, start=offset):
        target = mapping.get(field)
        if target is None:
            continue
        quantity, factor = target
        try:
            value = _value(raw, field) * factor
        except ValueError as exc:
            uplink.invalid.append((i, "invalid_reading", str(exc)))
            continue
        uplink.readings.append(Reading(quantity, time, value, dict(params)))
