"""SensorThings ``$expand`` (OGC 18-088 request-data/expand): every navigation, nested, with
options at each level, ``@iot.count`` and ``@iot.nextLink`` inside expanded collections, and the
"latest observation of each datastream" shape served by the primary key (EXPLAIN on 12,000
observations), against a real database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from sta_helpers import T0, fill_two_devices

from quartier.api.app import create_app
from quartier.api.sensorthings import SET_OF
from quartier.api.sta import ENTITIES, ENTITY_SETS, compile_navigation, parse_expand
from quartier.config import Settings
from quartier.ingest.model import Batch, Observation, Position, Reading, Uplink
from quartier.ingest.writer import BatchWriter
from quartier.store import sensorthings as q

pytestmark = pytest.mark.services


def _uplink(device: str, readings: list[Reading], where: Position) -> Any:
    return (Uplink("net", device, readings, where), "t", b"", T0)


@pytest.fixture
def filled(settings: Settings) -> Settings:
    return fill_two_devices(settings)


def _add_multi_datastream(settings: Settings) -> None:
    """A MultiDatastream of a-1 (pm25's and pm10's ObservedProperties) with 3 observations."""
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        row = conn.execute(
            "insert into multi_datastream (name, multi_observation_data_types,"
            " unit_of_measurements, thing_id, sensor_id)"
            " select 'a-1 pair', %s, %s, d.thing_id, d.sensor_id from datastream d"
            " where d.id = 1 returning id",
            (Jsonb(["OM_Measurement"] * 2), Jsonb([{"name": "µg/m³"}] * 2)),
        ).fetchone()
        assert row is not None
        conn.execute(
            "insert into multi_datastream_observed_property"
            " select %s, row_number() over (order by id) - 1, observed_property_id"
            " from datastream where id in (1, 2)",
            (row[0],),
        )
    w = BatchWriter(settings.require_database_url(), auto_register=False)
    batch = Batch(source="http")
    batch.observations.extend(
        Observation(-row[0], T0 + timedelta(minutes=i), None, [i, 2 * i]) for i in range(3)
    )
    w.write(batch)
    w.close()


@pytest.fixture
def client(filled: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(filled)) as c:
        yield c


def _json(client: TestClient, path: str, **params: str) -> Any:
    r = client.get(path, params=params or None)
    assert r.status_code == 200, r.text
    return r.json()


def _thing(client: TestClient, name: str, **params: str) -> Any:
    body = _json(client, "/v1.1/Things", **{"$filter": f"name eq '{name}'", **params})
    assert len(body["value"]) == 1
    return body["value"][0]


def test_latest_observation_per_datastream(client: TestClient) -> None:
    """The issue's shape: each Thing with each Datastream and only its newest Observation."""
    body = _json(
        client,
        "/v1.1/Things",
        **{"$expand": "Datastreams/Observations($top=1;$orderby=phenomenonTime desc)"},
    )
    latest = {
        d["name"]: [(o["phenomenonTime"], o["result"]) for o in d["Observations"]]
        for t in body["value"]
        for d in t["Datastreams"]
    }
    assert latest == {
        "net/a-1 PM2.5": [("2026-11-01T00:24:00.000Z", 24.0)],
        "net/a-1 PM10": [("2026-11-01T00:00:00.000Z", 7.0)],
        "net/b-1 Nitrogen dioxide": [("2026-11-01T02:00:00.000Z", 32.0)],
    }
    pm25 = next(d for t in body["value"] for d in t["Datastreams"] if d["name"] == "net/a-1 PM2.5")
    # more than $top: the expanded collection links to the rest, with the level's options
    nxt = pm25["Observations@iot.nextLink"]
    assert nxt.startswith(pm25["@iot.selfLink"] + "/Observations?")
    rest = _json(client, nxt)
    assert rest["value"][0]["result"] == 23.0 and len(rest["value"]) == 1
    # the PM10 datastream has one observation: no nextLink
    pm10 = next(d for t in body["value"] for d in t["Datastreams"] if d["name"].endswith("PM10"))
    assert "Observations@iot.nextLink" not in pm10


