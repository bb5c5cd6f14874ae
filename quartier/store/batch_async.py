"""The state of asynchronous SensorThings ``$batch`` requests (table ``batch_async``, migration
0046): made when a batch is accepted, finished with its whole answer, read by the status
monitor with the key that sent it, deleted once expired (``api.batch_async_keep_seconds``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from quartier.store.db import Conn


@dataclass(frozen=True)
class Result:
    """An asynchronous batch as stored; ``finished_at`` None while it runs."""

    id: uuid.UUID
    created_at: datetime
    expires_at: datetime
    finished_at: datetime | None
    status: int | None
    content_type: str | None
    preference_applied: str | None
    body: bytes | None


def expire(conn: Conn) -> int:
    """Delete the batches past their ``expires_at``; how many."""
    return conn.execute("delete from batch_async where expires_at < now()").rowcount


def start(conn: Conn, batch_id: uuid.UUID, api_key_id: int, keep: timedelta) -> None:
    """A batch accepted for ``api_key_id``, kept ``keep`` from now."""
    conn.execute(
        "insert into batch_async (id, api_key_id, expires_at) values (%s, %s, now() + %s)",
        (batch_id, api_key_id, keep),
    )


def finish(
    conn: Conn,
    batch_id: uuid.UUID,
    status: int,
    content_type: str,
    body: bytes,
    preference_applied: str | None,
) -> None:
    """The batch's answer, once it has run (nothing when it expired meanwhile)."""
    conn.execute(
        "update batch_async set finished_at = now(), status = %s, content_type = %s,"
        " preference_applied = %s, body = %s where id = %s",
        (status, content_type, preference_applied, body, batch_id),
    )


def read(conn: Conn, batch_id: uuid.UUID, api_key_id: int) -> Result | None:
    """The batch ``batch_id`` sent with key ``api_key_id`` and not expired; None otherwise (also
    when another key sent it: its existence is not revealed)."""
    row = conn.execute(
        "select id, created_at, expires_at, finished_at, status, content_type,"
        " preference_applied, body from batch_async"
        " where id = %s and api_key_id = %s and expires_at >= now()",
        (batch_id, api_key_id),
    ).fetchone()
    if row is None:
        return None
    v = list(row.values()) if isinstance(row, dict) else list(row)
    body = None if v[7] is None else bytes(v[7])
    return Result(v[0], v[1], v[2], v[3], v[4], v[5], v[6], body)
