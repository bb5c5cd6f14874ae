"""MQTT accounts on Mosquitto's dynamic-security plugin: who may publish and subscribe to what.

The broker keeps its accounts in ``dynamic-security.json`` and changes them at once when it gets
a command on ``$CONTROL/dynamic-security/v1`` (no restart; disabling an account disconnects its
client). This module

- writes that file's first version (:func:`initial_config`: Quartier's admin account, which may
  only send those commands, and the ingest account) for ``quartier services up`` and for a
  deployment (``quartier devices init-broker``);
- names the accounts and their topics (:func:`account_for`): a device may publish only to its
  own topics, a network account to its network's, a The Things Stack bridge account to its
  application's ``v3/…`` topics; none of them may subscribe to anything;
- sends the commands (:class:`BrokerAdmin`), for ``quartier devices``.

Why the plugin and not ``password_file`` + ``acl_file``: docs/security.md, "MQTT: accounts,
topics, TLS".
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from quartier.config import parse_mqtt_url, redact_url
from quartier.errors import (
    BadRequestError,
    BrokerUnreachableError,
    ConfigError,
    NotFoundError,
)
from quartier.ingest.pipeline import SUBSCRIPTIONS

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
ADMIN_USER = "quartier-admin"
INGEST_USER = "quartier-ingest"
#: The local broker's simulator account (``quartier services up`` only, never a deployment's):
#: publishes any device's readings, like the fleet it simulates.
SIM_USER = "quartier-sim"
ADMIN_ROLE = "quartier-admin"
INGEST_ROLE = "quartier-ingest"
#: Accounts of The Things Stack bridges: network ``tts``, device ``{application}@{tenant}``.
TTS_NETWORK = "tts"
#: The device name of an account that may publish for every device of its network (a gateway,
#: a bridge, the simulator).
ALL_DEVICES = "*"
#: Mosquitto 2.0's own iteration count for the passwords it hashes (``mosquitto_ctrl``).
_ITERATIONS = 101

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_TTS_APP = re.compile(r"^[a-z0-9](?:-?[a-z0-9]){2,35}@[a-z0-9-]{1,36}$")


@dataclass(frozen=True)
class Account:
    """A publishing account: its broker username and the topics it may publish to."""

    network: str
    device: str
    username: str
    kind: str  # "device", "network" or "tts"
    topics: tuple[str, ...]


def account_for(network: str, device: str) -> Account:
    """The account of ``device`` in ``network`` (``*``: every device of the network; network
    ``tts``: a The Things Stack application ``app@tenant``). Names that could widen a topic
    (wildcards, slashes) are refused."""
    if network == TTS_NETWORK:
        if not _TTS_APP.match(device):
            raise BadRequestError(
                f"{device!r} is not a The Things Stack application id with its tenant "
                "(app-id@tenant-id)"
            )
        topics: tuple[str, ...] = (f"v3/{device}/devices/+/up",)
        return Account(network, device, f"{network}/{device}", "tts", topics)
    if not _NAME.match(network):
        raise BadRequestError(f"network {network!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    if device == ALL_DEVICES:
        topics = (f"quartier/v1/{network}/+/+",)
        return Account(network, device, f"{network}/{ALL_DEVICES}", "network", topics)
    if not _NAME.match(device):
        raise BadRequestError(f"device {device!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    topics = (f"quartier/v1/{network}/{device}/+",)
    return Account(network, device, f"{network}/{device}", "device", topics)


#: SensorThings over MQTT (``quartier sta-mqtt``, OGC 18-088 A.7/A.8) account kinds, made by
#: ``quartier devices add-sta KIND NAME``: the publisher (the ``sta-mqtt`` process: publishes on
#: ``v1.1/…``, receives creates and the broker's log of subscriptions), readers (subscribe to
#: ``v1.1/…``, publish nothing) and writers (readers that may also create Observations).
STA_KINDS = ("publisher", "reader", "writer")


@dataclass(frozen=True)
class StaAccount:
    """A SensorThings over MQTT account: its username and what it may publish and subscribe."""

    kind: str
    username: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def acls(self) -> list[dict[str, Any]]:
        return [
            *({"acltype": "publishClientSend", "topic": t, "allow": True} for t in self.publish),
            *({"acltype": "subscribePattern", "topic": t, "allow": True} for t in self.subscribe),
        ]


def sta_account(kind: str, name: str) -> StaAccount:
    """The ``sta-KIND/NAME`` account (see :data:`STA_KINDS`)."""
    from quartier.sta_mqtt import topics

    if kind not in STA_KINDS:
        raise BadRequestError(f"kind {kind!r} is not one of {', '.join(STA_KINDS)}")
    if not _NAME.match(name):
        raise BadRequestError(f"name {name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    everything = f"{topics.VERSION}/#"
    if kind == "publisher":
        publish: tuple[str, ...] = (everything,)
        subscribe: tuple[str, ...] = (
            *topics.CREATE_FILTERS,
            topics.LOG_SUBSCRIBE,
            topics.LOG_UNSUBSCRIBE,
            topics.LOG_NOTICE,
        )
    elif kind == "writer":
        publish, subscribe = topics.CREATE_FILTERS, (everything,)
    else:
        publish, subscribe = (), (everything,)
    return StaAccount(kind, f"sta-{kind}/{name}", publish, subscribe)


def new_password() -> str:
    return secrets.token_urlsafe(24)


def _dynsec_hash(password: str) -> dict[str, Any]:
    """Mosquitto's stored form of a password: PBKDF2-HMAC-SHA512, base64."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS, 64)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": _ITERATIONS,
    }


