"""The store's fast read paths (session 9 of issue #14) against the plain way of reading the same
rows: the latest values of many datastreams (one binary ``bigint[]``, unprepared above a hundred
ids) and the packed hourly/daily read whose full rows send only their first bucket time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from quartier.api.app import create_app
from quartier.config import Settings
from quartier.store import timeseries

pytestmark = pytest.mark.services

Conn = psycopg.Connection[tuple[Any, ...]]
T0 = datetime(2025, 3, 30, 20, 0, tzinfo=UTC)


@pytest.fixture
def conn(db_url: str) -> Iterator[Conn]:
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("set timezone = 'Europe/Berlin'")  # answers must not depend on it
        yield c


def datastreams(conn: Conn, n: int, *, first_id: int | None = None) -> list[int]:
    """``n`` datastreams of one Thing; with ``first_id`` their ids start there (ids above 32,767
    do not fit the ``smallint[]`` a Python list of small ids is sent as)."""
    thing = conn.execute("insert into thing (name) values ('t') returning id").fetchone()
    sensor = conn.execute("insert into sensor (name) values ('s') returning id").fetchone()
    prop = conn.execute(
        "insert into observed_property (name, definition) values ('p', 'urn:p') returning id"
    ).fetchone()
    assert thing and sensor and prop
    if first_id is not None:
        conn.execute("select setval(pg_get_serial_sequence('datastream', 'id'), %s)", (first_id,))
    rows = conn.execute(
        "insert into datastream (name, unit_of_measurement, thing_id, sensor_id,"
        " observed_property_id) select 'd' || g, '{}', %s, %s, %s from generate_series(1, %s) g"
        " returning id",
        (thing[0], sensor[0], prop[0], n),
    ).fetchall()
    return sorted(r[0] for r in rows)


def plain_latest(conn: Conn, ids: list[int]) -> list[tuple[int, datetime, float | None]]:
    rows = conn.execute(
        "select datastream_id, phenomenon_time, result from observation_latest"
        " where datastream_id in (select unnest(%s::bigint[])) order by 1",
        (ids,),
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


@pytest.mark.parametrize("first_id", [None, 40_000])
def test_latest_of_many_datastreams_equals_the_plain_read(conn: Conn, first_id: int | None) -> None:
    ids = datastreams(conn, 260, first_id=first_id)
    conn.execute("select quartier_ensure_observation_partitions(%s, %s)", (T0, T0))
    with_value = ids[::2]  # every other datastream has a latest value; some of them null
    conn.execute(
        "insert into observation_latest (datastream_id, phenomenon_time, result)"
        " select d, %s + d * interval '1 second', case when d %% 7 = 0 then null else d / 4.0 end"
        " from unnest(%s::bigint[]) d",
        (T0, with_value),
    )
    expected = plain_latest(conn, ids)
    assert len(expected) == len(with_value) and any(r[2] is None for r in expected)
    # many ids (unprepared), a few (prepared after psycopg's threshold), in any order, repeated
    for wanted in (ids, list(reversed(ids)), ids + ids[:5], *([ids[:3]] * 7), *([ids] * 7)):
        got = timeseries.latest(conn, wanted)
        want = [r for r in expected if r[0] in set(wanted)]
        assert [tuple(x) for x in got] == want
        assert [x.datastream_id for x in got] == [r[0] for r in want]
    assert timeseries.latest(conn, []) == []
    assert timeseries.latest(conn, [ids[1]]) == []  # no value yet


# ---------------------------------------------------------------- packed read, full rows
def load_dense(conn: Conn, ids: list[int]) -> list[tuple[int, datetime, float | None]]:
    """Readings every 20 min from 2024-01-27 21:20Z to 2024-03-02 10:00Z (a leap February, so
    full days and one full month of 29 days), values multiples of 1/4 (sums exact in any
    order), some without a numeric result; gaps: the second datastream misses 2024-02-10 (its
    day row and its February row are not full), the third misses 2024-02-14 05:00-06:59. Loaded
    past the writer, then rolled up and packed in bulk (``rollups.rebuild``)."""
    from quartier.store import rollups

    start, stop = datetime(2024, 1, 27, 21, 20, tzinfo=UTC), datetime(2024, 3, 2, 10, tzinfo=UTC)
    rows: list[tuple[int, datetime, float | None]] = []
    t, k = start, 0
    while t < stop:
        for j, ds in enumerate(ids):
            k += 1
            if j == 1 and t.date() == datetime(2024, 2, 10).date():
                continue
            if j == 2 and datetime(2024, 2, 14, 5, tzinfo=UTC) <= t < datetime(
                2024, 2, 14, 7, tzinfo=UTC
            ):
                continue
            rows.append((ds, t, None if k % 13 == 0 else (k * 37 % 400 - 200) / 4))
        t += timedelta(minutes=20)
    conn.execute("select quartier_ensure_observation_partitions(%s, %s)", (start, stop))
    with conn.cursor().copy(
        "copy observation (datastream_id, phenomenon_time, result) from stdin"
    ) as copy:
        for r in rows:
            copy.write_row(r)
    rollups.rebuild(conn, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))
    return rows


def as_dict(agg: timeseries.Aggregate) -> dict[tuple[int, int], tuple[Any, ...]]:
    """(datastream, bucket start in s) -> value of each function (None for null), from lists or
    numpy columns."""
    out: dict[tuple[int, int], tuple[Any, ...]] = {}
    for s in agg.series:
        if s.columns is not None:
            epochs = s.columns.epoch.tolist()
            cols = [s.columns.values[f].tolist() for f in agg.functions]
        else:
            epochs, cols = s.epoch, [s.values.get(f, []) for f in agg.functions]
        for k, e in enumerate(epochs):
            vals = tuple(None if isinstance(c[k], float) and c[k] != c[k] else c[k] for c in cols)
            out[(s.datastream_id, int(e))] = vals
    return out


@pytest.mark.parametrize("interval", ["1h", "1d"])
def test_packed_read_of_full_rows_equals_raw_rows(conn: Conn, interval: str) -> None:
    ids = datastreams(conn, 3)
    load_dense(conn, ids)
    width = timeseries.WIDTHS[interval]
    # full rows send only their first time: a day of 24 hours, a month of all its days
    query = timeseries.packed_query(width, timeseries.FUNCTIONS, dirty=False)
    span = (datetime(2024, 1, 27, tzinfo=UTC), datetime(2024, 3, 3, tzinfo=UTC))
    day = timedelta(days=1)
    row_start = (
        timeseries.floor_to(span[0], day) if width < day else timeseries.month_floor(span[0])
    )
    read = (
        conn.cursor(binary=True)
        .execute(query, {"ids": ids, "start": span[0], "end": span[1], "row_start": row_start})
        .fetchall()
    )
    t_len = [(len(r[2]), len(r[3]) // 4) for r in read]  # (bytes of t, buckets in the row)
    full = sum(1 for b, n in t_len if b == 8 and n > 1)
    listed = sum(1 for b, n in t_len if b == 8 * n)
    assert full + listed == len(read)
    if interval == "1h":  # 36 days each, less the second's 02-10; not full: the first and the
        # last day of each, the third's 02-14
        assert (full, listed) == (3 * 36 - 1 - 7, 3 * 2 + 1)
    else:  # February of the first and third datastreams; January and March are partial
        assert (full, listed) == (2, 3 * 3 - 2)
    # the answers equal those from raw rows, over ranges that cut rows at both ends
    for a, b in [
        span,
        (datetime(2024, 2, 3, 5, 30, tzinfo=UTC), datetime(2024, 2, 20, 14, tzinfo=UTC)),
        (datetime(2024, 1, 31, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
        # every row read is full (hours: one length, the quick path; days: February)
        (datetime(2024, 2, 3, 5, 30, tzinfo=UTC), datetime(2024, 2, 9, 14, tzinfo=UTC)),
        (datetime(2024, 2, 14, 4, tzinfo=UTC), datetime(2024, 2, 14, 9, tzinfo=UTC)),
    ]:
        want = as_dict(timeseries.aggregate(conn, ids, width, a, b, source="raw"))
        assert want
        for columns in (False, True):
            got = timeseries.aggregate(conn, [*ids, 10**6], width, a, b, columns=columns)
            assert got.source == timeseries.ROLLUPS[width]
            assert as_dict(got) == want
            raw = timeseries.aggregate(conn, ids, width, a, b, source="raw", columns=columns)
            assert [s.gaps for s in got.series[:3]] == [s.gaps for s in raw.series]
            # sums and means alone (hourly: from the narrow copy, migration 0048)
            for fns in (("avg",), ("sum", "avg")):
                part = timeseries.aggregate(conn, ids, width, a, b, functions=fns, columns=columns)
                at = [timeseries.FUNCTIONS.index(f) for f in fns]
                assert as_dict(part) == {k: tuple(v[i] for i in at) for k, v in want.items()}


def test_packed_read_of_full_rows_with_dirty_buckets(conn: Conn) -> None:
    """A full day row and a dirty bucket in it (late data through the writer, before the
    refresh): the dirty bucket's value from raw rows replaces the packed one."""
    from test_timeseries import write_batch

    ids = datastreams(conn, 3)
    load_dense(conn, ids)
    late = [(ids[0], datetime(2024, 2, 5, 7, 10, 1, tzinfo=UTC), 1000.0),
            (ids[2], datetime(2024, 2, 14, 5, 30, tzinfo=UTC), -3.25)]  # fmt: skip
    assert write_batch(conn, late) == 2
    hour = timedelta(hours=1)
    a, b = datetime(2024, 2, 4, 22, tzinfo=UTC), datetime(2024, 2, 15, 1, tzinfo=UTC)
    want = as_dict(timeseries.aggregate(conn, ids, hour, a, b, source="raw"))
    assert want[(ids[0], int(datetime(2024, 2, 5, 7, tzinfo=UTC).timestamp()))][0] == 4
    for columns in (False, True):
        assert as_dict(timeseries.aggregate(conn, ids, hour, a, b, columns=columns)) == want
        # the means alone, from observation_1h_means with the same overlay
        avg = timeseries.aggregate(conn, ids, hour, a, b, functions=("avg",), columns=columns)
        assert as_dict(avg) == {k: (v[2],) for k, v in want.items()}


