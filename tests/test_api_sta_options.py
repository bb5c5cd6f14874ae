"""SensorThings system query options through the routes: ``$filter``, ``$orderby``, ``$count``,
``$top`` and ``$skip`` with ``@iot.nextLink``, and the 400/501 answers, against a real database
filled through the store. Grouped by the conformance classes of OGC 18-088 (request-data)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from quartier.api import models as m
from quartier.api.app import create_app
from quartier.config import Settings
from quartier.ingest.model import Batch, Position, Reading, Uplink
from quartier.ingest.writer import BatchWriter

pytestmark = pytest.mark.services
M = TypeVar("M", bound=BaseModel)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _uplink(device: str, readings: list[Reading], where: Position) -> Any:
    return (Uplink("net", device, readings, where), "t", b"", T0)


@pytest.fixture
def filled(settings: Settings) -> Settings:
    """Three things: a-1 with pm25 (results 0…24, one a minute) and pm10 (one), b-1 with no2
    (three, hourly), c-1 with pm25 (four). Datastreams 1 a-1 pm25, 2 a-1 pm10, 3 b-1 no2,
    4 c-1 pm25; three observed properties (pm25 shared)."""
    w = BatchWriter(settings.require_database_url(), auto_register=True)
    batch = Batch()
    batch.uplinks.append(
        _uplink(
            "a-1",
            [Reading("pm25", T0 + timedelta(minutes=i), float(i)) for i in range(25)]
            + [Reading("pm10", T0, 7.0)],
            Position(50.9, 6.9),
        )
    )
    batch.uplinks.append(
        _uplink(
            "b-1",
            [Reading("no2", T0 + timedelta(hours=i), 30.0 + i) for i in range(3)],
            Position(50.95, 7.0),
        )
    )
    batch.uplinks.append(
        _uplink(
            "c-1",
            [Reading("pm25", T0 + timedelta(minutes=i), 100.0 + i) for i in range(4)],
            Position(51.0, 7.1),
        )
    )
    w.write(batch)
    w.close()
    return settings


@pytest.fixture
def client(filled: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(filled)) as c:
        yield c


def _get(client: TestClient, model: type[M], path: str, **params: str) -> M:
    r = client.get(path, params=params or None)
    assert r.status_code == 200, r.text
    return model.model_validate(r.json())


def _datastream_id(client: TestClient, name: str) -> int:
    body = _get(
        client, m.DatastreamCollection, "/v1.1/Datastreams", **{"$filter": f"name eq '{name}'"}
    )
    assert len(body.value) == 1, body
    return body.value[0].id


# ------------------------------------------------------------------------- request-data/filter
@pytest.mark.parametrize(
    ("path", "model", "expr", "names"),
    [
        (
            "/v1.1/Things",
            m.ThingCollection,
            "startswith(name, 'net/b') or name eq 'net/c-1'",
            ["net/b-1", "net/c-1"],
        ),
        (
            "/v1.1/Locations",
            m.LocationCollection,
            "st_within(location, geography'POLYGON((6.95 50.9, 7.2 50.9, 7.2 51.1, 6.95 51.1,"
            " 6.95 50.9))')",
            ["net/b-1", "net/c-1"],
        ),
        (
            "/v1.1/Datastreams",
            m.DatastreamCollection,
            "properties/quantity eq 'pm25'",
            ["net/a-1 PM2.5", "net/c-1 PM2.5"],
        ),
        (
            "/v1.1/Datastreams",
            m.DatastreamCollection,
            "Thing/name eq 'net/a-1'",
            ["net/a-1 PM2.5", "net/a-1 PM10"],
        ),
        (
            "/v1.1/Sensors",
            m.SensorCollection,
            "properties/quantity ne 'pm25'",
            ["net/a-1 pm10", "net/b-1 no2"],
        ),
        (
            "/v1.1/ObservedProperties",
            m.ObservedPropertyCollection,
            "Datastreams/Thing/name eq 'net/a-1'",
            ["PM2.5", "PM10"],
        ),
        (
            "/v1.1/Things(1)/Datastreams",
            m.DatastreamCollection,
            "name ne 'net/a-1 PM10'",
            ["net/a-1 PM2.5"],
        ),
        ("/v1.1/Things(3)/Locations", m.LocationCollection, "name eq 'net/c-1'", ["net/c-1"]),
        ("/v1.1/Things(3)/Locations", m.LocationCollection, "name eq 'net/a-1'", []),
    ],
)
def test_filter_selects_the_subset_and_count_applies_it(
    client: TestClient, path: str, model: type[m.ThingCollection], expr: str, names: list[str]
) -> None:
    body = _get(client, model, path, **{"$filter": expr, "$count": "true"})
    assert [e.name for e in body.value] == names
    assert body.count == len(names)
    assert body.next_link is None


def test_filter_on_observations_and_count(client: TestClient) -> None:
    ds = _datastream_id(client, "net/a-1 PM2.5")
    body = _get(
        client,
        m.ObservationCollection,
        f"/v1.1/Datastreams({ds})/Observations",
        **{"$filter": "result ge 20", "$count": "true"},
    )
    assert [o.result for o in body.value] == [20.0, 21.0, 22.0, 23.0, 24.0]
    assert body.count == 5 and body.count_is_estimate is None


def test_grafana_phenomenon_time_range(client: TestClient) -> None:
    """Grafana's SensorThings data source: the dashboard's time range as a ``$filter`` on one
    Datastream's Observations, newest first, with a page size."""
    ds = _datastream_id(client, "net/a-1 PM2.5")
    body = _get(
        client,
        m.ObservationCollection,
        f"/v1.1/Datastreams({ds})/Observations",
        **{
            "$filter": "phenomenonTime ge 2026-11-01T00:05:00.000Z"
            " and phenomenonTime lt 2026-11-01T00:10:00.000Z",
            "$orderby": "phenomenonTime desc",
            "$top": "1000",
            "$count": "true",
        },
    )
    assert [o.phenomenon_time for o in body.value] == [
        f"2026-11-01T00:{minute:02d}:00.000Z" for minute in (9, 8, 7, 6, 5)
    ]
    assert body.count == 5 and body.next_link is None
    # the other datastream of a-1 has an observation at T0, outside the range and not this one's
    other = _datastream_id(client, "net/a-1 PM10")
    none = _get(
        client,
        m.ObservationCollection,
        f"/v1.1/Datastreams({other})/Observations",
        **{"$filter": "phenomenonTime gt 2026-11-01T00:00:00Z"},
    )
    assert none.value == []


