"""The maps as HTML: legends (German and English), layers, escaping, extent, basemap setting, and
no reference to any host but Quartier's own, rendered directly, served by the API and written by
``quartier map``. tests/test_maps_browser.py loads them in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import folium
import geopandas as gpd
import pandas as pd
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient
from folium.plugins import Fullscreen
from store_fixtures import station
from typer.testing import CliRunner

from quartier.api.app import create_app
from quartier.api.frontend import content_security_policy
from quartier.cli import app as cli_app
from quartier.config import MapSettings, Settings
from quartier.geo.io import import_districts
from quartier.geo.speedtest_cells import classify_cells, empty_cells
from quartier.maps import assets
from quartier.maps.assets import SHIPPED, Assets, use_shipped
from quartier.maps.layers import mobile_layers
from quartier.maps.render import (
    CLASS_COLOURS,
    GERMANY_BOUNDS,
    TEXTS,
    MapOptions,
    render_coverage_map,
    render_mobile_map,
    render_sensor_map,
)

ROOT = Path(__file__).resolve().parents[1]
LEGEND = [
    "Gemessene Download-Geschwindigkeit (Median je 100-m-Zelle)",
    "unter 30 Mbit/s",
    "30 bis unter 100 Mbit/s",
    "100 bis unter 1000 Mbit/s",
    "ab 1000 Mbit/s (Gigabit)",
]
LEGEND_EN = [
    "Measured download speed (median per 100 m cell)",
    "below 30 Mbit/s",
    "1000 Mbit/s and more (gigabit)",
]
TILES = "https://sgx.geodatenzentrum.de/wmts_basemapde/tile/1.0.0/de_basemapde_web_raster_farbe/default/GLOBAL_WEBMERCATOR/{z}/{y}/{x}.png"
#: an absolute or protocol-relative URL anywhere in a page
URL = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}""", re.IGNORECASE)
#: what makes a browser load something: src/href attributes, CSS url(), @import
LOADS = re.compile(
    r"""(?:\bsrc\s*=\s*|\bhref\s*=\s*|url\(\s*|@import\s+)(["']?)([^"')\s>]+)\1""", re.IGNORECASE
)


def external_hosts(page: str) -> set[str]:
    """Hosts named by any absolute URL in ``page`` (a served page must name none)."""
    return {m.group(0).split("//", 1)[1].lower() for m in URL.finditer(page)}


def loaded_urls(page: str) -> list[str]:
    """What ``page`` makes the browser load (for inline pages, whose scripts mention URLs in
    comments and strings)."""
    return [m.group(2) for m in LOADS.finditer(page)]


def without_shipped(page: str) -> str:
    """``page`` without the shipped scripts and styles put inline (which mention URLs in
    comments and strings; what they load, the browser test checks)."""
    for path in SHIPPED.values():
        code = assets.inline_script(path) if path.endswith(".js") else assets.inline_style(path)
        page = page.replace(code, "")
    return page


def _cells() -> gpd.GeoDataFrame:
    # cells in the Köln Innenstadt, one per class
    tests = pd.DataFrame(
        {
            "lon": [6.9583, 6.9475, 6.9400, 6.9700],
            "lat": [50.9413, 50.9360, 50.9300, 50.9400],
            "download_mbps": [10.0, 50.0, 500.0, 1000.0],
        }
    )
    districts = gpd.GeoDataFrame(
        {"code": ["1"], "name": ["Innenstadt"]},
        geometry=[shapely.box(6.90, 50.90, 7.00, 50.97)],
        crs=4326,
    )
    return classify_cells(tests, districts, min_contributors=1)


def _sensors() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "thing_id": [1, 2],
            "name": ["Luftsensor Dom", "Pegel <Rhein> `${x}`"],
            "lon": [6.9583, 6.9630],
            "lat": [50.9413, 50.9360],
            "observed_properties": [["PM10", "Temperatur"], []],
        }
    )


