"""The migration runner.

Migrations are numbered SQL files in ``quartier/store/migrations``: ``NNNN_name.sql`` for every
server, or ``NNNN_name.timescaledb.sql`` / ``NNNN_name.postgres.sql`` where the two storage paths
differ (exactly one of a pair is applied). The storage path is decided once, on the first run
(TimescaleDB when the server offers it and the settings allow it), kept in ``quartier_meta`` and
never changed afterwards; :func:`storage_path` reads it, the one place every part asks which path
a database is on (:class:`NotMigratedError` before the first migration). Each file runs in its
own transaction, unless its first line is ``-- quartier: no-transaction`` (needed for TimescaleDB
continuous aggregates). An advisory lock keeps concurrent runners (two ingesters starting at
once) from applying a file twice.

On the TimescaleDB path every run first checks the extension's version against
:data:`MIN_TIMESCALEDB` and refuses an older one (:class:`UnsupportedVersionError`) before applying
anything.
"""

from __future__ import annotations

import logging
import re
import weakref
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import psycopg

from quartier.errors import MigrationError, NotMigratedError, UnsupportedVersionError
from quartier.store.db import Conn

log = logging.getLogger(__name__)

#: The two storage paths: TimescaleDB (hypertable, continuous aggregates, policies) or plain
#: PostgreSQL (monthly range partitions, rollup tables kept by :mod:`quartier.store.rollups`).
StoragePath = Literal["timescaledb", "postgres"]
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(timescaledb|postgres))?\.sql$")
_LOCK_KEY = 0x5155_4152  # "QUAR"
NO_TRANSACTION = "-- quartier: no-transaction"

#: The oldest TimescaleDB that has every feature Quartier uses. The newest of them:
#: ``timescaledb.max_tuples_decompressed_per_dml_transaction``, which the ingest writer lifts for
#: its batches (TimescaleDB 2.14.0); ``create_hypertable(..., by_range(...))`` (migration 0003)
#: needs 2.13.0, INSERT ... ON CONFLICT DO NOTHING into compressed chunks 2.11; continuous
#: aggregates with real-time aggregation, compression, and refresh/retention policies with
#: ``if_exists`` are older.
MIN_TIMESCALEDB = (2, 14, 0)
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    variant: StoragePath | None
    sql: str

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(NO_TRANSACTION)


def available_migrations(path: StoragePath) -> list[Migration]:
    """The migrations for one storage path, in order."""
    chosen: dict[int, Migration] = {}
    for entry in resources.files("quartier.store.migrations").iterdir():
        m = _NAME.match(entry.name)
        if not m:
            continue
        version, name, variant = int(m.group(1)), m.group(2), m.group(3)
        if variant is not None and variant != path:
            continue
        if version in chosen and chosen[version].variant == variant:
            raise MigrationError(f"two migrations with number {version:04d}")
        chosen[version] = Migration(version, name, variant, entry.read_text(encoding="utf-8"))
    return [chosen[v] for v in sorted(chosen)]


def timescaledb_available(conn: Conn) -> bool:
    row = conn.execute(
        "select 1 from pg_available_extensions where name = 'timescaledb'"
    ).fetchone()
    return row is not None


def check_timescaledb_version(version: str) -> tuple[int, int, int]:
    """The parsed version when it is at least :data:`MIN_TIMESCALEDB`; raises
    :class:`UnsupportedVersionError` otherwise (or when ``version`` cannot be read)."""
    need = ".".join(map(str, MIN_TIMESCALEDB))
    m = _VERSION.match(version.strip())
    if m is None:
        raise UnsupportedVersionError(
            f"cannot read the TimescaleDB version {version!r}; Quartier needs TimescaleDB >= {need}"
        )
    found = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
    if found < MIN_TIMESCALEDB:
        raise UnsupportedVersionError(
            f"TimescaleDB {version} is too old: Quartier needs TimescaleDB >= {need} "
            "(by_range hypertables, the DML decompression limit). Upgrade the extension "
            "(ALTER EXTENSION timescaledb UPDATE, after installing a newer package), or, on a "
            "new database, "
            "use plain PostgreSQL (QUARTIER_DATABASE__TIMESCALEDB=postgres)"
        )
    return found


