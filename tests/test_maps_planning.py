"""The planners' maps of issue #15 beyond broadband, mobile and sensors: measured vs advertised
(``/maps/measured``), district indicators (``/maps/districts?indicator=ID``) and the PNG images
(``quartier map broadband|districts --png``), on the fictional Musterstadt
(``tests/data/musterstadt/``) with speed tests written here.

Expected values by hand: the best offers are 1000 Mbit/s at MS-01-1, MS-01-2 and MS-03-1,
100 at MS-02-1, 16 at MS-04-1 (``angebote.csv``). Speed tests, 5 tests each at least:

* MS-01-1: 6 devices, 40 Mbit/s    -> 4 % of the offer   (below, shade "unter 10 %")
* MS-01-2: 5 devices, 150 Mbit/s   -> 15 %               (below, shade "10 bis unter 20 %")
* MS-02-1: 5 devices, 25 Mbit/s    -> 25 %               (below, shade "20 bis unter 30 %")
* MS-03-1: 5 devices, 900 Mbit/s   -> 90 %               (as expected)
* MS-04-1: 5 devices, 12 Mbit/s    -> 75 % (import_musterstadt's) (as expected)
* MS-02-2: 3 devices, 5 Mbit/s     -> below k = 5: never analysed, never shown.

Gigabit households per Stadtbezirk (bb_households_1000): Altstadt 100 %, Südstadt-Ost 50 %,
Nordviertel and Weststadt 0 %; the strategy below wants 60 % by 2030 (baseline 0 % in 2024).
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from dbs import clone, drop
from fastapi.testclient import TestClient
from PIL import Image
from playwright.sync_api import Browser
from psycopg import sql
from test_maps_browser import browser, check_map, serve, watch  # noqa: F401 (fixtures)
from test_second_city import AGS, DATA, assert_on_musterstadt, import_musterstadt, run

from quartier.api.app import create_app
from quartier.config import Settings
from quartier.geo import grid
from quartier.geo.input_store import write_speedtests
from quartier.maps.pages import contributed_cells, measured_page
from quartier.maps.render import MapOptions
from quartier.pseudonym import pseudonymizer

pytestmark = pytest.mark.services

#: address -> (devices, Mbit/s)
PLAN = {
    "MS-01-1": (6, 40.0),
    "MS-01-2": (5, 150.0),
    "MS-02-1": (5, 25.0),
    "MS-03-1": (5, 900.0),
    "MS-02-2": (3, 5.0),
}

STRATEGY = """
id: musterstadt-digital
title: Digitalstrategie Musterstadt
city: Musterstadt
lang: de
vision: Gigabit für alle.
fields_of_action:
  - id: netz
    name: Netze
    goals:
      - id: gigabit
        title: Gigabit in allen Bezirken
        kpis:
          - id: gigabit-haushalte
            indicator: bb_households_1000
            baseline: {value: 0, date: 2024-01-01}
            target: 60
            deadline: 2030-12-31
            breakdown: stadtbezirk
