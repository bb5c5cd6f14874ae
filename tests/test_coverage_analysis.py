"""Hand-computed scenarios for the coverage-gap analysis (quartier.geo.analysis and gaps)."""

from __future__ import annotations

import math
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from quartier.geo import grid
from quartier.geo.analysis import (
    MOBILE_TECHNOLOGIES,
    AnalysisParams,
    CoverageInputs,
    analyse,
)
from quartier.geo.gaps import label_clusters
from quartier.geo.profiles import GERMAN_FUNDING, US_BEAD, CoverageClass, Criterion, Profile

E0, N0 = 4_100_000, 3_090_000


def at(col: int, row: int) -> dict[str, int]:
    return {"cell_e": E0 + 100 * col, "cell_n": N0 + 100 * row}


# name: (col, row, households)
HOUSEHOLDS = {"A": (0, 0, 10), "B": (1, 0, 5), "C": (2, 0, 3), "D": (3, 0, 7), "E": (0, 2, 4),
              "F": (1, 2, 6), "I": (2, 1, 2)}  # fmt: skip
# (cell, technology, down, up)
OFFERS = [
    ("A", "vdsl", 16, 1), ("B", "vdsl", 50, 10), ("C", "vdsl", 250, 40), ("D", "hfc", 1000, 50),
    ("D", "vdsl", 100, 40), ("E", "vdsl", 100, 40), ("E", "ftth", 300, 300),
    ("G", "ftth", 1000, 1000),
]  # fmt: skip
CELLS = {**{k: (c, r) for k, (c, r, _) in HOUSEHOLDS.items()}, "G": (5, 5)}


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def scenario() -> CoverageInputs:
    households = _frame([{**at(c, r), "households": h} for c, r, h in HOUSEHOLDS.values()])
    offers = _frame(
        [
            {**at(*CELLS[cell]), "technology": t, "max_down_mbps": d, "max_up_mbps": u}
            for cell, t, d, u in OFFERS
        ]
    )
    tests = _frame(
        [{**at(*CELLS["D"]), "download_mbps": v} for v in (100, 150, 200, 250, 300)]
        + [{**at(*CELLS["B"]), "download_mbps": v} for v in (80, 90, 95, 99, 100)]
        + [{**at(*CELLS["A"]), "download_mbps": v} for v in (10, 12, 14, 16)]
    )
    sig = [
        ("A", "A-Net", "4G", -90), ("A", "A-Net", "4G", -90), ("A", "B-Mobil", "4G", -120),
        ("B", "A-Net", "4G", -100), ("B", "B-Mobil", "4G", -100),
        ("G", "A-Net", "2G", -80),
        ("D", "A-Net", "5G", -105), ("D", "A-Net", "5G", -115),
    ]  # fmt: skip
    signals = _frame(
        [{**at(*CELLS[c]), "operator": o, "technology": t, "signal_dbm": v} for c, o, t, v in sig]
    )
    # district 1: columns 0-1, district 2: columns 2-5 (rows 0-5), in EPSG:3035
    districts = gpd.GeoDataFrame(
        {"code": ["1", "2"], "name": ["Eins", "Zwei"]},
        geometry=[
            shapely.box(E0, N0, E0 + 200, N0 + 600),
            shapely.box(E0 + 200, N0, E0 + 600, N0 + 600),
        ],
        crs=grid.GRID_CRS,
    )
    return CoverageInputs(households, offers, tests, signals, districts)


def _cell(cells: pd.DataFrame, name: str) -> pd.Series:
    c, r = CELLS[name]
    row = cells[(cells["e"] == E0 + 100 * c) & (cells["n"] == N0 + 100 * r)]
    assert len(row) == 1
    return row.iloc[0]