def test_aggregate_route_looks_up_only_datastreams_without_buckets(
    conn: Conn, settings: Settings
) -> None:
    """The route reads first and asks the datastream table only about series without buckets:
    one with data and one without answer 200 (the empty one with its gap); an unknown id is
    still a 404 that names it alone."""
    ids = datastreams(conn, 3)
    load_dense(conn, ids[:2])
    params = {"interval": "1h", "from": "2024-02-03T00:00:00Z", "to": "2024-02-04T00:00:00Z",
              "fn": "avg", "layout": "columns"}  # fmt: skip
    with TestClient(create_app(settings)) as client:
        r = client.get("/v1.1/Datastreams/Observations/aggregate",
                       params={**params, "ids": f"{ids[0]},{ids[2]}"})  # fmt: skip
        assert r.status_code == 200, r.text
        series = r.json()["series"]
        assert [len(s["time"]) for s in series] == [24, 0]
        assert series[1]["gaps"] == [{"from": "2024-02-03T00:00:00.000Z",
                                      "to": "2024-02-04T00:00:00.000Z"}]  # fmt: skip
        for layout in ("columns", "rows"):
            r = client.get("/v1.1/Datastreams/Observations/aggregate",
                           params={**params, "layout": layout,
                                   "ids": f"{ids[0]},{ids[2]},987654,987655"})  # fmt: skip
            assert r.status_code == 404, r.text
            assert "Datastreams with @iot.id 987654, 987655" in r.text


