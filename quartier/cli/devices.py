"""``quartier devices``: per-device credentials for the MQTT broker and the HTTP ingest.

Each change is made in the database and at the broker together: the database row is written in a
transaction that commits only once the broker has taken the change, so a broker that refuses
leaves the table as it was. The password is printed once and kept only as hashes (the table's,
and the broker's own)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from quartier.cli.common import console, fail, settings, user_errors
from quartier.cli.connect import connect
from quartier.config import Settings
from quartier.errors import ConfigError

app = typer.Typer(
    help="Device accounts: MQTT (publish to the device's own topics only) and HTTP pushes.",
    no_args_is_help=True,
)

NETWORK_HELP = "network (the topic's {network}); 'tts' for a The Things Stack bridge account"
DEVICE_HELP = (
    "device (the topic's {device}); '*' for an account that publishes for every device of the "
    "network (a gateway, the simulator); for network 'tts' the application, app-id@tenant-id"
)
Network = Annotated[str, typer.Argument(help=NETWORK_HELP)]
Device = Annotated[str, typer.Argument(help=DEVICE_HELP)]


def _admin_url(s: Settings) -> str:
    if not s.mqtt.admin_url:
        raise ConfigError(
            "no MQTT admin account: set QUARTIER_MQTT__ADMIN_URL=mqtt[s]://quartier-admin:"
            "PASSWORD@host:port, or start the local broker with accounts (`quartier services up` "
            "without QUARTIER_SERVICES__MQTT_ALLOW_ANONYMOUS)"
        )
    return s.mqtt.admin_url


def _show_secret(username: str, password: str, topics: tuple[str, ...]) -> None:
    out = Console()
    out.print(f"username: {username}", markup=False, soft_wrap=True)
    out.print(f"password: {password}", markup=False, soft_wrap=True)
    out.print(f"topics:   {', '.join(topics)}", markup=False, soft_wrap=True)
    console.print(
        "The password is shown only this once: put it into the device now "
        "(MQTT username and password; for Sensor.Community 'Send to own API', user and password)."
    )


@app.command("add")
def devices_add(network: Network, device: Device) -> None:
    """Issue an account with a new password; it may publish to its own topics only."""
    from quartier.mqtt_accounts import BrokerAdmin, account_for, new_password
    from quartier.store import credentials

    s = settings()
    with user_errors(s):
        account = account_for(network, device)
        password = new_password()
        admin_url = _admin_url(s)
        with connect(s) as conn:
            credentials.add(
                conn, account.username, account.network, account.device, account.kind, password
            )
            with BrokerAdmin(admin_url, ca_file=s.mqtt.ca_file) as broker:
                broker.create(account, password)
    _show_secret(account.username, password, account.topics)


@app.command("add-ingester")
def devices_add_ingester(
    name: Annotated[str, typer.Argument(help="a name for the process, e.g. worker-2")],
) -> None:
    """Another ingest account, quartier-ingest-NAME (subscribe to the ingest topics, plainly
    or in a shared-subscription group), for one more `quartier ingest` process."""
    from quartier.mqtt_accounts import INGEST_USER, BrokerAdmin, new_password

    s = settings()
    with user_errors(s):
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,48}", name):
            raise fail(f"the name {name!r} must be 1-48 of A-Z a-z 0-9 _ . -")
        username, password = f"{INGEST_USER}-{name}", new_password()
        with BrokerAdmin(_admin_url(s), ca_file=s.mqtt.ca_file) as broker:
            broker.create_ingester(username, password)
    _show_secret(username, password, ("subscribe: the ingest topics (docs/mqtt.md)",))


@app.command("add-sta")
def devices_add_sta(
    kind: Annotated[
        str,
        typer.Argument(
            help="publisher (for quartier sta-mqtt), reader (subscribes to v1.1/…) or writer "
            "(a reader that may also create Observations on v1.1/…)"
        ),
    ],
    name: Annotated[str, typer.Argument(help="a name, e.g. the client's or 'public'")],
) -> None:
    """A SensorThings over MQTT account, sta-KIND/NAME (docs/security.md, "SensorThings over
    MQTT"); ``quartier devices rotate|revoke`` do not apply to it (remove it at the broker)."""
    from quartier.mqtt_accounts import BrokerAdmin, new_password, sta_account

    s = settings()
    with user_errors(s):
        account = sta_account(kind, name)
        password = new_password()
        with BrokerAdmin(_admin_url(s), ca_file=s.mqtt.ca_file) as broker:
            broker.create_sta(account, password)
    rights = [f"publish: {t}" for t in account.publish]
    rights += [f"subscribe: {t}" for t in account.subscribe]
    _show_secret(account.username, password, tuple(rights))


@app.command("rotate")
def devices_rotate(network: Network, device: Device) -> None:
    """Issue a new password; the old one stops working at once (a connected device is
    disconnected). A revoked account is active again."""
    from quartier.mqtt_accounts import BrokerAdmin, account_for, new_password
    from quartier.store import credentials

    s = settings()
    with user_errors(s):
        account = account_for(network, device)
        password = new_password()
        admin_url = _admin_url(s)
        with connect(s) as conn:
            credentials.set_password(conn, account.username, password)
            with BrokerAdmin(admin_url, ca_file=s.mqtt.ca_file) as broker:
                broker.set_password(account.username, password)
                broker.enable(account.username)
    _show_secret(account.username, password, account.topics)


@app.command("revoke")
def devices_revoke(network: Network, device: Device) -> None:
    """Refuse the account from now on, at the broker (a connected device is disconnected) and
    for HTTP pushes. `rotate` issues a new password and lets it in again."""
    from quartier.mqtt_accounts import BrokerAdmin, account_for
    from quartier.store import credentials

    s = settings()
    with user_errors(s):
        account = account_for(network, device)
        admin_url = _admin_url(s)
        with connect(s) as conn:
            credentials.revoke(conn, account.username)
            with BrokerAdmin(admin_url, ca_file=s.mqtt.ca_file) as broker:
                broker.disable(account.username)
    console.print(f"{account.username} revoked")


@app.command("list")
def devices_list(
    network: Annotated[str | None, typer.Option(help="only this network")] = None,
) -> None:
    """The accounts Quartier issued, with their state (no passwords: only hashes are kept)."""
    from quartier.store import credentials

    s = settings()
    with user_errors(s), connect(s) as conn:
        rows = credentials.list_all(conn, network)
    table = Table("username", "kind", "created", "password changed", "state")
    for c in rows:
        table.add_row(
            c.username,
            c.kind,
            f"{c.created_at:%Y-%m-%d %H:%M}",
            "" if c.rotated_at is None else f"{c.rotated_at:%Y-%m-%d %H:%M}",
            "active" if c.active else f"revoked {c.revoked_at:%Y-%m-%d %H:%M}",
        )
    out = Console()
    out.print(table if rows else "no device accounts")


@app.command("init-broker")
def devices_init_broker(
    directory: Annotated[
        Path, typer.Argument(help="where the broker reads dynamic-security.json (its data dir)")
    ],
) -> None:
    """Write the broker's first dynamic-security.json (Quartier's admin and ingest accounts,
    everything else denied) for a deployment (deploy/mosquitto/); print both passwords once."""
    from quartier.mqtt_accounts import (
        ADMIN_USER,
        INGEST_USER,
        new_password,
        write_initial_config,
    )

    path = directory / "dynamic-security.json"
    if path.exists():
        raise fail(
            f"{path} exists already: the broker keeps its accounts there (delete it to start "
            "over; every device account in it is lost)"
        )
    admin, ingest = new_password(), new_password()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_initial_config(path, admin, ingest)
    except OSError as exc:
        raise fail(f"cannot write {path}: {exc.strerror or exc}") from None
    out = Console()
    out.print(f"QUARTIER_MQTT__ADMIN_URL user {ADMIN_USER} password {admin}", markup=False)
    out.print(f"QUARTIER_MQTT__URL       user {INGEST_USER} password {ingest}", markup=False)
    console.print(
        f"wrote {path} (mode 0600; the broker must be able to read and rewrite it). "
        "The passwords are shown only this once."
    )