def test_cells_get_exact_classes_offers_and_districts() -> None:
    res = analyse(scenario())
    cells = res.cells
    assert len(cells) == 8
    expected = {"A": "white", "B": "grey", "C": "dark_grey", "D": "gigabit", "E": "very_high",
                "F": "white", "I": "white", "G": "gigabit"}  # fmt: skip
    for name, cls in expected.items():
        assert _cell(cells, name)["class_key"] == cls, name
    assert _cell(cells, "D")["best_technology"] == "hfc"
    assert _cell(cells, "D")["max_down_mbps"] == 1000 and _cell(cells, "D")["max_up_mbps"] == 50
    assert _cell(cells, "E")["best_technology"] == "ftth"  # 300 beats 100
    assert pd.isna(_cell(cells, "F")["best_technology"])
    gaps = {n for n in CELLS if _cell(cells, n)["is_gap"]}
    assert gaps == {"A", "B", "C", "F", "I"}
    assert not _cell(cells, "G")["is_gap"]  # no households
    districts = {n: _cell(cells, n)["district_code"] for n in CELLS}
    assert districts == {"A": "1", "B": "1", "E": "1", "F": "1", "C": "2", "D": "2", "I": "2",
                         "G": "2"}  # fmt: skip
    assert cells["households"].sum() == 37


def test_measured_against_advertised() -> None:
    cells = analyse(scenario()).cells
    d, b, a = _cell(cells, "D"), _cell(cells, "B"), _cell(cells, "A")
    assert d["n_tests"] == 5 and d["measured_down_mbps"] == 200
    assert d["measured_ratio"] == pytest.approx(0.2) and d["disagreement"] == "below"
    assert b["measured_down_mbps"] == 95 and b["measured_ratio"] == pytest.approx(1.9)
    assert b["disagreement"] == "above"
    assert a["n_tests"] == 4 and pd.isna(a["measured_down_mbps"]) and pd.isna(a["disagreement"])
    loose = analyse(scenario(), AnalysisParams(min_tests=4)).cells
    assert _cell(loose, "A")["measured_down_mbps"] == 13  # (12 + 14) / 2
    assert pd.isna(_cell(loose, "A")["disagreement"])  # 13 / 16 is within 0.3 … 1.5


def test_mobile_coverage_dead_zones_and_single_operator() -> None:
    res = analyse(scenario(), AnalysisParams(verdict_min_measurements=1))
    assert res.operators == ["A-Net", "B-Mobil"]
    cells = res.cells
    n_t = len(MOBILE_TECHNOLOGIES)
    bit = {(o, t): 1 << (i * n_t + MOBILE_TECHNOLOGIES.index(t))
           for i, o in enumerate(res.operators) for t in MOBILE_TECHNOLOGIES}  # fmt: skip
    a, b, g, d = (_cell(cells, n) for n in "ABGD")
    assert a["mobile_mask"] == bit[("A-Net", "4G")] and a["single_operator"]
    assert b["mobile_mask"] == bit[("A-Net", "4G")] | bit[("B-Mobil", "4G")]
    assert b["operators_4g"] == 2 and not b["single_operator"] and not b["dead_zone"]
    assert g["mobile_mask"] == bit[("A-Net", "2G")] and g["dead_zone"]
    assert d["mobile_mask"] == bit[("A-Net", "5G")] and d["operators_5g"] == 1  # 1 of 2 is half
    assert not _cell(cells, "C")["dead_zone"]  # not measured is not a dead zone
    assert int(cells["dead_zone"].sum()) == 1
    assert not _cell(analyse(scenario()).cells, "G")["dead_zone"]  # 1 measurement: no verdict
    assert a["operators_measured"] == 0b11 and g["operators_measured"] == 0b01
    stats = res.districts.set_index("code")
    assert stats.loc["1", "signal_cells"] == 2
    assert stats.loc["1", "area_4g_A-Net"] == 100 and stats.loc["1", "area_4g_B-Mobil"] == 50
    # district 2: A-Net measured in D (5G, which counts for 4G too) and G (2G only)
    assert stats.loc["2", "area_4g_A-Net"] == 50 and stats.loc["2", "area_5g_A-Net"] == 50
    assert stats.loc["all", "area_4g_A-Net"] == 75 and stats.loc["all", "area_4g_B-Mobil"] == 50