def ingest_acls() -> list[dict[str, Any]]:
    """The ingest account's rights: subscribe to the ingest topics, plainly or through any
    shared-subscription group, and receive them."""
    acls: list[dict[str, Any]] = []
    for topic in SUBSCRIPTIONS:
        for pattern in (topic, f"$share/+/{topic}"):
            acls.append({"acltype": "subscribePattern", "topic": pattern, "allow": True})
        acls.append({"acltype": "publishClientReceive", "topic": topic, "allow": True})
    return acls


def initial_config(
    admin_password: str, ingest_password: str, sim_password: str | None = None
) -> dict[str, Any]:
    """The plugin's first ``dynamic-security.json``: the admin account (dynamic-security commands
    only), the ingest account, and with ``sim_password`` the local simulator's (publishes to
    ``quartier/v1/+/+/+``); everything not allowed is denied (publish, subscribe)."""
    control = f"{CONTROL_TOPIC}/#"
    admin_acls = [
        {"acltype": "publishClientSend", "topic": control, "allow": True},
        {"acltype": "publishClientReceive", "topic": control, "allow": True},
        {"acltype": "subscribePattern", "topic": control, "allow": True},
    ]
    sim = [] if sim_password is None else [SIM_USER]
    return {
        "clients": [
            *(
                {
                    "username": name,
                    "textName": "Quartier: the local simulator",
                    **_dynsec_hash(sim_password or ""),
                    "roles": [{"rolename": name}],
                }
                for name in sim
            ),
            {
                "username": ADMIN_USER,
                "textName": "Quartier: manages the device accounts",
                **_dynsec_hash(admin_password),
                "roles": [{"rolename": ADMIN_ROLE}],
            },
            {
                "username": INGEST_USER,
                "textName": "Quartier: the ingester",
                **_dynsec_hash(ingest_password),
                "roles": [{"rolename": INGEST_ROLE}],
            },
        ],
        "roles": [
            {"rolename": ADMIN_ROLE, "acls": admin_acls},
            {"rolename": INGEST_ROLE, "acls": ingest_acls()},
            *(
                {
                    "rolename": name,
                    "acls": [
                        {
                            "acltype": "publishClientSend",
                            "topic": "quartier/v1/+/+/+",
                            "allow": True,
                        }
                    ],
                }
                for name in sim
            ),
        ],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": True,
            "subscribe": False,
            "unsubscribe": True,
        },
    }


