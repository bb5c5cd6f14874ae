"""The Things Stack v3 uplinks and the device codecs, checked against real uplinks and the values
ThingsBoard decoded from them (``tests/data/ttn_uplinks/thingsboard_data_converters``, see
``tests/data/SOURCES.md``)."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import math
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from quartier.errors import DecodeError
from quartier.ingest.codecs import REGISTRY, codec_for_model
from quartier.ingest.model import Position
from quartier.ingest.ttn import decode_ttn, parse_ttn_topic

SAMPLES = Path(__file__).parent / "data" / "ttn_uplinks" / "thingsboard_data_converters"
MAX = 64 * 1024

#: file name prefix (vendor_model) → codec
CODEC_OF_MODEL = {
    "Decentlab_DL-PM": "decentlab-dl-pm",
    "Decentlab_DL-LP8P": "decentlab-dl-lp8p",
    "Decentlab_DL-SHT35-001": "decentlab-dl-sht35",
    "Milesight_AM103": "milesight-am103",
    "Bosch_Parking_Lot_Sensor": "bosch-parking-lot-sensor",
}
PAYLOADS_WITH_CODEC = [
    "Bosch_Parking_Lot_Sensor__payload.json",
    "Bosch_Parking_Lot_Sensor__payload_1.json",
    "Bosch_Parking_Lot_Sensor__payload_2.json",
    "Decentlab_DL-LP8P__payload.json",
    "Decentlab_DL-LP8P__payload_01.json",
    "Decentlab_DL-LP8P__payload_02.json",
    "Decentlab_DL-PM__payload.json",
    "Decentlab_DL-PM__payload_01.json",
    "Decentlab_DL-PM__payload_02.json",
    "Decentlab_DL-SHT35-001__payload.json",
    "Decentlab_DL-SHT35-001__payload_01.json",
    "Milesight_AM103__payload.json",
    "Milesight_AM103__payload_1.json",
]
#: ThingsBoard telemetry keys that describe the radio, not the device's measurement
NETWORK_KEYS = {
    "lora_frame_counter",
    "lora_frame_port",
    "lora_frequency",
    "lora_spreading_factor",
    "lora_rssi",
    "lora_snr",
}


def _sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def _doc(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_sample(name))
    return doc


def _expected(payload_name: str) -> list[dict[str, Any]]:
    result = json.loads(_sample(payload_name.replace("__payload", "__result")))
    telemetry: list[dict[str, Any]] = result["telemetry"]
    return telemetry


def _numeric(values: dict[str, Any]) -> dict[str, float]:
    """The telemetry values a codec must produce: numbers and booleans, radio keys left out."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and k not in NETWORK_KEYS
    }


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _config(name: str) -> dict[str, str]:
    doc = _doc(name)
    return {doc["end_device_ids"]["device_id"]: CODEC_OF_MODEL[name.split("__")[0]]}