def _districts() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"code": ["1", "9"], "name": ["Innenstadt", "Mülheim"]},
        geometry=[shapely.box(6.90, 50.90, 7.00, 50.97), shapely.box(7.00, 50.95, 7.10, 51.0)],
        crs=4326,
    )


def _fit_bounds(page: str) -> list[list[float]]:
    match = re.search(r"\.fitBounds\(\s*(\[\[.*?\]\])", page, re.DOTALL)
    assert match is not None, "no fitBounds"
    bounds: list[list[float]] = json.loads(match.group(1))
    return bounds


def test_map_has_legend_source_line_and_one_element_per_cell_and_sensor() -> None:
    cells = _cells()
    page = render_coverage_map(cells, _sensors(), _districts())
    assert page.lstrip().startswith("<!DOCTYPE html>")
    assert '<html lang="de">' in page and "<title>Breitbandversorgung – Quartier</title>" in page
    for text in LEGEND:
        assert text in page
    assert "Daten: Quartier; Bezirke: Stadt Köln (CC BY 4.0)" in page
    assert len(cells) == 4
    for cell_id in cells["cell_id"]:
        assert page.count(cell_id) == 1
    assert page.count("CRS3035RES100m") == 4  # only the cells carry ids
    assert page.count("L.circleMarker(") == 2
    for colour in CLASS_COLOURS.values():
        assert colour in page
    assert json.dumps("Mülheim")[1:-1] in page and "Innenstadt" in page  # in the GeoJSON
    assert "Messgrößen: PM10, Temperatur" in page
    assert "(1 Zelle)" in page and "(0 Zellen)" not in page
    # a metric scale bar only, layer names in German
    assert "L.control.scale({imperial: false" in page
    for layer in ("Stadtbezirke", "Gemessene Zellen", "Sensoren"):
        assert f'"{layer}"' in page


def test_no_basemap_and_no_other_host_by_default() -> None:
    page = render_coverage_map(_cells(), _sensors(), _districts())
    assert external_hosts(page) == set()
    assert "L.tileLayer" not in page
    srcs = loaded_urls(page)
    assert srcs and all(u.startswith("/static/") for u in srcs), srcs
    for name in ("leaflet/leaflet.js", "jquery/jquery.min.js", "leaflet/leaflet.css"):
        assert f"/static/{name}" in srcs
    assert not any("bootstrap" in u or "fontawesome" in u for u in srcs)


def test_configured_basemap_is_the_only_other_host() -> None:
    maps = MapSettings(tile_url=TILES, tile_attribution="© GeoBasis-DE / BKG <2026>")
    settings = Settings(_env_file=None, maps=maps)  # type: ignore[call-arg]
    page = render_coverage_map(_cells(), _sensors(), _districts(),
                               options=MapOptions.from_settings(settings))  # fmt: skip
    assert external_hosts(page) == {"sgx.geodatenzentrum.de"}
    assert "L.tileLayer" in page and json.dumps(TILES) in page
    match = re.search(r'"attribution": ("(?:[^"\\]|\\.)*")', page)
    assert match is not None
    assert json.loads(match.group(1)) == "© GeoBasis-DE / BKG &lt;2026&gt;"  # text, escaped
    assert '"Hintergrundkarte"' in page
    csp = content_security_policy(TILES)
    assert "img-src 'self' data: https://sgx.geodatenzentrum.de;" in csp
    assert "https://" not in content_security_policy(None)


@pytest.mark.parametrize(
    "url", ["ftp://tiles.example/{z}/{x}/{y}.png", "https://tiles.example/{z}/{x}.png", "tiles"]
)
def test_tile_url_must_be_an_http_template(url: str) -> None:
    with pytest.raises(ValueError, match="tile_url"):
        MapSettings(tile_url=url)


