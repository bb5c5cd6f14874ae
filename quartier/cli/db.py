"""``quartier db``: schema, status and upkeep of the store; the rendering of the store's status."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import typer
from rich.console import Console, Group, RenderableType
from rich.table import Table

from quartier.cli.common import console, settings, user_errors
from quartier.cli.connect import connect, database_url

if TYPE_CHECKING:
    from quartier.store.status import StoreStatus

app = typer.Typer(help="Database schema and status.", no_args_is_help=True)


@app.command("migrate")
def db_migrate() -> None:
    """Apply pending schema migrations, partitions ahead and the store policies."""
    from quartier.store.setup import prepare

    s = settings()
    with user_errors(s):
        path, applied = prepare(database_url(s), s.database)
    console.print(
        f"storage path: {path}; applied {len(applied)} migration(s)"
        + (": " + ", ".join(applied) if applied else "")
    )


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
    """One round of store upkeep (plain PostgreSQL: partitions, retention, rollups, compaction)."""
    from quartier.store.policy import StorePolicy
    from quartier.store.rollups import maintain

    s = settings()
    with user_errors(s), connect(s, autocommit=True) as conn:
        console.print(maintain(conn, StorePolicy.from_settings(s.database)))


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
