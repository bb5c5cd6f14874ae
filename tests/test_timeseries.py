"""The time-series query layer and the rollup upkeep on plain PostgreSQL (quartier.store.timeseries,
quartier.store.rollups, quartier.store.status). The TimescaleDB side of the same behaviour is in
tests/test_timescaledb.py."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from rich.console import Console

from quartier.cli.db import render_status
from quartier.config import DatabaseSettings
from quartier.errors import BadRequestError, ConfigError
from quartier.store import rollups, status, timeseries
from quartier.store.policy import StorePolicy
from quartier.store.timeseries import WIDTHS, aggregate, count_observations, latest, raw_range

pytestmark = pytest.mark.services

Conn = psycopg.Connection[tuple[Any, ...]]
Row = tuple[int, datetime, float | None]
T0 = datetime(2024, 1, 30, 21, 4, tzinfo=UTC)  # across a day and a month boundary


@pytest.fixture
def conn(db_url: str) -> Iterator[Conn]:
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("set timezone = 'Europe/Berlin'")  # answers must not depend on it
        yield c


def write_batch(conn: Conn, rows: list[Row]) -> int:
    """One batch as quartier/ingest/writer.py stores it, plus the per-batch hook."""
    conn.execute(
        "create temp table if not exists _obs_stage (datastream_id bigint, "
        "phenomenon_time timestamptz, result double precision, parameters jsonb) "
        "on commit delete rows"
    )
    with conn.transaction():
        if rows:
            lo, hi = min(r[1] for r in rows), max(r[1] for r in rows)
            conn.execute("select quartier_ensure_observation_partitions(%s, %s)", (lo, hi))
        with conn.cursor().copy(
            "copy _obs_stage (datastream_id, phenomenon_time, result) from stdin"
        ) as copy:
            for r in rows:
                copy.write_row(r)
        cur = conn.execute(
            "insert into observation (datastream_id, phenomenon_time, result, parameters) "
            "select datastream_id, phenomenon_time, result, parameters from _obs_stage "
            "on conflict do nothing"
        )
        conn.execute("select quartier_observations_staged()")
        return cur.rowcount


def sample_rows() -> list[Row]:
    """3 datastreams, a reading every 7 minutes for 3 days; values exact in binary (so sums do
    not depend on the order of addition); some results NULL; datastream 3 has a 5-hour hole."""
    rows: list[Row] = []
    for ds in (1, 2, 3):
        for i in range(3 * 24 * 60 // 7):
            t = T0 + timedelta(minutes=7 * i)
            if ds == 3 and T0 + timedelta(hours=20) <= t < T0 + timedelta(hours=25):
                continue
            v = None if (i + ds) % 11 == 0 else ((i * ds) % 37) * 0.25 - 3
            rows.append((ds, t, v))
    return rows


#: the API's bucket widths in seconds, written down by hand (not read from the code under test)
WIDTH_SECONDS = {
    "1min": 60,
    "5min": 5 * 60,
    "10min": 10 * 60,
    "15min": 15 * 60,
    "30min": 30 * 60,
    "1h": 3600,
    "2h": 2 * 3600,
    "3h": 3 * 3600,
    "6h": 6 * 3600,
    "12h": 12 * 3600,
    "1d": 86400,
    "1w": 7 * 86400,
}
#: buckets are aligned to 2000-01-03T00:00Z, a Monday (so weeks start on Mondays), in seconds
#: since 1970: 30 years and 2 days, 7 of them leap days
MONDAY_2000_01_03 = (30 * 365 + 7 + 2) * 86400


def truth(rows: list[Row], width_s: int) -> dict[tuple[int, datetime], tuple[Any, ...]]:
    """count, sum, avg, min, max per (datastream, bucket), bucketed with integer arithmetic."""
    acc: dict[tuple[int, datetime], list[Any]] = defaultdict(list)
    for ds, t, v in rows:
        s = int(t.timestamp())
        start = MONDAY_2000_01_03 + (s - MONDAY_2000_01_03) // width_s * width_s
        acc[(ds, datetime.fromtimestamp(start, UTC))].append(v)
    out = {}
    for key, vals in acc.items():
        nums = [v for v in vals if v is not None]
        s = sum(nums) if nums else None
        out[key] = (
            len(vals),
            s,
            (s / len(nums)) if nums else None,
            min(nums) if nums else None,
            max(nums) if nums else None,
        )
    return out


def as_dict(agg: timeseries.Aggregate) -> dict[tuple[int, datetime], tuple[Any, ...]]:
    return {
        (s.datastream_id, r[0]): tuple(r[1:]) for s in agg.series for r in s.rows(agg.functions)
    }


def test_aggregates_exact_from_every_source_before_and_after_refresh(conn: Conn) -> None:
    rows = sample_rows()
    # two batches, the second with redeliveries (other values) that must not count
    assert write_batch(conn, rows[: len(rows) // 2]) == len(rows) // 2
    redelivered = [(ds, t, 999.0) for ds, t, _ in rows[:50]]
    assert write_batch(conn, rows[len(rows) // 2 :] + redelivered) == len(rows) - len(rows) // 2
    start, end = T0 - timedelta(hours=1), T0 + timedelta(days=3, hours=1)

    assert {name: timedelta(seconds=sec) for name, sec in WIDTH_SECONDS.items()} == WIDTHS
    # a few buckets by hand: T0 is Tuesday 2024-01-30 21:04Z, the data lasts 3 days
    week, day = truth(rows, WIDTH_SECONDS["1w"]), truth(rows, WIDTH_SECONDS["1d"])
    assert sorted(week) == [(ds, datetime(2024, 1, 29, tzinfo=UTC)) for ds in (1, 2, 3)]
    assert sorted({t for _, t in day}) == [datetime(2024, 1, d, tzinfo=UTC) for d in (30, 31)] + [
        datetime(2024, 2, d, tzinfo=UTC) for d in (1, 2)
    ]
    assert day[(1, datetime(2024, 1, 30, tzinfo=UTC))][0] == 26  # 21:04 … 23:59, every 7 min

    def check(stage: str) -> None:
        for name, sec in WIDTH_SECONDS.items():
            width = timedelta(seconds=sec)
            auto = aggregate(conn, [1, 2, 3], width, start, end)
            raw = aggregate(conn, [1, 2, 3], width, start, end, source="raw")
            assert raw.source == "raw"
            expected_source = {
                "15min": "observation_15m",
                "30min": "observation_15m",
                "1h": "observation_1h",
                "2h": "observation_1h",
                "3h": "observation_1h",
                "6h": "observation_1h",
                "12h": "observation_1h",
                "1d": "observation_1d",
                "1w": "observation_1d",
            }.get(name, "raw")
            assert auto.source == expected_source, name
            assert as_dict(auto) == as_dict(raw) == truth(rows, sec), (stage, name)

    check("dirty, before any refresh")  # rollups empty: everything read through the overlay
    res = rollups.refresh_all(conn)
    assert res.buckets_15m > 0 and not res.skipped
    assert conn.execute("select count(*) from observation_dirty").fetchone() == (0,)
    check("after refresh")
    # late data for one bucket: only that bucket is dirty, answers stay exact
    late: list[Row] = [(2, T0 + timedelta(hours=30, minutes=1), 1000.0)]
    write_batch(conn, late)
    assert conn.execute("select count(*) from observation_dirty").fetchone() == (1,)
    rows += late
    check("one late reading, not refreshed")
    res = rollups.refresh(conn)
    assert (res.buckets_15m, res.buckets_1h, res.buckets_1d) == (1, 1, 1)
    check("late reading refreshed")


def test_refresh_equals_bulk_rebuild(conn: Conn) -> None:
    write_batch(conn, sample_rows())
    rollups.refresh_all(conn, limit=100)  # several rounds

    def snapshot() -> dict[str, list[tuple[Any, ...]]]:
        return {
            t: conn.execute(f"select * from {t} order by 1, 2").fetchall()
            for t in ("observation_15m", "observation_1h", "observation_1d")
        }

    incremental = snapshot()
    rollups.rebuild(conn, T0, T0 + timedelta(days=3))
    assert snapshot() == incremental
    assert len(incremental["observation_1d"]) == 3 * 4  # 3 datastreams × 4 UTC days


def test_gaps_are_reported(conn: Conn) -> None:
    write_batch(conn, sample_rows())
    start = T0.replace(minute=0) + timedelta(hours=3)
    agg = aggregate(conn, [3, 4], timedelta(hours=1), start, start + timedelta(days=1))
    s3, s4 = agg.series
    assert [(g.start, g.end) for g in s3.gaps] == [
        (T0.replace(minute=0) + timedelta(hours=21), T0.replace(minute=0) + timedelta(hours=25))
    ]
    assert len(s3.time) == 24 - 4
    assert s4.time == [] and [(g.start, g.end) for g in s4.gaps] == [(agg.start, agg.end)]
    # the range is widened to whole buckets
    agg = aggregate(conn, [1], timedelta(days=1), T0, T0 + timedelta(minutes=1))
    assert (agg.start, agg.end) == (
        T0.replace(hour=0, minute=0),
        T0.replace(hour=0, minute=0) + timedelta(days=1),
    )


def test_latest_values_first_value_wins(conn: Conn) -> None:
    t = T0
    write_batch(conn, [(1, t, 1.0), (1, t + timedelta(minutes=1), 2.0), (2, t, 5.0)])
    # an older reading, a redelivery with another value, a duplicate within the batch
    write_batch(
        conn,
        [
            (1, t - timedelta(days=1), -1.0),
            (2, t, 99.0),
            (3, t, 7.0),
            (3, t, 8.0),
        ],
    )
    got = {x.datastream_id: (x.phenomenon_time, x.result) for x in latest(conn, [1, 2, 3, 4])}
    assert got == {1: (t + timedelta(minutes=1), 2.0), 2: (t, 5.0), 3: (t, 7.0)}
    stored = conn.execute(
        "select result from observation where datastream_id = 3 and phenomenon_time = %s", (t,)
    ).fetchone()
    assert stored == (7.0,)  # the same row the observation insert kept


def test_rebuild_latest_for_data_loaded_past_the_writer(conn: Conn) -> None:
    thing = conn.execute("insert into thing (name) values ('x') returning id").fetchone()
    sensor = conn.execute("insert into sensor (name) values ('s') returning id").fetchone()
    op = conn.execute(
        "insert into observed_property (name, definition) values ('p', 'urn:p') returning id"
    ).fetchone()
    assert thing and sensor and op
    ds = conn.execute(
        "insert into datastream (name, unit_of_measurement, thing_id, sensor_id, "
        "observed_property_id) values ('d', '{}', %s, %s, %s) returning id",
        (thing[0], sensor[0], op[0]),
    ).fetchone()
    assert ds
    conn.execute("select quartier_ensure_observation_partitions(%s, %s)", (T0, T0))
    conn.execute(
        "insert into observation (datastream_id, phenomenon_time, result) values (%s, %s, 3.5)",
        (ds[0], T0),
    )
    assert latest(conn, [ds[0]]) == []
    assert timeseries.rebuild_latest(conn) == 1
    assert [(x.phenomenon_time, x.result) for x in latest(conn, [ds[0]])] == [(T0, 3.5)]


def test_raw_range(conn: Conn) -> None:
    write_batch(conn, sample_rows())
    obs = raw_range(conn, 1, T0, T0 + timedelta(days=7), top=10)
    assert [o.phenomenon_time for o in obs] == [T0 + timedelta(minutes=7 * i) for i in range(10)]
    last = raw_range(conn, 1, T0, T0 + timedelta(days=7), top=1, order="desc")
    assert last[0].phenomenon_time == latest(conn, [1])[0].phenomenon_time


def test_count_observations_exact_with_dirty_and_after_retention(conn: Conn) -> None:
    rows = sample_rows()
    old = [(1, datetime(2023, 10, 5, 12, tzinfo=UTC) + timedelta(hours=i), None) for i in range(30)]
    write_batch(conn, rows + old)
    n1 = sum(1 for r in rows + old if r[0] == 1)
    assert count_observations(conn, 1) == (n1, True)  # all dirty: counted through the overlay
    rollups.refresh_all(conn)
    assert count_observations(conn, 1) == (n1, True)
    assert count_observations(conn, 42) == (0, True)
    policy = StorePolicy(retention=timedelta(days=60))
    dropped = rollups.apply_retention(conn, policy, now=datetime(2024, 1, 1, tzinfo=UTC))
    assert dropped == ["observation_p202310"]
    # the rollups still hold October; the count starts at the oldest raw day
    assert conn.execute(
        "select count(*) from observation_1d where bucket < '2023-11-01Z'"
    ).fetchone() == (2,)
    assert count_observations(conn, 1) == (n1 - len(old), True)


def _physical(conn: Conn, part: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        f"select datastream_id, phenomenon_time, result from {part} order by ctid"
    ).fetchall()


def test_compaction_rewrites_closed_months_sorted(conn: Conn) -> None:
    rows = sorted(sample_rows(), key=lambda r: r[1])  # in time order, as an ingester writes
    write_batch(conn, rows)
    before = conn.execute(
        "select datastream_id, phenomenon_time, result from observation order by 1, 2"
    ).fetchall()
    jan = _physical(conn, "observation_p202401")
    assert jan != sorted(jan, key=lambda r: (r[0], r[1]))  # not sorted yet: the test can fail

    def indexes(part: str) -> list[tuple[str, str]]:
        """(the parent's index, the partition's) for each index attached to observation's"""
        return conn.execute(
            "select h.inhparent::regclass::text, c.relname from pg_inherits h"
            " join pg_class c on c.oid = h.inhrelid join pg_index i on i.indexrelid = c.oid"
            " where i.indrelid = %s::regclass order by 1",
            (part,),
        ).fetchall()

    parent_indexes = conn.execute(
        "select count(*) from pg_index where indrelid = 'observation'::regclass"
    ).fetchone()
    assert parent_indexes is not None
    had = {part: indexes(part) for part in ("observation_p202401", "observation_p202402")}
    assert rollups.compact(conn, datetime(2024, 3, 1, tzinfo=UTC)) == [
        "observation_p202401",
        "observation_p202402",
    ]
    for part in ("observation_p202401", "observation_p202402"):
        phys = _physical(conn, part)
        assert phys == sorted(phys, key=lambda r: (r[0], r[1]))
        # still a partition of observation, with the parent's indexes attached under their names
        assert indexes(part) == had[part] and len(had[part]) == parent_indexes[0]
        names = {name for _, name in had[part]}
        assert {f"{part}_phenomenon_time_idx", f"{part}_pkey"} <= names
    after = conn.execute(
        "select datastream_id, phenomenon_time, result from observation order by 1, 2"
    ).fetchall()
    assert after == before
    # the primary key still refuses a second value for a stored (datastream, time)
    assert write_batch(conn, [(1, T0, 99.0), (1, T0 + timedelta(seconds=1), 1.0)]) == 1
    assert conn.execute(
        "select result from observation where datastream_id = 1 and phenomenon_time = %s", (T0,)
    ).fetchone() == (before[0][2],)
    week = [(o.phenomenon_time, o.result) for o in raw_range(conn, 2, T0, T0 + timedelta(days=7))]
    assert week == [(t, v) for ds, t, v in before if ds == 2]
    assert rollups.compact(conn, datetime(2024, 3, 1, tzinfo=UTC)) == []