def test_english() -> None:
    page = render_coverage_map(_cells(), _sensors(), _districts(), options=MapOptions(lang="en"))
    assert '<html lang="en">' in page
    for text in LEGEND_EN:
        assert text in page
    assert "Data: Quartier" in page and "Measures: PM10, Temperatur" in page
    assert "(1 cell)" in page and '"Districts"' in page
    for text in LEGEND:
        assert text not in page
    assert all(de and en for de, en in TEXTS.values())


def test_sensor_names_are_escaped() -> None:
    page = render_coverage_map(empty_cells(), _sensors(), None)
    assert "<Rhein>" not in page and "${x}" not in page
    assert "Pegel &lt;Rhein&gt; &#96;&#36;&#123;x&#125;&#96;" in page


def test_opens_on_the_city_then_districts_then_data_then_germany() -> None:
    city = gpd.GeoDataFrame(geometry=[shapely.box(6.77, 50.83, 7.16, 51.08)], crs=4326)
    assert _fit_bounds(render_coverage_map(_cells(), _sensors(), _districts(), city=city)) == [
        [50.83, 6.77], [51.08, 7.16]]  # fmt: skip
    assert _fit_bounds(render_coverage_map(_cells(), _sensors(), _districts())) == [
        [50.9, 6.9], [51.0, 7.1]]  # fmt: skip
    south, west = _fit_bounds(render_coverage_map(_cells(), _sensors(), None))[0]
    assert 50.92 < south < 50.94 and 6.93 < west < 6.95  # the cells' south-west corner
    for districts in (None, _districts().iloc[:0]):
        page = render_coverage_map(empty_cells(), _sensors().iloc[:0], districts)
        assert _fit_bounds(page) == GERMANY_BOUNDS
        for text in LEGEND:
            assert text in page
        assert "CRS3035RES100m" not in page and "L.circleMarker(" not in page
        assert "50.9375" not in page  # no Köln centre hard-coded any more


def test_gap_map_has_german_legend_classes_gaps_and_dead_zones() -> None:
    from test_coverage_analysis import scenario

    from quartier.geo.analysis import AnalysisParams, analyse
    from quartier.geo.profiles import GERMAN_FUNDING
    from quartier.maps.render import render_gap_map

    res = analyse(scenario(), AnalysisParams(verdict_min_measurements=1))
    classes = [c.model_dump() for c in GERMAN_FUNDING.classes]
    page = render_gap_map(res.cells, res.gaps, _districts(), classes, _sensors())
    assert page.lstrip().startswith("<!DOCTYPE html>")
    for text in ("Breitbandversorgung je 100-m-Zelle", "weiß (unter 30 Mbit/s)",
                 "dunkelgrau (unter 500 Mbit/s und nicht 200 Mbit/s symmetrisch)",
                 "Versorgungslücke (zusammenhängend, 2 Cluster)",
                 "Funkloch: kein 4G/5G gemessen (1 Zelle)", "(3 Zellen)"):  # fmt: skip
        assert text in page, text
    # the 5 gap cells and the very-high cell E are drawn; gigabit cells and G are not
    assert page.count("CRS3035RES100m") == 6 + 1  # + the dead zone G
    assert "Abstand zu Gigabit (m)" in page and "Pegel &lt;Rhein&gt;" in page
    assert external_hosts(page) == set()
    english = render_gap_map(res.cells, res.gaps, _districts(), classes, _sensors(),
                             options=MapOptions(lang="en"))  # fmt: skip
    for text in ("white (below 30 Mbit/s)", "Coverage gap (contiguous, 2 clusters)",
                 "Dead zone: no 4G/5G measured (1 cell)", "Distance to gigabit (m)"):  # fmt: skip
        assert text in english, text


def _latest(now: datetime) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "thing_id": [1, 1, 2],
            "name": ["PM10", "Temperatur", "Pegel"],
            "unit": ["µg/m³", "°C", "cm"],
            "value": [17.25, 4.5, 312.0],
            "time": [now - timedelta(minutes=10), now - timedelta(minutes=3),
                     now - timedelta(days=2)],
        }
    )  # fmt: skip


