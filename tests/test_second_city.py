"""A second city end to end: the fictional Musterstadt (tests/data/musterstadt/, written by
``make_musterstadt.py``) with non-Köln column names in EPSG:25832, its outline from a VG250-shaped
Gemeinden file, a small coverage input, then the coverage analysis, the maps (opened on
Musterstadt, not Köln) and the indicators. Plus the one-line errors of the district imports.

Every expected value below is written down by hand from the generator's numbers: 4 Stadtbezirke
on a 4 km x 3 km rectangle whose south-west corner is (600000, 5500000) in EPSG:25832, i.e.
lon 10.385..10.442, lat 49.643..49.672; 4 address points of 10 households per Bezirk; gigabit
(fibre) at all 4 points of Altstadt, at 2 of Südstadt-Ost, none elsewhere; Weststadt ADSL 16 Mbit/s.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from quartier.api.app import create_app
from quartier.cli import app as cli_app
from quartier.config import Settings
from quartier.geo.input_store import write_signals, write_speedtests
from quartier.geo.service import analyse_and_store
from quartier.maps.pages import mobile_page
from quartier.maps.render import MapOptions
from quartier.pseudonym import pseudonymizer

DATA = Path(__file__).resolve().parent / "data" / "musterstadt"
GPKG = DATA / "bezirke.gpkg"
VG250 = DATA / "vg250_gem.shp"
AGS = "09999000"
# Musterstadt's extent (land only) in WGS84, rounded outwards by about 100 m
WEST, EAST, SOUTH, NORTH = 10.384, 10.443, 49.642, 49.672
# ... and what it would be with its lake (GF 2, to lon 10.469) or with Nachbarhausen (lon 10.330)
LAKE_EAST, NEIGHBOUR_WEST = 10.468, 10.331

pytestmark = pytest.mark.services


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli_app, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output
    return r.exit_code, " ".join(r.output.split())  # rich wraps long lines


@pytest.fixture
def env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUARTIER_DATABASE__URL", settings.require_database_url())
    return settings


def rows(settings: Settings, query: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(settings.require_database_url()) as conn:
        return conn.execute(query, params).fetchall()


def import_musterstadt(settings: Settings) -> None:
    """Outline, Stadtbezirke, Ortsteile, households, offers (all through the CLI), speed tests."""
    code, out = run("import", "city-outline", VG250, "--ags", AGS)
    assert code == 0 and f"city outline of Musterstadt ({AGS}) imported" in out, out
    code, out = run("import", "districts", GPKG, "--layer", "bezirke", "--code", "BEZ_SCHL",
                    "--name", "BEZ_BEZ", "--population", "EW")  # fmt: skip
    assert code == 0 and "4 stadtbezirk imported" in out, out
    code, out = run("import", "districts", GPKG, "--layer", "ortsteile", "--code", "OT_NR",
                    "--name", "OT_NAME", "--level", "stadtteil")  # fmt: skip
    assert code == 0 and "8 stadtteil imported" in out, out
    where = ["--map", "lon=LAENGE", "--map", "lat=BREITE", "--map", "address_key=ADRESSE"]
    code, out = run("import", "households", DATA / "haushalte.csv", "--map", "households=HH_ANZ",
                    *where)  # fmt: skip
    assert code == 0 and "16 of 16 rows usable" in out, out
    code, out = run("import", "broadband", DATA / "angebote.csv", "--map", "technology=TECHNIK",
                    "--map", "max_down_mbps=DOWN", "--map", "max_up_mbps=UP",
                    "--map", "operator=ANBIETER", *where)  # fmt: skip
    assert code == 0 and "16 of 16 rows usable" in out, out
    # 5 devices (the k-anonymity threshold) measure 12 Mbit/s at Weststadt's first address
    now = datetime.now(UTC)
    tests = pd.DataFrame({
        "measured_at": [now - timedelta(hours=i) for i in range(5)],
        "device_key": [f"phone-{i}" for i in range(5)],
        "lon": [10.392622] * 5, "lat": [49.648283] * 5,
        "download_mbps": [12.0] * 5,
    })  # fmt: skip
    with psycopg.connect(settings.require_database_url()) as conn:
        assert write_speedtests(conn, tests, "musterstadt-app", pseudonymizer(settings)) == 5
        assert write_signals(conn, signals(), "musterstadt-app", pseudonymizer(settings)) == 37
        conn.commit()


def signals() -> pd.DataFrame:
    """Signal measurements at four address points (RSRP, dBm; threshold -110):
    Altstadt's first: 5 devices, Telekom 4G -90, Telekom 5G -95, Vodafone 4G -100 (all covered);
    Nordviertel's first: 5 devices, Vodafone 4G -105 (covered), Telekom 4G -120 (not);
    Weststadt's second: 5 devices, Telekom and Vodafone 4G -125 (a dead zone);
    Südstadt-Ost's first: only 2 devices, Telekom 4G -80 (never published at k = 5)."""
    where = pd.read_csv(DATA / "haushalte.csv").set_index("ADRESSE")
    plan = [
        ("MS-01-1", 5, [("Telekom", "4G", -90), ("Telekom", "5G", -95), ("Vodafone", "4G", -100)]),
        ("MS-02-1", 5, [("Vodafone", "4G", -105), ("Telekom", "4G", -120)]),
        ("MS-04-2", 5, [("Telekom", "4G", -125), ("Vodafone", "4G", -125)]),
        ("MS-03-1", 2, [("Telekom", "4G", -80)]),
    ]
    start = datetime.now(UTC) - timedelta(hours=2)
    out = []
    for address, devices, measures in plan:
        for d in range(devices):
            for operator, tech, rsrp in measures:
                out.append({
                    "measured_at": start + timedelta(seconds=len(out)),
                    "device_key": f"{address}-phone-{d}",
                    "lon": where.loc[address, "LAENGE"], "lat": where.loc[address, "BREITE"],
                    "technology": tech, "operator": operator, "rsrp_dbm": float(rsrp),
                })  # fmt: skip
    return pd.DataFrame(out)


