"""MQTT access control and TLS, against real Mosquitto brokers with accounts on (issue #12).

The module's broker is what `quartier services up` starts without the development override: the
dynamic-security plugin, anonymous clients refused, the client id replaced by the username, and a
TLS listener with a CA generated for the test. Device accounts are made with `quartier devices`.
A second, separate Mosquitto (TLS only, ``password_file`` + ``acl_file``) stands in for The Things
Stack's MQTT server. The figures (attempts, refusals, seconds) are printed (``pytest -s``).
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from quartier.cli.main import app
from quartier.config import Settings, parse_mqtt_url
from quartier.ingest.mqtt import Ingester
from quartier.ingest.mqtt_client import mqtt_client
from quartier.services import (
    ACCOUNTS_FILE,
    LocalServices,
    ServiceState,
    find_mosquitto,
    free_port,
    make_tls_files,
    port_open,
)
from quartier.store.credentials import verify_password

pytestmark = pytest.mark.services
TTN_DIR = Path(__file__).parent / "data" / "ttn_uplinks" / "thingsboard_data_converters"
READING = b'{"time": "2026-11-01T10:00:00Z", "quantity": "pm25", "value": 7.5}'


def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def broker() -> Iterator[tuple[LocalServices, ServiceState]]:
    state_dir = Path(tempfile.mkdtemp(prefix="quartier-auth-"))
    os.chmod(state_dir, 0o755)
    local = LocalServices(state_dir, fast_unsafe=True, allow_anonymous=False, tls=True)
    try:
        yield local, local.up()
    finally:
        local.down()
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def cli(
    broker: tuple[LocalServices, ServiceState], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Any]:
    """``quartier …`` in-process against this module's broker and the test's database."""
    _, state = broker
    assert state.mqtt_admin_url
    monkeypatch.setenv("QUARTIER_DATABASE__URL", db_url)
    monkeypatch.setenv("QUARTIER_MQTT__URL", state.mqtt_url)
    monkeypatch.setenv("QUARTIER_MQTT__ADMIN_URL", state.mqtt_admin_url)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, result.output
        return result

    return run


def add_device(cli: Callable[..., Any], network: str, device: str) -> str:
    """``quartier devices add``; the password it shows once."""
    out = cli("devices", "add", network, device).stdout
    lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert lines["username"].strip() == f"{network}/{device}"
    return str(lines["password"].strip())


class Probe:
    """One MQTT 5 client that records what the broker answered."""

    def __init__(
        self,
        port: int,
        username: str | None,
        password: str | None,
        *,
        client_id: str = "",
        tls_ca: Path | None = None,
        reconnect: bool = False,
    ) -> None:
        self.events: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set_context(ssl.create_default_context(cafile=str(tls_ca)))
        c = self.client
        # a refused probe's loop thread waits this long before it tries again; stop() joins it
        c.reconnect_delay_set(min_delay=0.05, max_delay=1)  # type: ignore[arg-type]
        c.on_connect = lambda cl, u, f, rc, p: self._add("connect", str(rc))
        c.on_disconnect = lambda cl, u, f, rc, p: self._add("disconnect", str(rc))
        c.on_publish = lambda cl, u, mid, rc, p: self._add("puback", str(rc))
        c.on_subscribe = lambda cl, u, mid, rcs, p: self._add("suback", [str(r) for r in rcs])
        c.on_message = lambda cl, u, m: self._add("message", m.topic)
        self.port = port
        self.reconnect = reconnect

    def _add(self, kind: str, value: Any) -> None:
        with self.lock:
            self.events.append((kind, value))

    def of(self, kind: str) -> list[Any]:
        with self.lock:
            return [v for k, v in self.events if k == kind]

    def start(self) -> Probe:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        assert wait_for(lambda: bool(self.of("connect")), 10), "no CONNACK"
        return self

    @property
    def accepted(self) -> bool:
        return bool(self.of("connect")[0] == "Success")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def refused_connect(port: int, username: str | None, password: str | None, **kw: Any) -> bool:
    probe = Probe(port, username, password, **kw).start()
    probe.stop()
    return not probe.accepted


@pytest.fixture
def ingester(broker: tuple[LocalServices, ServiceState], db_url: str) -> Iterator[Ingester]:
    """Quartier's ingester with the ingest account `services up` made (no session kept)."""
    _, state = broker
    settings = Settings(
        _env_file=None,
        database={"url": db_url},
        mqtt={"url": state.mqtt_url},
        ingest={"client_id": "quartier-ingest", "batch_ms": 50, "session_expiry_seconds": 0},
    )
    ing = Ingester(settings)
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    assert ing.connected.wait(10)
    yield ing
    ing.stop_event.set()
    thread.join(15)
    assert not thread.is_alive()


