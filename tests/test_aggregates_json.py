"""Wide aggregate reads (issue #14 item 5): the JSON buckets PostgreSQL writes
(``timeseries.aggregate(as_json=True)``, served by the aggregate routes) are the body the
response models produced per bucket before (``api.aggregates._to_model``), value for value,
on every source (raw rows, each rollup, the dirty overlay), with gaps, null averages, awkward
numbers and every choice of functions."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.responses import Response, StreamingResponse
from fastapi.testclient import TestClient
from psycopg.rows import dict_row

from quartier.api import aggregate_columns
from quartier.api.aggregates import ColumnarAggregateResult, _json, _to_model
from quartier.api.app import create_app
from quartier.api.sensorthings import iso
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


def _cases(ids: list[int]) -> Iterator[tuple[timedelta, list[int], dict[str, Any]]]:
    """(bucket width, datastreams, keyword arguments) of every compared aggregate: each case of
    :data:`CASES`, each set of functions, all/two/one datastreams."""
    for width, source in CASES:
        for fns in FUNCTION_SETS:
            for subset in (ids, ids[1:3], [ids[4]]):
                yield width, subset, {"functions": fns, "source": source}


def test_json_written_by_postgres_equals_the_models(settings: Settings, ids: list[int]) -> None:
    start, end = T0 - timedelta(hours=5), T0 + timedelta(days=DAYS, hours=2)
    checked = 0
    with psycopg.connect(
        settings.require_database_url(), autocommit=True, row_factory=dict_row
    ) as conn:
        for width, subset, kw in _cases(ids):
            model = _to_model(timeseries.aggregate(conn, subset, width, start, end, **kw))
            want = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
            got_agg = timeseries.aggregate(conn, subset, width, start, end, as_json=True, **kw)
            body = _json(got_agg).body
            got = json.loads(body)
            assert got == want, (width, kw)
            # the same numbers exactly: the same doubles, not only close ones
            for sw, sg in zip(want["series"], got["series"], strict=True):
                for bw, bg in zip(sw["buckets"], sg["buckets"], strict=True):
                    assert list(bg) == list(bw)  # members in the same order
                    for f in kw["functions"]:
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


# ------------------------------------------------------------------- layout=columns (numpy path)
def _as_columns(rows_body: dict) -> dict:
    """The columnar body that a rows body stands for (api/aggregate_columns.py)."""
    order = [f for f in timeseries.FUNCTIONS if f in rows_body["functions"]]
    series = []
    for s in rows_body["series"]:
        col = {"datastreamId": s["datastreamId"], "time": [b["time"] for b in s["buckets"]]}
        for f in order:
            col[f] = [b[f] for b in s["buckets"]]
        col["gaps"] = s["gaps"]
        series.append(col)
    head = {k: v for k, v in rows_body.items() if k != "series"}
    return {**head, "layout": "columns", "series": series}


def _body(response: Response) -> bytes:
    if isinstance(response, StreamingResponse):

        async def collect() -> bytes:
            return b"".join([c async for c in response.body_iterator])  # type: ignore[misc]

        return asyncio.run(collect())
    return bytes(response.body)


@pytest.mark.parametrize("stream_after", [10**9, 0])
def test_columns_equal_the_rows(
    settings: Settings, ids: list[int], stream_after: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The columnar body (numpy arrays from PostgreSQL's binary arrays, numbers by orjson, times
    by time_items) holds exactly the buckets, values (the same doubles) and gaps of the rows
    body, on every source, for every choice of functions; whole or streamed."""
    monkeypatch.setattr(aggregate_columns, "STREAM_AFTER", stream_after)
    monkeypatch.setattr(aggregate_columns, "STREAM_PIECE", 2000)  # several pieces
    start, end = T0 - timedelta(hours=5), T0 + timedelta(days=DAYS, hours=2)
    checked = 0
    with psycopg.connect(
        settings.require_database_url(), autocommit=True, row_factory=dict_row
    ) as conn:
        for width, subset, kw in _cases(ids):
            rows_agg = timeseries.aggregate(conn, subset, width, start, end, as_json=True, **kw)
            rows = json.loads(_json(rows_agg).body)
            agg = timeseries.aggregate(conn, subset, width, start, end, columns=True, **kw)
            response = aggregate_columns.columns_response(agg)
            got = json.loads(_body(response))
            has_buckets = any(s["time"] for s in got["series"])
            streamed = isinstance(response, StreamingResponse)
            assert streamed == (stream_after == 0 and has_buckets)
            ColumnarAggregateResult.model_validate(got)
            want = _as_columns(rows)
            assert got == want, (width, kw)
            for sw, sg in zip(want["series"], got["series"], strict=True):
                assert list(sg) == list(sw)  # members in the same order
                for f in kw["functions"]:
                    for vw, vg in zip(sw[f], sg[f], strict=True):
                        assert (vw is None and vg is None) or float(vg) == float(vw)
            checked += sum(len(s["time"]) for s in got["series"])
    assert checked > 10_000