def test_sensor_map_latest_values_units_age_and_stale() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    sensors = pd.concat(
        [_sensors(), pd.DataFrame({"thing_id": [3], "name": ["Stumm"], "lon": [6.97],
                                   "lat": [50.95], "observed_properties": [[]]})]
    )  # fmt: skip
    page = render_sensor_map(sensors, _latest(now), _districts(), now=now)
    assert "L.markerClusterGroup(" in page and page.count("L.circleMarker(") == 3
    assert "PM10: 17,25 µg/m³" in page and "vor 10 min" in page
    assert "Temperatur: 4,5 °C" in page and "vor 3 min" in page
    assert "Pegel: 312 cm" in page and "vor 2 Tg." in page
    assert page.count("(veraltet)") >= 2  # the level gauge (2 days) and the silent one
    assert "keine Messwerte" in page
    assert "3 Sensoren, 2 veraltet" in page
    assert "Sensor ohne Werte seit über 6 h (veraltet)" in page
    assert "/static/leaflet.markercluster/leaflet.markercluster.js" in page
    assert external_hosts(page) == set()
    english = render_sensor_map(sensors, _latest(now), None, now=now,
                                options=MapOptions(lang="en"))  # fmt: skip
    assert "PM10: 17.25 µg/m³" in english and "10 min ago" in english
    assert "3 sensors, 2 stale" in english


def test_mobile_map_layers_per_operator_and_technology_escaped() -> None:
    # bit operator * 4 + technology (2G 3G 4G 5G): A 4G = 1 << 2, B 5G = 1 << 7
    e0, n0 = 4_100_000, 3_090_000  # lower-left corners in EPSG:3035 (Köln)
    cells = pd.DataFrame({
        "e": [e0, e0 + 100, e0 + 300, e0 + 500], "n": [n0] * 4,
        "n_signal": [6, 4, 5, 0], "mobile_mask": [4 | 128, 4, 0, 4],
        "dead_zone": [False, False, True, False],
    })  # fmt: skip
    hostile = "<img src=x onerror=alert(1)>"
    page = render_mobile_map(cells, ["A-Netz", hostile], ["2G", "3G", "4G", "5G"], _districts(),
                             parameters={"signal_min_share": 0.5})  # fmt: skip
    rows = ["Mobilfunkversorgung je 100-m-Zelle (gemessen)", "3 Zellen mit Messungen",
            "A-Netz 4G (2 Zellen)", "A-Netz 5G (0 Zellen)", "5G (1 Zelle)",
            "Funkloch: kein 4G/5G gemessen (1 Zelle)", "mindestens 50 % der Messungen"]  # fmt: skip
    for row in rows:
        assert row in page, row
    assert hostile not in page and "&lt;img src=x" in page
    assert '"A-Netz: 4G versorgt"' in page and "A-Netz: 5G versorgt" not in page
    assert external_hosts(without_shipped(page)) == set()
    # the two neighbouring cells covered by A-Netz 4G are one polygon, not two; its tooltip
    # names the layer
    layers = mobile_layers(cells, ["A-Netz", hostile], ["2G", "3G", "4G", "5G"])
    a4g = layers.get("op:0:4G")
    assert a4g is not None and a4g.cells == 2
    assert len(json.loads(a4g.geojson)["features"]) == 1
    assert a4g.geojson in page
    assert page.count('.bindTooltip("A-Netz: 4G versorgt"') == 1
    english = render_mobile_map(cells, ["A-Netz"], ["2G", "3G", "4G", "5G"],
                                options=MapOptions(lang="en"))  # fmt: skip
    assert "A-Netz 4G (2 cells)" in english and "Dead zone" in english
    empty = render_mobile_map(pd.DataFrame(), [], [], _districts())
    assert "Noch keine Versorgungsanalyse gespeichert" in empty


