"""Coverage-gap analysis benchmark: Köln-sized and Bundesland-sized, against a straightforward
geopandas version in the same run.

    .venv/bin/python bench/coverage.py [--case koeln|state|both] [--repeat 3] [--data-dir DIR]
    .venv/bin/python bench/coverage.py --case state --dask [--cluster] [--tile-km K] --repeat 3
    .venv/bin/python bench/coverage.py --case country --fraction N --workers 2 [--data-dir DIR]
    .venv/bin/python bench/coverage.py --case country --fraction N --load-only --data-dir DIR
    .venv/bin/python bench/coverage.py --case state --read-cost --data-dir DIR

Measured runs have fsync, synchronous_commit and full_page_writes on (printed in the header;
``--fsync-off`` keeps them off); loading is done without. ``--case state --dask`` runs the
Bundesland in one process and on a local Dask cluster in turns, ``--repeat`` times each
(min/median/max, peak memory per worker, every Dask result compared with the one before),
and prints where each Dask run's time went (the client's wall time per phase, Dask's task
stream per kind of task and worker, CPU seconds of the workers, the client and PostgreSQL).
``--case country`` generates a square of about 1/N of a synthetic country straight into the
store, one 10 km block at a time, runs it the same way (on Dask: a band of tiles a task,
``quartier.geo.distributed.analyse_store``) and projects the whole country and EU-27 from the
cost a tile; ``--load-only`` only loads it into the kept database for a later run.

Starts its own PostgreSQL (unless QUARTIER_TEST_DATABASE_URL is set), loads the simulated Köln
coverage world (150,000 address points, 200,000 speed tests, 1,000,000 signal measurements) and a
synthetic Bundesland (about 3.4 M cells, 4 M address points, 10 M signal measurements, 400
Gemeinden), then times

* end to end: inputs read from PostgreSQL, analysis, results written back (committed),
* computation alone: ``analyse`` on inputs in memory,
* the geopandas baseline (Köln only): sjoin points → cell polygons and districts, dissolve per
  cluster, sjoin_nearest for the distance to gigabit.

The Bundesland end-to-end run happens in a child process, whose peak RSS is the memory figure.

Loading: the Bundesland is written by binary COPY built with numpy (EWKB points, no Python per
row) straight into the input tables, with the generated cell columns turned into plain columns
filled from numpy (``floor(x / 100) * 100``, computed once instead of two PostGIS transforms per
row) and the secondary indexes built after loading: about 3.5 minutes instead of 10.6. With
``--data-dir DIR`` PostgreSQL and the loaded databases stay in DIR (PostgreSQL is stopped at the
end) and later runs reuse them (migrated to the current schema, earlier coverage runs deleted),
so a run of the state case takes about two minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quartier.geo import grid, input_store, run_store
from quartier.geo.analysis import FIXED_TECHNOLOGIES, AnalysisParams, CoverageInputs, analyse
from quartier.geo.io import import_districts
from quartier.pseudonym import Pseudonymizer
from quartier.services import LocalServices
from quartier.store.migrate import migrate

TARGETS = {"koeln_e2e": 3.0, "koeln_compute": 1.0, "state_e2e": 60.0, "state_mem_gb": 2.0,
           "speedup": 10.0}  # fmt: skip


def fresh_db(admin_url: str) -> str:
    name = f"bench_cov_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    migrate(url)
    return url


#: bump when the generated data changes: a kept database of another version is loaded again
DATA_VERSION = {"koeln": 1, "state": 3, "country": 2}


def kept_db(admin_url: str, case: str, load: Callable[[str], None]) -> str:
    """The database of ``case`` kept from an earlier run (migrated to the current schema, its
    coverage runs deleted), or a new one, loaded, and marked as loaded."""
    name = f"bench_cov_{case}_v{DATA_VERSION[case.split('_')[0]]}"
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
    if exists:
        with psycopg.connect(url, autocommit=True) as conn:
            loaded = conn.execute("select to_regclass('bench_loaded')").fetchone()
        if loaded and loaded[0] is not None:
            migrate(url)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("delete from coverage_run")
                conn.execute("vacuum analyze coverage_run, coverage_gap, coverage_district")
            print(f"  reusing the loaded database {name}")
            return url
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'drop database "{name}"')
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    migrate(url)
    load(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table bench_loaded (at timestamptz not null default now())")
        conn.execute("insert into bench_loaded default values")
    return url


def _t() -> float:
    return time.perf_counter()


# --- data -----------------------------------------------------------------------------------


def load_koeln(url: str) -> None:
    from quartier.sensors_sim.coverage_inputs import WorldConfig, coverage_world

    t = _t()
    w = coverage_world(WorldConfig(seed=1, addresses=150_000, speedtests=200_000,
                                   signals=1_000_000))  # fmt: skip
    print(f"  world generated in {_t() - t:.1f} s: {len(w.addresses):,} addresses, "
          f"{len(w.offers):,} offers, {len(w.speedtests):,} speed tests, "
          f"{len(w.signals):,} signal measurements")  # fmt: skip
    t = _t()
    with psycopg.connect(url) as conn:
        import_districts(conn)
        input_store.write_households(conn, w.addresses, "sim")
        input_store.write_offers(conn, w.offers, "sim")
        pseudonyms = Pseudonymizer(os.urandom(32))  # device keys are stored as pseudonyms
        input_store.write_speedtests(conn, w.speedtests, "sim", pseudonyms)
        input_store.write_signals(conn, w.signals, "sim", pseudonyms)
        conn.commit()
    _analyze_tables(url)
    print(f"  loaded into PostgreSQL in {_t() - t:.1f} s")


def _analyze_tables(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze household, broadband_offer, speedtest, mobile_measurement")


def state_frames(seed: int = 3) -> dict[str, Any]:
    """A synthetic Bundesland in EPSG:3035 (an NRW-sized box): towns of Gaussian clusters."""
    rng = np.random.default_rng(seed)
    x0, y0 = 4_000_000.0, 3_050_000.0
    w_m, h_m = 200_000.0, 200_000.0  # 2000 x 2000 cells, about 3.4 M with data
    n_addr, n_sig, n_tests = 4_000_000, 10_000_000, 1_000_000
    towns = 1200
    tx, ty = rng.uniform(x0, x0 + w_m, towns), rng.uniform(y0, y0 + h_m, towns)
    size = rng.pareto(1.2, towns) + 1
    t = rng.choice(towns, n_addr, p=size / size.sum())
    ax = np.clip(tx[t] + rng.normal(0, 400 + 60 * np.sqrt(size[t]), n_addr), x0, x0 + w_m - 1)
    ay = np.clip(ty[t] + rng.normal(0, 400 + 60 * np.sqrt(size[t]), n_addr), y0, y0 + h_m - 1)
    hh = rng.geometric(0.45, n_addr)
    # supply: a smooth gigabit field around towns; VDSL falling with distance from the centre
    d_town = np.hypot(ax - tx[t], ay - ty[t])
    gig = rng.random(n_addr) < np.clip(0.9 - d_town / 3000, 0.05, 0.95)
    vdsl = np.select([d_town < 500, d_town < 1500, d_town < 3000], [250, 100, 50], 16)
    tech = np.where(vdsl >= 30, "vdsl", "adsl")
    offers = pd.DataFrame({
        "x": np.concatenate([ax, ax[gig]]), "y": np.concatenate([ay, ay[gig]]),
        "technology": np.concatenate([tech, np.full(int(gig.sum()), "ftth")]),
        "max_down_mbps": np.concatenate([vdsl, np.full(int(gig.sum()), 1000)]).astype(float),
        "max_up_mbps": np.concatenate([vdsl / 5, np.full(int(gig.sum()), 500)]).astype(float),
    })  # fmt: skip
    near = rng.random(n_sig) < 0.4  # the rest anywhere: roads, fields, forests
    si = rng.integers(0, n_addr, n_sig)
    sx = np.where(near, ax[si] + rng.normal(0, 80, n_sig), rng.uniform(x0, x0 + w_m, n_sig))
    sy = np.where(near, ay[si] + rng.normal(0, 80, n_sig), rng.uniform(y0, y0 + h_m, n_sig))
    ops = np.array(["Telekom", "Vodafone", "Telefónica", "1&1"])
    op = rng.choice(4, n_sig, p=[0.37, 0.3, 0.28, 0.05])
    d_sig = np.hypot(sx - tx[t[si]], sy - ty[t[si]])
    level = -85 - d_sig / 150 + rng.normal(0, 8, n_sig)
    techs = np.where(level > -100, "5G", np.where(level > -125, "4G", "2G"))
    signals = pd.DataFrame({
        "x": sx, "y": sy, "operator": ops[op], "technology": techs,
        "rsrp_dbm": np.where(techs == "2G", np.nan, np.clip(level, -150, -25)).round(1),
        "rssi_dbm": np.where(techs == "2G", np.clip(level + 20, -120, -30), np.nan).round(1),
    })  # fmt: skip
    ti = rng.integers(0, n_addr, n_tests)
    tests = pd.DataFrame({"x": ax[ti] + rng.normal(0, 5, n_tests),
                          "y": ay[ti] + rng.normal(0, 5, n_tests),
                          "download_mbps": rng.gamma(2, 60, n_tests).round(1)})  # fmt: skip
    seeds = np.column_stack([rng.uniform(x0, x0 + w_m, 400), rng.uniform(y0, y0 + h_m, 400)])
    vor = shapely.voronoi_polygons(shapely.multipoints(seeds),
                                   extend_to=shapely.box(x0, y0, x0 + w_m, y0 + h_m))  # fmt: skip
    polys = shapely.intersection(np.asarray(shapely.get_parts(vor)),
                                 shapely.box(x0, y0, x0 + w_m, y0 + h_m))  # fmt: skip
    districts = gpd.GeoDataFrame(
        {"code": [f"05{i:06d}" for i in range(len(polys))],
         "name": [f"Gemeinde {i}" for i in range(len(polys))]},
        geometry=polys, crs=grid.GRID_CRS,
    )  # fmt: skip
    households = pd.DataFrame({"x": ax, "y": ay, "households": hh})
    return {"households": households, "offers": offers, "signals": signals, "tests": tests,
            "districts": districts}  # fmt: skip


def _with_lonlat(frame: pd.DataFrame) -> pd.DataFrame:
    lon, lat = grid.from_grid_crs(frame["x"].to_numpy(), frame["y"].to_numpy())
    return frame.drop(columns=["x", "y"]).assign(lon=np.round(lon, 7), lat=np.round(lat, 7))


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_EWKB_POINT = np.dtype([("order", "u1"), ("type", "<u4"), ("srid", "<u4"), ("x", "<f8"),
                        ("y", "<f8")])  # fmt: skip
_PG_EPOCH_US = int(pd.Timestamp("2000-01-01", tz="UTC").value // 1000)


def _copy_fixed(conn: psycopg.Connection[Any], table: str,
                cols: list[tuple[str, Any, Any]]) -> int:  # fmt: skip
    """Binary COPY of rows whose fields all have a fixed width, as one numpy structured array
    (no Python per row). ``cols``: (name, wire dtype, values: an array, a scalar, or None for
    null in every row)."""
    n = max((len(v) for _, _, v in cols if isinstance(v, np.ndarray)), default=0)
    if n == 0:
        return 0
    fields: list[tuple[str, Any]] = [("_n", ">i2")]
    for name, dt, v in cols:
        fields.append((f"_l_{name}", ">i4"))
        if v is not None:
            fields.append((name, dt))
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["_n"] = len(cols)
    for name, dt, v in cols:
        rows[f"_l_{name}"] = -1 if v is None else np.dtype(dt).itemsize
        if v is not None:
            rows[name] = v
    stmt = f"copy {table} ({', '.join(c[0] for c in cols)}) from stdin (format binary)"
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        copy.write(_COPY_SIGNATURE)
        step = 1 << 20
        for lo in range(0, n, step):
            copy.write(rows[lo : lo + step].tobytes())
        copy.write(b"\xff\xff")
    return n


def _ewkb(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """EWKB points (SRID 4326) of EPSG:3035 ``x``, ``y``, at 7 decimals like the importers."""
    lon, lat = grid.from_grid_crs(x, y)
    pts = np.empty(len(x), dtype=_EWKB_POINT)
    pts["order"], pts["type"], pts["srid"] = 1, 0x20000001, 4326
    pts["x"], pts["y"] = np.round(lon, 7), np.round(lat, 7)
    return pts


def _cells_of(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.floor(x / 100) * 100).astype(np.int32), (np.floor(y / 100) * 100).astype(np.int32)


_LOAD_TABLES = ("household", "broadband_offer", "speedtest", "mobile_measurement")


def _bulk_mode(conn: psycopg.Connection[Any]) -> list[str]:
    """Make the input tables fast to fill: the generated cell columns become plain columns
    (filled from numpy, computed once, exactly ``floor(x / 100) * 100``) and every secondary
    index and unique constraint is dropped. Returns the statements that recreate them."""
    restore: list[str] = []
    for table in _LOAD_TABLES:
        rows = conn.execute(
            "select i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), c.conname,"
            " pg_get_constraintdef(c.oid) from pg_index i left join pg_constraint c"
            " on c.conindid = i.indexrelid and c.contype = 'u'"
            " where i.indrelid = %s::regclass and not i.indisprimary",
            (table,),
        ).fetchall()
        for index, indexdef, con, condef in rows:
            if con is not None:
                conn.execute(f"alter table {table} drop constraint {con}")
                restore.append(f"alter table {table} add constraint {con} {condef}")
            else:
                conn.execute(f"drop index {index}")
                restore.append(indexdef)
        conn.execute(f"alter table {table} alter column cell_e drop expression,"
                     " alter column cell_n drop expression")  # fmt: skip
    return restore


#: distinct devices of the Bundesland's speed tests and signal measurements: each row's device is
#: drawn at random, so a cell with 5 or more rows almost always has 5 distinct devices and passes
#: k-anonymity (``privacy.min_contributors``), as crowdsourced data from many phones would
STATE_TEST_DEVICES = 300_000
STATE_SIGNAL_DEVICES = 200_000


def _device_keys(rng: np.random.Generator, n: int, devices: int) -> np.ndarray:
    """``n`` device keys (16 hex digits, like stored pseudonyms) of ``devices`` distinct ones."""
    ids = rng.integers(0, 2**63, devices, dtype=np.int64)
    nibbles = (ids[:, None] >> np.arange(60, -4, -4, dtype=np.int64)) & 15
    hex_keys = np.frombuffer(b"0123456789abcdef", np.uint8)[nibbles].view("S16").ravel()
    return hex_keys[rng.integers(0, devices, n)]


def load_state(url: str) -> None:
    """Load the Bundesland by binary COPY built with numpy straight into the input tables (cells
    computed once in numpy, indexes built afterwards)."""
    t = _t()
    f = state_frames()
    print(
        f"  generated in {_t() - t:.1f} s: {len(f['households']):,} addresses, "
        f"{len(f['offers']):,} offers, {len(f['tests']):,} speed tests, "
        f"{len(f['signals']):,} signal measurements, {len(f['districts'])} Gemeinden"
    )
    t = _t()
    start_us = pd.Timestamp("2026-01-01", tz="UTC").value // 1000 - _PG_EPOCH_US
    src = ("source", "S9", b"synthetic")
    with psycopg.connect(url) as conn:
        d = f["districts"].to_crs(4326)
        multi = shapely.multipolygons(np.asarray(d.geometry.values).reshape(-1, 1))
        conn.cursor().executemany(
            "insert into district (level, code, name, geom)"
            " values ('stadtbezirk', %s, %s, ST_GeomFromWKB(%s, 4326))",
            [(c, n, shapely.to_wkb(g)) for c, n, g in zip(d["code"], d["name"], multi,
                                                         strict=True)],
        )  # fmt: skip
        restore = _bulk_mode(conn)
        conn.commit()

        def located(frame: pd.DataFrame) -> list[tuple[str, Any, Any]]:
            x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
            ce, cn = _cells_of(x, y)
            return [("geom", _EWKB_POINT, _ewkb(x, y)), ("cell_e", ">i4", ce),
                    ("cell_n", ">i4", cn)]  # fmt: skip

        h = f["households"]
        _copy_fixed(conn, "household", [src, ("households", ">i4", h["households"].to_numpy()),
                                        *located(h)])  # fmt: skip
        o = f["offers"]
        _copy_fixed(conn, "broadband_offer", [
            src, ("technology", "S4", o["technology"].to_numpy().astype("S4")),
            ("max_down_mbps", ">f4", o["max_down_mbps"].to_numpy()),
            ("max_up_mbps", ">f4", o["max_up_mbps"].to_numpy()), *located(o)])  # fmt: skip
        s = f["tests"]
        rng = np.random.default_rng(4)  # device keys: many phones, each measuring a few times
        _copy_fixed(conn, "speedtest", [
            src, ("device_key", "S16", _device_keys(rng, len(s), STATE_TEST_DEVICES)),
            ("measured_at", ">i8", start_us + np.arange(len(s), dtype=np.int64) * 1_000_000),
            ("download_mbps", ">f4", s["download_mbps"].to_numpy()), *located(s)])  # fmt: skip
        conn.commit()
        sig = f["signals"]
        ops = sig["operator"].to_numpy()
        techs = sig["technology"].to_numpy()
        at = start_us + np.arange(len(sig), dtype=np.int64) * 1_000
        sig_keys = _device_keys(rng, len(sig), STATE_SIGNAL_DEVICES)
        for op in np.unique(ops):
            for two_g in (False, True):
                sel = np.flatnonzero((ops == op) & ((techs == "2G") == two_g))
                part = sig.iloc[sel]
                level = "rssi_dbm" if two_g else "rsrp_dbm"
                op_bytes = str(op).encode()
                _copy_fixed(conn, "mobile_measurement", [
                    src, ("device_key", "S16", sig_keys[sel]), ("measured_at", ">i8", at[sel]),
                    ("technology", "S2", techs[sel].astype("S2")),
                    ("operator", f"S{len(op_bytes)}", op_bytes),
                    (level, ">f4", part[level].to_numpy()), *located(part)])  # fmt: skip
                conn.commit()
        print(f"  copied in {_t() - t:.1f} s")
        conn.execute("set maintenance_work_mem = '1GB'")
        for stmt in restore:
            conn.execute(stmt)
        conn.commit()
    _analyze_tables(url)
    print(f"  loaded into PostgreSQL in {_t() - t:.1f} s")


# --- the country case: generated tile by tile, analysed on a local Dask cluster ----------------


#: the country: a box of 600 × 600 km (36 M cells of 100 m, Germany's grid has about 36 M),
#: lower-left corner in EPSG:3035 metres; blocks of 10 km are both the generator's unit and the
#: default tile
COUNTRY_ORIGIN = (4_000_000, 2_700_000)
COUNTRY_BLOCKS = 60
BLOCK_M = 10_000


class CountryWorld:
    """A synthetic country like :func:`state_frames`' Bundesland (towns of Gaussian clusters,
    gigabit near town centres, VDSL falling with the distance, 40 % of the signal measurements
    near addresses), made one tile at a time: the towns of each 10 km block come from a seed of
    their own, and a tile is generated from the towns of its block and the 8 around it, keeping
    the points that fall inside. No step ever holds more than 3 × 3 blocks' towns, and a town
    that straddles a tile border is the same town on both sides. Picklable (a Dask
    :class:`~quartier.geo.distributed.TileSource`)."""

    def __init__(self, seed: int = 5) -> None:
        self.seed = seed

    def towns(self, br: int, bc: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Towns of block (row, column): x, y, size, seed."""
        if not (0 <= br < COUNTRY_BLOCKS and 0 <= bc < COUNTRY_BLOCKS):
            z = np.zeros(0)
            return z, z, z, z.astype(np.int64)
        rng = np.random.default_rng([self.seed, br, bc])
        n = rng.poisson(3.0)
        x0, y0 = COUNTRY_ORIGIN[0] + bc * BLOCK_M, COUNTRY_ORIGIN[1] + br * BLOCK_M
        x, y = rng.uniform(x0, x0 + BLOCK_M, n), rng.uniform(y0, y0 + BLOCK_M, n)
        size = np.minimum(rng.pareto(1.2, n) + 1, 60.0)
        seeds = rng.integers(0, 2**62, n)
        return x, y, size, seeds

    def load(self, tile: tuple[int, int], tile_cells: int) -> CoverageInputs:
        side = tile_cells * 100
        tx0, ty0 = tile[1] * side, tile[0] * side

        def inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return (x >= tx0) & (x < tx0 + side) & (y >= ty0) & (y < ty0 + side)

        b0r, b1r = (
            (ty0 - COUNTRY_ORIGIN[1]) // BLOCK_M,
            (ty0 + side - 1 - COUNTRY_ORIGIN[1]) // BLOCK_M,
        )
        b0c, b1c = (
            (tx0 - COUNTRY_ORIGIN[0]) // BLOCK_M,
            (tx0 + side - 1 - COUNTRY_ORIGIN[0]) // BLOCK_M,
        )
        hh, of, st, sg = [], [], [], []
        for br in range(b0r - 1, b1r + 2):
            for bc in range(b0c - 1, b1c + 2):
                for x, y, size, s in zip(*self.towns(br, bc), strict=True):
                    reach = 5 * (400 + 60 * np.sqrt(size))  # 5 σ of the town's spread
                    dx = max(tx0 - x, 0.0, x - tx0 - side)
                    dy = max(ty0 - y, 0.0, y - ty0 - side)
                    if np.hypot(dx, dy) <= reach:
                        self._town(float(x), float(y), float(size), int(s), inside, hh, of, st, sg)
        rng = np.random.default_rng([self.seed, 7, tile[0], tile[1]])
        n_far = int(25_000 * (side / BLOCK_M) ** 2)  # roads, fields, forests
        fx, fy = rng.uniform(tx0, tx0 + side, n_far), rng.uniform(ty0, ty0 + side, n_far)
        sg.append(self._signals(rng, fx, fy, np.full(n_far, 3000.0)))

        def cat(parts: list[pd.DataFrame]) -> pd.DataFrame:
            return pd.concat(parts, ignore_index=True)

        return CoverageInputs(cat(hh) if hh else _EMPTY_HH, cat(of) if of else _EMPTY_OF,
                              cat(st) if st else _EMPTY_ST, cat(sg))  # fmt: skip

    @staticmethod
    def _signals(
        rng: np.random.Generator, x: np.ndarray, y: np.ndarray, d: np.ndarray
    ) -> pd.DataFrame:
        n = len(x)
        level = -85 - d / 150 + rng.normal(0, 8, n)
        techs = np.where(level > -100, 3, np.where(level > -125, 2, 0)).astype(np.int8)
        return pd.DataFrame({
            "cell_e": (np.floor(x / 100) * 100).astype(np.int32),
            "cell_n": (np.floor(y / 100) * 100).astype(np.int32),
            "operator": pd.Categorical.from_codes(rng.choice(4, n, p=[0.37, 0.3, 0.28, 0.05]),
                                                  list(COUNTRY_OPERATORS)),
            "technology": pd.Categorical.from_codes(techs, ["2G", "3G", "4G", "5G"]),
            "signal_dbm": np.where(techs == 0, np.clip(level + 20, -120, -30),
                                   np.clip(level, -150, -25)).astype(np.float32),
        })  # fmt: skip

    def _town(self, x: float, y: float, size: float, seed: int, inside: Any,
              hh: list[pd.DataFrame], of: list[pd.DataFrame], st: list[pd.DataFrame],
              sg: list[pd.DataFrame]) -> None:  # fmt: skip
        rng = np.random.default_rng(seed)
        n = int(size * 150)
        sd = 400 + 60 * np.sqrt(size)
        ax, ay = x + rng.normal(0, sd, n), y + rng.normal(0, sd, n)
        h = rng.geometric(0.45, n)
        d = np.hypot(ax - x, ay - y)
        gig = rng.random(n) < np.clip(0.9 - d / 3000, 0.05, 0.95)
        vdsl = np.select([d < 500, d < 1500, d < 3000], [250.0, 100.0, 50.0], 16.0)
        n_sig = int(n * 1.0)
        si = rng.integers(0, n, n_sig)
        sx, sy = ax[si] + rng.normal(0, 80, n_sig), ay[si] + rng.normal(0, 80, n_sig)
        sig = self._signals(rng, sx, sy, np.hypot(sx - x, sy - y))
        n_t = n // 4
        ti = rng.integers(0, n, n_t)
        tx, ty = ax[ti] + rng.normal(0, 5, n_t), ay[ti] + rng.normal(0, 5, n_t)
        down = rng.gamma(2, 60, n_t).round(1)
        keep = inside(ax, ay)
        if keep.any():
            ce = (np.floor(ax / 100) * 100).astype(np.int32)
            cn = (np.floor(ay / 100) * 100).astype(np.int32)
            hh.append(pd.DataFrame({"cell_e": ce[keep], "cell_n": cn[keep], "households": h[keep]}))
            g = keep & gig
            tech = np.where(vdsl >= 30, 3, 4)  # vdsl, adsl (FIXED_TECHNOLOGIES)
            extra = int(g.sum())
            of.append(pd.DataFrame({
                "cell_e": np.concatenate([ce[keep], ce[g]]),
                "cell_n": np.concatenate([cn[keep], cn[g]]),
                "technology": pd.Categorical.from_codes(
                    np.concatenate([tech[keep], np.zeros(extra, np.int64)]), FIXED_TECHNOLOGIES),
                "max_down_mbps": np.concatenate([vdsl[keep], np.full(extra, 1000.0)])
                .astype(np.float32),
                "max_up_mbps": np.concatenate([vdsl[keep] / 5, np.full(extra, 500.0)])
                .astype(np.float32),
            }))  # fmt: skip
        k = inside(sx, sy)
        if k.any():
            sg.append(sig[k])
        k = inside(tx, ty)
        if k.any():
            st.append(pd.DataFrame({"cell_e": (np.floor(tx[k] / 100) * 100).astype(np.int32),
                                    "cell_n": (np.floor(ty[k] / 100) * 100).astype(np.int32),
                                    "download_mbps": down[k].astype(np.float32)}))  # fmt: skip


