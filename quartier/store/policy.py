"""The store policies (retention, compression, chunk interval, partitions ahead) as one value,
read from the typed settings (``DatabaseSettings``), which own their defaults and documentation.
Both storage paths apply it: :func:`quartier.store.timescale.configure` as TimescaleDB policies,
:func:`quartier.store.rollups.maintain` on plain PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from quartier.config import DatabaseSettings
from quartier.errors import ConfigError

_DEFAULTS = DatabaseSettings()


@dataclass(frozen=True)
class StorePolicy:
    """Retention and compression, from ``DatabaseSettings`` (see :meth:`from_settings`); the
    fields mean what the settings of the same names mean."""

    #: raw observations older than this are dropped (None: kept forever)
    retention: timedelta | None = _DEFAULTS.retention
    #: rollup rows older than this are dropped (None: kept forever); must be >= retention
    rollup_retention: timedelta | None = _DEFAULTS.rollup_retention
    #: TimescaleDB: chunks are compressed when all their rows are older than this; plain
    #: PostgreSQL: a month's partition is compacted (rewritten sorted by datastream and time)
    #: this long after it ended
    compress_after: timedelta = _DEFAULTS.compress_after
    #: TimescaleDB: chunk interval for new chunks
    chunk_interval: timedelta = _DEFAULTS.chunk_interval
    #: plain PostgreSQL: monthly partitions are created this many months ahead
    partitions_ahead_months: int = _DEFAULTS.partitions_ahead_months

    def __post_init__(self) -> None:
        if (
            self.retention is not None
            and self.rollup_retention is not None
            and self.rollup_retention < self.retention
        ):
            raise ConfigError(
                "database.rollup_retention must be at least database.retention "
                f"({self.rollup_retention} < {self.retention}): @iot.count and aggregates over "
                "old ranges read the rollups"
            )
        for name in ("retention", "rollup_retention"):
            value = getattr(self, name)
            if value is not None and value < timedelta(days=31):
                raise ConfigError(f"database.{name} must be at least 31 days, got {value}")
        if self.chunk_interval % timedelta(days=1) != timedelta(0):
            raise ConfigError(
                f"database.chunk_interval must be whole days, got {self.chunk_interval}"
            )

    @classmethod
    def from_settings(cls, database: DatabaseSettings) -> StorePolicy:
        """The policy of ``settings.database``."""
        return cls(
            retention=database.retention,
            rollup_retention=database.rollup_retention,
            compress_after=database.compress_after,
            chunk_interval=database.chunk_interval,
            partitions_ahead_months=database.partitions_ahead_months,
        )