def test_nested_options_at_each_level(client: TestClient) -> None:
    expand = (
        "Datastreams($filter=startswith(name, 'net/a-1');$orderby=name desc;$top=1;"
        "$select=id,name;$count=true;"
        "$expand=Observations($filter=result ge 10;$orderby=result desc;$top=3;"
        "$select=result;$count=true))"
    )
    a1 = _thing(client, "net/a-1", **{"$expand": expand, "$select": "name"})
    assert a1["name"] == "net/a-1" and "description" not in a1
    assert a1["Datastreams@iot.count"] == 2
    [ds] = a1["Datastreams"]
    assert set(ds) == {
        "@iot.id",
        "name",
        "Observations",
        "Observations@iot.count",
        "Observations@iot.nextLink",
    }
    assert ds["name"] == "net/a-1 PM2.5"  # name desc: PM2.5 after PM10
    assert ds["Observations@iot.count"] == 15
    assert ds["Observations"] == [{"result": 24.0}, {"result": 23.0}, {"result": 22.0}]
    # the Thing's nextLink for its Datastreams pages on with the same options
    page2 = _json(client, a1["Datastreams@iot.nextLink"])
    assert [d["name"] for d in page2["value"]] == ["net/a-1 PM10"]
    assert set(page2["value"][0]) == {"@iot.id", "name", "Observations", "Observations@iot.count"}
    # following the observations' nextLink to the end gives the other 12, in order
    url: str | None = ds["Observations@iot.nextLink"]
    results: list[float] = []
    while url:
        page = _json(client, url)
        results += [o["result"] for o in page["value"]]
        url = page.get("@iot.nextLink")
    assert results == [float(i) for i in range(21, 9, -1)]


def test_top_zero_inside_expand_counts_without_a_next_link(client: TestClient) -> None:
    a1 = _thing(client, "net/a-1", **{"$expand": "Datastreams($top=0;$count=true)"})
    assert a1["Datastreams"] == [] and a1["Datastreams@iot.count"] == 2
    assert "Datastreams@iot.nextLink" not in a1


def test_to_one_expansions(client: TestClient) -> None:
    body = _json(
        client,
        "/v1.1/Datastreams",
        **{"$expand": "Thing($select=name),Sensor,ObservedProperty($select=name,definition)"},
    )
    for d in body["value"]:
        assert d["Thing"] == {"name": d["name"].split(" ")[0]}
        assert d["Sensor"]["@iot.selfLink"] == d["Sensor@iot.navigationLink"]
        assert set(d["ObservedProperty"]) == {"name", "definition"}
    obs = _json(
        client,
        "/v1.1/Observations",
        **{
            "$expand": "Datastream($select=name;$expand=Thing($select=name)),FeatureOfInterest",
            "$filter": "result ge 30",
        },
    )
    assert len(obs["value"]) == 3
    for o in obs["value"]:
        assert o["Datastream"] == {"name": "net/b-1 Nitrogen dioxide", "Thing": {"name": "net/b-1"}}
        assert o["FeatureOfInterest"]["name"] == "b-1 site"
    # an Observation without a FeatureOfInterest has none expanded
    first = _json(client, "/v1.1/Observations", **{"$top": "1", "$expand": "FeatureOfInterest"})
    assert "FeatureOfInterest" not in first["value"][0]


def test_expand_on_entities_and_navigations(client: TestClient) -> None:
    a1 = _thing(client, "net/a-1")
    one = _json(client, a1["@iot.selfLink"], **{"$expand": "Locations,Datastreams($top=1)"})
    assert one["Locations"][0]["location"]["type"] == "Point"
    assert len(one["Datastreams"]) == 1 and "Datastreams@iot.nextLink" in one
    nav = _json(
        client,
        a1["Datastreams@iot.navigationLink"],
        **{"$expand": "Observations($top=2;$orderby=phenomenonTime desc)"},
    )
    assert all(len(d["Observations"]) <= 2 for d in nav["value"])
    to_one = _json(client, nav["value"][0]["@iot.selfLink"] + "/Thing", **{"$expand": "Locations"})
    assert to_one["Locations"][0]["name"]
    obs = nav["value"][0]["Observations"][0]
    assert _json(client, obs["@iot.selfLink"], **{"$expand": "Datastream"})["Datastream"]


@pytest.mark.parametrize(
    ("entity_set", "nav"),
    [(s, n) for s, t in ENTITY_SETS.items() for n in ENTITIES[t].navs],
)
def test_every_navigation_expands(
    client: TestClient, filled: Settings, entity_set: str, nav: str
) -> None:
    """Each navigation property of each entity set expands (and its selfLinks resolve); for
    those of the MultiDatastream extension, a MultiDatastream of a-1 is added first."""
    if "MultiDatastream" in entity_set + nav:
        _add_multi_datastream(filled)
    body = _json(client, f"/v1.1/{entity_set}", **{"$expand": nav, "$top": "5"})
    many = ENTITIES[ENTITY_SETS[entity_set]].navs[nav].many
    expanded = [e[nav] for e in body["value"] if nav in e]
    if many:
        assert len(expanded) == len(body["value"])  # a list for every entity, maybe empty
    related = [x for e in expanded for x in (e if many else [e])]
    if entity_set != "FeaturesOfInterest" and nav != "FeatureOfInterest":
        assert related, f"{entity_set}?$expand={nav} found nothing"
    for x in related[:3]:
        assert client.get(x["@iot.selfLink"]).status_code == 200


