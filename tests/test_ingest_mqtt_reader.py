"""The ingester's MQTT reader (``FastClient.loop_read``): every packet of a chunk parsed in one
pass, the lean PUBLISHes handed over once per read. Proven equal to paho's own reading on the
same bytes, however they are split by the network; no servers needed (a socket pair)."""

from __future__ import annotations

import random
import select
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from quartier.config import Settings
from quartier.ingest.mqtt import Ingester
from quartier.ingest.mqtt_client import FastClient, _BufferedSocket

Seen = tuple[str, bytes, int]


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: bytes, payload: bytes, mid: int, *, props: bytes = b"", flags: int = 0) -> bytes:
    """A PUBLISH (QoS 1) as a broker sends it to an MQTT 5 client; ``props``: its properties."""
    body = len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big")
    body += _length(len(props)) + props + payload
    return bytes([0x32 | flags]) + _length(len(body)) + body


#: a Message Expiry Interval property (id 2, four bytes): such a PUBLISH takes paho's path
EXPIRY = b"\x02\x00\x00\x0e\x10"


def stream(n: int, seed: int, large: bool = True) -> tuple[bytes, list[Seen]]:
    """``n`` packets of every kind the reader meets, and the messages they carry, in order."""
    rnd = random.Random(seed)
    out = bytearray()
    want: list[Seen] = []
    for i in range(n):
        topic = f"quartier/v1/net/dev-{rnd.randrange(50)}/up"
        size = rnd.choice([0, 1, 60, 127, 128, 16_383, 16_384, 70_000])
        if not large:
            size = min(size, 200)
        elif rnd.random() < 0.02:
            size = 300_000  # larger than one read: several reads for one packet
        payload = bytes(rnd.randrange(256) for _ in range(min(size, 64))) * (size // 64 + 1)
        payload = payload[:size]
        mid = i % 65535 + 1
        kind = rnd.random()
        if kind < 0.1:
            out += publish(topic.encode(), payload, mid, props=EXPIRY)  # paho's path
        elif kind < 0.15:
            out += b"\xd0\x00"  # PINGRESP, handled by paho between the messages
            out += publish(topic.encode(), payload, mid, flags=0x08)  # DUP: a redelivery
        else:
            out += publish(topic.encode(), payload, mid)
        want.append((topic, payload, mid))
    return bytes(out), want


def fast_client() -> tuple[FastClient, list[Seen], list[int]]:
    """A FastClient as the ingester sets it up; what it hands over in order, and how many
    messages each lean hand-over carried."""
    client = FastClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5)
    client.manual_ack_set(True)
    seen: list[Seen] = []
    handovers: list[int] = []

    def lean(publishes: list[Seen]) -> None:
        seen.extend(publishes)
        handovers.append(len(publishes))

    client.fast_on_messages = lean
    client.on_message = lambda c, u, m: seen.append((m.topic, bytes(m.payload), m.mid))
    return client, seen, handovers


def paho_client() -> tuple[mqtt.Client, list[Seen]]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5)
    client.manual_ack_set(True)
    seen: list[Seen] = []
    client.on_message = lambda c, u, m: seen.append((m.topic, bytes(m.payload), m.mid))
    return client, seen


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def read_all(client: Any, raw: socket.socket, data: bytes, b: socket.socket, rnd: Any) -> None:
    """Send ``data`` in pieces of random size (1 byte to 20 KiB), after each reading until the
    socket ``raw`` is empty; the client's return codes must all be success."""
    pos = 0
    while pos < len(data):
        k = rnd.choice([1, 2, 3, 7, 100, 1500, 20_000])
        b.sendall(data[pos : pos + k])
        pos += k
        while select.select([raw], [], [], 0)[0]:
            assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_messages_in_the_same_order_as_paho_however_the_bytes_are_split(pair, seed) -> None:
    data, want = stream(300, seed)
    a, b = pair
    fast, seen, handovers = fast_client()
    fast._sock = _BufferedSocket(a)
    rnd = random.Random(seed)
    # the network splits the stream anywhere: header byte, inside the length, inside a body
    read_all(fast, a, data, b, rnd)
    assert seen == want
    assert max(handovers) > 1  # several lean messages handed over in one call

    # paho's own reader on the same bytes: the reference
    c, d = socket.socketpair()
    c.setblocking(False)
    ref, ref_seen = paho_client()
    ref._sock = c
    read_all(ref, c, data, d, random.Random(seed))
    assert ref_seen == want
    c.close()
    d.close()


def test_a_socket_paho_reads_itself_still_takes_the_lean_path(pair) -> None:
    """A TLS socket is read by paho's own reader (it reports ``pending()``): its plain PUBLISHes
    still reach ``fast_on_messages``, one at a time, the others ``on_message``, in order."""
    data, want = stream(60, 5, large=False)
    a, b = pair
    fast, seen, handovers = fast_client()
    fast._sock = a  # not wrapped: paho reads it
    read_all(fast, a, data, b, random.Random(5))
    assert seen == want
    assert set(handovers) == {1} and len(handovers) > len(want) // 2


def test_one_byte_at_a_time(pair) -> None:
    data, want = stream(60, 7, large=False)
    a, b = pair
    fast, seen, _ = fast_client()
    fast._sock = _BufferedSocket(a)
    for k in range(len(data)):
        b.sendall(data[k : k + 1])
        assert fast.loop_read() == mqtt.MQTT_ERR_SUCCESS
    assert seen == want