def test_inline_page_loads_nothing_from_anywhere() -> None:
    page = render_coverage_map(_cells(), _sensors(), _districts(),
                               options=MapOptions(assets=Assets(base=None)))  # fmt: skip
    rest = without_shipped(page)
    assert external_hosts(rest) == set() and len(rest) < len(page) - 200_000
    assert all(u.startswith("data:") for u in loaded_urls(rest)), loaded_urls(rest)
    assert "<script src" not in rest and "<link" not in rest
    assert "/static/" not in rest
    assert 'url("data:image/png;base64,' in page  # the layer control's icon, inside the CSS
    assert (assets.static_dir() / "leaflet/leaflet.js").read_text()[-2000:] in page
    sensors = render_sensor_map(_sensors(), _latest(datetime.now(UTC)), None, now=datetime.now(UTC),
                                options=MapOptions(assets=Assets(base=None)))  # fmt: skip
    assert "L.MarkerClusterGroup" in sensors and "<script src" not in without_shipped(sensors)


def test_an_element_whose_script_is_not_shipped_is_refused() -> None:
    fmap = folium.Map(tiles=None)
    Fullscreen().add_to(fmap)
    with pytest.raises(ValueError, match="Quartier does not ship"):
        use_shipped(fmap, Assets())


def test_shipped_files_match_the_manifest() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "vendor-assets.py"), "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((assets.static_dir() / "ASSETS.json").read_text())
    listed = {f"{e['directory']}/{f}" for e in manifest.values() for f in e["files"]}
    assert set(SHIPPED.values()) | {"swagger-ui/swagger-ui-bundle.js"} <= listed
    for entry in manifest.values():
        assert entry["version"] and entry["licence"] and entry["tarball_integrity"]
        assert any("LICEN" in f for f in entry["files"])  # the licence ships with the files
    third_party = (assets.static_dir() / "THIRD_PARTY.md").read_text()
    for name, entry in manifest.items():
        assert f"| {name} | {entry['version']} |" in third_party


