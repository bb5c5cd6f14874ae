"""The ``quartier`` command: the process composition root.

Settings are created here once per invocation and passed down. Errors of Quartier's hierarchy are
printed as one line (no stack trace) with exit code 1.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pythonjsonlogger.json import JsonFormatter
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from quartier.config import Settings
from quartier.errors import QuartierError

console = Console(stderr=True)
log = logging.getLogger("quartier")
app = typer.Typer(
    help="Quartier: smart-city data platform.", no_args_is_help=True, pretty_exceptions_enable=False
)
services_app = typer.Typer(help="Project-local PostgreSQL and Mosquitto.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema and status.", no_args_is_help=True)
import_app = typer.Typer(help="Import reference data.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(db_app, name="db")
rejects_app = typer.Typer(
    help="Messages the ingester refused: inspect and replay.", no_args_is_help=True
)
app.add_typer(import_app, name="import")
app.add_typer(rejects_app, name="rejects")

F = TypeVar("F", bound=Callable[..., Any])


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def _setup_logging(verbose: bool, log_format: str = "text") -> None:
    handler: logging.Handler
    if log_format == "json":  # one JSON object per line on stderr, for log collectors
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(threadName)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s" if log_format == "json" else "%(name)s: %(message)s",
        handlers=[handler],
        force=True,
    )
    logging.getLogger("paho").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            help="text (for people) or json (one object per line, for log collectors)",
        ),
    ] = LogFormat.text,
) -> None:
    _setup_logging(verbose, log_format.value)


def _settings(local: bool = True) -> Settings:
    settings = Settings()
    return settings.with_local_services() if local else settings


def _local_services(settings: Settings) -> Any:
    from quartier.services import LocalServices

    return LocalServices.from_settings(settings.services)


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except QuartierError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


# ------------------------------------------------------------------------------ services
@services_app.command("up")
def services_up() -> None:
    """Install (if needed) and start PostgreSQL + PostGIS and Mosquitto under .quartier/."""
    settings = _settings(local=False)
    with _user_errors(), console.status("starting PostgreSQL and Mosquitto …"):
        state = _local_services(settings).up()
    console.print(f"PostgreSQL  {state.database_url}")
    console.print(f"Mosquitto   {state.mqtt_url}")


@services_app.command("down")
def services_down() -> None:
    """Stop the project-local services."""
    with _user_errors():
        _local_services(_settings(local=False)).down()
    console.print("services stopped")


@services_app.command("status")
def services_status() -> None:
    """Show whether the project-local services run, and where."""
    table = Table("service", "running", "url", "detail")
    for st in _local_services(_settings(local=False)).status():
        table.add_row(st.name, "yes" if st.running else "no", st.url or "-", st.detail)
    Console().print(table)


# ------------------------------------------------------------------------------ db
@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending schema migrations, partitions ahead and the store policies."""
    from quartier.store.setup import prepare

    settings = _settings()
    with _user_errors():
        path, applied = prepare(settings.require_database_url(), settings.database)
    console.print(
        f"storage path: {path}; applied {len(applied)} migration(s)"
        + (": " + ", ".join(applied) if applied else "")
    )


@db_app.command("status")
def db_status_cmd() -> None:
    """Storage path, sizes, compression, oldest/newest data, policies and jobs."""
    from quartier.store.status import db_status

    with _user_errors():
        Console().print(db_status(_settings()))


@db_app.command("maintain")
def db_maintain() -> None:
    """One round of store upkeep (plain PostgreSQL: partitions, retention, rollups, compaction)."""
    import psycopg

    from quartier.store.rollups import StorePolicy, maintain

    settings = _settings()
    with _user_errors(), psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        console.print(maintain(conn, StorePolicy.from_settings(settings.database)))


