"""The exact ``@iot.count`` of Observations from the daily rollup (``store/sensorthings_count``)
equals ``count(*)`` of what a listing returns, through random inserts by the ingest writer
(late data, redeliveries, a month without its partition), deletes through the SensorThings
delete path, partial and full rollup refreshes, raw and rollup retention (the rollup cutoff
inside the oldest kept month), partitions created after their rows, and a bulk rebuild. Plain
PostgreSQL, real database."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from psycopg.rows import dict_row

from quartier.api.app import create_app
from quartier.config import Settings
from quartier.ingest.model import Batch, Observation
from quartier.ingest.writer import BatchWriter
from quartier.store import rollups, sensorthings_count, sta_write
from quartier.store.policy import StorePolicy

pytestmark = pytest.mark.services

T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: months T0 .. T0 + 5 months; March has no partition until a step creates it
MONTHS = [datetime(2026, m, 1, tzinfo=UTC) for m in range(1, 7)]


def _entities(conn: psycopg.Connection[Any]) -> list[int]:
    """Three Datastreams and one MultiDatastream; the observation ids they are stored under."""
    thing = conn.execute("insert into thing (name) values ('t') returning id").fetchone()
    sensor = conn.execute(
        "insert into sensor (name, encoding_type, metadata) values ('s', 'text/plain', '')"
        " returning id"
    ).fetchone()
    prop = conn.execute(
        "insert into observed_property (name, definition) values ('p', 'x') returning id"
    ).fetchone()
    assert thing and sensor and prop
    ids = []
    for k in range(3):
        row = conn.execute(
            "insert into datastream (name, unit_of_measurement, thing_id, sensor_id,"
            " observed_property_id) values (%s, '{}', %s, %s, %s) returning id",
            (f"d{k}", thing[0], sensor[0], prop[0]),
        ).fetchone()
        assert row
        ids.append(int(row[0]))
    row = conn.execute(
        "insert into multi_datastream (name, multi_observation_data_types, unit_of_measurements,"
        " thing_id, sensor_id) values ('m', '[\"x\", \"y\"]', '[{}, {}]', %s, %s) returning id",
        (thing[0], sensor[0]),
    ).fetchone()
    assert row
    return [*ids, -int(row[0])]


def _truth(conn: psycopg.Connection[Any], ds: int | None = None) -> int:
    if ds is None:
        row = conn.execute("select count(*) from observation").fetchone()
    else:
        row = conn.execute(
            "select count(*) from observation where datastream_id = %s", (ds,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _random_time(rnd: random.Random) -> datetime:
    # mostly on a 5-minute grid (redeliveries and duplicates), sometimes anywhere
    minutes = rnd.randrange(0, 180 * 24 * 12) * 5
    return T0 + timedelta(minutes=minutes, seconds=rnd.choice([0, 0, 0, rnd.randrange(300)]))


def _truth_between(
    conn: psycopg.Connection[Any], ds: int | None, start: datetime | None, end: datetime | None
) -> int:
    row = conn.execute(
        "select count(*) from observation where (%(ds)s::bigint is null or datastream_id = %(ds)s)"
        " and phenomenon_time >= coalesce(%(a)s::timestamptz, '-infinity')"
        " and phenomenon_time < coalesce(%(b)s::timestamptz, 'infinity')",
        {"ds": ds, "a": start, "b": end},
    ).fetchone()
    assert row is not None
    return int(row[0])


def _check(
    conn: psycopg.Connection[Any],
    streams: list[int],
    step: str,
    floor: datetime | None = None,
    rnd: random.Random | None = None,
) -> None:
    got = [sensorthings_count.count(conn, ds, floor=floor) for ds in (None, *streams)]
    want = [_truth(conn, ds) for ds in (None, *streams)]
    assert got == want, step
    if rnd is None:
        return
    # phenomenonTime ranges: aligned with days and months, or not, open on one side, empty
    for _ in range(4):
        a = None if rnd.random() < 0.2 else _random_time(rnd)
        if rnd.random() < 0.4 and a is not None:
            a = a.replace(hour=0, minute=0, second=0, day=1 if rnd.random() < 0.5 else a.day)
        b = None if rnd.random() < 0.2 else _random_time(rnd)
        ds = rnd.choice([None, *streams])
        n = sensorthings_count.count(conn, ds, floor=floor, start=a, end=b)
        assert n == _truth_between(conn, ds, a, b), (step, ds, a, b)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rollup_count_equals_count_star_through_random_histories(
    settings: Settings, seed: int
) -> None:
    rnd = random.Random(seed)
    url = settings.require_database_url()
    writer = BatchWriter(url, auto_register=False)
    with psycopg.connect(url, autocommit=True) as conn:
        streams = _entities(conn)
        conn.execute(
            "select quartier_ensure_observation_partitions(%s, %s)", (MONTHS[0], MONTHS[2])
        )
        conn.execute(
            "select quartier_ensure_observation_partitions(%s, %s)",
            (MONTHS[3], MONTHS[5] + timedelta(days=31)),
        )
        sent: list[tuple[int, datetime]] = []
        done: list[str] = []
        floor: datetime | None = None  # the rollup retention's latest cutoff
        for i in range(40):
            op = rnd.choices(
                ["insert", "redeliver", "delete", "refresh", "partial", "retention",
                 "partition", "rebuild"],
                weights=[8, 2, 3, 3, 2, 1, 1, 1],
            )[0]  # fmt: skip
            if op in ("insert", "redeliver"):
                if op == "redeliver" and sent:
                    keys = rnd.sample(sent, min(len(sent), rnd.randrange(1, 200)))
                else:
                    ds = rnd.choice(streams)
                    keys = [(ds, _random_time(rnd)) for _ in range(rnd.randrange(1, 400))]
                batch = Batch(source="http")
                batch.observations = [
                    Observation(d, t, None if d < 0 else rnd.random(), [1, 2] if d < 0 else None)
                    for d, t in keys
                ]
                writer.write(batch)
                sent += keys
            elif op == "delete":
                ds = rnd.choice(streams)
                a = _random_time(rnd)
                b = a + timedelta(hours=rnd.choice([1, 7, 30, 200]))
                with psycopg.connect(url, row_factory=dict_row) as dconn:  # one transaction
                    sta_write.delete_observations(
                        dconn,
                        sql.SQL("o.datastream_id = %(d)s and o.phenomenon_time >= %(a)s"
                                " and o.phenomenon_time < %(b)s"),
                        {"d": ds, "a": a, "b": b},
                    )  # fmt: skip
            elif op == "refresh":
                rollups.refresh_all(conn)
            elif op == "partial":
                rollups.refresh(conn, limit=rnd.randrange(1, 50))
            elif op == "retention":
                # raw: whole months before the cutoff's month; rollups: days before a cutoff
                # inside the oldest kept month (rollup retention >= raw retention)
                now = MONTHS[rnd.randrange(1, 4)] + timedelta(days=rnd.randrange(0, 27))
                keep = timedelta(days=rnd.randrange(31, 40))
                policy = StorePolicy(retention=keep, rollup_retention=keep + timedelta(days=1))
                rollups.apply_retention(conn, policy, now=now + timedelta(days=31))
                cut = sensorthings_count.rollup_floor(
                    policy.rollup_retention, now + timedelta(days=31)
                )
                assert cut is not None
                floor = cut if floor is None else max(floor, cut)
            elif op == "partition":
                conn.execute(
                    "select quartier_ensure_observation_partitions(%s, %s)",
                    (MONTHS[2], MONTHS[3]),
                )
            else:
                a = MONTHS[rnd.randrange(0, 5)]
                rollups.rebuild(conn, a, a + timedelta(days=rnd.randrange(1, 40)))
            done.append(op)
            _check(conn, streams, f"step {i} {op} after {done}", floor, rnd)
        rollups.refresh_all(conn)
        _check(conn, streams, "final refresh", floor)
        assert _truth(conn) > 0
    writer.close()


RANGES = [
    "phenomenonTime ge 2026-01-02T00:00:00Z and phenomenonTime lt 2026-01-09T00:00:00Z",
    "phenomenonTime gt 2026-01-02T07:00:00Z and phenomenonTime le 2026-01-09T13:00:00+01:00",
    "2026-01-05T00:00:00Z lt phenomenonTime",
    "phenomenonTime lt 2026-01-05T03:30:00Z",
    # not a plain range: counted row by row, the same answer
    "phenomenonTime ge 2026-01-02T00:00:00Z and result ge 3",
]


def test_time_range_is_read_from_plain_phenomenon_time_filters() -> None:
    from quartier.api.sensorthings import time_range
    from quartier.api.sta import parse_query_options

    def of(f: str) -> Any:
        options = parse_query_options({"$filter": f})
        assert options.filter is not None
        return time_range(options.filter)

    t = datetime(2026, 1, 2, tzinfo=UTC)
    us = timedelta(microseconds=1)
    assert of(RANGES[0]) == (t, datetime(2026, 1, 9, tzinfo=UTC))
    assert of(RANGES[1]) == (t + timedelta(hours=7) + us, datetime(2026, 1, 9, 12, tzinfo=UTC) + us)
    assert of(RANGES[2]) == (datetime(2026, 1, 5, tzinfo=UTC) + us, None)
    assert of("phenomenonTime ge 2026-01-02T00:00:00Z and phenomenonTime ge 2026-01-03T00:00:00Z")[
        0
    ] == datetime(2026, 1, 3, tzinfo=UTC)
    for other in (
        RANGES[4],
        "phenomenonTime ge 2026-01-02T00:00:00Z or phenomenonTime lt 2026-01-01T00:00:00Z",
        "phenomenonTime eq 2026-01-02T00:00:00Z",
        "resultTime ge 2026-01-02T00:00:00Z",
        "not (phenomenonTime ge 2026-01-02T00:00:00Z)",
    ):
        assert of(other) is None, other


def test_count_on_the_api_is_exact_and_not_an_estimate(settings: Settings) -> None:
    """``$count=true`` on all Observations, a Datastream's and a MultiDatastream's equals the
    number of entities the listing returns, before and after the refresh, with the rollup
    holding days whose rows were since deleted."""
    url = settings.require_database_url()
    with psycopg.connect(url, autocommit=True) as conn:
        streams = _entities(conn)
        conn.execute("select quartier_ensure_observation_partitions(%s, %s)", (T0, MONTHS[2]))
    writer = BatchWriter(url, auto_register=False)
    batch = Batch(source="http")
    batch.observations = [
        Observation(d, T0 + timedelta(hours=7 * k + abs(d)), None if d < 0 else float(k),
                    [k, k] if d < 0 else None)
        for d in streams for k in range(60)
    ]  # fmt: skip
    writer.write(batch)
    writer.close()

    def listed(client: TestClient, path: str, f: str | None = None) -> tuple[int, int]:
        params = {"$count": "true", "$top": "50"} | ({"$filter": f} if f else {})
        body = client.get(path, params=params).json()
        assert "@quartier.countIsEstimate" not in body
        count, n = int(body["@iot.count"]), len(body["value"])
        while "@iot.nextLink" in body:
            body = client.get(body["@iot.nextLink"]).json()
            n += len(body["value"])
        return count, n

    paths = [
        "/v1.1/Observations",
        f"/v1.1/Datastreams({streams[0]})/Observations",
        f"/v1.1/MultiDatastreams({-streams[3]})/Observations",
    ]
    with TestClient(create_app(settings)) as client:
        for stage in ("dirty", "refreshed", "deleted", "deleted+refreshed"):
            if stage == "refreshed" or stage == "deleted+refreshed":
                with psycopg.connect(url, autocommit=True) as conn:
                    rollups.refresh_all(conn)
            if stage == "deleted":
                with psycopg.connect(url, autocommit=True, row_factory=dict_row) as dconn:
                    sta_write.delete_observations(
                        dconn,
                        sql.SQL("o.datastream_id = any(%(d)s) and o.phenomenon_time < %(t)s"),
                        {"d": [streams[0], streams[3]], "t": T0 + timedelta(days=3)},
                    )
            for path in paths:
                count, n = listed(client, path)
                assert count == n, (stage, path)
                for f in RANGES:  # a phenomenonTime range: from the rollup too
                    count, n = listed(client, path, f)
                    assert count == n, (stage, path, f)
        with psycopg.connect(url, autocommit=True) as conn:
            assert listed(client, paths[0])[1] == _truth(conn)
            # the count came from the packed daily rollup: without its rows it is short
            n = _truth(conn, streams[1])
            assert sensorthings_count.count(conn, streams[1]) == n
            conn.execute(
                "delete from observation_1d_packed where datastream_id = %s", (streams[1],)
            )
            assert sensorthings_count.count(conn, streams[1]) < n