COUNTRY_OPERATORS = ("1&1", "Telefónica", "Telekom", "Vodafone")  # sorted, as analyse orders them
_EMPTY_HH = pd.DataFrame({"cell_e": np.zeros(0, np.int32), "cell_n": np.zeros(0, np.int32),
                          "households": np.zeros(0, np.int64)})  # fmt: skip
_EMPTY_OF = pd.DataFrame({"cell_e": np.zeros(0, np.int32), "cell_n": np.zeros(0, np.int32),
                          "technology": pd.Categorical.from_codes(np.zeros(0, np.int8),
                                                                  FIXED_TECHNOLOGIES),
                          "max_down_mbps": np.zeros(0, np.float32),
                          "max_up_mbps": np.zeros(0, np.float32)})  # fmt: skip
_EMPTY_ST = pd.DataFrame({"cell_e": np.zeros(0, np.int32), "cell_n": np.zeros(0, np.int32),
                          "download_mbps": np.zeros(0, np.float32)})  # fmt: skip


#: the indexes the analysis on Dask reads (band reads by cell, the operators by a loose index
#: scan); with ``defer`` the loader builds only these before the run, the others after it
_ANALYSIS_INDEXES = ("_cell_idx", "mobile_measurement_operator_idx")


def load_country(url: str, blocks: list[tuple[int, int]], procs: int = 2,
                 defer: bool = False) -> None:  # fmt: skip
    """The ``blocks`` (10 km, see :class:`CountryWorld`) of the country generated one at a time
    straight into the input tables (binary COPY built with numpy, cells computed once, indexes
    built afterwards, as :func:`load_state`): the generator never holds more than one block's
    rows. ``procs`` processes each generate and COPY a contiguous range of the blocks (the rows
    do not depend on ``procs``). Points at their cell's centre; speed tests and signal
    measurements from distinct devices drawn at random per block from one pool of device keys
    (k-anonymity as for the Bundesland). With ``defer`` only the indexes the analysis reads are
    built now; the others are kept in ``bench_deferred_ddl`` for :func:`build_deferred`."""
    t = _t()
    with psycopg.connect(url) as conn:
        d = country_districts(blocks).to_crs(4326)
        multi = shapely.multipolygons(np.asarray(d.geometry.values).reshape(-1, 1))
        conn.cursor().executemany(
            "insert into district (level, code, name, geom)"
            " values ('stadtbezirk', %s, %s, ST_GeomFromWKB(%s, 4326))",
            [(c, n, shapely.to_wkb(g)) for c, n, g in zip(d["code"], d["name"], multi,
                                                         strict=True)],
        )  # fmt: skip
        restore = _bulk_mode(conn)
        conn.commit()
    indexed = list(enumerate(blocks))
    procs = max(1, min(procs, len(blocks)))
    chunks = [indexed[i * len(indexed) // procs : (i + 1) * len(indexed) // procs]
              for i in range(procs)]  # fmt: skip
    if procs == 1:
        counts = [_load_country_blocks(url, chunks[0], len(blocks), t)]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("fork")) as ex:
            futures = [ex.submit(_load_country_blocks, url, c, len(blocks), t) for c in chunks]
            counts = [f.result() for f in futures]
    rows = {n: sum(c[n] for c in counts) for n in counts[0]}
    print(f"  {len(blocks)} blocks generated and copied by {procs} processes in {_t() - t:.0f} s: "
          + ", ".join(f"{v:,} {n}" for n, v in rows.items()), flush=True)  # fmt: skip
    now = [s for s in restore if any(i in s for i in _ANALYSIS_INDEXES)] if defer else restore
    later = [s for s in restore if s not in now]
    _build_indexes(url, now)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table bench_deferred_ddl (stmt text not null)")
        for stmt in later:
            conn.execute("insert into bench_deferred_ddl values (%s)", (stmt,))
    _analyze_tables(url)
    print(f"  loaded into PostgreSQL in {_t() - t:.1f} s"
          + (f" ({len(later)} indexes and constraints the analysis does not read deferred)"
             if later else ""), flush=True)  # fmt: skip