def test_compaction_gives_way_to_a_busy_table(conn: Conn, db_url: str) -> None:
    write_batch(conn, sample_rows())
    with psycopg.connect(db_url) as reader:
        reader.execute("select count(*) from observation")  # holds a lock until it ends
        assert rollups.compact(conn, datetime(2024, 3, 1, tzinfo=UTC), lock_timeout_s=0.2) == []
    assert not conn.execute("select to_regclass('observation_p202401_sorted')").fetchone()[0]
    assert len(rollups.compact(conn, datetime(2024, 3, 1, tzinfo=UTC))) == 2


def test_partitions_ahead_compaction_and_maintain(conn: Conn) -> None:
    write_batch(conn, sample_rows())
    now = datetime(2024, 3, 20, tzinfo=UTC)
    out = rollups.maintain(conn, StorePolicy(partitions_ahead_months=2), now=now)
    assert out["path"] == "postgres"
    assert out["partitions_created"] >= 2  # March (if missing), April, May …
    assert out["refreshed"].buckets_15m > 0
    # January and February ended more than 7 days (compress_after) before now
    assert out["compacted"] == ["observation_p202401", "observation_p202402"]
    names = {r[0] for r in conn.execute("select relname from observation_partition_compacted")}
    assert names == {"observation_p202401", "observation_p202402"}
    assert rollups.maintain(conn, StorePolicy(), now=now)["compacted"] == []
    (done,) = rollups.configure(conn, StorePolicy())
    assert done.endswith("partition(s) created ahead")
    this_month = conn.execute(
        "select to_regclass('observation_p' || to_char(now() at time zone 'UTC', 'YYYYMM'))"
    ).fetchone()
    assert this_month is not None and this_month[0] is not None
    assert count_observations(conn, 2)[0] == sum(1 for r in sample_rows() if r[0] == 2)


