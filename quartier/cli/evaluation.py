"""``quartier evaluate`` and ``quartier indicators``: the strategy evaluation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from quartier.cli.common import console, settings, user_errors
from quartier.cli.connect import connect

#: ``evaluate`` (a top-level command)
app = typer.Typer()
#: ``quartier indicators …``
indicators_app = typer.Typer(help="Indicators of the strategy evaluation.", no_args_is_help=True)


@app.command("evaluate")
def evaluate_cmd(
    strategy: Annotated[Path, typer.Option("--strategy", help="strategy YAML file")],
    out: Annotated[Path, typer.Option("--out", help="report: .html (or .pdf)")] = Path(
        "report.html"
    ),
    pdf: Annotated[bool, typer.Option("--pdf", help="also write a PDF beside the HTML")] = False,
    lang: Annotated[
        str | None, typer.Option("--lang", help="de or en (default: the strategy's, de)")
    ] = None,
    as_of: Annotated[
        datetime | None, typer.Option("--as-of", help="evaluation date, UTC (default: now)")
    ] = None,
    history_months: Annotated[
        int, typer.Option(help="also compute the indicators as of 1..N months before")
    ] = 0,
) -> None:
    """Evaluate a strategy against the stored data, store the run and write the report."""
    from quartier.evaluation.report import evaluate_to_report

    if lang not in (None, "de", "en"):
        raise typer.BadParameter("de or en", param_hint="--lang")
    when = as_of or datetime.now(UTC)
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    s = settings()
    with user_errors(s), connect(s, autocommit=True) as conn:
        evaluation, files = evaluate_to_report(
            conn, strategy, out, as_of=when, pdf=pdf, lang=lang, history_months=history_months
        )
    summary = evaluation.summary
    console.print(
        f"evaluation run {evaluation.run_id}: {summary['on_track']} on track,"
        f" {summary['at_risk']} at risk, {summary['off_track']} off track,"
        f" {summary['no_data']} without data"
    )
    console.print("wrote " + ", ".join(str(f) for f in files))


@indicators_app.command("import")
def indicators_import_cmd(
    file: Annotated[Path, typer.Argument(help="CSV: indicator,date,value,source[,…]")],
) -> None:
    """Record manual indicator values (OZG services online, course participants, …) from CSV;
    all rows or none."""
    from quartier.evaluation.current import refresh_indicators
    from quartier.evaluation.manual import import_csv
    from quartier.evaluation.storage import manual_indicators

    s = settings()
    with user_errors(s), connect(s, autocommit=True) as conn:
        n = import_csv(conn, file)
        refresh_indicators(conn, ids=manual_indicators(), trigger=f"import {file.name}")
    console.print(f"recorded {n} indicator value(s) from {file}")


@indicators_app.command("refresh")
def indicators_refresh_cmd(
    as_of: Annotated[
        datetime | None, typer.Option("--as-of", help="compute as of, UTC (default: now)")
    ] = None,
    every: Annotated[
        float | None,
        typer.Option(
            "--every",
            min=1.0,
            help="keep running: refresh every SECONDS (e.g. 300) until stopped (Ctrl-C)",
        ),
    ] = None,
) -> None:
    """Recompute the current value of every indicator (city and every Stadtbezirk) and store it
    for ``GET /indicators``; with ``--every``, on a schedule (run it beside ``quartier ingest``
    and ``quartier serve``)."""
    from quartier.evaluation.current import refresh_every, refresh_indicators

    if every is not None:
        if as_of is not None:
            raise typer.BadParameter("--as-of and --every exclude each other", param_hint="--as-of")
        import threading

        from quartier.cli.common import stop_on_signals

        s = settings()
        stop = threading.Event()
        with user_errors(s):
            with connect(s, autocommit=True):  # the database answers (else: a one-line error)
                pass
            stop_on_signals(stop)
            console.print(f"refreshing the indicators every {every:g} s (Ctrl-C stops)")
            refresh_every(lambda: connect(s, autocommit=True), every, stop)
        return
    when = as_of or datetime.now(UTC)
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    s = settings()
    with user_errors(s), connect(s, autocommit=True) as conn:
        stored = refresh_indicators(conn, when, trigger="cli")
    console.print(
        f"stored {len(stored.values)} indicator value(s) as of {when:%Y-%m-%d %H:%M} UTC;"
        f" {len(stored.notes)} indicator(s) without data"
    )