MEANS_OF_PACKED = """
select datastream_id, start,
       case when length(t) = 192 then substring(t from 1 for 8) else t end, n, s
from observation_1h_packed order by 1, 2"""


def means(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(
        "select datastream_id, start, t, n, s from observation_1h_means order by 1, 2"
    ).fetchall()


def test_hourly_means_copy_follows_every_write_of_the_packed_rows(conn: Conn) -> None:
    """Migration 0048: observation_1h_means is the projection of observation_1h_packed after the
    bulk rebuild, late data and its refresh, rollup retention, a deleted datastream's rows, a
    moved row and a TRUNCATE; and the hourly means read from it equal raw rows throughout."""
    from test_timeseries import write_batch

    from quartier.store import rollups
    from quartier.store.policy import StorePolicy

    ids = datastreams(conn, 3)
    load_dense(conn, ids)
    hour = timedelta(hours=1)
    span = (datetime(2024, 1, 27, tzinfo=UTC), datetime(2024, 3, 3, tzinfo=UTC))
    assert "observation_1h_means" in timeseries.packed_query(hour, ("avg",)).as_string(None)
    assert "observation_1h_means" not in timeseries.packed_query(hour, ("min",)).as_string(None)

    def check() -> None:
        projection = conn.execute(MEANS_OF_PACKED).fetchall()
        assert means(conn) == projection
        want = as_dict(
            timeseries.aggregate(conn, ids, hour, *span, functions=("avg",), source="raw")
        )
        assert as_dict(timeseries.aggregate(conn, ids, hour, *span, functions=("avg",))) == want

    full = [r for r in means(conn) if len(r[2]) == 8 and len(r[3]) == 96]
    assert len(full) == 100 and means(conn) == conn.execute(MEANS_OF_PACKED).fetchall()
    check()
    # late data (a full day gets a late reading, a partial day its missing hours), refreshed
    late = [(ids[0], datetime(2024, 2, 5, 7, 10, 1, tzinfo=UTC), 1000.0)]
    late += [(ids[2], datetime(2024, 2, 14, h, 20, tzinfo=UTC), 2.5) for h in (5, 6)]
    assert write_batch(conn, late) == 3
    rollups.refresh_all(conn)
    check()
    assert len([r for r in means(conn) if len(r[2]) == 8 and len(r[3]) == 96]) == 101
    # retention of rollups before 2024-02-01
    policy = StorePolicy(retention=timedelta(days=40), rollup_retention=timedelta(days=40))
    rollups.apply_retention(conn, policy, now=datetime(2024, 3, 12, tzinfo=UTC))
    assert conn.execute("select min(start) from observation_1h_means").fetchone() == (
        datetime(2024, 2, 1, tzinfo=UTC),
    )
    check()
    # a datastream's packed rows deleted (as privacy erase does), a row moved by an update
    conn.execute("delete from observation_1h_packed where datastream_id = %s", (ids[1],))
    conn.execute(
        "update observation_1h_packed set start = start + interval '100 days'"
        " where datastream_id = %s and start = '2024-02-20T00:00Z'", (ids[0],)
    )  # fmt: skip
    assert means(conn) == conn.execute(MEANS_OF_PACKED).fetchall()
    assert not [r for r in means(conn) if r[0] == ids[1]]
    conn.execute("truncate observation_1h_packed")
    assert means(conn) == []
