from __future__ import annotations

import json
import re

import geopandas as gpd
import pandas as pd
import shapely

from quartier.geo.speedtest_cells import classify_cells, empty_cells
from quartier.maps.render import CLASS_COLOURS, render_coverage_map

LEGEND = [
    "Gemessene Download-Geschwindigkeit (Median je 100-m-Zelle)",
    "unter 30 Mbit/s",
    "30 bis unter 100 Mbit/s",
    "100 bis unter 1000 Mbit/s",
    "ab 1000 Mbit/s (Gigabit)",
]
ATTRIBUTION = ["OpenStreetMap</a>-Mitwirkende", "Stadtgrenzen: Stadt Köln, ", ">CC BY</a>"]


def _attribution(page: str) -> str:
    match = re.search(r'"attribution": ("(?:[^"\\]|\\.)*")', page)
    assert match is not None
    text: str = json.loads(match.group(1))
    return text


def _cells() -> gpd.GeoDataFrame:
    # three cells in the Köln Innenstadt, one per class below gigabit... and a gigabit one
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
    return classify_cells(tests, districts, min_contributors=1)  # one test per cell here


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


def test_map_has_legend_attribution_and_one_element_per_cell_and_sensor() -> None:
    cells = _cells()
    page = render_coverage_map(cells, _sensors(), _districts())
    assert page.lstrip().startswith("<!DOCTYPE html>")
    for text in LEGEND:
        assert text in page
    for text in ATTRIBUTION:
        assert text in _attribution(page)
    assert "https://tile.openstreetmap.org/{z}/{x}/{y}.png" in page
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


def test_sensor_names_are_escaped() -> None:
    page = render_coverage_map(empty_cells(), _sensors(), None)
    assert "<Rhein>" not in page and "${x}" not in page
    assert "Pegel &lt;Rhein&gt; &#96;&#36;&#123;x&#125;&#96;" in page


def test_empty_inputs_still_give_a_map_of_koeln() -> None:
    empty_sensors = _sensors().iloc[:0]
    for districts in (None, _districts().iloc[:0]):
        page = render_coverage_map(empty_cells(), empty_sensors, districts)
        assert "</html>" in page
        assert "50.9375" in page and "6.9603" in page  # centred on Köln
        for text in LEGEND:
            assert text in page
        assert "CRS3035RES100m" not in page
        assert "L.circleMarker(" not in page


def test_cells_without_sensors_or_districts() -> None:
    page = render_coverage_map(_cells(), _sensors().iloc[:0], None)
    assert page.count("CRS3035RES100m") == 4
    assert "fitBounds" in page


def test_gap_map_has_german_legend_classes_gaps_and_dead_zones() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
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
