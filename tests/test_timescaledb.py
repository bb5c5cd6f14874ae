"""Quartier on a real TimescaleDB engine: the whole migration runner, the ingest writer, the query
layer, the archive import and the TimescaleDB policies, compared with plain PostgreSQL where the
two paths must agree.

The engine is PGlite with TimescaleDB (deploy/pglite, started once for this module by
tests/timescale_engine.py, with the PostGIS stand-in), or the server in QUARTIER_TEST_TIMESCALE_URL
(a throwaway database: the tests migrate it and empty its tables). ``migrate()`` runs once for the
module; each test starts from empty tables. PGlite has a single backend session and accepts one
connection at a time: a test holds no connection of its own while Quartier code (BatchWriter, the
archive import) has one. See docs/timescaledb-testing.md for what this proves and what it does not.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_writer_fallback import (
    SECRET,
    T0,
    _msg,
    _reading,
    result_tuple,
    sample_batches,
    stored,
)
from timescale_engine import REQUIRED_ENV, Engine, EngineUnavailable, required, timescale_engine
from timescale_engine import connect as engine_connect

from quartier.config import IngestSettings, Settings
from quartier.errors import MigrationError, UnsupportedVersionError
from quartier.ingest.model import Batch
from quartier.ingest.pipeline import build_batch
from quartier.ingest.writer import BatchWriter
from quartier.pseudonym import Pseudonymizer
from quartier.store import migrate as migrate_module
from quartier.store import rollups, status, timescale, timeseries
from quartier.store.migrate import (
    available_migrations,
    check_timescaledb_version,
    migrate,
    storage_path,
    timescaledb_version,
)
from quartier.store.policy import StorePolicy

pytestmark = pytest.mark.services
log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[object, ...]]
AIR = Path(__file__).parent / "data" / "air_quality"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LIMIT_GUC = "timescaledb.max_tuples_decompressed_per_dml_transaction"


@pytest.fixture(scope="module")
def timescale_server() -> Iterator[Engine]:
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
def migrated(timescale_server: Engine) -> tuple[Engine, str, list[str]]:
    """Quartier's real migration runner, once, on the engine: (engine, path, files applied)."""
    path, applied = migrate(timescale_server.url)
    return timescale_server, path, applied


@contextlib.contextmanager
def engine_conn(url: str) -> Iterator[Conn]:
    """The test's own connection to the engine (close it before Quartier code connects)."""
    with engine_connect(url) as conn:
        conn.execute("set timezone = 'UTC'")
        yield conn


def _empty(conn: Conn) -> None:
    conn.execute("truncate observation, observation_latest, speedtest, ingest_reject")
    conn.execute(
        "truncate thing, sensor, observed_property, location, feature_of_interest, device cascade"
    )
    timescale.refresh_aggregates(conn)  # nothing left to materialize: empties them
    conn.execute("select set_chunk_time_interval('observation', interval '7 days')")
    conn.execute(f"reset {LIMIT_GUC}")


_KIND: dict[str, str] = {}


def migrated_kind(url: str) -> str:
    """ "pglite" or "external": the engine behind ``url``."""
    return _KIND[url]


@pytest.fixture
def ts(migrated: tuple[Engine, str, list[str]]) -> str:
    """The URL of the migrated engine, with every table empty."""
    url = migrated[0].url
    _KIND[url] = migrated[0].kind
    with engine_conn(url) as conn:
        _empty(conn)
    return url


def write_all(url: str, batches: list[Batch], **kw: Any) -> list[tuple[int, int, int, int]]:
    w = BatchWriter(url, auto_register=True, pseudonyms=Pseudonymizer(SECRET), **kw)
    try:
        return [result_tuple(w.write(b)) for b in batches]
    finally:
        w.close()


def stream_ids(url: str) -> dict[tuple[str, str], int]:
    with engine_connect(url) as conn:
        rows = conn.execute(
            "select d.device_key, dd.quantity, dd.datastream_id from device_datastream dd "
            "join device d on d.id = dd.device_id"
        ).fetchall()
    return {(str(k), str(q)): int(str(i)) for k, q, i in rows}