def test_gap_clusters_hand_computed() -> None:
    res = analyse(scenario())
    gaps = res.gaps
    assert len(gaps) == 2
    first, second = gaps.iloc[0], gaps.iloc[1]
    assert first["rank"] == 1 and first["cells"] == 4 and first["households"] == 20
    assert first["district_codes"] == "1,2" and first["worst_class"] == "white"
    assert first["area_km2"] == pytest.approx(0.04)
    assert first["severity"] == pytest.approx((10 * 1 + 5 * 0.6 + 3 * 0.3 + 2 * 1) / 20)
    assert first["distance_gigabit_m"] == pytest.approx(100)
    assert second["households"] == 6 and second["cells"] == 1
    assert second["distance_gigabit_m"] == pytest.approx(math.hypot(200, 200))
    h2 = math.log1p(6) / math.log1p(20)
    assert first["priority"] == pytest.approx(0.5 + 0.3 * 0.795 + 0.2 * math.exp(-0.1))
    assert second["priority"] == pytest.approx(0.5 * h2 + 0.3 + 0.2 * math.exp(-0.28284271))
    # the polygon: cells (0,0) (1,0) (2,0) (2,1), projected; area back in 3035 is 4 cells
    poly = gpd.GeoSeries([first.geometry], crs=4326).to_crs(3035).iloc[0]
    assert poly.geom_type == "MultiPolygon" and len(poly.geoms) == 1
    assert poly.area == pytest.approx(40_000, rel=1e-6)
    assert len(poly.geoms[0].exterior.coords) == 7  # an L shape: 6 corners + closing
    cells = res.cells
    assert _cell(cells, "A")["cluster_id"] == _cell(cells, "I")["cluster_id"]
    assert _cell(cells, "F")["cluster_id"] != _cell(cells, "A")["cluster_id"]
    assert pd.isna(_cell(cells, "D")["cluster_id"])
    eight = analyse(scenario(), AnalysisParams(cluster_connectivity=8)).gaps
    assert eight["households"].tolist() == [26]


def test_priority_weights_change_the_ranking() -> None:
    only_severity = AnalysisParams(weights={"households": 0, "severity": 1, "proximity": 0})
    gaps = analyse(scenario(), only_severity).gaps
    assert gaps["households"].tolist() == [6, 20]  # severity 1 beats 0.795


def test_district_statistics_hand_computed() -> None:
    stats = analyse(scenario()).districts.set_index("code")
    assert stats.loc["1", "households"] == 25 and stats.loc["2", "households"] == 12
    assert stats.loc["all", "households"] == 37
    assert [stats.loc["1", f"share_{k}"] for k in GERMAN_FUNDING.keys] == pytest.approx(
        [64, 20, 0, 16, 0]
    )
    assert [stats.loc["2", f"share_{k}"] for k in GERMAN_FUNDING.keys] == pytest.approx(
        [200 / 12, 0, 25, 0, 700 / 12]
    )
    assert [stats.loc["all", f"households_{k}"] for k in GERMAN_FUNDING.keys] == [18, 5, 3, 4, 7]
    assert stats.loc["2", "cells_gigabit"] == 1  # G has no households


def test_bead_profile() -> None:
    res = analyse(scenario(), AnalysisParams(profile=US_BEAD))
    expected = {"A": "unserved", "B": "underserved", "C": "served", "D": "served",
                "E": "served", "F": "unserved", "I": "unserved"}  # fmt: skip
    for name, cls in expected.items():
        assert _cell(res.cells, name)["class_key"] == cls, name
    # B: 50/10 misses 100/20; a 25/2 offer alone would be unserved (upload)
    one = scenario()
    offers = pd.DataFrame([{**at(0, 0), "technology": "vdsl", "max_down_mbps": 25,
                            "max_up_mbps": 2}])  # fmt: skip
    res = analyse(
        CoverageInputs(
            one.households.iloc[:1], offers, one.speedtests.iloc[:0], one.signals.iloc[:0]
        ),
        AnalysisParams(profile=US_BEAD),
    )
    assert res.cells["class_key"].tolist() == ["unserved"]


def test_class_bounds_are_inclusive() -> None:
    speeds = [(29.99, 0), (30, 0), (99.9, 0), (100, 0), (499, 199), (200, 200), (500, 0),
              (999, 999), (1000, 0)]  # fmt: skip
    expected = ["white", "grey", "grey", "dark_grey", "dark_grey", "very_high", "very_high",
                "very_high", "gigabit"]  # fmt: skip
    offers = pd.DataFrame([{**at(i, 0), "technology": "ftth", "max_down_mbps": d,
                            "max_up_mbps": u} for i, (d, u) in enumerate(speeds)])  # fmt: skip
    empty = pd.DataFrame({"cell_e": [], "cell_n": []})
    res = analyse(CoverageInputs(empty.assign(households=[]), offers, empty, empty))
    assert res.cells["class_key"].tolist() == expected
    assert not res.cells["is_gap"].any()  # no households


