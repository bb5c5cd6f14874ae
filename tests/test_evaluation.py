from __future__ import annotations

from datetime import UTC, datetime

import geopandas as gpd
import pandas as pd
import psycopg
import pytest
import shapely

from quartier.evaluation.compute import compute_indicators
from quartier.evaluation.indicators import GIGABIT_CELL_SHARE, gigabit_cell_share_by_district
from quartier.geo.io import import_districts, load_districts

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _districts() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"code": ["1", "2", "3"], "name": ["Innenstadt", "Rodenkirchen", "Lindenthal"]},
        geometry=[shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1), shapely.box(2, 0, 3, 1)],
        crs=4326,
    )


def _cells(rows: list[tuple[str | None, str, int]]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "cell_id": [f"c{i}" for i in range(len(rows))],
            "n_tests": [r[2] for r in rows],
            "median_download_mbps": [1.0] * len(rows),
            "class_key": [r[1] for r in rows],
            "district_code": pd.Series([r[0] for r in rows], dtype=object),
        },
        geometry=[shapely.Point(0.5, 0.5)] * len(rows),
        crs=4326,
    )


def test_gigabit_share_by_hand() -> None:
    cells = _cells(
        [
            # district 1: 4 cells, 1 gigabit -> 25 %
            ("1", "gigabit", 2), ("1", "100_to_1000", 1), ("1", "below_30", 1),
            ("1", "30_to_100", 3),
            # district 2: 3 cells, 2 gigabit -> 66.67 %
            ("2", "gigabit", 1), ("2", "gigabit", 4), ("2", "below_30", 1),
            # outside every district: ignored
            (None, "gigabit", 5), (None, "below_30", 1),
        ]
    )  # fmt: skip
    values = gigabit_cell_share_by_district(
        cells, _districts(), computed_at=NOW, provenance={"tests_used": 13}
    )
    assert [v.scope_code for v in values] == ["1", "2", "3"]
    one, two, _ = values
    assert one.value == 25.0
    assert (one.numerator, one.denominator) == (1, 4)
    assert two.value == pytest.approx(200 / 3)
    assert (two.numerator, two.denominator) == (2, 3)
    assert one.provenance == {"tests_used": 13, "cells_in_scope": 4, "tests_in_scope": 7}
    assert two.provenance["tests_in_scope"] == 6
    for v in values:
        assert v.indicator_id == GIGABIT_CELL_SHARE.id
        assert v.unit == "%"
        assert v.scope_type == "stadtbezirk"
        assert v.computed_at == NOW
    assert one.scope_name == "Innenstadt"


def test_districts_without_measured_cells_get_none_not_zero() -> None:
    cells = _cells([("1", "below_30", 1)])
    values = gigabit_cell_share_by_district(cells, _districts(), computed_at=NOW)
    assert values[0].value == 0.0  # measured, but no gigabit cell
    assert values[1].value is None and values[2].value is None
    assert (values[1].numerator, values[1].denominator) == (0, 0)
    empty = gigabit_cell_share_by_district(_cells([]), _districts(), computed_at=NOW)
    assert [v.value for v in empty] == [None, None, None]


def test_cells_need_the_classification_columns() -> None:
    with pytest.raises(ValueError, match="district_code"):
        gigabit_cell_share_by_district(
            _cells([]).drop(columns="district_code"), _districts(), computed_at=NOW
        )


#: published speed-test cells need this many distinct devices (k-anonymity, docs/privacy.md):
#: each test below is made by as many phones, a second apart, so the cells count
PHONES = 5


def _insert_test(conn: psycopg.Connection, key: str, when: str, lon: float, lat: float,
                 mbps: float) -> None:  # fmt: skip
    for j in range(PHONES):
        conn.execute(
            "insert into speedtest (measured_at, source, device_key, geom, download_mbps) "
            "values (%s::timestamptz + make_interval(secs => %s), 'test', %s,"
            " ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s)",
            (when, j, f"{key}-{j}", lon, lat, mbps),
        )


@pytest.mark.services
def test_compute_indicators_end_to_end(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        counts = import_districts(conn)
        assert counts == {"city": 1, "stadtbezirk": 9, "stadtteil": 86}
        assert import_districts(conn) == counts  # an upsert: running it again changes nothing
        assert conn.execute(
            "select level, count(*) from district group by 1 order by 1"
        ).fetchall() == [("city", 1), ("stadtbezirk", 9), ("stadtteil", 86)]
        assert conn.execute(
            "select code, population, ST_GeometryType(geom), ST_IsValid(geom) from district "
            "where level = 'city'"
        ).fetchone() == ("05315000", 1044555, "ST_MultiPolygon", True)
        assert conn.execute(
            "select name, parent_code, population from district "
            "where level = 'stadtteil' and code = '101'"
        ).fetchone() == ("Altstadt/Süd", "1", 27515)
        assert conn.execute(
            "select count(*) from district where not ST_IsValid(geom) or population is null"
        ).fetchone() == (0,)

        stb = load_districts(conn)
        assert stb["code"].tolist() == [str(i) for i in range(1, 10)]
        assert stb.loc[0, "name"] == "Innenstadt" and stb.loc[0, "population"] == 127827
        assert len(load_districts(conn, "stadtteil")) == 86

        # Innenstadt: Dom cell median (900, 1200) = 1050 -> gigabit; Neumarkt 50 -> not
        _insert_test(conn, "a", "2024-03-01T10:00Z", 6.9583, 50.9413, 900)
        _insert_test(conn, "b", "2024-03-02T10:00Z", 6.95831, 50.94131, 1200)
        _insert_test(conn, "c", "2024-03-03T10:00Z", 6.9475, 50.9360, 50)
        # Mülheim: one gigabit cell
        _insert_test(conn, "d", "2024-04-01T10:00Z", 7.0064, 50.9626, 2000)
        # Bonn (outside Köln) and a test after `now`: not used
        _insert_test(conn, "e", "2024-04-02T10:00Z", 7.10, 50.73, 5)
        _insert_test(conn, "f", "2024-07-01T10:00Z", 6.9475, 50.9360, 5000)

        values = compute_indicators(conn, NOW)

    by_code = {v.scope_code: v for v in values if v.indicator_id == "gigabit_cell_share"}
    assert sorted(by_code, key=int) == [str(i) for i in range(1, 10)]
    assert by_code["1"].value == 50.0
    assert (by_code["1"].numerator, by_code["1"].denominator) == (1, 2)
    assert by_code["9"].value == 100.0
    assert by_code["9"].scope_name == "Mülheim"
    for code in "2345678":
        assert by_code[code].value is None
    v = by_code["1"]
    assert v.period_end == NOW and v.computed_at == NOW
    assert v.period_start == datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    assert v.provenance["tests_used"] == 4 * PHONES
    assert v.provenance["tests_loaded"] == 5 * PHONES
    assert v.provenance["cells_measured"] == 3
    assert v.provenance["tests_in_scope"] == 3 * PHONES
    assert v.provenance["data_from"] == "2024-03-01T10:00:00+00:00"
    assert v.provenance["data_to"] == "2024-04-02T10:00:00+00:00"
    assert v.provenance["sources"] == ["test"]