def test_a_changed_shipped_file_fails_the_check(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    static = tmp_path / "quartier" / "resources" / "static"
    scripts.mkdir()
    (scripts / "vendor-assets.py").write_bytes((ROOT / "scripts" / "vendor-assets.py").read_bytes())
    shutil.copytree(assets.static_dir(), static)
    (static / "leaflet" / "leaflet.js").write_text("alert(1)")
    proc = subprocess.run(
        [sys.executable, str(scripts / "vendor-assets.py"), "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "leaflet: leaflet.js differs" in proc.stderr


# --- served by the API, written by the CLI (real database) -------------------------------------


def fill_store(url: str) -> None:
    """Köln's districts, two stations with readings (one stale) and speed tests in two cells."""
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        import_districts(conn)
        fresh = station(conn, "Luftmessstation Dom", (6.9583, 50.9413), "pm10")
        stale = station(conn, "Lärm Deutz", (6.9750, 50.9370), "noise")
        conn.execute(
            "update datastream set unit_of_measurement = %s where id = %s",
            (json.dumps({"symbol": "µg/m³"}), fresh),
        )
        conn.execute(
            "insert into observation (datastream_id, phenomenon_time, result) values"
            " (%s, %s, 21.5), (%s, %s, 55.0)",
            (fresh, now - timedelta(minutes=5), stale, now - timedelta(days=1)),
        )
        conn.cursor().executemany(
            "insert into speedtest (measured_at, source, device_key, geom, download_mbps)"
            " values (%s, 'test', %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s)",
            [  # two cells with 5 devices each (k-anonymity), one below 30, one gigabit
                (now - timedelta(hours=i), f"d{cell}{i}", lon, 50.9402, mbps + i)
                for cell, (lon, mbps) in enumerate([(6.9502, 12.0), (6.9602, 1100.0)])
                for i in range(5)
            ],
        )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    fill_store(settings.require_database_url())
    with TestClient(create_app(settings)) as c:
        yield c


PAGES = ["/maps/coverage", "/maps/sensors", "/maps/mobile", "/docs"]


@pytest.mark.services
def test_served_pages_reference_no_other_host(client: TestClient) -> None:
    for path in PAGES + [p + "?lang=en" for p in PAGES[:3]]:
        r = client.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        assert r.headers["content-type"].startswith("text/html")
        assert external_hosts(r.text) == set(), path
        urls = loaded_urls(r.text)
        assert urls and all(u.startswith("/static/") for u in urls), (path, urls)
        for url in urls:  # every file the page names is served
            served = client.get(url)
            assert served.status_code == 200 and served.content, url
        assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert client.get("/redoc").status_code == 404
    docs = client.get("/docs").text
    assert "/static/swagger-ui/swagger-ui-bundle.js" in docs and '"validatorUrl": null' in docs


@pytest.mark.services
def test_maps_in_german_and_english_on_the_city(client: TestClient) -> None:
    page = client.get("/maps/coverage").text
    for text in LEGEND:
        assert text in page
    assert "Ehrenfeld" in page  # a Köln Stadtbezirk in the districts layer
    assert page.count("CRS3035RES100m") == 2 and "(1 Zelle)" in page
    south, west = _fit_bounds(page)[0]
    assert 50.82 < south < 50.85 and 6.76 < west < 6.78  # Köln's city outline, not a centre
    english = client.get("/maps/coverage", params={"lang": "en"}).text
    assert "Measured download speed" in english and "Gemessene Download" not in english
    sensors = client.get("/maps/sensors").text
    assert "Luftmessstation Dom" in sensors and "µg/m³" in sensors and "vor 5 min" in sensors
    assert "2 Sensoren, 1 veraltet" in sensors
    assert client.get("/maps/coverage", params={"lang": "fr"}).status_code == 400


@pytest.mark.services
def test_maps_have_stable_operation_ids(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["paths"]["/maps/coverage"]["get"]["operationId"] == "coverage_map"
    assert spec["paths"]["/maps/sensors"]["get"]["operationId"] == "sensor_map"
    assert spec["paths"]["/maps/mobile"]["get"]["operationId"] == "mobile_map"


@pytest.mark.services
def test_cli_writes_a_self_contained_map(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_store(settings.require_database_url())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUARTIER_DATABASE__URL", settings.require_database_url())
    for name, lang, needle in [("coverage", "de", LEGEND[0]), ("coverage", "en", LEGEND_EN[0]),
                               ("sensors", "de", "Luftmessstation Dom")]:  # fmt: skip
        out = tmp_path / f"{name}-{lang}.html"
        r = CliRunner().invoke(cli_app, ["map", name, "--out", str(out), "--lang", lang])
        assert r.exit_code == 0, r.output
        page = out.read_text()
        assert needle in page
        rest = without_shipped(page)
        assert "<script src" not in rest and "<link" not in rest and "/static/" not in rest
        assert external_hosts(without_shipped(page)) == set()
        assert all(u.startswith("data:") for u in loaded_urls(without_shipped(page)))
    r = CliRunner().invoke(cli_app, ["map", "nowhere", "--out", str(tmp_path / "x.html")])
    assert r.exit_code == 1 and "no map 'nowhere'; known: coverage, sensors, mobile" in r.output
    r = CliRunner().invoke(cli_app, ["map", "coverage", "--out", str(tmp_path / "no/x.html")])
    assert r.exit_code == 1 and "cannot write" in r.output and "Traceback" not in r.output


def test_cli_map_without_database_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quartier.services import free_port

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUARTIER_DATABASE__URL", f"postgresql://q:pw@127.0.0.1:{free_port()}/q")
    r = CliRunner().invoke(cli_app, ["map", "coverage", "--out", str(tmp_path / "m.html")])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: cannot reach the database") and "Traceback" not in r.output
