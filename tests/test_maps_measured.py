"""The measured-vs-advertised map by zoom (issue #15 item 4): zoomed out an overview per 1 km
cell of the INSPIRE grid (``quartier/maps/layers.py``, ``coarse_cells``), zoomed in the 100 m
cells of the visible area from ``/maps/measured/cells?bbox=`` (or, in a file written by
``quartier map measured``, from JSON inside the page).

* the overview's sums and medians against a plain Python computation on random cells;
* the privacy threshold (k distinct devices, docs/privacy.md) at every level: the overview, the
  100 m cells the endpoint answers, the cells inside a file, at the run's k and a higher one,
  counted again from the raw speed tests;
* the endpoint against the clear path (the run's cells from ``load_cells``);
* in chromium: zoomed out the overview, zoomed in the 100 m cells fetched for the view (and in
  the file, read from the page without any request), with their tooltips.

On Musterstadt with the speed tests of ``test_maps_planning`` (its ``planned`` database).
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page
from test_maps_browser import browser, serve, watch  # noqa: F401 (fixtures)
from test_maps_planning import PLAN, cli_env, planned  # noqa: F401 (fixtures)
from test_second_city import EAST, NORTH, SOUTH, WEST, run

from quartier.api.app import create_app
from quartier.config import PrivacySettings, Settings
from quartier.geo import grid, run_store
from quartier.maps import pages
from quartier.maps.layers import (
    COARSE_CELL_M,
    COARSE_STEPS,
    coarse_cells,
    coarse_layer,
    fine_geojson,
    measured_layers,
    ratio_classes,
)
from quartier.maps.measured import FINE_MIN_ZOOM
from quartier.maps.render import MapOptions

BBOX = f"{WEST},{SOUTH},{EAST},{NORTH}"


def random_cells(seed: int, n: int = 900) -> pd.DataFrame:
    """Random 100 m cells as ``load_cells`` gives them: some without a ratio (not compared),
    ratios on both sides of the shades' bounds, 1 km cells with from one to many 100 m cells and
    each its own share of cells well below the offer (none, few, some, many)."""
    rng = np.random.default_rng(seed)
    e = 4_100_000 + 100 * np.minimum(rng.geometric(0.03, n), 89)
    nn = 3_100_000 + 100 * rng.integers(0, 70, n)
    cells = pd.DataFrame({"e": e, "n": nn}).drop_duplicates().reset_index(drop=True)
    m = len(cells)
    parent = (cells["e"] // 1000 * 7 + cells["n"] // 1000).to_numpy()
    below_p = np.array([0.0, 0.05, 0.2, 0.6])[rng.integers(0, 4, parent.max() + 1)][parent]
    low = rng.choice([0.02, 0.1, 0.15, 0.2, 0.25, 0.299], m)
    high = rng.choice([0.3, 0.6, 1.0, 1.3], m)
    ratio = np.where(rng.random(m) < below_p, low, high) * rng.uniform(0.9, 1.0, m)
    ratio[rng.random(m) < 0.1] = np.nan
    offer = rng.choice([16.0, 50.0, 100.0, 250.0, 1000.0], m)
    cells["n_tests"] = rng.integers(5, 40, m)
    cells["max_down_mbps"] = offer
    cells["measured_down_mbps"] = np.where(np.isnan(ratio), np.nan, ratio * offer)
    cells["measured_ratio"] = ratio
    cells["disagreement"] = pd.Categorical.from_codes(
        np.where(ratio < 0.3, 0, np.where(ratio > 1.1, 1, -1)), ["below", "above"]
    )
    return cells


def python_coarse(cells: pd.DataFrame, disagree_below: float = 0.3) -> dict[tuple[int, int], Any]:
    """The overview computed plainly: per 1 km cell, loops, sums and ``statistics.median``."""
    classes = ratio_classes(disagree_below)
    groups: dict[tuple[int, int], list[Any]] = {}
    for row in cells.itertuples(index=False):
        if not np.isfinite(row.measured_ratio):
            continue
        key = (int(row.e) // 1000 * 1000, int(row.n) // 1000 * 1000)
        groups.setdefault(key, []).append(row)
    out = {}
    for key, rows in groups.items():
        below = [r for r in rows if r.disagreement == "below"]
        shades = [0] * len(classes)
        for r in below:
            shades[next(i for i, (_lo, up) in enumerate(classes)
                        if r.measured_ratio < up or i == len(classes) - 1)] += 1  # fmt: skip
        share = len(below) / len(rows)
        klass = 0 if not below else (1 if share < COARSE_STEPS[0] else
                                     2 if share < COARSE_STEPS[1] else 3)  # fmt: skip
        out[key] = {
            "cells": len(rows), "below": len(below), "shades": shades,
            "tests": sum(int(r.n_tests) for r in rows),
            "measured": statistics.median(float(r.measured_down_mbps) for r in rows),
            "offer": statistics.median(float(r.max_down_mbps) for r in rows),
            "ratio": statistics.median(float(r.measured_ratio) for r in rows),
            "klass": klass,
        }  # fmt: skip
    return out


# --- pure -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_coarse_cells_equal_a_plain_computation(seed: int) -> None:
    cells = random_cells(seed)
    expected = python_coarse(cells)
    got = coarse_cells(cells)
    assert len(got) == len(expected) > 20
    assert (got["e"] % COARSE_CELL_M == 0).all() and (got["n"] % COARSE_CELL_M == 0).all()
    classes_seen = set()
    for row in got.itertuples(index=False):
        want = expected[(int(row.e), int(row.n))]
        assert (row.cells, row.below, row.tests, row.klass) == (
            want["cells"], want["below"], want["tests"], want["klass"]
        )  # fmt: skip
        assert [row.shade_0, row.shade_1, row.shade_2] == want["shades"]
        for col in ("measured", "offer", "ratio"):
            assert getattr(row, col) == pytest.approx(want[col], rel=1e-9), col
        classes_seen.add(row.klass)
    assert classes_seen >= {0, 2, 3} and (seed != 1 or 1 in classes_seen)
    assert got["cells"].min() <= 3 and got["cells"].max() > 20
    # the 1 km cells hold every compared 100 m cell exactly once
    compared = np.isfinite(cells["measured_ratio"].to_numpy())
    assert got["cells"].sum() == compared.sum()
    assert got["tests"].sum() == cells.loc[compared, "n_tests"].sum()


def test_coarse_layer_and_the_fine_cells_carry_the_aggregates() -> None:
    cells = random_cells(5)
    table = coarse_cells(cells).set_index(["e", "n"])
    layer = coarse_layer(cells)
    features = json.loads(layer.geojson)["features"]
    assert layer.cells == len(features) == len(table)
    assert layer.meta["classes"] == [int((table["klass"] == i).sum()) for i in range(4)]
    for f in features:
        p = f["properties"]
        m = re.fullmatch(r"CRS3035RES1000mN(\d+)E(\d+)", p["c"])
        assert m is not None
        row = table.loc[(int(m.group(2)), int(m.group(1)))]
        assert (p["n"], p["b"], p["t"], p["s"]) == (row["cells"], row["below"], row["tests"],
                                                    row["klass"])  # fmt: skip
        assert p["r"] == round(100 * row["ratio"], 1) and p["m"] == round(row["measured"], 1)
        # a square of about 1 km (in degrees at 49-50° north)
        ring = np.array(f["geometry"]["coordinates"][0])
        assert 0.012 < np.ptp(ring[:, 0]) < 0.018 and 0.008 < np.ptp(ring[:, 1]) < 0.011
    fine = json.loads(fine_geojson(cells))["features"]
    compared = cells[np.isfinite(cells["measured_ratio"].to_numpy())]
    assert len(fine) == len(compared)
    below = (compared["disagreement"] == "below").to_numpy(dtype=bool, na_value=False)
    shades = [f["properties"]["s"] for f in fine]
    assert (
        sum(s < 3 for s in shades) == below.sum() and sum(s == 3 for s in shades) == (~below).sum()
    )
    layers = measured_layers(cells)
    assert [x.key for x in layers.layers] == ["compared", "below", "coarse"]
    assert layers.get("below").meta["shades"] == [sum(s == i for s in shades) for i in range(3)]  # type: ignore[union-attr]


def test_coarse_cells_of_nothing() -> None:
    empty = random_cells(1).iloc[0:0]
    assert len(coarse_cells(empty)) == 0
    assert coarse_layer(empty).cells == 0 and json.loads(fine_geojson(empty))["features"] == []


# --- privacy at every level, on Musterstadt -------------------------------------------------------


def _coarse_of(page: str) -> list[dict[str, Any]]:
    """The overview's features inside a page (the CellLayer's data with 1 km cell ids)."""
    decoder = json.JSONDecoder()
    for found in re.finditer(r"var cell_layer_[0-9a-f]+_data = ", page):
        data, _end = decoder.raw_decode(page, found.end())
        if data["features"] and "b" in data["features"][0]["properties"]:
            return list(data["features"])
    return []


def _embedded(page: str) -> list[dict[str, Any]]:
    found = re.findall(r'<script type="application/json" id="zoomed_cells_[0-9a-f]+_json_\d+">'
                       r"(.*?)</script>", page, flags=re.S)  # fmt: skip
    return [f for text in found for f in json.loads(text)["features"]]


def _raw_devices(conn: psycopg.Connection[Any]) -> pd.DataFrame:
    rows = conn.execute("select cell_e, cell_n, device_key, 1 from speedtest").fetchall()
    return pd.DataFrame(rows, columns=["e", "n", "device", "one"])


def _published(raw: pd.DataFrame, k: int) -> set[tuple[int, int]]:
    devices = raw.groupby(["e", "n"])["device"].nunique()
    return {(int(e), int(n)) for (e, n), d in devices.items() if d >= k}


@pytest.mark.services
@pytest.mark.parametrize("k", [5, 6])
def test_privacy_threshold_at_every_zoom_level(planned: Settings, k: int) -> None:  # noqa: F811
    url = planned.require_database_url()
    strict = planned.model_copy(update={"privacy": PrivacySettings(min_contributors=k)})
    with psycopg.connect(url) as conn:
        raw = _raw_devices(conn)
        run = run_store.get_run(conn)
        cells = run_store.load_cells(conn, run)
        page = pages.measured_page(conn, MapOptions(min_contributors=k, cells_url="/x"))
        exported = pages.measured_page(conn, MapOptions(min_contributors=k))
    published = _published(raw, k)
    assert published, "some cells meet k"
    compared = {(int(e), int(n)) for e, n, r in zip(cells["e"], cells["n"],
                                                     cells["measured_ratio"], strict=True)
                if np.isfinite(r)}  # fmt: skip
    shown = compared & published
    tests_of = {
        (int(e), int(n)): int(t)
        for e, n, t in zip(cells["e"], cells["n"], cells["n_tests"], strict=True)
    }

    # zoomed out: every 1 km cell made only of published 100 m cells, >= k distinct devices
    coarse = _coarse_of(page)
    assert coarse and _coarse_of(exported) == coarse
    for f in coarse:
        m = re.fullmatch(r"CRS3035RES1000mN(\d+)E(\d+)", f["properties"]["c"])
        assert m is not None
        n0, e0 = int(m.group(1)), int(m.group(2))
        inside = {c for c in shown if c[0] // 1000 * 1000 == e0 and c[1] // 1000 * 1000 == n0}
        assert f["properties"]["n"] == len(inside) > 0
        assert f["properties"]["t"] == sum(tests_of[c] for c in inside)
        in_raw = raw[[(int(a), int(b)) in inside for a, b in zip(raw["e"], raw["n"], strict=True)]]
        assert in_raw["device"].nunique() >= k
    assert sum(f["properties"]["n"] for f in coarse) == len(shown)

    # zoomed in, served: the endpoint answers only published cells
    with TestClient(create_app(strict)) as client:
        r = client.get("/maps/measured/cells", params={"bbox": BBOX})
    assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
    fine = r.json()["features"]
    got = set()
    for f in fine:
        e, n, ok = grid.parse_cell_ids(["CRS3035RES100m" + f["properties"]["c"]])
        assert ok[0]
        got.add((int(e[0]), int(n[0])))
    assert got == shown
    # zoomed in, in a file: the cells inside the page are published ones too
    embedded = _embedded(exported)
    below = [f for f in embedded if "c" in f["properties"]]
    assert below and all(
        (int(e[0]), int(n[0])) in published
        for f in below
        for e, n, _ok in [grid.parse_cell_ids(["CRS3035RES100m" + f["properties"]["c"]])]
    )
    if k == 6:  # only MS-01-1 (6 devices) is left
        assert len(got) == 1 and fine[0]["properties"]["t"] == PLAN["MS-01-1"][0]
        assert len(coarse) == 1 and len(below) == 1
    # MS-02-2's 3 devices: nowhere
    assert '"m": 5.0' not in page + exported + r.text


@pytest.mark.services
def test_cells_endpoint_equals_the_run_cells(planned: Settings) -> None:  # noqa: F811
    """The endpoint (a bbox query on the stored cells) against the clear path: the run's cells
    from ``load_cells``, the 100 m cells of ``fine_geojson``, filtered to the bbox."""
    with psycopg.connect(planned.require_database_url()) as conn:
        run = run_store.get_run(conn)
        cells = run_store.load_cells(conn, run)
    every = {f["properties"]["c"]: f for f in json.loads(fine_geojson(cells))["features"]}
    assert len(every) == 5
    with TestClient(create_app(planned)) as client:
        whole = client.get("/maps/measured/cells", params={"bbox": BBOX}).json()["features"]
        assert {f["properties"]["c"]: f for f in whole} == every
        # a bbox around one cell: that cell (and no cell far away)
        one = next(iter(every.values()))
        ring = np.array(one["geometry"]["coordinates"][0])
        inner = (ring[:, 0].min() + 1e-4, ring[:, 1].min() + 1e-4,
                 ring[:, 0].max() - 1e-4, ring[:, 1].max() - 1e-4)  # fmt: skip
        box = ",".join(f"{v:.5f}" for v in inner)
        near = client.get("/maps/measured/cells", params={"bbox": box}).json()["features"]
        assert one["properties"]["c"] in {f["properties"]["c"] for f in near}
        assert len(near) < len(every)
        # errors: one line, no stack trace
        for bad in ("1,2,3", "a,b,c,d", "10,50,9,49", "0,40,20,60", "-180,-90,180,90"):
            r = client.get("/maps/measured/cells", params={"bbox": bad})
            assert r.status_code == 400 and "bbox" in r.text and "Traceback" not in r.text, bad
        assert client.get("/maps/measured/cells").status_code in (400, 422)


@pytest.mark.services
def test_cells_endpoint_refuses_too_large_an_area(
    planned: Settings,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pages, "MAX_FINE_CELLS", 2)
    with TestClient(create_app(planned)) as client:
        r = client.get("/maps/measured/cells", params={"bbox": BBOX})
    assert r.status_code == 400 and "more than 2" in r.text and "smaller area" in r.text


@pytest.mark.services
def test_cells_endpoint_before_an_analysis(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        r = client.get("/maps/measured/cells", params={"bbox": BBOX})
    assert r.status_code == 200 and r.json() == {"type": "FeatureCollection", "features": []}


# --- in the browser -------------------------------------------------------------------------------

#: the map, the overview (a CellLayer of 1 km cells) and the zoomed-in layer of a page
STATE = """() => {
    let map, fine;
    for (const k in window) {
        if (window[k] instanceof L.Map) map = window[k];
        if (k.startsWith('zoomed_cells_') && window[k] instanceof L.LayerGroup) fine = window[k];
    }
    let drawn = 0;
    fine.eachLayer(l => { drawn += l.getLayers().length; });
    let coarse = 0;
    for (const k in window) {
        if (k.startsWith('cell_layer_') && k.endsWith('_cells') && window[k].getLayers().length
            && window[k].getLayers()[0].feature.properties.b !== undefined
            && map.hasLayer(window[k])) coarse = window[k].getLayers().length;
    }
    return {zoom: map.getZoom(), fine: drawn, coarse: coarse, pending: !!fine.pending};
}"""
ZOOM = """async z => { for (const k in window) if (window[k] instanceof L.Map) {
    const map = window[k];
    // a zoom animation under way (the page's own first view) would swallow the setZoom
    for (let i = 0; i < 400 && map._animatingZoom; i++) await new Promise(r => setTimeout(r, 25));
    map.setZoom(z, {animate: false}); return map.getZoom(); } }"""
#: the screen point of the centre of a 100 m cell well below the offer (shade 0: MS-01-1)
BELOW_POINT = """centre => {
    let map, fine;
    for (const k in window) {
        if (window[k] instanceof L.Map) map = window[k];
        if (k.startsWith('zoomed_cells_') && window[k] instanceof L.LayerGroup) fine = window[k];
    }
    let point = null;
    fine.eachLayer(g => g.eachLayer(l => {
        if (l.feature.properties.s === 0) {
            if (centre) map.setView(l.getBounds().getCenter(), map.getZoom(), {animate: false});
            point = map.latLngToContainerPoint(l.getBounds().getCenter());
        }
    }));
    return point && [point.x, point.y];
}"""


def _wait(page: Page, condition: str) -> None:
    """Wait until ``condition`` (JavaScript over ``s``, the page's :data:`STATE`) holds (a
    function, not a string to evaluate: the pages' CSP forbids eval)."""
    page.wait_for_function(f"() => {{ const s = ({STATE})(); return {condition}; }}")


def _zoom_in_and_out(page: Page, cells_requests: list[str]) -> None:
    """Zoomed out: the overview, no 100 m cells; zoomed in: the 100 m cells of the view."""
    assert page.evaluate(ZOOM, FINE_MIN_ZOOM - 2) == FINE_MIN_ZOOM - 2
    _wait(page, "s.coarse > 0 && s.fine === 0")
    requests_before = len(cells_requests)
    assert page.evaluate(ZOOM, FINE_MIN_ZOOM + 1) == FINE_MIN_ZOOM + 1
    _wait(page, "s.fine > 0 && s.coarse === 0")
    state = page.evaluate(STATE)
    assert 1 <= state["fine"] <= 5, state
    assert page.evaluate(BELOW_POINT, True) is not None  # centred on it (may load again)
    _wait(page, "s.fine > 0 && !s.pending")
    point = page.evaluate(BELOW_POINT, False)
    assert point is not None
    page.mouse.move(point[0], point[1])
    page.mouse.move(point[0] + 1, point[1] + 1)
    shown = page.locator(".leaflet-tooltip", has_text="Messungen")
    shown.first.wait_for()
    tooltip = shown.first.inner_text()
    assert "Messungen" in tooltip and "Angebot" in tooltip and "40" in tooltip, tooltip
    assert len(cells_requests) >= requests_before


@pytest.mark.services
def test_zooming_in_loads_the_100m_cells(browser: Browser, serve: Any, planned: Settings) -> None:  # noqa: F811
    own = serve(planned)
    page = browser.new_page(viewport={"width": 800, "height": 500})
    visit = watch(page, own)
    cells_requests: list[str] = []
    page.on("request", lambda r: cells_requests.append(r.url) if "/maps/measured/cells" in r.url
            else None)  # fmt: skip
    page.goto(f"http://{own}/maps/measured", wait_until="load")
    page.wait_for_selector("#quartier-legend")
    legend = page.locator("#quartier-legend").inner_text()
    assert "Übersicht je 1-km-Zelle" in legend and "ab Zoomstufe 14" in legend
    before = len(cells_requests)
    _zoom_in_and_out(page, cells_requests)
    # the 100 m cells came from the endpoint, for the view's bbox
    assert len(cells_requests) > before
    assert all(re.search(r"bbox=[-0-9.]+,[-0-9.]+,[-0-9.]+,[-0-9.]+$", u) for u in cells_requests)
    assert visit.errors == [] and visit.elsewhere == [] and visit.tiles == []
    page.close()


@pytest.mark.services
def test_exported_file_zooms_in_offline(browser: Browser, cli_env: Settings) -> None:  # noqa: F811
    code, out = run("map", "measured", "--out", "gemessen.html")
    assert code == 0 and "wrote gemessen.html" in out, out
    path = Path("gemessen.html").resolve()
    text = path.read_text(encoding="utf-8")
    assert "Übersicht je 1-km-Zelle" in text and 'type="application/json"' in text
    page = browser.new_page(viewport={"width": 800, "height": 500})
    visit = watch(page, None)  # nothing but the file itself
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_selector("#quartier-legend")
    _zoom_in_and_out(page, [])
    assert requests == [path.as_uri()], requests
    assert visit.errors == [] and visit.elsewhere == []
    page.close()