def test_time_items_write_the_api_time_format() -> None:
    """The vectorised time format is sensorthings.iso's, from year 1 to 9999 (leap days,
    century years, the epoch, before 1970)."""
    rnd = random.Random(5)
    fixed = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2000, 2, 29, 12, 30, 5, tzinfo=UTC),
        datetime(1900, 3, 1, tzinfo=UTC),
        datetime(2100, 2, 28, 23, 0, tzinfo=UTC),
    ]
    lo, hi = int(fixed[0].timestamp()), int(fixed[1].timestamp())
    times = fixed + [datetime.fromtimestamp(rnd.randrange(lo, hi), UTC) for _ in range(20_000)]
    epochs = np.array([int(t.timestamp()) for t in times], dtype=np.int64)
    text = aggregate_columns.time_items(epochs).tobytes().decode()
    assert text == "".join(f'"{iso(t)}",' for t in times)


@pytest.mark.parametrize("stream_after", [10**9, 0])
def test_route_answers_columns(
    client: TestClient, ids: list[int], stream_after: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aggregate_columns, "STREAM_AFTER", stream_after)
    params = {
        "ids": ",".join(map(str, ids)),
        "interval": "1h",
        "from": "2026-02-02T00:00:00Z",
        "to": "2026-02-08T00:00:00Z",
        "fn": "avg,count",
    }
    rows = client.get("/v1.1/Datastreams/Observations/aggregate", params=params)
    cols = client.get(
        "/v1.1/Datastreams/Observations/aggregate", params={**params, "layout": "columns"}
    )
    assert cols.status_code == 200 and cols.headers["content-type"] == "application/json"
    body = ColumnarAggregateResult.model_validate(cols.json())
    assert body.layout == "columns" and body.functions == ["avg", "count"]
    assert cols.json() == _as_columns(rows.json())
    assert list(cols.json()["series"][0]) == ["datastreamId", "time", "count", "avg", "gaps"]
    assert len(cols.content) < len(rows.content) * 0.8  # no member names per bucket
    empty = body.series[-1]
    assert (
        empty.time == []
        and empty.avg == []
        and empty.gaps[0].start == params["from"][:-1] + ".000Z"
    )
    one = client.get(
        f"/v1.1/Datastreams({ids[2]})/Observations/aggregate",
        params={
            "interval": "1d",
            "from": "2026-02-02T00:00:00Z",
            "to": "2026-02-08T00:00:00Z",
            "layout": "columns",
        },
    ).json()
    assert one["series"][0]["gaps"] and set(one["series"][0]) >= {"sum", "min", "max"}


def test_columns_with_csv_is_refused(client: TestClient, ids: list[int]) -> None:
    r = client.get(
        f"/v1.1/Datastreams({ids[0]})/Observations/aggregate",
        params={
            "interval": "1h",
            "from": "2026-02-02T00:00:00Z",
            "to": "2026-02-03T00:00:00Z",
            "layout": "columns",
            "format": "csv",
        },
    )
    assert r.status_code == 400
    assert "layout=columns is a JSON layout" in r.text and "Traceback" not in r.text
    bad = client.get(
        f"/v1.1/Datastreams({ids[0]})/Observations/aggregate",
        params={
            "interval": "1h",
            "from": "2026-02-02T00:00:00Z",
            "to": "2026-02-03T00:00:00Z",
            "layout": "sideways",
        },
    )
    assert bad.status_code == 400 and "layout" in bad.text
