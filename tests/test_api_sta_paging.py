"""SensorThings server-driven paging, ``$count`` and ``$resultFormat=dataArray`` (OGC 18-088
request-data/top, skip, count, result-format), against a real database: keyset nextLinks equal
the unpaged order for every sort, stay correct while rows are inserted, ``$count`` is exact on
every collection."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient

from quartier.api.app import create_app
from quartier.api.sensorthings import DATA_ARRAY_COMPONENTS
from quartier.config import Settings
from quartier.ingest.model import Batch, Position, Reading, Uplink
from quartier.ingest.writer import BatchWriter

pytestmark = pytest.mark.services
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _uplink(device: str, readings: list[Reading], where: Position) -> Any:
    return (Uplink("net", device, readings, where), "t", b"", T0)


def _write(settings: Settings, device: str, readings: list[Reading]) -> None:
    w = BatchWriter(settings.require_database_url(), auto_register=True)
    batch = Batch()
    batch.uplinks.append(_uplink(device, readings, Position(50.9, 6.9)))
    w.write(batch)
    w.close()


@pytest.fixture
def filled(settings: Settings) -> Settings:
    """a-1: pm25 (40, one a minute, results repeating 0…9 so sorts by result tie) and pm10 (5);
    b-1: no2 (6, hourly). 51 observations; some have a JSON string result, some a resultTime."""
    _write(
        settings,
        "a-1",
        [Reading("pm25", T0 + timedelta(minutes=i), float(i % 10)) for i in range(40)]
        + [Reading("pm10", T0 + timedelta(minutes=i), 7.0) for i in range(5)],
    )
    _write(settings, "b-1", [Reading("no2", T0 + timedelta(hours=i), 30.0 + i) for i in range(6)])
    with psycopg.connect(settings.require_database_url()) as conn:
        conn.execute(
            "update observation set result = null, result_json = '\"high\"'"
            " where result = 9 and datastream_id = 1"
        )
        conn.execute(
            "update observation set result_time = phenomenon_time + interval '1 second'"
            " where datastream_id = 3"
        )
    return settings


@pytest.fixture
def client(filled: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(filled)) as c:
        yield c


def _json(client: TestClient, path: str, **params: str) -> Any:
    r = client.get(path, params=params or None)
    assert r.status_code == 200, r.text
    return r.json()


def _follow(client: TestClient, path: str, **params: str) -> tuple[list[Any], list[str]]:
    """Every entity of a collection by following nextLinks; also the nextLinks."""
    body = _json(client, path, **params)
    values, links = list(body["value"]), []
    while "@iot.nextLink" in body:
        links.append(body["@iot.nextLink"])
        assert len(links) < 200
        body = _json(client, body["@iot.nextLink"])
        values += body["value"]
    return values, links


# --------------------------------------------------------------------- request-data/top, skip
@pytest.mark.parametrize(
    "orderby",
    [
        None,
        "phenomenonTime desc",
        "result desc",
        "result",
        "resultTime desc,result",
        "Datastream/id desc,phenomenonTime",
        "id desc",
        "day(phenomenonTime),result desc",
    ],
)
@pytest.mark.parametrize("path", ["/v1.1/Observations", "/v1.1/Datastreams(1)/Observations"])
def test_keyset_pages_equal_the_unpaged_order(client: TestClient, path: str, orderby: str) -> None:
    params = {"$orderby": orderby} if orderby else {}
    whole = _json(client, path, **params, **{"$top": "1000"})["value"]
    paged, links = _follow(client, path, **params, **{"$top": "4"})
    assert [o["@iot.id"] for o in paged] == [o["@iot.id"] for o in whole]
    assert len(links) == (len(whole) - 1) // 4
    for link in links:
        query = parse_qs(urlsplit(link).query)
        assert "$skiptoken" in query and "$skip" not in query, link


def test_keyset_on_every_collection_and_after_skip(client: TestClient) -> None:
    for path in ("/v1.1/Things", "/v1.1/Datastreams", "/v1.1/Sensors", "/v1.1/Locations"):
        whole = _json(client, path, **{"$orderby": "name desc"})["value"]
        paged, _ = _follow(client, path, **{"$orderby": "name desc", "$top": "1"})
        assert [e["@iot.id"] for e in paged] == [e["@iot.id"] for e in whole], path
    # $skip positions the first page; its nextLink goes on by cursor from there
    whole = _json(client, "/v1.1/Observations", **{"$top": "1000"})["value"]
    paged, _ = _follow(client, "/v1.1/Observations", **{"$skip": "10", "$top": "7"})
    assert [o["@iot.id"] for o in paged] == [o["@iot.id"] for o in whole[10:]]


def test_paging_while_inserting_skips_and_repeats_nothing(filled: Settings) -> None:
    """Observations inserted before, between and after the pages' positions while a client pages
    (by time and by datastream): every observation that existed at the start is seen once."""
    with TestClient(create_app(filled)) as client:
        for path, params in (
            ("/v1.1/Observations", {}),
            ("/v1.1/Observations", {"$orderby": "phenomenonTime desc"}),
            ("/v1.1/Datastreams(1)/Observations", {"$orderby": "result desc"}),
        ):
            start = {o["@iot.id"] for o in _json(client, path, **{"$top": "1000"})["value"]}
            body = _json(client, path, **params, **{"$top": "5"})
            seen = [o["@iot.id"] for o in body["value"]]
            k = 0
            while "@iot.nextLink" in body:
                k += 1
                # new rows: earlier than everything, later than everything, and in between
                _write(
                    filled,
                    "a-1",
                    [
                        Reading("pm25", T0 - timedelta(days=k, seconds=len(path)), 5.5),
                        Reading("pm25", T0 + timedelta(days=k, seconds=len(params)), 3.5),
                        Reading("pm25", T0 + timedelta(minutes=k, seconds=30 + len(params)), 9.5),
                    ],
                )
                body = _json(client, body["@iot.nextLink"])
                seen += [o["@iot.id"] for o in body["value"]]
            assert len(seen) == len(set(seen)), "an observation was repeated"
            assert start <= set(seen), f"skipped: {sorted(start - set(seen))[:5]}"
            assert k >= 3


def test_concurrent_writer_thread_while_paging(filled: Settings) -> None:
    """The same with a writer thread inserting as fast as it can while the pages are read."""
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            t = T0 + timedelta(minutes=i % 40, seconds=1 + i // 40)
            _write(filled, "a-1", [Reading("pm25", t, float(i))])
            written[0] += 1

    with TestClient(create_app(filled)) as client:
        start = {
            o["@iot.id"] for o in _json(client, "/v1.1/Observations", **{"$top": "1000"})["value"]
        }
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            seen, links = _follow(client, "/v1.1/Observations", **{"$top": "3"})
        finally:
            stop.set()
            thread.join()
    ids = [o["@iot.id"] for o in seen]
    assert written[0] > 0 and len(links) > 10
    assert len(ids) == len(set(ids)) and start <= set(ids)


def test_top_is_clamped_and_top_zero_has_no_next_link(filled: Settings) -> None:
    small = filled.model_copy(update={"api": filled.api.model_copy(update={"max_top": 3})})
    with TestClient(create_app(small)) as client:
        body = _json(client, "/v1.1/Observations", **{"$top": "100000"})
        assert len(body["value"]) == 3
        assert parse_qs(urlsplit(body["@iot.nextLink"]).query)["$top"] == ["3"]
        for path in ("/v1.1/Observations", "/v1.1/Things", "/v1.1/Datastreams(1)/Observations"):
            body = _json(client, path, **{"$top": "0", "$count": "true"})
            assert body["value"] == [] and body["@iot.count"] > 0
            assert "@iot.nextLink" not in body


# --------------------------------------------------------------------- request-data/count
def test_count_is_exact_on_every_collection(client: TestClient) -> None:
    """``$count`` on each entity set and each navigation equals the number of entities its
    pages hold, with and without a filter."""
    root = _json(client, "/v1.1")
    paths = [e["url"] for e in root["value"]]
    for e in root["value"]:
        first = _json(client, e["url"], **{"$top": "1"})["value"]
        if first:
            paths += [v for k, v in first[0].items() if k.endswith("@iot.navigationLink")]
    for path in paths:
        if "value" not in _json(client, path):
            continue  # a to-one navigationLink: the entity itself
        values, _ = _follow(client, path, **{"$top": "7"})
        body = _json(client, path, **{"$count": "true", "$top": "2"})
        assert body["@iot.count"] == len(values), path
    body = _json(client, "/v1.1/Observations", **{"$count": "true", "$filter": "result gt 5"})
    assert body["@iot.count"] == 3 * 4 + 5 + 6  # pm25 6,7,8 ×4 (9 is a string); pm10, no2
    body = _json(client, "/v1.1/Observations", **{"$count": "true", "$top": "1"})
    assert body["@iot.count"] == 51


# --------------------------------------------------------------------- dataArray
def test_data_array_of_one_datastream(client: TestClient) -> None:
    body = _json(
        client,
        "/v1.1/Datastreams(3)/Observations",
        **{"$resultFormat": "dataArray", "$count": "true", "$top": "4"},
    )
    assert body["@iot.count"] == 6 and "@iot.nextLink" in body
    [group] = body["value"]
    assert group["Datastream@iot.navigationLink"].endswith("/v1.1/Datastreams(3)")
    assert group["components"] == list(DATA_ARRAY_COMPONENTS)
    assert group["dataArray@iot.count"] == 4
    assert group["dataArray"][0] == [
        "3:" + str(int(T0.timestamp() * 1_000_000)),
        "2026-11-01T00:00:00.000Z",
        "2026-11-01T00:00:01.000Z",
        30.0,
    ]
    rest = _json(client, body["@iot.nextLink"])
    assert [row[3] for row in rest["value"][0]["dataArray"]] == [34.0, 35.0]


def test_data_array_with_select_over_datastreams(client: TestClient) -> None:
    body = _json(
        client,
        "/v1.1/Observations",
        **{
            "$resultFormat": "dataArray",
            "$select": "result,phenomenonTime,Datastream",
            "$filter": "phenomenonTime lt 2026-11-01T00:02:00Z",
        },
    )
    groups = {g["Datastream@iot.navigationLink"].rsplit("(", 1)[1]: g for g in body["value"]}
    assert set(groups) == {"1)", "2)", "3)"}
    assert groups["1)"]["components"] == ["result", "phenomenonTime"]
    assert groups["1)"]["dataArray"] == [
        [0.0, "2026-11-01T00:00:00.000Z"],
        [1.0, "2026-11-01T00:01:00.000Z"],
    ]
    assert groups["3)"]["dataArray"] == [[30.0, "2026-11-01T00:00:00.000Z"]]
    r = client.get("/v1.1/Things", params={"$resultFormat": "dataArray"})
    assert r.status_code == 400 and "Observations only" in r.json()["message"]


def test_count_of_all_observations_stays_exact_above_the_estimate_limit(
    client: TestClient, filled: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unfiltered ``$count`` on ``/Observations`` is exact; on plain PostgreSQL also above the
    limit where TimescaleDB answers the planner's estimate (``store/sensorthings_count``:
    summed from the daily rollup). Filtered and navigated counts stay exact."""
    from quartier.store import sensorthings

    with psycopg.connect(filled.require_database_url(), autocommit=True) as conn:
        conn.execute("analyze observation")
    body = _json(client, "/v1.1/Observations", **{"$count": "true", "$top": "1"})
    assert body["@iot.count"] == 51 and "@quartier.countIsEstimate" not in body
    monkeypatch.setattr(sensorthings, "OBSERVATIONS_EXACT_COUNT_LIMIT", 10)
    body = _json(client, "/v1.1/Observations", **{"$count": "true", "$top": "1"})
    assert body["@iot.count"] == 51 and "@quartier.countIsEstimate" not in body
    for path, params, n in (
        ("/v1.1/Observations", {"$filter": "result gt 5"}, 3 * 4 + 5 + 6),
        ("/v1.1/Datastreams(3)/Observations", {}, 6),
    ):
        body = _json(client, path, **{"$count": "true", "$top": "1", **params})
        assert body["@iot.count"] == n and "@quartier.countIsEstimate" not in body
