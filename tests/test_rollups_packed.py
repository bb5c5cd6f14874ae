"""Packed rollups (migration 0045, plain PostgreSQL): ``observation_1h_packed`` (a datastream's
hours of one UTC day per row) and ``observation_1d_packed`` (its days of one UTC month) hold
exactly what the rollup rows hold, after random batches with late data, redeliveries and deletes,
before and after the refresh, after a bulk rebuild, after retention, and after the migration's
backfill; and the query layer's answers read from them equal a Python computation over the raw
rows and the answers read from the rollup rows."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import numpy as np
import orjson
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from test_timeseries import WIDTH_SECONDS, truth, write_batch

from quartier.api.aggregate_columns import columns_response
from quartier.api.sensorthings import iso
from quartier.store import rollups, timeseries
from quartier.store.policy import StorePolicy
from quartier.store.sta_write import delete_observations

pytestmark = pytest.mark.services

Conn = psycopg.Connection[tuple[Any, ...]]
Row = tuple[int, datetime, float | None]
#: Monday 2024-01-29 18:00Z: the data crosses three UTC days and the end of January
T0 = datetime(2024, 1, 29, 18, 0, tzinfo=UTC)
DATASTREAMS = (1, 2, 3, 4)
PACKED = {"1h": "observation_1h_packed", "1d": "observation_1d_packed"}
ROLLUP = {"1h": "observation_1h", "1d": "observation_1d"}


@pytest.fixture
def conn(db_url: str) -> Iterator[Conn]:
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("set timezone = 'America/St_Johns'")  # UTC-3:30: answers must not move
        yield c


class Store:
    """What the store must hold: the first value stored per (datastream, time) wins."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, datetime], float | None] = {}

    def add(self, rows: list[Row]) -> None:
        for ds, t, v in rows:
            self.rows.setdefault((ds, t), v)

    def as_rows(self) -> list[Row]:
        return [(ds, t, v) for (ds, t), v in self.rows.items()]


def random_rows(rnd: random.Random, n: int, start: datetime, hours: float) -> list[Row]:
    """Readings at whole seconds; values multiples of 1/4 (exact in binary, so sums do not depend
    on the order of addition); about one in nine without a numeric result."""
    out: list[Row] = []
    for _ in range(n):
        t = start + timedelta(seconds=rnd.randrange(int(hours * 3600)))
        v = None if rnd.random() < 0.11 else rnd.randrange(-400, 400) / 4
        out.append((rnd.choice(DATASTREAMS), t, v))
    return out


def stored_by_key(rows: list[Row]) -> list[Row]:
    """A batch's rows as the writer keeps them: the first per (datastream, time)."""
    seen: dict[tuple[int, datetime], float | None] = {}
    for ds, t, v in rows:
        seen.setdefault((ds, t), v)
    return [(ds, t, v) for (ds, t), v in seen.items()]


def unpack(conn: Conn, width: str) -> dict[tuple[int, int], tuple[Any, ...]]:
    """The packed table decoded: (datastream, bucket start in s) -> (n_all, n, s, lo, hi); each
    row's buckets are checked to lie in its day (month), increasing."""
    out: dict[tuple[int, int], tuple[Any, ...]] = {}
    rows = conn.execute(
        sql.SQL(
            "select datastream_id, extract(epoch from start)::int8,"
            " extract(epoch from ((start at time zone 'UTC') + {}) at time zone 'UTC')::int8,"
            " t, n_all, n, s, lo, hi from {}"
        ).format(
            sql.SQL("interval '1 day'" if width == "1h" else "interval '1 month'"),
            sql.Identifier(PACKED[width]),
        )
    ).fetchall()
    for ds, lo_s, hi_s, t, n_all, n, s, lo, hi in rows:
        times = np.frombuffer(t, ">i8")
        assert len(times) > 0
        assert bool(np.all(np.diff(times) > 0)) and lo_s <= times[0] and times[-1] < hi_s
        cols = [
            np.frombuffer(n_all, ">i4"),
            np.frombuffer(n, ">i4"),
            *(np.frombuffer(b, ">f8") for b in (s, lo, hi)),
        ]
        assert all(len(c) == len(times) for c in cols)
        for k, when in enumerate(times.tolist()):
            values = [int(cols[0][k]), int(cols[1][k])]
            values += [None if np.isnan(c[k]) else float(c[k]) for c in cols[2:]]
            out[(ds, when)] = tuple(values)
    return out


