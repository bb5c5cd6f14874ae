"""``quartier db``: schema, status and upkeep of the store; the rendering of the store's status."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import typer
from rich.console import Console, Group, RenderableType
from rich.table import Table

from quartier.cli.common import console, settings, user_errors
from quartier.cli.connect import connect, database_url
from quartier.config import Settings
from quartier.store.db import Conn

if TYPE_CHECKING:
    from quartier.store.status import StoreStatus

app = typer.Typer(help="Database schema and status.", no_args_is_help=True)


@app.command("migrate")
def db_migrate() -> None:
    """Apply pending schema migrations, partitions ahead and the store policies; create the
    services' roles (quartier_owner, quartier_ingest, quartier_api) with their grants, and give
    the API's and the ingester's logins (QUARTIER_DATABASE__API_URL / INGEST_URL and their
    *_PASSWORD_FILE) their roles."""
    from quartier.store.setup import prepare

    s = settings()
    with user_errors(s):
        path, applied = prepare(database_url(s), s.database)
        with connect(s, autocommit=True, application_name="quartier-migrate") as conn:
            logins = service_logins(conn, s)
    console.print(
        f"storage path: {path}; applied {len(applied)} migration(s)"
        + (": " + ", ".join(applied) if applied else "")
    )
    for line in logins:
        console.print(line)


def service_logins(conn: Conn, s: Settings) -> list[str]:
    """Give the API's and the ingester's configured logins their roles (a password for the role
    itself, membership for another login); what was done, one line each."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    from quartier.errors import MigrationError
    from quartier.store import roles

    owner = s.database.service_url("owner")
    done = []
    for service, role in (("api", roles.API), ("ingest", roles.INGEST)):
        url = s.database.service_url(service)  # type: ignore[arg-type]
        if url is None or url == owner:
            done.append(
                f"{service}: uses the owner's login (set QUARTIER_DATABASE__{service.upper()}_URL"
                f" with the role {role} to restrict it)"
            )
            continue
        info = conninfo_to_dict(url)
        login = str(info.get("user") or "")
        if not login:
            raise MigrationError(
                f"QUARTIER_DATABASE__{service.upper()}_URL names no user; use {role}"
            )
        try:
            password = info.get("password")
            done.append(
                roles.set_login(conn, role, login, None if password is None else str(password))
            )
        except psycopg.errors.InsufficientPrivilege:
            raise MigrationError(
                f"the owner's login may not change the role {role}: have an administrator run "
                f"`alter role {role} login password '…'` (or migrate once as a login with "
                "CREATEROLE)"
            ) from None
    return done


@app.command("status")
def db_status_cmd() -> None:
    """Storage path, sizes, compression, oldest/newest data, policies and jobs."""
    from quartier.store.status import collect

    s = settings()
    with user_errors(s), connect(s, autocommit=True, application_name="quartier-status") as conn:
        st = collect(conn)
    Console().print(render_status(st))


@app.command("maintain")
def db_maintain() -> None:
    """One round of store upkeep (plain PostgreSQL: partitions, retention, rollups, compaction;
    audit rows older than database.audit_retention deleted)."""
    from quartier.store import audit
    from quartier.store.policy import StorePolicy
    from quartier.store.rollups import maintain

    s = settings()
    with user_errors(s), connect(s, autocommit=True) as conn:
        done = maintain(conn, StorePolicy.from_settings(s.database))
        if s.database.audit_retention is not None:
            done["audit_rows_expired"] = audit.expire(conn, s.database.audit_retention)
        console.print(done)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _t(t: datetime | None) -> str:
    return "–" if t is None else f"{t:%Y-%m-%d %H:%M}Z"


def render_status(st: StoreStatus) -> RenderableType:
    """``quartier db status`` as one rich renderable."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    path = (
        "TimescaleDB " + (st.timescaledb_version or "")
        if st.path == "timescaledb"
        else ("plain PostgreSQL (monthly partitions, rollup tables)")
    )
    head.add_row("storage path", path)
    head.add_row("server", f"PostgreSQL {st.server_version}")
    bpo = st.bytes_per_observation
    head.add_row(
        "observations",
        f"~{st.observation_rows_estimate:,} rows, {_size(st.observation_bytes)}"
        + (f" ({bpo:.0f} bytes each)" if bpo else ""),
    )
    head.add_row("datastreams with data", f"{st.datastreams_with_data:,}")
    head.add_row("oldest / newest", f"{_t(st.oldest)} / {_t(st.newest)}")
    ratio = f"{st.compression_ratio:.1f}×, " if st.compression_ratio else ""
    head.add_row("compression", ratio + st.compression_note)
    rollups = ", ".join(
        f"{k.removeprefix('observation_')} {_size(v)}" for k, v in st.rollups.items()
    )
    head.add_row("rollups", rollups)
    parts = Table(
        title="chunks" if st.path == "timescaledb" else "partitions", title_justify="left"
    )
    for col in ("name", "from", "to", "size", "state"):
        parts.add_column(col, justify="right" if col == "size" else "left")
    for p in st.parts:
        parts.add_row(p.name, _t(p.start), _t(p.end), _size(p.bytes), p.state)
    jobs = Table(title="jobs", title_justify="left")
    keys = list(st.jobs[0].keys()) if st.jobs else ["job"]
    for k in keys:
        jobs.add_column(k)
    for j in st.jobs:
        jobs.add_row(*("" if j.get(k) is None else str(j.get(k)) for k in keys))
    return Group(head, parts, jobs)