# ------------------------------------------------------------------------------ ingest / serve
@app.command("ingest")
def ingest(
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus metrics on this port")
    ] = None,
    stats: Annotated[
        bool, typer.Option("--stats", help="show a live view of the counters")
    ] = False,
) -> None:
    """Subscribe to the sensor topics and store what arrives (Ctrl-C stops)."""
    from quartier.ingest.metrics import serve_metrics
    from quartier.ingest.mqtt import Ingester

    settings = _settings()
    with _user_errors():
        ing = Ingester(settings)
    _stop_on_signals(ing.stop_event)
    from quartier.store.rollups import start_maintenance

    start_maintenance(settings.require_database_url(), settings.database, ing.stop_event)
    port = metrics_port or settings.ingest.metrics_port
    if port:
        serve_metrics(ing, port)
        console.print(f"metrics on http://127.0.0.1:{port}/metrics")
    if not stats:
        ing.run()
        if ing.failed is not None:
            raise typer.Exit(1)
        return
    from rich.live import Live

    worker = threading.Thread(target=ing.run, name="ingest", daemon=True)
    worker.start()
    with Live(_stats_table(ing), console=console, refresh_per_second=2) as live:
        while worker.is_alive():
            worker.join(1.0)
            live.update(_stats_table(ing))
    if ing.failed is not None:
        raise typer.Exit(1)


def _stats_table(ing: Any) -> Table:
    st = ing.stats
    up = max(time.monotonic() - st.started, 1e-9)
    table = Table("counter", "value", "per second", title="quartier ingest")
    for name in ("received", "stored", "duplicates", "speedtests", "rejected", "batches"):
        value = getattr(st, name)
        table.add_row(name, f"{value:,}", f"{value / up:,.0f}")
    table.add_row("buffer", f"{ing.buffered():,} / {ing.cfg.buffer_max:,}", "")
    table.add_row("last batch", f"{st.last_batch_size} msgs in {st.last_batch_ms:.0f} ms", "")
    table.add_row("lag", f"{st.lag_s:.2f} s", "")
    table.add_row("connected", "yes" if ing.connected.is_set() else "no", "")
    return table


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
) -> None:
    """Run the HTTP API (SensorThings v1.1, indicators, maps)."""
    import uvicorn

    from quartier.api.app import create_app

    settings = _settings()
    with _user_errors():
        settings.require_database_url()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_level="info",
    )


# ------------------------------------------------------------------------------ simulate / import
@app.command("simulate")
def simulate_cmd(
    seed: Annotated[int, typer.Option(help="random seed: same seed, same fleet and readings")] = 1,
    sensors: Annotated[int, typer.Option(help="number of sensors")] = 40,
    interval: Annotated[float, typer.Option(help="seconds between readings of a sensor")] = 10.0,
    start: Annotated[
        datetime | None,
        typer.Option(help="replay from this UTC time on a virtual clock (default: live)"),
    ] = None,
    count: Annotated[int | None, typer.Option(help="stop after this many ticks")] = None,
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    speedtests: Annotated[int, typer.Option(help="speed tests per tick")] = 2,
    network: Annotated[str, typer.Option(help="device network name in the topics")] = "sim",
    rate: Annotated[float | None, typer.Option(help="max messages/s when replaying")] = None,
) -> None:
    """Run a deterministic fleet of Köln city sensors publishing over MQTT."""
    from quartier.sensors_sim.run import simulate

    settings = _settings()
    stop = threading.Event()
    _stop_on_signals(stop)
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    with _user_errors(), console.status("publishing …") as status:
        stats = simulate(
            settings,
            seed=seed,
            sensors=sensors,
            interval_s=interval,
            start=start,
            count=count,
            duration_s=duration,
            speedtests_per_tick=speedtests,
            stop_event=stop,
            progress=lambda n: status.update(f"published {n} messages"),
            network=network,
            rate=rate,
        )
    console.print(
        f"published {stats.messages} messages ({stats.readings} readings, "
        f"{stats.speedtests} speed tests) in {stats.ticks} ticks, "
        f"{stats.first_time} … {stats.last_time}"
    )


@import_app.command("districts")
def import_districts_cmd(
    stadtbezirke: Annotated[Path | None, typer.Option(help="GeoJSON/GPKG of Stadtbezirke")] = None,
    stadtteile: Annotated[Path | None, typer.Option(help="GeoJSON/GPKG of Stadtteile")] = None,
    city: Annotated[Path | None, typer.Option(help="city boundary")] = None,
    population: Annotated[Path | None, typer.Option(help="population CSV")] = None,
) -> None:
    """Load city, Stadtbezirke and Stadtteile (default: the Köln files shipped with Quartier)."""
    import psycopg

    from quartier.geo.io import import_districts

    settings = _settings()
    with _user_errors(), psycopg.connect(settings.require_database_url()) as conn:
        counts = import_districts(conn, stadtbezirke, stadtteile, city, population)
    console.print(", ".join(f"{n} {level}" for level, n in counts.items()) + " imported")