def test_phenomenon_time_filter_is_a_primary_key_range_scan(filled: Settings) -> None:
    """The Grafana filter reaches PostgreSQL as a range condition the primary key serves."""
    import psycopg
    from psycopg.rows import dict_row

    from quartier.api.sta import compile_filter, parse_filter
    from quartier.store import sensorthings as q

    f = compile_filter(
        parse_filter(
            "phenomenonTime ge 2026-11-01T00:05:00Z and phenomenonTime lt 2026-11-01T00:10:00Z"
        ),
        "Observations",
        q.ALIASES["Observations"],
    )
    listing = q.Listing(100, 0, f.sql, (), f.params)
    with psycopg.connect(filled.require_database_url(), row_factory=dict_row) as conn:
        conn.execute("set enable_seqscan = off")
        conn.execute("set enable_bitmapscan = off")
        rows = q.observations(conn, 1, listing)  # type: ignore[arg-type]
        assert len(rows) == 5
        captured: list[str] = []
        original = conn.execute

        def explain(query: Any, params: Any = None, **kw: Any) -> Any:
            if not isinstance(query, str) and "order by" in query.as_string(conn):
                cur = original(psycopg.sql.SQL("explain (costs off) ") + query, params, **kw)
                captured.extend(r["QUERY PLAN"] for r in cur.fetchall())
            return original(query, params, **kw)

        conn.execute = explain  # type: ignore[method-assign]
        q.observations(conn, 1, listing)  # type: ignore[arg-type]
    plan = "\n".join(captured)
    cond = next(line for line in captured if "Index Cond" in line)
    assert "pkey" in plan, plan
    assert "datastream_id =" in cond and "phenomenon_time >=" in cond, plan
    assert "phenomenon_time <" in cond, plan


# ------------------------------------------------------------------------- request-data/orderby
def test_orderby_direction_is_applied(client: TestClient) -> None:
    desc = _get(client, m.ThingCollection, "/v1.1/Things", **{"$orderby": "id desc"})
    assert [t.name for t in desc.value] == ["net/c-1", "net/b-1", "net/a-1"]
    asc = _get(client, m.ThingCollection, "/v1.1/Things", **{"$orderby": "name asc"})
    assert [t.name for t in asc.value] == ["net/a-1", "net/b-1", "net/c-1"]
    sensors = _get(client, m.SensorCollection, "/v1.1/Sensors", **{"$orderby": "name desc"})
    assert [s.name for s in sensors.value] == [
        "net/c-1 pm25",
        "net/b-1 no2",
        "net/a-1 pm25",
        "net/a-1 pm10",
    ]
    props = _get(
        client,
        m.ObservedPropertyCollection,
        "/v1.1/ObservedProperties",
        **{"$orderby": "name desc"},
    )
    assert [p.name for p in props.value] == sorted((p.name for p in props.value), reverse=True)
    assert len(props.value) == 3
    locs = _get(client, m.LocationCollection, "/v1.1/Locations", **{"$orderby": "id desc"})
    assert [x.name for x in locs.value] == ["net/c-1", "net/b-1", "net/a-1"]


