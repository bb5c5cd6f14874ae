"""Quartier's TimescaleDB-specific SQL against a real TimescaleDB engine.

The engine is PGlite with TimescaleDB (deploy/pglite, started once for this module by
tests/timescale_engine.py), or the server in QUARTIER_TEST_TIMESCALE_URL. PGlite has no PostGIS,
so the full migration set cannot run there: these tests cover what differs between the two storage
paths (the runner's path decision, the 0003 timescaledb variant, the ingest write rule on a
hypertable, the partition function, time_bucket against date_bin on plain PostgreSQL). Each test
gets its own schema on the engine. One connection at a time: PGlite has a single backend session.
See docs/timescaledb-testing.md.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb
from timescale_engine import (
    REQUIRED_ENV,
    Engine,
    EngineUnavailable,
    connect,
    required,
    timescale_engine,
)

from quartier.store.migrate import (
    _decide_path,
    available_migrations,
    storage_path,
    timescaledb_available,
)

pytestmark = pytest.mark.services
log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[object, ...]]
Row = tuple[int, datetime, float | None, Jsonb | None]


@pytest.fixture(scope="module")
def timescale() -> Iterator[Engine]:
    with contextlib.ExitStack() as stack:
        try:
            engine = stack.enter_context(timescale_engine())
        except EngineUnavailable as exc:
            if required():
                pytest.fail(f"{REQUIRED_ENV} is set but no TimescaleDB engine: {exc}")
            pytest.skip(f"no TimescaleDB engine: {exc}")
        log.info("TimescaleDB engine: %s", engine)
        yield engine


@pytest.fixture(scope="module")
def engine_conn(timescale: Engine) -> Iterator[Conn]:
    """The one connection to the engine that every test of this module shares (PGlite has a
    single backend session; reconnecting gains no isolation)."""
    with connect(timescale.url) as conn:
        conn.execute("set timezone = 'UTC'")
        yield conn


@pytest.fixture
def ts(engine_conn: Conn) -> Iterator[Conn]:
    """The engine connection with search_path set to a fresh schema holding the 0003
    timescaledb migration, applied as the runner applies it (in one transaction)."""
    (mig,) = [m for m in available_migrations("timescaledb") if m.version == 3]
    assert mig.variant == "timescaledb" and mig.transactional
    conn = engine_conn
    schema = sql.Identifier(f"q_{uuid.uuid4().hex[:10]}")
    assert _decide_path(conn, "auto") == "timescaledb"  # enables the extension if need be
    conn.execute(sql.SQL("create schema {}").format(schema))
    conn.execute(sql.SQL("set search_path = {}, public").format(schema))
    try:
        with conn.transaction():
            conn.execute(mig.sql.encode())
        yield conn
    finally:
        conn.execute("reset search_path")
        conn.execute(sql.SQL("drop schema {} cascade").format(schema))


# --- the ingest write rule as quartier/ingest/writer.py applies it, except that row INSERTs
# (executemany) fill the staging table instead of COPY, which crashes PGlite ----------------------


def _one(conn: Conn, query: LiteralString) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def _write(conn: Conn, rows: list[Row]) -> int:
    """One batch in one transaction; returns the number of observations stored."""
    conn.execute(
        "create temp table if not exists _obs_stage (datastream_id bigint, "
        "phenomenon_time timestamptz, result double precision, parameters jsonb) "
        "on commit delete rows"
    )
    months = sorted({(t.year, t.month) for _, t, _, _ in rows})
    with conn.transaction():
        for y, m in months:
            start = datetime(y, m, 1, tzinfo=UTC)
            end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
            conn.execute("select quartier_ensure_observation_partitions(%s, %s)", (start, end))
        conn.cursor().executemany(
            "insert into _obs_stage (datastream_id, phenomenon_time, result, parameters) "
            "values (%s, %s, %s, %s)",
            rows,
        )
        cur = conn.execute(
            "insert into observation (datastream_id, phenomenon_time, result, parameters) "
            "select datastream_id, phenomenon_time, result, parameters from _obs_stage "
            "on conflict do nothing"
        )
        return cur.rowcount


def test_runner_chooses_timescaledb_path(engine_conn: Conn) -> None:
    conn = engine_conn
    assert timescaledb_available(conn)
    assert _decide_path(conn, "postgres") == "postgres"  # the setting can refuse it
    assert _decide_path(conn, "auto") == "timescaledb"
    ext = conn.execute("select extversion from pg_extension where extname = 'timescaledb'")
    assert ext.fetchone() is not None
    variants = {m.version: m.variant for m in available_migrations("timescaledb")}
    assert variants[3] == "timescaledb"


def test_observation_is_hypertable_with_weekly_chunks(ts: Conn) -> None:
    hyper = ts.execute(
        "select num_dimensions from timescaledb_information.hypertables "
        "where hypertable_schema = current_schema() and hypertable_name = 'observation'"
    ).fetchall()
    assert hyper == [(1,)]
    dims = ts.execute(
        "select column_name, time_interval from timescaledb_information.dimensions "
        "where hypertable_schema = current_schema() and hypertable_name = 'observation'"
    ).fetchall()
    assert dims == [("phenomenon_time", timedelta(days=7))]


def test_write_rule_stores_duplicates_once_first_value_wins(ts: Conn) -> None:
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    first: list[Row] = [
        (ds, t0 + timedelta(hours=6 * i), float(ds * 1000 + i), None)
        for ds in (1, 2)
        for i in range(84)  # 21 days: several 7-day chunks, two months
    ]
    first[0] = (*first[0][:3], Jsonb({"quality": "ok"}))
    # a reading redelivered within the same batch is stored once too
    in_batch_dup = (1, first[5][1], -1.0, None)
    assert _write(ts, [*first, in_batch_dup]) == len(first)

    redelivered: list[Row] = [(ds, t, None if v is None else -v, p) for ds, t, v, p in first[10:30]]
    new: list[Row] = [(3, t0 + timedelta(minutes=i), float(i), None) for i in range(10)]
    assert _write(ts, redelivered + new) == len(new)

    assert _one(ts, "select count(*) from observation") == len(first) + len(new)
    stored = dict(
        ((ds, t), v)
        for ds, t, v in ts.execute(
            "select datastream_id, phenomenon_time, result from observation "
            "where datastream_id in (1, 2)"
        )
    )
    assert stored == {(ds, t): v for ds, t, v, _ in first}  # the first value won
    assert ts.execute(
        "select parameters from observation where datastream_id = 1 and phenomenon_time = %s",
        (t0,),
    ).fetchone() == ({"quality": "ok"},)
    # 21 days of rows in 7-day chunks: the chunks were made as the rows came
    assert _one(ts, "select count(*) from show_chunks('observation')") >= 3


def test_partition_function_exists_and_does_nothing(ts: Conn) -> None:
    def relations() -> int:
        return int(_one(ts, "select count(*) from pg_class"))

    before = relations()
    made = ts.execute(
        "select quartier_ensure_observation_partitions(%s, %s)",
        (datetime(2020, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)),
    ).fetchone()
    assert made == (0,)
    assert relations() == before


BUCKET_SQL = """
    select datastream_id, {bucket} as bucket, avg(result), count(result), count(*)
    from observation group by 1, 2 order by 1, 2