def _encode(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


def test_every_sample_payload_with_a_codec_is_checked() -> None:
    on_disk = sorted(
        p.name for p in SAMPLES.glob("*payload*.json") if p.name.split("__")[0] in CODEC_OF_MODEL
    )
    assert on_disk == sorted(PAYLOADS_WITH_CODEC)


@pytest.mark.parametrize("name", PAYLOADS_WITH_CODEC)
def test_codec_values_equal_thingsboard_results(name: str) -> None:
    doc = _doc(name)
    up = doc["uplink_message"]
    codec = REGISTRY[CODEC_OF_MODEL[name.split("__")[0]]]
    data = base64.b64decode(up["frm_payload"])
    decoded = codec.decode(up["f_port"], data)
    telemetry = _expected(name)
    expected = _numeric(telemetry[0]["values"])
    assert decoded.keys() == expected.keys()
    for field, value in expected.items():
        assert _close(decoded[field], value), (field, decoded[field], value)
    history = codec.history(up["f_port"], data) if codec.history else []
    assert len(history) == len(telemetry) - 1
    for (when, values), entry in zip(history, telemetry[1:], strict=True):
        assert when == datetime.fromtimestamp(entry["ts"] / 1000, tz=UTC)
        assert values.keys() == _numeric(entry["values"]).keys()
        for field, value in _numeric(entry["values"]).items():
            assert _close(values[field], value)


@pytest.mark.parametrize("name", PAYLOADS_WITH_CODEC)
def test_decode_ttn_readings_match_results(name: str) -> None:
    doc = _doc(name)
    codec = REGISTRY[CODEC_OF_MODEL[name.split("__")[0]]]
    uplink = decode_ttn("ttn", _sample(name), max_bytes=MAX, codecs=_config(name))
    assert uplink.network == "ttn"
    assert uplink.device == doc["end_device_ids"]["device_id"]
    assert uplink.invalid == []

    telemetry = _expected(name)
    expected: list[tuple[str, datetime, float]] = []
    received = datetime.fromisoformat(doc["uplink_message"]["received_at"])
    for n, entry in enumerate(telemetry):
        when = received if n == 0 else datetime.fromtimestamp(entry["ts"] / 1000, tz=UTC)
        if n == 0:  # ThingsBoard stamps with received_at of the message, ours of uplink_message
            assert abs(when.timestamp() * 1000 - entry["ts"]) < 1000
        for field, value in _numeric(entry["values"]).items():
            if field in codec.quantities:
                quantity, factor = codec.quantities[field]
                expected.append((quantity, when, value * factor))
    got = [(r.quantity, r.time, r.value) for r in uplink.readings]
    assert [(q, t) for q, t, _ in got] == [(q, t) for q, t, _ in expected]
    for (_, _, value), (_, _, want) in zip(got, expected, strict=True):
        assert _close(value, want)

    up = doc["uplink_message"]
    gateway = up["rx_metadata"][0]
    for r in uplink.readings:
        assert r.parameters == {
            "f_cnt": up["f_cnt"],
            "f_port": up["f_port"],
            "rssi": gateway["rssi"],
            "snr": gateway["snr"],
            "received_at": up["received_at"],
        }  # no gateway id, no gateway position (docs/privacy.md)
    radio = telemetry[0]["values"]
    if "lora_rssi" in radio:  # the Decentlab results carry ThingsBoard's view of the radio
        assert (gateway["rssi"], gateway["snr"]) == (radio["lora_rssi"], radio["lora_snr"])
        assert (up["f_cnt"], up["f_port"]) == (
            radio["lora_frame_counter"],
            radio["lora_frame_port"],
        )


def test_decentlab_pressure_is_stored_in_hectopascal() -> None:
    uplink = decode_ttn(
        "ttn",
        _sample("Decentlab_DL-PM__payload.json"),
        max_bytes=MAX,
        codecs=_config("Decentlab_DL-PM__payload.json"),
    )
    pressure = [r.value for r in uplink.readings if r.quantity == "pressure"]
    assert pressure == [pytest.approx(968.0)]
    assert {r.quantity for r in uplink.readings} == {
        "pm1",
        "pm25",
        "pm4",
        "pm10",
        "temperature",
        "humidity",
        "pressure",
    }


def test_battery_only_frame_gives_no_readings() -> None:
    uplink = decode_ttn(
        "ttn",
        _sample("Decentlab_DL-PM__payload_02.json"),
        max_bytes=MAX,
        codecs=_config("Decentlab_DL-PM__payload_02.json"),
    )
    assert uplink.readings == [] and uplink.invalid == []


def test_gateway_location_is_never_used_for_a_device_without_one() -> None:
    """Privacy (docs/privacy.md): a gateway is often someone's home; a device without its own
    position gets none (this sample's gateway has one, at 52.7186, -4.0526)."""
    doc = _doc("Decentlab_DL-SHT35-001__payload.json")
    assert any("location" in g for g in doc["uplink_message"]["rx_metadata"])
    uplink = decode_ttn(
        "ttn",
        _sample("Decentlab_DL-SHT35-001__payload.json"),
        max_bytes=MAX,
        codecs=_config("Decentlab_DL-SHT35-001__payload.json"),
    )
    assert uplink.location is None and not uplink.location_from_gateway
    assert uplink.readings
    assert all(
        "gateway_id" not in (r.parameters or {}) and "location_source" not in (r.parameters or {})
        for r in uplink.readings
    )


def test_device_location_wins_over_gateway_location() -> None:
    doc = _doc("Decentlab_DL-SHT35-001__payload.json")
    doc["uplink_message"]["locations"] = {
        "frm-payload": {"latitude": 1.0, "longitude": 2.0, "source": "SOURCE_GPS"},
        "user": {"latitude": 50.94, "longitude": 6.96, "source": "SOURCE_REGISTRY"},
    }
    uplink = decode_ttn(
        "ttn", _encode(doc), max_bytes=MAX, codecs=_config("Decentlab_DL-SHT35-001__payload.json")
    )
    assert uplink.location == Position(50.94, 6.96)
    assert all("location_source" not in (r.parameters or {}) for r in uplink.readings)


def test_strongest_gateway_is_kept() -> None:
    doc = _doc("Milesight_AM103__payload.json")
    weak = copy.deepcopy(doc["uplink_message"]["rx_metadata"][0])
    weak.update(rssi=-110, snr=-3.5, gateway_ids={"gateway_id": "far-away"})
    strong = copy.deepcopy(weak)
    strong.update(rssi=-20, snr=9.0, gateway_ids={"gateway_id": "next-door"})
    doc["uplink_message"]["rx_metadata"] = [weak, strong]
    uplink = decode_ttn(
        "ttn", _encode(doc), max_bytes=MAX, codecs=_config("Milesight_AM103__payload.json")
    )
    params = uplink.readings[0].parameters
    assert params is not None
    assert (params["rssi"], params["snr"]) == (-20, 9.0)  # the strongest's radio, not its id
    assert "gateway_id" not in params


def test_milesight_history_record_has_its_own_time() -> None:
    uplink = decode_ttn(
        "ttn",
        _sample("Milesight_AM103__payload_1.json"),
        max_bytes=MAX,
        codecs=_config("Milesight_AM103__payload_1.json"),
    )
    old = [r for r in uplink.readings if r.time == datetime(2023, 10, 31, 15, 17, 12, tzinfo=UTC)]
    assert [(r.quantity, r.value) for r in old] == [
        ("temperature", 22.3),
        ("humidity", 55.0),
        ("co2", 400.0),
    ]


def test_codec_chosen_by_version_ids() -> None:
    doc = _doc("Milesight_AM103__payload.json")
    doc["uplink_message"]["version_ids"] = {"brand_id": "milesight-iot", "model_id": "am103"}
    uplink = decode_ttn("ttn", _encode(doc), max_bytes=MAX)
    assert [r.quantity for r in uplink.readings] == ["battery", "temperature", "humidity", "co2"]
    assert codec_for_model("decentlab", "dl-pm") is REGISTRY["decentlab-dl-pm"]
    assert codec_for_model("acme", "x1") is None


def test_configured_codec_wins_over_version_ids() -> None:
    doc = _doc("Bosch_Parking_Lot_Sensor__payload_1.json")
    doc["uplink_message"]["version_ids"] = {"brand_id": "milesight-iot", "model_id": "am103"}
    uplink = decode_ttn(
        "ttn",
        _encode(doc),
        max_bytes=MAX,
        codecs={"eui-1000000000000001": "bosch-parking-lot-sensor"},
    )
    assert [(r.quantity, r.value) for r in uplink.readings] == [("parking_occupied", 1.0)]


@pytest.mark.parametrize(
    "name",
    [
        "Ezurio_RS26x__tts_event_as.up.data.forward.json",
        "Ezurio_RS26x__uplink_with_decoded_payload.json",
    ],
)
def test_decoded_payload_through_the_generic_map(name: str) -> None:
    uplink = decode_ttn("ttn", _sample(name), max_bytes=MAX)
    assert uplink.device == "rs261-erik-internal"
    assert [(r.quantity, r.value) for r in uplink.readings] == [("temperature", 21.83)]
    assert uplink.readings[0].time == datetime(2025, 11, 7, 8, 52, 14, 536109, tzinfo=UTC)
    assert uplink.readings[0].parameters == {
        "f_cnt": 25,
        "f_port": 1,
        "rssi": -69,
        "snr": 8.25,
        "received_at": "2025-11-07T08:52:14.536109379Z",
    }
    assert uplink.location is None and uplink.invalid == []


def test_event_stream_result_wrapper() -> None:
    event = _doc("Ezurio_RS26x__tts_event_as.up.data.forward.json")
    uplink = decode_ttn("ttn", _encode({"result": event}), max_bytes=MAX)
    assert [r.quantity for r in uplink.readings] == ["temperature"]


def test_decoded_payload_through_a_codec_map_with_nested_values() -> None:
    doc = _doc("Decentlab_DL-PM__payload.json")
    up = doc["uplink_message"]
    up["version_ids"] = {"brand_id": "decentlab", "model_id": "dl-pm"}
    up["decoded_payload"] = {  # the shape of Decentlab's decoder in the Device Repository
        "device_id": 6992,
        "protocol_version": 2,
        "battery_voltage": {"displayName": "Battery voltage", "unit": "V", "value": 3.109},
        "pm2_5_mass_concentration": {"displayName": "PM2.5", "unit": "µg⋅m⁻³", "value": 3.9},
        "barometric_pressure": {"displayName": "Pressure", "unit": "Pa", "value": 96800},
    }
    uplink = decode_ttn("ttn", _encode(doc), max_bytes=MAX)
    assert [(r.quantity, r.value) for r in uplink.readings] == [
        ("pm25", 3.9),
        ("pressure", pytest.approx(968.0)),
    ]


def test_codec_falls_back_to_frm_payload_when_decoded_payload_has_other_names() -> None:
    doc = _doc("Milesight_AM103__payload.json")
    doc["uplink_message"]["decoded_payload"] = {"something": "else"}
    uplink = decode_ttn(
        "ttn", _encode(doc), max_bytes=MAX, codecs=_config("Milesight_AM103__payload.json")
    )
    assert [r.quantity for r in uplink.readings] == ["battery", "temperature", "humidity", "co2"]


def test_decoded_payload_field_with_unusable_value_is_listed() -> None:
    doc = _doc("Ezurio_RS26x__uplink_with_decoded_payload.json")
    doc["uplink_message"]["decoded_payload"] = {
        "Temperature": "warm",
        "Humidity": 40,
        "occupied": True,
    }
    uplink = decode_ttn("ttn", _encode(doc), max_bytes=MAX)
    assert [(r.quantity, r.value) for r in uplink.readings] == [
        ("humidity", 40.0),
        ("parking_occupied", 1.0),
    ]
    assert [(i, reason) for i, reason, _ in uplink.invalid] == [(0, "invalid_reading")]


def test_parse_ttn_topic() -> None:
    t = parse_ttn_topic("v3/city-air@ttn/devices/eui-70b3d57ba0000bce/up")
    assert (t.application_id, t.tenant_id, t.device_id, t.kind) == (
        "city-air",
        "ttn",
        "eui-70b3d57ba0000bce",
        "up",
    )
    assert parse_ttn_topic("v3/city-air/devices/dev-1/up").tenant_id is None
    with pytest.raises(DecodeError) as err:
        parse_ttn_topic("quartier/v1/sim/dev/up")
    assert err.value.reason == "invalid_topic"


# --- malformed input: always DecodeError with a clear reason --------------------------------


def _mutated(name: str, **changes: Any) -> bytes:
    doc = _doc(name)
    doc["uplink_message"].update(changes)
    return _encode(doc)


def _reason(payload: bytes, **kwargs: Any) -> str:
    with pytest.raises(DecodeError) as err:
        decode_ttn("ttn", payload, max_bytes=kwargs.pop("max_bytes", MAX), **kwargs)
    assert err.value.detail
    return err.value.reason


def test_bad_base64() -> None:
    name = "Decentlab_DL-PM__payload.json"
    assert _reason(_mutated(name, frm_payload="AhtQ!!=="), codecs=_config(name)) == "invalid_base64"
    assert _reason(_mutated(name, frm_payload=42), codecs=_config(name)) == "invalid_base64"


@pytest.mark.parametrize("name", PAYLOADS_WITH_CODEC)
def test_truncated_payload_for_a_codec(name: str) -> None:
    data = base64.b64decode(_doc(name)["uplink_message"]["frm_payload"])
    # a Bosch heartbeat without its temperature byte is still valid: cut those to nothing
    cut = 0 if name.startswith("Bosch") else len(data) - 1
    short = base64.b64encode(data[:cut]).decode()
    assert _reason(_mutated(name, frm_payload=short), codecs=_config(name)) == "invalid_payload"


def test_wrong_codec_for_the_payload() -> None:
    name = "Decentlab_DL-PM__payload.json"
    device = _doc(name)["end_device_ids"]["device_id"]
    assert _reason(_sample(name), codecs={device: "decentlab-dl-sht35"}) == "invalid_payload"
    assert _reason(_sample(name), codecs={device: "milesight-am103"}) == "invalid_payload"


def test_bosch_unknown_port() -> None:
    name = "Bosch_Parking_Lot_Sensor__payload_1.json"
    assert _reason(_mutated(name, f_port=9), codecs=_config(name)) == "invalid_payload"


def test_unknown_model() -> None:
    assert _reason(_sample("Decentlab_DL-PM__payload.json")) == "unknown_model"
    doc = _mutated("Milesight_AM103__payload.json", version_ids={"brand_id": "a", "model_id": "b"})
    assert _reason(doc) == "unknown_model"


def test_unknown_codec_name_in_configuration() -> None:
    assert _reason(_sample("Decentlab_DL-PM__payload.json"), codecs={"03022": "nope"}) == (
        "unknown_codec"
    )


def test_missing_uplink_message() -> None:
    doc = _doc("Decentlab_DL-PM__payload.json")
    del doc["uplink_message"]
    assert _reason(_encode(doc), codecs={"03022": "decentlab-dl-pm"}) == "invalid_format"


def test_event_that_is_not_an_uplink() -> None:
    event = {
        "name": "as.up.join.forward",
        "data": {"@type": "type.googleapis.com/ttn.lorawan.v3.ApplicationJoinAccept"},
    }
    assert _reason(_encode(event)) == "invalid_format"


def test_missing_or_bad_device_id() -> None:
    doc = _doc("Decentlab_DL-PM__payload.json")
    doc["end_device_ids"]["device_id"] = "a/b"
    assert _reason(_encode(doc)) == "invalid_device"
    del doc["end_device_ids"]["device_id"]
    assert _reason(_encode(doc)) == "invalid_format"


def test_topic_device_must_match_body() -> None:
    name = "Decentlab_DL-PM__payload.json"
    assert _reason(_sample(name), codecs=_config(name), expected_device="other") == (
        "device_mismatch"
    )


def test_port_zero_and_missing_payload() -> None:
    name = "Decentlab_DL-PM__payload.json"
    doc = _doc(name)
    del doc["uplink_message"]["f_port"]
    assert _reason(_encode(doc), codecs=_config(name)) == "no_payload"
    doc = _doc(name)
    del doc["uplink_message"]["frm_payload"]
    assert _reason(_encode(doc), codecs=_config(name)) == "no_payload"


def test_bad_received_at() -> None:
    name = "Decentlab_DL-PM__payload.json"
    assert _reason(_mutated(name, received_at="yesterday"), codecs=_config(name)) == (
        "invalid_time"
    )


def test_generic_map_with_nothing_to_store() -> None:
    doc = _mutated(
        "Ezurio_RS26x__uplink_with_decoded_payload.json", decoded_payload={"BatV": 3.6, "x": "y"}
    )
    assert _reason(doc) == "unknown_quantity"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"not json", "invalid_json"), (b"[1, 2]", "invalid_format"), (b"{}", "invalid_format")],
)
def test_not_an_uplink_at_all(payload: bytes, reason: str) -> None:
    assert _reason(payload) == reason


