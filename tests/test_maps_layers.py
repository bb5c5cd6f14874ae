"""The maps' layers stored with a coverage run (issue #15 item 4, migration 0043,
``quartier/maps/layers.py`` and ``layer_store.py``): written by the coverage run, what the pages
show, replaced by a new run, equal to the layers made from the run's cells, and within the
privacy threshold (k-anonymity, docs/privacy.md).

On the fictional Musterstadt of ``test_maps_planning`` (its ``planned`` database: speed tests at
five addresses, signal measurements at four, a coverage run made through the CLI):

* speed tests: MS-01-1 6 devices, MS-01-2, MS-02-1, MS-03-1 and MS-04-1 5 devices each, MS-02-2
  3 devices (below k = 5: not in the run, so not in any stored layer or count);
* signals: MS-01-1, MS-02-1, MS-04-2 5 devices each (MS-04-2 a dead zone), MS-03-1 2 devices.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient
from test_maps_planning import PLAN, cli_env, planned  # noqa: F401 (fixtures)
from test_second_city import DATA, run

from quartier.api.app import create_app
from quartier.config import Settings
from quartier.geo import grid, run_store
from quartier.maps import layer_store
from quartier.maps.layers import cell_geojson, merged_geojson, mobile_layers
from quartier.maps.pages import measured_page, mobile_page
from quartier.maps.render import MapOptions

pytestmark = pytest.mark.services


def _cell_of(address: str) -> tuple[int, int]:
    where = pd.read_csv(DATA / "haushalte.csv").set_index("ADRESSE")
    _ids, e, n = grid.cell_index([where.loc[address, "LAENGE"]], [where.loc[address, "BREITE"]])
    return int(e[0]), int(n[0])


def _stored(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    run_id = run_store.current_run_id(conn)
    assert run_id is not None
    return {
        "run": run_id,
        "maps": conn.execute("select run_id, min_contributors from coverage_map").fetchall(),
        "layers": {
            (m, k): (cells, meta, geojson)
            for m, k, cells, meta, geojson in conn.execute(
                "select map, layer, cells, meta, geojson from coverage_map_layer where run_id = %s",
                (run_id,),
            ).fetchall()
        },
    }


def test_a_coverage_run_stores_the_maps_layers(planned: Settings) -> None:  # noqa: F811
    with psycopg.connect(planned.require_database_url()) as conn:
        s = _stored(conn)
    assert s["maps"] == [(s["run"], 5)]  # made at the threshold the run was analysed at
    layers = s["layers"]
    # measured vs advertised: 3 cells below the offer (one per shade), 2 as expected
    assert layers[("measured", "below")][0] == 3
    assert layers[("measured", "below")][1]["shades"] == [1, 1, 1]
    assert layers[("measured", "compared")][0] == 2
    # the overview: the five compared cells in their 1 km cells, three of them below the offer
    coarse = json.loads(layers[("measured", "coarse")][2])["features"]
    assert layers[("measured", "coarse")][0] == len(coarse) > 0
    assert sum(f["properties"]["n"] for f in coarse) == 5
    assert sum(f["properties"]["b"] for f in coarse) == 3
    assert sum(f["properties"]["t"] for f in coarse) == 6 + 5 * 4
    below = json.loads(layers[("measured", "below")][2])
    assert sorted(f["properties"]["t"] for f in below["features"]) == [5, 5, 6]
    # mobile: 3 measured cells (MS-03-1's 2 devices are not), Telekom 4G 1, Vodafone 4G 2, a
    # dead zone
    assert layers[("mobile", "measured")][0] == 3
    by_name = {
        (v[1].get("operator"), v[1].get("technology")): v[0]
        for (m, k), v in layers.items()
        if m == "mobile" and k.startswith("op:")
    }
    assert by_name == {("Telekom", "4G"): 1, ("Telekom", "5G"): 1, ("Vodafone", "4G"): 2,
                       ("Vodafone", "5G"): 0}  # fmt: skip
    assert layers[("mobile", "dead")][0] == 1
    dead = json.loads(layers[("mobile", "dead")][2])["features"]
    e, n = _cell_of("MS-04-2")
    assert [f["properties"]["c"] for f in dead] == [grid.cell_ids([e], [n])[0]]
    # the broadband map's supply cells (populated, all but the best class)
    assert layers[("coverage", "supply")][0] > 0


def test_the_pages_show_the_stored_layers(planned: Settings) -> None:  # noqa: F811
    """A stored layer changed by hand is what the pages show (they read, not recompute)."""
    url = planned.require_database_url()
    with psycopg.connect(url) as conn:
        s = _stored(conn)
        below = s["layers"][("measured", "below")][2]
        coarse = s["layers"][("measured", "coarse")][2]
        compared = s["layers"][("mobile", "measured")][2]
    with TestClient(create_app(planned)) as client:
        measured = client.get("/maps/measured").text
        mobile = client.get("/maps/mobile").text
        coverage = client.get("/maps/coverage").text
    # the measured page holds its overview per 1 km cell; the 100 m cells come when zoomed in
    # (tests/test_maps_measured.py), and a written file holds them too
    assert coarse in measured and below not in measured and compared in mobile
    with psycopg.connect(url) as conn:
        assert below in measured_page(conn, MapOptions())
    assert s["layers"][("coverage", "supply")][2] in coverage
    with psycopg.connect(url) as conn:
        conn.execute(
            "update coverage_map_layer set cells = 777 where run_id = %s and map = 'measured'"
            " and layer = 'compared'",
            (s["run"],),
        )
        page = measured_page(conn, MapOptions())
        conn.rollback()
    assert "777 Zellen mit Messungen und Angebot" in page


def test_stored_layers_equal_the_layers_made_from_the_cells(planned: Settings) -> None:  # noqa: F811
    """The fast path (stored) against the clear one (the run's cells, merged per request)."""
    with psycopg.connect(planned.require_database_url()) as conn:
        run = run_store.get_run(conn)
        made = layer_store.make_layers(run, run_store.load_cells(conn, run), 5)
        for name in layer_store.MAPS:
            stored = layer_store.load_layers(conn, run.id, name)
            assert stored is not None and stored.min_contributors == 5
            assert stored.layers == made[name].layers, name
        # without stored layers (a run from before migration 0043) the page is the same
        with_stored = mobile_page(conn, MapOptions())
        conn.execute("delete from coverage_map where run_id = %s", (run.id,))
        assert layer_store.load_layers(conn, run.id, "mobile") is None
        live = mobile_page(conn, MapOptions())
        conn.rollback()
    ids = r"[a-z_]+_[0-9a-f]{32}"
    assert re.sub(ids, "X", with_stored) == re.sub(ids, "X", live)


def test_stored_aggregates_keep_the_privacy_threshold(planned: Settings) -> None:  # noqa: F811
    url = planned.require_database_url()
    with psycopg.connect(url) as conn:
        run_id = run_store.current_run_id(conn)
        assert run_id is not None
        counts = layer_store.load_device_counts(conn, run_id)
        assert counts is not None
        # every stored count is of a cell that met k = 5 in its own kind, or 0 for the other
        for column in ("test_devices", "signal_devices"):
            values = counts[column].to_numpy()
            assert ((values == 0) | (values >= 5)).all(), (column, values)
        # MS-02-2 (3 devices) and MS-03-1's signals (2 devices) are nowhere
        e, n = _cell_of("MS-02-2")
        assert not ((counts["e"] == e) & (counts["n"] == n)).any()
        e, n = _cell_of("MS-03-1")
        row = counts[(counts["e"] == e) & (counts["n"] == n)]
        assert row["signal_devices"].tolist() == [0] and row["test_devices"].tolist() == [5]
        # the stored counts are PostgreSQL's count(distinct device) of the cells
        e, n = _cell_of("MS-01-1")
        row = counts[(counts["e"] == e) & (counts["n"] == n)]
        assert row["test_devices"].tolist() == [PLAN["MS-01-1"][0]] == [6]
        assert row["signal_devices"].tolist() == [5]
        for table, column in (("speedtest", "test_devices"),
                              ("mobile_measurement", "signal_devices")):  # fmt: skip
            live = dict(
                ((int(a), int(b)), int(c))
                for a, b, c in conn.execute(
                    f"select cell_e, cell_n, count(distinct device_key) from {table} group by 1, 2"
                ).fetchall()
            )
            for a, b, c in counts[["e", "n", column]].itertuples(index=False):
                assert c == 0 or c == live[(a, b)], (table, a, b)
        # at a higher k the pages leave out the cells below it, from the stored counts alone:
        # even with the raw rows gone (retention) they do not count again
        conn.execute("delete from speedtest")
        conn.execute("delete from mobile_measurement")
        strict = measured_page(conn, MapOptions(min_contributors=6))
        strict_mobile = mobile_page(conn, MapOptions(min_contributors=6))
        conn.rollback()
    assert "Median unter 10 % des Angebots (1 Zelle)" in strict
    assert "Median 10 bis unter 20 % des Angebots (0 Zellen)" in strict
    assert "0 Zellen mit Messungen und Angebot" in strict and "mindestens 6 Geräten" in strict
    # no signal cell had 6 devices: nothing left of the mobile map
    assert "Noch keine Versorgungsanalyse gespeichert" in strict_mobile


def test_a_new_run_replaces_the_stored_layers(cli_env: Settings) -> None:  # noqa: F811
    url = cli_env.require_database_url()
    with psycopg.connect(url) as conn:
        before = _stored(conn)["run"]
        conn.execute("update coverage_map_layer set cells = 777 where run_id = %s", (before,))
        conn.commit()
    code, out = run("coverage", "analyse")
    assert code == 0, out
    with psycopg.connect(url) as conn:
        after = _stored(conn)
        assert after["run"] != before
        assert after["maps"] == [(after["run"], 5)]  # the old run's layers are gone
        assert conn.execute(
            "select count(*) from coverage_map_cell where run_id = %s", (before,)
        ).fetchone() == (0,)
        page = measured_page(conn, MapOptions())
    assert "777 Zellen" not in page and "2 Zellen mit Messungen und Angebot" in page


# --- pure -----------------------------------------------------------------------------------------


def test_merged_layer_covers_exactly_its_cells() -> None:
    e0, n0 = 4_100_000, 3_090_000
    e = np.array([e0, e0 + 100, e0 + 200, e0, e0 + 500])
    n = np.array([n0, n0, n0, n0 + 100, n0])
    merged = json.loads(merged_geojson(e, n))["features"]
    assert len(merged) == 2  # the L of four cells and the one apart
    union = shapely.union_all([shapely.geometry.shape(f["geometry"]) for f in merged])
    squares = shapely.union_all(shapely.from_geojson(
        [json.dumps(f["geometry"]) for f in json.loads(cell_geojson(e, n, {}))["features"]]
    ))  # fmt: skip
    # the same area, to the 1 m the coordinates are rounded to
    assert union.symmetric_difference(squares).area < 0.02 * squares.area
    assert json.loads(cell_geojson([], [], {}))["features"] == []


def test_mobile_layers_of_no_cells() -> None:
    empty = pd.DataFrame({"e": [], "n": [], "n_signal": [], "mobile_mask": [], "dead_zone": []})
    layers = mobile_layers(empty, ["A"], ["2G", "3G", "4G", "5G"])
    assert [(layer.key, layer.cells) for layer in layers.layers] == [
        ("measured", 0), ("op:0:4G", 0), ("op:0:5G", 0), ("dead", 0)
    ]  # fmt: skip
