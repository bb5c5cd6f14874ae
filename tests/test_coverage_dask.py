"""The coverage analysis on Dask (quartier.geo.distributed) gives the single-process result:
random small worlds cut into small tiles, every cell, every cluster and every district figure
compared; and the tiled run stored through the CLI with each tile's own COPY."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from quartier.geo import grid
from quartier.geo.analysis import AnalysisParams, CoverageInputs, _operators, analyse
from quartier.geo.distributed import analyse_tiled, local_cluster, scatter_tiles, split_inputs

log = logging.getLogger(__name__)
OPERATORS = np.array(["Telekom", "Vodafone", "Telefónica", "1&1"])
TECHS = np.array(["ftth", "hfc", "vdsl", "adsl", "fwa"])


def world(seed: int, side: int, with_districts: bool, lonlat: bool = False) -> CoverageInputs:
    """A random world of about ``side`` × ``side`` cells: households in a few towns, offers
    better near their centres, speed tests and signal measurements, districts as vertical
    strips (with gaps between them)."""
    rng = np.random.default_rng(seed)
    e0 = 4_100_000 + 100 * int(rng.integers(0, 50))
    n0 = 3_090_000 + 100 * int(rng.integers(0, 50))
    towns = rng.integers(0, side, (int(rng.integers(1, 5)), 2))
    n_hh = int(rng.integers(20, 40 * side))
    t = rng.integers(0, len(towns), n_hh)
    spread = rng.uniform(1, side / 3)
    col = np.clip(towns[t, 0] + rng.normal(0, spread, n_hh), 0, side - 1).astype(int)
    row = np.clip(towns[t, 1] + rng.normal(0, spread, n_hh), 0, side - 1).astype(int)
    hh = pd.DataFrame({"cell_e": e0 + 100 * col, "cell_n": n0 + 100 * row,
                       "households": rng.integers(0, 6, n_hh)})  # fmt: skip
    n_of = int(rng.integers(0, 2 * n_hh))
    oi = rng.integers(0, n_hh, n_of)
    d_town = np.hypot(col[oi] - towns[t[oi], 0], row[oi] - towns[t[oi], 1])
    down = np.where(rng.random(n_of) < 0.6 / (1 + d_town), 1000.0,
                    rng.choice([16.0, 50.0, 100.0, 250.0, 500.0], n_of))  # fmt: skip
    offers = pd.DataFrame({
        "cell_e": hh["cell_e"].to_numpy()[oi], "cell_n": hh["cell_n"].to_numpy()[oi],
        "technology": rng.choice(TECHS, n_of), "max_down_mbps": down,
        "max_up_mbps": np.where(rng.random(n_of) < 0.1, np.nan,
                                down / rng.choice([1, 5, 10], n_of)),
    })  # fmt: skip
    n_st = int(rng.integers(0, 10 * side))
    si = rng.integers(0, max(n_hh, 1), n_st)
    tests = pd.DataFrame({"cell_e": hh["cell_e"].to_numpy()[si],
                          "cell_n": hh["cell_n"].to_numpy()[si],
                          "download_mbps": rng.gamma(2, 50, n_st).round(1)})  # fmt: skip
    n_sg = int(rng.integers(0, 30 * side))
    ops = OPERATORS[: int(rng.integers(1, 5))]
    signals = pd.DataFrame({
        "cell_e": e0 + 100 * rng.integers(0, side, n_sg),
        "cell_n": n0 + 100 * rng.integers(0, side, n_sg),
        "operator": rng.choice(ops, n_sg), "technology": rng.choice(["2G", "4G", "5G"], n_sg),
        "signal_dbm": rng.normal(-105, 12, n_sg).round(1),
    })  # fmt: skip
    districts = None
    if with_districts:
        cuts = np.sort(rng.integers(0, side, int(rng.integers(1, 6))))
        edges = zip([0, *cuts.tolist()], [*cuts.tolist(), side], strict=True)
        top = n0 + 100 * (side + 1)
        strips = [shapely.box(e0 + 100 * lo, n0 - 100, e0 + 100 * hi - 50 * (i % 2), top)
                  for i, (lo, hi) in enumerate(edges) if hi > lo]  # fmt: skip
        districts = gpd.GeoDataFrame(
            {"code": [f"d{i}" for i in range(len(strips))],
             "name": [f"District {i}" for i in range(len(strips))]},
            geometry=strips, crs=grid.GRID_CRS,
        ).to_crs(grid.WGS84)  # fmt: skip
    if lonlat:  # raw points inside the cells, some broken

        def to_lonlat(frame: pd.DataFrame) -> pd.DataFrame:
            x = frame["cell_e"].to_numpy(float) + rng.uniform(1, 99, len(frame))
            y = frame["cell_n"].to_numpy(float) + rng.uniform(1, 99, len(frame))
            lon, lat = grid.from_grid_crs(x, y)
            lon[rng.random(len(frame)) < 0.02] = np.nan
            return frame.drop(columns=["cell_e", "cell_n"]).assign(lon=lon, lat=lat)

        hh, offers, tests, signals = (to_lonlat(f) for f in (hh, offers, tests, signals))
    return CoverageInputs(hh, offers, tests, signals, districts)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client

    with local_cluster(2, processes=False) as cluster, Client(cluster) as c:
        yield c


def tiled(client: Any, inputs: CoverageInputs, params: AnalysisParams, tile_cells: int) -> Any:
    parts = split_inputs(inputs, tile_cells)
    return analyse_tiled(
        client,
        scatter_tiles(client, parts),
        _operators(inputs.signals),
        inputs.districts,
        params,
        tile_cells=tile_cells,
        keep_cells=True,
    )


def assert_same(one: Any, other: Any) -> None:
    """Every cell, cluster (cells, households, polygon, score, rank) and district figure."""
    pd.testing.assert_frame_equal(one.cells, other.cells, check_exact=True)
    g1, g2 = one.gaps, other.gaps
    assert len(g1) == len(g2)
    pd.testing.assert_frame_equal(
        pd.DataFrame(g1.drop(columns="geometry")), pd.DataFrame(g2.drop(columns="geometry")),
        check_exact=True,
    )  # fmt: skip
    assert list(shapely.to_wkb(g1.geometry.values)) == list(shapely.to_wkb(g2.geometry.values))
    # each cluster's cells and households, from the cells themselves
    for res in (one, other):
        c = res.cells[res.cells["cluster_id"].notna()]
        per = c.groupby(c["cluster_id"].astype(int))["households"].agg(["size", "sum"])
        got = res.gaps.set_index("cluster_id").loc[per.index]
        assert (per["size"].to_numpy() == got["cells"].to_numpy()).all()
        assert (per["sum"].to_numpy() == got["households"].to_numpy()).all()
    pd.testing.assert_frame_equal(one.districts, other.districts, check_exact=True)
    assert one.operators == other.operators
    assert other.inputs == one.inputs


@hsettings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    side=st.integers(4, 30),
    tiles_per_side=st.integers(2, 3),
    connectivity=st.sampled_from([4, 8]),
    with_districts=st.booleans(),
)
def test_tiled_equals_single_process(
    client: Any, seed: int, side: int, tiles_per_side: int, connectivity: int, with_districts: bool
) -> None:
    """Up to 16 tiles a world (the world is not aligned on the tiles); few examples, since each
    costs a few seconds of Dask's per-task overhead on a busy machine."""
    inputs = world(seed, side, with_districts)
    params = AnalysisParams(cluster_connectivity=connectivity, min_tests=2)
    single = analyse(inputs, params)
    tile_cells = max(2, -(-side // tiles_per_side))
    assert_same(single, tiled(client, inputs, params, tile_cells).as_result())


def test_tiled_equals_single_process_on_a_larger_world_with_raw_points(client: Any) -> None:
    """Clusters across many tile borders (and corners), districts, lon/lat inputs with broken
    rows; the clusters really cross tiles."""
    inputs = world(6, 60, True, lonlat=True)
    params = AnalysisParams(cluster_connectivity=8)
    single = analyse(inputs, params)
    assert single.inputs["households_used"] < single.inputs["households_rows"]  # broken rows
    result = tiled(client, inputs, params, 15)
    assert result.tiles >= 9
    c = single.cells[single.cells["cluster_id"].notna()]
    tiles = (c["e"] // 1500) * 100_000 + c["n"] // 1500
    per_cluster = tiles.groupby(c["cluster_id"].astype(int)).nunique()
    assert (per_cluster > 1).sum() >= 10 and per_cluster.max() >= 3  # clusters cross tiles
    assert_same(single, result.as_result())
    assert result.dead_zones == int(single.cells["dead_zone"].sum())


def test_operators_counted_in_the_workers_and_empty_tiles_left_out(client: Any) -> None:
    """Without ``operators`` the run's operators are picked from the tiles' counts (as
    :func:`analyse` picks them from all measurements: the 7 most measured, here of 8 with one
    rare), and a tile without a row is dropped: the single process's result."""
    inputs = world(3, 40, True)
    rng = np.random.default_rng(3)
    rare = inputs.signals.iloc[:7].assign(operator="Rare Mobil")
    signals = pd.concat([inputs.signals, rare], ignore_index=True)
    signals["operator"] = np.where(
        np.arange(len(signals)) < len(inputs.signals),
        np.array([*OPERATORS, "Freenet", "Lyca", "Aldi Talk"])[rng.integers(0, 7, len(signals))],
        signals["operator"].astype(str),
    )  # fmt: skip
    inputs = CoverageInputs(inputs.households, inputs.offers, inputs.speedtests, signals,
                            inputs.districts)  # fmt: skip
    params = AnalysisParams(cluster_connectivity=4)
    single = analyse(inputs, params)
    assert "Rare Mobil" not in single.operators and len(single.operators) == 7
    # tiles of 20 cells: 4 to 9 of them (each task costs Dask's overhead; 10 cells made 16-25)
    parts = split_inputs(inputs, 20)
    assert len(parts) >= 4
    empty = CoverageInputs(*(f.iloc[:0] for f in (inputs.households, inputs.offers,
                                                   inputs.speedtests, inputs.signals)))  # fmt: skip
    far = (max(parts)[0] + 5, int(rng.integers(0, 5)))
    parts[far] = empty
    result = analyse_tiled(client, scatter_tiles(client, parts), None, inputs.districts, params,
                           tile_cells=20, keep_cells=True)  # fmt: skip
    assert result.tiles == len(parts) - 1
    assert_same(single, result.as_result())


# --- read per tile from PostgreSQL ---------------------------------------------------------------


@pytest.mark.services
def test_tiles_read_from_the_store_are_the_whole_read_cut_by_cell(
    settings: Any, client: Any
) -> None:
    """``read_store`` (each of 3 ranges of every table's blocks read in a worker, cut into
    tiles there, each tile's pieces joined) gives every row of the whole read exactly once, in
    the tile of its cell and in the whole read's order, also rows in the cells on both sides of
    tile borders, with the measurement window and k-anonymity applied as in one process (over
    the pieces of a cell: a cell's devices are spread over the ranges), and the operators the
    single process picks."""
    import psycopg

    from quartier.geo import input_store
    from quartier.geo.distributed import StoreInputs, read_store

    url = settings.require_database_url()
    inputs = world(21, 36, True)
    side = 6  # cells a tile
    e0 = int(inputs.households["cell_e"].min())
    n0 = int(inputs.households["cell_n"].min())
    # a household in each cell on both sides of the tile borders that cross the world
    cuts_e = [b * side * 100 for b in range(e0 // (side * 100) + 1, (e0 + 3500) // (side * 100))]
    cuts_n = [b * side * 100 for b in range(n0 // (side * 100) + 1, (n0 + 3500) // (side * 100))]
    edge = [(e, n0 + 1700) for b in cuts_e for e in (b - 100, b)]
    edge += [(e0 + 1700, n) for b in cuts_n for n in (b - 100, b)]
    extra = pd.DataFrame({"cell_e": [e for e, _ in edge], "cell_n": [n for _, n in edge],
                          "households": 1})  # fmt: skip
    inputs = CoverageInputs(pd.concat([inputs.households, extra], ignore_index=True),
                            inputs.offers, inputs.speedtests, inputs.signals,
                            inputs.districts)  # fmt: skip
    _store_world(url, inputs, devices=3)
    since = pd.Timestamp("2026-11-01 00:00:30", tz="UTC").to_pydatetime()
    with psycopg.connect(url) as conn:
        whole = input_store.load_inputs(conn, since=since, min_contributors=2)
        futures, operators = read_store(client, conn, StoreInputs(url, since, None, 2), side, 3)
    assert operators == _operators(whole.signals)
    read = dict(zip(futures, client.gather(list(futures.values())), strict=True))
    assert len(read) >= 25
    for t, got in read.items():  # each row in its own tile
        for frame in (got.households, got.offers, got.speedtests, got.signals):
            assert (frame["cell_e"] // (side * 100) == t[1]).all()
            assert (frame["cell_n"] // (side * 100) == t[0]).all()
    assert sum(len(g.households) for g in read.values()) == len(inputs.households)
    with psycopg.connect(url) as conn:  # three ranges of blocks, each with rows
        blocks = conn.execute("select pg_relation_size('mobile_measurement') / 8192").fetchone()
        assert blocks is not None and blocks[0] >= 6
    for name in ("households", "offers", "speedtests", "signals"):
        one = getattr(whole, name)
        for t, got in read.items():  # a tile's rows in the whole read's order
            mine = getattr(got, name)
            sel = ((one["cell_e"] // (side * 100) == t[1])
                   & (one["cell_n"] // (side * 100) == t[0])).to_numpy()  # fmt: skip
            pd.testing.assert_frame_equal(
                one[sel].reset_index(drop=True), mine, check_exact=True, check_categorical=False
            )
        tiled = pd.concat([getattr(g, name) for g in read.values()], ignore_index=True)
        key = list(one.columns)
        for frame in (one, tiled):
            for col in key:
                if isinstance(frame[col].dtype, pd.CategoricalDtype):
                    frame[col] = frame[col].astype(str)
        pd.testing.assert_frame_equal(
            one.sort_values(key, ignore_index=True), tiled.sort_values(key, ignore_index=True),
            check_exact=True,
        )  # fmt: skip
        if name in ("speedtests", "signals"):  # the window and k-anonymity left rows out
            assert 0 < len(one) < len(getattr(inputs, name))


@pytest.mark.services
def test_stored_run_in_parts_of_bands_equals_the_single_process(settings: Any, client: Any) -> None:
    """``analyse_store`` with bands read in parts of 2 tiles (the stored world is 4-5 tiles
    wide, so each band takes 3 tasks) gives every cell, gap and district figure of one
    process over the same stored inputs."""
    import psycopg

    from quartier.geo import input_store
    from quartier.geo.distributed import StoreInputs, analyse_store, store_chunks

    url = settings.require_database_url()
    _store_world(url, world(7, 28, True), devices=3)
    p = AnalysisParams()
    with psycopg.connect(url) as conn:
        inputs = input_store.load_inputs(conn, min_contributors=2)
        chunks = store_chunks(conn, 6, 2)
    assert len({b for b, _ in chunks}) >= 4 and len(chunks) >= 2 * len({b for b, _ in chunks})
    one = analyse(inputs, p)
    got = analyse_store(client, StoreInputs(url, None, None, 2), inputs.districts, p,
                        tile_cells=6, band_tiles=2, keep_cells=True)  # fmt: skip
    assert got.tiles >= 12
    assert_same(one, got.as_result())
    pd.testing.assert_frame_equal(one.districts, got.districts, check_exact=True)


@pytest.mark.services
def test_an_operator_that_k_anonymity_removes_makes_the_stored_run_again(
    settings: Any, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The stored operators include one measured only in a cell of one device: k-anonymity
    (2 devices) leaves it out, the tiles' counts show it, and ``analyse_store`` runs again with
    the single process's operators (logged), with its result."""
    import psycopg

    from quartier.geo import input_store
    from quartier.geo.distributed import StoreInputs, analyse_store

    url = settings.require_database_url()
    inputs = world(9, 20, True)
    far = inputs.signals.iloc[:1].assign(
        operator="Rare", cell_e=int(inputs.signals["cell_e"].min()) - 3000
    )
    inputs = CoverageInputs(inputs.households, inputs.offers, inputs.speedtests,
                            pd.concat([inputs.signals, far], ignore_index=True),
                            inputs.districts)  # fmt: skip
    _store_world(url, inputs, devices=3)
    p = AnalysisParams()
    with psycopg.connect(url) as conn:
        assert "Rare" in input_store._operators(conn)
        whole = input_store.load_inputs(conn, min_contributors=2)
    one = analyse(whole, p)
    assert "Rare" not in one.operators
    with caplog.at_level(logging.WARNING, logger="quartier.geo.distributed"):
        # tiles of 10 cells: 4 to 9 over the world and the rare cell's own (5 cells made 16-25,
        # each run twice here, for nothing more)
        got = analyse_store(client, StoreInputs(url, None, None, 2), whole.districts, p,
                            tile_cells=10, keep_cells=True)  # fmt: skip
    assert got.tiles >= 4
    assert any("made again" in r.getMessage() for r in caplog.records)
    assert got.operators == one.operators
    assert_same(one, got.as_result())


# --- stored through the CLI --------------------------------------------------------------------


def _store_world(url: str, inputs: CoverageInputs, devices: int = 7) -> None:
    import psycopg

    from quartier.geo import input_store
    from quartier.pseudonym import Pseudonymizer

    def located(frame: pd.DataFrame) -> pd.DataFrame:
        lon, lat = grid.from_grid_crs(frame["cell_e"].to_numpy() + 50.0,
                                      frame["cell_n"].to_numpy() + 50.0)  # fmt: skip
        return frame.drop(columns=["cell_e", "cell_n"]).assign(lon=lon, lat=lat)

    def measured(frame: pd.DataFrame) -> pd.DataFrame:
        n = len(frame)
        at = pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="s")
        keys = [f"dev{i % devices}" for i in range(n)]
        return located(frame).assign(measured_at=at, device_key=keys)

    signals = inputs.signals.rename(columns={"signal_dbm": "rsrp_dbm"})
    assert inputs.districts is not None
    d = inputs.districts.to_crs(grid.WGS84)
    with psycopg.connect(url) as conn:
        conn.cursor().executemany(
            "insert into district (level, code, name, geom) values ('stadtbezirk', %s, %s,"
            " ST_Multi(ST_GeomFromWKB(%s, 4326)))",
            [(c, n, shapely.to_wkb(g)) for c, n, g in zip(d["code"], d["name"], d.geometry,
                                                         strict=True)],
        )  # fmt: skip
        pseudonyms = Pseudonymizer(b"k" * 32)
        input_store.write_households(conn, located(inputs.households), "t")
        input_store.write_offers(conn, located(inputs.offers), "t")
        input_store.write_speedtests(conn, measured(inputs.speedtests), "t", pseudonyms)
        input_store.write_signals(conn, measured(signals), "t", pseudonyms)
        conn.commit()


@pytest.mark.services
def test_cli_analyse_on_dask_stores_the_single_process_run(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`quartier coverage analyse --workers 2 --tile-km 1` (a local cluster of two processes,
    9+ tiles, each writing its cells with its own COPY) stores the run `quartier coverage
    analyse` stores: every cell, gap (with its polygon) and district row."""
    import psycopg
    from typer.testing import CliRunner

    from quartier.cli import app as cli_app
    from quartier.geo import run_store

    url = settings.require_database_url()
    monkeypatch.setenv("QUARTIER_DATABASE__URL", url)
    monkeypatch.setenv("QUARTIER_PRIVACY__MIN_CONTRIBUTORS", "1")
    _store_world(url, world(11, 24, True))

    def run(*args: str) -> str:
        r = CliRunner().invoke(cli_app, ["coverage", "analyse", "--level", "stadtbezirk", *args])
        assert r.exit_code == 0 and "Traceback" not in r.output, r.output
        return " ".join(r.output.split())

    run()
    out = run("--workers", "2", "--tile-km", "1")
    assert "tiles" in out
    with psycopg.connect(url) as conn:
        ids = [int(r[0]) for r in conn.execute("select id from coverage_run order by id")]
        one, two = (run_store.get_run(conn, i) for i in ids)
        assert one.inputs == two.inputs and one.operators == two.operators
        assert one.inputs["cells"] > 300
        c1, c2 = run_store.load_cells(conn, one), run_store.load_cells(conn, two)
        pd.testing.assert_frame_equal(c1, c2, check_exact=True)
        assert c2["cluster_id"].notna().sum() > 10
        g1, g2 = run_store.load_gaps(conn, one), run_store.load_gaps(conn, two)
        pd.testing.assert_frame_equal(
            pd.DataFrame(g1.drop(columns="geometry")), pd.DataFrame(g2.drop(columns="geometry"))
        )
        assert list(shapely.to_wkb(g1.geometry.values)) == list(shapely.to_wkb(g2.geometry.values))
        rows = [
            conn.execute(
                "select code, name, households, cells, classes, mobile, ST_AsBinary(geom)"
                " from coverage_district where run_id = %s order by code",
                (run.id,),
            ).fetchall()
            for run in (one, two)
        ]
        assert rows[0] == rows[1] and len(rows[0]) > 1
        # the tiles' table is attached: no table is left outside coverage_cell_data
        loose = conn.execute(
            "select c.relname from pg_class c where c.relname like 'coverage_cell_run_%'"
            " and not c.relispartition and c.relkind = 'r'"
        ).fetchall()
        assert loose == []
        # the Dask run stored its maps' layers too (the roots' on_stored hook), the same ones
        layers = [
            conn.execute(
                "select map, layer, geojson from coverage_map_layer where run_id = %s"
                " order by 1, 2",
                (run.id,),
            ).fetchall()
            for run in (one, two)
        ]
        assert len(layers[1]) > 0 and layers[0] in ([], layers[1])  # older runs' may be gone


# --- a worker's memory with the size of the run -----------------------------------------------


def band_world(seed: int, bands: int, tile_cells: int) -> CoverageInputs:
    """``bands`` rows of two tiles of ``tile_cells`` cells, every band alike in density: a
    household in half the cells, offers (gigabit in the band's middle), 10 signal measurements
    and a speed test per cell on average; one district over all of it."""
    rng = np.random.default_rng(seed)
    e0, n0 = 4_000_000, 3_000_000  # multiples of the tile side
    rows, cols = bands * tile_cells, 2 * tile_cells
    n_cells = rows * cols

    def cells(n: int) -> tuple[Any, Any]:
        i = rng.integers(0, n_cells, n)
        return e0 + 100 * (i % cols), n0 + 100 * (i // cols)

    e, n = cells(n_cells // 2)
    hh = pd.DataFrame({"cell_e": e, "cell_n": n, "households": rng.integers(1, 6, len(e))})
    down = np.where((np.abs((e - e0) / 100 - cols / 2) < 10), 1000.0, 50.0)
    offers = pd.DataFrame({"cell_e": e, "cell_n": n, "technology": "vdsl",
                           "max_down_mbps": down, "max_up_mbps": down / 5})  # fmt: skip
    e, n = cells(n_cells)
    tests = pd.DataFrame({"cell_e": e, "cell_n": n,
                          "download_mbps": rng.gamma(2, 50, len(e)).round(1)})  # fmt: skip
    e, n = cells(10 * n_cells)
    signals = pd.DataFrame({
        "cell_e": e, "cell_n": n, "operator": rng.choice(OPERATORS[:3], len(e)),
        "technology": rng.choice(["2G", "4G", "5G"], len(e)),
        "signal_dbm": np.clip(rng.normal(-105, 12, len(e)), -140, -44).round(1),
    })  # fmt: skip
    box = shapely.box(e0, n0, e0 + 100 * cols, n0 + 100 * rows)
    districts = gpd.GeoDataFrame({"code": ["d0"], "name": ["District 0"]}, geometry=[box],
                                 crs=grid.GRID_CRS).to_crs(grid.WGS84)  # fmt: skip
    return CoverageInputs(hh, offers, tests, signals, districts)


def _worker_peaks(client: Any, run: Any) -> list[int]:
    """Each worker's traced memory at its peak during ``run()`` above what it held before
    (tracemalloc: Python objects and numpy's arrays)."""
    import tracemalloc

    def start() -> int:
        if not tracemalloc.is_tracing():
            tracemalloc.start()
        tracemalloc.reset_peak()
        return tracemalloc.get_traced_memory()[0]

    before = client.run(start)
    run()
    after = client.run(lambda: tracemalloc.get_traced_memory()[1])
    return sorted(after[w] - before[w] for w in after)


@pytest.mark.services
def test_a_workers_peak_memory_does_not_grow_with_the_number_of_bands(
    service_urls: Any, template_db: str
) -> None:
    """The stored run on Dask (``analyse_and_store_on_dask``: a band of tiles read and
    analysed at a time, each tile's cells filed away until written) peaks at about the same
    memory per worker for 2 and for 8 bands of tiles, while the earlier way (each worker
    reading its range of every table's blocks, every tile's inputs and cells held until the
    merge: ``read_store`` + ``analyse_tiled``) grows with them, measured the same way; both
    store the same run as one process."""
    import psycopg
    from distributed import Client
    from psycopg import sql

    from quartier.geo import run_store, service
    from quartier.geo.distributed import StoreInputs, read_store

    side = 30
    urls = {}
    names = []
    try:
        for bands in (1, 4):
            name = f"quartier_t_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(service_urls.database_url, autocommit=True) as conn:
                conn.execute(sql.SQL("create database {} template {}").format(
                    sql.Identifier(name), sql.Identifier(template_db)))  # fmt: skip
            names.append(name)
            urls[bands] = psycopg.conninfo.make_conninfo(service_urls.database_url, dbname=name)
            _store_world(urls[bands], band_world(5, bands, side), devices=1)
        p = AnalysisParams()
        peaks: dict[tuple[str, int], list[int]] = {}
        with local_cluster(2) as cluster, Client(cluster) as c:
            with psycopg.connect(urls[1]) as conn:  # modules imported, caches filled
                service.analyse_and_store_on_dask(conn, c, urls[1], p, tile_cells=side,
                                                  min_contributors=1)  # fmt: skip
                conn.rollback()
            for bands, url in urls.items():
                with psycopg.connect(url) as conn:
                    service.analyse_and_store(conn, p, conninfo=url, min_contributors=1)
                    conn.commit()

                    def banded(conn: Any = conn, url: str = url) -> None:
                        service.analyse_and_store_on_dask(
                            conn, c, url, p, tile_cells=side, min_contributors=1
                        )
                        conn.commit()

                    def whole(conn: Any = conn, url: str = url) -> None:
                        tiles, operators = read_store(
                            c, conn, StoreInputs(url, None, None, 1), side
                        )
                        service.store_tiled(conn, c, url, tiles, operators,
                                            conn_districts(conn), p, tile_cells=side)  # fmt: skip
                        del tiles
                        conn.commit()

                    peaks[("banded", bands)] = _worker_peaks(c, banded)
                    peaks[("whole", bands)] = _worker_peaks(c, whole)
                    ids = [
                        int(r[0]) for r in conn.execute("select id from coverage_run order by 1")
                    ]
                    one, *dasks = (run_store.get_run(conn, i) for i in ids)
                    cells = run_store.load_cells(conn, one)
                    assert len(cells) > 0.4 * bands * side * side * 2
                    for other in dasks:
                        assert other.inputs == one.inputs
                        pd.testing.assert_frame_equal(
                            cells, run_store.load_cells(conn, other), check_exact=True
                        )
        log.info("peak traced memory per worker: %s", peaks)
        banded_small, banded_big = max(peaks[("banded", 1)]), max(peaks[("banded", 4)])
        whole_small, whole_big = max(peaks[("whole", 1)]), max(peaks[("whole", 4)])
        # the measure sees a worker holding more: 4 bands' inputs and cells, about 3x
        assert whole_big > 2.0 * whole_small
        # bounded: what a worker holds at its peak is one band's, whatever the number of bands
        assert banded_big < 1.3 * banded_small
        assert banded_big - banded_small < 0.25 * (whole_big - whole_small)
    finally:
        with psycopg.connect(service_urls.database_url, autocommit=True) as conn:
            for name in names:
                conn.execute(sql.SQL("drop database if exists {} with (force)").format(
                    sql.Identifier(name)))  # fmt: skip


def conn_districts(conn: Any) -> Any:
    from quartier.geo.io import load_districts

    found = load_districts(conn, "stadtbezirk")
    return found if len(found) else None