def fit_bounds(page: str) -> list[list[float]]:
    found = re.findall(r"\.fitBounds\(\s*(\[\[.*?\]\])", page, re.DOTALL)
    assert found, "no fitBounds"
    bounds: list[list[float]] = json.loads(found[-1])  # the map's (after any inline script)
    return bounds


def assert_on_musterstadt(page: str) -> None:
    (south, west), (north, east) = fit_bounds(page)
    assert WEST <= west < WEST + 0.01 and EAST - 0.01 < east <= EAST, (west, east)
    assert SOUTH <= south < SOUTH + 0.01 and NORTH - 0.01 < north <= NORTH, (south, north)


@pytest.fixture
def musterstadt(env: Settings) -> Iterator[Settings]:
    """Köln first (the default import), then Musterstadt over it, then its coverage analysis."""
    code, out = run("import", "districts")
    assert code == 0 and "9 stadtbezirk" in out, out
    import_musterstadt(env)
    code, out = run("coverage", "analyse")
    assert code == 0, out
    yield env


def test_districts_outline_and_parents_replace_koeln(musterstadt: Settings) -> None:
    s = musterstadt
    assert rows(s, "select code, name, parent_code from district where level = 'city'") == [
        (AGS, "Musterstadt", None)
    ]
    assert rows(
        s,
        "select code, name, parent_code, population from district where level = 'stadtbezirk'"
        " order by code",
    ) == [
        ("01", "Altstadt", AGS, 12345),
        ("02", "Nordviertel", AGS, 8200),
        ("03", "Südstadt-Ost", AGS, 15010),
        ("04", "Weststadt", AGS, 9870),
    ]
    ortsteile = dict(rows(s, "select code, parent_code from district where level = 'stadtteil'"))
    assert len(ortsteile) == 8  # Köln's 86 Stadtteile are gone
    assert ortsteile["031"] == "03" and ortsteile["042"] == "04"  # parents found by area
    # stored in EPSG:4326; the outline is the land (GF 4) only, without lake and neighbour
    [(srid, west, south, east, north)] = rows(
        s,
        "select ST_SRID(geom), ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom)"
        " from district where level = 'city'",
    )
    assert srid == 4326
    assert WEST <= west < WEST + 0.01 and EAST - 0.01 < east <= EAST < LAKE_EAST
    assert SOUTH <= south < SOUTH + 0.01 and NORTH - 0.01 < north <= NORTH
    [(area_km2,)] = rows(
        s, "select ST_Area(geom::geography) / 1e6 from district where code = '03' and "
        "level = 'stadtbezirk'"
    )  # fmt: skip
    assert 2.95 < float(area_km2) < 3.05  # type: ignore[arg-type]  # 2 km x 1.5 km