def _build_indexes(url: str, stmts: list[str]) -> None:
    """The ``stmts`` (index and unique constraint definitions), each timed."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("set maintenance_work_mem = '512MB'")
        for stmt in stmts:
            t = _t()
            conn.execute(stmt)
            print(f"  {_t() - t:7.1f} s  {stmt[:110]}", flush=True)


def build_deferred(url: str) -> None:
    """Build the indexes and constraints :func:`load_country` deferred (none: nothing to do)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("select to_regclass('bench_deferred_ddl')").fetchone() == (None,):
            return
        stmts = [r[0] for r in conn.execute("select stmt from bench_deferred_ddl")]
    if stmts:
        t = _t()
        print(f"  building the {len(stmts)} deferred indexes and constraints …", flush=True)
        _build_indexes(url, stmts)
        print(f"  deferred indexes built in {_t() - t:.1f} s", flush=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("delete from bench_deferred_ddl")


#: the pools of device keys the country's rows draw from (one per kind, fixed seed)
_COUNTRY_KEYS: dict[int, np.ndarray] = {}


def _key_pool(devices: int) -> np.ndarray:
    """``devices`` distinct device keys (16 hex digits, like stored pseudonyms)."""
    if devices not in _COUNTRY_KEYS:
        ids = np.unique(np.random.default_rng([5, 13, devices]).integers(0, 2**63, devices))
        nibbles = (ids[:, None] >> np.arange(60, -4, -4, dtype=np.int64)) & 15
        _COUNTRY_KEYS[devices] = (np.frombuffer(b"0123456789abcdef", np.uint8)[nibbles]
                                  .view("S16").ravel())  # fmt: skip
    return _COUNTRY_KEYS[devices]


def _load_country_blocks(url: str, blocks: list[tuple[int, tuple[int, int]]], total: int,
                         t: float) -> dict[str, int]:  # fmt: skip
    """Generate and COPY the ``blocks`` (each with its index ``k`` in the whole list, which
    fixes its rows' times): one of :func:`load_country`'s processes."""
    world = CountryWorld()
    start_us = pd.Timestamp("2026-01-01", tz="UTC").value // 1000 - _PG_EPOCH_US
    src = ("source", "S9", b"synthetic")
    rows = {"households": 0, "offers": 0, "speedtests": 0, "signals": 0}
    r0, c0 = COUNTRY_ORIGIN[1] // BLOCK_M, COUNTRY_ORIGIN[0] // BLOCK_M
    test_keys, signal_keys = _key_pool(STATE_TEST_DEVICES), _key_pool(STATE_SIGNAL_DEVICES)

    def located(frame: pd.DataFrame) -> list[tuple[str, Any, Any]]:
        ce, cn = frame["cell_e"].to_numpy(), frame["cell_n"].to_numpy()
        return [("geom", _EWKB_POINT, _ewkb(ce + 50.0, cn + 50.0)), ("cell_e", ">i4", ce),
                ("cell_n", ">i4", cn)]  # fmt: skip

    with psycopg.connect(url) as conn:
        for done, (k, (br, bc)) in enumerate(blocks, start=1):
            inp = world.load((r0 + br, c0 + bc), BLOCK_M // 100)
            rng = np.random.default_rng([world.seed, 11, br, bc])
            at0 = start_us + k * 10_000_000_000
            h, o, s, sig = inp.households, inp.offers, inp.speedtests, inp.signals
            _copy_fixed(conn, "household", [src, ("households", ">i4", h["households"].to_numpy()),
                                            *located(h)])  # fmt: skip
            _copy_fixed(conn, "broadband_offer", [
                src, ("technology", "S4", o["technology"].astype(str).to_numpy().astype("S4")),
                ("max_down_mbps", ">f4", o["max_down_mbps"].to_numpy()),
                ("max_up_mbps", ">f4", o["max_up_mbps"].to_numpy()), *located(o)])  # fmt: skip
            _copy_fixed(conn, "speedtest", [
                src, ("device_key", "S16", test_keys[rng.integers(0, len(test_keys), len(s))]),
                ("measured_at", ">i8", at0 + np.arange(len(s), dtype=np.int64) * 1_000_000),
                ("download_mbps", ">f4", s["download_mbps"].to_numpy()), *located(s)])  # fmt: skip
            ops = sig["operator"].astype(str).to_numpy()
            techs = sig["technology"].astype(str).to_numpy()
            at = at0 + np.arange(len(sig), dtype=np.int64) * 1_000
            keys = signal_keys[rng.integers(0, len(signal_keys), len(sig))]
            for op in np.unique(ops):
                for two_g in (False, True):
                    sel = np.flatnonzero((ops == op) & ((techs == "2G") == two_g))
                    if not len(sel):
                        continue
                    part = sig.iloc[sel]
                    op_bytes = str(op).encode()
                    _copy_fixed(conn, "mobile_measurement", [
                        src, ("device_key", "S16", keys[sel]), ("measured_at", ">i8", at[sel]),
                        ("technology", "S2", techs[sel].astype("S2")),
                        ("operator", f"S{len(op_bytes)}", op_bytes),
                        ("rssi_dbm" if two_g else "rsrp_dbm", ">f4",
                         part["signal_dbm"].to_numpy()), *located(part)])  # fmt: skip
            conn.commit()
            for name, frame in zip(rows, (h, o, s, sig), strict=True):
                rows[name] += len(frame)
            if done % 50 == 0 or done == len(blocks):
                print(f"  [pid {os.getpid()}] {done} of {len(blocks)} blocks (block {k + 1} of "
                      f"{total}) in {_t() - t:.0f} s, load {os.getloadavg()[0]:.1f}: "
                      + ", ".join(f"{v:,} {n}" for n, v in rows.items()), flush=True)  # fmt: skip
    return rows


def country_districts(blocks: list[tuple[int, int]], seed: int = 5) -> gpd.GeoDataFrame:
    """Gemeinden: 3 Voronoi cells per 10 km block (about 10,800 in the country, Germany has
    10,750), for the ``blocks`` analysed."""
    pts = []
    for br, bc in blocks:
        r = np.random.default_rng([seed, 99, br, bc])
        x0, y0 = COUNTRY_ORIGIN[0] + bc * BLOCK_M, COUNTRY_ORIGIN[1] + br * BLOCK_M
        pts.append(
            np.column_stack([r.uniform(x0, x0 + BLOCK_M, 3), r.uniform(y0, y0 + BLOCK_M, 3)])
        )
    seeds = np.concatenate(pts)
    rows = [b[0] for b in blocks]
    cols = [b[1] for b in blocks]
    box = shapely.box(COUNTRY_ORIGIN[0] + min(cols) * BLOCK_M,
                      COUNTRY_ORIGIN[1] + min(rows) * BLOCK_M,
                      COUNTRY_ORIGIN[0] + (max(cols) + 1) * BLOCK_M,
                      COUNTRY_ORIGIN[1] + (max(rows) + 1) * BLOCK_M)  # fmt: skip
    vor = shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=box)
    polys = shapely.intersection(np.asarray(shapely.get_parts(vor)), box)
    return gpd.GeoDataFrame({"code": [f"{i:08d}" for i in range(len(polys))],
                             "name": [f"Gemeinde {i}" for i in range(len(polys))]},
                            geometry=polys, crs=grid.GRID_CRS)  # fmt: skip


# --- the measured runs --------------------------------------------------------------------------


def end_to_end(url: str) -> dict[str, float]:
    """Read inputs, analyse, store, commit; with the time of each part."""
    with psycopg.connect(url) as conn:
        t0 = _t()
        inputs = input_store.load_inputs(conn, conninfo=url)  # signals over a second connection
        t1 = _t()
        result = analyse(inputs)
        t2 = _t()
        run_store.save_result(conn, result, inputs.districts)
        conn.commit()
        t3 = _t()
    return {"read": t1 - t0, "compute": t2 - t1, "write": t3 - t2, "total": t3 - t0,
            "cells": float(len(result.cells)), "gaps": float(len(result.gaps))}  # fmt: skip


def naive(inputs: CoverageInputs, params: AnalysisParams) -> dict[str, Any]:
    """The straightforward geopandas version of the same analysis."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    profile = params.profile

    def points(frame: pd.DataFrame) -> gpd.GeoDataFrame:
        return gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(frame["lon"], frame["lat"]),
                                crs=4326).to_crs(grid.GRID_CRS)  # fmt: skip

    hh = points(inputs.households)
    of = points(inputs.offers)
    st = points(inputs.speedtests)
    sg = points(inputs.signals)
    x0, y0, x1, y1 = np.array([g.total_bounds for g in (hh, of, st, sg)]).T
    e0, n0 = np.floor(x0.min() / 100) * 100, np.floor(y0.min() / 100) * 100
    ee, nn = np.meshgrid(np.arange(e0, x1.max() + 100, 100), np.arange(n0, y1.max() + 100, 100))
    cells = gpd.GeoDataFrame({"e": ee.ravel(), "n": nn.ravel()},
                             geometry=shapely.box(ee.ravel(), nn.ravel(), ee.ravel() + 100,
                                                  nn.ravel() + 100), crs=grid.GRID_CRS)  # fmt: skip
    cells["cell"] = np.arange(len(cells))

    def join(g: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        return gpd.sjoin(g, cells[["cell", "geometry"]], predicate="within", how="inner")

    hh_j, of_j, st_j, sg_j = join(hh), join(of), join(st), join(sg)
    per = pd.DataFrame(index=pd.Index(sorted(set(hh_j["cell"]) | set(of_j["cell"])
                                             | set(st_j["cell"]) | set(sg_j["cell"]))))  # fmt: skip
    per["households"] = hh_j.groupby("cell")["households"].sum()
    per["households"] = per["households"].fillna(0)
    crits = profile.criteria()
    for i, c in enumerate(crits):
        ok = of_j[(of_j["max_down_mbps"] >= c.down_mbps)
                  & (of_j["max_up_mbps"].fillna(0) >= c.up_mbps)]  # fmt: skip
        per[f"c{i}"] = per.index.isin(ok["cell"])
    cls = np.full(len(per), len(profile.classes) - 1)
    for ci in range(len(profile.classes) - 2, -1, -1):
        leaves = np.zeros(len(per), dtype=bool)
        for c in profile.classes[ci].exit:
            leaves |= per[f"c{crits.index(c)}"].to_numpy()
        cls[~leaves] = ci
    per["class"] = cls
    per["max_down"] = of_j.groupby("cell")["max_down_mbps"].max()
    per["gigabit"] = per["max_down"] >= profile.gigabit_mbps
    med = st_j.groupby("cell")["download_mbps"].agg(["median", "size"])
    per["measured"] = med["median"].where(med["size"] >= params.min_tests)
    per["ratio"] = per["measured"] / per["max_down"]
    thr = sg_j["technology"].map(params.signal_threshold_dbm)
    sg_j["good"] = sg_j["signal_dbm"] >= thr
    cov = sg_j.groupby(["cell", "operator", "technology"], observed=True)["good"].mean()
    covered = cov[cov >= params.signal_min_share].reset_index()
    bb = covered[covered["technology"].isin(["4G", "5G"])].groupby("cell")["operator"].nunique()
    per["ops_4g"] = bb.reindex(per.index).fillna(0)
    per["n_signal"] = sg_j.groupby("cell").size().reindex(per.index).fillna(0)
    cg = cells.loc[per.index]
    cents = gpd.GeoDataFrame(per.assign(cell=per.index), geometry=cg.geometry.centroid.values,
                             crs=grid.GRID_CRS)  # fmt: skip
    dist = inputs.districts.to_crs(grid.GRID_CRS) if inputs.districts is not None else None
    if dist is not None:
        jd = gpd.sjoin(cents, dist[["code", "geometry"]], predicate="intersects", how="left")
        jd = jd[~jd.index.duplicated()]
        per["district"] = jd["code"]
    gap = per[(per["households"] > 0)
              & per["class"].isin([i for i, c in enumerate(profile.classes) if c.gap])]  # fmt: skip
    gap_cells = gpd.GeoDataFrame(gap.assign(cell=gap.index), geometry=cg.loc[gap.index].geometry
                                 .values, crs=grid.GRID_CRS)  # fmt: skip
    pairs = gpd.sjoin(gap_cells[["geometry"]], gap_cells[["geometry"]], predicate="touches")
    pos = {c: i for i, c in enumerate(gap_cells.index)}
    a = np.array([pos[i] for i in pairs.index])
    b = np.array([pos[i] for i in pairs["index_right"]]) if len(pairs) else np.array([], int)
    # "touches" also joins corner neighbours: keep edge neighbours (4-connectivity)
    shared = shapely.length(shapely.intersection(gap_cells.geometry.values[a],
                                                 gap_cells.geometry.values[b])) > 0 if len(a) \
        else np.array([], bool)  # fmt: skip
    g = coo_matrix((np.ones(int(shared.sum())), (a[shared], b[shared])),
                   shape=(len(gap_cells), len(gap_cells)))  # fmt: skip
    _, labels = connected_components(g, directed=False)
    gap_cells["cluster"] = labels
    clusters = gap_cells[["cluster", "households", "geometry"]].dissolve(
        by="cluster", aggfunc={"households": "sum"}
    )
    gig = gpd.GeoDataFrame(geometry=cg.loc[per.index[per["gigabit"].fillna(False)]].geometry
                           .values, crs=grid.GRID_CRS)  # fmt: skip
    near = gpd.sjoin_nearest(clusters, gig, distance_col="distance_gigabit_m")
    near = near[~near.index.duplicated()]
    clusters["distance_gigabit_m"] = near["distance_gigabit_m"]
    stats = per.groupby(["district", "class"])["households"].sum().unstack(fill_value=0)
    return {"cells": len(per), "clusters": len(clusters), "stats": stats}


def run_state_child(url: str, repeat: int, e2e_only: bool = False) -> dict[str, Any]:
    """The Bundesland end to end in this (child) process; peak RSS included."""
    runs = [end_to_end(url) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["total"])
    if e2e_only:
        return {"best": best, "runs": [r["total"] for r in runs], "phases": runs,
                "peak_rss_bytes": peak_rss_bytes()}  # fmt: skip
    with psycopg.connect(url) as conn:
        inputs = input_store.load_inputs(conn)
    t = _t()
    analyse(inputs)
    compute = _t() - t
    return {"best": best, "runs": [r["total"] for r in runs], "phases": runs,
            "compute_only": compute, "peak_rss_bytes": peak_rss_bytes()}  # fmt: skip


def peak_rss_bytes() -> int:
    """This process's peak RSS: ``VmHWM``. Not ``ru_maxrss``: Linux carries that across
    ``execve``, so a child started by a parent holding the generated Bundesland (4 GB) or the
    Köln case reported the parent's size, not its own."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # pragma: no cover


def bench_koeln(url: str, repeat: int) -> dict[str, Any]:
    runs = [end_to_end(url) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["total"])
    with psycopg.connect(url) as conn:
        inputs = input_store.load_inputs(conn)
    computes = []
    for _ in range(repeat):
        t = _t()
        res = analyse(inputs)
        computes.append(_t() - t)
    # the baseline reads the same inputs as lon/lat points (cells of the vectorised run)
    lon_inputs = _as_lonlat(inputs)
    t = _t()
    vec_lonlat = analyse(lon_inputs)
    vec_lonlat_s = _t() - t
    t = _t()
    base = naive(lon_inputs, AnalysisParams())
    naive_s = _t() - t
    print(f"  cells {len(res.cells):,} (baseline {base['cells']:,}), clusters {len(res.gaps):,} "
          f"(baseline {base['clusters']:,})")  # fmt: skip
    return {"best": best, "runs": [r["total"] for r in runs], "phases": runs,
            "compute": min(computes), "computes": computes,
            "compute_lonlat": vec_lonlat_s, "naive": naive_s, "cells": len(res.cells),
            "gaps": len(res.gaps), "vec_lonlat_cells": len(vec_lonlat.cells)}  # fmt: skip


def _as_lonlat(inputs: CoverageInputs) -> CoverageInputs:
    """The inputs located by lon/lat of a point inside their cell (as raw data would be)."""
    rng = np.random.default_rng(0)

    def conv(frame: pd.DataFrame) -> pd.DataFrame:
        x = frame["cell_e"].to_numpy(float) + rng.uniform(1, 99, len(frame))
        y = frame["cell_n"].to_numpy(float) + rng.uniform(1, 99, len(frame))
        lon, lat = grid.from_grid_crs(x, y)
        return frame.drop(columns=["cell_e", "cell_n"]).assign(lon=lon, lat=lat)

    return CoverageInputs(conv(inputs.households), conv(inputs.offers), conv(inputs.speedtests),
                          conv(inputs.signals), inputs.districts)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", choices=["koeln", "state", "both", "country"], default="both")
    ap.add_argument("--workers", type=int, default=2, help="Dask workers (country, state-dask)")
    ap.add_argument("--tile-km", type=int, default=None,
                    help="tile side on Dask (default: the analysis' default, "
                         "quartier.geo.distributed.TILE_CELLS, 50 km)")  # fmt: skip
    ap.add_argument(
        "--fraction",
        type=int,
        default=16,
        help="country: generate into the store and analyse a square of about 1/N of it "
        "(1: all), in one process and on Dask, and project the whole from the cost a tile",
    )
    ap.add_argument("--dask", action="store_true",
                    help="state: run it in one process and on a local Dask cluster in turns, "
                         "--repeat times each, and compare")  # fmt: skip
    ap.add_argument("--fsync-off", dest="fsync_on", action="store_false",
                    help="keep the local PostgreSQL's fsync off for the measured runs (default: "
                         "fsync, synchronous_commit and full_page_writes on; loading is "
                         "always without)")  # fmt: skip
    ap.add_argument("--e2e-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cluster", action="store_true",
                    help="state --dask: first order the input tables by cell (CLUSTER on the "
                         "(cell_n, cell_e) index, once per kept database)")  # fmt: skip
    ap.add_argument("--read-cost", action="store_true",
                    help="state: only the CPU of reading the inputs whole, by bands of tiles "
                         "and by ranges of blocks")  # fmt: skip
    ap.add_argument("--dask-idle", action="store_true",
                    help="only the CPU an idle local Dask cluster costs in 30 s")  # fmt: skip
    ap.add_argument("--load-only", action="store_true",
                    help="country, state: only generate and load into the kept database "
                         "(--data-dir), for a later run")  # fmt: skip
    ap.add_argument("--load-procs", type=int, default=2,
                    help="country: processes that generate and COPY the blocks")  # fmt: skip
    ap.add_argument("--defer-indexes", action="store_true",
                    help="country: build only the indexes the analysis reads before the run, "
                         "the others after it")  # fmt: skip
    ap.add_argument("--no-single", action="store_true",
                    help="country: the Dask runs only (the whole country does not fit one "
                         "process)")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--state-child", help=argparse.SUPPRESS)
    ap.add_argument("--state-dask-child", help=argparse.SUPPRESS)
    ap.add_argument(
        "--data-dir", type=Path,
        help="keep PostgreSQL and the loaded databases here and reuse them in later runs "
             "(stopped, not deleted, at the end)",
    )  # fmt: skip
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the finally: stop PostgreSQL
    if args.state_child:
        print(json.dumps(run_state_child(args.state_child, args.repeat, args.e2e_only)))
        return
    if args.state_dask_child:
        print(json.dumps(bench_state_dask(args.state_dask_child, args.workers, args.tile_km)))
        return
    if args.dask_idle:
        dask_idle(args.workers)
        return
    admin = os.environ.get("QUARTIER_TEST_DATABASE_URL")
    local = None
    state_dir = None
    keep = args.data_dir is not None
    if keep:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(args.data_dir, 0o755)
        local = LocalServices(args.data_dir, fast_unsafe=True)
        admin = local.up().database_url
    elif not admin:
        state_dir = Path(tempfile.mkdtemp(prefix="quartier-bench-cov-"))
        os.chmod(state_dir, 0o755)
        local = LocalServices(state_dir, fast_unsafe=True)
        admin = local.up().database_url
    assert admin is not None

    # the local PostgreSQL loads without fsync; the measured runs have it on (--fsync-off: not)
    switch = local is not None and args.fsync_on

    def database(case: str, load: Callable[[str], None]) -> str:
        t = _t()
        if switch:
            durability(admin, on=False)
        if keep:
            url = kept_db(admin, case, load)
        else:
            url = fresh_db(admin)
            load(url)
        print(f"  ready in {_t() - t:.1f} s")
        durability(admin, on=True if switch else None)
        return url

    try:
        if args.case in ("koeln", "both"):
            print("Köln: loading …")
            k = bench_koeln(database("koeln", load_koeln), args.repeat)
            b = k["best"]
            print(f"Köln end to end (best of {args.repeat}): {b['total']:.2f} s "
                  f"(read {b['read']:.2f}, compute {b['compute']:.2f}, write {b['write']:.2f}); "
                  f"all runs {', '.join(f'{r:.2f}' for r in k['runs'])}")  # fmt: skip
            print(f"Köln computation alone: {k['compute']:.2f} s (inputs by cell); "
                  f"from lon/lat points: {k['compute_lonlat']:.2f} s")  # fmt: skip
            print(f"Köln geopandas baseline: {k['naive']:.2f} s; speed-up "
                  f"{k['naive'] / k['compute_lonlat']:.1f}x (same lon/lat inputs), "
                  f"{k['naive'] / k['compute']:.1f}x (vs cell inputs)")  # fmt: skip
            for i, r in enumerate(k["phases"], start=1):
                print(f"  run {i}: {r['total']:.2f} s (read {r['read']:.2f}, compute "
                      f"{r['compute']:.2f}, write {r['write']:.2f})")  # fmt: skip
            print(f"  computation alone, all runs: {', '.join(f'{c:.2f}' for c in k['computes'])}")
            _verdict("Köln end to end ≤ 3 s", b["total"], TARGETS["koeln_e2e"])
            _verdict("Köln computation ≤ 1 s", k["compute"], TARGETS["koeln_compute"])
            ratio = k["naive"] / k["compute_lonlat"]
            print(f"  ≥ 10x baseline: {'met' if ratio >= 10 else 'NOT met'} ({ratio:.1f}x)")
        if args.case in ("state", "both"):
            print("Bundesland: loading …")
            url = database("state", load_state)
            if args.load_only:
                return
        if args.case == "state" and args.read_cost:
            read_cost(url)
        elif args.case == "state" and args.dask:
            if args.cluster:
                if switch:
                    durability(admin, on=False)
                cluster_inputs(url)
                durability(admin, on=True if switch else None)
            compare_state_dask(url, args.repeat, args.workers, args.tile_km)
        elif args.case in ("state", "both"):
            out = subprocess.run(
                [sys.executable, __file__, "--state-child", url, "--repeat",
                 str(max(1, args.repeat - 1))], check=True, capture_output=True, text=True,
            )  # fmt: skip
            s = json.loads(out.stdout.strip().splitlines()[-1])
            b = s["best"]
            print(
                f"Bundesland end to end (best): {b['total']:.1f} s (read {b['read']:.1f}, "
                f"compute {b['compute']:.1f}, write {b['write']:.1f}); {int(b['cells']):,} cells, "
                f"{int(b['gaps']):,} gap clusters"
            )
            for i, r in enumerate(s["phases"], start=1):
                print(f"  run {i}: {r['total']:.1f} s (read {r['read']:.1f}, compute "
                      f"{r['compute']:.1f}, write {r['write']:.1f})")  # fmt: skip
            rss = s["peak_rss_bytes"]
            print(
                f"Bundesland computation alone: {s['compute_only']:.1f} s; "
                f"peak RSS {rss:,} bytes ({rss / 1e9:.2f} GB, {rss / 2**30:.2f} GiB)"
            )
            print(f"  load average (1, 5, 15 min): {os.getloadavg()}")
            _verdict("Bundesland end to end ≤ 60 s", b["total"], TARGETS["state_e2e"])
            _verdict("Bundesland memory ≤ 2 GB (10^9 bytes)", rss / 1e9, TARGETS["state_mem_gb"])
        if args.case == "country":
            side = max(1, round(COUNTRY_BLOCKS / max(args.fraction, 1) ** 0.5))
            blocks = [(r, c) for r in range(side) for c in range(side)]
            share = len(blocks) / COUNTRY_BLOCKS**2
            print(
                f"Country: {side * 10} × {side * 10} km ({len(blocks):,} blocks of 10 km, "
                f"{share:.4f} of the country), generated block by block into the store …"
            )
            url = database(f"country_1of{args.fraction}",
                           lambda u: load_country(u, blocks, args.load_procs,
                                                  args.defer_indexes))  # fmt: skip
            if args.load_only:
                build_deferred(url)
                return
            km = args.tile_km or 50
            _, dasks = compare_state_dask(url, args.repeat, args.workers, args.tile_km,
                                          label=f"Country 1/{args.fraction}",
                                          single=not args.no_single)  # fmt: skip
            d = min(dasks, key=lambda x: x["seconds"])
            tiles = d["tiles"]
            full, eu = (600 / km) ** 2, 4_230_000 / km**2  # EU-27: 4.23 M km²
            cpu_tile = (d["worker_cpu"] + d["pg_cpu"]) / tiles
            wall_tile = d["seconds"] / tiles
            print(f"  per tile ({tiles} tiles of {km} km, the best Dask run): wall "
                  f"{wall_tile:.1f} s on {args.workers} workers, CPU {cpu_tile:.1f} s (workers "
                  f"{d['worker_cpu'] / tiles:.1f} + PostgreSQL {d['pg_cpu'] / tiles:.1f}); client "
                  f"CPU {d['client_cpu'] / tiles:.2f} s")  # fmt: skip
            print(f"  PROJECTION, the whole country ({full:.0f} tiles) on {args.workers} workers: "
                  f"{full * wall_tile / 60:.0f} min at this run's wall time a tile, "
                  f"{full * cpu_tile / args.workers / 60:.0f} min with one free core per worker "
                  f"and its PostgreSQL backend")  # fmt: skip
            for n in (2, 16, 64, 256):
                print(f"  PROJECTION, EU-27 ({eu:,.0f} tiles) on {n} workers with a core each "
                      f"(and PostgreSQL that keeps up): {eu * cpu_tile / n / 60:.1f} min; client "
                      f"CPU {eu * d['client_cpu'] / tiles / 60:.1f} min")  # fmt: skip
            _verdict("worker peak ≤ 4 GB (10^9 bytes)",
                     max(max(x["peaks"]) for x in dasks) / 1e9, 4.0)  # fmt: skip
            print(f"  load average now: {os.getloadavg()}", flush=True)
            build_deferred(url)
    finally:
        if local is not None:
            local.down()
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)


