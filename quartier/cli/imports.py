"""``quartier import``: reference data (districts), archives and operator files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from quartier.cli.common import console, fail, settings, user_errors
from quartier.cli.connect import connect, database_url

app = typer.Typer(help="Import reference data.", no_args_is_help=True)


@app.command("districts")
def import_districts_cmd(
    file: Annotated[
        Path | None,
        typer.Argument(help="GeoJSON, GeoPackage or Shapefile of districts (any CRS)"),
    ] = None,
    code: Annotated[str | None, typer.Option(help="column of the district code")] = None,
    name: Annotated[str | None, typer.Option(help="column of the district name")] = None,
    parent: Annotated[
        str | None, typer.Option(help="column of the parent's code (default: found by area)")
    ] = None,
    population: Annotated[str | None, typer.Option(help="column of the population")] = None,
    level: Annotated[str, typer.Option(help="stadtbezirk or stadtteil")] = "stadtbezirk",
    layer: Annotated[str | None, typer.Option(help="GeoPackage layer")] = None,
    crs: Annotated[
        str | None, typer.Option(help="CRS of a file that names none, e.g. EPSG:25832")
    ] = None,
    stadtbezirke: Annotated[Path | None, typer.Option(help="Köln-shaped Stadtbezirke")] = None,
    stadtteile: Annotated[Path | None, typer.Option(help="Köln-shaped Stadtteile")] = None,
    city: Annotated[Path | None, typer.Option(help="Köln-shaped city boundary")] = None,
    population_csv: Annotated[
        Path | None, typer.Option("--population-csv", help="Köln statistics CSV")
    ] = None,
) -> None:
    """Load districts. With FILE: the districts of one level through a column mapping (they
    replace that level's districts), e.g. `quartier import districts ortsteile.gpkg --code OT_NR
    --name OT_NAME --population EW --level stadtteil`. Without: Köln's city, Stadtbezirke and
    Stadtteile (the files shipped with Quartier)."""
    from quartier.geo.io import (
        DEFAULT_COLUMNS,
        DISTRICT_LEVELS,
        DistrictColumns,
        import_district_file,
        import_districts,
    )

    s = settings()
    if file is None:
        if code or name or parent or population or layer or crs:
            raise fail("--code, --name, --parent, --population, --layer and --crs need a FILE")
        with user_errors(s), connect(s) as conn:
            counts = import_districts(conn, stadtbezirke, stadtteile, city, population_csv)
        console.print(", ".join(f"{n} {lv}" for lv, n in counts.items()) + " imported")
        return
    if level not in DISTRICT_LEVELS:
        raise fail(f"--level must be one of {', '.join(DISTRICT_LEVELS)}, not {level!r}")
    default_code, default_name = DEFAULT_COLUMNS[level]
    columns = DistrictColumns(code or default_code, name or default_name, parent, population)
    with user_errors(s), connect(s) as conn:
        n = import_district_file(conn, file, columns, level=level, layer=layer, crs=crs)
    console.print(f"{n} {level} imported from {file}")


@app.command("city-outline")
def import_city_outline_cmd(
    file: Annotated[
        Path, typer.Argument(help="VG250 Gemeinden (VG250_GEM) or any one-area boundary file")
    ],
    ags: Annotated[
        str | None, typer.Option(help="Amtlicher Gemeindeschlüssel, e.g. 05315000 (Köln)")
    ] = None,
    code: Annotated[str | None, typer.Option(help="the city's code, if not the AGS")] = None,
    name: Annotated[str | None, typer.Option(help="the city's name, if not the file's GEN")] = None,
    layer: Annotated[str | None, typer.Option(help="GeoPackage layer, e.g. vg250_gem")] = None,
    crs: Annotated[
        str | None, typer.Option(help="CRS of a file that names none, e.g. EPSG:25832")
    ] = None,
) -> None:
    """Load the city outline (the maps open on it): a municipality of the official VG250
    boundaries by its AGS, e.g. `quartier import city-outline VG250_GEM.shp --ags 05315000`."""
    from quartier.geo.io import import_city_outline

    s = settings()
    with user_errors(s), connect(s) as conn:
        city_code, city_name = import_city_outline(
            conn, file, ags=ags, code=code, name=name, layer=layer, crs=crs
        )
    console.print(f"city outline of {city_name} ({city_code}) imported from {file}")


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
