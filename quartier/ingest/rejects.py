"""Inspecting and replaying refused messages (``quartier rejects list|show|replay``).

Replay runs a stored message through today's decoders and validation. A message that now passes
completely is stored and its reject row is marked ``replayed_at`` in the same transaction; one
that still fails (while decoding, or in the store, e.g. an unknown device) stays listed with
today's reason and no second reject row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from quartier.config import IngestSettings
from quartier.ingest.model import Batch, Reject
from quartier.ingest.pipeline import Message, add_to_batch
from quartier.ingest.writer import BatchWriter, describe_invalid


def list_rejects(
    url: str, *, reason: str | None = None, limit: int = 50, include_replayed: bool = False
) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(
            "select id, received_at, source, topic, reason, detail, length(payload) as bytes,"
            " replayed_at from ingest_reject"
            " where (%(reason)s::text is null or reason = %(reason)s)"
            " and (%(all)s or replayed_at is null) order by id desc limit %(limit)s",
            {"reason": reason, "all": include_replayed, "limit": limit},
        ).fetchall()


def summary(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(
            "select reason, count(*) as n, max(received_at) as latest from ingest_reject"
            " where replayed_at is null group by reason order by n desc"
        ).fetchall()


def get_reject(url: str, reject_id: int) -> dict[str, Any] | None:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute("select * from ingest_reject where id = %s", (reject_id,)).fetchone()


@dataclass
class ReplayResult:
    tried: int = 0
    stored: int = 0
    still_failing: int = 0


def replay(
    url: str,
    cfg: IngestSettings,
    now: datetime,
    *,
    ids: list[int] | None = None,
    reason: str | None = None,
    pseudonyms: Callable[[str], str] | None = None,
) -> ReplayResult:
    """Decode and store refused messages again (``pseudonyms``: for speed tests; without, a
    replayed speed test stays refused)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select id, topic, payload, received_at from ingest_reject where replayed_at is null"
            " and source = 'mqtt' and not payload_truncated"  # only its beginning was kept
            " and (%(ids)s::bigint[] is null or id = any(%(ids)s))"
            " and (%(reason)s::text is null or reason = %(reason)s) order by id",
            {"ids": ids, "reason": reason},
        ).fetchall()
    result = ReplayResult(tried=len(rows))
    writer = BatchWriter(
        url,
        auto_register=cfg.auto_register,
        reject_payload_max_bytes=cfg.reject_payload_max_bytes,
        pseudonyms=pseudonyms,
    )
    try:
        for reject_id, topic, payload, received_at in rows:
            batch = Batch(replayed=[reject_id])
            add_to_batch(batch, Message(topic, bytes(payload), received_at), cfg, now)
            if batch.speedtests and pseudonyms is None:
                result.still_failing += 1
                continue
            refusal = _refusal(batch, topic, bytes(payload), received_at)
            if refusal is not None:
                batch = Batch(rejects=[refusal], replayed=[reject_id])
            if writer.write(batch).rejects:
                result.still_failing += 1
            else:
                result.stored += 1
    finally:
        writer.close()
    return result


def _refusal(batch: Batch, topic: str, payload: bytes, received_at: datetime) -> Reject | None:
    """Why a replayed message cannot be stored whole (today's decoders), or None if it can."""
    if batch.rejects:
        return batch.rejects[0]
    for uplink, *_ in batch.uplinks:
        if uplink.invalid:
            reason, detail = describe_invalid(uplink)
            return Reject(topic, payload, reason, detail, received_at)
    if not batch.uplinks and not batch.speedtests:
        return Reject(
            topic, payload, "no_readings", "the message decodes to nothing to store", received_at
        )
    return None