def _worker_peaks(client: Any) -> list[int]:
    """Peak RSS (VmHWM) of each Dask worker process."""
    return sorted(client.run(peak_rss_bytes).values())


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _worker_cpus(client: Any) -> dict[str, float]:
    """CPU seconds (user + system) each Dask worker process has used so far."""
    return {str(w): float(v) for w, v in client.run(_cpu_seconds).items()}


def bench_state_dask(url: str, workers: int, tile_km: int | None) -> dict[str, Any]:
    """The Bundesland end to end on a local cluster (each worker reads its tiles from
    PostgreSQL); the stored run compared with the newest single-process run of the same
    database. Where the time goes: the client's wall time per phase (the service's steps and
    :attr:`TiledResult.phases`), Dask's task stream (compute, transfer and deserialisation
    seconds per kind of task and worker), the CPU seconds of each worker, of the client and of
    PostgreSQL."""
    from distributed import Client, get_task_stream

    from quartier.geo import service
    from quartier.geo.distributed import local_cluster

    marks: list[tuple[str, float]] = []
    with local_cluster(workers, memory_limit="4GB") as cluster, Client(cluster) as client:
        client.run(lambda: None)  # workers up before the clock starts
        cpu0, own0, pg0 = _worker_cpus(client), _cpu_seconds(), pg_cpu_seconds(url)
        with psycopg.connect(url) as conn, get_task_stream(client) as stream:
            t = _t()
            run_id, result = service.analyse_and_store_on_dask(
                conn, client, url, AnalysisParams(), tile_cells=tile_km * 10 if tile_km else None,
                progress=lambda step: marks.append((step, _t())),
            )  # fmt: skip
            conn.commit()
            total = _t() - t
        cpu1 = _worker_cpus(client)
        worker_cpu = {w: cpu1[w] - cpu0.get(w, 0.0) for w in cpu1}
        client_cpu = _cpu_seconds() - own0
        pg_cpu = pg_cpu_seconds(url) - pg0
        peaks = _worker_peaks(client)
    ends = [m[1] for m in marks[1:]] + [t + total]
    steps = {name: end - start for (name, start), end in zip(marks, ends, strict=True)}
    with psycopg.connect(url) as conn:
        runs = [int(r[0]) for r in conn.execute(
            "select id from coverage_run where id < %s order by id desc limit 1",
            (run_id,))]  # fmt: skip
        same = _same_runs(conn, runs[0], run_id) if runs else "no single-process run to compare"
    return {"seconds": total, "peaks": peaks, "cells": result.inputs["cells"], "same": same,
            "driver_peak": peak_rss_bytes(), "tiles": result.tiles,
            "worker_cpu": sum(worker_cpu.values()), "worker_cpus": sorted(worker_cpu.values()),
            "client_cpu": client_cpu, "pg_cpu": pg_cpu, "gaps": len(result.gaps),
            "steps": steps, "phases": result.phases,
            "tasks": task_stream_summary(stream.data)}  # fmt: skip