def count(url: str, sql: str, *args: object) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, args).fetchone()
        assert row is not None
        return int(row[0])


# --------------------------------------------------------------------------- the local broker


def test_services_up_turns_anonymous_access_off(
    broker: tuple[LocalServices, ServiceState],
) -> None:
    local, state = broker
    assert state.mqtt_auth and state.mqtt_admin_url and state.mqtts_url
    _, _, user, password, tls = parse_mqtt_url(state.mqtt_url)
    assert (user, tls) == ("quartier-ingest", False) and password
    accounts = local.state_dir / ACCOUNTS_FILE
    assert accounts.stat().st_mode & 0o077 == 0
    conf = (Path(state.mqtt_dir) / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "allow_anonymous true" not in conf
    assert conf.count("use_username_as_clientid true") == 2  # both listeners
    attempts = 20
    refused = sum(refused_connect(state.mqtt_port, None, None) for _ in range(attempts))
    wrong = sum(
        refused_connect(state.mqtt_port, "quartier-ingest", "guess-" + str(i)) for i in range(5)
    )
    print(  # noqa: T201 (the figures for docs/reliability.md)
        f"\nanonymous connects: {attempts} tried, {refused} refused; wrong password: 5/{wrong}"
    )
    assert (refused, wrong) == (attempts, 5)
    assert not refused_connect(state.mqtt_port, user, password)


def test_the_development_override_says_so(caplog: pytest.LogCaptureFixture) -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="quartier-anon-"))
    os.chmod(state_dir, 0o755)
    local = LocalServices(state_dir, allow_anonymous=True)
    root = None
    try:
        with caplog.at_level("WARNING", logger="quartier.services"):
            port, _, root = local._start_mosquitto(None)  # the broker alone, as up() starts it
        assert "allow_anonymous true" in (root / "mosquitto.conf").read_text()
        assert not refused_connect(port, None, None)
    finally:
        if root is not None:
            local._stop_mosquitto(root)
        shutil.rmtree(state_dir, ignore_errors=True)
    assert "lets anyone publish and subscribe without an account" in caplog.text


# --------------------------------------------------------------------------- device accounts


