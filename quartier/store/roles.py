"""Least privilege in the database: the roles of the services and what each may do
(docs/security.md, "Database: roles and secrets").

- ``quartier_owner`` owns the schema: migrations, the maintenance round (partitions, retention,
  compaction, rollups: DDL that PostgreSQL allows only the owner), keys and the audit trail.
- ``quartier_ingest`` (the ingester, the HTTP ingest): reads and inserts/updates the tables the
  ingest writer fills (:data:`INGEST_WRITES`), creates the month partitions it needs through
  ``quartier_ensure_observation_partitions`` (which runs with the owner's rights, migration
  0034); nothing else, not the API keys or the audit trail.
- ``quartier_api`` (the HTTP API): reads every table except the audit trail (:data:`API_HIDDEN`),
  writes the indicator tables (:data:`API_WRITES`), notes a key's last use, adds audit rows.

Roles belong to the cluster, grants to a database: :func:`apply` (called by
:func:`quartier.store.migrate.migrate` after the migrations, in one transaction) creates the
roles that are missing (tolerating another database's migration creating them at the same
moment) and sets this database's grants again from the lists here, so a table added by a later
migration gets its grants with it. :func:`set_login` gives a role a password (a SCRAM verifier
computed here, so the password is never sent to the server or its log).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from collections.abc import Sequence

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from quartier.errors import MigrationError
from quartier.store.db import Conn

log = logging.getLogger(__name__)

OWNER = "quartier_owner"
INGEST = "quartier_ingest"
API = "quartier_api"
ROLES = (OWNER, INGEST, API)

#: tables the ingest writer reads and inserts into / updates
INGEST_WRITES = (
    "thing", "location", "thing_location", "historical_location", "historical_location_location",
    "sensor", "observed_property", "datastream", "feature_of_interest", "device",
    "device_datastream", "observation", "observation_latest", "observation_dirty", "speedtest",
    "ingest_reject", "multi_datastream", "multi_datastream_observed_property",
)  # fmt: skip
#: ... and deletes from (a Thing's current location is replaced; the SensorThings API's DELETE
#: and PATCH run as the ingest login, quartier.api.sta_write, with the cascades of the standard)
INGEST_DELETES = (
    "thing_location", "thing", "location", "historical_location", "sensor", "observed_property",
    "datastream", "feature_of_interest", "observation", "observation_latest", "observation_dirty",
    "multi_datastream", "multi_datastream_observed_property",
)  # fmt: skip
#: tables the ingest only reads (device_credential: the HTTP ingest's per-device passwords)
INGEST_READS = ("quartier_meta", "schema_migrations", "device_credential")
#: functions the ingest calls that PUBLIC may not
INGEST_FUNCTIONS = ("quartier_ensure_observation_partitions(timestamptz, timestamptz)",)

#: tables the API may not read at all: the audit trail, the erasure log
API_HIDDEN = ("audit_event", "privacy_erasure")
#: tables the API writes (manual indicator values, the stored current indicators, the answers
#: of asynchronous $batch requests)
API_WRITES = ("indicator_value", "indicator_current", "indicator_refresh", "batch_async")
#: (table, columns) the API may update: a key's last use
API_UPDATES = (("api_key", ("last_used_at",)),)
#: tables the API may insert into but not read
API_INSERTS = ("audit_event",)


def _value(row: object) -> object:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]  # type: ignore[index]


def _tables(conn: Conn) -> set[str]:
    """Quartier's tables and views in schema public (not those of extensions, e.g. PostGIS's)."""
    rows = conn.execute(
        """select c.relname from pg_class c
           join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm', 'f')
             and not c.relispartition
             and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass
                             and d.objid = c.oid and d.deptype = 'e')"""
    ).fetchall()
    return {str(_value(r)) for r in rows}


def ensure_roles(conn: Conn) -> list[str]:
    """Create the roles that are missing (without login); the names created."""
    existing = {
        str(_value(r))
        for r in conn.execute(
            "select rolname from pg_roles where rolname = any(%s)", (list(ROLES),)
        )
    }
    made = []
    for role in ROLES:
        if role in existing:
            continue
        try:
            with conn.transaction():  # a savepoint: another migration may create it meanwhile
                conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(role)))
            made.append(role)
        except (pg_errors.DuplicateObject, pg_errors.UniqueViolation):
            pass  # made meanwhile by a migration of another database of the cluster
        except pg_errors.InsufficientPrivilege:
            raise MigrationError(
                f"the role {role} does not exist and the migrating login may not create roles: "
                f"have an administrator run `create role {role} nologin` (for all of "
                f"{', '.join(ROLES)}), or migrate once with a login that has CREATEROLE"
            ) from None
    return made


def _grant_owner(conn: Conn, path: str) -> int:
    """Make ``quartier_owner`` the owner of Quartier's tables, views, sequences and functions
    (when the migrating login may; plain PostgreSQL path: TimescaleDB keeps internal objects
    outside schema public). The number changed."""
    me = conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()
    if path != "postgres" or me is None or not _value(me):
        return 0
    conn.execute(
        sql.SQL("grant usage, create on schema public to {}").format(sql.Identifier(OWNER))
    )
    kinds = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "S": "sequence"}
    rows = conn.execute(
        """select c.relname, c.relkind::text from pg_class c
           join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm', 'S')
             and c.relowner <> %s::regrole
             and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass
                             and d.objid = c.oid and (d.deptype = 'e' or (c.relkind = 'S'
                                                      and d.deptype in ('a', 'i'))))""",
        (OWNER,),
    ).fetchall()
    changed = 0
    for row in rows:
        name, kind = (row["relname"], row["relkind"]) if isinstance(row, dict) else row
        conn.execute(
            sql.SQL("alter {} {} owner to {}").format(
                sql.SQL(kinds[kind]), sql.Identifier(name), sql.Identifier(OWNER)
            )
        )
        changed += 1
    funcs = conn.execute(
        """select p.oid::regprocedure::text from pg_proc p
           join pg_namespace n on n.oid = p.pronamespace
           where n.nspname = 'public' and p.proowner <> %s::regrole
             and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass
                             and d.objid = p.oid and d.deptype = 'e')""",
        (OWNER,),
    ).fetchall()
    for f in funcs:
        conn.execute(
            sql.SQL("alter function {} owner to {}").format(
                sql.SQL(str(_value(f))), sql.Identifier(OWNER)
            )
        )
        changed += 1
    return changed


def _grant(conn: Conn, privileges: str, tables: Sequence[str], role: str) -> None:
    if tables:
        conn.execute(
            sql.SQL("grant {} on {} to {}").format(
                sql.SQL(privileges),
                sql.SQL(", ").join(sql.Identifier(t) for t in tables),
                sql.Identifier(role),
            )
        )


def grant(conn: Conn, path: str = "postgres") -> None:
    """This database's grants for the roles, set again from the lists of this module."""
    tables = _tables(conn)
    present = sorted(tables)
    for role in (INGEST, API):  # CONNECT and TEMPORARY (staging tables): PUBLIC's defaults
        ident = sql.Identifier(role)
        conn.execute(sql.SQL("revoke all on all tables in schema public from {}").format(ident))
        conn.execute(sql.SQL("revoke all on all sequences in schema public from {}").format(ident))
        conn.execute(sql.SQL("grant usage on schema public to {}").format(ident))
    _grant_owner(conn, path)

    ingest_writes = [t for t in INGEST_WRITES if t in tables]
    _grant(conn, "select, insert, update", ingest_writes, INGEST)
    _grant(conn, "delete", [t for t in INGEST_DELETES if t in tables], INGEST)
    _grant(conn, "select", [t for t in INGEST_READS if t in tables], INGEST)
    conn.execute(
        sql.SQL("grant usage on all sequences in schema public to {}").format(
            sql.Identifier(INGEST)
        )
    )
    for fn in INGEST_FUNCTIONS:
        conn.execute(
            sql.SQL("grant execute on function {} to {}").format(
                sql.SQL(fn), sql.Identifier(INGEST)
            )
        )

    _grant(conn, "select", [t for t in present if t not in API_HIDDEN], API)
    api_writes = [t for t in API_WRITES if t in tables]
    _grant(conn, "insert, update, delete", api_writes, API)
    for table, columns in API_UPDATES:
        if table in tables:
            conn.execute(
                sql.SQL("grant update ({}) on {} to {}").format(
                    sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                    sql.Identifier(table),
                    sql.Identifier(API),
                )
            )
    _grant(conn, "insert", [t for t in API_INSERTS if t in tables], API)
    for seq in conn.execute(
        """select s.relname from pg_class s
           join pg_depend d on d.objid = s.oid and d.classid = 'pg_class'::regclass
                           and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')
           join pg_class t on t.oid = d.refobjid
           where s.relkind = 'S' and t.relname = any(%s)""",
        (api_writes + list(API_INSERTS),),
    ).fetchall():
        conn.execute(
            sql.SQL("grant usage on sequence {} to {}").format(
                sql.Identifier(str(_value(seq))), sql.Identifier(API)
            )
        )


def apply(conn: Conn, path: str = "postgres") -> list[str]:
    """Roles (created where missing) and this database's grants, in one transaction; the roles
    created."""
    with conn.transaction():
        made = ensure_roles(conn)
        grant(conn, path)
    for role in made:
        log.info("created database role %s (no login until it gets a password)", role)
    return made


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802 / 7677)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def set_login(conn: Conn, role: str, login: str, password: str | None) -> str:
    """Let ``login`` act as ``role``: the role itself gets LOGIN and the password (as a SCRAM
    verifier); another existing login is granted the role. What was done, in words."""
    if role not in ROLES:
        raise ValueError(role)
    if login == role:
        if not password:
            return f"{role}: no password configured, left without login"
        conn.execute(
            sql.SQL("alter role {} login password {}").format(
                sql.Identifier(role), sql.Literal(scram_verifier(password))
            )
        )
        return f"{role}: login with the configured password"
    try:
        conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(role), sql.Identifier(login)))
    except psycopg.errors.UndefinedObject:
        raise MigrationError(
            f"the database login {login!r} does not exist: use the role {role} in the URL, or "
            f"create {login} first"
        ) from None
    return f"{login}: member of {role}"
