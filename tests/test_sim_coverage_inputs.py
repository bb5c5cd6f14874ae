"""The simulated coverage world: deterministic by seed, calibrated to the Breitbandatlas 2021
shares of Köln's Stadtbezirke (within 2 percentage points, as the analysis counts them)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from quartier.geo.analysis import CoverageInputs, analyse
from quartier.sensors_sim.coverage_inputs import (
    WorldConfig,
    breitbandatlas_targets,
    coverage_world,
)
from quartier.sensors_sim.geography import geography

SMALL = WorldConfig(seed=7, addresses=40_000, speedtests=40_000, signals=200_000)


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    return coverage_world(SMALL)


def _stadtbezirke() -> gpd.GeoDataFrame:
    g = geography()
    return gpd.GeoDataFrame(
        {"code": list(g.stadtbezirke), "name": [b.name for b in g.stadtbezirke.values()]},
        geometry=[b.geometry for b in g.stadtbezirke.values()],
        crs=4326,
    )


def test_targets_are_the_breitbandatlas_rows() -> None:
    t = breitbandatlas_targets().set_index("stadtbezirk")
    assert list(t.index) == [str(i) for i in range(1, 10)]
    assert t.loc["1", "ags"] == "05315001"
    assert (t.loc["1", "ge30"], t.loc["1", "ge100"], t.loc["1", "ge1000"]) == (99.99, 99.94, 99.58)
    assert (t.loc["6", "ge30"], t.loc["6", "ge100"], t.loc["6", "ge1000"]) == (99.68, 98.55, 76.05)


def test_world_is_deterministic_by_seed(world) -> None:  # type: ignore[no-untyped-def]
    again = coverage_world(SMALL)
    for name in ("addresses", "offers", "speedtests", "signals", "sites"):
        pd.testing.assert_frame_equal(getattr(world, name), getattr(again, name))
    other = coverage_world(WorldConfig(seed=8, addresses=2_000, speedtests=100, signals=100))
    assert not np.array_equal(other.addresses["lon"][:100], world.addresses["lon"][:100])


def test_world_is_plausible(world) -> None:  # type: ignore[no-untyped-def]
    a = world.addresses
    assert len(a) == SMALL.addresses and a["households"].min() >= 1
    assert 3.0 < a["households"].mean() < 4.5
    assert a["lon"].between(6.77, 7.17).all() and a["lat"].between(50.83, 51.09).all()
    # more addresses in the populous Stadtbezirke: Lindenthal (3) over Chorweiler (6)
    per = a["stadtbezirk"].value_counts()
    assert per["3"] > per["6"]
    assert set(world.offers["technology"]) <= {"ftth", "fttb", "hfc", "vdsl", "adsl", "fwa"}
    assert set(world.signals["technology"]) <= {"2G", "4G", "5G"}
    is2g = world.signals["technology"] == "2G"
    assert world.signals.loc[is2g, "rsrp_dbm"].isna().all()
    assert world.signals.loc[~is2g, "rsrp_dbm"].between(-150, -25).all()
    assert not world.signals.duplicated(["device_key", "measured_at"]).any()
    assert (world.speedtests["download_mbps"] > 0).all()


def test_calibrated_to_the_breitbandatlas_within_2_points(world) -> None:  # type: ignore[no-untyped-def]
    res = analyse(CoverageInputs(world.addresses, world.offers, world.speedtests, world.signals,
                                 _stadtbezirke()))  # fmt: skip
    stats = res.districts.set_index("code")
    targets = world.targets.set_index("stadtbezirk")
    for code in targets.index:
        s = stats.loc[code]
        ge30 = 100 - s["share_white"]
        ge100 = ge30 - s["share_grey"]
        ge1000 = s["share_gigabit"]
        t = targets.loc[code]
        assert ge30 == pytest.approx(t["ge30"], abs=2), code
        assert ge100 == pytest.approx(t["ge100"], abs=2), code
        assert ge1000 == pytest.approx(t["ge1000"], abs=2), code
    # mobile: nearly everywhere 4G; 5G less; a few dead zones at most
    assert stats.loc["all", "area_4g_Telekom"] > 90
    assert stats.loc["all", "area_5g_Telekom"] < stats.loc["all", "area_4g_Telekom"]
    assert res.cells["dead_zone"].mean() < 0.01
    # the wrongly advertised gigabit cells are among those measured far below
    assert (res.cells["disagreement"] == "below").sum() > 0