"""


def test_time_bucket_matches_date_bin_on_plain_postgres(
    ts: Conn, request: pytest.FixtureRequest
) -> None:
    # db_url (conftest: a fresh migrated plain PostgreSQL database) is asked for only now, so
    # that without an engine the test skips before the session starts PostgreSQL for nothing
    db_url: str = request.getfixturevalue("db_url")
    # 2 datastreams, a reading every 7 minutes across a day and a month boundary, some NULLs
    t0 = datetime(2024, 1, 31, 20, 3, tzinfo=UTC)
    rows: list[Row] = [
        (ds, t0 + timedelta(minutes=7 * i), None if i % 11 == 0 else ds * 10 + 0.25 * i, None)
        for ds in (1, 2)
        for i in range(70)
    ]
    assert _write(ts, rows) == len(rows)
    with psycopg.connect(db_url, autocommit=True) as plain:
        assert storage_path(plain) == "postgres"
        plain.execute("set timezone = 'UTC'")
        assert _write(plain, rows) == len(rows)
        for width in ("15 minutes", "1 hour", "1 day"):
            on_ts = ts.execute(
                sql.SQL(BUCKET_SQL).format(
                    bucket=sql.SQL("time_bucket({}::interval, phenomenon_time)").format(width)
                )
            ).fetchall()
            on_pg = plain.execute(
                sql.SQL(BUCKET_SQL).format(
                    bucket=sql.SQL(
                        "date_bin({}::interval, phenomenon_time, timestamptz '2000-01-01 00:00Z')"
                    ).format(width)
                )
            ).fetchall()
            assert len(on_ts) > 2, width
            assert [(r[0], r[1], r[3], r[4]) for r in on_ts] == [
                (r[0], r[1], r[3], r[4]) for r in on_pg
            ], width
            assert [r[2] for r in on_ts] == pytest.approx([r[2] for r in on_pg], rel=1e-12), width


# --- migration 0005 (time-series store): the same query layer on both paths -------------------
# (appended by the store work; see docs/store.md)


@pytest.fixture
def ts5(engine_conn: Conn) -> Iterator[Conn]:
    """A fresh schema holding migrations 0003 and 0005 of the timescaledb path, each applied in
    one transaction as the runner applies it, plus the storage path row 0001 would record."""
    migs = {m.version: m for m in available_migrations("timescaledb")}
    assert migs[5].variant == "timescaledb" and migs[5].transactional
    conn = engine_conn
    schema = sql.Identifier(f"q_{uuid.uuid4().hex[:10]}")
    assert _decide_path(conn, "auto") == "timescaledb"
    conn.execute(sql.SQL("create schema {}").format(schema))
    conn.execute(sql.SQL("set search_path = {}, public").format(schema))
    try:
        conn.execute("create table quartier_meta (key text primary key, value text not null)")
        conn.execute("insert into quartier_meta values ('storage_path', 'timescaledb')")
        for version in (3, 5):
            with conn.transaction():
                conn.execute(migs[version].sql.encode())
        yield conn
    finally:
        conn.execute("reset search_path")
        conn.execute(sql.SQL("drop schema {} cascade").format(schema))


def _write_hooked(conn: Conn, rows: list[tuple[int, datetime, float | None]]) -> int:
    """_write plus the per-batch hook the ingest writer calls (quartier_observations_staged)."""
    conn.execute(
        "create temp table if not exists _obs_stage (datastream_id bigint, "
        "phenomenon_time timestamptz, result double precision, parameters jsonb) "
        "on commit delete rows"
    )
    with conn.transaction():
        conn.cursor().executemany(
            "insert into _obs_stage (datastream_id, phenomenon_time, result) values (%s, %s, %s)",
            rows,
        )
        cur = conn.execute(
            "insert into observation (datastream_id, phenomenon_time, result, parameters) "
            "select datastream_id, phenomenon_time, result, parameters from _obs_stage "
            "on conflict do nothing"
        )
        conn.execute("select quartier_observations_staged()")
        return cur.rowcount


def test_0005_compression_aggregates_and_policies(ts5: Conn) -> None:
    from quartier.store import rollups, timescale

    settings = dict(
        ts5.execute(
            "select attname, coalesce(segmentby_column_index, -orderby_column_index) "
            "from timescaledb_information.compression_settings "
            "where hypertable_schema = current_schema() and hypertable_name = 'observation'"
        ).fetchall()
    )
    assert settings == {"datastream_id": 1, "phenomenon_time": -1}
    caggs = ts5.execute(
        "select view_name, materialized_only from timescaledb_information.continuous_aggregates "
        "where view_schema = current_schema() order by 1"
    ).fetchall()
    assert caggs == [
        ("observation_15m", False),
        ("observation_1d", False),
        ("observation_1h", False),
    ]  # real-time aggregation on
    policy = rollups.StorePolicy(
        retention=timedelta(days=3650),
        rollup_retention=timedelta(days=7300),
        compress_after=timedelta(days=2),
        chunk_interval=timedelta(days=1),
    )
    timescale.configure(ts5, policy)
    assert rollups.configure(ts5, policy)  # idempotent; the path-independent entry point
    jobs = ts5.execute(
        "select proc_name, hypertable_name, config from timescaledb_information.jobs "
        "where hypertable_schema = current_schema() order by 2, 1"
    ).fetchall()
    by = {(p, h): c for p, h, c in jobs}
    assert by[("policy_compression", "observation")]["compress_after"] == "2 days"
    assert by[("policy_retention", "observation")]["drop_after"] == "3650 days"
    assert by[("policy_refresh_continuous_aggregate", "observation_15m")]["start_offset"] == (
        "3 days"
    )
    assert by[("policy_retention", "observation_1d")]["drop_after"] == "7300 days"
    assert len(jobs) == 8
    dims = ts5.execute(
        "select time_interval from timescaledb_information.dimensions "
        "where hypertable_schema = current_schema() and hypertable_name = 'observation'"
    ).fetchall()
    assert dims == [(timedelta(days=1),)]
    assert timescale.run_jobs(ts5) == timescale.job_ids(ts5)  # every job runs without error


def test_0005_query_layer_agrees_with_plain_postgres(
    ts5: Conn, request: pytest.FixtureRequest
) -> None:
    from test_timeseries import as_dict, sample_rows, truth, write_batch

    from quartier.store import rollups, status, timescale, timeseries

    db_url: str = request.getfixturevalue("db_url")
    rows = sample_rows()
    half = len(rows) // 2
    redelivered = [(ds, t, 999.0) for ds, t, _ in rows[:40]]
    assert _write_hooked(ts5, rows[:half]) == half
    assert _write_hooked(ts5, rows[half:] + redelivered) == len(rows) - half
    widths = timeseries.WIDTHS
    start, end = rows[0][1] - timedelta(hours=1), rows[-1][1] + timedelta(hours=1)
    with psycopg.connect(db_url, autocommit=True) as plain:
        write_batch(plain, rows[:half])
        write_batch(plain, rows[half:] + redelivered)

        def agree(stage: str) -> None:
            for name, width in widths.items():
                on_ts = timeseries.aggregate(ts5, [1, 2, 3, 4], width, start, end)
                on_pg = timeseries.aggregate(plain, [1, 2, 3, 4], width, start, end)
                assert on_ts.source == on_pg.source, name
                assert as_dict(on_ts) == as_dict(on_pg) == truth(rows, width), (stage, name)
                assert [s.gaps for s in on_ts.series] == [s.gaps for s in on_pg.series], name
            raw = timeseries.aggregate(ts5, [1, 2, 3], widths["1h"], start, end, source="raw")
            assert as_dict(raw) == truth(rows, widths["1h"]), stage
            for ds in (1, 2, 3, 4):
                assert timeseries.count_observations(ts5, ds) == timeseries.count_observations(
                    plain, ds
                ), (stage, ds)
            assert timeseries.latest(ts5, [1, 2, 3, 4]) == timeseries.latest(plain, [1, 2, 3, 4])

        agree("real-time only (nothing materialized; plain rollups dirty)")
        rollups.refresh_all(plain)
        timescale.refresh_aggregates(ts5)
        agree("materialized / refreshed")
        assert timescale.compress_all(ts5, timedelta(days=7)) >= 1
        agree("compressed chunks")
        late = [(2, rows[0][1] + timedelta(hours=30, minutes=1), 1000.0)]
        assert _write_hooked(ts5, late) == 1  # into a compressed chunk
        write_batch(plain, late)
        rows += late
        timescale.refresh_aggregates(ts5)  # late data: TimescaleDB needs a refresh, plain not
        agree("late reading")

    st = status.collect(ts5)
    assert st.path == "timescaledb" and st.timescaledb_version
    assert st.oldest == rows[0][1] and st.datastreams_with_data == 3
    assert st.parts and all(p.state == "compressed" for p in st.parts)
    assert st.compression_ratio is not None
    assert set(st.rollups) == {"observation_15m", "observation_1h", "observation_1d"}
    assert {j["target"] for j in st.jobs} >= {"observation", "observation_1d"}

    # retention through the path-independent function drops whole chunks
    before = _one(ts5, "select count(*) from observation")
    dropped = ts5.execute(
        "select quartier_drop_observation_partitions(%s)", (rows[0][1] + timedelta(days=2),)
    ).fetchall()
    assert dropped and _one(ts5, "select count(*) from observation") < before