def test_coverage_maps_and_indicators_are_musterstadts(musterstadt: Settings) -> None:
    with TestClient(create_app(musterstadt)) as client:
        page = client.get("/maps/coverage").text
        assert_on_musterstadt(page)
        assert west_of(page) > NEIGHBOUR_WEST
        for name in ("Altstadt", "Nordviertel", "Südstadt-Ost", "Weststadt"):
            assert name in page or json.dumps(name)[1:-1] in page, name  # as JS/JSON writes it
        assert "Ehrenfeld" not in page and "Porz" not in page
        assert_on_musterstadt(client.get("/maps/sensors").text)
        body = client.get("/indicators").json()
    values = {
        (v["scope_type"], v["scope_name"]): v["value"]
        for v in body["values"]
        if v["indicator_id"] == "bb_households_1000" and v["variant"] == ""
    }
    # households with gigabit: 40 (Altstadt) + 20 (Südstadt-Ost) of 160
    assert values == {
        ("city", "Musterstadt"): pytest.approx(37.5),
        ("stadtbezirk", "Altstadt"): pytest.approx(100.0),
        ("stadtbezirk", "Nordviertel"): pytest.approx(0.0),
        ("stadtbezirk", "Südstadt-Ost"): pytest.approx(50.0),
        ("stadtbezirk", "Weststadt"): pytest.approx(0.0),
    }
    white = {
        v["scope_name"]: v["value"]
        for v in body["values"]
        if v["indicator_id"] == "bb_households_30" and v["variant"] == ""
    }
    assert white["Weststadt"] == pytest.approx(0.0) and white["Nordviertel"] == pytest.approx(100)


def west_of(page: str) -> float:
    return fit_bounds(page)[0][1]


def test_cli_map_file_opens_on_musterstadt(musterstadt: Settings, tmp_path: Path) -> None:
    out = tmp_path / "karte.html"
    code, text = run("map", "coverage", "--out", out)
    assert code == 0, text
    page = out.read_text(encoding="utf-8")
    assert_on_musterstadt(page)
    assert "Weststadt" in page


def test_koeln_file_with_default_columns(env: Settings) -> None:
    koeln = Path(__file__).resolve().parents[1] / "quartier" / "data"
    code, out = run("import", "districts", koeln / "koeln_stadtbezirke.geojson")
    assert code == 0 and "9 stadtbezirk imported" in out, out
    code, out = run("import", "districts", koeln / "koeln_stadtteile.geojson", "--level",
                    "stadtteil")  # fmt: skip
    assert code == 0 and "86 stadtteil imported" in out, out
    assert rows(env, "select name from district where level = 'stadtbezirk' and code = '7'") == [
        ("Porz",)
    ]
    # Flittard (909) lies in Mülheim (9): its parent found by area
    assert rows(env, "select parent_code from district where code = '909'") == [("9",)]


