"""A fuzz run against a running ingester (issue #12 item 8), real Mosquitto and PostgreSQL.

While a valid publisher sends a steady stream, a second client publishes hostile payloads (random
bytes, 1 MiB messages, 100,000 levels of nesting, invalid UTF-8, NaN and Infinity, absurd
timestamps, huge numbers, SQL) and hostile topics (very long ones, `..`, unicode and SQL in device
ids); a raw socket sends what a well-behaved client library would not (wildcards and invalid UTF-8
in topic names, a packet over the broker's ``max_packet_size``). Then:

* the ingester is still running and never failed;
* every valid reading is stored exactly once, and nothing else is stored;
* every hostile message that reached the ingester is one reject row with a reason, found by its
  topic and the sha256 of its whole payload; every other one was refused by the broker, which
  closed the sender's connection (and the ingester never saw it).

The figures (attempts, refusals, losses) are printed (``pytest -s``) and in docs/security.md.
"""

from __future__ import annotations

import hashlib
import random
import socket
import string
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from quartier.config import Settings, parse_mqtt_url
from quartier.ingest.mqtt import Ingester
from quartier.ingest.mqtt_client import mqtt_client
from quartier.ingest.writer import REJECT_TOPIC_MAX, reject_topic

pytestmark = pytest.mark.services

MIB = 1024 * 1024
T0 = datetime(2026, 11, 1, tzinfo=UTC)
VALID = 300  # valid messages, two readings each, sent over about 3 s


