"""``quartier keys``: API keys for the HTTP API's writes (add, list, revoke) and the audit trail.

Run with the owner's database login (``QUARTIER_DATABASE__URL``): the API's own login can
neither make keys nor read the audit trail.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from quartier.cli.common import console, settings, user_errors
from quartier.cli.connect import connect
from quartier.errors import BadRequestError

app = typer.Typer(help="API keys (scopes, expiry, revocation) and the audit trail.")


def parse_expiry(value: str, now: datetime) -> datetime:
    """``30d`` / ``12h`` (from now), an ISO date (end of that day, UTC) or an ISO time with a
    time zone."""
    text = value.strip()
    units = {"d": "days", "h": "hours"}
    if text[:-1].isdigit() and text[-1:] in units:
        return now + timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequestError(
            f"--expires {value!r}: give 30d, 12h, a date (2027-01-31) or a time with a zone"
        ) from None
    if len(text) == 10:  # a date: valid through that day
        return when.replace(tzinfo=UTC) + timedelta(days=1)
    if when.tzinfo is None:
        raise BadRequestError(f"--expires {value!r} needs a time zone (e.g. 2027-01-31T12:00Z)")
    if when <= now:
        raise BadRequestError(f"--expires {value!r} is in the past")
    return when


@app.command("add")
def keys_add(
    name: Annotated[str, typer.Option(help="who or what uses the key (e.g. statistics office)")],
    scope: Annotated[
        list[str],
        typer.Option(
            help="a scope (repeat or comma-separate): indicators:write, observations:write, "
            "entities:write, coverage:import, personal:read, admin"
        ),
    ],
    expires: Annotated[
        str | None, typer.Option(help="expiry: 30d, 12h, a date or an ISO time (default: none)")
    ] = None,
) -> None:
    """Make a key. It is printed once, on stdout; Quartier keeps only its hash."""
    from quartier.store import api_keys, audit

    s = settings()
    now = datetime.now(UTC)
    scopes = [part for item in scope for part in item.split(",")]
    with user_errors(s):
        expires_at = parse_expiry(expires, now) if expires else None
        with connect(s, application_name="quartier-keys") as conn:
            key, token = api_keys.create(
                conn, name, scopes, created_by=audit.cli_actor(), expires_at=expires_at
            )
            audit.record(
                conn,
                actor=audit.cli_actor(),
                action="keys add",
                target=f"api_key:{key.id}",
                origin=audit.cli_origin(),
                detail={"name": key.name, "scopes": list(key.scopes), "expires_at": expires_at},
            )
    console.print(
        f"API key {key.id} ({key.name}), scopes {', '.join(key.scopes)}"
        + (f", expires {expires_at:%Y-%m-%d %H:%M}Z" if expires_at else "")
        + ". It is shown only now; store it in a secret manager:"
    )
    typer.echo(token)


@app.command("list")
def keys_list() -> None:
    """Every key: id, name, prefix, scopes, state, created, expires, last used."""
    from quartier.store import api_keys

    s = settings()
    with user_errors(s), connect(s, application_name="quartier-keys") as conn:
        keys = api_keys.list_keys(conn)
    now = datetime.now(UTC)
    table = Table("id", "name", "prefix", "scopes", "state", "created", "expires", "last used")
    for k in keys:
        table.add_row(
            str(k.id), k.name, k.prefix + "…", ", ".join(k.scopes), k.state(now),
            _t(k.created_at), _t(k.expires_at), _t(k.last_used_at),
        )  # fmt: skip
    Console().print(table)


@app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="the key's id, prefix (qk_…) or name")],
) -> None:
    """Revoke a key at once (it stays listed, for the audit trail)."""
    from quartier.store import api_keys, audit

    s = settings()
    with user_errors(s), connect(s, application_name="quartier-keys") as conn:
        revoked = api_keys.revoke(conn, key, revoked_by=audit.cli_actor())
        audit.record(
            conn,
            actor=audit.cli_actor(),
            action="keys revoke",
            target=f"api_key:{revoked.id}",
            origin=audit.cli_origin(),
            detail={"name": revoked.name},
        )
    console.print(f"API key {revoked.id} ({revoked.name}) revoked")


@app.command("audit")
def keys_audit(
    limit: Annotated[int, typer.Option(help="rows to show, newest first")] = 50,
) -> None:
    """The newest rows of the audit trail: when, who, what, target, from where."""
    from quartier.store import audit

    s = settings()
    with user_errors(s), connect(s, application_name="quartier-keys") as conn:
        events = audit.recent(conn, limit=limit)
    table = Table("when", "who", "what", "target", "from")
    for e in events:
        table.add_row(_t(e.at), e.actor, e.action, e.target or "", e.origin or "")
    Console().print(table)


def _t(t: datetime | None) -> str:
    return "–" if t is None else f"{t.astimezone(UTC):%Y-%m-%d %H:%M}Z"
