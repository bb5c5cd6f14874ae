"""Observation pages written by PostgreSQL (``api/sta_fastpage.py``) are the general path's pages:
the same bytes as the orjson page (``sensorthings._observation_page``) and the same content as
the response models, on random rows in a real database (floats at the edges of the range
PostgreSQL writes itself, NaN, ±Infinity, -0.0, null and JSON results, JSON parameters,
microsecond and pre-1970 times, FeatureOfInterest links, MultiDatastream observations), for
random listings (``$filter``, ``$orderby``, ``$top`` 0…1000, keyset continuations); over HTTP
the same status, body, ETag and ``@iot.nextLink`` chain with the fast path on and off."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from quartier.api import models as m
from quartier.api import sta_fastpage
from quartier.api.app import create_app
from quartier.api.sensorthings import PREFIX, _level, _observation, _observation_page
from quartier.api.sta import compile_filter, order_keys, parse_filter, parse_query_options
from quartier.api.sta.ast import OrderItem, Path
from quartier.config import Settings
from quartier.store import sensorthings as q
from tests.sta_helpers import one_reading, scalar

pytestmark = pytest.mark.services
BASE = "http://testserver"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
DS = 1  # one_reading's Datastream

#: results around the limits of what PostgreSQL writes as orjson does ([1e-4, 1e15), 0)
EDGE_RESULTS = [
    1e-4, 9.999999999999999e-05, 1e15, 999999999999999.9, 999999999999999.0, 1e16, 1e22, 1e300,
    -1e-4, -1e15, 5e-324, 2.5e-320, 1.5e-7, 0.1, 0.30000000000000004, 123456789.125, -0.0, 0.0,
    100.0, -7.0, math.nan, math.inf, -math.inf, 1 / 3,
]  # fmt: skip


def _result(rng: random.Random) -> tuple[float | None, Any]:
    """(result, result_json) of a random observation."""
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(EDGE_RESULTS), None
    if roll < 0.75:
        plain = [rng.uniform(-1e6, 1e6), rng.random() * 1e-9, float(rng.randint(-99, 99))]
        return rng.choice(plain), None
    if roll < 0.85:
        return None, None
    kinds = ["text", 'a, b: "c" \\ ü \u0001', {"a": [1, 2.5]}, True, [0.5, 1, "SW", None], 17]
    return None, Jsonb(rng.choice(kinds))


def _parameters(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            None,
            Jsonb({"fcnt": rng.randint(0, 10**6), "rssi": -101.5}),
            Jsonb({"s": "x, y: z"}),
        ]
    )


def _fill(conn: psycopg.Connection[Any], rng: random.Random, scope: int, n: int) -> None:
    """``n`` random observations stored under ``scope`` (a Datastream's id, minus a
    MultiDatastream's), a few with JSON numbers PostgreSQL keeps as written (1.50, 1e2)."""
    times: set[datetime] = set()
    while len(times) < n:
        us = rng.choice([rng.randint(-(2 * 10**16), 10**15), rng.randint(0, 10**7) * 60_000_000])
        times.add(T0 + timedelta(microseconds=us))
    with conn.cursor() as cur:
        for t in sorted(times):
            result, result_json = _result(rng)
            if scope < 0:
                result, result_json = None, Jsonb([rng.choice([1.5, None, 2]), "SW"])
            cur.execute(
                "insert into observation (datastream_id, phenomenon_time, result, result_json,"
                " result_time, parameters, foi_id) values (%s, %s, %s, %s, %s, %s, %s)",
                (
                    scope,
                    t,
                    result,
                    result_json,
                    rng.choice([None, t + timedelta(microseconds=rng.randint(0, 10**9))]),
                    _parameters(rng),
                    rng.choice([None, None, rng.randint(1, 99)]),
                ),
            )
        cur.execute(
            'update observation set parameters = \'{"gain": 1.50, "n": 1e2, "z": -0}\''
            " where datastream_id = %s and phenomenon_time in"
            " (select phenomenon_time from observation where datastream_id = %s"
            "  order by phenomenon_time limit 3)",
            (scope, scope),
        )


@pytest.fixture
def world(settings: Settings) -> Iterator[tuple[Settings, int]]:
    """Datastream 1 with 400 random observations, a MultiDatastream with 60."""
    one_reading(settings)
    rng = random.Random(13)
    mds = scalar(
        settings,
        "insert into multi_datastream (name, multi_observation_data_types, unit_of_measurements,"
        " thing_id, sensor_id) select 'mast', '[\"http://www.opengis.net/def/observationType/"
        'OGC-OM/2.0/OM_Measurement", "http://www.opengis.net/def/observationType/OGC-OM/2.0/'
        'OM_CategoryObservation"]\', \'[{"name": "m/s", "symbol": "m/s", "definition":'
        ' ""}, {"name": "", "symbol": "", "definition": ""}]\', thing_id, sensor_id'
        " from datastream where id = 1 returning id",
    )
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        conn.execute("delete from observation")
        _fill(conn, rng, DS, 400)
        _fill(conn, rng, -mds, 60)
    yield settings, mds


def _general_rows(conn: Any, scope: int, listing: q.Listing) -> list[dict[str, Any]]:
    """The rows the general path shapes (the same query, with the keyset cursor columns)."""
    source = sql.SQL(q._OBSERVATION.source)
    return q._select_page(conn, q._OBSERVATION, source, q._OF_DATASTREAM, scope, listing)


def _ordered(text: bytes | str) -> str:
    return json.dumps(json.loads(text), allow_nan=True)


_FILTERS = [
    None,
    "phenomenonTime ge 2026-01-01T00:00:00Z and phenomenonTime lt 2027-03-01T00:00:00.123456Z",
    "result gt 0",
    "result eq null",
    "resultTime ne null or phenomenonTime lt 1990-01-01T00:00:00+02:00",
    "result lt 1000000000000000",
]
_ORDERS: list[tuple[OrderItem, ...]] = [
    (),
    (OrderItem(Path(("phenomenonTime",)), descending=True),),
    (OrderItem(Path(("result",)), descending=True),),
    (OrderItem(Path(("resultTime",))),),
]


def _listing(settings: Settings, rng: random.Random) -> q.Listing:
    text = rng.choice(_FILTERS)
    options = parse_query_options({} if text is None else {"$filter": text})
    options = replace(options, orderby=rng.choice(_ORDERS), top=rng.choice([0, 1, 7, 50, 1000]))
    return _level(settings, options, "Observations")


def test_pages_equal_the_general_path_on_random_rows(world: tuple[Settings, int]) -> None:
    settings, mds = world
    rng = random.Random(5)
    compared = more = continued = 0
    with psycopg.connect(settings.require_database_url(), row_factory=dict_row) as conn:
        for _ in range(120):
            scope = rng.choice([DS, DS, -mds])
            listing = _listing(settings, rng)
            for _page in range(3):  # the first page and up to two continuations
                rows = _general_rows(conn, scope, listing)
                top = listing.top
                shown = rows[:top]
                expected = _observation_page(shown, BASE, None, None, False)
                fast = sta_fastpage.observation_page(conn, scope, listing, BASE + PREFIX)
                assert expected is not None and fast is not None
                body = sta_fastpage.collection(fast.items, None, None, False)
                assert body == bytes(expected.body)
                models = m.ObservationCollection.model_validate(
                    {"value": [_observation(r, BASE) for r in shown]}
                ).model_dump_json(by_alias=True)
                assert _ordered(body) == _ordered(models)
                assert fast.more == (top > 0 and len(rows) > top)
                compared += 1
                if not fast.more:
                    break
                more += 1
                keys = sorted(k for k in shown[-1] if k.startswith("_k"))
                assert fast.last_keys == [shown[-1][k] for k in keys]
                if not keys:
                    break
                listing = replace(listing, after=tuple(fast.last_keys), skip=0)
                continued += 1
    assert compared >= 150 and more >= 30 and continued >= 20


def test_the_edge_values_are_on_the_page(world: tuple[Settings, int]) -> None:
    """Every edge result, JSON kind and time shape of the data set is compared at least once
    (the random comparisons above could miss some)."""
    settings, _ = world
    options = parse_query_options({"$top": "1000"})
    listing = _level(settings, options, "Observations")
    with psycopg.connect(settings.require_database_url(), row_factory=dict_row) as conn:
        rows = _general_rows(conn, DS, listing)
        fast = sta_fastpage.observation_page(conn, DS, listing, BASE + PREFIX)
    assert fast is not None and len(rows) == 400 and not fast.more
    expected = _observation_page(rows, BASE, None, None, False)
    assert expected is not None
    body = sta_fastpage.collection(fast.items, None, None, False)
    assert body == bytes(expected.body)
    values = json.loads(body)["value"]
    assert any(v["result"] is None for v in values)  # null, NaN, ±Infinity
    assert any(isinstance(v["result"], (str, dict, list, bool)) for v in values)
    assert any(v["parameters"] == {"gain": 1.5, "n": 100, "z": 0} for v in values)
    assert any(v["phenomenonTime"] < "1970" for v in values)
    assert any(v["resultTime"] is not None for v in values)
    assert any("FeatureOfInterest@iot.navigationLink" in v for v in values)
    # the rows PostgreSQL writes whole and those Python completes are both on the page
    assert b'"parameters":null' in body and b'"parameters":{' in body
    assert {r["result"] for r in rows if r["result"] is not None} >= {1e16, 1e-4, 1e15}


def test_a_json_value_orjson_cannot_write_falls_back(world: tuple[Settings, int]) -> None:
    settings, _ = world
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        conn.execute(
            "update observation set parameters = %s where datastream_id = %s and"
            " phenomenon_time = (select min(phenomenon_time) from observation"
            " where datastream_id = %s)",
            (Jsonb({"big": 2**70}), DS, DS),
        )
    listing = _level(settings, parse_query_options({"$top": "5"}), "Observations")
    with psycopg.connect(settings.require_database_url(), row_factory=dict_row) as conn:
        assert sta_fastpage.observation_page(conn, DS, listing, BASE + PREFIX) is None
    with TestClient(create_app(settings)) as client:
        r = client.get(f"/v1.1/Datastreams({DS})/Observations", params={"$top": "5"})
    assert r.status_code == 200
    assert r.json()["value"][0]["parameters"] == {"big": 2**70}  # written by the models


def _get(client: TestClient, url: str, **headers: str) -> tuple[int, bytes, str | None]:
    r = client.get(url, headers=headers)
    return r.status_code, r.content, r.headers.get("etag")


def _chain(client: TestClient, url: str) -> list[tuple[int, bytes, str | None]]:
    """The answers to ``url`` and to every nextLink after it."""
    out = [_get(client, url)]
    while out[-1][0] == 200:
        nxt = json.loads(out[-1][1]).get("@iot.nextLink")
        if nxt is None:
            break
        out.append(_get(client, nxt.removeprefix(BASE)))
    return out


def test_http_answers_equal_with_the_fast_path_off(
    world: tuple[Settings, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same status, bytes, ETag and nextLinks for a set of requests, including $count,
    $select and dataArray (which keep the general path), empty pages, 404s and bad cursors."""
    settings, mds = world
    urls = [
        f"/v1.1/Datastreams({DS})/Observations",
        f"/v1.1/Datastreams({DS})/Observations?$top=97&$count=true",
        f"/v1.1/Datastreams({DS})/Observations?$top=50&$orderby=result desc&$count=true",
        f"/v1.1/Datastreams({DS})/Observations?$top=150&$orderby=phenomenonTime desc",
        f"/v1.1/Datastreams({DS})/Observations?$top=1000&$filter=phenomenonTime ge"
        " 2026-01-01T00:00:00Z and phenomenonTime lt 2027-01-01T00:00:00Z",
        f"/v1.1/Datastreams({DS})/Observations?$top=40&$skip=30&$orderby=result",
        f"/v1.1/Datastreams({DS})/Observations?$filter=phenomenonTime lt 0001-01-02T00:00:00Z"
        "&$count=true",  # an empty page
        f"/v1.1/Datastreams({DS})/Observations?$top=0&$count=true",
        f"/v1.1/Datastreams({DS})/Observations?$top=60&$select=result,phenomenonTime",
        f"/v1.1/Datastreams({DS})/Observations?$top=60&$resultFormat=dataArray",
        f"/v1.1/Datastreams({DS})/Observations?$skiptoken=WyJ4Il0",  # a bad cursor: 400
        "/v1.1/Datastreams(999)/Observations",  # 404
        "/v1.1/Datastreams(999)/Observations?$skiptoken=WyJ4Il0",
        f"/v1.1/MultiDatastreams({mds})/Observations?$top=25&$count=true",
        f"/v1.1/MultiDatastreams({mds + 1})/Observations",  # 404
        f"/v1.1/Datastreams({DS})/Observations?$filter=phenomenonTime lt now()&$top=30",
    ]
    calls = 0
    real = sta_fastpage.observation_page

    def counted(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*args)

    with TestClient(create_app(settings)) as client:
        monkeypatch.setattr(sta_fastpage, "observation_page", counted)
        fast = [_chain(client, u) for u in urls]
        assert calls >= 20  # the fast path answered
        monkeypatch.setattr(sta_fastpage, "observation_page", lambda *a: None)
        general = [_chain(client, u) for u in urls]
        for url, a, b in zip(urls, fast, general, strict=True):
            assert [x[0] for x in a] == [x[0] for x in b], url
            assert a == b, url
        statuses = {x[0] for chain in fast for x in chain}
        assert statuses == {200, 400, 404}
        assert sum(len(c) for c in fast) >= 30  # nextLinks followed
        # the fast path's ETag answers If-None-Match with 304
        monkeypatch.setattr(sta_fastpage, "observation_page", counted)
        status, _, tag = _get(client, urls[1])
        assert status == 200 and tag is not None
        assert client.get(urls[1], headers={"If-None-Match": tag}).status_code == 304


def test_compilations_are_kept_per_tree_not_per_equal_value() -> None:
    """1, 1.0 and true compare equal in Python; their compilations differ and are kept apart.
    A compilation with now() is made again for each request."""
    texts = ["result eq 1", "result eq 1.0", "result eq true", "result eq 1", "result eq true"]
    compiled = [compile_filter(parse_filter(t), "Observations", "o") for t in texts]
    fresh = [
        compile_filter(parse_filter(t), "Observations", "o", now=datetime.now(UTC)) for t in texts
    ]  # with now given: never from the cache
    for a, b in zip(compiled, fresh, strict=True):
        assert a.sql.as_string() == b.sql.as_string() and a.params == b.params
    assert compiled[0].sql.as_string() != compiled[2].sql.as_string()
    assert compiled[0].params is not compiled[3].params  # each caller gets its own copy
    now_filter = parse_filter("phenomenonTime lt now()")
    first = compile_filter(now_filter, "Observations", "o").params
    later = compile_filter(now_filter, "Observations", "o").params
    assert next(iter(first.values())) < next(iter(later.values()))
    keys, _ = order_keys((OrderItem(Path(("result",)), True),), "Observations", "o")
    again, _ = order_keys((OrderItem(Path(("result",)), True),), "Observations", "o")
    assert keys == again and keys is not again


def test_an_infinite_time_is_left_to_the_general_path() -> None:
    """``timestamptz`` arrives as µs since 2000 (binary); PostgreSQL's ``infinity`` and
    ``-infinity`` have no RFC 3339 form here, so the page goes the general way."""
    finite = (0, None, None, None, None, None)
    assert sta_fastpage._write([finite], 1, "")[0].startswith('{"@iot.id":"1:946684800000000"')
    for infinite in (2**63 - 1, -(2**63)):
        with pytest.raises(sta_fastpage._Infinite):
            sta_fastpage._write([finite, (infinite, 1.0, None, None, None, None)], 1, "")
        with pytest.raises(sta_fastpage._Infinite):
            sta_fastpage._write([(0, 1.0, '"x"', infinite, None, None)], 1, "")