# ------------------------------------------------------------------------ migration runner


def test_version_check_refuses_timescaledb_older_than_the_features_used() -> None:
    for ok in ("2.14.0", "2.14", "2.23.0-dev", "2.17.2", "3.0.0"):
        check_timescaledb_version(ok)
    for old in ("2.13.1", "2.9.3", "1.7.5"):
        with pytest.raises(UnsupportedVersionError, match=rf"TimescaleDB {old} is too old.*2\.14"):
            check_timescaledb_version(old)
    with pytest.raises(UnsupportedVersionError, match="cannot read"):
        check_timescaledb_version("(not created)")
    assert issubclass(UnsupportedVersionError, MigrationError)  # the CLI prints it as one line


def test_migrate_applies_every_migration_on_timescaledb(
    migrated: tuple[Engine, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, path, applied = migrated
    url = engine.url
    assert path == "timescaledb"
    expected = [
        f"{m.version:04d}_{m.name}" + (f".{m.variant}" if m.variant else "")
        for m in available_migrations("timescaledb")
    ]
    if engine.kind == "pglite":  # a fresh engine: everything was applied by this run
        assert applied == expected
    with engine_conn(url) as conn:
        names = [r[0] for r in conn.execute("select name from schema_migrations order by version")]
        assert names == expected
        assert storage_path(conn) == "timescaledb"
        # the setting can refuse TimescaleDB (decided before the first migration)
        assert migrate_module._decide_path(conn, "postgres") == "postgres"
        assert migrate_module._decide_path(conn, "auto") == "timescaledb"
        version = timescaledb_version(conn)
        assert version is not None and check_timescaledb_version(version) >= (2, 14, 0)
        dims = conn.execute(
            "select column_name, time_interval from timescaledb_information.dimensions "
            "where hypertable_name = 'observation'"
        ).fetchall()
        assert dims == [("phenomenon_time", timedelta(days=7))]
        settings = dict(
            conn.execute(
                "select attname, coalesce(segmentby_column_index, -orderby_column_index) "
                "from timescaledb_information.compression_settings "
                "where hypertable_name = 'observation'"
            ).fetchall()
        )
        assert settings == {"datastream_id": 1, "phenomenon_time": -1}
        caggs = conn.execute(
            "select view_name, materialized_only from timescaledb_information.continuous_aggregates"
            " order by 1"
        ).fetchall()
        assert caggs == [
            ("observation_15m", False),
            ("observation_1d", False),
            ("observation_1h", False),
        ]
    assert migrate(url) == ("timescaledb", [])  # idempotent
    # a TimescaleDB older than the features used is refused, with the version in the message
    monkeypatch.setattr(migrate_module, "MIN_TIMESCALEDB", (99, 0, 0))
    with pytest.raises(UnsupportedVersionError, match=rf"TimescaleDB {version} is too old"):
        migrate(url)


# ------------------------------------------------------------------------------ ingest writer


def _comparable(s: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """stored() without the geometry column (PostGIS gives EWKB, the stand-in its input text)."""
    return {**s, "speedtest": [r[:3] + r[4:] for r in s["speedtest"]]}


def test_batchwriter_stores_on_timescaledb_what_it_stores_on_postgres(
    ts: str, migrated: tuple[Engine, str, list[str]], request: pytest.FixtureRequest
) -> None:
    db_url: str = request.getfixturevalue("db_url")  # a fresh plain PostgreSQL database
    w = BatchWriter(ts, auto_register=True, pseudonyms=Pseudonymizer(SECRET))
    try:
        on_ts = [result_tuple(w.write(b)) for b in sample_batches()]
        use_copy, has_timescaledb = w._session(w._connection())
    finally:
        w.close()
    assert has_timescaledb
    if migrated[0].kind == "pglite":
        assert not use_copy  # recognised: PGlite dies on COPY FROM STDIN
    on_pg = write_all(db_url, sample_batches())
    assert on_ts == on_pg
    assert on_ts[1][1] > 0 and on_ts[2] == (0, 0, 6, 0)  # redeliveries; 6 speed tests, 1 again
    a, b = stored(ts), stored(db_url)
    assert _comparable(a) == _comparable(b)
    assert a["speedtest"][0][3] == "SRID=4326;POINT(13.405 52.52)" or migrated[0].kind != "pglite"


class _LimitProbe(BatchWriter):
    """BatchWriter that records the decompression limit in force in its batch transaction."""

    def __init__(self, url: str) -> None:
        super().__init__(url, auto_register=True)
        self.seen: list[str] = []

    def _copy(self, conn: Any, table: str, rows: Any, columns: Any) -> None:
        super()._copy(conn, table, rows, columns)
        row = conn.execute("select current_setting(%s)", (LIMIT_GUC,)).fetchone()
        self.seen.append(str(row[0]))


def test_late_write_into_compressed_chunks_with_the_decompression_limit_lifted(ts: str) -> None:
    write_all(ts, sample_batches())
    ids = stream_ids(ts)
    s1, s2 = ids[("s-1", "pm10")], ids[("s-2", "pm25")]
    with engine_conn(ts) as conn:
        assert timescale.compress_all(conn, timedelta(0)) >= 2
        before = conn.execute("select count(*) from observation").fetchone()
        assert before is not None
        # a limit far below one compressed batch (TimescaleDB's default is 100000); on PGlite the
        # session is shared, so the writer's connection starts with it too
        conn.execute(f"set {LIMIT_GUC} = 10")
        # it is in force: changing compressed rows fails
        with pytest.raises(psycopg.Error, match=r"decompression limit"), conn.transaction():
            conn.execute("update observation set result = 0 where datastream_id = %s", (s1,))
    late = build_batch(
        [
            _msg("fb", "s-1", [_reading("pm10", T0 + timedelta(days=1, minutes=5), 77.0)]),
            _msg("fb", "s-2", [_reading("pm25", T0 + timedelta(days=8, minutes=1), 66.0)]),
            _msg("fb", "s-1", [_reading("pm10", T0, 55.0)]),  # redelivered: already stored
        ],
        IngestSettings(max_future_seconds=600),
        NOW,
    )
    # a real server takes the same limit from the connection's startup options
    w = _LimitProbe(psycopg.conninfo.make_conninfo(ts, options=f"-c {LIMIT_GUC}=10"))
    try:
        assert result_tuple(w.write(late)) == (2, 1, 0, 0)
    finally:
        w.close()
    # the optimistic insert met the redelivery; the staging path ran with the limit lifted (for
    # the batch transaction only)
    assert w.fallbacks == 1 and w.seen == ["0"]
    with engine_conn(ts) as conn:
        if migrated_kind(ts) == "pglite":  # the shared session: the SET LOCAL did not leak
            assert conn.execute(f"show {LIMIT_GUC}").fetchone() == ("10",)
        got = conn.execute(
            "select phenomenon_time, result from observation "
            "where (datastream_id, phenomenon_time) in ((%s, %s), (%s, %s), (%s, %s)) order by 1",
            (s1, T0, s1, T0 + timedelta(days=1, minutes=5), s2, T0 + timedelta(days=8, minutes=1)),
        ).fetchall()
        assert [r[1] for r in got] == [10.0, 77.0, 66.0]  # the first value stays
        after = conn.execute("select count(*) from observation").fetchone()
        assert after is not None and int(str(after[0])) == int(str(before[0])) + 2
        # the rows went into chunks that are still (partially) compressed
        assert conn.execute(
            "select bool_and(is_compressed) from timescaledb_information.chunks "
            "where hypertable_name = 'observation' and range_start <= %s",
            (T0 + timedelta(days=8),),
        ).fetchone() == (True,)


# -------------------------------------------------------------------------------- query layer


def test_query_layer_answers_the_same_on_both_paths(
    ts: str, request: pytest.FixtureRequest
) -> None:
    """The same batches through BatchWriter on TimescaleDB and on plain PostgreSQL: Quartier's
    aggregates (every width, every source it picks), counts and latest values agree, before and
    after materializing, on compressed chunks, and after a late reading."""
    db_url: str = request.getfixturevalue("db_url")
    batches = sample_batches()
    assert write_all(ts, batches) == write_all(db_url, sample_batches())
    ids_ts, ids_pg = stream_ids(ts), stream_ids(db_url)
    assert ids_ts.keys() == ids_pg.keys()
    keys = sorted(ids_ts)
    start, end = T0 - timedelta(hours=1), T0 + timedelta(days=14)

    def by_key(agg: timeseries.Aggregate, ids: dict[tuple[str, str], int]) -> dict[Any, Any]:
        back = {v: k for k, v in ids.items()}
        return {
            (back[s.datastream_id], r[0]): tuple(r[1:])
            for s in agg.series
            for r in s.rows(agg.functions)
        }

    def agree(stage: str) -> None:
        with engine_conn(ts) as a, psycopg.connect(db_url, autocommit=True) as b:
            b.execute("set timezone = 'UTC'")
            la, lb = [ids_ts[k] for k in keys], [ids_pg[k] for k in keys]
            for name, width in timeseries.WIDTHS.items():
                on_ts = timeseries.aggregate(a, la, width, start, end)
                on_pg = timeseries.aggregate(b, lb, width, start, end)
                assert on_ts.source == on_pg.source, (stage, name)
                assert by_key(on_ts, ids_ts) == by_key(on_pg, ids_pg), (stage, name)
                assert len(by_key(on_ts, ids_ts)) > len(keys), (stage, name)
            raw = timeseries.aggregate(a, la, timeseries.WIDTHS["1h"], start, end, source="raw")
            fast = timeseries.aggregate(a, la, timeseries.WIDTHS["1h"], start, end)
            assert by_key(raw, ids_ts) == by_key(fast, ids_ts), stage
            for k in keys:
                assert timeseries.count_observations(a, ids_ts[k]) == timeseries.count_observations(
                    b, ids_pg[k]
                ), (stage, k)
            lat_a = {
                (k, x.phenomenon_time, x.result)
                for k in keys
                for x in timeseries.latest(a, [ids_ts[k]])
            }
            lat_b = {
                (k, x.phenomenon_time, x.result)
                for k in keys
                for x in timeseries.latest(b, [ids_pg[k]])
            }
            assert lat_a == lat_b and len(lat_a) == len(keys), stage

    agree("real-time only (nothing materialized; plain rollups dirty)")
    with engine_conn(ts) as a, psycopg.connect(db_url, autocommit=True) as b:
        rollups.refresh_all(b)
        timescale.refresh_aggregates(a)
    agree("materialized / refreshed")
    with engine_conn(ts) as a:
        assert timescale.compress_all(a, timedelta(0)) >= 2
    agree("compressed chunks")
    late = build_batch(
        [_msg("fb", "s-2", [_reading("pm25", T0 + timedelta(hours=30, minutes=1), 1000.0)])],
        IngestSettings(max_future_seconds=600),
        NOW,
    )
    assert write_all(ts, [late]) == write_all(db_url, [late]) == [(1, 0, 0, 0)]
    with engine_conn(ts) as a:
        timescale.refresh_aggregates(a)  # late data: TimescaleDB needs a refresh, plain does not
    agree("late reading")

    with engine_conn(ts) as a:
        st = status.collect(a)
        assert st.path == "timescaledb" and st.timescaledb_version
        assert st.oldest == T0 and st.datastreams_with_data == len(keys)
        assert st.parts and all(p.state == "compressed" for p in st.parts)
        assert set(st.rollups) == {"observation_15m", "observation_1h", "observation_1d"}
        # retention through the path-independent function drops whole chunks
        before = a.execute("select count(*) from observation").fetchone()
        dropped = a.execute(
            "select quartier_drop_observation_partitions(%s)", (T0 + timedelta(days=8),)
        ).fetchall()
        after = a.execute("select count(*) from observation").fetchone()
        assert dropped and after is not None and before is not None
        assert int(str(after[0])) < int(str(before[0]))


# ----------------------------------------------------------------------------- archive import


def test_archive_import_shows_in_the_continuous_aggregates(ts: str) -> None:
    from quartier.ingest.archive import import_sensor_community_csv

    # recent data, materialized: the aggregates' watermark is now far past the archive's day
    write_all(ts, sample_batches())
    with engine_conn(ts) as conn:
        timescale.refresh_aggregates(conn)
    settings = Settings(_env_file=None, database={"url": ts})  # type: ignore[call-arg]
    res = import_sensor_community_csv(
        settings, [AIR / "stuttgart_2019-12-31_sds011_sensor_553.csv"]
    )
    assert res.stored == 456 and res.aggregates_refreshed
    assert res.first is not None and res.first.date() == datetime(2019, 12, 31).date()
    day = datetime(2019, 12, 31, tzinfo=UTC)
    with engine_conn(ts) as conn:
        ids = [
            int(str(r[0]))
            for r in conn.execute(
                "select datastream_id from device_datastream dd "
                "join device d on d.id = dd.device_id where d.device_key = '553' order by 1"
            )
        ]
        assert len(ids) == 2  # PM10 and PM2.5
        raw = conn.execute(
            "select datastream_id, count(*), sum(result) from observation "
            "where datastream_id = any(%s) group by 1 order by 1",
            (ids,),
        ).fetchall()
        assert sum(int(str(r[1])) for r in raw) == 456
        for agg in timescale.AGGREGATES:
            got = conn.execute(
                f"select datastream_id, sum(n_all), sum(s) from {agg} "
                "where datastream_id = any(%s) group by 1 order by 1",
                (ids,),
            ).fetchall()
            assert [(r[0], int(str(r[1])), pytest.approx(r[2])) for r in got] == [
                (r[0], int(str(r[1])), r[2]) for r in raw
            ], agg
        # and through Quartier's query layer
        hourly = timeseries.aggregate(conn, ids, timedelta(hours=1), day, day + timedelta(days=1))
        assert sum(r[1] for s in hourly.series for r in s.rows(("count",))) == 456


# ------------------------------------------------------------------------------- policies


def test_configure_sets_policies_and_every_job_runs(ts: str) -> None:
    policy = StorePolicy(
        retention=timedelta(days=3650),
        rollup_retention=timedelta(days=7300),
        compress_after=timedelta(days=2),
        chunk_interval=timedelta(days=1),
    )
    write_all(ts, sample_batches())
    with engine_conn(ts) as conn:
        timescale.configure(conn, policy)
        assert rollups.configure(conn, policy)  # idempotent; the path-independent entry point
        jobs = conn.execute(
            "select proc_name, hypertable_name, config from timescaledb_information.jobs "
            "where hypertable_schema = current_schema() order by 2, 1"
        ).fetchall()
        by = {(p, h): c for p, h, c in jobs}
        assert by[("policy_compression", "observation")]["compress_after"] == "2 days"  # type: ignore[index]
        assert by[("policy_retention", "observation")]["drop_after"] == "3650 days"  # type: ignore[index]
        assert by[("policy_retention", "observation_1d")]["drop_after"] == "7300 days"  # type: ignore[index]
        assert len(jobs) == 8
        dims = conn.execute(
            "select time_interval from timescaledb_information.dimensions "
            "where hypertable_name = 'observation'"
        ).fetchall()
        assert dims == [(timedelta(days=1),)]
        assert timescale.run_jobs(conn) == timescale.job_ids(conn)  # every job runs without error
        # the compression job compressed the chunks older than 2 days
        st = timescale.status(conn)
        assert st.chunks and all(c["is_compressed"] for c in st.chunks)