def test_a_device_publishes_only_to_its_own_topics_and_subscribes_to_nothing(
    broker: tuple[LocalServices, ServiceState],
    cli: Callable[..., Any],
    ingester: Ingester,
    network: str,
    db_url: str,
) -> None:
    _, state = broker
    pw_a = add_device(cli, network, "dev-a")
    add_device(cli, network, "dev-b")
    stored = count(db_url, "select count(*) from device_credential where network = %s", network)
    assert stored == 2
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "select password_hash from device_credential where username = %s",
            (f"{network}/dev-a",),
        ).fetchone()
    assert row is not None and pw_a not in row[0] and verify_password(pw_a, row[0])

    dev = Probe(state.mqtt_port, f"{network}/dev-a", pw_a).start()
    assert dev.accepted
    foreign = [
        f"quartier/v1/{network}/dev-b/up",  # another device of its network
        f"quartier/v1/other-{network}/dev-a/up",  # its name in another network
        "v3/some-app@ttn/devices/dev-a/up",  # a The Things Stack topic
        f"quartier/v1/{network}/dev-a/up/deeper",  # below its topics
    ]
    attempts = 5
    for topic in foreign * attempts:
        dev.client.publish(topic, READING, qos=1)
    dev.client.publish(f"quartier/v1/{network}/dev-a/up", READING, qos=1)
    for pattern in ("#", f"quartier/v1/{network}/#", "$share/quartier-ingest/quartier/v1/+/+/up"):
        dev.client.subscribe(pattern, qos=1)
    n = len(foreign) * attempts + 1
    assert wait_for(lambda: len(dev.of("puback")) == n and len(dev.of("suback")) == 3)
    dev.stop()
    refused = dev.of("puback").count("Not authorized")
    sub_refused = sum(r == ["Not authorized"] for r in dev.of("suback"))
    print(  # noqa: T201 (the figures for docs/reliability.md)
        f"\nforeign publishes: {n - 1} tried, {refused} refused; subscriptions: 3/{sub_refused}"
    )
    assert (refused, sub_refused) == (n - 1, 3)
    assert dev.of("message") == []

    # its own reading arrives, nothing else does: not stored, not even as a reject
    assert wait_for(lambda: count(db_url, "select count(*) from observation") == 1)
    time.sleep(0.5)
    assert count(db_url, "select count(*) from observation") == 1
    assert count(db_url, "select count(*) from ingest_reject") == 0
    names = count(db_url, "select count(*) from thing where name like %s", f"%{network}/dev-b%")
    assert names == 0


def test_a_revoked_device_is_disconnected_and_refused_within_seconds(
    broker: tuple[LocalServices, ServiceState], cli: Callable[..., Any], network: str
) -> None:
    _, state = broker
    password = add_device(cli, network, "dev-r")
    dev = Probe(state.mqtt_port, f"{network}/dev-r", password).start()
    assert dev.accepted
    t0 = time.monotonic()
    cli("devices", "revoke", network, "dev-r")
    assert wait_for(lambda: bool(dev.of("disconnect")), 10)
    seconds = time.monotonic() - t0
    dev.stop()
    refused = sum(refused_connect(state.mqtt_port, f"{network}/dev-r", password) for _ in range(5))
    print(  # noqa: T201 (the figures for docs/reliability.md)
        f"\nrevoked: disconnected {seconds:.2f} s after `devices revoke` began; 5/{refused} refused"
    )
    assert seconds < 5 and refused == 5
    listing = cli("devices", "list", "--network", network).stdout
    assert "revoked" in listing
    # rotate lets it in again, with the new password only
    out = cli("devices", "rotate", network, "dev-r").stdout
    new = out.split("password:", 1)[1].split()[0]
    assert not refused_connect(state.mqtt_port, f"{network}/dev-r", new)
    assert refused_connect(state.mqtt_port, f"{network}/dev-r", password)


def test_rotate_makes_the_old_password_fail(
    broker: tuple[LocalServices, ServiceState], cli: Callable[..., Any], network: str
) -> None:
    _, state = broker
    old = add_device(cli, network, "dev-x")
    connected = Probe(state.mqtt_port, f"{network}/dev-x", old).start()
    out = cli("devices", "rotate", network, "dev-x").stdout
    new = out.split("password:", 1)[1].split()[0]
    assert new != old
    assert wait_for(lambda: bool(connected.of("disconnect")), 10)  # the old session is ended
    connected.stop()
    assert refused_connect(state.mqtt_port, f"{network}/dev-x", old)
    assert not refused_connect(state.mqtt_port, f"{network}/dev-x", new)


def test_devices_cli_errors_are_one_line(cli: Callable[..., Any], network: str) -> None:
    add_device(cli, network, "dup")
    again = cli("devices", "add", network, "dup", code=1)
    assert "has credentials already" in again.output and "Traceback" not in again.output
    wild = cli("devices", "add", network, "dev/#", code=1)
    assert "must be 1-64 of" in wild.output
    missing = cli("devices", "revoke", network, "nobody", code=1)
    assert "no credentials" in missing.output


