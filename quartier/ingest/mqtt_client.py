"""The ingester's MQTT client: paho's client made fast enough for tens of thousands of messages a
second (chunked reads parsed in one pass, batched PUBACKs, a lean path for the common PUBLISH
handed over once per read), and ``mqtt_client``, which builds one from a ``mqtt[s]://`` URL."""

from __future__ import annotations

import logging
import ssl
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

from quartier.config import parse_mqtt_url
from quartier.errors import ConfigError

paho_log = logging.getLogger("paho")
# paho 2.2's network thread may run once more after a clean disconnect() and log "Client is not
# connected" as an error; real connection losses reach on_disconnect and are logged there.
paho_log.addFilter(lambda record: not str(record.msg).startswith("Client is not connected"))


#: bytes read from the socket at once (a loop turn at 15,000 msgs/s finds a few KiB); the messages
#: of one read all go into the ingester's buffer, so it may pass ``ingest.buffer_max`` by that much
READ_BYTES = 1 << 18


class _BufferedSocket:
    """A socket read in large chunks by :meth:`FastClient.loop_read`, which parses every complete
    packet of a chunk in one pass and keeps the incomplete rest here for the next read.

    paho reads every packet with several tiny ``recv`` calls (header byte, length bytes, body),
    each through a few Python calls, and one ``select`` per packet; at tens of thousands of
    messages a second that was most of the ingester's MQTT thread. ``pending()`` stays 0: what
    is kept is never a whole packet, so paho's loop waits in ``select`` for more.
    """

    CHUNK = READ_BYTES

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        #: the pieces of the incomplete packet read so far, joined once it is whole (a packet
        #: that trickles in is copied once, not once per piece)
        self._parts: list[bytes] = []
        #: bytes the kept packet still lacks, at least (its size when it is large: one recv)
        self._need = 0

    def read(self) -> bytes | None:
        """The kept rest followed by what the socket has now: b"" when the peer closed it, None
        while the kept packet is still incomplete; ``BlockingIOError`` when there is nothing."""
        data: bytes = self._sock.recv(max(self.CHUNK, self._need))
        if not data or not self._parts:
            return data
        self._parts.append(data)
        if len(data) < self._need:
            self._need -= len(data)
            return None
        data = b"".join(self._parts)
        self._parts, self._need = [], 0
        return data

    def keep(self, rest: bytes, need: int) -> None:
        """Keep ``rest``, the start of a packet that lacks at least ``need`` (>= 1) bytes."""
        self._parts, self._need = [rest], need

    def recv(self, n: int) -> bytes:
        """paho's own small reads (not used while :meth:`FastClient.loop_read` reads)."""
        if self._parts:
            rest = b"".join(self._parts)
            out, rest = rest[:n], rest[n:]
            self._parts, self._need = ([rest] if rest else []), 0
            return out
        data: bytes = self._sock.recv(n)
        return data

    def pending(self) -> int:
        return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


#: a PUBLISH of the lean path as ``FastClient.fast_on_messages`` gets it: topic, payload, mid
Publish = tuple[str, bytes, int]


