"""Broadband supply and households from CSV, GeoJSON and GeoPackage with a column mapping, and the
report of unusable rows."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import psycopg
import pytest
import shapely

from quartier.errors import BadRequestError
from quartier.geo.supply import (
    ColumnMapping,
    import_broadband,
    import_households,
    normalise_offers,
    read_table,
)

CSV = """id;tech;down;up;anbieter;stand;x;y;zelle
1;Glasfaser;1000;500;NetCologne;2021-06-30;6.9583;50.9413;
2;DOCSIS 3.1;1000;50;Vodafone;2021-06-30;6.95;50.94;
3;VDSL2;100;40;Telekom;;;;CRS3035RES100mN3096600E4107200
4;Brieftaube;5;1;;;6.95;50.94;
5;ftth;schnell;1;;;6.95;50.94;
6;ftth;1000;-3;;;6.95;50.94;
7;ftth;1000;100;;gestern;6.95;50.94;
8;ftth;1000;100;;;;;
9;ftth;1000;100;;;200;50.94;
10;ftth;1000;100;;;;;CRS3035RES100mN12
11;vdsl;50,5;10;Telekom;30.06.2021;6.95;50.94;
"""
MAPPING = ColumnMapping.parse([
    "technology=tech", "max_down_mbps=down", "max_up_mbps=up", "operator=anbieter",
    "valid_on=stand", "lon=x", "lat=y", "cell_id=zelle", "address_key=id",
])  # fmt: skip


def test_csv_mapping_and_report(tmp_path: Path) -> None:
    path = tmp_path / "angebote.csv"
    path.write_text(CSV, encoding="utf-8")
    offers, report = normalise_offers(read_table(path, sep=";"), MAPPING)
    assert report.rows == 11 and report.used == 4
    assert report.reasons == {"unknown_technology": 1, "bad_download": 1, "bad_upload": 1,
                              "bad_date": 1, "no_position": 1, "bad_position": 1,
                              "bad_cell_id": 1}  # fmt: skip
    rejected = report.rejected.set_index("row")
    assert rejected.loc[4, "reason"] == "unknown_technology"
    assert rejected.loc[4, "value"] == "Brieftaube"
    assert rejected.loc[5, "value"] == "schnell"
    assert offers["technology"].tolist() == ["ftth", "hfc", "vdsl", "vdsl"]
    assert offers["max_down_mbps"].tolist() == [1000, 1000, 100, 50.5]
    assert offers["address_key"].tolist() == ["1", "2", "3", "11"]
    # the cell id is placed at the cell centre
    assert offers.loc[2, "lon"] == pytest.approx(6.9583, abs=0.001)
    assert "4 of 11 rows usable" in report.summary()


def test_mapping_errors() -> None:
    with pytest.raises(BadRequestError, match="field=column"):
        ColumnMapping.parse(["speed"])
    with pytest.raises(BadRequestError, match="field=column"):
        ColumnMapping.parse(["colour=x"])


@pytest.mark.services
def test_geojson_and_geopackage_into_the_store(tmp_path: Path, db_url: str) -> None:
    frame = gpd.GeoDataFrame(
        {"technologie": ["FTTH", "Kabel", "VDSL"], "dl": [1000.0, 500.0, None],
         "ul": [1000.0, 50.0, 10.0]},
        geometry=[shapely.Point(6.9583, 50.9413), shapely.box(6.95, 50.94, 6.951, 50.941),
                  shapely.Point(6.96, 50.95)],
        crs=4326,
    )  # fmt: skip
    frame.to_file(tmp_path / "a.geojson", driver="GeoJSON")
    frame.to_crs(25832).to_file(tmp_path / "a.gpkg", driver="GPKG", layer="angebote")
    mapping = ColumnMapping.parse(["technology=technologie", "max_down_mbps=dl",
                                   "max_up_mbps=ul"])  # fmt: skip
    homes = gpd.GeoDataFrame({"hh": [3, 2, -1]}, geometry=[shapely.Point(6.9583, 50.9413)] * 3,
                             crs=4326)  # fmt: skip
    homes.to_file(tmp_path / "h.gpkg", driver="GPKG")
    with psycopg.connect(db_url) as conn:
        r1 = import_broadband(conn, tmp_path / "a.geojson", mapping)
        r2 = import_broadband(conn, tmp_path / "a.gpkg", mapping, layer="angebote")
        r3 = import_households(conn, tmp_path / "h.gpkg", ColumnMapping(households="hh"))
        rows = conn.execute(
            "select source, technology, max_down_mbps, cell_e, cell_n from broadband_offer"
            " order by source, technology"
        ).fetchall()
        hh = conn.execute("select sum(households), count(*) from household").fetchone()
    assert (r1.used, r1.reasons) == (2, {"bad_download": 1})
    assert (r2.used, r2.reasons) == (2, {"bad_download": 1})
    assert r3.used == 2 and r3.reasons == {"bad_households": 1}
    assert hh == (5, 2)
    assert [r[:3] for r in rows] == [("a.geojson", "ftth", 1000), ("a.geojson", "hfc", 500),
                                     ("a.gpkg", "ftth", 1000), ("a.gpkg", "hfc", 500)]  # fmt: skip
    assert rows[0][3:] == (4107200, 3096600)  # the Dom's cell, also after EPSG:25832
    assert rows[2][3:] == (4107200, 3096600)


@pytest.mark.services
def test_cli_imports_offers_and_households(
    tmp_path: Path, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from quartier import cli

    monkeypatch.setenv("QUARTIER_DATABASE__URL", settings.require_database_url())
    (tmp_path / "angebote.csv").write_text(CSV, encoding="utf-8")
    (tmp_path / "hh.csv").write_text("x;y;hh\n6.9583;50.9413;4\n6.95;50.94;-1\n")
    runner = CliRunner()
    args = ["import", "broadband", str(tmp_path / "angebote.csv"), "--sep", ";"]
    for m in ("technology=tech", "max_down_mbps=down", "max_up_mbps=up", "operator=anbieter",
              "valid_on=stand", "lon=x", "lat=y", "cell_id=zelle", "address_key=id"):  # fmt: skip
        args += ["--map", m]
    r = runner.invoke(cli.app, args)
    assert r.exit_code == 0, r.output
    assert "4 of 11 rows usable" in r.output
    r = runner.invoke(
        cli.app,
        ["import", "households", str(tmp_path / "hh.csv"), "--sep", ";",
         "--map", "lon=x", "--map", "lat=y", "--map", "households=hh"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    with psycopg.connect(settings.require_database_url()) as conn:
        offers = conn.execute("select count(*) from broadband_offer").fetchone()
        homes = conn.execute("select sum(households) from household").fetchone()
    assert offers == (4,)
    assert homes == (4,)