def test_policy_is_validated() -> None:
    with pytest.raises(ConfigError, match="rollup_retention must be at least"):
        StorePolicy(retention=timedelta(days=365), rollup_retention=timedelta(days=90))
    with pytest.raises(ConfigError, match="at least 31 days"):
        StorePolicy(retention=timedelta(days=3))
    with pytest.raises(ConfigError, match="whole days"):
        StorePolicy(chunk_interval=timedelta(hours=12))

    settings = DatabaseSettings(retention=timedelta(days=400), partitions_ahead_months=2)
    policy = StorePolicy.from_settings(settings)
    assert policy.retention == timedelta(days=400) and policy.partitions_ahead_months == 2
    assert StorePolicy.from_settings(DatabaseSettings()) == StorePolicy()


def test_bad_requests_say_what_is_wrong(conn: Conn) -> None:
    with pytest.raises(BadRequestError, match="interval='7min' is not supported; use one of"):
        timeseries.parse_width("7min")
    assert timeseries.parse_width("PT15M") == timedelta(minutes=15)
    assert timeseries.parse_width("P1W") == timedelta(days=7)
    with pytest.raises(BadRequestError, match="unknown function 'median'"):
        timeseries.parse_functions("avg,median")
    with pytest.raises(BadRequestError, match="has no time zone"):
        aggregate(conn, [1], timedelta(hours=1), datetime(2024, 1, 1), T0)
    with pytest.raises(BadRequestError, match="must be after from"):
        aggregate(conn, [1], timedelta(hours=1), T0, T0)
    with pytest.raises(BadRequestError, match="shorten the range or choose a coarser interval"):
        aggregate(conn, [1, 2], timedelta(minutes=1), T0, T0 + timedelta(days=400))
    with pytest.raises(BadRequestError, match="no rollup serves interval PT5M"):
        aggregate(conn, [1], timedelta(minutes=5), T0, T0 + timedelta(days=1), source="rollup")


def test_status_plain(conn: Conn) -> None:
    write_batch(conn, sample_rows())
    rollups.refresh_all(conn)
    conn.execute("analyze observation")
    st = status.collect(conn)
    assert st.path == "postgres"
    assert st.oldest == T0
    assert st.newest == max(r[1] for r in sample_rows())
    assert st.datastreams_with_data == 3
    assert {"observation_p202401", "observation_p202402", "observation_default"} <= {
        p.name for p in st.parts
    }
    assert st.observation_rows_estimate == len(sample_rows())
    assert st.dirty_buckets == 0
    console = Console(record=True, width=160)
    console.print(render_status(st))
    text = console.export_text()
    assert "plain PostgreSQL" in text and "observation_p202401" in text and "rollup refresh" in text


def test_one_maintenance_round_at_a_time(conn: Conn, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute("select pg_advisory_lock(%s)", (rollups._MAINTAIN_LOCK,))
        assert rollups.maintain(conn, StorePolicy()) == {
            "path": "postgres",
            "skipped": True,
        }
        other.execute("select pg_advisory_unlock(%s)", (rollups._MAINTAIN_LOCK,))
    assert "skipped" not in rollups.maintain(conn, StorePolicy())