def test_expand_merges_items_of_one_navigation(client: TestClient) -> None:
    a1 = _thing(
        client,
        "net/a-1",
        **{"$expand": "Datastreams($select=name),Datastreams/Sensor,Datastreams/Thing"},
    )
    for d in a1["Datastreams"]:
        assert set(d) == {"name", "Sensor", "Thing"}
    parsed = parse_expand("Datastreams/Observations($top=1)")
    assert parsed[0].path == ("Datastreams", "Observations")


def test_latest_observation_uses_the_primary_key(filled: Settings) -> None:
    """EXPLAIN ANALYZE of the per-datastream LATERAL on 12,000 more observations (40 datastreams):
    an index scan of the primary key per datastream, at most 2 rows read from each, no scan of
    the observation table."""
    w = BatchWriter(filled.require_database_url(), auto_register=True)
    batch = Batch()
    for k in range(20):
        readings = [
            Reading(quantity, T0 + timedelta(minutes=i), float(i))
            for quantity in ("pm25", "pm10")
            for i in range(300)
        ]
        batch.uplinks.append(_uplink(f"bulk-{k}", readings, Position(50.9, 6.9 + k / 100)))
    w.write(batch)
    w.close()
    listing = q.Listing(1, keys=(q.SortKey(psycopg.sql.SQL("o.phenomenon_time"), True),))
    source, on = compile_navigation("Datastream", "Observations", "_p", "o")
    with psycopg.connect(filled.require_database_url(), row_factory=dict_row) as conn:
        conn.execute("analyze observation")
        ids = [r["id"] for r in conn.execute("select id from datastream order by id").fetchall()]
        assert len(ids) >= 40
        rows = q.expand_many(conn, "Observations", source, on, "datastream", ids, listing)
        assert {r["_parent"] for r in rows} == set(ids)
        first: dict[int, float] = {}
        for r in rows:  # top + 1 rows per datastream, newest first
            first.setdefault(r["_parent"], r["result"])
        assert set(first.values()) == {299.0, 24.0, 7.0, 32.0}
        captured: list[str] = []
        original = conn.execute

        def explain(query: Any, params: Any = None, **kw: Any) -> Any:
            prefix = psycopg.sql.SQL("explain (analyze, costs off, timing off) ")
            cur = original(prefix + query, params, **kw)
            captured.extend(r["QUERY PLAN"] for r in cur.fetchall())
            return original(query, params, **kw)

        conn.execute = explain  # type: ignore[method-assign]
        q.expand_many(conn, "Observations", source, on, "datastream", ids, listing)
    plan = "\n".join(captured)
    assert "Seq Scan on observation" not in plan, plan
    assert "Index Scan Backward using observation" in plan or "Index Only Scan" in plan, plan
    assert "Limit" in plan, plan
    # each datastream's subquery reads at most the 2 rows the limit asks for (top + 1)
    limit = next(line for line in captured if "Limit" in line and "loops=" in line)
    assert "rows=2 " in limit or "rows=1 " in limit, plan


def test_set_of_names_every_entity_type() -> None:
    assert sorted(SET_OF) == sorted(ENTITIES)


def test_expansions_share_the_server_maximum(filled: Settings) -> None:
    """With api.max_top 4, three Datastreams share 4 expanded Observations (one each, whatever
    $top asks); the rest is reachable by the nextLinks."""
    small = filled.model_copy(update={"api": filled.api.model_copy(update={"max_top": 4})})
    with TestClient(create_app(small)) as client:
        body = _json(client, "/v1.1/Datastreams", **{"$expand": "Observations($top=100)"})
        assert len(body["value"]) == 3
        for d in body["value"]:
            assert len(d["Observations"]) <= 4 // 3
        pm25 = next(d for d in body["value"] if d["name"].endswith("PM2.5"))
        url: str | None = pm25["Observations@iot.nextLink"]
        seen = len(pm25["Observations"])
        while url:
            page = _json(client, url)
            seen += len(page["value"])
            url = page.get("@iot.nextLink")
        assert seen == 25
