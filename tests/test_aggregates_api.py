"""The aggregate and latest-value routes (quartier.api.aggregates), JSON and CSV, against a real
database filled through the ingest writer."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from quartier.api.aggregates import AggregateResult, LatestValues
from quartier.api.app import create_app
from quartier.config import Settings
from quartier.ingest.model import Batch, Position, Reading, Uplink
from quartier.ingest.writer import BatchWriter
from quartier.store import rollups, timeseries

pytestmark = pytest.mark.services
T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday


@pytest.fixture
def ids(settings: Settings) -> list[int]:
    """Two datastreams: pm25 every 10 minutes for two days (value = hour of day), no2 hourly on
    the first day only. Written by the ingest writer; the rollups and latest values are then
    built in bulk (the path for data stored without the per-batch hook)."""
    w = BatchWriter(settings.require_database_url(), auto_register=True)
    batch = Batch()
    pm25 = [
        Reading("pm25", T0 + timedelta(minutes=10 * i), float((i // 6) % 24)) for i in range(288)
    ]
    no2 = [Reading("no2", T0 + timedelta(hours=i), 2.0 * i) for i in range(24)]
    batch.uplinks.append((Uplink("net", "a-1", pm25 + no2, Position(50.9, 6.9)), "t", b"", T0))
    w.write(batch)
    w.close()
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        rollups.rebuild(conn, T0, T0 + timedelta(days=2))
        timeseries.rebuild_latest(conn)
        rows = conn.execute("select id, name from datastream order by id").fetchall()
    by_name = {name: i for i, name in rows}
    return [by_name["net/a-1 PM2.5"], by_name["net/a-1 Nitrogen dioxide"]]


@pytest.fixture
def client(settings: Settings, ids: list[int]) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def test_one_datastream_hourly(client: TestClient, ids: list[int]) -> None:
    pm25 = ids[0]
    r = client.get(
        f"/v1.1/Datastreams({pm25})/Observations/aggregate",
        params={
            "interval": "1h",
            "from": "2026-03-02T00:00:00Z",
            "to": "2026-03-03T00:00:00Z",
            "fn": "avg,min,max,count",
        },
    )
    assert r.status_code == 200, r.text
    body = AggregateResult.model_validate(r.json())
    assert body.interval == "PT1H" and body.source == "observation_1h"
    assert body.functions == ["avg", "min", "max", "count"]
    (s,) = body.series
    assert s.datastream_id == pm25 and s.gaps == []
    assert len(s.buckets) == 24
    b = s.buckets[5]
    assert (b.time, b.avg, b.min, b.max, b.count) == ("2026-03-02T05:00:00.000Z", 5.0, 5.0, 5.0, 6)
    assert "sum" not in r.json()["series"][0]["buckets"][0]  # only what was asked for


def test_several_datastreams_daily_with_gaps(client: TestClient, ids: list[int]) -> None:
    r = client.get(
        "/v1.1/Datastreams/Observations/aggregate",
        params={
            "ids": ",".join(map(str, ids)),
            "interval": "P1D",
            "from": "2026-03-02T00:00:00+01:00",
            "to": "2026-03-04T00:00:00Z",
        },
    )
    assert r.status_code == 200, r.text
    body = AggregateResult.model_validate(r.json())
    # from 23:00Z on March 1 is widened to the start of that UTC day
    assert (body.start, body.end) == ("2026-03-01T00:00:00.000Z", "2026-03-04T00:00:00.000Z")
    assert body.source == "observation_1d"
    pm25, no2 = body.series
    assert [b.time for b in pm25.buckets] == [
        "2026-03-02T00:00:00.000Z",
        "2026-03-03T00:00:00.000Z",
    ]
    assert pm25.buckets[0].avg == 11.5 and pm25.buckets[0].count == 144
    assert pm25.buckets[0].sum == 144 * 11.5
    assert [(g.start, g.end) for g in pm25.gaps] == [
        ("2026-03-01T00:00:00.000Z", "2026-03-02T00:00:00.000Z")
    ]
    assert [(g.start, g.end) for g in no2.gaps] == [
        ("2026-03-01T00:00:00.000Z", "2026-03-02T00:00:00.000Z"),
        ("2026-03-03T00:00:00.000Z", "2026-03-04T00:00:00.000Z"),
    ]
    # the same answer from raw rows
    raw = client.get(
        "/v1.1/Datastreams/Observations/aggregate",
        params={
            "ids": ",".join(map(str, ids)),
            "interval": "1d",
            "source": "raw",
            "from": "2026-03-01T23:00:00Z",
            "to": "2026-03-04T00:00:00Z",
        },
    ).json()
    assert raw["source"] == "raw"
    assert raw["series"] == r.json()["series"]


def test_csv_by_parameter_and_by_accept(client: TestClient, ids: list[int]) -> None:
    params = {
        "ids": ",".join(map(str, ids)),
        "interval": "12h",
        "fn": "count,avg",
        "from": "2026-03-02T00:00:00Z",
        "to": "2026-03-03T00:00:00Z",
    }
    r = client.get("/v1.1/Datastreams/Observations/aggregate", params={**params, "format": "csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["x-quartier-source"] == "observation_1h"
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows == [
        ["datastream_id", "time", "count", "avg"],
        [str(ids[0]), "2026-03-02T00:00:00.000Z", "72", "5.5"],
        [str(ids[0]), "2026-03-02T12:00:00.000Z", "72", "17.5"],
        [str(ids[1]), "2026-03-02T00:00:00.000Z", "12", "11.0"],
        [str(ids[1]), "2026-03-02T12:00:00.000Z", "12", "35.0"],
    ]
    by_accept = client.get(
        "/v1.1/Datastreams/Observations/aggregate", params=params, headers={"Accept": "text/csv"}
    )
    assert by_accept.text == r.text


def test_latest_values(client: TestClient, ids: list[int]) -> None:
    r = client.get(
        "/v1.1/Datastreams/Observations/latest", params={"ids": f"{ids[1]},{ids[0]},999"}
    )
    assert r.status_code == 200, r.text
    body = LatestValues.model_validate(r.json())
    assert [(v.datastream_id, v.phenomenon_time, v.result) for v in body.value] == [
        (ids[0], "2026-03-03T23:50:00.000Z", 23.0),
        (ids[1], "2026-03-02T23:00:00.000Z", 46.0),
    ]
    assert body.missing == [999]


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        (
            "/v1.1/Datastreams({pm25})/Observations/aggregate",
            {"interval": "7min", "from": "2026-03-02T00:00:00Z", "to": "2026-03-03T00:00:00Z"},
            400,
            "interval='7min' is not supported",
        ),
        (
            "/v1.1/Datastreams({pm25})/Observations/aggregate",
            {
                "interval": "1h",
                "fn": "avg,p95",
                "from": "2026-03-02T00:00:00Z",
                "to": "2026-03-03T00:00:00Z",
            },
            400,
            "unknown function 'p95'",
        ),
        (
            "/v1.1/Datastreams({pm25})/Observations/aggregate",
            {"interval": "1h", "from": "2026-03-02T00:00:00", "to": "2026-03-03T00:00:00Z"},
            400,
            "has no time zone",
        ),
        (
            "/v1.1/Datastreams({pm25})/Observations/aggregate",
            {"interval": "1h", "from": "yesterday", "to": "2026-03-03T00:00:00Z"},
            400,
            "from:",
        ),
        (
            "/v1.1/Datastreams({pm25})/Observations/aggregate",
            {"interval": "1h", "to": "2026-03-03T00:00:00Z"},
            400,
            "from: Field required",
        ),
        (
            "/v1.1/Datastreams({pm25})/Observations/aggregate",
            {"interval": "1min", "from": "2000-01-01T00:00:00Z", "to": "2026-03-03T00:00:00Z"},
            400,
            "shorten the range",
        ),
        (
            "/v1.1/Datastreams(987654)/Observations/aggregate",
            {"interval": "1h", "from": "2026-03-02T00:00:00Z", "to": "2026-03-03T00:00:00Z"},
            404,
            "no Datastream with @iot.id 987654",
        ),
        (
            "/v1.1/Datastreams/Observations/aggregate",
            {
                "ids": "1,x",
                "interval": "1h",
                "from": "2026-03-02T00:00:00Z",
                "to": "2026-03-03T00:00:00Z",
            },
            400,
            "'x' is not a datastream id",
        ),
        ("/v1.1/Datastreams/Observations/latest", {"ids": ""}, 400, "ids is empty"),
    ],
)
def test_errors_say_what_was_wrong(
    client: TestClient,
    ids: list[int],
    path: str,
    params: dict[str, str],
    status: int,
    message: str,
) -> None:
    r = client.get(path.format(pm25=ids[0]), params=params)
    assert r.status_code == status, r.text
    assert message in r.json()["message"]


def test_openapi_operation_ids_and_models(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ops = {
        p: m["operationId"]
        for p, item in spec["paths"].items()
        for m in item.values()
        if "Observations/aggregate" in p or "Observations/latest" in p
    }
    assert ops == {
        "/v1.1/Datastreams({ds_id})/Observations/aggregate": "aggregate_datastream_observations",
        "/v1.1/Datastreams/Observations/aggregate": "aggregate_observations_of_datastreams",
        "/v1.1/Datastreams/Observations/latest": "latest_observations_of_datastreams",
    }
    get = spec["paths"]["/v1.1/Datastreams/Observations/aggregate"]["get"]
    assert set(get["responses"]["200"]["content"]) == {"application/json", "text/csv"}