def test_no_one_takes_the_ingesters_session(
    broker: tuple[LocalServices, ServiceState],
    cli: Callable[..., Any],
    ingester: Ingester,
    network: str,
    db_url: str,
) -> None:
    _, state = broker
    log = Path(state.mqtt_dir) / "mosquitto.log"
    before = log.read_text() if log.exists() else ""
    password = add_device(cli, network, "thief")
    # a device asking for the ingester's client id gets its own username as id
    thief = Probe(state.mqtt_port, f"{network}/thief", password, client_id="quartier-ingest")
    thief.start()
    assert thief.accepted
    # the ingester's username without its password is refused
    assert refused_connect(state.mqtt_port, "quartier-ingest", "not-the-password")
    assert refused_connect(state.mqtt_port, None, None, client_id="quartier-ingest")
    thief.client.publish(f"quartier/v1/{network}/thief/up", READING, qos=1)
    # the ingester kept its connection and its subscriptions: it stores the reading
    assert wait_for(lambda: count(db_url, "select count(*) from observation") == 1)
    thief.stop()
    assert ingester.connected.is_set()
    new_log = log.read_text()[len(before) :]
    assert "already connected, closing old connection" not in new_log
    assert f"as {network}/thief" in new_log


# --------------------------------------------------------------------------- TLS