@import_app.command("sensor-community")
def import_sensor_community_cmd(
    files: Annotated[
        list[Path], typer.Argument(help="archive CSV files (archive.sensor.community)")
    ],
) -> None:
    """Replay Sensor.Community archive CSV files through the ingest pipeline (idempotent)."""
    from quartier.ingest.archive import import_sensor_community_csv

    settings = _settings()
    with _user_errors(), console.status("importing …") as status:
        res = import_sensor_community_csv(
            settings, files, progress=lambda n: status.update(f"{n} readings")
        )
    console.print(
        f"{res.files} file(s): {res.stored} readings stored, {res.duplicates} already there, "
        f"{res.rejects} refused (see `quartier rejects list`)"
    )


coverage_app = typer.Typer(help="Broadband and mobile coverage-gap analysis.", no_args_is_help=True)
app.add_typer(coverage_app, name="coverage")


@coverage_app.command("analyse")
def coverage_analyse_cmd(
    profile: Annotated[str, typer.Option(help="class profile: de (German funding) or bead")] = "de",
    level: Annotated[str, typer.Option(help="district level: stadtbezirk, stadtteil, city")] = (
        "stadtbezirk"
    ),
    params: Annotated[
        Path | None, typer.Option(help="JSON file with analysis parameters (AnalysisParams)")
    ] = None,
    min_tests: Annotated[int | None, typer.Option(help="speed tests a cell needs")] = None,
) -> None:
    """Analyse the stored inputs on the 100 m grid and store the results as a new run."""
    import json

    import psycopg
    from rich.progress import Progress

    from quartier.errors import BadRequestError
    from quartier.geo import service
    from quartier.geo.analysis import AnalysisParams
    from quartier.geo.profiles import PROFILES

    settings = _settings()
    with _user_errors():
        if profile not in PROFILES:
            raise BadRequestError(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
        values = json.loads(params.read_text(encoding="utf-8")) if params else {}
        values.setdefault("profile", PROFILES[profile].model_dump())
        if min_tests is not None:
            values["min_tests"] = min_tests
        try:
            analysis = AnalysisParams.model_validate(values)
        except ValueError as exc:
            raise BadRequestError(f"invalid analysis parameters: {exc}") from None
        with (
            psycopg.connect(settings.require_database_url()) as conn,
            Progress(console=console, transient=True) as bar,
        ):
            task = bar.add_task("Analyse", total=len(service.ANALYSIS_STEPS))

            def step(name: str) -> None:
                done = service.ANALYSIS_STEPS.index(name)
                bar.update(task, description=name, completed=done)

            run_id, result = service.analyse_and_store(
                conn, analysis, district_level=level, progress=step
            )
            conn.commit()
            bar.update(task, completed=len(service.ANALYSIS_STEPS))
    table = Table(title=f"Coverage run {run_id} ({analysis.profile.name})")
    for col in ("Bezirk", "Haushalte", *[c.key for c in analysis.profile.classes]):
        table.add_column(col, justify="right")
    for row in result.districts.itertuples(index=False):
        rec = row._asdict()
        table.add_row(
            str(rec["name"]),
            f"{rec['households']:,}",
            *[f"{rec[f'share_{c.key}']:.1f} %" for c in analysis.profile.classes],
        )
    console.print(table)
    console.print(
        f"{len(result.cells):,} cells, {len(result.gaps):,} gap clusters, "
        f"{int(result.cells['dead_zone'].sum()):,} dead zones"
    )


@coverage_app.command("export")
def coverage_export_cmd(
    out: Annotated[Path, typer.Option(help="directory for the files")] = Path("coverage-export"),
    format: Annotated[str, typer.Option(help="comma-separated: gpkg, geojson, csv")] = (
        "gpkg,geojson,csv"
    ),
    run: Annotated[int | None, typer.Option(help="run id; default the latest")] = None,
) -> None:
    """Export a stored run to GeoPackage, GeoJSON and CSV."""
    import psycopg
    from rich.progress import Progress

    from quartier.geo.export import LAYERS, export_run

    formats = [f.strip() for f in format.split(",") if f.strip()]
    settings = _settings()
    with (
        _user_errors(),
        psycopg.connect(settings.require_database_url()) as conn,
        Progress(console=console, transient=True) as bar,
    ):
        task = bar.add_task("Export", total=2 + len(formats) * len(LAYERS))

        def step(name: str) -> None:
            bar.update(task, description=name, advance=1)

        files = export_run(conn, out, formats=formats, run_id=run, progress=step)
    for path in files:
        console.print(str(path))


def _report_table(report: Any) -> None:
    console.print(report.summary())
    if len(report.rejected):
        table = Table(title="rejected rows (first 20)")
        for col in ("row", "reason", "value"):
            table.add_column(col)
        for r in report.rejected.head(20).itertuples(index=False):
            table.add_row(str(r.row), str(r.reason), str(r.value))
        console.print(table)


@import_app.command("broadband")
def import_broadband_cmd(
    path: Annotated[Path, typer.Argument(help="CSV, GeoJSON or GeoPackage")],
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="field=column, e.g. max_down_mbps=Download (repeatable)"),
    ] = None,
    source: Annotated[str | None, typer.Option(help="source name; default the file name")] = None,
    layer: Annotated[str | None, typer.Option(help="GeoPackage layer")] = None,
    sep: Annotated[str, typer.Option(help="CSV separator")] = ",",
) -> None:
    """Import fixed broadband offers per address point or grid cell, with a column mapping."""
    _import_supply("broadband", path, map_, source, layer, sep)


