from __future__ import annotations

from datetime import UTC, datetime

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import pytest
import shapely
from pyproj import Transformer

from quartier.geo import grid
from quartier.geo.io import load_sensor_locations, load_speedtests
from quartier.geo.speedtest_cells import SPEED_CLASSES, classify_cells, classify_download

TO_3035 = Transformer.from_crs("EPSG:4326", "EPSG:3035", always_xy=True)
TO_4326 = Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True)

# The Kölner Dom; projected by pyproj to x = 4107276.63, y = 3096656.30 (EPSG:3035), so its cell's
# lower-left corner is E 4107200, N 3096600.
DOM = (6.9583, 50.9413)


def lonlat(x: float, y: float) -> tuple[float, float]:
    lon, lat = TO_4326.transform(x, y)
    return float(lon), float(lat)


# --- grid -------------------------------------------------------------------------------------


def test_cell_id_of_a_hand_projected_point() -> None:
    x, y = TO_3035.transform(*DOM)
    e, n = int(x // 100) * 100, int(y // 100) * 100
    assert (e, n) == (4107200, 3096600)
    ids, es, ns = grid.cell_index([DOM[0]], [DOM[1]])
    assert ids.tolist() == ["CRS3035RES100mN3096600E4107200"]
    assert es.tolist() == [e] and ns.tolist() == [n]


def test_cell_index_floors_at_cell_edges() -> None:
    # 10 cm either side of the edges x = 4107300 and y = 3096700
    pts = [lonlat(4107299.9, 3096699.9), lonlat(4107300.1, 3096700.1), lonlat(4107250, 3096650)]
    ids, e, n = grid.cell_index([p[0] for p in pts], [p[1] for p in pts])
    assert ids.tolist() == [
        "CRS3035RES100mN3096600E4107200",
        "CRS3035RES100mN3096700E4107300",
        "CRS3035RES100mN3096600E4107200",
    ]
    assert e.dtype == np.int64 and n.dtype == np.int64


def test_cell_ids_parse_back_to_their_corners() -> None:
    ids = grid.cell_ids([4107200, 4110000], [3096600, 3091900]).tolist()
    e, n, ok = grid.parse_cell_ids(
        [*ids, f" {ids[0]} ", "CRS3035RES100mN1", "x", "CRS3035RES1kmN1E2"]
    )
    assert ok.tolist() == [True, True, True, False, False, False]
    assert e[:3].tolist() == [4107200, 4110000, 4107200]
    assert n[:3].tolist() == [3096600, 3091900, 3096600]
    assert e.dtype == np.int64 and n.dtype == np.int64


def test_mobile_mask_decoded_in_one_place() -> None:
    from quartier.geo.analysis import MOBILE_TECHNOLOGIES, covers, operator_lists

    ops, techs = ["A", "B", "C"], list(MOBILE_TECHNOLOGIES)
    bit = {(i, j): 1 << (i * len(techs) + j) for i in range(3) for j in range(4)}
    masks = np.array([0, bit[0, 2] | bit[2, 2] | bit[1, 3], bit[1, 2]], dtype=np.int32)
    assert covers(masks, 0, 2).tolist() == [False, True, False]
    assert covers(int(masks[1]), 1, 3).tolist() is True
    assert operator_lists(masks, ops, techs, "4G").tolist() == ["", "A,C", "B"]
    assert operator_lists(masks, ops, techs, "5G").tolist() == ["", "B", ""]
    assert operator_lists(masks, ops, ["4G"], "5G").tolist() == ["", "", ""]


def test_cell_index_rejects_non_finite_coordinates() -> None:
    with pytest.raises(ValueError):
        grid.cell_index([np.nan], [50.9])


def test_cell_polygons_are_the_projected_cells() -> None:
    polys = grid.cell_polygons(np.array([4107200, 4110000]), np.array([3096600, 3091900]))
    assert len(polys) == 2
    first = polys[0]
    assert first.geom_type == "Polygon"
    xs, ys = TO_3035.transform(*np.asarray(first.exterior.coords).T)
    e, n = 4107200, 3096600  # the corners, counter-clockwise from lower-left, to within 1 mm
    assert np.allclose(xs, [e, e + 100, e + 100, e, e], atol=1e-3)
    assert np.allclose(ys, [n, n, n + 100, n + 100, n], atol=1e-3)
    projected = shapely.transform(first, lambda c: np.column_stack(TO_3035.transform(*c.T)))
    assert projected.area == pytest.approx(10_000, rel=1e-6)
    assert first.contains(shapely.Point(DOM))
    assert len(grid.cell_polygons(np.array([]), np.array([]))) == 0


# --- classification ---------------------------------------------------------------------------


def test_class_boundaries_are_lower_inclusive() -> None:
    speeds = [0, 29.99, 30, 99.99, 100, 999.99, 1000, 10_000]
    assert classify_download(speeds).tolist() == [
        "below_30", "below_30", "30_to_100", "30_to_100",
        "100_to_1000", "100_to_1000", "gigabit", "gigabit",
    ]  # fmt: skip
    assert [c.key for c in SPEED_CLASSES] == ["below_30", "30_to_100", "100_to_1000", "gigabit"]
    assert SPEED_CLASSES[-1].label_de == "ab 1000 Mbit/s (Gigabit)"
    with pytest.raises(ValueError):
        classify_download([np.nan])
    with pytest.raises(ValueError):
        classify_download([-1.0])


def _tests_in(cell_ll: tuple[float, float], speeds: list[float]) -> pd.DataFrame:
    """Tests spread inside the cell with lower-left corner cell_ll (EPSG:3035)."""
    pts = [lonlat(cell_ll[0] + 10 + 20 * i, cell_ll[1] + 90 - 20 * i) for i in range(len(speeds))]
    return pd.DataFrame(
        {"lon": [p[0] for p in pts], "lat": [p[1] for p in pts], "download_mbps": speeds}
    )


def test_median_per_cell_decides_the_class() -> None:
    a, b, c = (4107200, 3096600), (4107300, 3096600), (4110000, 3091900)
    tests = pd.concat(
        [
            _tests_in(a, [10, 50, 2000]),  # median 50
            _tests_in(b, [20, 40]),  # median exactly 30
            _tests_in(c, [900, 1100, 1000, 5]),  # median exactly 950
        ],
        ignore_index=True,
    )
    cells = classify_cells(tests, min_contributors=1)  # the classification, not k
    assert list(cells.columns) == [
        "cell_id", "n_tests", "median_download_mbps", "class_key", "district_code", "geometry",
    ]  # fmt: skip
    assert cells.crs.to_epsg() == 4326
    got = cells.set_index("cell_id")
    ida, idb, idc = (f"CRS3035RES100mN{n}E{e}" for e, n in (a, b, c))
    assert got.loc[ida, "n_tests"] == 3
    assert got.loc[ida, "median_download_mbps"] == 50
    assert got.loc[ida, "class_key"] == "30_to_100"
    assert got.loc[idb, "median_download_mbps"] == 30
    assert got.loc[idb, "class_key"] == "30_to_100"
    assert got.loc[idc, "median_download_mbps"] == 950
    assert got.loc[idc, "class_key"] == "100_to_1000"
    assert cells["district_code"].isna().all()
    centres = shapely.points(*grid.cell_centres(*zip(a, b, c, strict=True)))
    for cell_id, centre in zip((ida, idb, idc), centres, strict=True):
        assert got.loc[cell_id, "geometry"].contains(centre)


def test_district_is_the_polygon_containing_the_cell_centre() -> None:
    inside, outside = (4107200, 3096600), (4107500, 3096600)
    # a hand-made square around the first cell's centre, ending 50 m short of the second cell
    sw, ne = lonlat(4107150, 3096550), lonlat(4107350, 3096750)
    square = shapely.box(sw[0], sw[1], ne[0], ne[1])
    districts = gpd.GeoDataFrame({"code": ["7"], "name": ["Quadrat"]}, geometry=[square], crs=4326)
    tests = pd.concat([_tests_in(inside, [1000]), _tests_in(outside, [1000])], ignore_index=True)
    cells = classify_cells(tests, districts, min_contributors=1).set_index("cell_id")
    assert cells.loc["CRS3035RES100mN3096600E4107200", "district_code"] == "7"
    assert pd.isna(cells.loc["CRS3035RES100mN3096600E4107500", "district_code"])


def test_district_in_another_crs_is_reprojected() -> None:
    square = shapely.box(4107100, 3096500, 4107400, 3096800)
    districts = gpd.GeoDataFrame({"code": ["1"]}, geometry=[square], crs=3035)
    cells = classify_cells(_tests_in((4107200, 3096600), [5]), districts, min_contributors=1)
    assert cells["district_code"].tolist() == ["1"]


def test_invalid_tests_are_dropped_and_empty_input_gives_empty_cells() -> None:
    tests = pd.DataFrame(
        {
            "lon": [DOM[0], np.nan, DOM[0], DOM[0]],
            "lat": [DOM[1], DOM[1], DOM[1], DOM[1]],
            "download_mbps": [100.0, 50.0, np.nan, -3.0],
        }
    )
    cells = classify_cells(tests, min_contributors=1)
    assert cells["n_tests"].tolist() == [1]
    empty = classify_cells(tests.iloc[:0], min_contributors=1)
    assert empty.empty and "geometry" in empty.columns and empty.crs.to_epsg() == 4326
    with pytest.raises(ValueError, match="download_mbps"):
        classify_cells(pd.DataFrame({"lon": [1.0], "lat": [2.0]}))


# --- I/O --------------------------------------------------------------------------------------


@pytest.mark.services
def test_load_speedtests_and_sensor_locations(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """
            insert into speedtest (measured_at, source, device_key, geom, download_mbps, operator)
            values ('2024-01-01T10:00Z', 'app', 'd1',
                    ST_SetSRID(ST_MakePoint(6.9583, 50.9413), 4326), 120.5, 'Telekom'),
                   ('2024-03-01T10:00Z', 'app', 'd2', ST_SetSRID(ST_MakePoint(7.0, 50.9), 4326),
                    15, null)
            """
        )
        conn.execute(
            """
            with t as (insert into thing (name) values ('Luftsensor Dom') returning id),
                 l as (insert into location (name, location)
                       values ('Dom', ST_SetSRID(ST_MakePoint(6.9583, 50.9413), 4326))
                       returning id),
                 tl as (insert into thing_location select t.id, l.id from t, l),
                 s as (insert into sensor (name) values ('SDS011') returning id),
                 p as (insert into observed_property (name, definition)
                       values ('PM10', 'urn:pm10'), ('Temperatur', 'urn:t') returning id)
            insert into datastream (name, unit_of_measurement, thing_id, sensor_id,
                                    observed_property_id)
            select 'ds', '{}'::jsonb, t.id, s.id, p.id from t, s, p
            """
        )
        conn.execute("insert into thing (name) values ('ohne Ort')")
        tests = load_speedtests(conn)
        recent = load_speedtests(conn, since=datetime(2024, 2, 1, tzinfo=UTC))
        sensors = load_sensor_locations(conn)
    assert tests["device_key"].tolist() == ["d1", "d2"]
    assert tests.loc[0, "lon"] == pytest.approx(6.9583)
    assert tests.loc[0, "download_mbps"] == pytest.approx(120.5)
    assert tests.loc[0, "measured_at"] == pd.Timestamp("2024-01-01T10:00Z")
    assert recent["device_key"].tolist() == ["d2"]
    assert sensors["name"].tolist() == ["Luftsensor Dom"]
    assert sensors.loc[0, "lat"] == pytest.approx(50.9413)
    assert sensors.loc[0, "observed_properties"] == ["PM10", "Temperatur"]