"""


def speedtests() -> pd.DataFrame:
    where = pd.read_csv(DATA / "haushalte.csv").set_index("ADRESSE")
    now = datetime.now(UTC)
    rows = [
        {
            "measured_at": now - timedelta(minutes=10 * d + 1),
            "device_key": f"{address}-phone-{d}",
            "lon": where.loc[address, "LAENGE"],
            "lat": where.loc[address, "BREITE"],
            "download_mbps": mbps,
        }
        for address, (devices, mbps) in PLAN.items()
        for d in range(devices)
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def planned(service_urls: Any, template_db: str, tmp_path_factory: Any) -> Iterator[Settings]:
    """One database: Musterstadt, the speed tests above, a coverage analysis, an evaluation."""
    url = clone(service_urls.database_url, template_db, "quartier_plan")
    settings = Settings(_env_file=None, database={"url": url}, mqtt={"url": service_urls.mqtt_url})
    work = tmp_path_factory.mktemp("planned")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("QUARTIER_DATABASE__URL", url)
        import_musterstadt(settings)
        with psycopg.connect(url) as conn:
            assert write_speedtests(conn, speedtests(), "app", pseudonymizer(settings)) == 24
            conn.commit()
        code, out = run("coverage", "analyse")
        assert code == 0, out
        (work / "strategie.yaml").write_text(STRATEGY, encoding="utf-8")
        code, out = run("evaluate", "--strategy", work / "strategie.yaml", "--out",
                        work / "bericht.html")  # fmt: skip
        assert code == 0, out
    yield settings
    drop(service_urls.database_url, url)


@pytest.fixture
def cli_env(planned: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUARTIER_DATABASE__URL", planned.require_database_url())
    return planned


# --- measured vs advertised -----------------------------------------------------------------------


def test_measured_map_shades_cells_well_below_the_offer(planned: Settings) -> None:
    with TestClient(create_app(planned)) as client:
        page = client.get("/maps/measured").text
        english = client.get("/maps/measured", params={"lang": "en"}).text
    assert_on_musterstadt(page)
    for row in [
        "Gemessene Download-Geschwindigkeit gegen das beste Angebot je 100-m-Zelle",
        "Median unter 10 % des Angebots (1 Zelle)",
        "Median 10 bis unter 20 % des Angebots (1 Zelle)",
        "Median 20 bis unter 30 % des Angebots (1 Zelle)",
        "2 Zellen mit Messungen und Angebot, Messung im Rahmen",
        "mindestens 5 Messungen",
        "mindestens 5 Geräten",
        "Daten: Quartier",
    ]:
        assert row in page, row
    # the page holds the overview per 1 km cell; the 100 m cells, with the numbers of each
    # shaded cell in the tooltip (m measured median, o offer, r ratio in %, t tests, c the cell),
    # come from /maps/measured/cells when zoomed in (tests/test_maps_measured.py)
    assert re.search(r'"c": "CRS3035RES1000mN\d+E\d+"', page)
    assert not re.search(r'"c": "N\d+E\d+"', page) and "/maps/measured/cells" in page
    with TestClient(create_app(planned)) as client:
        r = client.get("/maps/measured/cells", params={"bbox": "10.3,49.6,10.5,49.7"})
    cells = [f["properties"] for f in r.json()["features"]]
    by_tests = {(p["t"], p["m"], p["r"]) for p in cells}
    assert (6, 40.0, 4.0) in by_tests and any(p["m"] == 25.0 and p["t"] == 5 for p in cells)
    assert any(p["o"] == 1000.0 for p in cells)
    assert 5.0 not in {p["m"] for p in cells} and '"m": 5.0' not in page  # MS-02-2: below k
    assert all(re.fullmatch(r"N\d+E\d+", p["c"]) for p in cells)
    assert "L.control.scale" in page
    assert "Measured download speed against the best offer per 100 m cell" in english
    assert "Median below 10 % of the offer (1 cell)" in english


def test_measured_map_applies_the_privacy_threshold_of_now(planned: Settings) -> None:
    """The run was analysed at k = 5; at k = 6 only MS-01-1 (6 devices) is left."""
    with psycopg.connect(planned.require_database_url()) as conn:
        strict = measured_page(conn, MapOptions(min_contributors=6))
    assert "Median unter 10 % des Angebots (1 Zelle)" in strict
    assert "Median 10 bis unter 20 % des Angebots (0 Zellen)" in strict
    assert "0 Zellen mit Messungen und Angebot" in strict
    assert '"t": 5' not in strict and "mindestens 6 Geräten" in strict


def test_measured_map_before_an_analysis(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        r = client.get("/maps/measured")
    assert r.status_code == 200 and "Noch keine Versorgungsanalyse gespeichert" in r.text


# --- district indicators --------------------------------------------------------------------------


def test_district_map_status_value_and_target(planned: Settings) -> None:
    with TestClient(create_app(planned)) as client:
        r = client.get("/maps/districts", params={"indicator": "bb_households_1000"})
        english = client.get(
            "/maps/districts", params={"indicator": "bb_households_1000", "lang": "en"}
        ).text
    assert r.status_code == 200
    page = r.text
    assert_on_musterstadt(page)
    with psycopg.connect(planned.require_database_url()) as conn:
        stored: dict[str, str] = dict(
            conn.execute(
                "select scope_code, status from evaluation_result"
                " where scope_type = 'stadtbezirk' and indicator_id = 'bb_households_1000'"
            ).fetchall()
        )
        names: dict[str, str] = dict(
            conn.execute("select code, name from district where level = 'stadtbezirk'").fetchall()
        )
    by_name = {names[c]: s for c, s in stored.items()}
    assert by_name["Altstadt"] == "on_track" and by_name["Nordviertel"] == "off_track"
    assert "Haushalte mit Gigabit (≥ 1000 Mbit/s) verfügbar (%)" in page
    labels = {"on_track": "im Plan", "at_risk": "gefährdet", "off_track": "nicht im Plan"}
    for status, label in labels.items():
        n = sum(s == status for s in stored.values())
        assert f"{label} ({n} Bezirke)" in page, (label, n)
    assert "Status nach der Strategie-Bewertung vom" in page
    # tooltip values: value and target per district, the status in words
    assert '"value": "100 %"' in page and '"value": "50 %"' in page
    assert '"target": "60 %"' in page and '"status": "im Plan"' in page
    assert '"fill": "#1a9850"' in page and '"fill": "#d73027"' in page  # the status colours
    assert "on track (" in english and '"status": "off track"' in english


def test_district_map_by_value_without_an_evaluation(planned: Settings) -> None:
    with TestClient(create_app(planned)) as client:
        page = client.get("/maps/districts", params={"indicator": "bb_households_30"}).text
    assert "Keine Bewertung dieses Indikators je Stadtbezirk gespeichert" in page
    assert "Bezirke)" in page
    assert '"target": "–"' in page or '"target": "\\u2013"' in page  # no target: a dash


def test_district_map_errors(planned: Settings) -> None:
    with TestClient(create_app(planned)) as client:
        unknown = client.get("/maps/districts", params={"indicator": "no_such_thing"})
        missing = client.get("/maps/districts")
    assert unknown.status_code == 404
    assert "no indicator 'no_such_thing'" in unknown.text and "bb_households_1000" in unknown.text
    assert missing.status_code == 400 and "needs an indicator" in missing.text
    assert "Traceback" not in unknown.text + missing.text


def test_cli_district_map_needs_a_known_indicator(cli_env: Settings) -> None:
    code, out = run("map", "districts", "--out", "b.html")
    assert code != 0 and "needs --indicator" in out
    code, out = run("map", "districts", "--indicator", "nope", "--out", "b.html")
    assert code != 0 and "no indicator 'nope'" in out and "Traceback" not in out
    code, out = run("map", "sensors", "--png", "s.png")
    assert code != 0 and "--png is available for" in out
    code, out = run("map", "measured", "--out", "m.html")
    assert code == 0 and "wrote m.html" in out, out
    assert "Median unter 10 % des Angebots (1 Zelle)" in Path("m.html").read_text("utf-8")


# --- PNG images -----------------------------------------------------------------------------------


def _pixels(path: Path) -> np.ndarray[Any, Any]:
    image = Image.open(io.BytesIO(path.read_bytes()))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _share_of(pixels: np.ndarray[Any, Any], colour: str) -> float:
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return float((np.abs(pixels - rgb).sum(axis=2) <= 12).mean())


def test_broadband_png(cli_env: Settings) -> None:
    code, out = run("map", "broadband", "--png", "breitband.png")
    assert code == 0 and "wrote breitband.png" in out, out
    path = Path("breitband.png")
    assert 30_000 < path.stat().st_size < 3_000_000
    pixels = _pixels(path)
    assert pixels.shape == (1200, 1500, 3)
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 50
    # the profile's classes are drawn: Weststadt's white (ADSL) and Nordviertel's grey cells
    with psycopg.connect(cli_env.require_database_url()) as conn:
        (classes,) = conn.execute("select classes from coverage_run").fetchone() or (None,)
    colour = {c["key"]: c["colour"] for c in classes}
    assert _share_of(pixels, colour["white"]) > 0.0001
    assert _share_of(pixels, colour["grey"]) > 0.0001
    # the city's area (the middle of the plot) is not blank: districts, cells, labels
    middle = pixels[300:900, 300:1200]
    assert (np.abs(middle - middle[0, 0]).sum(axis=2) > 30).mean() > 0.005


def test_district_png(cli_env: Settings) -> None:
    code, out = run("map", "districts", "--indicator", "bb_households_1000", "--png", "b.png",
                    "--out", "b.html")  # fmt: skip
    assert code == 0 and "wrote b.png" in out and "wrote b.html" in out, out
    pixels = _pixels(Path("b.png"))
    # Altstadt on track (green), Nordviertel off track (red): large filled areas
    assert _share_of(pixels, "#1a9850") > 0.1 and _share_of(pixels, "#d73027") > 0.1
    assert grid.CELL_SIZE_M == 100 and AGS  # the same Musterstadt as test_second_city


# --- in the browser -------------------------------------------------------------------------------


def test_new_maps_in_chromium(browser: Browser, serve: Any, planned: Settings) -> None:  # noqa: F811
    own = serve(planned)
    page = browser.new_page(viewport={"width": 800, "height": 500})
    visit = watch(page, own)
    page.goto(f"http://{own}/maps/measured", wait_until="load")
    check_map(
        page, visit,
        ["Gemessene Download-Geschwindigkeit gegen das beste Angebot",
         "Median unter 10 % des Angebots (1 Zelle)", "Daten: Quartier"],
        ["Stadtbezirke", "Übersicht je 1-km-Zelle", "100-m-Zellen (ab Zoomstufe 14)"],
    )  # fmt: skip
    page.goto(f"http://{own}/maps/measured?lang=en", wait_until="load")
    check_map(page, visit, ["Median below 10 % of the offer (1 cell)", "Data:"],
              ["Districts", "Overview per 1 km cell", "100 m cells (from zoom 14)"])  # fmt: skip
    page.goto(f"http://{own}/maps/districts?indicator=bb_households_1000", wait_until="load")
    check_map(
        page, visit, ["im Plan (", "nicht im Plan (", "Status nach der Strategie-Bewertung"],
        ["Haushalte mit Gigabit (≥ 1000 Mbit/s) verfügbar"],
    )  # fmt: skip
    # hovering a district shows value, target and status
    page.hover("path.leaflet-interactive >> nth=0")
    tooltip = page.locator(".leaflet-tooltip").inner_text()
    assert "Ziel" in tooltip and "60 %" in tooltip and "Status" in tooltip, tooltip
    assert visit.errors == [] and visit.elsewhere == [] and visit.tiles == []
    page.close()


# --- the privacy check of the maps ---------------------------------------------------------------


def test_contributed_cells_equal_count_distinct(settings: Settings) -> None:
    """The maps' check (``contributed_cells``) agrees with PostgreSQL's count(distinct
    device_key) per cell on random data around the threshold, for both tables, with asked
    cells that have no rows."""
    rng = np.random.default_rng(7)
    cells = [(4_100_000 + 100 * i, 3_100_000 + 100 * (i % 7)) for i in range(60)]
    rows = []
    for i, (e, n) in enumerate(cells[:50]):  # 10 asked cells have no rows at all
        devices = int(rng.integers(1, 9))
        for j in range(int(rng.integers(devices, 3 * devices + 1))):
            rows.append((e, n, f"dev-{i}-{int(rng.integers(0, devices))}", j))
    lon, lat = grid.from_grid_crs(
        np.array([r[0] + 50 for r in rows], dtype=float),
        np.array([r[1] + 50 for r in rows], dtype=float),
    )
    with psycopg.connect(settings.require_database_url()) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "insert into speedtest (measured_at, source, device_key, geom, download_mbps)"
                " values (now() - make_interval(secs => %s), 't', %s,"
                " ST_SetSRID(ST_MakePoint(%s, %s), 4326), 10)",
                [
                    (k, r[2], float(x), float(y))
                    for k, (r, x, y) in enumerate(zip(rows, lon, lat, strict=True))
                ],
            )
            cur.executemany(
                "insert into mobile_measurement (measured_at, source, device_key, geom,"
                " technology, operator, rsrp_dbm) values (now() - make_interval(secs => %s),"
                " 't', %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326), '4G', 'T', -90)",
                [
                    (k, r[2], float(x), float(y))
                    for k, (r, x, y) in enumerate(zip(rows, lon, lat, strict=True))
                ],
            )
        asked_e = np.array([c[0] for c in cells])
        asked_n = np.array([c[1] for c in cells])
        for table in ("speedtest", "mobile_measurement"):
            stored = {
                (int(a), int(b)): int(c)
                for a, b, c in conn.execute(
                    sql.SQL(
                        "select cell_e, cell_n, count(distinct device_key) from {}"
                        " group by cell_e, cell_n"
                    ).format(sql.Identifier(table))
                ).fetchall()
            }
            assert set(stored) == set(cells[:50])  # the rows landed in the cells meant
            for k in (2, 3, 5, 8):
                expected = np.array([stored.get(c, 0) >= k for c in cells])
                got = contributed_cells(conn, table, k, asked_e, asked_n)
                assert 0 < expected.sum() < 50 or k == 8
                assert (got == expected).all(), (table, k)
            assert contributed_cells(conn, table, 1, asked_e, asked_n).all()
        with pytest.raises(ValueError):
            contributed_cells(conn, "household", 5, asked_e, asked_n)


def test_evaluation_report_has_the_broadband_map(cli_env: Settings) -> None:
    Path("strategie.yaml").write_text(STRATEGY, encoding="utf-8")
    code, out = run("evaluate", "--strategy", "strategie.yaml", "--out", "bericht.html")
    assert code == 0, out
    report = Path("bericht.html").read_text(encoding="utf-8")
    assert "<h2>Breitbandversorgung</h2>" in report
    assert "Abbildung: Breitbandversorgung je 100-m-Zelle" in report
    found = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', report)
    assert found is not None
    image = Image.open(io.BytesIO(base64.b64decode(found.group(1))))
    assert image.format == "PNG" and image.size == (1500, 1200)