def rollup_rows(conn: Conn, width: str) -> dict[tuple[int, int], tuple[Any, ...]]:
    rows = conn.execute(
        sql.SQL(
            "select datastream_id, extract(epoch from bucket)::int8, n_all, n, s, lo, hi from {}"
        ).format(sql.Identifier(ROLLUP[width]))
    ).fetchall()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def expected_rollup(store: Store, width: str) -> dict[tuple[int, int], tuple[Any, ...]]:
    """What the rollup must hold, (datastream, bucket start in s) -> (n_all, n, s, lo, hi), from
    the raw rows in Python (buckets by integer arithmetic, see test_timeseries.truth)."""
    out = {}
    numeric: dict[tuple[int, int], int] = {}
    step = WIDTH_SECONDS[width]
    for (ds, t), v in store.rows.items():
        if v is not None:
            key = (ds, int(t.timestamp()) // step * step)  # 1 h and 1 d: the grid of 1970 too
            numeric[key] = numeric.get(key, 0) + 1
    for (ds, bucket), (count, s, _avg, lo, hi) in truth(store.as_rows(), step).items():
        key = (ds, int(bucket.timestamp()))
        out[key] = (count, numeric.get(key, 0), s, lo, hi)
    return out


#: the whole data of the first test, and ranges that cut packed days and months
WHOLE = (T0 - timedelta(days=3), T0 + timedelta(days=6))
PARTS = [
    (T0 + timedelta(hours=5, minutes=30), T0 + timedelta(days=1, hours=7)),
    (datetime(2024, 1, 30, 12, tzinfo=UTC), datetime(2024, 2, 1, 3, tzinfo=UTC)),
    (datetime(2024, 1, 31, 23, 59, tzinfo=UTC), datetime(2024, 2, 1, 0, 1, tzinfo=UTC)),
]


def answers(
    conn: Conn, width: str, *, columns: bool, span: tuple[datetime, datetime] = WHOLE, **kw: Any
) -> dict[Any, tuple[Any, ...]]:
    """The query layer's answer for every datastream over ``span``, (datastream, bucket)
    -> (count, sum, avg, min, max) with None for null."""
    agg = timeseries.aggregate(
        conn,
        [*DATASTREAMS, 99],  # 99: no data
        timeseries.WIDTHS[width],
        *span,
        columns=columns,
        **kw,
    )
    assert agg.source == ("raw" if kw.get("source") == "raw" else ROLLUP[width])
    out: dict[Any, tuple[Any, ...]] = {}
    for s in agg.series:
        if columns:
            if s.columns is None:
                continue
            cols = s.columns
            for k, e in enumerate(cols.epoch.tolist()):
                vals = [cols.values[f][k].item() for f in agg.functions]
                vals = [None if isinstance(v, float) and v != v else v for v in vals]
                out[(s.datastream_id, datetime.fromtimestamp(e, UTC))] = tuple(vals)
        else:
            for r in s.rows(agg.functions):
                out[(s.datastream_id, r[0])] = tuple(r[1:])
        # gaps and buckets cover the range exactly once
        width_td = timeseries.WIDTHS[width]
        n_buckets = len(s.columns.epoch) if s.columns is not None else len(s.epoch)
        in_gaps = sum((g.end - g.start) // width_td for g in s.gaps)
        assert n_buckets + in_gaps == (agg.end - agg.start) // width_td
    return out


def check(conn: Conn, store: Store, stage: str, *, refreshed: bool) -> None:
    for width in ("1h", "1d"):
        want = truth(store.as_rows(), WIDTH_SECONDS[width])
        for columns in (True, False):
            got = answers(conn, width, columns=columns)
            assert got == want, f"{stage}: {width} answers (columns={columns}) differ from Python"
        raw = answers(conn, width, columns=False, source="raw")
        assert raw == want, f"{stage}: raw answers differ"
        step = timedelta(seconds=WIDTH_SECONDS[width])
        for a, b in PARTS:
            a_, b_ = timeseries.floor_to(a, step), timeseries.ceil_to(b, step)
            part = {k: v for k, v in want.items() if a_ <= k[1] < b_}
            assert answers(conn, width, columns=True, span=(a, b)) == part, f"{stage}: {a}-{b}"
        if refreshed:
            assert rollup_rows(conn, width) == expected_rollup(store, width), stage
            assert unpack(conn, width) == rollup_rows(conn, width), f"{stage}: {width} packed"
            # the rollup rows read as before packing
            rows_path = answers(conn, width, columns=True, packed=False)
            assert rows_path == want, f"{stage}: {width} row-rollup answers differ"


@pytest.mark.parametrize("seed", [1, 2])
def test_packed_equal_rollups_and_raw_after_late_data_redeliveries_and_deletes(
    conn: Conn, db_url: str, seed: int
) -> None:
    rnd = random.Random(seed)
    store = Store()
    rows = random_rows(rnd, 900, T0, 60)  # 2.5 days: three UTC days, two months
    write_batch(conn, rows)
    store.add(stored_by_key(rows))
    check(conn, store, "first batch, not refreshed", refreshed=False)
    rollups.refresh_all(conn)
    assert unpack(conn, "1h") and unpack(conn, "1d")
    check(conn, store, "first batch, refreshed", refreshed=True)

    for rnd_round in range(3):
        # late data into days and months already packed, redeliveries of stored readings with
        # other values (ignored: the first stored wins), readings after the end
        late = random_rows(rnd, 150, T0, 60)
        again = [(ds, t, 1000.0 + k) for k, (ds, t) in enumerate(rnd.sample(list(store.rows), 40))]
        newer = random_rows(rnd, 60, T0 + timedelta(hours=60), 30)
        batch = late + again + newer
        rnd.shuffle(batch)
        write_batch(conn, batch)
        store.add(stored_by_key(batch))
        check(conn, store, f"round {rnd_round}: late data, not refreshed", refreshed=False)
        rollups.refresh(conn, limit=7)  # part of the marks: some buckets fresh, some dirty
        check(conn, store, f"round {rnd_round}: partly refreshed", refreshed=False)
        rollups.refresh_all(conn)
        check(conn, store, f"round {rnd_round}: refreshed", refreshed=True)

    # deletes: one datastream's whole UTC day (a packed row and its month's bucket go), one hour
    # of another (a bucket inside a packed row goes), and single readings
    day = datetime(2024, 1, 31, tzinfo=UTC)
    hour = T0 + timedelta(hours=7)
    singles = rnd.sample(sorted(store.rows), 25)
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as dc:
        dc.execute("set timezone = 'Asia/Kolkata'")
        delete_observations(
            dc,
            sql.SQL(
                "o.datastream_id = 2 and o.phenomenon_time >= %(a)s and o.phenomenon_time < %(b)s"
            ),
            {"a": day, "b": day + timedelta(days=1)},
        )
        delete_observations(
            dc,
            sql.SQL(
                "o.datastream_id = 3 and o.phenomenon_time >= %(a)s and o.phenomenon_time < %(b)s"
            ),
            {"a": hour, "b": hour + timedelta(hours=1)},
        )
        for ds, t in singles:
            delete_observations(
                dc,
                sql.SQL("o.datastream_id = %(d)s and o.phenomenon_time = %(t)s"),
                {"d": ds, "t": t},
            )
    for key in list(store.rows):
        ds, t = key
        if (ds == 2 and day <= t < day + timedelta(days=1)) or (
            ds == 3 and hour <= t < hour + timedelta(hours=1)
        ):
            del store.rows[key]
    for key in singles:
        store.rows.pop(key, None)
    check(conn, store, "deleted, not refreshed", refreshed=False)
    rollups.refresh_all(conn)
    check(conn, store, "deleted, refreshed", refreshed=True)
    packed_days = {
        (ds, s) for ds, s in conn.execute("select datastream_id, start from observation_1h_packed")
    }
    assert (2, day) not in packed_days  # the emptied day has no packed row
    assert any(ds == 2 for ds, _ in packed_days)


def test_rebuild_retention_and_backfill_keep_packed_rows_exact(conn: Conn) -> None:
    rnd = random.Random(5)
    store = Store()
    # bulk data past the writer (no dirty marks), from December into February
    rows = stored_by_key(random_rows(rnd, 1500, datetime(2023, 12, 30, tzinfo=UTC), 24 * 40))
    lo, hi = min(r[1] for r in rows), max(r[1] for r in rows)
    conn.execute("select quartier_ensure_observation_partitions(%s, %s)", (lo, hi))
    with conn.cursor().copy(
        "copy observation (datastream_id, phenomenon_time, result) from stdin"
    ) as copy:
        for r in rows:
            copy.write_row(r)
    store.add(rows)
    assert unpack(conn, "1h") == {}  # nothing packed yet: no refresh, no rebuild
    # rebuilt in two ranges that split January (its packed month row is made twice, whole)
    rollups.rebuild(conn, datetime(2023, 12, 1, tzinfo=UTC), datetime(2024, 1, 15, tzinfo=UTC))
    rollups.rebuild(conn, datetime(2024, 1, 15, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))
    for width in ("1h", "1d"):
        assert rollup_rows(conn, width) == expected_rollup(store, width)
        assert unpack(conn, width) == rollup_rows(conn, width)
    months = sorted(
        r[0]
        for r in conn.execute("select distinct start at time zone 'UTC' from observation_1d_packed")
    )
    assert months == [datetime(2023, 12, 1), datetime(2024, 1, 1), datetime(2024, 2, 1)]

    # the migration's backfill (the same as after a refresh)
    packed_before = {w: unpack(conn, w) for w in ("1h", "1d")}
    conn.execute("truncate observation_1h_packed, observation_1d_packed")
    migration = (
        resources.files("quartier.store.migrations")
        .joinpath("0045_rollups_packed.postgres.sql")
        .read_text(encoding="utf-8")
    )
    backfill = [s for s in migration.split(";\n") if "insert into observation_1" in s]
    assert len(backfill) == 2
    for statement in backfill:
        conn.execute(statement)
    assert {w: unpack(conn, w) for w in ("1h", "1d")} == packed_before

    # rollup retention: cutoff 2024-01-10 (rollup rows before it deleted); December's packed
    # month goes, January's is packed again from its days 10-31
    now = datetime(2024, 3, 10, 12, tzinfo=UTC)
    policy = StorePolicy(retention=timedelta(days=60), rollup_retention=timedelta(days=60))
    rollups.apply_retention(conn, policy, now=now)
    cutoff = datetime(2024, 1, 10, tzinfo=UTC)
    for ds, t in list(store.rows):
        if t < datetime(2024, 1, 1, tzinfo=UTC):  # raw: whole months before the cutoff's
            del store.rows[(ds, t)]
    for width in ("1h", "1d"):
        packed = unpack(conn, width)
        assert packed == rollup_rows(conn, width)
        assert min(t for _, t in packed) == int(cutoff.timestamp())
    assert conn.execute("select min(start) from observation_1d_packed").fetchone() == (
        datetime(2024, 1, 1, tzinfo=UTC),
    )
    # what the rollups still hold answers from the packed rows as from raw rows
    span = (datetime(2024, 1, 3, 5, tzinfo=UTC), datetime(2024, 2, 20, tzinfo=UTC))
    want = {k: v for k, v in truth(store.as_rows(), 86400).items() if k[1] >= cutoff}
    got = answers(conn, "1d", columns=True, span=span)
    assert {k: v for k, v in got.items() if k[1] >= cutoff} == want


def test_columns_body_times_of_full_and_partial_series() -> None:
    """The columnar body's times: a series with every bucket of the range (the prepared grid),
    one with holes, an empty one; each equal to sensorthings.iso of its buckets."""
    hour = timedelta(hours=1)
    start, end = T0, T0 + timedelta(days=2)
    full = np.arange(int(start.timestamp()), int(end.timestamp()), 3600, dtype=np.int64)
    holes = full[np.arange(len(full)) % 5 != 2]
    series = []
    for ds, epochs in ((1, full), (2, holes), (3, full[:0]), (4, full)):
        cols = (
            timeseries.Columns(epochs, {"avg": epochs.astype(np.float64) / 7})
            if len(epochs)
            else None
        )
        s = timeseries.Series(ds, columns=cols)
        s.gaps = timeseries._gaps(epochs, start, end, hour)
        series.append(s)
    agg = timeseries.Aggregate(hour, start, end, "observation_1h", ("avg",), series)
    body = orjson.loads(columns_response(agg).body)
    for s, epochs in zip(body["series"], (full, holes, full[:0], full), strict=True):
        assert s["time"] == [iso(datetime.fromtimestamp(int(e), UTC)) for e in epochs]
        assert s["avg"] == [float(e) / 7 for e in epochs]
    assert body["series"][2]["gaps"] == [{"from": iso(start), "to": iso(end)}]
