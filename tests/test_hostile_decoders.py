"""Hostile input for every decoder of ``quartier.ingest`` (issue #12 item 8), as properties.

Whatever arrives (random bytes, random JSON, almost valid messages with one field gone wrong):

* a decoder returns or raises ``DecodeError``, its declared rejection (the pipeline turns that
  into a reject with a reason; anything else would be a ``decoder_error`` reject and a logged
  traceback, i.e. a decoder bug);
* every reading that passes validation has a known quantity, a finite value inside the
  quantity's range and a time inside the accepted window;
* the columnar fast path and the one-by-one path store and refuse the same things on random
  batches;
* valid messages round-trip: the readings that come out are the ones that went in.

The budget is small (the whole module runs in well under a minute); set
``QUARTIER_HYPOTHESIS_PROFILE=thorough`` for a long run.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import string
import struct
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_columnar import outcome

from quartier.config import IngestSettings
from quartier.errors import DecodeError
from quartier.ingest.codecs import REGISTRY
from quartier.ingest.model import Batch, Uplink
from quartier.ingest.native import decode_native, decode_speedtest
from quartier.ingest.pipeline import Message, add_to_batch, build_batch
from quartier.ingest.quantities import QUANTITIES
from quartier.ingest.senml import decode_senml
from quartier.ingest.sensor_community import (
    PUSH_VALUE_TYPES,
    decode_sensor_community_archive_csv,
    decode_sensor_community_data_json,
    decode_sensor_community_push,
)
from quartier.ingest.ttn import decode_ttn, parse_ttn_topic
from quartier.ingest.validate import EARLIEST, validate

settings.register_profile(
    "hostile",
    max_examples=60,
    deadline=None,
    database=None,  # no example database left in the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("hostile"), max_examples=2000)
PROFILE = settings.get_profile(os.environ.get("QUARTIER_HYPOTHESIS_PROFILE", "hostile"))

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CFG = IngestSettings(max_future_seconds=600)
LATEST = NOW + timedelta(seconds=CFG.max_future_seconds)
MAX = CFG.max_payload_bytes
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# ----------------------------------------------------------------------------- strategies
#: times as devices and attackers send them: RFC 3339 with odd zones, epoch milliseconds, absurd
#: years (1, 9999), negative epochs, NaN, garbage
times = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31, 23, 59, 59),
        timezones=st.sampled_from([UTC, *(timezone(timedelta(hours=h)) for h in (-12, -1, 1, 14))]),
    ).map(lambda t: t.isoformat()),
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31)).map(
        lambda t: t.isoformat()  # no zone: refused
    ),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "1969-12-31T23:59:59Z",
            "2026-11-27T10:00:00Z",
            "2026-11-27T12:10:59Z",
            "2026-02-30T10:00:00Z",
            "",
            "now",
            "2026-11-27T10:00:00Z'; drop table observation; --",
        ]
    ),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-62135596800000, 253402300799999, -1, 0, 1e15, -1e15, 1.7e308]),
    st.none(),
    st.booleans(),
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324, 2**63, -(2**63) - 1, "12.5", "NaN"]),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)
quantities = st.one_of(
    st.sampled_from(sorted(QUANTITIES)),
    st.text(max_size=8),
    st.sampled_from(["PM25", "pm25 ", "pm25'--", "pm25\x00", "ü"]),
    st.none(),
    st.integers(),
)
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_any = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def native_docs(draw: st.DrawFn) -> Any:
    """Native documents, mostly of the right shape, with hostile field values."""
    reading = st.fixed_dictionaries(
        {"quantity": quantities, "value": numbers},
        optional={"time": times, "parameters": st.one_of(json_any, st.just({"rssi": -80}))},
    )
    shape = draw(st.integers(0, 3))
    if shape == 0:
        return draw(reading)
    doc: dict[str, Any] = {"readings": draw(st.lists(reading, max_size=5))}
    if draw(st.booleans()):
        doc["time"] = draw(times)
    if draw(st.booleans()):
        doc["location"] = draw(
            st.one_of(st.fixed_dictionaries({"lat": numbers, "lon": numbers}), json_any)
        )
    if shape == 3:
        doc["junk"] = draw(json_any)
    return doc


def dumps(doc: Any) -> bytes:
    """JSON as an attacker writes it: NaN and Infinity literals, huge integers, lone surrogates."""
    return json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")


payloads = st.one_of(
    st.binary(max_size=300),
    json_any.map(dumps),
    native_docs().map(dumps),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.text(max_size=50).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"\xff\xfe", b'{"quantity":"pm25","value":1,"time":"\xc3\x28"}', b"", b"\0"]),
    # a lone surrogate, UTF-8 encoded: msgspec raised UnicodeDecodeError on the fast path
    st.sampled_from([b"\xed\xa0\x80", b"\xed\xbf\xbf"]).map(
        lambda s: b'{"quantity": "pm%s", "value": 1, "time": "2026-11-27T10:00:00Z"}' % s
    ),
)


def call(decode: Any, *args: Any, **kwargs: Any) -> Any:
    """The decoder's result, or None when it refused with its declared ``DecodeError``; any
    other exception fails the test."""
    try:
        return decode(*args, **kwargs)
    except DecodeError as exc:
        assert exc.reason and isinstance(exc.reason, str)
        return None


def check_valid(uplink: Uplink) -> None:
    """After validation: only known quantities, finite values in range, times in the window."""
    validate(uplink, NOW, CFG.max_future_seconds)
    for r in uplink.readings:
        q = QUANTITIES[r.quantity]
        assert math.isfinite(r.value) and q.min_value <= r.value <= q.max_value
        assert r.time.tzinfo is not None and EARLIEST <= r.time <= LATEST
    for _, reason, detail in uplink.invalid:
        assert reason and detail is not None
    if uplink.location is not None:
        assert -90 <= uplink.location.lat <= 90 and -180 <= uplink.location.lon <= 180


# ------------------------------------------------------------------ each decoder, any input
@PROFILE
@given(payloads)
def test_native_decoders_refuse_only_with_decode_error(payload: bytes) -> None:
    up = call(decode_native, "net", "dev", payload, max_bytes=MAX)
    if up is not None:
        check_valid(up)
    test = call(decode_speedtest, "net", "dev", payload, max_bytes=MAX)
    if test is not None:
        assert -90 <= test.position.lat <= 90 and math.isfinite(test.download_mbps)
        assert test.time.tzinfo is not None


@PROFILE
@given(
    st.one_of(
        payloads,
        st.lists(
            st.dictionaries(
                st.sampled_from(["bn", "bt", "bu", "bv", "bver", "n", "u", "v", "vb", "vs", "t"]),
                st.one_of(numbers, times, st.sampled_from(["temp", "Cel", "K", "lat", "lon"])),
            ),
            max_size=5,
        ).map(dumps),
    )
)
def test_senml_refuses_only_with_decode_error(payload: bytes) -> None:
    up = call(decode_senml, "net", "dev", payload, max_bytes=MAX, now=NOW)
    if up is not None:
        check_valid(up)


ttn_docs = st.fixed_dictionaries(
    {
        "end_device_ids": st.one_of(
            st.just({"device_id": "eui-1"}), st.fixed_dictionaries({"device_id": json_leaf})
        ),
        "uplink_message": st.fixed_dictionaries(
            {"received_at": times},
            optional={
                "f_port": st.one_of(st.integers(-5, 300), json_leaf),
                "f_cnt": st.one_of(st.integers(), json_leaf),
                "decoded_payload": st.dictionaries(
                    st.sampled_from(["temperature", "humidity", "pm2_5", "co2", "x"]), numbers
                ),
                "frm_payload": st.one_of(
                    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()), json_leaf
                ),
                "version_ids": st.sampled_from(
                    [{"brand_id": b, "model_id": m} for c in REGISTRY.values() for b, m in c.models]
                ),
                "rx_metadata": st.lists(
                    st.fixed_dictionaries(
                        {"rssi": numbers, "snr": numbers},
                        optional={
                            "location": st.fixed_dictionaries(
                                {"latitude": numbers, "longitude": numbers}
                            )
                        },
                    ),
                    max_size=3,
                ),
                "locations": st.dictionaries(
                    st.sampled_from(["user", "frm-payload"]),
                    st.fixed_dictionaries({"latitude": numbers, "longitude": numbers}),
                ),
            },
        ),
    }
)


@PROFILE
@given(st.one_of(payloads, ttn_docs.map(dumps)), st.sampled_from([None, *sorted(REGISTRY)]))
def test_ttn_refuses_only_with_decode_error(payload: bytes, codec: str | None) -> None:
    codecs = {"eui-1": codec} if codec else None
    up = call(decode_ttn, "ttn-app", payload, max_bytes=MAX, codecs=codecs)
    if up is not None:
        check_valid(up)


@PROFILE
@given(st.sampled_from(sorted(REGISTRY)), st.integers(0, 255), st.binary(max_size=64))
def test_codecs_refuse_random_frames_with_their_declared_errors(
    name: str, f_port: int, data: bytes
) -> None:
    """What ``decode_ttn`` turns into an ``invalid_payload`` reject: ValueError and friends."""
    codec = REGISTRY[name]
    try:
        values = codec.decode(f_port, data)
        if codec.history is not None:
            codec.history(f_port, data)
    except (ValueError, IndexError, KeyError, struct.error):
        return
    assert all(isinstance(k, str) for k in values)


@PROFILE
@given(st.text(max_size=120))
def test_ttn_topic_parser_refuses_only_with_decode_error(topic: str) -> None:
    t = call(parse_ttn_topic, topic)
    if t is not None:
        assert "/" not in t.application_id and "/" not in t.device_id


push_docs = st.fixed_dictionaries(
    {
        "esp8266id": st.one_of(st.integers(), json_leaf),
        "sensordatavalues": st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {
                        "value_type": st.one_of(
                            st.sampled_from(sorted(PUSH_VALUE_TYPES)),
                            st.sampled_from(["GPS_lat", "GPS_lon", "signal"]),
                            st.text(max_size=6),
                        ),
                        "value": numbers,
                    }
                ),
                json_any,
            ),
            max_size=6,
        ),
    }
)


@PROFILE
@given(
    st.one_of(payloads, push_docs.map(dumps)),
    st.dictionaries(st.sampled_from(["X-Sensor", "x-sensor", "X-PIN"]), st.text(max_size=70)),
)
def test_sensor_community_push_refuses_only_with_decode_error(
    payload: bytes, headers: dict[str, str]
) -> None:
    up = call(decode_sensor_community_push, payload, headers=headers, now=NOW)
    if up is not None:
        check_valid(up)


csv_cells = st.one_of(
    st.text(alphabet=string.printable.replace(";", "").replace("\r", ""), max_size=10),
    times.map(str),
    numbers.map(str),
)


@PROFILE
@given(
    st.one_of(
        st.text(max_size=300),
        st.lists(st.lists(csv_cells, min_size=1, max_size=6), min_size=1, max_size=5).map(
            lambda rows: (
                "sensor_id;timestamp;P1;P2;lat;lon\n" + "\n".join(";".join(r) for r in rows)
            )
        ),
    )
)
def test_sensor_community_archive_csv_refuses_only_with_decode_error(text: str) -> None:
    for up in call(decode_sensor_community_archive_csv, text) or []:
        check_valid(up)


@PROFILE
@given(
    st.one_of(
        payloads,
        st.lists(
            st.fixed_dictionaries(
                {
                    "sensor": st.one_of(st.fixed_dictionaries({"id": json_leaf}), json_any),
                    "timestamp": times,
                    "sensordatavalues": st.lists(
                        st.fixed_dictionaries(
                            {"value_type": st.sampled_from(["P1", "P2", "x"]), "value": numbers}
                        ),
                        max_size=3,
                    ),
                    "location": st.fixed_dictionaries({"latitude": numbers, "longitude": numbers}),
                }
            ),
            max_size=4,
        ).map(dumps),
    )
)
def test_sensor_community_data_json_refuses_only_with_decode_error(payload: bytes) -> None:
    for up in call(decode_sensor_community_data_json, payload) or []:
        check_valid(up)


# ------------------------------------------------------------------ the pipeline as a whole
topics = st.one_of(
    st.sampled_from(
        [
            "quartier/v1/net/dev/up",
            "quartier/v1/net/dev/senml",
            "quartier/v1/net/dev/speedtest",
            "v3/app-1@ttn/devices/eui-1/up",
            "quartier/v1/net/../up",
            "quartier/v1/net/dev'; drop table thing;--/up",
            "quartier/v1/net/gerät/up",
            "quartier/v1/" + "n" * 65 + "/dev/up",
        ]
    ),
    st.text(max_size=40),
)


def accounted(batch: Batch) -> int:
    """Messages a batch stores or refuses (a status frame with nothing in it is neither)."""
    return (
        len(batch.uplinks)
        + len(batch.columns.messages)
        + len(batch.speedtests)
        + len(batch.rejects)
    )


class _Errors(logging.Handler):
    """Records the ingest path logs at ERROR (a decoder or fast-path bug, with a traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


@PROFILE
@given(st.lists(st.tuples(topics, payloads), max_size=12))
def test_pipeline_never_fails_and_stores_only_valid_readings(msgs: list[tuple[str, bytes]]) -> None:
    errors = _Errors()
    logger = logging.getLogger("quartier.ingest")
    logger.addHandler(errors)
    try:
        batch = build_batch([Message(t, p, NOW) for t, p in msgs], CFG, NOW)
    finally:
        logger.removeHandler(errors)
    assert errors.seen == []  # neither path logged a failure
    # a decoder bug would show up as a decoder_error reject (and a logged traceback)
    assert [r for r in batch.rejects if r.reason == "decoder_error"] == []
    assert accounted(batch) <= len(msgs)
    for r in batch.rejects:
        assert r.reason and r.reason != "decoder_error"
    for up, *_ in batch.uplinks:
        check_valid(up)
    cols = batch.columns
    assert all(math.isfinite(v) for v in cols.value.tolist())
    lo, hi = (
        (EARLIEST - EPOCH) // timedelta(microseconds=1),
        (LATEST - EPOCH) // timedelta(microseconds=1),
    )
    assert all(lo <= t <= hi for t in cols.time_us.tolist())
    for test in batch.speedtests:
        assert EARLIEST <= test.time <= LATEST and math.isfinite(test.download_mbps)


@PROFILE
@given(st.lists(native_docs(), min_size=1, max_size=15))
def test_columnar_and_one_by_one_paths_agree_on_random_batches(docs: list[Any]) -> None:
    msgs = [Message(f"quartier/v1/net/dev-{i % 3}/up", dumps(d), NOW) for i, d in enumerate(docs)]
    one_by_one = Batch()
    for m in msgs:
        add_to_batch(one_by_one, m, CFG, NOW)
    assert outcome(build_batch(msgs, CFG, NOW)) == outcome(one_by_one)


# ------------------------------------------------------------------------------ round trips
in_window = st.datetimes(
    min_value=datetime(1990, 1, 2), max_value=datetime(2026, 11, 27, 11, 59), timezones=st.just(UTC)
)


@st.composite
def valid_readings(draw: st.DrawFn) -> list[tuple[str, datetime, float]]:
    out = []
    for _ in range(draw(st.integers(1, 6))):
        key = draw(st.sampled_from(sorted(QUANTITIES)))
        q = QUANTITIES[key]
        value = draw(st.floats(q.min_value, q.max_value, allow_nan=False))
        out.append((key, draw(in_window), value))
    return out


@PROFILE
@given(valid_readings(), st.booleans())
def test_valid_native_messages_round_trip(readings: list[Any], as_ms: bool) -> None:
    def when(t: datetime) -> Any:
        return (t - EPOCH) // timedelta(milliseconds=1) if as_ms else t.isoformat()

    doc = {"readings": [{"quantity": k, "time": when(t), "value": v} for k, t, v in readings]}
    payload = orjson.dumps(doc)
    up = decode_native("net", "dev", payload, max_bytes=MAX)
    check_valid(up)
    expected = [
        (k, t.replace(microsecond=t.microsecond // 1000 * 1000) if as_ms else t, v)
        for k, t, v in readings
    ]
    assert [(r.quantity, r.time, r.value) for r in up.readings] == expected
    assert up.invalid == []
    batch = build_batch([Message("quartier/v1/net/dev/up", payload, NOW)], CFG, NOW)
    assert len(batch.columns.messages) == 1  # the fast path took it, with the same rows
    assert outcome(batch) == outcome(_one(payload))


def _one(payload: bytes) -> Batch:
    b = Batch()
    add_to_batch(b, Message("quartier/v1/net/dev/up", payload, NOW), CFG, NOW)
    return b


@PROFILE
@given(valid_readings())
def test_valid_senml_packs_round_trip(readings: list[Any]) -> None:
    pack = [{"bn": "urn:dev:ow:1:"}] + [
        {"n": k, "t": t.timestamp(), "v": v} for k, t, v in readings
    ]
    up = decode_senml("net", "dev", orjson.dumps(pack), max_bytes=MAX, now=NOW)
    check_valid(up)
    assert up.invalid == []
    got = [(r.quantity, r.time, r.value) for r in up.readings]
    want = [(k, datetime.fromtimestamp(t.timestamp(), tz=UTC), v) for k, t, v in readings]
    assert got == want


@PROFILE
@given(
    in_window,
    st.floats(0, 100_000),
    st.floats(-90, 90),
    st.floats(-180, 180),
    st.one_of(st.none(), st.floats(0, 60_000)),
)
def test_valid_speedtests_round_trip(
    t: datetime, down: float, lat: float, lon: float, latency: float | None
) -> None:
    doc = {"time": t.isoformat(), "download_mbps": down, "lat": lat, "lon": lon}
    if latency is not None:
        doc["latency_ms"] = latency
    test = decode_speedtest("net", "dev", orjson.dumps(doc), max_bytes=MAX)
    assert (test.time, test.download_mbps, test.position.lat, test.position.lon) == (
        t,
        down,
        lat,
        lon,
    )
    assert test.latency_ms == latency


@PROFILE
@given(
    st.dictionaries(
        st.sampled_from(["temperature", "humidity", "co2", "pm2_5", "pm10"]),
        st.floats(0, 50, allow_nan=False),  # inside every one of these quantities' range
        min_size=1,
    ),
    in_window,
)
def test_valid_ttn_uplinks_round_trip(values: dict[str, float], t: datetime) -> None:
    doc = {
        "end_device_ids": {"device_id": "eui-1"},
        "uplink_message": {"received_at": t.isoformat(), "f_port": 1, "decoded_payload": values},
    }
    up = decode_ttn("ttn-app", orjson.dumps(doc), max_bytes=MAX)
    check_valid(up)
    names = {"pm2_5": "pm25"}
    assert sorted((r.quantity, r.time, r.value) for r in up.readings) == sorted(
        (names.get(k, k), t, v) for k, v in values.items()
    )


@PROFILE
@given(
    st.lists(
        st.tuples(st.sampled_from(["SDS_P1", "SDS_P2", "BME280_temperature"]), st.floats(0, 40)),
        min_size=1,
        max_size=5,
    )
)
def test_valid_sensor_community_pushes_round_trip(values: list[tuple[str, float]]) -> None:
    doc = {
        "esp8266id": "123",
        "sensordatavalues": [{"value_type": k, "value": f"{v!r}"} for k, v in values],
    }
    up = decode_sensor_community_push(orjson.dumps(doc), headers={}, now=NOW)
    check_valid(up)
    assert up.device == "esp8266-123"
    assert [(r.quantity, r.value) for r in up.readings] == [
        (PUSH_VALUE_TYPES[k][0], v) for k, v in values
    ]


# ------------------------------------------------------------ the cases that once failed
@pytest.mark.parametrize(
    "time",
    [
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC: OverflowError, a decoder_error
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
        -62135596800001,  # epoch ms before year 1: the fast path logged a traceback
        253402300800000,  # epoch ms after year 9999
    ],
)
def test_absurd_times_are_invalid_readings_not_decoder_errors(
    time: Any, caplog: pytest.LogCaptureFixture
) -> None:
    good = {"quantity": "pm25", "value": 1.0, "time": "2026-11-27T10:00:00Z"}
    for doc in (
        {"quantity": "pm25", "value": 1.0, "time": time},
        {"readings": [good], "time": time, "junk": 1},
        {"time": time, "readings": [{"quantity": "pm25", "value": 1.0}]},
    ):
        batch = build_batch([Message("quartier/v1/n/d/up", orjson.dumps(doc), NOW)], CFG, NOW)
        assert batch.rejects == []
        assert caplog.records == []  # no traceback logged by either path
        invalid = [i for up, *_ in batch.uplinks for i in up.invalid]
        stored = sum(len(up.readings) for up, *_ in batch.uplinks) + len(batch.columns.value)
        assert len(invalid) + stored == 1  # the one reading: stored or refused, nothing lost
    row = f"1;{time};5;5;50.9;6.9" if isinstance(time, str) else "1;x;5;5;50.9;6.9"
    [up] = decode_sensor_community_archive_csv("sensor_id;timestamp;P1;P2;lat;lon\n" + row)
    assert [reason for _, reason, _ in up.invalid] == ["invalid_time"]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"quantity": "pm\xed\xa0\x80", "value": 1, "time": "2026-11-27T10:00:00Z"}',
        b'{"readings": [{"quantity": "pm25", "value": 1}], "time": "\xed\xbf\xbf"}',
    ],
)
def test_a_lone_surrogate_is_a_reject_without_a_logged_traceback(payload: bytes) -> None:
    """msgspec raised UnicodeDecodeError on the fast path, which logged it as a failure."""
    errors = _Errors()
    logger = logging.getLogger("quartier.ingest")
    logger.addHandler(errors)
    try:
        batch = build_batch([Message("quartier/v1/n/d/up", payload, NOW)], CFG, NOW)
    finally:
        logger.removeHandler(errors)
    assert errors.seen == []
    assert [r.reason for r in batch.rejects] == ["invalid_json"]


