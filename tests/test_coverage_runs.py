"""Coverage inputs in and results out of PostgreSQL: the same answer as the pure analysis."""

from __future__ import annotations

from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import psycopg
import pytest
from test_coverage_analysis import scenario

from quartier.geo import features, grid, run_store, service
from quartier.geo.analysis import analyse
from quartier.store.pgcopy import (
    Column,
    read_copy,
    read_table_columns,
    write_copy,
    write_copy_fixed,
)

pytestmark = pytest.mark.services


def _lonlat(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return grid.from_grid_crs(frame["cell_e"].to_numpy() + 50.0, frame["cell_n"].to_numpy() + 50.0)


def load_scenario(conn: psycopg.Connection[Any]) -> None:
    s = scenario()
    lon, lat = _lonlat(s.households)
    with conn.cursor() as cur:
        cur.executemany(
            "insert into household (source, households, geom)"
            " values ('test', %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326))",
            [
                (int(h), float(x), float(y))
                for h, x, y in zip(s.households["households"], lon, lat, strict=True)
            ],
        )
        lon, lat = _lonlat(s.offers)
        cur.executemany(
            "insert into broadband_offer (source, technology, max_down_mbps, max_up_mbps, geom)"
            " values ('test', %s, %s, %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326))",
            [(t, float(d), float(u), float(x), float(y)) for t, d, u, x, y in zip(
                s.offers["technology"], s.offers["max_down_mbps"], s.offers["max_up_mbps"],
                lon, lat, strict=True)],
        )  # fmt: skip
        lon, lat = _lonlat(s.speedtests)
        cur.executemany(
            "insert into speedtest (measured_at, source, device_key, geom, download_mbps)"
            " values (now() - make_interval(secs => %s), 'test', 'd',"
            " ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s)",
            [(i, float(x), float(y), float(v)) for i, (x, y, v) in enumerate(
                zip(lon, lat, s.speedtests["download_mbps"], strict=True))],
        )  # fmt: skip
        lon, lat = _lonlat(s.signals)
        cur.executemany(
            "insert into mobile_measurement (measured_at, source, device_key, geom, technology,"
            " operator, rsrp_dbm, rssi_dbm)"
            " values (now() - make_interval(secs => %s), 'test', 'm',"
            " ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s, %s, %s, %s)",
            [(i, float(x), float(y), t, o, None if t == "2G" else float(v),
              float(v) if t == "2G" else None) for i, (x, y, t, o, v) in enumerate(zip(
                lon, lat, s.signals["technology"], s.signals["operator"], s.signals["signal_dbm"],
                strict=True))],
        )  # fmt: skip
        assert s.districts is not None
        d = s.districts.to_crs(4326)
        cur.executemany(
            "insert into district (level, code, name, geom)"
            " values ('stadtbezirk', %s, %s, ST_Multi(ST_GeomFromText(%s, 4326)))",
            [(c, n, g.wkt) for c, n, g in zip(d["code"], d["name"], d.geometry, strict=True)],
        )


def test_binary_copy_round_trip(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("create temp table t (a int4, b float4, c text, d bool, e int8)")
        cols = [
            Column("a", "int4", np.array([1, -2, 3])),
            Column("b", "float4", np.array([1.5, np.nan, -3.25])),
            Column("c", "text", np.array([0, -1, 1]), categories=["x", "Köln"]),
            Column("d", "bool", np.array([True, False, True])),
            Column("e", "int8", np.array([2**40, 0, 7]), null=np.array([False, True, False])),
        ]
        assert write_copy(conn, "t", cols) == 3
        rows = conn.execute("select a, b, c, d, e from t order by a").fetchall()
        assert rows == [(-2, None, None, False, None), (1, 1.5, "x", True, 2**40),
                        (3, -3.25, "Köln", True, 7)]  # fmt: skip
        back = read_copy(conn, "select a, coalesce(b, 'NaN') from t order by a",
                         [("a", "int4"), ("b", "float4")])  # fmt: skip
        assert back["a"].tolist() == [-2, 1, 3]
        assert np.isnan(back["b"][0]) and back["b"][2] == -3.25
        with pytest.raises(ValueError, match="null"):
            read_copy(conn, "select a, b from t", [("a", "int4"), ("b", "float4")])


def test_batched_table_read_and_fixed_width_copy(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("create temp table t (a int4, b float4, c int2, d bool, w int8)")
        n = 10_000
        a = np.arange(n, dtype=np.int64) * 3 - 7
        b = np.where(a % 5 == 0, np.nan, a / 4)
        cols = [("a", "int4", a), ("b", "float4", b), ("c", "int2", a % 7),
                ("d", "bool", a % 2 == 0), ("w", "int8", a * 2**33)]  # fmt: skip
        assert write_copy_fixed(conn, "t", cols, chunk_rows=999) == n
        conn.execute("analyze t")
        spec = [("a", "int4", "a"), ("b", "float4", "b"), ("c", "int2", "c"),
                ("w", "int8", "w"), ("d", "int2", "d::int::int2")]  # fmt: skip
        got = read_table_columns(conn, "t", spec, batch_rows=500)  # many TID ranges
        order = np.argsort(got["a"])
        assert got["a"][order].tolist() == a.tolist()
        assert got["a"].dtype == np.int32 and got["c"].dtype == np.int16
        np.testing.assert_array_equal(got["b"][order], b.astype(np.float32))  # NaN stays NaN
        assert got["c"][order].tolist() == (a % 7).tolist()
        assert got["w"][order].tolist() == (a * 2**33).tolist()
        assert got["d"][order].tolist() == (a % 2 == 0).astype(int).tolist()
        some = read_table_columns(conn, "t", spec[:1], "a > %(lo)s and a %% 2 = 0", {"lo": 100})
        assert sorted(some["a"].tolist()) == [x for x in a.tolist() if x > 100 and x % 2 == 0]
        none = read_table_columns(conn, "t", spec[:2], "false")
        assert none["a"].dtype == np.int32 and len(none["a"]) == 0 and len(none["b"]) == 0
        conn.execute("create temp table empty (a int4)")
        assert len(read_table_columns(conn, "empty", [("a", "int4", "a")])["a"]) == 0
        with pytest.raises(ValueError, match="null"):
            read_table_columns(conn, "t", [("x", "int4", "nullif(a, 2)")])
        info = type(conn.info)
        with mock.patch.object(info, "server_version", new_callable=mock.PropertyMock) as v:
            v.return_value = 130000  # no TID range scans: one COPY row per row
            plain = read_table_columns(conn, "t", spec, "a % 2 = 0")  # no params: no %%
        assert sorted(plain["a"].tolist()) == [x for x in a.tolist() if x % 2 == 0]
        assert plain["w"].dtype == np.int64 and plain["w"].flags.c_contiguous


def test_generated_cells_match_the_grid(db_url: str) -> None:
    lon, lat = 6.9583, 50.9413  # the Dom: cell E 4107200, N 3096600
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "insert into household (source, households, geom) values"
            " ('t', 1, ST_SetSRID(ST_MakePoint(%s, %s), 4326)) returning cell_e, cell_n",
            (lon, lat),
        ).fetchone()
    assert row == (4107200, 3096600)


def test_analysis_from_and_to_the_store_equals_the_pure_analysis(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        load_scenario(conn)
        conn.commit()  # the signals are read over a second connection
        # the store round trip, not k-anonymity (one device per kind here; tests/test_privacy.py)
        run_id, result = service.analyse_and_store(conn, conninfo=db_url, min_contributors=1)
        conn.commit()
        ref = analyse(scenario())
        cols = ["e", "n", "households", "class_key", "is_gap", "n_tests", "measured_down_mbps",
                "mobile_mask", "dead_zone", "cluster_id", "district_code"]  # fmt: skip
        pd.testing.assert_frame_equal(
            result.cells[cols].astype(object), ref.cells[cols].astype(object)
        )
        run = run_store.get_run(conn)
        assert run.id == run_id and run.operators == ["A-Net", "B-Mobil"]
        cells = features.query_cells(conn, run)
        assert len(cells) == 8
        whites = features.query_cells(conn, run, classes=["white"])
        assert {f["properties"]["households"] for f in whites} == {10, 6, 2}
        gaps = features.query_gaps(conn, run)
        assert [g["properties"]["households"] for g in gaps] == [20, 6]
        assert gaps[0]["geometry"]["type"] == "MultiPolygon"
        districts = features.query_districts(conn, run)
        assert [d["id"] for d in districts] == ["1", "2", "all"]
        assert districts[0]["properties"]["classes"][0] == {
            "key": "white", "label_de": "weiß (unter 30 Mbit/s)", "households": 16,
            "share": 64.0, "cells": 2,
        }  # fmt: skip
        assert districts[0]["geometry"]["type"] == "MultiPolygon"
        # bbox: only the cell A (lower-left of the scenario)
        lon, lat = grid.from_grid_crs(np.array([4_100_050.0]), np.array([3_090_050.0]))
        box = (float(lon[0]) - 1e-4, float(lat[0]) - 1e-4, float(lon[0]) + 1e-4,
               float(lat[0]) + 1e-4)  # fmt: skip
        inside = features.query_cells(conn, run, bbox=box)
        assert [f["properties"]["cell_id"] for f in inside] == ["CRS3035RES100mN3090000E4100000"]
        view = conn.execute(
            "select cell_id, ST_Area(ST_Transform(geom, 3035)) from coverage_cell_geom"
            " where run_id = %s and e = 4100000 and n = 3090000",
            (run_id,),
        ).fetchone()
        assert view is not None and view[0] == "CRS3035RES100mN3090000E4100000"
        assert view[1] == pytest.approx(10_000, rel=1e-3)


def test_export_gpkg_geojson_csv(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import geopandas as gpd
    import pyogrio

    from quartier.geo.export import export_run

    steps: list[str] = []
    with psycopg.connect(db_url) as conn:
        load_scenario(conn)
        service.analyse_and_store(conn, progress=steps.append, min_contributors=1)
        files = export_run(conn, tmp_path, progress=steps.append)
    assert steps[:3] == list(service.ANALYSIS_STEPS)
    names = sorted(p.name for p in files)
    assert names == [
        "coverage_run1.gpkg",
        "coverage_run1_coverage_cells.csv", "coverage_run1_coverage_cells.geojson",
        "coverage_run1_coverage_districts.csv", "coverage_run1_coverage_districts.geojson",
        "coverage_run1_coverage_gaps.csv", "coverage_run1_coverage_gaps.geojson",
    ]  # fmt: skip
    layers = [str(n) for n, _ in pyogrio.list_layers(tmp_path / "coverage_run1.gpkg")]
    assert layers == ["coverage_cells", "coverage_gaps", "coverage_districts"]
    cells = gpd.read_file(tmp_path / "coverage_run1.gpkg", layer="coverage_cells")
    assert len(cells) == 8 and int(cells["households"].sum()) == 37
    a = cells[cells["cell_id"] == "CRS3035RES100mN3090000E4100000"].iloc[0]
    assert a["class_key"] == "white" and a["operators_4g_list"] == "A-Net"
    gaps = gpd.read_file(tmp_path / "coverage_run1_coverage_gaps.geojson")
    assert gaps["households"].tolist() == [20, 6]
    csv = pd.read_csv(tmp_path / "coverage_run1_coverage_districts.csv", dtype={"code": str})
    assert csv["code"].tolist() == ["1", "2", "all"]
    assert csv.loc[0, "share_white"] == 64.0


def test_deleting_a_run_deletes_its_cells(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        load_scenario(conn)
        first, _ = service.analyse_and_store(conn)
        second, _ = service.analyse_and_store(conn)
        conn.execute("delete from coverage_run where id = %s", (first,))
        rows = conn.execute("select run_id, count(*) from coverage_cell group by 1").fetchall()
        gaps = conn.execute("select distinct run_id from coverage_gap").fetchall()
        tables = conn.execute(
            "select to_regclass(%s)::text, to_regclass(%s)::text",
            (f"coverage_cell_run_{first}", f"coverage_cell_run_{second}"),
        ).fetchone()
    assert rows == [(second, 8)] and gaps == [(second,)]
    assert tables == (None, f"coverage_cell_run_{second}")  # the first run's table is dropped


def test_cell_view_shows_codes_as_texts_and_nulls(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        load_scenario(conn)
        run_id, result = service.analyse_and_store(conn)
        stored = conn.execute(
            "select district_code, best_technology, max_down_mbps, max_up_mbps, class_key,"
            " measured_down_mbps, measured_ratio, disagreement, cluster_id, is_gap"
            " from coverage_cell where run_id = %s order by n, e",
            (run_id,),
        ).fetchall()
        c = result.cells.sort_values(["n", "e"])

        def py(v: Any) -> Any:
            return None if v is None or v is pd.NA or v != v else v

        expected = [
            tuple(py(v) for v in row)
            for row in c[["district_code", "best_technology", "max_down_mbps", "max_up_mbps",
                          "class_key", "measured_down_mbps", "measured_ratio", "disagreement",
                          "cluster_id", "is_gap"]].astype(object).itertuples(index=False)
        ]  # fmt: skip
        assert len(stored) == len(expected) == 8
        for got, want in zip(stored, expected, strict=True):
            for g, w in zip(got, want, strict=True):
                assert g == (pytest.approx(w, rel=1e-6) if isinstance(w, float) else w)
        # a row inserted into the view by hand goes into the run's table, new texts are added
        conn.execute(
            "insert into coverage_cell (run_id, e, n, district_code, households, class_key,"
            " best_technology) values (%s, 1000, 2000, 'new', 3, 'white', 'ftth')",
            (run_id,),
        )
        row = conn.execute(
            "select district_code, households, class_key, best_technology, max_down_mbps,"
            " cluster_id, is_gap from coverage_cell where run_id = %s and e = 1000",
            (run_id,),
        ).fetchone()
        assert row == ("new", 3, "white", "ftth", None, None, False)
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "insert into coverage_cell (run_id, e, n) values (%s, 0, 0)", (run_id + 100,)
            )
