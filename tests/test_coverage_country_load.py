"""The country benchmark's loader (``bench/coverage.py``, ``load_country``): several loader
processes store the same rows as one, and the indexes it defers are built afterwards to the
same schema as a load without deferring."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import psycopg
import pytest
from dbs import clone, drop
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("household", "broadband_offer", "speedtest", "mobile_measurement")


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_coverage", ROOT / "bench" / "coverage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_coverage"] = module
    spec.loader.exec_module(module)
    return module


bench = _bench()


def _rows(url: str, table: str) -> pd.DataFrame:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("select * from {}").format(sql.Identifier(table)))
        cols = [d.name for d in cur.description or []]
        frame = pd.DataFrame(cur.fetchall(), columns=cols).drop(columns="id")
    # when the row was stored (a default of now()) is not generated data
    frame = frame.drop(columns=[c for c in ("imported_at", "received_at") if c in frame])
    frame = frame.astype(str)
    return frame.sort_values(list(frame.columns), ignore_index=True)


def _schema(url: str) -> set[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return {
            (str(r[0]), str(r[1]))
            for r in conn.execute(
                "select indexrelid::regclass::text, pg_get_indexdef(indexrelid) from pg_index"
                " where indrelid = any(%s::regclass[])",
                (list(TABLES),),
            )
        }


@pytest.fixture
def two_dbs(service_urls: Any, template_db: str) -> Iterator[list[str]]:
    admin = service_urls.database_url
    urls = [clone(admin, template_db), clone(admin, template_db)]
    yield urls
    for url in urls:
        drop(admin, url)


def test_loader_processes_store_the_same_rows_and_deferred_indexes_are_built_later(
    two_dbs: list[str],
) -> None:
    blocks = [(0, 0), (0, 1), (1, 0)]
    one, two = two_dbs
    bench.load_country(one, blocks, procs=1)
    bench.load_country(two, blocks, procs=2, defer=True)

    world = bench.CountryWorld()
    expected = {t: 0 for t in TABLES}
    r0, c0 = bench.COUNTRY_ORIGIN[1] // bench.BLOCK_M, bench.COUNTRY_ORIGIN[0] // bench.BLOCK_M
    for br, bc in blocks:
        inp = world.load((r0 + br, c0 + bc), bench.BLOCK_M // 100)
        for table, frame in zip(TABLES, (inp.households, inp.offers, inp.speedtests,
                                         inp.signals), strict=True):  # fmt: skip
            expected[table] += len(frame)
    for table in TABLES:
        a, b = _rows(one, table), _rows(two, table)
        assert len(a) == expected[table] > 0, table
        pd.testing.assert_frame_equal(a, b, obj=table)

    # the deferred load has only the indexes the analysis reads until build_deferred
    full, deferred = _schema(one), _schema(two)
    assert deferred < full
    assert {n for n, _ in deferred if not n.endswith("_pkey")} == {
        "household_cell_idx", "broadband_offer_cell_idx", "speedtest_cell_idx",
        "mobile_measurement_cell_idx", "mobile_measurement_operator_idx",
    }  # fmt: skip
    bench.build_deferred(two)
    assert _schema(two) == full
    bench.build_deferred(two)  # nothing left to do: no error, nothing changes
    assert _schema(two) == full

    # speed tests and signal measurements come from distinct devices (k-anonymity can pass)
    with psycopg.connect(two) as conn:
        [(keys, rows)] = conn.execute(
            "select count(distinct device_key), count(*) from mobile_measurement"
        ).fetchall()
    assert keys > rows / 2