def test_mqtts_with_the_test_ca_works_and_plaintext_to_the_tls_port_fails(
    broker: tuple[LocalServices, ServiceState],
) -> None:
    _, state = broker
    assert state.mqtts_url and state.mqtts_port and state.mqtt_ca_file
    client, host, port = mqtt_client(state.mqtts_url, "tls-check", ca_file=state.mqtt_ca_file)
    answers: list[str] = []
    client.on_connect = lambda c, u, f, rc, p: answers.append(str(rc))
    client.connect(host, port)
    client.loop_start()
    assert wait_for(lambda: bool(answers), 10)
    client.disconnect()
    client.loop_stop()
    assert answers == ["Success"]
    # plain MQTT to the TLS port: no CONNACK, the connection is dropped
    _, _, user, password, _ = parse_mqtt_url(state.mqtt_url)
    plain = Probe(state.mqtts_port, user, password)
    plain.client.connect("127.0.0.1", state.mqtts_port, keepalive=5)
    plain.client.loop_start()
    time.sleep(1.5)
    plain.client.loop_stop()
    assert plain.of("connect") == []
    # TLS without the CA (the system's CAs) does not trust the broker
    with (
        socket.create_connection(("127.0.0.1", state.mqtts_port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1").close()


def test_health_check_speaks_mqtts_and_leaves_the_ingesters_session_alone(
    broker: tuple[LocalServices, ServiceState], ingester: Ingester
) -> None:
    """/health probes without logging in: with the ingester's account it would get the
    ingester's client id (use_username_as_clientid), disconnect it and end its session."""
    from quartier.api.app import _check_mqtt

    _, state = broker
    assert state.mqtts_url
    log = Path(state.mqtt_dir) / "mosquitto.log"
    before = len(log.read_text())
    good = Settings(
        _env_file=None,
        mqtt={"url": state.mqtts_url, "ca_file": state.mqtt_ca_file},
    )
    plain = Settings(_env_file=None, mqtt={"url": state.mqtt_url})  # the ingester's URL
    assert all(_check_mqtt(s).ok for s in (good, plain, good, plain))
    no_ca = good.model_copy(update={"mqtt": good.mqtt.model_copy(update={"ca_file": None})})
    assert not _check_mqtt(no_ca).ok
    closed = Settings(_env_file=None, mqtt={"url": f"mqtt://127.0.0.1:{free_port()}"})
    assert not _check_mqtt(closed).ok
    time.sleep(0.3)
    assert ingester.connected.is_set()
    assert "already connected, closing old connection" not in log.read_text()[before:]


def test_the_simulator_publishes_over_mqtts_with_a_network_account(
    broker: tuple[LocalServices, ServiceState],
    cli: Callable[..., Any],
    ingester: Ingester,
    network: str,
    db_url: str,
) -> None:
    from quartier.sensors_sim.fleet import Message
    from quartier.sensors_sim.publisher import publish

    _, state = broker
    password = add_device(cli, network, "*")
    url = f"mqtts://{quote(network + '/*', safe='')}:{password}@127.0.0.1:{state.mqtts_port}"
    msgs = [Message(f"quartier/v1/{network}/s-{i}/up", READING) for i in range(5)]
    other = [Message(f"quartier/v1/x{network}/s-0/up", READING)]
    sent = publish(url, msgs + other, rate=None, client_id="sim", ca_file=state.mqtt_ca_file)
    assert sent == 5  # the other network's message is refused
    assert wait_for(lambda: count(db_url, "select count(*) from observation") == 5)


# --------------------------------------------------------------------------- The Things Stack


@dataclass(frozen=True)
class TtsStandIn:
    port: int
    ca: Path
    api_key: str
    server_password: str


@pytest.fixture
def tts_standin() -> Iterator[TtsStandIn]:
    """A separate TLS-only Mosquitto standing in for The Things Stack's MQTT server: user
    ``test-decentlab@ttn`` with an API key as password may read its application's uplinks,
    ``tts-server`` publishes them (``password_file`` + ``acl_file``)."""
    binary = find_mosquitto()
    assert binary is not None
    root = Path(tempfile.mkdtemp(prefix="quartier-tts-"))
    os.chmod(root, 0o755)
    ca = make_tls_files(root / "tls")
    os.chmod(root / "tls" / "server.key", 0o644)  # the broker may run as another user
    api_key = "NNSXS." + uuid.uuid4().hex.upper()
    server_password = uuid.uuid4().hex
    passwd = root / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), "test-decentlab@ttn", api_key],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["mosquitto_passwd", "-b", str(passwd), "tts-server", server_password],
        check=True,
        capture_output=True,
    )
    os.chmod(passwd, 0o644)
    acl = root / "acl"
    acl.write_text(
        "user test-decentlab@ttn\ntopic read v3/test-decentlab@ttn/devices/+/up\n"
        "user tts-server\ntopic write v3/#\n"
    )
    port = free_port()
    conf = root / "mosquitto.conf"
    conf.write_text(
        f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {passwd}\nacl_file {acl}\n"
        f"cafile {ca}\ncertfile {root / 'tls' / 'server.crt'}\n"
        f"keyfile {root / 'tls' / 'server.key'}\n"
    )
    proc = subprocess.Popen([str(binary), "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: port_open(port), 10)
        yield TtsStandIn(port, ca, api_key, server_password)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def test_ingester_subscribes_to_the_things_stack_over_tls(
    tts_standin: TtsStandIn, db_url: str
) -> None:
    tts = tts_standin
    user = "test-decentlab@ttn"
    settings = Settings(
        _env_file=None,
        database={"url": db_url},
        mqtt={
            "url": f"mqtts://{quote(user)}:{tts.api_key}@localhost:{tts.port}",
            "ca_file": tts.ca,
        },
        ingest={
            "client_id": f"quartier-{uuid.uuid4().hex[:6]}",
            "topics": [f"v3/{user}/devices/+/up"],
            "ttn_codecs": {"03022": "decentlab-dl-pm"},
            "batch_ms": 50,
            "session_expiry_seconds": 0,
        },
    )
    ing = Ingester(settings)
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    try:
        assert ing.connected.wait(10)
        # the stand-in's own side: The Things Stack publishing its applications' uplinks
        uplink = (TTN_DIR / "Decentlab_DL-PM__payload.json").read_bytes()
        server = Probe(tts.port, "tts-server", tts.server_password, tls_ca=tts.ca).start()
        assert server.accepted
        server.client.publish(f"v3/{user}/devices/03022/up", uplink, qos=1)
        server.client.publish("v3/other-app@ttn/devices/03022/up", uplink, qos=1)
        assert wait_for(lambda: len(server.of("puback")) == 2)
        server.stop()
        assert wait_for(lambda: count(db_url, "select count(*) from observation") == 7)
        time.sleep(0.5)
        assert count(db_url, "select count(*) from observation") == 7  # not the other app's
        names = count(db_url, "select count(*) from thing where name = 'ttn-test-decentlab/03022'")
        assert names == 1
    finally:
        ing.stop_event.set()
        thread.join(15)
    assert not thread.is_alive()


# --------------------------------------------------------------------------- more accounts


def test_another_ingester_gets_its_own_account(
    broker: tuple[LocalServices, ServiceState], cli: Callable[..., Any]
) -> None:
    _, state = broker
    name = f"w{uuid.uuid4().hex[:6]}"
    out = cli("devices", "add-ingester", name).stdout
    password = out.split("password:", 1)[1].split()[0]
    worker = Probe(state.mqtt_port, f"quartier-ingest-{name}", password).start()
    assert worker.accepted
    worker.client.subscribe(
        [("$share/workers/quartier/v1/+/+/up", 1), ("v3/+/devices/+/up", 1), ("#", 1)]
    )
    assert wait_for(lambda: bool(worker.of("suback")))
    worker.client.publish("quartier/v1/x/y/up", READING, qos=1)  # it may not publish
    assert wait_for(lambda: bool(worker.of("puback")))
    worker.stop()
    assert worker.of("suback") == [["Granted QoS 1", "Granted QoS 1", "Not authorized"]]
    assert worker.of("puback") == ["Not authorized"]


def test_init_broker_writes_a_config_a_broker_starts_with(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o777)
    runner = CliRunner()
    result = runner.invoke(app, ["devices", "init-broker", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    words = result.stdout.split()
    admin_pw = words[words.index("quartier-admin") + 2]
    ingest_pw = words[words.index("quartier-ingest") + 2]
    dynsec = tmp_path / "data" / "dynamic-security.json"
    assert dynsec.stat().st_mode & 0o077 == 0
    assert admin_pw not in dynsec.read_text() and ingest_pw not in dynsec.read_text()
    again = runner.invoke(app, ["devices", "init-broker", str(tmp_path / "data")])
    assert again.exit_code == 1 and "exists already" in again.output
    from quartier.services import find_dynsec_plugin

    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"user {getpass.getuser()}\nallow_anonymous false\nplugin {find_dynsec_plugin()}\n"
        f"plugin_opt_config_file {dynsec}\nlistener {port} 127.0.0.1\n"
        "use_username_as_clientid true\n"
    )
    binary = find_mosquitto()
    assert binary is not None
    proc = subprocess.Popen([str(binary), "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: port_open(port), 10)
        assert not refused_connect(port, "quartier-ingest", ingest_pw)
        assert refused_connect(port, None, None)
        from quartier.mqtt_accounts import BrokerAdmin

        with BrokerAdmin(f"mqtt://quartier-admin:{admin_pw}@127.0.0.1:{port}") as admin:
            assert set(admin.usernames()) == {"quartier-admin", "quartier-ingest"}
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_deploy_config_serves_tls_with_accounts(tmp_path: Path) -> None:
    """deploy/mosquitto/ as the README mounts it, with /mosquitto/… moved under tmp_path and
    this machine's plugin path: TLS on the 8883 listener (another port here), no anonymous."""
    from quartier.mqtt_accounts import write_initial_config
    from quartier.services import MOSQUITTO_CONF, find_dynsec_plugin

    os.chmod(tmp_path, 0o777)
    deploy = Path(__file__).parent.parent / "deploy" / "mosquitto"
    base = tmp_path / "mosquitto"
    (base / "config" / "quartier.d").mkdir(parents=True)
    (base / "data").mkdir()
    os.chmod(base / "data", 0o777)
    make_tls_files(base / "certs")
    os.chmod(base / "certs" / "server.key", 0o644)
    plain, tls = free_port(), free_port()

    def moved(text: str) -> str:
        text = text.replace("/mosquitto/", f"{base}/")
        text = text.replace("/usr/lib/mosquitto_dynamic_security.so", find_dynsec_plugin())
        text = text.replace("listener 1883 0.0.0.0", f"listener {plain} 127.0.0.1")
        return text.replace("listener 8883 0.0.0.0", f"listener {tls} 127.0.0.1")

    (base / "config" / "mosquitto.conf").write_text(
        f"user {getpass.getuser()}\nlog_dest stderr\n"
        + moved((deploy / "mosquitto.conf").read_text())
    )
    (base / "config" / "quartier.d" / "10-quartier.conf").write_text(
        moved(MOSQUITTO_CONF.read_text()).replace("log_dest stdout", "")
    )
    (base / "config" / "quartier.d" / "20-tls.conf").write_text(
        moved((deploy / "tls.conf").read_text())
    )
    write_initial_config(base / "data" / "dynamic-security.json", "admin-pw", "ingest-pw")
    binary = find_mosquitto()
    assert binary is not None
    proc = subprocess.Popen(
        [str(binary), "-c", str(base / "config" / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: port_open(plain) and port_open(tls), 10), proc.poll()
        ca = base / "certs" / "ca.crt"
        assert not refused_connect(tls, "quartier-ingest", "ingest-pw", tls_ca=ca)
        assert refused_connect(tls, None, None, tls_ca=ca)
        assert refused_connect(plain, None, None)
    finally:
        proc.terminate()
        err = proc.communicate(timeout=10)[1].decode(errors="replace")
    assert "Error" not in err, err


def test_quartier_simulate_publishes_with_the_local_simulator_account(
    broker: tuple[LocalServices, ServiceState], ingester: Ingester, network: str, db_url: str
) -> None:
    """`services up` records the simulator's account; the settings fill it in and `simulate`
    publishes with it (the ingest account may not publish), to any device of any network."""
    from datetime import UTC, datetime

    from quartier.sensors_sim.run import simulate

    local, state = broker
    assert state.mqtt_sim_url and parse_mqtt_url(state.mqtt_sim_url)[2] == "quartier-sim"
    settings = Settings(
        _env_file=None,
        database={"url": db_url},
        services={"state_dir": local.state_dir},
    ).with_local_services()
    assert settings.mqtt.publish_url == state.mqtt_sim_url
    stats = simulate(
        settings,
        seed=1,
        sensors=3,
        interval_s=60,
        start=datetime(2026, 11, 1, 10, tzinfo=UTC),
        count=1,
        duration_s=None,
        speedtests_per_tick=2,
        stop_event=None,
        network=network,
    )
    assert stats.messages == 5
    assert wait_for(lambda: count(db_url, "select count(*) from speedtest") == 2)
    assert wait_for(lambda: count(db_url, "select count(*) from observation") >= 3)
    _, _, user, password, _ = parse_mqtt_url(state.mqtt_sim_url)
    reader = Probe(state.mqtt_port, user, password).start()
    reader.client.subscribe("quartier/v1/#", qos=1)
    assert wait_for(lambda: bool(reader.of("suback")))
    reader.stop()
    assert reader.of("suback") == [["Not authorized"]]


def test_a_refused_subscription_keeps_the_ingester_unhealthy_and_says_why(
    broker: tuple[LocalServices, ServiceState], db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The ingester counts as connected (its health metric) only once the broker granted every
    subscription: a topic the ingest account may not read would otherwise look healthy while
    nothing published there ever arrives."""
    _, state = broker
    settings = Settings(
        _env_file=None,
        database={"url": db_url},
        mqtt={"url": state.mqtt_url},
        ingest={
            "client_id": "quartier-ingest",
            "session_expiry_seconds": 0,
            "topics": ["quartier/v1/+/+/up", "not-for-the-ingester/#"],
        },
    )
    ing = Ingester(settings)
    thread = threading.Thread(target=ing.run, daemon=True)
    with caplog.at_level(logging.INFO, logger="quartier.ingest.mqtt"):
        thread.start()
        try:
            assert wait_for(lambda: "refused the subscription" in caplog.text)
            assert not ing.connected.is_set()
        finally:
            ing.stop_event.set()
            thread.join(15)
    assert "not-for-the-ingester/#" in caplog.text
    assert "quartier/v1/+/+/up (" not in caplog.text  # the granted topic is not named
