"""Replaying archive files through the ingest pipeline (``quartier import sensor-community``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from quartier.config import Settings
from quartier.errors import DecodeError
from quartier.ingest.model import Batch, Reject, Uplink
from quartier.ingest.sensor_community import decode_sensor_community_archive_csv
from quartier.ingest.validate import validate
from quartier.ingest.writer import BatchWriter
from quartier.store import timescale

CHUNK = 5000  # readings per transaction


@dataclass
class ImportResult:
    files: int = 0
    stored: int = 0
    duplicates: int = 0
    rejects: int = 0
    #: the span of the readings read (valid ones, stored or already there); None: none
    first: datetime | None = None
    last: datetime | None = None
    #: the TimescaleDB continuous aggregates were refreshed over that span afterwards
    aggregates_refreshed: bool = False


def import_sensor_community_csv(
    settings: Settings, paths: Iterable[Path], progress: Callable[[int], None] | None = None
) -> ImportResult:
    """Decode each archive CSV, validate it like live data and store it in chunks; rows that
    cannot be used are kept in ``ingest_reject`` (source ``import``) with their reason. On
    TimescaleDB the continuous aggregates are then refreshed over the span of the readings:
    archive data is usually older than what their refresh policies look back at."""
    result = ImportResult()
    cfg = settings.ingest
    url = settings.require_database_url()
    writer = BatchWriter(
        url,
        auto_register=cfg.auto_register,
        reject_payload_max_bytes=cfg.reject_payload_max_bytes,
        personal_networks=settings.privacy.personal_networks,
    )
    now = datetime.now(UTC)
    try:
        for path in paths:
            raw = path.read_bytes()
            result.files += 1
            try:
                uplinks = decode_sensor_community_archive_csv(raw.decode("utf-8"))
            except (DecodeError, UnicodeDecodeError) as exc:
                reason = exc.reason if isinstance(exc, DecodeError) else "invalid_encoding"
                writer.write(
                    Batch(rejects=[Reject(str(path), raw, reason, str(exc), now, source="import")])
                )
                result.rejects += 1
                continue
            for uplink in uplinks:
                validate(uplink, now, cfg.max_future_seconds)
                if uplink.readings:
                    lo = min(r.time for r in uplink.readings)
                    hi = max(r.time for r in uplink.readings)
                    result.first = lo if result.first is None else min(result.first, lo)
                    result.last = hi if result.last is None else max(result.last, hi)
                for batch in _chunks(uplink, str(path), raw, now):
                    res = writer.write(batch)
                    result.stored += res.observations
                    result.duplicates += res.duplicates
                    result.rejects += res.rejects
                    if progress:
                        progress(result.stored + result.duplicates)
    finally:
        writer.close()
    if result.first is not None and result.last is not None:
        with psycopg.connect(url, autocommit=True, application_name="quartier-import") as conn:
            result.aggregates_refreshed = timescale.refresh_after_backfill(
                conn, result.first, result.last
            )
    return result


def _chunks(uplink: Uplink, source: str, raw: bytes, now: datetime) -> Iterable[Batch]:
    readings = uplink.readings
    for start in range(0, max(len(readings), 1), CHUNK):
        invalid = uplink.invalid if start == 0 else []
        part = Uplink(
            uplink.network, uplink.device, readings[start : start + CHUNK], uplink.location, invalid
        )
        batch = Batch(source="import")
        # the file itself is kept with the reject of its refused rows
        batch.uplinks.append((part, source, raw if invalid else b"", now))
        yield batch
