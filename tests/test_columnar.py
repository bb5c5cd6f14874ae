"""The columnar fast path for native messages: same rows, same refusals as the full decoder;
and what the writer makes of it in PostgreSQL (rows, rollup marks, latest values, locations)."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import psycopg
import pytest

from quartier.config import IngestSettings
from quartier.ingest.model import Batch
from quartier.ingest.pipeline import Message, add_to_batch, build_batch
from quartier.ingest.writer import BatchWriter
from quartier.store.pgcopy import Float8Array, Int8Array, TimestamptzArray

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CFG = IngestSettings(max_future_seconds=600)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)

GOOD = {"quantity": "pm10", "value": 20.0, "time": "2026-11-27T10:00:00Z"}
#: readings the full decoder refuses, each with the reason it gives
BAD_READINGS = [
    {"quantity": "pm25", "value": "high", "time": "2026-11-27T10:00:00Z"},
    {"quantity": "pm25", "value": True, "time": "2026-11-27T10:00:00Z"},
    {"quantity": "pm25", "value": None, "time": "2026-11-27T10:00:00Z"},
    {"quantity": "pm25", "value": 1},
    {"quantity": "pm25", "value": 1, "time": None},
    {"quantity": "pm25", "value": 1, "time": "2026-11-27T10:00:00"},
    {"quantity": "pm25", "value": 1, "time": "yesterday"},
    {"quantity": "pm25", "value": 1, "time": 1e20},
    {"quantity": "pm25", "value": 1, "time": False},
    {"quantity": "", "value": 1, "time": "2026-11-27T10:00:00Z"},
    {"quantity": "radon", "value": 1, "time": "2026-11-27T10:00:00Z"},
    {"quantity": "pm25", "value": -0.1, "time": "2026-11-27T10:00:00Z"},
    {"quantity": "humidity", "value": 100.5, "time": "2026-11-27T10:00:00Z"},
    {"quantity": "pm25", "value": 1, "time": "2026-11-27T12:11:00Z"},
    {"quantity": "pm25", "value": 1, "time": "1970-01-02T00:00:00Z"},
    {"quantity": "pm25", "value": 1, "time": "2026-11-27T10:00:00Z", "parameters": [1]},
    "not an object",
]
#: whole messages the full decoder refuses
BAD_MESSAGES: list[Any] = [
    b"{not json",
    b"[]",
    {"readings": []},
    {"readings": "pm25"},
    {"hello": 1},
    {"readings": [GOOD], "location": {"lat": 91, "lon": 6.9}},
    {"readings": [GOOD], "location": None},
    {"readings": [GOOD], "location": {"lat": "x", "lon": 6.9}},
    # deeply nested JSON, where a member is ignored and where one is kept
    b'{"quantity": "pm25", "value": 1, "time": "2026-11-27T10:00:00Z", "x": '
    + b"[" * 5000
    + b"]" * 5000
    + b"}",
    b'{"quantity": "pm25", "value": 1, "time": "2026-11-27T10:00:00Z", "parameters": '
    + b'{"a": ' * 2000
    + b"1"
    + b"}" * 2001,
    # an explicit null does not inherit the message's time
    {"time": "2026-11-27T10:00:00Z", "readings": [{"quantity": "pm25", "value": 1, "time": None}]},
]


def good_messages(rnd: random.Random, n: int) -> list[Any]:
    """Valid messages in every shape the format allows."""
    out: list[Any] = []
    for i in range(n):
        t = NOW - timedelta(hours=rnd.randrange(1, 2000), microseconds=rnd.randrange(10**6))
        shape = i % 7
        if shape == 0:  # a single reading
            out.append({"time": t.isoformat(), "quantity": "pm25", "value": rnd.uniform(0, 900)})
        elif shape == 1:  # a batch with times of its own, another zone
            tz = t.astimezone(datetime.now().astimezone().tzinfo)
            out.append(
                {
                    "readings": [
                        {
                            "time": (tz + timedelta(minutes=k)).isoformat(),
                            "quantity": "no2",
                            "value": rnd.randrange(0, 400),  # integers are numbers too
                        }
                        for k in range(rnd.randrange(1, 40))
                    ]
                }
            )
        elif shape == 2:  # the message's time inherited, several quantities, a location
            out.append(
                {
                    "time": t.isoformat().replace("+00:00", "Z"),
                    "location": {"lat": 50.9 + rnd.random() / 10, "lon": 6.9},
                    "readings": [
                        {"quantity": "temperature", "value": rnd.uniform(-20, 40)},
                        {"quantity": "humidity", "value": rnd.uniform(0, 100)},
                    ],
                }
            )
        elif shape == 3:  # epoch milliseconds
            ms = (t - EPOCH) // timedelta(milliseconds=1)
            out.append(
                {
                    "readings": [
                        {"time": ms + 1000 * k, "quantity": "pm10", "value": float(k)}
                        for k in range(5)
                    ]
                }
            )
        elif shape == 4:  # fractional milliseconds, an unknown member that is ignored
            out.append(
                {
                    "note": "ignored",
                    "quantity": "pm25",
                    "value": 3.25,
                    "time": (t - EPOCH) / timedelta(milliseconds=1),
                }
            )
        elif shape == 5:  # parameters: only the full decoder takes them
            out.append({**GOOD, "time": t.isoformat(), "parameters": {"rssi": -80}})
        else:  # the batch of a busy sensor
            out.append(
                {
                    "readings": [
                        {
                            "time": (t + timedelta(seconds=10 * k)).isoformat(),
                            "quantity": "pm25",
                            "value": k / 4,
                        }
                        for k in range(100)
                    ]
                }
            )
    return out


def messages(docs: list[Any]) -> list[Message]:
    out = []
    for i, doc in enumerate(docs):
        payload = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        out.append(Message(f"quartier/v1/net/dev-{i % 5}/up", payload, NOW))
    return out


def outcome(batch: Batch) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], dict[str, Any]]:
    """What a batch would store and refuse, independent of the path taken."""
    rows: list[tuple[Any, ...]] = []
    refused: list[tuple[Any, ...]] = []
    located: dict[str, Any] = {}
    for u, topic, payload, _ in batch.uplinks:
        for r in u.readings:
            rows.append((u.device, r.quantity, (r.time - EPOCH) // US, r.value, r.parameters))
        if u.invalid:
            refused.append((topic, payload, tuple(sorted(reason for _, reason, _ in u.invalid))))
        if u.location is not None:
            located[payload.decode()] = (u.location.lat, u.location.lon)
    cols = batch.columns
    for m in cols.messages:
        qs = [m.quantity] * m.n if isinstance(m.quantity, str) else m.quantity
        for k in range(m.n):
            t, v = int(cols.time_us[m.start + k]), float(cols.value[m.start + k])
            rows.append((m.device, qs[k], t, v, None))
        if m.location is not None:
            located[m.payload.decode()] = (m.location.lat, m.location.lon)
    refused += [(r.topic, r.payload, (r.reason,)) for r in batch.rejects]
    return sorted(rows, key=repr), sorted(refused, key=repr), located


def slow(msgs: list[Message]) -> Batch:
    batch = Batch()
    for m in msgs:
        add_to_batch(batch, m, CFG, NOW)
    return batch


def test_fast_path_stores_and_refuses_exactly_what_the_full_decoder_does() -> None:
    rnd = random.Random(3)
    docs = good_messages(rnd, 140)
    docs += [{"readings": [GOOD, bad]} for bad in BAD_READINGS]
    docs += [{"readings": [bad]} for bad in BAD_READINGS]
    docs += BAD_MESSAGES
    rnd.shuffle(docs)
    msgs = messages(docs)
    fast = build_batch(msgs, CFG, NOW)
    reference = slow(msgs)
    assert outcome(fast) == outcome(reference)
    # and the fast path did carry the plainly valid messages (6 of every 7 shapes)
    assert len(fast.columns.messages) == 120
    assert len(fast.columns) == 0  # the lists were turned into arrays by validate()
    assert len(fast.columns.time_us) == sum(m.n for m in fast.columns.messages)


def test_a_bad_reading_sends_its_whole_message_to_the_full_decoder() -> None:
    docs = [
        {"readings": [GOOD, {**GOOD, "time": "2026-11-27T10:01:00Z"}]},
        {"readings": [{**GOOD, "value": -1.0}, {**GOOD, "time": "2026-11-27T10:02:00Z"}]},
        {"readings": [{**GOOD, "time": "2026-11-27T10:03:00Z"}]},
    ]
    batch = build_batch(messages(docs), CFG, NOW)
    assert [m.n for m in batch.columns.messages] == [2, 1]
    assert [m.start for m in batch.columns.messages] == [0, 2]  # re-packed after the removal
    t10 = (datetime(2026, 11, 27, 10, tzinfo=UTC) - EPOCH) // US
    assert batch.columns.time_us.tolist() == [t10, t10 + 60_000_000, t10 + 180_000_000]
    [(uplink, _, _, _)] = batch.uplinks
    assert [r.value for r in uplink.readings] == [20.0]
    assert [reason for _, reason, _ in uplink.invalid] == ["out_of_range"]


def test_numpy_arrays_as_binary_parameters(db_url: str) -> None:
    ints = np.array([1, -2, 2**62], dtype=np.int64)
    floats = np.array([0.5, -1e300, np.nan])
    times = np.array([0, 1_767_225_600_123_456], dtype=np.int64)
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "select %s::text, %s::text, %s::timestamptz[], %s::bigint[]",
            (Int8Array(ints), Float8Array(floats), TimestamptzArray(times), Int8Array(ints[:0])),
        ).fetchone()
    assert row is not None
    assert row[0] == "{1,-2,4611686018427387904}"
    assert row[1] == "{0.5,-1e+300,NaN}"
    assert row[2] == [EPOCH, datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)]
    assert row[3] == []


@pytest.mark.services
def test_writer_stores_fast_path_batches_with_marks_and_latest(db_url: str) -> None:
    rnd = random.Random(11)
    docs = [*good_messages(rnd, 70), {"readings": [GOOD, BAD_READINGS[0]]}]
    msgs = messages(docs)
    expected_rows, _, _ = outcome(slow(msgs))
    w = BatchWriter(db_url, auto_register=True)
    w.write(build_batch(msgs, CFG, NOW))
    w.write(build_batch(msgs, CFG, NOW))  # redelivered: stored once
    w.close()
    with psycopg.connect(db_url) as conn:
        stored = conn.execute(
            "select dd.quantity, o.phenomenon_time, o.result, o.parameters, d.device_key "
            "from observation o join device_datastream dd on dd.datastream_id = o.datastream_id "
            "join device d on d.id = dd.device_id"
        ).fetchall()
        marks = conn.execute(
            "select datastream_id, bucket from observation_dirty order by 1, 2"
        ).fetchall()
        truth = conn.execute(
            "select distinct datastream_id, date_bin('15 min', phenomenon_time, "
            "'2000-01-03Z') from observation order by 1, 2"
        ).fetchall()
        latest = conn.execute("select * from observation_latest order by 1").fetchall()
        newest = conn.execute(
            "select distinct on (datastream_id) datastream_id, phenomenon_time, result "
            "from observation order by datastream_id, phenomenon_time desc"
        ).fetchall()
        rejects = conn.execute("select count(*) from ingest_reject").fetchone()
    got = sorted(((dev, q, (t - EPOCH) // US, v, p) for q, t, v, p, dev in stored), key=repr)
    assert got == expected_rows
    assert marks == truth
    assert latest == newest
    assert rejects == (1,)


@pytest.mark.services
def test_unknown_devices_on_the_fast_path_are_kept_as_rejects(db_url: str) -> None:
    msgs = messages([{"readings": [GOOD]}, {"readings": [{**GOOD, "quantity": "pm25"}]}])
    w = BatchWriter(db_url, auto_register=False)
    res = w.write(build_batch(msgs, CFG, NOW))
    w.close()
    assert res.observations == 0 and res.reasons == {"unknown_device": 2}
    with psycopg.connect(db_url) as conn:
        kept = conn.execute("select topic, payload from ingest_reject order by 1").fetchall()
    assert [(t, bytes(p)) for t, p in kept] == [(m.topic, m.payload) for m in msgs]


@pytest.mark.services
def test_a_device_that_moves_gets_a_new_location_and_history(db_url: str) -> None:
    from quartier.ingest.model import Position, Reading, Uplink

    def at(lat: float, lon: float, minute: int) -> Message:
        doc = {
            **GOOD,
            "time": f"2026-11-27T10:{minute:02d}:00Z",
            "location": {"lat": lat, "lon": lon},
        }
        return Message("quartier/v1/net/bike-1/up", orjson.dumps(doc), NOW)

    w = BatchWriter(db_url, auto_register=True)
    w.write(build_batch([at(50.93, 6.95, 0)], CFG, NOW))
    w.write(build_batch([at(50.93, 6.95, 1)], CFG, NOW))  # same place: nothing new
    w.write(build_batch([at(50.95, 6.97, 2)], CFG, NOW))  # moved

    def via_gateway(device: str) -> Batch:
        batch = Batch()
        up = Uplink(
            "net",
            device,
            [Reading("pm10", NOW - timedelta(hours=1), 5.0)],
            Position(51.0, 7.0),
            location_from_gateway=True,
        )
        batch.uplinks.append((up, "t", b"", NOW))
        return batch

    w.write(via_gateway("bike-1"))  # a gateway's position does not move a device that has one
    w.write(via_gateway("meter-1"))  # but it places a device that has no position yet
    w.close()
    with psycopg.connect(db_url) as conn:
        current = conn.execute(
            "select t.name, ST_Y(l.location), ST_X(l.location) from thing t "
            "join thing_location tl on tl.thing_id = t.id join location l on l.id = tl.location_id "
            "order by 1"
        ).fetchall()
        history = conn.execute(
            "select ST_Y(l.location), ST_X(l.location) from historical_location h "
            "join historical_location_location hl on hl.historical_location_id = h.id "
            "join location l on l.id = hl.location_id join thing t on t.id = h.thing_id "
            "where t.name = 'net/bike-1' order by h.id"
        ).fetchall()
    assert current == [
        ("net/bike-1", pytest.approx(50.95), pytest.approx(6.97)),
        ("net/meter-1", pytest.approx(51.0), pytest.approx(7.0)),
    ]
    assert history == [
        (pytest.approx(50.93), pytest.approx(6.95)),
        (pytest.approx(50.95), pytest.approx(6.97)),
    ]


WEIRD: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1e308,
    -1e308,
    2**62,
    "",
    "pm25",
    "2026-11-27T10:00:00+01:00",
    "2026-11-27T10:00:00",
    "2026-13-01T00:00:00Z",
    [],
    {},
    [1, 2],
    {"lat": 50.9, "lon": 6.9},
    {"lat": 91, "lon": 0},
    1764237600000,
    1764237600000.5,
]


def odd(rnd: random.Random) -> Any:
    return copy.deepcopy(rnd.choice(WEIRD))


def mutate(rnd: random.Random, doc: Any) -> Any:
    """One random change somewhere in a document: a member set to an odd value, removed, or
    added."""
    if isinstance(doc, list) and doc:
        i = rnd.randrange(len(doc))
        doc[i] = mutate(rnd, doc[i]) if rnd.random() < 0.7 else odd(rnd)
        return doc
    if isinstance(doc, dict):
        roll = rnd.random()
        keys = list(doc)
        if keys and roll < 0.5:
            k = rnd.choice(keys)
            doc[k] = mutate(rnd, doc[k]) if rnd.random() < 0.5 else odd(rnd)
        elif keys and roll < 0.7:
            del doc[rnd.choice(keys)]
        else:
            doc[rnd.choice(["time", "value", "quantity", "location", "parameters", "x"])] = odd(rnd)
        return doc
    return odd(rnd)


def test_randomly_damaged_messages_get_the_same_answer_on_both_paths() -> None:
    rnd = random.Random(2026)
    docs: list[Any] = []
    for doc in good_messages(rnd, 700):
        for _ in range(rnd.randrange(0, 3)):
            doc = mutate(rnd, doc)
        docs.append(doc)
    msgs = messages(docs)
    fast = build_batch(msgs, CFG, NOW)
    assert outcome(fast) == outcome(slow(msgs))
    assert 100 < len(fast.columns.messages) < 650  # both paths had plenty to do