@import_app.command("households")
def import_households_cmd(
    path: Annotated[Path, typer.Argument(help="CSV, GeoJSON or GeoPackage")],
    map_: Annotated[
        list[str] | None, typer.Option("--map", help="field=column, e.g. households=HH")
    ] = None,
    source: Annotated[str | None, typer.Option(help="source name; default the file name")] = None,
    layer: Annotated[str | None, typer.Option(help="GeoPackage layer")] = None,
    sep: Annotated[str, typer.Option(help="CSV separator")] = ",",
) -> None:
    """Import households per address point or grid cell, with a column mapping."""
    _import_supply("households", path, map_, source, layer, sep)


def _import_supply(
    what: str,
    path: Path,
    map_: list[str] | None,
    source: str | None,
    layer: str | None,
    sep: str,
) -> None:
    import psycopg

    from quartier.geo.supply import ColumnMapping, import_broadband, import_households

    importer = import_broadband if what == "broadband" else import_households
    settings = _settings()
    with _user_errors(), psycopg.connect(settings.require_database_url()) as conn:
        report = importer(
            conn, path, ColumnMapping.parse(map_ or []), source=source, layer=layer, sep=sep
        )
        conn.commit()
    _report_table(report)


@coverage_app.command("simulate")
def coverage_simulate_cmd(
    seed: Annotated[int, typer.Option(help="same seed, same world")] = 1,
    addresses: Annotated[int, typer.Option(help="address points")] = 150_000,
    speedtests: Annotated[int, typer.Option(help="speed tests")] = 200_000,
    signals: Annotated[int, typer.Option(help="mobile signal measurements")] = 1_000_000,
) -> None:
    """Load the simulated Köln coverage world (households, offers, speed tests, signal
    measurements, source "sim") into the store, for demos and tests."""
    import psycopg

    from quartier.geo.input_store import write_inputs
    from quartier.sensors_sim.coverage_inputs import WorldConfig, coverage_world

    settings = _settings()
    with console.status("Simulierte Versorgung erzeugen …"):
        world = coverage_world(
            WorldConfig(seed=seed, addresses=addresses, speedtests=speedtests, signals=signals)
        )
    with (
        _user_errors(),
        psycopg.connect(settings.require_database_url()) as conn,
        console.status("In die Datenbank schreiben …"),
    ):
        counts = write_inputs(
            conn, world.addresses, world.offers, world.speedtests, world.signals, "sim"
        )
        conn.commit()
    console.print(
        "{:,} address points, {:,} offers, {:,} speed tests, {:,} signal measurements".format(
            *counts
        )
    )