def test_too_large() -> None:
    assert _reason(_sample("Decentlab_DL-PM__payload.json"), max_bytes=100) == "too_large"


@pytest.mark.parametrize("name", PAYLOADS_WITH_CODEC)
def test_garbage_frames_raise_only_decode_error(name: str) -> None:
    """Every prefix of the real frame, and random frames, give an Uplink or a DecodeError."""
    doc = _doc(name)
    data = base64.b64decode(doc["uplink_message"]["frm_payload"])
    rng = random.Random(name)
    frames = [data[:n] for n in range(len(data) + 1)]
    frames += [rng.randbytes(rng.randint(0, 40)) for _ in range(200)]
    config = _config(name)
    outcomes = set()
    for frame in frames:
        doc["uplink_message"]["frm_payload"] = base64.b64encode(frame).decode()
        try:
            decode_ttn("ttn", _encode(doc), max_bytes=MAX, codecs=config)
            outcomes.add("uplink")
        except DecodeError as exc:
            outcomes.add(exc.reason)
    assert "invalid_payload" in outcomes and outcomes <= {"uplink", "invalid_payload"}


def test_truncated_json_raises_only_decode_error() -> None:
    raw = _sample("Ezurio_RS26x__tts_event_as.up.data.forward.json")
    for n in range(0, len(raw), 7):
        with pytest.raises(DecodeError):
            decode_ttn("ttn", raw[:n], max_bytes=MAX)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


ODD_VALUES: list[Any] = [None, 0, -1, 1.5, True, "", "x", [], {}, [1], {"a": 1}, 2**63 - 1]


@pytest.mark.parametrize(
    "name", ["Ezurio_RS26x__tts_event_as.up.data.forward.json", "Milesight_AM103__payload_1.json"]
)
def test_any_field_replaced_raises_only_decode_error(name: str) -> None:
    """Replace every field, at any depth, by values of other types: an Uplink or a DecodeError."""
    original = _doc(name)
    config = {"eui-1000000000000001": "milesight-am103"}
    for path in _paths(original):
        for odd in ODD_VALUES:
            doc = copy.deepcopy(original)
            node = doc
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = odd
            with contextlib.suppress(DecodeError):
                decode_ttn("ttn", _encode(doc), max_bytes=MAX, codecs=config)
