"""``quartier coverage``: the broadband and mobile coverage-gap analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from quartier.cli.common import console, settings, user_errors
from quartier.cli.connect import connect, database_url

app = typer.Typer(help="Broadband and mobile coverage-gap analysis.", no_args_is_help=True)


@app.command("analyse")
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
    from rich.progress import Progress

    from quartier.evaluation.current import refresh_after_coverage_run
    from quartier.geo import service

    s = settings()
    with user_errors(s):
        analysis = service.analysis_params(profile, params, min_tests=min_tests)
        with connect(s) as conn, Progress(console=console, transient=True) as bar:
            task = bar.add_task("analysis", total=len(service.ANALYSIS_STEPS))

            def step(name: str) -> None:
                done = service.ANALYSIS_STEPS.index(name)
                bar.update(task, description=name, completed=done)

            run_id, result = service.analyse_and_store(
                conn,
                analysis,
                district_level=level,
                progress=step,
                on_stored=refresh_after_coverage_run,
                min_contributors=s.privacy.min_contributors,
            )
            conn.commit()
            bar.update(task, completed=len(service.ANALYSIS_STEPS))
    table = Table(title=f"Coverage run {run_id} ({analysis.profile.name})")
    for col in ("district", "households", *[c.key for c in analysis.profile.classes]):
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


@app.command("export")
def coverage_export_cmd(
    out: Annotated[Path, typer.Option(help="directory for the files")] = Path("coverage-export"),
    format: Annotated[str, typer.Option(help="comma-separated: gpkg, geojson, csv")] = (
        "gpkg,geojson,csv"
    ),
    run: Annotated[int | None, typer.Option(help="run id; default the latest")] = None,
) -> None:
    """Export a stored run to GeoPackage, GeoJSON and CSV."""
    from rich.progress import Progress

    from quartier.geo.export import LAYERS, export_run

    formats = [f.strip() for f in format.split(",") if f.strip()]
    s = settings()
    with (
        user_errors(s),
        connect(s) as conn,
        Progress(console=console, transient=True) as bar,
    ):
        task = bar.add_task("export", total=2 + len(formats) * len(LAYERS))

        def step(name: str) -> None:
            bar.update(task, description=name, advance=1)

        files = export_run(conn, out, formats=formats, run_id=run, progress=step)
    for path in files:
        console.print(str(path))


@app.command("simulate")
def coverage_simulate_cmd(
    seed: Annotated[int, typer.Option(help="same seed, same world")] = 1,
    addresses: Annotated[int, typer.Option(help="address points")] = 150_000,
    speedtests: Annotated[int, typer.Option(help="speed tests")] = 200_000,
    signals: Annotated[int, typer.Option(help="mobile signal measurements")] = 1_000_000,
) -> None:
    """Load the simulated Köln coverage world (households, offers, speed tests, signal
    measurements, source "sim") into the store, for demos and tests."""
    from quartier.geo.input_store import write_inputs
    from quartier.pseudonym import pseudonymizer
    from quartier.sensors_sim.coverage_inputs import WorldConfig, coverage_world

    s = settings()
    with user_errors(s):
        database_url(s)
    with console.status("generating the simulated coverage world …"):
        world = coverage_world(
            WorldConfig(seed=seed, addresses=addresses, speedtests=speedtests, signals=signals)
        )
    with (
        user_errors(s),
        connect(s) as conn,
        console.status("writing to the database …"),
    ):
        counts = write_inputs(
            conn,
            world.addresses,
            world.offers,
            world.speedtests,
            world.signals,
            "sim",
            pseudonymizer(s),
        )
        conn.commit()
    console.print(
        "{:,} address points, {:,} offers, {:,} speed tests, {:,} signal measurements".format(
            *counts
        )
    )
