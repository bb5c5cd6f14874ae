"""``quartier import``: reference data (districts), archives and operator files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from quartier.cli.common import console, settings, user_errors
from quartier.cli.connect import connect, database_url

app = typer.Typer(help="Import reference data.", no_args_is_help=True)


@app.command("districts")
def import_districts_cmd(
    stadtbezirke: Annotated[Path | None, typer.Option(help="GeoJSON/GPKG of Stadtbezirke")] = None,
    stadtteile: Annotated[Path | None, typer.Option(help="GeoJSON/GPKG of Stadtteile")] = None,
    city: Annotated[Path | None, typer.Option(help="city boundary")] = None,
    population: Annotated[Path | None, typer.Option(help="population CSV")] = None,
) -> None:
    """Load city, Stadtbezirke and Stadtteile (default: the Köln files shipped with Quartier)."""
    from quartier.geo.io import import_districts

    s = settings()
    with user_errors(s), connect(s) as conn:
        counts = import_districts(conn, stadtbezirke, stadtteile, city, population)
    console.print(", ".join(f"{n} {level}" for level, n in counts.items()) + " imported")


@app.command("sensor-community")
def import_sensor_community_cmd(
    files: Annotated[
        list[Path], typer.Argument(help="archive CSV files (archive.sensor.community)")
    ],
) -> None:
    """Replay Sensor.Community archive CSV files through the ingest pipeline (idempotent)."""
    from quartier.ingest.archive import import_sensor_community_csv

    s = settings()
    with user_errors(s):
        database_url(s)
    with user_errors(s), console.status("importing …") as status:
        res = import_sensor_community_csv(
            s, files, progress=lambda n: status.update(f"{n} readings")
        )
    console.print(
        f"{res.files} file(s): {res.stored} readings stored, {res.duplicates} already there, "
        f"{res.rejects} refused (see `quartier rejects list`)"
    )


@app.command("broadband")
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


@app.command("households")
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
    from quartier.geo.supply import ColumnMapping, import_broadband, import_households

    importer = import_broadband if what == "broadband" else import_households
    s = settings()
    with user_errors(s), connect(s) as conn:
        report = importer(
            conn, path, ColumnMapping.parse(map_ or []), source=source, layer=layer, sep=sep
        )
        conn.commit()
    _report_table(report)


def _report_table(report: Any) -> None:
    console.print(report.summary())
    if len(report.rejected):
        table = Table(title="rejected rows (first 20)")
        for col in ("row", "reason", "value"):
            table.add_column(col)
        for r in report.rejected.head(20).itertuples(index=False):
            table.add_row(str(r.row), str(r.reason), str(r.value))
        console.print(table)
