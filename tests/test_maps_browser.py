"""The maps and /docs in a real browser (Debian's chromium, driven by Playwright; never
Playwright's own browsers), served by a running API on a migrated database with data: every
request to another host is aborted and recorded, and there must be none (with a basemap
configured: only its tile server); no JavaScript error; the expected layers and German legend
entries; a metric scale bar; a screenshot that is not blank. The exported file works offline."""

from __future__ import annotations

import io
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import uvicorn
from dbs import clone, drop
from PIL import Image
from playwright.sync_api import Browser, Page, Route, sync_playwright
from test_coverage_runs import load_scenario
from test_maps import fill_store
from test_second_city import import_musterstadt
from typer.testing import CliRunner

from quartier.api.app import create_app
from quartier.cli import app as cli_app
from quartier.config import MapSettings, Settings
from quartier.coverage_run import after_coverage_run
from quartier.geo import service
from quartier.geo.speedtest_cells import MIN_CONTRIBUTORS as K
from quartier.services import free_port

pytestmark = pytest.mark.services

CHROMIUM = "/usr/bin/chromium"
#: a stand-in basemap: its requests are answered by the test with a plain tile, never sent
TILE_HOST = "tiles.stadt.example"
TILES = f"https://{TILE_HOST}/wmts/{{z}}/{{x}}/{{y}}.png"


def _tile_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 230, 201)).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Visit:
    """What one page did in the browser."""

    elsewhere: list[str] = field(default_factory=list)  # requests to other hosts (aborted)
    tiles: list[str] = field(default_factory=list)  # requests to the configured tile server
    errors: list[str] = field(default_factory=list)  # JavaScript errors, console errors