def test_lon_lat_inputs_match_cell_inputs() -> None:
    base = scenario()
    x = base.households["cell_e"].to_numpy() + 50.0
    y = base.households["cell_n"].to_numpy() + 50.0
    lon, lat = grid.from_grid_crs(x, y)
    households = pd.DataFrame({"lon": lon, "lat": lat, "households": base.households["households"]})
    assert base.districts is not None
    res = analyse(CoverageInputs(households, base.offers, base.speedtests, base.signals,
                                 base.districts.to_crs(4326)))  # fmt: skip
    ref = analyse(base)
    pd.testing.assert_frame_equal(res.cells, ref.cells)


def test_invalid_rows_are_counted_and_ignored() -> None:
    base = scenario()
    bad_offers = pd.concat(
        [base.offers, pd.DataFrame([
            {**at(0, 0), "technology": "carrier-pigeon", "max_down_mbps": 5000, "max_up_mbps": 1},
            {**at(0, 0), "technology": "ftth", "max_down_mbps": -1, "max_up_mbps": 1},
            {"cell_e": np.nan, "cell_n": N0, "technology": "ftth", "max_down_mbps": 1000},
        ])], ignore_index=True,
    )  # fmt: skip
    res = analyse(CoverageInputs(base.households, bad_offers, base.speedtests, base.signals,
                                 base.districts))  # fmt: skip
    assert res.inputs["offers_rows"] == len(OFFERS) + 3 and res.inputs["offers_used"] == len(OFFERS)
    assert _cell(res.cells, "A")["class_key"] == "white"


def test_custom_profile_validation() -> None:
    with pytest.raises(ValueError):
        Profile(key="x", name="x", classes=(
            CoverageClass(key="a", label_de="a", label_en="a", gap=True, severity=1),
            CoverageClass(key="b", label_de="b", label_en="b", gap=False, severity=0),
        ))  # fmt: skip
    two = Profile(key="x", name="x", classes=(
        CoverageClass(key="slow", label_de="a", label_en="a", gap=True, severity=1,
                      exit=(Criterion(down_mbps=50),)),
        CoverageClass(key="fast", label_de="b", label_en="b", gap=False, severity=0),
    ))  # fmt: skip
    res = analyse(scenario(), AnalysisParams(profile=two))
    assert _cell(res.cells, "B")["class_key"] == "fast"


def test_label_clusters_four_and_eight() -> None:
    from quartier.geo.gaps import keys_of

    keys = np.sort(keys_of(np.array([0, 100, 300, 200]) + E0, np.array([0, 0, 0, 100]) + N0))
    # (0,0) (1,0) | (3,0) ; (2,1) touches (1,0) and (3,0) only at corners
    assert label_clusters(keys, 4).tolist() == [0, 0, 1, 2]
    assert label_clusters(keys, 8).tolist() == [0, 0, 0, 0]


def test_cluster_polygons_in_batches_equal_one_dissolve(monkeypatch: pytest.MonkeyPatch) -> None:
    import shapely

    from quartier.geo import gaps
    from quartier.geo.gaps import cluster_polygons, keys_of

    rng = np.random.default_rng(7)
    e, n = E0 + 100 * rng.integers(0, 60, 900), N0 + 100 * rng.integers(0, 60, 900)
    keys = np.unique(keys_of(e, n))
    labels = label_clusters(keys, 4)
    k = int(labels.max()) + 1
    sizes = np.bincount(labels)
    assert (sizes == 1).any() and (sizes > 5).any()  # single-cell and larger clusters
    whole = cluster_polygons(keys, labels, k)
    monkeypatch.setattr(gaps, "_POLYGON_BATCH_CELLS", 7)
    batched = cluster_polygons(keys, labels, k)
    assert [g.wkb for g in batched] == [g.wkb for g in whole]
    # the union of each cluster's squares, exactly (compared in the grid CRS)
    squares = shapely.box(*gaps.corners_of(keys), *(c + 100 for c in gaps.corners_of(keys)))
    for label in (int(np.argmax(sizes)), int(np.flatnonzero(sizes == 1)[0])):
        union = shapely.union_all(squares[labels == label])
        back = shapely.transform(
            whole[label], lambda c: np.column_stack(grid.to_grid_crs(c[:, 0], c[:, 1]))
        )
        assert shapely.get_type_id(whole[label]) == 6  # MultiPolygon
        assert shapely.area(back) == pytest.approx(shapely.area(union), abs=1e-3)
        assert shapely.area(shapely.symmetric_difference(back, union)) < 1e-5 * shapely.area(union)