def timescaledb_version(conn: Conn) -> str | None:
    """The version of the timescaledb extension created in this database (None: not created)."""
    row = conn.execute(
        "select extversion from pg_extension where extname = 'timescaledb'"
    ).fetchone()
    return None if row is None else str(_value(row))


#: the storage path per open connection: decided at the first migration, it never changes
_PATHS: weakref.WeakKeyDictionary[Any, StoragePath] = weakref.WeakKeyDictionary()


def _value(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def storage_path(conn: Conn) -> StoragePath:
    """The storage path of a migrated database (read once per connection, for any row factory);
    :class:`NotMigratedError` before the first migration. The one place that tells the two
    paths apart."""
    known = _PATHS.get(conn)
    if known is not None:
        return known
    table = conn.execute("select to_regclass('quartier_meta') is not null").fetchone()
    row = (
        conn.execute("select value from quartier_meta where key = 'storage_path'").fetchone()
        if table is not None and _value(table)
        else None
    )
    if row is None:
        raise NotMigratedError()
    path: StoragePath = "timescaledb" if _value(row) == "timescaledb" else "postgres"
    _PATHS[conn] = path
    return path


def _decide_path(conn: Conn, mode: str) -> StoragePath:
    if mode == "postgres" or not timescaledb_available(conn):
        return "postgres"
    try:
        with conn.transaction():
            conn.execute("create extension if not exists timescaledb")
    except psycopg.Error as exc:  # e.g. not in shared_preload_libraries
        log.warning(
            "TimescaleDB is installed but cannot be enabled (%s); using plain PostgreSQL",
            str(exc).strip(),
        )
        return "postgres"
    return "timescaledb"


def migrate(
    url: str, *, timescaledb: str = "auto", roles: bool = True
) -> tuple[StoragePath, list[str]]:
    """Apply what is missing; returns the storage path and the names of the files applied.
    With ``roles``, then create the services' database roles where missing and set this
    database's grants (:func:`quartier.store.roles.apply`; every run, so new tables get theirs).
    """
    applied: list[str] = []
    with psycopg.connect(url, autocommit=True, application_name="quartier-migrate") as conn:
        conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                """create table if not exists schema_migrations (
                       version    integer primary key,
                       name       text not null,
                       applied_at timestamptz not null default now())"""
            )
            try:
                path = storage_path(conn)
            except NotMigratedError:  # the first run decides
                path = _decide_path(conn, timescaledb)
            if path == "timescaledb":
                check_timescaledb_version(timescaledb_version(conn) or "(not created)")
            done = {r[0] for r in conn.execute("select version from schema_migrations")}
            for mig in available_migrations(path):
                if mig.version in done:
                    continue
                label = f"{mig.version:04d}_{mig.name}" + (f".{mig.variant}" if mig.variant else "")
                log.info("applying migration %s", label)
                try:
                    if mig.transactional:
                        with conn.transaction():
                            _apply(conn, mig, label, path)
                    else:
                        _apply(conn, mig, label, path)
                except psycopg.Error as exc:
                    raise MigrationError(f"migration {label}.sql failed: {exc}") from exc
                applied.append(label)
            if roles:
                from quartier.store import roles as db_roles

                try:
                    db_roles.apply(conn, path)
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"setting the database roles' grants failed: {exc}"
                    ) from exc
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))
    log.info(
        "storage path: %s (%s)",
        path,
        "observation is a TimescaleDB hypertable"
        if path == "timescaledb"
        else "observation is natively range-partitioned by month",
    )
    return path, applied


def _apply(conn: Conn, mig: Migration, label: str, path: StoragePath) -> None:
    conn.execute(mig.sql.encode())
    conn.execute(
        "insert into schema_migrations (version, name) values (%s, %s)", (mig.version, label)
    )
    conn.execute(
        "insert into quartier_meta (key, value) values ('storage_path', %s) on conflict do nothing",
        (path,),
    )