def watch(page: Page, own: str | None) -> Visit:
    """Abort every request that does not go to ``own`` (host:port; None: nothing may leave the
    page) and record it; answer the stand-in tile server's with a tile; record JS errors."""
    visit = Visit()
    tile = _tile_png()

    def route(r: Route) -> None:
        url = r.request.url
        parts = urlsplit(url)
        local = parts.netloc == own if own is not None else parts.scheme == "file"
        if parts.scheme in ("data", "blob") or local:
            r.continue_()
        elif parts.hostname == TILE_HOST:
            visit.tiles.append(url)
            r.fulfill(status=200, content_type="image/png", body=tile)
        else:
            visit.elsewhere.append(url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda exc: visit.errors.append(f"pageerror: {exc}"))
    page.on(
        "console",
        lambda msg: visit.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    return visit


def not_blank(png: bytes) -> tuple[int, float]:
    """Distinct colours and the share of pixels that differ from the most common one."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 24) or []
    total = image.width * image.height
    top = max(count for count, _c in colours)
    return len(colours), 1 - top / total


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:  # install-deps.sh installs it for `make test`
        pytest.fail(f"{CHROMIUM} missing: run scripts/install-deps.sh (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def shared(service_urls: Any, template_db: str) -> Iterator[Settings]:
    """One database with data for the tests that only read (Köln's districts take seconds)."""
    url = clone(service_urls.database_url, template_db, "quartier_maps")
    fill_store(url)
    yield Settings(_env_file=None, database={"url": url}, mqtt={"url": service_urls.mqtt_url})  # type: ignore[call-arg]
    drop(service_urls.database_url, url)


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(settings: Settings) -> str:
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        servers.append((server, thread))
        return f"127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def layer_names(page: Page) -> list[str]:
    return [
        t.strip() for t in page.locator(".leaflet-control-layers-overlays label").all_inner_texts()
    ]


#: zoom the clustered map to the marker whose popup names the argument and open the popup
OPEN_POPUP = """name => new Promise(resolve => {
    let cluster, marker;
    for (const k in window) {
        const v = window[k];
        if (v instanceof L.MarkerClusterGroup) cluster = v;
        if (v instanceof L.CircleMarker && v.getPopup()
            && v.getPopup().getContent().textContent.includes(name)) marker = v;
    }
    cluster.zoomToShowLayer(marker, () => { marker.openPopup(); resolve(true); });
})"""


def check_map(page: Page, visit: Visit, legend: list[str], layers: list[str]) -> None:
    page.wait_for_selector("#quartier-legend")
    page.wait_for_function("document.querySelectorAll('path.leaflet-interactive').length > 0")
    assert visit.errors == []
    text = page.locator("#quartier-legend").inner_text()
    for entry in legend:
        assert entry in text, (entry, text)
    assert layer_names(page) == layers, layer_names(page)
    scale = page.locator(".leaflet-control-scale-line").all_inner_texts()
    assert len(scale) == 1 and scale[0].strip().endswith(("m", "km")), scale  # metric only
    colours, drawn = not_blank(page.screenshot())
    assert colours > 30 and drawn > 0.02, (colours, drawn)


def test_maps_and_docs_ask_no_other_server(browser: Browser, serve: Any, shared: Settings) -> None:
    own = serve(shared)
    page = browser.new_page(viewport={"width": 800, "height": 500})
    visit = watch(page, own)

    page.goto(f"http://{own}/maps/coverage", wait_until="load")
    check_map(
        page, visit,
        ["Gemessene Download-Geschwindigkeit", "unter 30 Mbit/s (1 Zelle)",
         "ab 1000 Mbit/s (Gigabit) (1 Zelle)", "Sensor", "Daten: Quartier"],
        ["Stadtbezirke", "Gemessene Zellen", "Sensoren"],
    )  # fmt: skip
    # the map opened on Köln: its centre lies in the city
    lat, lng = page.evaluate(
        "(() => { for (const k in window) { const v = window[k];"
        " if (v && v instanceof L.Map) { const c = v.getCenter(); return [c.lat, c.lng]; } } })()"
    )
    assert 50.83 < lat < 51.09 and 6.77 < lng < 7.17

    page.goto(f"http://{own}/maps/coverage?lang=en", wait_until="load")
    check_map(page, visit, ["Measured download speed", "below 30 Mbit/s (1 cell)", "Data:"],
              ["Districts", "Measured cells", "Sensors"])  # fmt: skip

    page.goto(f"http://{own}/maps/sensors", wait_until="load")
    page.wait_for_selector(".marker-cluster, path.leaflet-interactive")
    check_map(page, visit, ["Sensoren und letzte Messwerte", "2 Sensoren, 1 veraltet"],
              ["Stadtbezirke", "Sensoren"])  # fmt: skip
    # a popup (built by folium with jQuery) shows the latest value, its unit and age
    page.evaluate(OPEN_POPUP, "Luftmessstation Dom")
    popup = page.locator(".leaflet-popup-content").inner_text()
    assert "Luftmessstation Dom" in popup and "µg/m³" in popup
    # the reading was stored 5 minutes before the module's first test; under load the page may
    # come minutes later
    assert re.search(r"vor ([5-9]|1\d) min", popup), popup
    assert visit.errors == []

    page.goto(f"http://{own}/docs", wait_until="load")
    page.wait_for_selector(".swagger-ui .opblock")
    assert "Quartier open-data API" in page.locator(".swagger-ui .info").inner_text()
    assert page.locator(".swagger-ui .opblock").count() > 10
    assert visit.errors == []
    colours, drawn = not_blank(page.screenshot())
    assert colours > 10 and drawn > 0.02

    assert visit.elsewhere == [] and visit.tiles == []
    page.close()


def test_basemap_only_from_the_configured_tile_server(
    browser: Browser, serve: Any, shared: Settings
) -> None:
    maps = MapSettings(tile_url=TILES, tile_attribution="© Stadt Beispiel, dl-de/by-2-0")
    own = serve(shared.model_copy(update={"maps": maps}))
    page = browser.new_page(viewport={"width": 800, "height": 500})
    visit = watch(page, own)
    page.goto(f"http://{own}/maps/coverage", wait_until="load")
    check_map(page, visit, ["unter 30 Mbit/s"],
              ["Stadtbezirke", "Gemessene Zellen", "Sensoren"])  # fmt: skip
    page.wait_for_function("document.querySelectorAll('img.leaflet-tile-loaded').length >= 4")
    assert visit.elsewhere == []
    assert len(visit.tiles) >= 4 and all(urlsplit(u).hostname == TILE_HOST for u in visit.tiles)
    assert (
        "© Stadt Beispiel, dl-de/by-2-0"
        in page.locator(".leaflet-control-attribution").inner_text()
    )
    assert page.locator("img.leaflet-tile-loaded").count() >= 4
    page.close()


def test_exported_file_works_offline(
    browser: Browser, shared: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUARTIER_DATABASE__URL", shared.require_database_url())
    out = tmp_path / "karte.html"
    r = CliRunner().invoke(cli_app, ["map", "coverage", "--out", str(out)])
    assert r.exit_code == 0, r.output
    page = browser.new_page(viewport={"width": 800, "height": 500})
    visit = watch(page, None)  # nothing but the file itself
    page.goto(out.as_uri(), wait_until="load")
    check_map(page, visit, ["Gemessene Download-Geschwindigkeit", "unter 30 Mbit/s"],
              ["Stadtbezirke", "Gemessene Zellen", "Sensoren"])  # fmt: skip
    # the layer control's icon comes from the CSS inside the file
    page.locator(".leaflet-control-layers").hover()
    assert visit.elsewhere == [] and visit.errors == []
    page.close()


def test_gap_map(browser: Browser, serve: Any, settings: Settings) -> None:
    """A stored gap analysis: the broadband map with classes and gap clusters."""
    with psycopg.connect(settings.require_database_url()) as conn:  # committed at the end
        load_scenario(conn)
        service.analyse_and_store(
            conn, conninfo=settings.require_database_url(), on_stored=after_coverage_run(K)
        )
    own = serve(settings)
    page = browser.new_page(viewport={"width": 800, "height": 500})
    visit = watch(page, own)
    page.goto(f"http://{own}/maps/coverage", wait_until="load")
    check_map(
        page, visit,
        ["Breitbandversorgung je 100-m-Zelle", "weiß (unter 30 Mbit/s)", "Versorgungslücke",
         "Funkloch: kein 4G/5G gemessen (0 Zellen)"],
        # no dead zone: the scenario's signal measurements are below the privacy threshold
        ["Stadtbezirke", "Versorgung je Zelle", "Versorgungslücken"],
    )  # fmt: skip
    assert visit.elsewhere == [] and visit.tiles == []
    page.close()


def test_mobile_map(
    browser: Browser, serve: Any, settings: Settings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Musterstadt's measured mobile coverage: a layer per operator and technology, dead zones."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUARTIER_DATABASE__URL", settings.require_database_url())
    import_musterstadt(settings)
    with psycopg.connect(settings.require_database_url()) as conn:
        service.analyse_and_store(conn, on_stored=after_coverage_run(K))
        conn.commit()
    own = serve(settings)
    page = browser.new_page(viewport={"width": 800, "height": 500})
    visit = watch(page, own)
    page.goto(f"http://{own}/maps/mobile", wait_until="load")
    check_map(
        page, visit,
        ["Mobilfunkversorgung je 100-m-Zelle (gemessen)", "Telekom 4G (1 Zelle)",
         "Vodafone 4G (2 Zellen)", "Funkloch: kein 4G/5G gemessen (1 Zelle)"],
        ["Stadtbezirke", "Zellen mit Messungen", "Telekom: 4G versorgt", "Telekom: 5G versorgt",
         "Vodafone: 4G versorgt", "Funklöcher"],
    )  # fmt: skip
    # only the first operator layer is on at first; the others wait in the layer control
    checked = page.locator(".leaflet-control-layers-overlays input:checked").count()
    assert checked == 4, checked  # districts, measured cells, Telekom 4G, dead zones
    # a layer off at first is built when switched on: its cell is drawn then
    paths = page.locator("path.leaflet-interactive").count()
    page.locator(".leaflet-control-layers").hover()
    page.locator(".leaflet-control-layers-overlays label", has_text="Telekom: 5G versorgt").locator(
        "input"
    ).check()
    page.wait_for_function(
        f"document.querySelectorAll('path.leaflet-interactive').length > {paths}"
    )
    assert visit.errors == []
    assert visit.elsewhere == [] and visit.tiles == []
    page.close()