@pytest.mark.parametrize("seed", range(5))
def test_every_household_counted_once_and_shares_sum_to_100(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 2000
    households = pd.DataFrame({
        "cell_e": E0 + 100 * rng.integers(0, 40, n), "cell_n": N0 + 100 * rng.integers(0, 40, n),
        "households": rng.integers(0, 30, n),
    })  # fmt: skip
    m = 3000
    offers = pd.DataFrame({
        "cell_e": E0 + 100 * rng.integers(0, 40, m), "cell_n": N0 + 100 * rng.integers(0, 40, m),
        "technology": rng.choice(["ftth", "hfc", "vdsl", "fwa"], m),
        "max_down_mbps": rng.choice([6, 16, 50, 100, 250, 500, 1000], m),
        "max_up_mbps": rng.choice([1, 10, 40, 200, 500], m),
    })  # fmt: skip
    empty = pd.DataFrame({"cell_e": [], "cell_n": []})
    districts = gpd.GeoDataFrame(
        {"code": ["w", "e"], "name": ["West", "Ost"]},
        geometry=[shapely.box(E0, N0, E0 + 1500, N0 + 4000),
                  shapely.box(E0 + 1500, N0, E0 + 3000, N0 + 4000)],
        crs=grid.GRID_CRS,
    )  # fmt: skip
    res = analyse(CoverageInputs(households, offers, empty, empty, districts))
    total = int(households["households"].sum())
    assert int(res.cells["households"].sum()) == total
    stats = res.districts.set_index("code")
    assert stats.loc["all", "households"] == total
    outside = int(res.cells.loc[res.cells["district_code"].isna(), "households"].sum())
    assert stats.loc[["w", "e"], "households"].sum() + outside == total
    keys = GERMAN_FUNDING.keys
    assert sum(stats.loc["all", f"households_{k}"] for k in keys) == total
    for code in stats.index:
        if stats.loc[code, "households"] > 0:
            assert sum(stats.loc[code, f"share_{k}"] for k in keys) == pytest.approx(100)
    gap_hh = int(res.cells.loc[res.cells["is_gap"], "households"].sum())
    assert int(res.gaps["households"].sum()) == gap_hh
    assert res.gaps["rank"].tolist() == list(range(1, len(res.gaps) + 1))


def test_best_offer_upload_decides_with_float32_inputs() -> None:
    """Equal downloads: the higher upload wins, also from float32 columns (as read from the
    store), where a float32 score ``down * 1e6 + up`` could not tell 40 from 50."""
    base = scenario()
    offers = pd.DataFrame({
        **at(0, 0), "technology": ["hfc", "ftth", "vdsl"],
        "max_down_mbps": np.array([1000, 1000, 100], dtype=np.float32),
        "max_up_mbps": np.array([40, 50, 40], dtype=np.float32),
    })  # fmt: skip
    res = analyse(CoverageInputs(base.households, offers, base.speedtests, base.signals,
                                 base.districts))  # fmt: skip
    a = _cell(res.cells, "A")
    assert a["best_technology"] == "ftth" and a["max_up_mbps"] == 50


def test_analysis_params_from_profile_file_and_options(tmp_path: Any) -> None:
    from quartier.errors import BadRequestError
    from quartier.geo.service import analysis_params

    assert analysis_params().profile.key == GERMAN_FUNDING.key
    assert analysis_params("bead", min_tests=2).profile.key == US_BEAD.key
    path = tmp_path / "params.json"
    path.write_text('{"min_tests": 7, "disagree_below": 0.2}')
    p = analysis_params("de", path)
    assert (p.min_tests, p.disagree_below) == (7, 0.2)
    assert analysis_params("de", path, min_tests=3).min_tests == 3
    with pytest.raises(BadRequestError, match="unknown profile"):
        analysis_params("xx")
    path.write_text('{"min_tests": 0}')
    with pytest.raises(BadRequestError, match="invalid analysis parameters"):
        analysis_params("de", path)