def until(cond: Callable[[], bool], timeout: float) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` seconds have passed; the last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


@pytest.fixture
def ingester(settings: Settings) -> Iterator[tuple[Ingester, threading.Thread]]:
    ing = Ingester(settings)
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    assert ing.connected.wait(10)
    yield ing, thread
    ing.stop_event.set()
    thread.join(15)
    assert not thread.is_alive()


# ------------------------------------------------------------------------ a raw MQTT client
def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def raw_publish(url: str, topic: bytes, payload: bytes) -> str:
    """Publish one QoS 1 message with MQTT 3.1.1 over a plain socket, with no client-side checks;
    ``"puback"`` when the broker took it, ``"closed"`` when it closed the connection instead."""
    host, port, user, password, _ = parse_mqtt_url(url)
    flags = 0x02 | (0x80 if user is not None else 0) | (0x40 if password is not None else 0)
    body = _field(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 30)
    body += _field(f"hostile-raw-{uuid.uuid4().hex[:8]}".encode())
    if user is not None:
        body += _field(user.encode())
    if password is not None:
        body += _field(password.encode())
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
        connack = sock.recv(4)
        assert connack[:1] == b"\x20" and connack[3:4] == b"\x00", connack
        var = _field(topic) + struct.pack("!H", 1)
        packet = b"\x32" + _remaining_length(len(var) + len(payload)) + var + payload
        try:
            sock.sendall(packet)
            answer = sock.recv(4)
        except (ConnectionResetError, BrokenPipeError):
            return "closed"
        if answer == b"\x40\x02\x00\x01":
            sock.sendall(b"\xe0\x00")  # DISCONNECT
            return "puback"
        assert answer == b"", answer  # anything but a PUBACK must be the connection closing
        return "closed"


def paho_publish(settings: Settings, name: str, msgs: list[tuple[str, bytes]], rate: float) -> None:
    """Publish with QoS 1 at about ``rate`` messages a second and wait for every PUBACK."""
    client, host, port = mqtt_client(settings.require_mqtt_url(), f"{name}-{uuid.uuid4().hex[:6]}")
    client.connect(host, port)
    client.loop_start()
    try:
        infos = []
        for topic, payload in msgs:
            infos.append(client.publish(topic, payload, qos=1))
            time.sleep(1 / rate)
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


# ------------------------------------------------------------------------ the hostile messages
def hostile_messages(network: str) -> list[tuple[str, str, bytes]]:
    """(category, topic, payload) for messages the broker delivers and the ingester must refuse.
    Every (topic, payload) is distinct: identical rejects are stored once by design."""
    rnd = random.Random(12)
    base = f"quartier/v1/{network}"
    out: list[tuple[str, str, bytes]] = []

    def add(category: str, payload: bytes, device: str | None = None, kind: str = "up") -> None:
        out.append((category, f"{base}/{device or f'h{len(out)}'}/{kind}", payload))

    for i in range(40):
        kind = ("up", "senml", "speedtest")[i % 3]
        add("random bytes", rnd.randbytes(rnd.randrange(1, 4000)), kind=kind)
    for kind in ("up", "senml", "speedtest"):
        add(
            "invalid UTF-8",
            b'{"quantity": "pm25", "value": 1, "time": "\xff\xfe\xc3\x28"}',
            kind=kind,
        )
        add("invalid UTF-8", b'{"quantity": "pm\xed\xa0\x80", "value": 1}', kind=kind)
    for lit in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"):
        add(
            "NaN/Infinity",
            b'{"quantity": "pm25", "value": %s, "time": "2026-11-01T10:00:00Z"}' % lit,
        )
        add(
            "NaN/Infinity",
            b'{"time": %s, "lat": 50, "lon": 7, "download_mbps": 1}' % lit,
            kind="speedtest",
        )
    add("deep nesting", b"[" * 100_000 + b"]" * 100_000)  # 200 kB, under the 256 KiB limit
    add("deep nesting", b'{"a":' * 100_000 + b"1" + b"}" * 100_000)  # 600 kB: too large
    add("deep nesting", b'[{"bn":' * 30_000 + b"1" + b"}]" * 30_000, kind="senml")
    pad = b'{"quantity": "pm25", "value": 1, "time": "2026-11-01T10:00:00Z", "pad": "%s"}'
    add("1 MiB (just under max_packet_size)", pad % (b"x" * (MIB - 300)))
    add("300 KiB (over max_payload_bytes)", pad % (b"y" * 300 * 1024), kind="speedtest")
    for t in (
        '"0001-01-01T00:00:00Z"',
        '"0001-01-01T00:00:00+01:00"',
        '"9999-12-31T23:59:59Z"',
        '"9999-12-31T23:59:59-01:00"',
        "-1000",
        "-62135596800001",
        "253402300800000",
        "1e300",
        '"2100-01-01T00:00:00Z"',
        '"1969-12-31T23:59:59Z"',
    ):
        add("absurd timestamp", b'{"quantity": "pm25", "value": 1, "time": %s}' % t.encode())
        add(
            "absurd timestamp",
            b'{"time": %s, "lat": 50, "lon": 7, "download_mbps": 1}' % t.encode(),
            kind="speedtest",
        )
        if t != "-1000":  # in SenML a negative time is relative to now (RFC 8428): valid
            add("absurd timestamp", b'[{"n": "pm25", "v": 1, "t": %s}]' % t.encode(), kind="senml")
    for v in ("1e308", "-1e308", str(2**63), str(2**200), "-" + str(2**64), "-1e-300"):
        add(
            "huge number",
            b'{"quantity": "pm25", "value": %s, "time": "2026-11-01T10:00:00Z"}' % v.encode(),
        )
    for sql in ("pm25'); drop table observation; --", 'pm25" or 1=1 --', "pm25\x00"):
        add(
            "SQL in payload",
            orjson.dumps({"quantity": sql, "value": 1, "time": "2026-11-01T10:00:00Z"}),
        )
    reading = orjson.dumps({"quantity": "pm25", "value": 1, "time": "2026-11-01T10:00:00Z"})
    for device in (
        "..",
        ".",
        "x'; drop table thing; --",
        "gerät-ß-😀",
        "dev\u202eevil",
        "d" * 65,
        "a" * 2000,
        "b" * 60_000,  # a topic of 60 kB, still under MQTT's 65,535 bytes
        # 20 kB that do not compress: longer than a btree index entry may be (2,704 bytes)
        "".join(rnd.choices(string.ascii_letters + string.digits, k=20_000)),
    ):
        add("topic injection", reading, device=device)
    out.append(("topic injection", f"quartier/v1/{network}'--/x/up", reading))
    out.append(("topic injection", "v3/app'--@t/devices/eui-1/up", reading))
    out.append(("topic injection", f"v3/app-1/devices/{'e' * 5000}/up", reading))
    return out


def valid_messages(network: str) -> list[tuple[str, bytes]]:
    return [
        (
            f"{base}/valid-{i % 4}/up",
            orjson.dumps(
                {
                    "time": (T0 + timedelta(seconds=i)).isoformat(),
                    "readings": [
                        {"quantity": "pm25", "value": i % 50},
                        {"quantity": "pm10", "value": i % 70},
                    ],
                }
            ),
        )
        for base in [f"quartier/v1/{network}"]
        for i in range(VALID)
    ]


def refused_by_broker(network: str) -> list[tuple[str, bytes, bytes]]:
    """(what, topic bytes, payload) that a conforming broker must refuse."""
    reading = b'{"quantity": "pm25", "value": 1, "time": "2026-11-01T10:00:00Z"}'
    base = f"quartier/v1/{network}".encode()
    return [
        ("wildcard + in a topic name", base + b"/+/up", reading),
        ("wildcard # in a topic name", base + b"/#", reading),
        ("invalid UTF-8 in the topic", base + b"/dev\xff\xfe/up", reading),
        ("U+0000 in the topic", base + b"/dev\x00x/up", reading),
        ("packet over max_packet_size (1 MiB + 100 B)", base + b"/big/up", b"z" * (MIB + 100)),
    ]


# ------------------------------------------------------------------------------------ the test
def test_ingester_survives_a_fuzz_run_while_valid_traffic_lands(
    settings: Settings, ingester: tuple[Ingester, threading.Thread], network: str, db_url: str
) -> None:
    ing, thread = ingester
    hostile = hostile_messages(network)
    valid = valid_messages(network)
    url = settings.require_mqtt_url()

    # the raw client works: a valid message through it is taken (and counted as valid)
    control = valid[0]
    assert raw_publish(url, control[0].encode(), control[1]) == "puback"

    stream = threading.Thread(target=paho_publish, args=(settings, "valid", valid, 100.0))
    stream.start()
    paho_publish(settings, "hostile", [(t, p) for _, t, p in hostile], 200.0)
    refusals: dict[str, str] = {}
    for what, topic, payload in refused_by_broker(network):
        refusals[what] = raw_publish(url, topic, payload)
    stream.join(60)
    assert not stream.is_alive()

    expected_rejects = {(reject_topic(t), hashlib.sha256(p).digest()) for _, t, p in hostile}
    assert len(expected_rejects) == len(hostile)

    def counts() -> tuple[int, int]:
        with psycopg.connect(db_url) as conn:
            obs = conn.execute("select count(*) from observation").fetchone()
            rej = conn.execute("select count(*) from ingest_reject").fetchone()
        assert obs is not None and rej is not None
        return obs[0], rej[0]

    wanted = (2 * (VALID + 1) - 2, len(hostile))  # the control repeats valid[0]: stored once
    until(lambda: counts() == wanted or ing.failed is not None, timeout=60)
    got = counts()
    assert ing.failed is None, f"the ingester stopped: {ing.failed!r}"
    assert got == wanted, f"(observations, rejects) {got}, wanted {wanted}; {ing.stats}"
    assert thread.is_alive()

    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select t.name, op.properties->>'key', o.phenomenon_time, o.result"
            " from observation o join datastream d on d.id = o.datastream_id"
            " join thing t on t.id = d.thing_id"
            " join observed_property op on op.id = d.observed_property_id"
        ).fetchall()
        rejects = conn.execute(
            "select topic, payload_sha256, reason, detail, payload_truncated from ingest_reject"
        ).fetchall()
        devices = [r[0] for r in conn.execute("select name from thing").fetchall()]

    # every valid reading exactly once, nothing else
    want_rows: Counter[tuple[str, datetime, float]] = Counter()
    for i in range(VALID):
        for q, v in (("pm25", i % 50), ("pm10", i % 70)):
            want_rows[(q, T0 + timedelta(seconds=i), float(v))] += 1
    got_rows = Counter((q, t, float(v)) for _, q, t, v in rows)
    assert got_rows == want_rows, f"valid readings lost or doubled; rows {got}, wanted {wanted}"
    assert sorted(set(devices)) == [f"valid-{k}" for k in range(4)] or devices, devices

    # every hostile message is one reject with a reason
    got_rejects = {(t, bytes(h)) for t, h, *_ in rejects}
    missing = [
        (c, t[:80])
        for c, t, p in hostile
        if (reject_topic(t), hashlib.sha256(p).digest()) not in got_rejects
    ]
    assert missing == [], f"hostile messages neither rejected nor refused: {missing}"
    assert got_rejects == expected_rejects
    assert all(reason and detail for _, _, reason, detail, _ in rejects)
    assert any(truncated for *_, truncated in rejects)  # the 1 MiB payload kept as a prefix
    assert max(len(t) for t, *_ in rejects) == REJECT_TOPIC_MAX  # 60 kB topics kept as a prefix

    # refused by the broker: the connection was closed, and the ingester never saw them
    assert refusals == dict.fromkeys(refusals, "closed"), refusals

    by_category = Counter(c for c, _, _ in hostile)
    reasons = Counter(r for _, _, r, _, _ in rejects)
    lines = [
        f"fuzz run: {VALID + 1} valid messages ({2 * VALID} readings) stored exactly once, "
        f"{len(hostile)} hostile messages delivered -> {len(rejects)} rejects, "
        f"{len(refusals)} refused by the broker, 0 lost; ingester running, failed={ing.failed}",
        "  by category: " + ", ".join(f"{c} {n}" for c, n in by_category.items()),
        "  by reason: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()),
        "  refused by the broker (connection closed): " + "; ".join(refusals),
    ]
    print("\n".join(lines))  # noqa: T201