@pytest.mark.parametrize("device", [".", "..", "..."])
def test_device_keys_of_only_dots_are_refused(device: str) -> None:
    """ "." and ".." are path-traversal bait wherever a device key ends up in a path or URL."""
    reading = orjson.dumps({"quantity": "pm25", "value": 1.0, "time": "2026-11-27T10:00:00Z"})
    for topic in (f"quartier/v1/net/{device}/up", f"quartier/v1/{device}/dev/up"):
        batch = build_batch([Message(topic, reading, NOW)], CFG, NOW)
        assert [r.reason for r in batch.rejects] == ["unknown_topic"]
    with pytest.raises(DecodeError, match="not a valid device key"):
        decode_sensor_community_push(
            b'{"sensordatavalues": [{"value_type": "SDS_P1", "value": "1"}]}',
            headers={"X-Sensor": device},
            now=NOW,
        )
    doc = {
        "end_device_ids": {"device_id": device},
        "uplink_message": {"received_at": "2026-11-27T10:00:00Z", "decoded_payload": {"co2": 1}},
    }
    with pytest.raises(DecodeError) as exc:
        decode_ttn("ttn-app", orjson.dumps(doc), max_bytes=MAX)
    assert exc.value.reason == "invalid_device"
    ok = build_batch([Message("quartier/v1/net/a..b/up", reading, NOW)], CFG, NOW)
    assert ok.rejects == [] and len(ok.columns.messages) == 1  # dots inside a key are fine