class FastClient(mqtt.Client):
    """paho's client with chunked reads parsed in one pass, batched acks, and a lean path for
    the common PUBLISH.

    ``fast_on_messages(publishes)``, when set, receives, once per socket read, every QoS 1
    PUBLISH of an MQTT 5 session with manual acks that carries no properties (what devices
    send) as ``(topic, payload, mid)``, straight from the bytes read: paho would build a
    ``Properties`` object, an ``MQTTMessage`` and match the topic against per-topic callbacks
    for each one. Any other packet takes paho's own handler (PUBLISHes to ``on_message``), in
    the order the packets came: the lean ones before it are handed over first.
    """

    fast_on_messages: Callable[[list[Publish]], None] | None = None

    def _handle_publish(self) -> MQTTErrorCode:
        """A PUBLISH read by paho's own reader (TLS sockets): the lean path too, one at a time.
        The rule is :meth:`loop_read`'s, which parses inline: the same parse as a function
        called per message cost its thread 0.6 µs a message, +16 % (bench/ingest_cpu.py)."""
        fast = self.fast_on_messages
        packet = self._in_packet["packet"]
        if (
            fast is not None
            and self._in_packet["command"] & 0x06 == 0x02  # QoS 1
            and self._protocol == mqtt.MQTTv5
            and self._manual_ack
            and len(packet) > 4
        ):
            pos = 2 + int.from_bytes(packet[0:2], "big")  # after the topic
            if len(packet) > pos + 2 and packet[pos + 2] == 0:  # property length 0
                try:
                    topic = bytes(packet[2:pos]).decode("utf-8")
                except UnicodeDecodeError:
                    return super()._handle_publish()
                mid = int.from_bytes(packet[pos : pos + 2], "big")
                fast([(topic, bytes(packet[pos + 3 :]), mid)])
                return mqtt.MQTT_ERR_SUCCESS
        return super()._handle_publish()

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        return sock if hasattr(sock, "pending") else _BufferedSocket(sock)

    def _ssl_wrap_socket(self, tcp_sock: Any) -> ssl.SSLSocket:
        """paho's TLS handshake, closing the socket when it fails (an untrusted certificate):
        paho leaves it to the garbage collector, one leaked socket per failed attempt. The
        context (``tls_context``) checks the host name itself."""
        assert self._ssl_context is not None
        ssl_sock = self._ssl_context.wrap_socket(
            tcp_sock, server_hostname=self._host, do_handshake_on_connect=False
        )
        try:
            ssl_sock.settimeout(self._connect_timeout)
            ssl_sock.do_handshake()
        except BaseException:
            ssl_sock.close()
            raise
        return ssl_sock

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Read what the socket has (up to :attr:`_BufferedSocket.CHUNK`) and handle every
        complete packet in it; the incomplete rest waits for the next read. A TLS socket (which
        paho already reads without a ``select`` per packet) takes paho's own reading."""
        sock = self._sock
        if type(sock) is not _BufferedSocket or self._in_packet["command"]:
            return super().loop_read(max_packets)
        try:
            data = sock.read()
        except BlockingIOError:
            return mqtt.MQTT_ERR_SUCCESS
        except OSError as err:
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return self._loop_rc_handle(mqtt.MQTT_ERR_CONN_LOST)
        if data is None:
            return mqtt.MQTT_ERR_SUCCESS  # a packet still incomplete
        if not data:
            return self._loop_rc_handle(mqtt.MQTT_ERR_CONN_LOST)
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        fast = self.fast_on_messages
        lean = fast is not None and self._protocol == mqtt.MQTTv5 and self._manual_ack
        publishes: list[Publish] = []
        end = len(data)
        pos = 0
        rc = mqtt.MQTT_ERR_SUCCESS
        while pos < end:
            # fixed header: command byte, remaining length in 1-4 bytes of 7 bits each
            i = pos + 1
            length = 0
            shift = 0
            while i < end:
                byte = data[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
                if shift >= 28:
                    rc = mqtt.MQTT_ERR_PROTOCOL  # more than 4 length bytes
                    break
            else:
                sock.keep(data[pos:], 1)  # the length itself is incomplete
                pos = end
                break
            if rc:
                break
            stop = i + length
            if stop > end:
                sock.keep(data[pos:], stop - end)
                pos = end
                break
            command = data[pos]
            # PUBLISH, QoS 1 (any DUP, RETAIN), long enough for topic length, mid, properties
            if lean and command & 0xF6 == 0x32 and length > 4:
                t = i + 2 + (data[i] << 8 | data[i + 1])  # after the topic
                if stop > t + 2 and data[t + 2] == 0:  # property length 0
                    try:
                        topic = data[i + 2 : t].decode("utf-8")
                    except UnicodeDecodeError:
                        pass  # paho's handler refuses it
                    else:
                        publishes.append((topic, data[t + 3 : stop], data[t] << 8 | data[t + 1]))
                        pos = stop
                        continue
            if publishes:
                assert fast is not None
                fast(publishes)  # the lean ones before this packet first
                publishes = []
            rc = self._handle_packet(command, length, data[i:stop])
            pos = stop
            if rc or self._sock is None:
                break
        if publishes:
            assert fast is not None
            fast(publishes)
        if rc:
            return self._loop_rc_handle(rc)
        return mqtt.MQTT_ERR_SUCCESS

    def _handle_packet(self, command: int, length: int, body: bytes) -> MQTTErrorCode:
        """One whole packet through paho's own handler, as paho's ``_packet_read`` does."""
        self._in_packet = {
            "command": command,
            "have_remaining": 1,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": length,
            "packet": bytearray(body),
            "to_process": 0,
            "pos": 0,
        }
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = mqtt.MQTT_ERR_PROTOCOL
        self._in_packet = {
            "command": 0,
            "have_remaining": 0,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": 0,
            "packet": bytearray(b""),
            "to_process": 0,
            "pos": 0,
        }
        return rc

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK every mid in one write (same bytes as ``ack(mid, 1)`` for each)."""
        if not mids:
            return
        packet = b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids])
        self._packet_queue(0x40, packet, 0, 0)


_PUBACK = struct.Struct("!BBH")


def mqtt_client(
    url: str, client_id: str, *, ca_file: Path | str | None = None
) -> tuple[FastClient, str, int]:
    """A paho MQTT 5 client for ``mqtt[s]://[user:pass@]host:port`` (not yet connected), with the
    URL's username and password; for ``mqtts://``, TLS that verifies the broker's certificate and
    name against ``ca_file`` (PEM), or the system's CA certificates when it is None.

    On a broker with ``use_username_as_clientid`` (Quartier's, docs/security.md) the client id
    is replaced by the username."""
    host, port, user, password, tls = parse_mqtt_url(url)
    client = FastClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.enable_logger(paho_log)
    if user is not None:
        client.username_pw_set(user, password)
    if tls:
        client.tls_set_context(tls_context(ca_file))
    return client, host, port


#: CONNACK reasons of a broker that answers a probe made without an account: success (a broker
#: without accounts) or the refusal of the missing login (Quartier's brokers).
PROBE_ANSWERS = ("Success", "Not authorized", "Bad user name or password")


def probe_url(url: str) -> str:
    """``url`` without its username and password, for a probe of whether the broker answers
    (``/health``). A probe that logged in with the ingester's account would, on a broker with
    ``use_username_as_clientid``, get the ingester's client id: the broker would disconnect the
    ingester and the probe's clean start would end its persistent session."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def tls_context(ca_file: Path | str | None = None) -> ssl.SSLContext:
    """A TLS client context that verifies the broker's certificate and host name, against
    ``ca_file`` or the system's CAs. A CA file that cannot be read is a :class:`ConfigError`."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot use the MQTT CA file {ca_file} ({exc}): check QUARTIER_MQTT__CA_FILE"
        ) from None
