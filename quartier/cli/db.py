"""``quartier db``: schema, status and upkeep of the store."""

from __future__ import annotations

import typer
from rich.console import Console

from quartier.cli.common import console, settings, user_errors
from quartier.cli.connect import connect, database_url

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
    from quartier.store.status import db_status

    s = settings()
    with user_errors(s):
        database_url(s)
        Console().print(db_status(s))


@app.command("maintain")
def db_maintain() -> None:
    """One round of store upkeep (plain PostgreSQL: partitions, retention, rollups, compaction)."""
    from quartier.store.rollups import StorePolicy, maintain

    s = settings()
    with user_errors(s), connect(s, autocommit=True) as conn:
        console.print(maintain(conn, StorePolicy.from_settings(s.database)))
