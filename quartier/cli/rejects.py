"""``quartier rejects``: messages the ingester refused, inspected and replayed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from quartier.cli.common import console, fail, settings, user_errors
from quartier.cli.connect import database_url

app = typer.Typer(help="Messages the ingester refused: inspect and replay.", no_args_is_help=True)


@app.command("list")
def rejects_list(
    reason: Annotated[str | None, typer.Option(help="only this reason")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 50,
    all_: Annotated[bool, typer.Option("--all", help="include replayed ones")] = False,
) -> None:
    """Refused messages, newest first, with a count per reason."""
    from quartier.ingest import rejects

    s = settings()
    with user_errors(s):
        url = database_url(s)
        counts = rejects.summary(url)
        rows = rejects.list_rejects(url, reason=reason, limit=limit, include_replayed=all_)
    out = Console()
    out.print(", ".join(f"{c['reason']}: {c['n']}" for c in counts) or "no open rejects")
    table = Table("id", "received", "topic", "reason", "detail", "bytes", "replayed")
    for r in rows:
        table.add_row(
            str(r["id"]),
            f"{r['received_at']:%Y-%m-%d %H:%M:%S}",
            r["topic"],
            r["reason"],
            r["detail"][:80],
            str(r["bytes"]),
            "" if r["replayed_at"] is None else f"{r['replayed_at']:%Y-%m-%d %H:%M}",
        )
    out.print(table)


@app.command("show")
def rejects_show(reject_id: int) -> None:
    """One refused message in full, with its raw payload."""
    from quartier.ingest import rejects

    s = settings()
    with user_errors(s):
        row = rejects.get_reject(database_url(s), reject_id)
    if row is None:
        raise fail(f"no reject with id {reject_id}")
    out = Console()
    for key in ("id", "received_at", "source", "topic", "reason", "detail", "replayed_at"):
        out.print(f"[bold]{key}[/bold]: {row[key]}")
    payload = bytes(row["payload"])
    try:
        out.print("[bold]payload[/bold]:", payload.decode("utf-8"), markup=False)
    except UnicodeDecodeError:
        out.print(f"[bold]payload (hex)[/bold]: {payload.hex()}")


@app.command("replay")
def rejects_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="reject ids (default: all open)")] = None,
    reason: Annotated[str | None, typer.Option(help="only this reason")] = None,
) -> None:
    """Run refused messages through today's decoders again; store those that now pass."""
    from quartier.ingest import rejects
    from quartier.pseudonym import pseudonymizer

    s = settings()
    with user_errors(s):
        res = rejects.replay(
            database_url(s),
            s.ingest,
            datetime.now(UTC),
            ids=ids or None,
            reason=reason,
            pseudonyms=pseudonymizer(s),
        )
    console.print(f"replayed {res.tried}: {res.stored} stored, {res.still_failing} still failing")