@app.command("demo")
def demo_cmd(
    duration: Annotated[
        float | None, typer.Option(help="stop by itself after this many seconds")
    ] = None,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 1,
    sensors: Annotated[int, typer.Option(help="simulated sensors")] = 40,
    port: Annotated[int, typer.Option(help="API port (a free one if taken)")] = 8000,
    keep_services: Annotated[
        bool, typer.Option(help="leave PostgreSQL and Mosquitto running afterwards")
    ] = False,
) -> None:
    """Everything at once: services, schema, districts, a day of history, then the simulator,
    ingester and API together until Ctrl-C (or --duration)."""
    from quartier.demo import Demo

    stop = threading.Event()
    _stop_on_signals(stop)
    with _user_errors():
        Demo(
            _settings(local=False),
            console,
            stop,
            seed=seed,
            sensors=sensors,
            port=port,
            keep_services=keep_services,
        ).run(duration)


# ------------------------------------------------------------------------------ evaluation
indicators_app = typer.Typer(help="Indicators of the strategy evaluation.", no_args_is_help=True)
app.add_typer(indicators_app, name="indicators")


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
    import psycopg

    from quartier.evaluation.report import evaluate_to_report

    if lang not in (None, "de", "en"):
        raise typer.BadParameter("de or en", param_hint="--lang")
    when = as_of or datetime.now(UTC)
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    settings = _settings()
    with _user_errors(), psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        evaluation, files = evaluate_to_report(
            conn, strategy, out, as_of=when, pdf=pdf, lang=lang, history_months=history_months
        )
    s = evaluation.summary
    console.print(
        f"evaluation run {evaluation.run_id}: {s['on_track']} on track, {s['at_risk']} at risk,"
        f" {s['off_track']} off track, {s['no_data']} without data"
    )
    console.print("wrote " + ", ".join(str(f) for f in files))


@indicators_app.command("import")
def indicators_import_cmd(
    file: Annotated[Path, typer.Argument(help="CSV: indicator,date,value,source[,…]")],
) -> None:
    """Record manual indicator values (OZG services online, course participants, …) from CSV;
    all rows or none."""
    import psycopg

    from quartier.evaluation.manual import import_csv

    settings = _settings()
    with _user_errors(), psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        n = import_csv(conn, file)
    console.print(f"recorded {n} indicator value(s) from {file}")


# ------------------------------------------------------------------------------ rejects
@rejects_app.command("list")
def rejects_list(
    reason: Annotated[str | None, typer.Option(help="only this reason")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 50,
    all_: Annotated[bool, typer.Option("--all", help="include replayed ones")] = False,
) -> None:
    """Refused messages, newest first, with a count per reason."""
    from quartier.ingest import rejects

    url = _settings().require_database_url()
    with _user_errors():
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


@rejects_app.command("show")
def rejects_show(reject_id: int) -> None:
    """One refused message in full, with its raw payload."""
    from quartier.ingest import rejects

    row = rejects.get_reject(_settings().require_database_url(), reject_id)
    if row is None:
        console.print(f"[red]error:[/red] no reject with id {reject_id}")
        raise typer.Exit(1)
    out = Console()
    for key in ("id", "received_at", "source", "topic", "reason", "detail", "replayed_at"):
        out.print(f"[bold]{key}[/bold]: {row[key]}")
    payload = bytes(row["payload"])
    try:
        out.print("[bold]payload[/bold]:", payload.decode("utf-8"), markup=False)
    except UnicodeDecodeError:
        out.print(f"[bold]payload (hex)[/bold]: {payload.hex()}")


@rejects_app.command("replay")
def rejects_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="reject ids (default: all open)")] = None,
    reason: Annotated[str | None, typer.Option(help="only this reason")] = None,
) -> None:
    """Run refused messages through today's decoders again; store those that now pass."""
    from quartier.ingest import rejects

    settings = _settings()
    with _user_errors():
        res = rejects.replay(
            settings.require_database_url(),
            settings.ingest,
            datetime.now(UTC),
            ids=ids or None,
            reason=reason,
        )
    console.print(f"replayed {res.tried}: {res.stored} stored, {res.still_failing} still failing")


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            sys.exit(130)
        console.print("stopping … (again to force)")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run() -> None:  # pragma: no cover - console entry for python -m
    app()


if __name__ == "__main__":  # pragma: no cover
    run()
