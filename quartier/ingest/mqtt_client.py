"""The ingester's MQTT client: paho's client made fast enough for tens of thousands of messages a
second (buffered reads, several packets per loop turn, batched PUBACKs, a lean path for the
common PUBLISH), and ``mqtt_client``, which builds one from a ``mqtt[s]://`` URL."""

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

from quartier.config import parse_mqtt_url
from quartier.errors import ConfigError

paho_log = logging.getLogger("paho")
# paho 2.2's network thread may run once more after a clean disconnect() and log "Client is not
# connected" as an error; real connection losses reach on_disconnect and are logged there.
paho_log.addFilter(lambda record: not str(record.msg).startswith("Client is not connected"))


class _BufferedSocket:
    """A socket that reads in large chunks and serves paho's small reads from memory.

    paho reads every packet with several tiny ``recv`` calls (header byte, length bytes, body)
    and one ``select`` per packet; at tens of thousands of messages a second those system calls
    are most of the ingester's cost. paho already skips ``select`` while a socket reports
    ``pending()`` bytes (it does so for TLS), which is what this wrapper provides.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, n: int) -> bytes:
        avail = len(self._buf) - self._pos
        if avail == 0:
            data: bytes = self._sock.recv(max(n, 1 << 18))  # BlockingIOError passes through
            if not data:
                return data
            self._buf, self._pos, avail = data, 0, len(data)
        k = min(n, avail)
        out = self._buf[self._pos : self._pos + k]
        self._pos += k
        return out

    def pending(self) -> int:
        return len(self._buf) - self._pos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class FastClient(mqtt.Client):
    """paho's client with buffered reads, several packets per loop turn, batched acks, and a
    lean path for the common PUBLISH.

    ``fast_on_message(topic, payload, mid, qos)``, when set, receives every QoS 1 PUBLISH of an
    MQTT 5 session with manual acks that carries no properties (what devices send), straight from
    the packet: paho would build a ``Properties`` object, an ``MQTTMessage`` and match the topic
    against per-topic callbacks for each one, about half of the MQTT thread's time at 20,000
    messages a second. Anything else takes paho's own path to ``on_message``.
    """

    fast_on_message: Callable[[str, bytes, int, int], None] | None = None

    def _handle_publish(self) -> MQTTErrorCode:
        fast = self.fast_on_message
        packet = self._in_packet["packet"]
        if (
            fast is not None
            and self._in_packet["command"] & 0x06 == 0x02  # QoS 1
            and self._protocol == mqtt.MQTTv5
            and self._manual_ack
        ):
            pos = 2 + int.from_bytes(packet[0:2], "big")  # after the topic
            if len(packet) > pos + 2 and packet[pos + 2] == 0:  # property length 0
                try:
                    topic = bytes(packet[2:pos]).decode("utf-8")
                except UnicodeDecodeError:
                    return super()._handle_publish()
                fast(topic, bytes(packet[pos + 3 :]), int.from_bytes(packet[pos : pos + 2]), 1)
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
        rc = super().loop_read(max_packets)
        turns = 0
        while rc == mqtt.MQTT_ERR_SUCCESS and turns < 1000:
            sock = self._sock
            if sock is None or not getattr(sock, "pending", lambda: 0)():
                break
            rc = super().loop_read(max_packets)
            turns += 1
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
