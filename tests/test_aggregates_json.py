"""Wide aggregate reads (issue #14 item 5): the JSON buckets PostgreSQL writes
(``timeseries.aggregate(as_json=True)``, served by the aggregate routes) are the body the
response models produced per bucket before (``api.aggregates._to_model``), value for value,
on every source (raw rows, each rollup, the dirty overlay), with gaps, null averages, awkward
numbers and every choice of functions."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.rows import dict_row

from quartier.api.aggregates import _json, _to_model
from quartier.api.app import create_app
from quartier.config import Settings
from quartier.store import rollups, timeseries

pytestmark = pytest.mark.services
T0 = datetime(2026, 2, 2, tzinfo=UTC)  # a Monday
DAYS = 6
AWKWARD = [0.1, 0.2, 1e20, -3.5, 1e-7, 2.0, 123456.789, -0.0, 7.0 / 3.0, 5e-324]


def _datastream(conn, name: str) -> int:
    thing = conn.execute("insert into thing (name) values (%s) returning id", (name,)).fetchone()[0]
    sensor = conn.execute("insert into sensor (name) values (%s) returning id", (name,)).fetchone()[
        0
    ]
    prop = conn.execute(
        "insert into observed_property (name, definition) values (%s, %s) returning id",
        (name, f"urn:test:{name}"),
    ).fetchone()[0]
    ds: int = conn.execute(
        "insert into datastream (name, unit_of_measurement, thing_id, sensor_id,"
        " observed_property_id) values (%s, '{}', %s, %s, %s) returning id",
        (name, thing, sensor, prop),
    ).fetchone()[0]
    return ds


@pytest.fixture
def ids(settings: Settings) -> list[int]:
    """Five datastreams over six days, every 7 minutes with holes: awkward doubles, text results
    (null in the numeric aggregates), a datastream without readings; rollups for the first four
    days, the rest pending (dirty)."""
    rnd = random.Random(14)
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        out = [_datastream(conn, f"w{i}") for i in range(5)]
        rows = []
        for k, ds in enumerate(out[:4]):
            for i in range(int(DAYS * 24 * 60 / 7)):
                t = T0 + timedelta(minutes=7 * i + k)
                hour = int((t - T0) / timedelta(hours=1))
                if (hour % 29 in (3, 4) and k != 0) or (k == 2 and 30 <= hour < 80):
                    continue  # holes: gaps of hours and of days
                if k == 3 and hour % 5 == 0:
                    rows.append((ds, t, None, json.dumps("offline")))  # a text result
                    continue
                v = (
                    rnd.choice(AWKWARD)
                    if i % 13 == 0
                    else round(rnd.uniform(-40, 90), rnd.randrange(0, 6))
                )
                rows.append((ds, t, v, None))
        with conn.cursor() as cur:
            cur.executemany(
                "insert into observation (datastream_id, phenomenon_time, result, result_json)"
                " values (%s, %s, %s, %s)",
                rows,
            )
        split = T0 + timedelta(days=4)
        rollups.rebuild(conn, T0, split)
        conn.execute(
            "insert into observation_dirty (datastream_id, bucket)"
            " select distinct datastream_id, date_bin('15 minutes', phenomenon_time,"
            " timestamptz '2000-01-03') from observation where phenomenon_time >= %s"
            " on conflict do nothing",
            (split,),
        )
    return out


FUNCTION_SETS = [
    ("count", "sum", "avg", "min", "max"),
    ("avg",),
    ("max", "count"),
    ("sum", "min"),
]
CASES = [
    (timedelta(minutes=15), "auto"),
    (timedelta(hours=1), "auto"),
    (timedelta(hours=3), "auto"),
    (timedelta(days=1), "auto"),
    (timedelta(days=7), "auto"),
    (timedelta(minutes=10), "auto"),  # raw
    (timedelta(hours=1), "raw"),
    (timedelta(days=1), "rollup"),
]


def test_json_written_by_postgres_equals_the_models(settings: Settings, ids: list[int]) -> None:
    start, end = T0 - timedelta(hours=5), T0 + timedelta(days=DAYS, hours=2)
    checked = 0
    with psycopg.connect(
        settings.require_database_url(), autocommit=True, row_factory=dict_row
    ) as conn:
        for width, source in CASES:
            for fns in FUNCTION_SETS:
                for subset in (ids, ids[1:3], [ids[4]]):
                    kw = {"functions": fns, "source": source}
                    model = _to_model(timeseries.aggregate(conn, subset, width, start, end, **kw))
                    want = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
                    got_agg = timeseries.aggregate(
                        conn, subset, width, start, end, as_json=True, **kw
                    )
                    body = _json(got_agg).body
                    got = json.loads(body)
                    assert got == want, (width, source, fns)
                    # the same numbers exactly: the same doubles, not only close ones
                    for sw, sg in zip(want["series"], got["series"], strict=True):
                        for bw, bg in zip(sw["buckets"], sg["buckets"], strict=True):
                            assert list(bg) == list(bw)  # members in the same order
                            for f in fns:
                                assert type(bg[f]) in (type(bw[f]), int) or bw[f] is None
                                assert bg[f] == bw[f]
                    checked += sum(len(s["buckets"]) for s in got["series"])
        # the pending buckets were read through the overlay; after the refresh: still equal
        rollups.refresh_all(conn)
        model = _to_model(timeseries.aggregate(conn, ids, timedelta(hours=1), start, end))
        got = json.loads(
            _json(
                timeseries.aggregate(conn, ids, timedelta(hours=1), start, end, as_json=True)
            ).body
        )
        assert got == model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert checked > 10_000


@pytest.fixture
def client(settings: Settings, ids: list[int]) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def test_routes_answer_the_postgres_json(client: TestClient, ids: list[int]) -> None:
    r = client.get(
        "/v1.1/Datastreams/Observations/aggregate",
        params={
            "ids": ",".join(map(str, ids)),
            "interval": "1h",
            "from": "2026-02-02T00:00:00Z",
            "to": "2026-02-08T00:00:00Z",
            "fn": "avg,count",
        },
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["functions"] == ["avg", "count"] and body["source"] == "observation_1h"
    assert [s["datastreamId"] for s in body["series"]] == sorted(ids)
    empty = body["series"][-1]
    assert empty["buckets"] == [] and empty["gaps"] == [
        {"from": "2026-02-02T00:00:00.000Z", "to": "2026-02-08T00:00:00.000Z"}
    ]
    text_stream = body["series"][3]
    assert any(b["avg"] is None and b["count"] > 0 for b in text_stream["buckets"])
    first = body["series"][0]["buckets"][0]
    assert list(first) == ["time", "count", "avg"] and first["time"] == "2026-02-02T00:00:00.000Z"
    one = client.get(
        f"/v1.1/Datastreams({ids[2]})/Observations/aggregate",
        params={"interval": "1d", "from": "2026-02-02T00:00:00Z", "to": "2026-02-08T00:00:00Z"},
    ).json()
    assert one["series"][0]["gaps"]  # station 2's hole of two days