def test_orderby_several_keys(client: TestClient) -> None:
    """Quantities order no2 < pm10 < pm25; the two pm25 streams by the second key."""
    for second, pm25 in (
        ("id desc", ["net/c-1 PM2.5", "net/a-1 PM2.5"]),
        ("id asc", ["net/a-1 PM2.5", "net/c-1 PM2.5"]),
    ):
        body = _get(
            client,
            m.DatastreamCollection,
            "/v1.1/Datastreams",
            **{"$orderby": f"properties/quantity asc, {second}"},
        )
        assert [d.name for d in body.value] == [
            "net/b-1 Nitrogen dioxide",
            "net/a-1 PM10",
            *pm25,
        ]


def test_orderby_result_on_observations(client: TestClient) -> None:
    ds = _datastream_id(client, "net/c-1 PM2.5")
    body = _get(
        client,
        m.ObservationCollection,
        f"/v1.1/Datastreams({ds})/Observations",
        **{"$orderby": "result desc"},
    )
    assert [o.result for o in body.value] == [103.0, 102.0, 101.0, 100.0]


# ------------------------------------------------------------------------- top, skip, nextLink
def test_next_link_carries_filter_and_orderby(client: TestClient) -> None:
    ds = _datastream_id(client, "net/a-1 PM2.5")
    url: str | None = f"/v1.1/Datastreams({ds})/Observations"
    params: dict[str, str] | None = {
        "$filter": "result ge 10",
        "$orderby": "result desc",
        "$top": "4",
    }
    seen: list[float] = []
    pages = 0
    while url is not None:
        r = client.get(url, params=params)
        assert r.status_code == 200, r.text
        page = m.ObservationCollection.model_validate(r.json())
        seen += [o.result for o in page.value]
        url, params, pages = page.next_link, None, pages + 1
        if url is not None:
            query = parse_qs(urlsplit(url).query)
            assert query["$filter"] == ["result ge 10"]
            assert query["$orderby"] == ["result desc"]
            assert query["$top"] == ["4"]
        assert pages < 10
    assert seen == [float(i) for i in range(24, 9, -1)]
    assert pages == 4


def test_top_zero_with_count_is_the_qgis_probe(client: TestClient) -> None:
    for path, n in (
        ("/v1.1/Things", 3),
        ("/v1.1/Datastreams", 4),
        ("/v1.1/Datastreams(1)/Observations", 25),
    ):
        r = client.get(path, params={"$top": "0", "$count": "true"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["value"] == []
        assert body["@iot.count"] == n
        assert "@iot.nextLink" not in body


def test_top_above_maximum_is_clamped(filled: Settings) -> None:
    small = filled.model_copy(update={"api": filled.api.model_copy(update={"max_top": 2})})
    with TestClient(create_app(small)) as c:
        body = _get(c, m.ThingCollection, "/v1.1/Things", **{"$top": "1000", "$count": "true"})
        assert [t.name for t in body.value] == ["net/a-1", "net/b-1"]
        assert body.count == 3
        assert body.next_link is not None
        query = parse_qs(urlsplit(body.next_link).query)
        assert query["$top"] == ["2"] and "$skiptoken" in query and "$skip" not in query
        last = m.ThingCollection.model_validate(c.get(body.next_link).json())
        assert [t.name for t in last.value] == ["net/c-1"] and last.next_link is None


# ------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("params", "status", "needles"),
    [
        ({"$filter": "nosuch eq 1"}, 400, ["nosuch", "Thing has no property"]),
        ({"$filter": "name eq"}, 400, ["$filter", "position 8"]),
        (
            {"$filter": "name eq 'x' andd id eq 1"},
            400,
            ["$filter", "unexpected 'id' at position 18"],
        ),
        ({"$filter": "name add 1"}, 400, []),
        ({"$orderby": "name sideways"}, 400, ["$orderby"]),
        ({"$top": "x"}, 400, ["$top"]),
        ({"$filter": "Datastreams/any(d: d/name eq 'x')"}, 501, ["any", "not supported"]),
        ({"$filter": "isof(name, 'Edm.String')"}, 501, ["isof"]),
        ({"$search": "pm25"}, 501, ["$search"]),
        ({"$select": "nosuch"}, 400, ["$select", "not a property of Thing"]),
        ({"$expand": "Nosuch"}, 400, ["$expand", "Thing has no navigation property"]),
        ({"$expand": "Datastreams($filter=nosuch eq 1)"}, 400, ["nosuch"]),
        ({"$expand": "Datastreams($levels=2)"}, 501, ["$levels"]),
        ({"$skiptoken": "garbage"}, 400, ["$skiptoken"]),
        ({"$skiptoken": "WyIxIiwiMiJd"}, 400, ["$skiptoken"]),
        ({"$resultFormat": "dataArray"}, 400, ["Observations only"]),
        ({"$nonsense": "1"}, 400, ["$nonsense"]),
    ],
)
def test_bad_and_unsupported_options(
    client: TestClient, params: dict[str, str], status: int, needles: list[str]
) -> None:
    r = client.get("/v1.1/Things", params=params)
    assert r.status_code == status, r.text
    message = r.json()["message"]
    for needle in needles:
        assert needle in message
    assert "Traceback" not in r.text