def write_initial_config(
    path: Path, admin_password: str, ingest_password: str, sim_password: str | None = None
) -> None:
    """Write :func:`initial_config` to ``path`` (mode 0600: it holds password hashes)."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    config = initial_config(admin_password, ingest_password, sim_password)
    path.write_text(json.dumps(config, indent=2))


class BrokerAdmin:
    """Quartier's admin connection to the broker's dynamic-security plugin; a context manager.

    Each method sends one command list and waits for the broker's answer; a refused command is a
    :class:`BadRequestError` (or :class:`NotFoundError` for an account that does not exist)."""

    def __init__(
        self, admin_url: str, *, ca_file: Path | str | None = None, timeout: float = 10.0
    ) -> None:
        from quartier.ingest.mqtt_client import tls_context

        self._url = admin_url
        self._host, self._port, user, password, tls = parse_mqtt_url(admin_url)
        if user is None:
            raise ConfigError(
                f"the admin MQTT URL {redact_url(admin_url)} has no user and password: set "
                "QUARTIER_MQTT__ADMIN_URL=mqtt[s]://quartier-admin:PASSWORD@host:port"
            )
        self._timeout = timeout
        self._lock = threading.Condition()
        self._responses: dict[str, dict[str, Any]] = {}
        self._connect_reason: str | None = None
        self._subscribed = False
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{user}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.enable_logger(logging.getLogger("paho"))
        self._client.username_pw_set(user, password)
        if tls:
            self._client.tls_set_context(tls_context(ca_file))
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # paho's network thread
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._lock:
            self._connect_reason = str(reason)
            self._lock.notify_all()
        if not reason.is_failure:
            client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        with self._lock:
            self._subscribed = not any(r.is_failure for r in reasons)
            if not self._subscribed:
                self._connect_reason = "not authorised to manage accounts"
            self._lock.notify_all()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        with self._lock:
            for response in doc.get("responses", []):
                correlation = response.get("correlationData")
                if correlation:
                    self._responses[correlation] = response
            self._lock.notify_all()

    def __enter__(self) -> BrokerAdmin:
        address = f"{self._host}:{self._port}"
        try:
            self._client.connect(self._host, self._port, keepalive=30)
        except OSError as exc:
            raise BrokerUnreachableError(
                f"cannot reach the MQTT broker at {address} ({exc.strerror or exc}): start the "
                "local servers with `quartier services up`, or check QUARTIER_MQTT__ADMIN_URL",
                address,
            ) from None
        self._client.loop_start()
        with self._lock:
            ok = self._lock.wait_for(
                lambda: self._subscribed or self._connect_reason not in (None, "Success"),
                self._timeout,
            )
        if not ok or not self._subscribed:
            self.close()
            reason = self._connect_reason or "no answer"
            raise ConfigError(
                f"the broker at {address} refused Quartier's admin account ({reason}): check "
                "QUARTIER_MQTT__ADMIN_URL (`quartier services up` keeps the local one), and that "
                "the broker loads the dynamic-security plugin (deploy/mosquitto/)"
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def command(self, command: str, **fields: Any) -> dict[str, Any]:
        """Send one dynamic-security command; its response (``data`` for the ``list…`` and
        ``get…`` commands). An ``error`` in the response is raised."""
        correlation = uuid.uuid4().hex
        body = {"commands": [{"command": command, "correlationData": correlation, **fields}]}
        self._client.publish(CONTROL_TOPIC, json.dumps(body), qos=1)
        with self._lock:
            if not self._lock.wait_for(lambda: correlation in self._responses, self._timeout):
                raise BrokerUnreachableError(
                    f"the broker did not answer the {command} command within {self._timeout:g} s",
                    f"{self._host}:{self._port}",
                )
            response = self._responses.pop(correlation)
        error = response.get("error")
        if error:
            if "not found" in str(error).lower():
                raise NotFoundError(f"the broker has no such account ({command}: {error})")
            raise BadRequestError(f"the broker refused {command}: {error}")
        return response

    # ------------------------------------------------------------------ accounts
    def create(self, account: Account, password: str) -> None:
        """A role with the account's topics (publish only) and a client with it."""
        acls = [{"acltype": "publishClientSend", "topic": t, "allow": True} for t in account.topics]
        self.command("createRole", rolename=account.username, acls=acls)
        try:
            self.command(
                "createClient",
                username=account.username,
                password=password,
                textname=f"Quartier {account.kind}",
                roles=[{"rolename": account.username}],
            )
        except BadRequestError:
            self.command("deleteRole", rolename=account.username)
            raise

    def create_sta(self, account: StaAccount, password: str) -> None:
        """A role with the SensorThings account's rights and a client with it."""
        self.command("createRole", rolename=account.username, acls=account.acls())
        try:
            self.command(
                "createClient",
                username=account.username,
                password=password,
                textname=f"Quartier SensorThings {account.kind}",
                roles=[{"rolename": account.username}],
            )
        except BadRequestError:
            self.command("deleteRole", rolename=account.username)
            raise

    def create_ingester(self, username: str, password: str) -> None:
        """Another ingest account (each ingester process of a shared subscription needs its
        own: the client id is the username)."""
        self.command(
            "createClient",
            username=username,
            password=password,
            textname="Quartier: an ingester",
            roles=[{"rolename": INGEST_ROLE}],
        )

    def set_password(self, username: str, password: str) -> None:
        """A new password; the broker disconnects a client still connected with the old one."""
        self.command("setClientPassword", username=username, password=password)

    def disable(self, username: str) -> None:
        """Refuse the account from now on and disconnect its client."""
        self.command("disableClient", username=username)

    def enable(self, username: str) -> None:
        self.command("enableClient", username=username)

    def delete(self, username: str) -> None:
        self.command("deleteClient", username=username)
        self.command("deleteRole", rolename=username)

    def usernames(self) -> list[str]:
        data = self.command("listClients", count=-1, offset=0).get("data", {})
        return list(data.get("clients", []))
