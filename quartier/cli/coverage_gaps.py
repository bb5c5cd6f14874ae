"""``quartier coverage``: the broadband and mobile coverage-gap analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    workers: Annotated[
        int | None, typer.Option(help="analyse on a local Dask cluster of N worker processes")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="analyse on this Dask cluster (tcp://host:8786)")
    ] = None,
    tile_km: Annotated[
        int | None, typer.Option(help="tile side in km on Dask (default 50; docs/coverage.md)")
    ] = None,
) -> None:
    """Analyse the stored inputs on the 100 m grid and store the results as a new run; in one
    process, or tile by tile on Dask (--workers N or --scheduler URL; docs/coverage.md)."""
    if workers is not None or scheduler is not None:
        _analyse_on_dask(profile, level, params, min_tests, workers, scheduler, tile_km)
        return
    from rich.progress import Progress

    from quartier.coverage_run import after_coverage_run
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
                on_stored=after_coverage_run(s.privacy.min_contributors),
                min_contributors=s.privacy.min_contributors,
            )
            conn.commit()
            bar.update(task, completed=len(service.ANALYSIS_STEPS))
    _print_run(run_id, analysis, result.districts)
    console.print(
        f"{len(result.cells):,} cells, {len(result.gaps):,} gap clusters, "
        f"{int(result.cells['dead_zone'].sum()):,} dead zones"
    )


def _analyse_on_dask(
    profile: str,
    level: str,
    params: Path | None,
    min_tests: int | None,
    workers: int | None,
    scheduler: str | None,
    tile_km: int | None,
) -> None:
    import logging

    from quartier.coverage_run import after_coverage_run
    from quartier.errors import BadRequestError, ConfigError, ServiceError
    from quartier.geo import service

    s = settings()
    with user_errors(s):
        if workers is not None and scheduler is not None:
            raise BadRequestError("give either --workers or --scheduler, not both")
        if workers is not None and workers < 1:
            raise BadRequestError("--workers must be at least 1")
        if tile_km is not None and tile_km < 1:
            raise BadRequestError("--tile-km must be at least 1")
        try:
            from distributed import Client
            from distributed.comm.core import CommClosedError
            from distributed.scheduler import KilledWorker
        except ImportError:
            raise ConfigError(
                "Dask is not installed: pip install 'quartier[scale]' (dask[distributed])"
            ) from None
        from quartier.geo.distributed import local_cluster

        analysis = service.analysis_params(profile, params, min_tests=min_tests)
        url = database_url(s)
        # Dask logs its workers' connection errors with tracebacks (e.g. heartbeats cut off
        # while a local cluster shuts down); what matters reaches the client as an exception
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        with connect(s) as conn:
            cluster = local_cluster(workers) if workers is not None else None
            try:
                client = _dask_client(Client, cluster, scheduler)
                with client, console.status("analysing on Dask …") as status:
                    console.print(f"Dask: {client.dashboard_link or scheduler or 'local'}")
                    run_id, result = service.analyse_and_store_on_dask(
                        conn,
                        client,
                        url,
                        analysis,
                        tile_cells=tile_km * 10 if tile_km else None,
                        district_level=level,
                        progress=status.update,
                        on_stored=after_coverage_run(s.privacy.min_contributors),
                        min_contributors=s.privacy.min_contributors,
                    )
                    conn.commit()
            except (KilledWorker, CommClosedError) as exc:
                raise ServiceError(
                    f"the Dask cluster failed during the analysis ({type(exc).__name__}: {exc});"
                    " nothing was stored"
                ) from None
            finally:
                if cluster is not None:
                    cluster.close()
    _print_run(run_id, analysis, result.districts)
    console.print(
        f"{result.inputs.get('cells', 0):,} cells in {result.tiles:,} tiles, "
        f"{len(result.gaps):,} gap clusters, {result.dead_zones:,} dead zones"
    )


def _dask_client(client_class: Any, cluster: Any, scheduler: str | None) -> Any:
    from quartier.errors import UnreachableError

    try:
        return client_class(cluster if cluster is not None else scheduler, timeout=10)
    except OSError as exc:
        raise UnreachableError(
            f"cannot reach the Dask scheduler at {scheduler} ({type(exc).__name__}): start it "
            f"with `dask scheduler` and its workers with `dask worker {scheduler}`",
            str(scheduler),
        ) from None


def _print_run(run_id: int, analysis: Any, districts: Any) -> None:
    table = Table(title=f"Coverage run {run_id} ({analysis.profile.name})")
    for col in ("district", "households", *[c.key for c in analysis.profile.classes]):
        table.add_column(col, justify="right")
    for row in districts.itertuples(index=False):
        rec = row._asdict()
        table.add_row(
            str(rec["name"]),
            f"{rec['households']:,}",
            *[f"{rec[f'share_{c.key}']:.1f} %" for c in analysis.profile.classes],
        )
    console.print(table)


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