def task_stream_summary(data: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Dask's task stream summed per kind of task (the function's name): tasks, compute,
    transfer and deserialisation seconds, and compute seconds per worker."""
    out: dict[str, dict[str, float]] = {}
    workers = sorted({str(d.get("worker")) for d in data})
    for d in data:
        key = d["key"][0] if isinstance(d["key"], tuple) else d["key"]
        name = str(key).rsplit("-", 1)[0]
        row = out.setdefault(name, {"tasks": 0.0, "compute": 0.0, "transfer": 0.0,
                                    "deserialize": 0.0})  # fmt: skip
        row["tasks"] += 1
        for ss in d.get("startstops", ()):
            row[ss["action"]] = row.get(ss["action"], 0.0) + ss["stop"] - ss["start"]
            if ss["action"] == "compute":
                w = f"w{workers.index(str(d.get('worker')))}"
                row[w] = row.get(w, 0.0) + ss["stop"] - ss["start"]
    return out


def pg_cpu_seconds(url: str) -> float:
    """CPU seconds (user + system) of the PostgreSQL server behind ``url`` so far: the
    postmaster, its live processes and (through the postmaster's children's times) the
    backends that ended. Needs to run on the server's host as root or its owner."""
    with psycopg.connect(url) as conn:
        datadir = conn.execute("show data_directory").fetchone()[0]  # type: ignore[index]
    pid = int((Path(datadir) / "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")

    def stat(p: int) -> list[str]:
        raw = Path(f"/proc/{p}/stat").read_text()
        return raw[raw.rindex(")") + 2 :].split()

    own = stat(pid)
    total = sum(int(x) for x in own[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = stat(int(entry.name))
            except OSError:
                continue
            if int(fields[1]) == pid:
                total += int(fields[11]) + int(fields[12])
    return total / tick


def read_cost(url: str) -> None:
    """The stored inputs read three ways, one after the other, with the wall time and the CPU
    seconds of this process and of PostgreSQL: the whole read (one connection, TID ranges),
    session 6's Dask reads (a band of 50 km tiles at a time through the ``(cell_n, cell_e)``
    index), and session 7's (2 equal ranges of every table's blocks, TID ranges)."""
    from quartier.geo.distributed import TILE_CELLS

    side = TILE_CELLS * 100

    def rows(i: CoverageInputs) -> int:
        return sum(len(f) for f in (i.households, i.offers, i.speedtests, i.signals))

    def whole() -> int:
        with psycopg.connect(url) as conn:
            return rows(input_store.load_inputs(conn, district_level=None))

    def bands() -> int:
        with psycopg.connect(url) as conn:
            lo, hi = conn.execute("select min(cell_n), max(cell_n) from mobile_measurement"
                                  ).fetchone() or (0, -1)  # fmt: skip
        n = 0
        for b in range(int(lo) // side, int(hi) // side + 1):
            with psycopg.connect(url) as conn:
                conn.execute("set enable_seqscan = off")
                n += rows(input_store.load_inputs(conn, district_level=None,
                                                  rows=(b * side, (b + 1) * side)))  # fmt: skip
        return n

    def parts() -> int:
        n = 0
        for i in range(2):
            with psycopg.connect(url) as conn:
                n += rows(input_store.load_inputs(conn, district_level=None, part=(i, 2)))
        return n

    for name, fn in (("whole read", whole), ("bands of tiles, index", bands),
                     ("2 ranges of blocks", parts)):  # fmt: skip
        pg0, c0, t0 = pg_cpu_seconds(url), _cpu_seconds(), _t()
        n = fn()
        print(f"  read cost, {name}: wall {_t() - t0:.1f} s, CPU: this process "
              f"{_cpu_seconds() - c0:.1f} s, PostgreSQL {pg_cpu_seconds(url) - pg0:.1f} s; "
              f"{n:,} rows; load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip


def dask_idle(workers: int, seconds: float = 30.0) -> None:
    """The CPU a local cluster costs while it waits: ``workers`` idle workers and the client
    (with the scheduler and the nannies) over ``seconds`` of wall time, with Dask's defaults,
    without its statistical profiler in the workers (session 7's ``local_cluster``) and with
    :data:`quartier.geo.distributed.QUIET_DASK` (this ``local_cluster``), in turns, twice."""
    import dask
    from distributed import Client, LocalCluster

    from quartier.geo.distributed import QUIET_DASK

    configs = {"Dask's defaults": {}, "profiler off": {"distributed.worker.profile.enabled": False},
               "QUIET_DASK": QUIET_DASK}  # fmt: skip
    for _ in range(2):
        for name, config in configs.items():
            with (
                dask.config.set(config),
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    memory_limit="4GB",
                    dashboard_address=":0",
                ) as cluster,  # fmt: skip
                Client(cluster) as client,
            ):
                client.run(lambda: None)
                w0, c0, t0 = _worker_cpus(client), _cpu_seconds(), _t()
                time.sleep(seconds)
                w1 = _worker_cpus(client)
                print(f"  idle {_t() - t0:.1f} s, {name}: {workers} workers "
                      f"{sum(w1.values()) - sum(w0.values()):.2f} CPU-s, client, scheduler and "
                      f"nannies {_cpu_seconds() - c0:.2f} CPU-s; load {os.getloadavg()[0]:.1f}",
                      flush=True)  # fmt: skip


def cluster_inputs(url: str) -> None:
    """``CLUSTER`` the input tables on their ``(cell_n, cell_e)`` index (migration 0044), unless
    done before: a band of tiles is then one contiguous part of each table instead of rows
    spread over all of it (the generated rows, like measurements arriving over time, are in no
    spatial order). Timed and printed; not part of any run's figure."""
    with psycopg.connect(url, autocommit=True) as conn:
        done = conn.execute(
            "select bool_and(indisclustered) from pg_index where indexrelid = any(array["
            "'household_cell_idx', 'broadband_offer_cell_idx', 'speedtest_cell_idx',"
            " 'mobile_measurement_cell_idx']::regclass[])"
        ).fetchone()
        if done and done[0]:
            print("  input tables already clustered by cell")
            return
        t = _t()
        conn.execute("set maintenance_work_mem = '1GB'")
        for table in _LOAD_TABLES:
            conn.execute(f"cluster {table} using {table}_cell_idx")
        conn.execute("vacuum analyze household, broadband_offer, speedtest, mobile_measurement")
        print(f"  input tables clustered by cell (CLUSTER … USING …_cell_idx) in {_t() - t:.1f} s")


def durability(url: str, *, on: bool | None) -> None:
    """Turn fsync, synchronous_commit and full_page_writes on or off (None: leave them), then,
    when on or left, print PostgreSQL's durability settings: the header of the measured runs."""
    names = ("fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers",
             "max_wal_size", "checkpoint_timeout")  # fmt: skip
    with psycopg.connect(url, autocommit=True) as conn:
        if on is not None:
            for name in names[:3]:
                conn.execute(f"alter system set {name} = {'on' if on else 'off'}")
            conn.execute("select pg_reload_conf()")
            time.sleep(0.5)
            if not on:
                return
            conn.execute("checkpoint")
        got = {n: conn.execute(f"show {n}").fetchone()[0] for n in names}  # type: ignore[index]
        version = conn.execute("show server_version").fetchone()[0]  # type: ignore[index]
    print(f"  PostgreSQL {version}: " + ", ".join(f"{k} = {v}" for k, v in got.items()))
    print(f"  load average (1, 5, 15 min) at the start: {os.getloadavg()}")


def _spread(values: list[float]) -> str:
    return (f"min {min(values):.1f}, median {float(np.median(values)):.1f}, "
            f"max {max(values):.1f} s ({', '.join(f'{v:.1f}' for v in values)})")  # fmt: skip


def compare_state_dask(
    url: str,
    repeat: int,
    workers: int,
    tile_km: int | None,
    label: str = "Bundesland",
    single: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Bundesland end to end in one process and on ``workers`` local Dask workers, in
    turns (one, Dask, one, Dask, …: both see the same load), ``repeat`` times each, each run
    in a child process of its own; every Dask run's stored result compared with the single
    process run just before it."""
    from quartier.geo.distributed import TILE_CELLS

    km = tile_km or TILE_CELLS // 10
    singles: list[dict[str, Any]] = []
    dasks: list[dict[str, Any]] = []
    loads: list[tuple[float, float, float]] = []
    for i in range(repeat):
        if single:
            pg0, child0 = pg_cpu_seconds(url), _children_cpu()
            out = subprocess.run(
                [sys.executable, __file__, "--state-child", url, "--repeat", "1", "--e2e-only"],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            singles.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = singles[-1]["best"]
            print(f"  run {i + 1}, one process: {r['total']:.1f} s (read {r['read']:.1f}, compute "
                  f"{r['compute']:.1f}, write {r['write']:.1f}); {int(r['cells']):,} cells, "
                  f"{int(r['gaps']):,} gaps; peak RSS "
                  f"{singles[-1]['peak_rss_bytes'] / 1e9:.2f} GB; CPU: process "
                  f"{_children_cpu() - child0:.1f} s, PostgreSQL "
                  f"{pg_cpu_seconds(url) - pg0:.1f} s; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        out = subprocess.run(
            [sys.executable, __file__, "--state-dask-child", url, "--workers", str(workers),
             "--tile-km", str(km)], check=True, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        dasks.append(json.loads(out.stdout.strip().splitlines()[-1]))
        d = dasks[-1]
        loads.append(os.getloadavg())
        print(f"  run {i + 1}, Dask: {d['seconds']:.1f} s ({d['tiles']} tiles; worker CPU "
              f"{d['worker_cpu']:.1f} s, client CPU {d['client_cpu']:.1f} s); worker peaks "
              f"{', '.join(f'{p / 1e9:.2f}' for p in d['peaks'])} GB, client "
              f"{d['driver_peak'] / 1e9:.2f} GB; result {d['same']}; load "
              f"{loads[-1][0]:.1f}", flush=True)  # fmt: skip
        print_dask_profile(d)
    one = [s["best"]["total"] for s in singles]
    on_dask = [d["seconds"] for d in dasks]
    print(f"{label} on Dask, {workers} workers, {km} km tiles ({repeat} runs): "
          f"{_spread(on_dask)}; worker peaks "
          f"{max(max(d['peaks']) for d in dasks) / 1e9:.2f} GB")  # fmt: skip
    if not singles:
        print(f"  results: {', '.join(d['same'] for d in dasks)}; no single-process run")
        return singles, dasks
    print(f"{label}, one process ({repeat} runs): {_spread(one)}")
    worker_peak = max(max(d["peaks"]) for d in dasks)
    print(f"  peak memory: one process {max(s['peak_rss_bytes'] for s in singles) / 1e9:.2f} GB;"
          f" per Dask worker {worker_peak / 1e9:.2f} GB (largest of all runs), client "
          f"{max(d['driver_peak'] for d in dasks) / 1e9:.2f} GB")  # fmt: skip
    same = all(d["same"].startswith("identical") for d in dasks)
    print(f"  results identical in every run: {'yes' if same else 'NO'}")
    speedup = float(np.median(one) / np.median(on_dask))
    pairs = [a / b for a, b in zip(one, on_dask, strict=True)]
    print(
        f"  speed-up (median / median): {speedup:.2f}x; per pair "
        f"{', '.join(f'{x:.2f}' for x in pairs)}; best / best {min(one) / min(on_dask):.2f}x"
    )
    print(
        f"  load average (1 min) after each Dask run: "
        f"{', '.join(f'{x[0]:.1f}' for x in loads)}; now {os.getloadavg()}"
    )
    print(f"  ≥ 1.6x on {workers} workers (median): "
          f"{'met' if speedup >= 1.6 else 'NOT met'} ({speedup:.2f}x)")  # fmt: skip
    return singles, dasks


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def print_dask_profile(d: dict[str, Any]) -> None:
    """Where a Dask run's time went: the client's wall time per step and phase, the CPU of the
    workers, client and PostgreSQL, and the task stream per kind of task."""
    steps = ", ".join(f"{k} {v:.1f}" for k, v in d["steps"].items())
    phases = ", ".join(f"{k} {v:.1f}" for k, v in d["phases"].items())
    print(f"    client wall s: {steps}; of the analysis: {phases}")
    print(f"    CPU s: workers {', '.join(f'{c:.1f}' for c in d['worker_cpus'])}, client "
          f"{d['client_cpu']:.1f}, PostgreSQL {d['pg_cpu']:.1f}")  # fmt: skip
    for name, row in sorted(d["tasks"].items(), key=lambda kv: -kv[1]["compute"]):
        per = ", ".join(f"{k} {v:.1f}" for k, v in sorted(row.items()) if k.startswith("w"))
        print(
            f"    tasks {name}: {int(row['tasks'])}, compute {row['compute']:.2f} s ({per}), "
            f"transfer {row['transfer']:.2f} s, deserialise {row['deserialize']:.2f} s"
        )


def _same_runs(conn: psycopg.Connection[Any], a: int, b: int) -> str:
    """'identical' or what differs between two stored runs (cells, gaps, districts)."""
    ra, rb = run_store.get_run(conn, a), run_store.get_run(conn, b)
    if ra.inputs != rb.inputs:
        return f"inputs differ: {ra.inputs} / {rb.inputs}"
    ca, cb = run_store.load_cells(conn, ra), run_store.load_cells(conn, rb)
    if not ca.equals(cb):
        return "cells differ"
    del ca, cb
    ga, gb = run_store.load_gaps(conn, ra), run_store.load_gaps(conn, rb)
    if not (
        pd.DataFrame(ga.drop(columns="geometry")).equals(pd.DataFrame(gb.drop(columns="geometry")))
        and list(shapely.to_wkb(ga.geometry.values)) == list(shapely.to_wkb(gb.geometry.values))
    ):
        return "gaps differ"
    q = ("select code, name, households, cells, classes, mobile from coverage_district"
         " where run_id = %s order by code")  # fmt: skip
    if conn.execute(q, (a,)).fetchall() != conn.execute(q, (b,)).fetchall():
        return "districts differ"
    return f"identical ({len(ga):,} gaps)"


def _verdict(name: str, value: float, limit: float) -> None:
    print(f"  {name}: {'met' if value <= limit else 'NOT met'} ({value:.2f})")


if __name__ == "__main__":
    main()
