"""The audit trail (table ``audit_event``, migration 0033): one row per write, saying who (an
API key, or the OS user of a command), what, when and from where.

Every part that changes data on someone's behalf calls :func:`record`; the API does it through
its key dependency (``quartier.api.auth``), the CLI through :func:`cli_actor` /
:func:`cli_origin`. Reading it is for administrators (the owner's database login, ``quartier
keys audit``); the API's login may insert rows but not read them. Rows older than
``database.audit_retention`` are deleted by :func:`expire`.
"""

from __future__ import annotations

import getpass
import json
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from quartier.store.db import Conn


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: datetime
    actor: str
    api_key_id: int | None
    action: str
    target: str | None
    origin: str | None
    detail: dict[str, Any]


def record(
    conn: Conn,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    origin: str | None = None,
    detail: dict[str, Any] | None = None,
    api_key_id: int | None = None,
) -> None:
    """Add one audit row (in the caller's transaction, if it has one). ``actor``: e.g.
    ``key:12 (council-kpis)`` or ``os:alice``; ``action``: a short verb phrase
    (``POST /indicators/{indicator_id}/values``, ``keys add``); ``target``: what was changed;
    ``origin``: the client address or ``cli@host``; ``detail``: JSON-able context."""
    conn.execute(
        """insert into audit_event (actor, api_key_id, action, target, origin, detail)
           values (%s, %s, %s, %s, %s, %s::jsonb)""",
        (actor, api_key_id, action, target, origin, json.dumps(detail or {}, default=str)),
    )


def cli_actor() -> str:
    """Who runs this command: ``os:<login name>``."""
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "os:unknown"


def cli_origin() -> str:
    return f"cli@{socket.gethostname()}"


def recent(conn: Conn, *, limit: int = 50, since: datetime | None = None) -> list[AuditEvent]:
    """The newest rows, newest first."""
    rows = conn.execute(
        """select id, at, actor, api_key_id, action, target, origin, detail from audit_event
           where %(since)s::timestamptz is null or at >= %(since)s
           order by at desc, id desc limit %(limit)s""",
        {"since": since, "limit": limit},
    )
    out = []
    for r in rows:
        values = list(r.values()) if isinstance(r, dict) else list(r)
        out.append(AuditEvent(*values))
    return out


def expire(conn: Conn, retention: timedelta, *, now: datetime | None = None) -> int:
    """Delete the rows older than ``retention``; the number deleted."""
    cutoff = (now or datetime.now(UTC)) - retention
    cur = conn.execute("delete from audit_event where at < %s", (cutoff,))
    return max(cur.rowcount, 0)
