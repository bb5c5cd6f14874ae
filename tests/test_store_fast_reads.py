"""The store's fast read paths (session 9 of issue #14) against the plain way of reading the same
rows: the latest values of many datastreams (one binary ``bigint[]``, unprepared above a hundred
ids) and the packed hourly/daily read whose full rows send only their first bucket time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

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