def test_a_partial_packet_does_not_make_paho_skip_select(pair) -> None:
    """What is kept between reads is never a whole packet: ``pending()`` stays 0, so paho's
    loop waits in ``select`` instead of spinning on an empty socket."""
    a, b = pair
    fast, seen, _ = fast_client()
    sock = _BufferedSocket(a)
    fast._sock = sock
    packet = publish(b"quartier/v1/n/d/up", b"{}", 1)
    b.sendall(packet[:-1])
    assert fast.loop_read() == mqtt.MQTT_ERR_SUCCESS
    assert seen == [] and sock.pending() == 0
    b.sendall(packet[-1:])
    assert fast.loop_read() == mqtt.MQTT_ERR_SUCCESS
    assert seen == [("quartier/v1/n/d/up", b"{}", 1)]


def test_a_large_packet_trickling_in_is_read_whole(pair) -> None:
    a, b = pair
    fast, seen, _ = fast_client()
    sock = _BufferedSocket(a)
    fast._sock = sock
    payload = bytes(range(256)) * 4000  # 1 MB, in 1,000-byte pieces
    packet = publish(b"quartier/v1/n/d/up", payload, 9)
    for k in range(0, len(packet), 1000):
        b.sendall(packet[k : k + 1000])
        assert fast.loop_read() == mqtt.MQTT_ERR_SUCCESS
        assert sock.pending() == 0
    assert seen == [("quartier/v1/n/d/up", payload, 9)]
    assert sock._parts == [] and sock._need == 0


def test_a_publish_too_short_for_the_lean_path_is_paho_s(pair) -> None:
    """A PUBLISH whose body ends before its packet id (here at the end of a read) is refused by
    paho's handler as malformed; the reader does not look past the packet."""
    a, b = pair
    fast, seen, _ = fast_client()
    fast._sock = _BufferedSocket(a)
    b.sendall(publish(b"ok", b"x", 2) + b"\x32\x00")
    assert fast.loop_read() == mqtt.MQTT_ERR_PROTOCOL
    assert seen == [("ok", b"x", 2)]


def test_a_length_of_more_than_four_bytes_is_a_protocol_error(pair) -> None:
    a, b = pair
    fast, seen, _ = fast_client()
    fast._sock = _BufferedSocket(a)
    lost: list[Any] = []
    fast.on_disconnect = lambda *args: lost.append(args[3])
    good = publish(b"quartier/v1/n/d/up", b"{}", 1)
    b.sendall(good + b"\x32\xff\xff\xff\xff\x01" + good)
    assert fast.loop_read() == mqtt.MQTT_ERR_PROTOCOL
    assert seen == [("quartier/v1/n/d/up", b"{}", 1)]  # what came before it, nothing after
    assert fast._sock is None and lost  # the connection is closed and reported


def test_the_peer_closing_is_a_lost_connection(pair) -> None:
    a, b = pair
    fast, _, _ = fast_client()
    fast._sock = _BufferedSocket(a)
    b.close()
    assert fast.loop_read() == mqtt.MQTT_ERR_CONN_LOST
    assert fast._sock is None


def test_a_topic_that_is_not_utf8_does_not_take_the_lean_path(pair) -> None:
    a, b = pair
    fast, seen, handovers = fast_client()
    fast.on_message = None  # paho's handler: no callback, nothing delivered
    fast._sock = _BufferedSocket(a)
    b.sendall(publish(b"quartier/v1/n/\xff/up", b"{}", 1) + publish(b"ok", b"x", 2))
    assert fast.loop_read() == mqtt.MQTT_ERR_SUCCESS
    assert seen == [("ok", b"x", 2)] and handovers == [1]


def ingester(**ingest: Any) -> Ingester:
    return Ingester(
        Settings(
            _env_file=None,
            database={"url": "postgresql://nobody@127.0.0.1:1/none"},
            mqtt={"url": "mqtt://127.0.0.1:1"},  # type: ignore[call-arg]
            ingest=ingest,
        )
    )


def test_messages_of_one_read_are_buffered_in_order_with_one_arrival_time() -> None:
    ing = ingester()
    before = datetime.now(UTC)
    ing._received_many([("t/1", b"a", 5), ("t/2", b"bc", 6)])
    items = list(ing._buffer)
    assert [(m.topic, m.payload, mid, qos) for m, mid, qos in items] == [
        ("t/1", b"a", 5, 1),
        ("t/2", b"bc", 6, 1),
    ]
    assert items[0][0].received_at == items[1][0].received_at >= before
    assert ing._bytes_in == 3 and ing._has_data.is_set()


def test_a_full_buffer_blocks_the_reader_until_there_is_room() -> None:
    ing = ingester(buffer_max=2)
    ing._received_many([("t", b"a", 1), ("t", b"b", 2)])
    done = threading.Event()
    t = threading.Thread(target=lambda: (ing._received_many([("t", b"c", 3)]), done.set()))
    t.start()
    assert not done.wait(0.1)  # blocked: the broker keeps the rest in the session
    ing._buffer.popleft()
    assert done.wait(5)
    assert [mid for _, mid, _ in ing._buffer] == [2, 3]
    t.join()


def test_messages_read_while_stopping_are_not_buffered() -> None:
    """Not buffered, so never acknowledged: the broker redelivers them to the next run."""
    ing = ingester(buffer_max=1)
    ing._received_many([("t", b"a", 1)])
    t = threading.Thread(target=ing._received_many, args=([("t", b"b", 2)],))
    t.start()
    time.sleep(0.05)
    ing.stop_event.set()
    t.join(5)
    assert [mid for _, mid, _ in ing._buffer] == [1]
