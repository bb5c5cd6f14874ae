"""Getting a database ready: migrations, partitions ahead and the store policies, in one call
for every entry point (``quartier db migrate``, the demo)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from quartier.config import DatabaseSettings
from quartier.store.migrate import StoragePath, migrate
from quartier.store.policy import StorePolicy
from quartier.store.rollups import configure


def prepare(url: str, database: DatabaseSettings) -> tuple[StoragePath, list[str]]:
    """Apply pending migrations, create the partitions ahead (plain PostgreSQL) and apply the
    retention / compression / aggregate policies of ``database``. Returns the storage path and
    the migrations applied."""
    path, applied = migrate(url, timescaledb=database.timescaledb)
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "select quartier_ensure_observation_partitions(%s, %s)",
            (now - timedelta(days=31), now + timedelta(days=31 * database.partitions_ahead_months)),
        )
        configure(conn, StorePolicy.from_settings(database))
    return path, applied