def test_import_errors_are_one_line(env: Settings, tmp_path: Path) -> None:
    def fails(*args: object, expect: str) -> None:
        code, out = run(*[str(a) for a in args])
        assert code == 1 and out.startswith("error: ") and expect in out, out
        assert len(out) < 300, out

    fails("import", "districts", GPKG, "--layer", "bezirke", "--code", "STB_NR",
          expect="no code column 'STB_NR'; the file has: BEZ_SCHL, BEZ_BEZ, EW")  # fmt: skip
    fails(
        "import",
        "districts",
        GPKG,
        "--layer",
        "bezirke",
        "--code",
        "BEZ_SCHL",
        "--name",
        "BEZ_BEZ",
        "--population",
        "EINWOHNER",
        expect="no population column 'EINWOHNER'",
    )
    fails("import", "districts", GPKG, "--layer", "gibtsnicht", expect="cannot read layer")
    fails("import", "districts", tmp_path / "fehlt.gpkg", expect="no such file")
    fails("import", "districts", GPKG, "--level", "gemeinde", expect="--level must be one of")
    # a Shapefile without its .prj: which CRS?
    for part in VG250.parent.glob("vg250_gem.*"):
        if part.suffix != ".prj":
            shutil.copy(part, tmp_path / part.name)
    bare = tmp_path / "vg250_gem.shp"
    fails("import", "city-outline", bare, "--ags", AGS, expect="name it with --crs")
    fails("import", "city-outline", bare, "--ags", AGS, "--crs", "EPSG:999999",
          expect="unknown CRS 'EPSG:999999'")  # fmt: skip
    fails("import", "city-outline", bare, "--ags", AGS, "--crs", "EPSG:4326",
          expect="coordinates do not fit its CRS")  # fmt: skip
    code, out = run("import", "city-outline", bare, "--ags", AGS, "--crs", "EPSG:25832")
    assert code == 0 and "Musterstadt" in out, out
    fails(
        "import", "city-outline", VG250, expect="holds 3 areas; choose the municipality with --ags"
    )
    fails("import", "city-outline", VG250, "--ags", "05315000", expect="no municipality with AGS")
    # an area without geometry
    empty = tmp_path / "leer.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"STB_NR": "1", "STB_NAME": "A"},
         "geometry": {"type": "Polygon", "coordinates": [[[7, 50], [7.1, 50], [7.1, 50.1],
                                                          [7, 50]]]}},
        {"type": "Feature", "properties": {"STB_NR": "2", "STB_NAME": "B"}, "geometry": None},
    ]}))  # fmt: skip
    fails("import", "districts", empty, expect="empty geometry in row 2")
    # nothing was written by the failed imports
    assert rows(env, "select count(*) from district where level = 'stadtbezirk'") == [(0,)]


def test_mobile_map_per_operator_and_technology(musterstadt: Settings) -> None:
    with TestClient(create_app(musterstadt)) as client:
        page = client.get("/maps/mobile").text
        english = client.get("/maps/mobile", params={"lang": "en"}).text
    assert_on_musterstadt(page)
    for row in [
        "Mobilfunkversorgung je 100-m-Zelle (gemessen)",
        "3 Zellen mit Messungen",  # Südstadt-Ost's point: 2 devices, below k = 5
        "Telekom 4G (1 Zelle)",
        "Telekom 5G (1 Zelle)",
        "Vodafone 4G (2 Zellen)",
        "Vodafone 5G (0 Zellen)",
        "Funkloch: kein 4G/5G gemessen (1 Zelle)",
        "mindestens 5 Geräten",
    ]:
        assert row in page, row
    for layer in ("Telekom: 4G versorgt", "Telekom: 5G versorgt", "Vodafone: 4G versorgt"):
        assert f'"{layer}"' in page or layer in page, layer  # the layer control's names
    assert "Vodafone: 5G versorgt" not in page  # no layer without cells
    assert "L.control.layers" in page
    assert "Mobile coverage per 100 m cell (measured)" in english
    assert "Vodafone 4G (2 cells)" in english and "Funkloch" not in english


def test_mobile_map_respects_the_privacy_threshold_of_now(musterstadt: Settings) -> None:
    """A run analysed with k = 1 holds Südstadt-Ost's 2-device cell; the map at k = 5 does not
    show it, at k = 1 it does."""
    with psycopg.connect(musterstadt.require_database_url()) as conn:
        analyse_and_store(conn, min_contributors=1)
        conn.commit()
        strict = mobile_page(conn, MapOptions(min_contributors=5))
        loose = mobile_page(conn, MapOptions(min_contributors=1))
    assert "Telekom 4G (1 Zelle)" in strict and "3 Zellen mit Messungen" in strict
    assert "Telekom 4G (2 Zellen)" in loose and "4 Zellen mit Messungen" in loose


def test_mobile_map_before_an_analysis(env: Settings) -> None:
    code, out = run("import", "city-outline", VG250, "--ags", AGS)
    assert code == 0, out
    with TestClient(create_app(env)) as client:
        r = client.get("/maps/mobile")
    assert r.status_code == 200
    assert "Noch keine Versorgungsanalyse gespeichert" in r.text
    assert_on_musterstadt(r.text)
    code, out = run("map", "mobile", "--out", "mobil.html")
    assert code == 0 and "wrote mobil.html" in out, out
