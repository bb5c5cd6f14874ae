"""SensorThings resource paths (every entity set, entity and to-many navigation) and ``$select``,
against a real database. Grouped by conformance class: resource paths, then ``$select``, then the
crawler that follows every link a body carries."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb
from pydantic import BaseModel
from sta_helpers import T0, fill_two_devices

from quartier.api import models as m
from quartier.api.app import create_app
from quartier.config import Settings
from quartier.ingest.model import Batch, Observation, Position, Reading, Uplink
from quartier.ingest.writer import BatchWriter

pytestmark = pytest.mark.services
M = TypeVar("M", bound=BaseModel)
ENTITY_SETS = [
    "Things",
    "Locations",
    "HistoricalLocations",
    "Datastreams",
    "Sensors",
    "ObservedProperties",
    "Observations",
    "FeaturesOfInterest",
    "MultiDatastreams",
]


def _uplink(device: str, readings: list[Reading], where: Position) -> Any:
    return (Uplink("net", device, readings, where), "t", b"", T0)


@pytest.fixture
def filled(settings: Settings) -> Settings:
    return fill_two_devices(settings)


@pytest.fixture
def client(filled: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(filled)) as c:
        yield c


def _get(client: TestClient, model: type[M], path: str, **params: str) -> M:
    r = client.get(path, params=params or None)
    assert r.status_code == 200, r.text
    return model.model_validate(r.json())


def _json(client: TestClient, path: str, **params: str) -> Any:
    r = client.get(path, params=params or None)
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------ resource paths
def test_service_root_lists_the_entity_sets(client: TestClient) -> None:
    root = _get(client, m.ServiceRoot, "/v1.1")
    assert [e.name for e in root.value] == ENTITY_SETS
    for e in root.value:
        assert e.url.endswith(f"/v1.1/{e.name}")
        assert client.get(e.url).status_code == 200, e.url


def test_navigations_the_issue_listed(client: TestClient) -> None:
    things = _get(client, m.ThingCollection, "/v1.1/Things", **{"$filter": "name eq 'net/a-1'"})
    a1 = things.value[0]
    streams = _get(client, m.DatastreamCollection, a1.datastreams_link)
    pm25 = next(d for d in streams.value if d.name.endswith("PM2.5"))

    of_sensor = _get(client, m.DatastreamCollection, pm25.sensor_link + "/Datastreams")
    assert pm25.id in [d.id for d in of_sensor.value]
    of_property = _get(client, m.DatastreamCollection, pm25.observed_property_link + "/Datastreams")
    assert [d.id for d in of_property.value] == [pm25.id]

    locations = _get(client, m.LocationCollection, a1.locations_link)
    location = _get(client, m.Location, locations.value[0].self_link)
    assert location == locations.value[0]
    at_location = _get(client, m.ThingCollection, location.things_link, **{"$count": "true"})
    assert [t.id for t in at_location.value] == [a1.id] and at_location.count == 1

    history = _get(client, m.HistoricalLocationCollection, a1.historical_locations_link)
    assert len(history.value) == 1
    h = history.value[0]
    assert h.thing_link == a1.self_link
    assert _get(client, m.HistoricalLocation, h.self_link) == h
    h_locations = _get(client, m.LocationCollection, h.locations_link)
    assert [x.id for x in h_locations.value] == [location.id]
    assert _get(client, m.HistoricalLocationCollection, location.historical_locations_link).value


def test_to_one_navigation_paths(client: TestClient) -> None:
    ds = _get(client, m.DatastreamCollection, "/v1.1/Datastreams").value[0]
    assert _get(client, m.Thing, ds.self_link + "/Thing") == _get(client, m.Thing, ds.thing_link)
    assert _get(client, m.Sensor, ds.self_link + "/Sensor").self_link == ds.sensor_link
    op = _get(client, m.ObservedProperty, ds.self_link + "/ObservedProperty")
    assert op.self_link == ds.observed_property_link
    h = _get(client, m.HistoricalLocationCollection, "/v1.1/HistoricalLocations").value[0]
    assert _get(client, m.Thing, h.self_link + "/Thing").self_link == h.thing_link
    assert _json(client, ds.self_link + "/Thing", **{"$select": "name"}) == {"name": "net/a-1"}
    r = client.get("/v1.1/Datastreams(999999)/Sensor")
    assert r.status_code == 404 and "no Datastream" in r.json()["message"]


def test_features_of_interest(client: TestClient) -> None:
    fois = _get(client, m.FeatureOfInterestCollection, "/v1.1/FeaturesOfInterest")
    assert [f.name for f in fois.value] == ["b-1 site"]
    foi = fois.value[0]
    assert foi.feature == {"type": "Point", "coordinates": [7.0, 50.95]}
    assert _get(client, m.FeatureOfInterest, foi.self_link) == foi
    obs = _get(
        client,
        m.ObservationCollection,
        foi.observations_link,
        **{"$filter": "result ge 31", "$count": "true"},
    )
    assert [o.result for o in obs.value] == [31.0, 32.0] and obs.count == 2


def test_observations_over_all_datastreams_page_by_the_primary_key(client: TestClient) -> None:
    url: str | None = "/v1.1/Observations?$top=4&$count=true"
    seen: list[tuple[int, str]] = []
    while url:
        page = _get(client, m.ObservationCollection, url)
        assert page.count == 29
        seen += [(int(o.id.split(":")[0]), o.phenomenon_time) for o in page.value]
        url = page.next_link
    assert len(seen) == 29 == len(set(seen))
    assert seen == sorted(seen)
    # the same observations as the datastreams' own collections
    each = [
        (d.id, o.phenomenon_time)
        for d in _get(client, m.DatastreamCollection, "/v1.1/Datastreams").value
        for o in _get(client, m.ObservationCollection, d.observations_link).value
    ]
    assert sorted(each) == seen
    # options apply across datastreams
    body = _get(
        client,
        m.ObservationCollection,
        "/v1.1/Observations",
        **{"$filter": "result ge 23", "$orderby": "result desc", "$count": "true"},
    )
    assert [o.result for o in body.value] == [32.0, 31.0, 30.0, 24.0, 23.0]
    assert body.count == 5


@pytest.mark.parametrize(
    ("path", "status", "needle"),
    [
        ("/v1.1/Sensors(999999)/Datastreams", 404, "no Sensor with @iot.id 999999"),
        ("/v1.1/ObservedProperties(999999)/Datastreams", 404, "no ObservedProperty"),
        ("/v1.1/Locations(999999)/Things", 404, "no Location"),
        ("/v1.1/Things(999999)/HistoricalLocations", 404, "no Thing"),
        ("/v1.1/Locations(999999)", 404, "no Location"),
        ("/v1.1/HistoricalLocations(999999)", 404, "no HistoricalLocation"),
        ("/v1.1/FeaturesOfInterest(999999)", 404, "no FeatureOfInterest"),
        ("/v1.1/Observations?$orderby=nosuch", 400, "nosuch"),
        ("/v1.1/HistoricalLocations?$filter=name eq 'x'", 400, "name"),
    ],
)
def test_path_errors(client: TestClient, path: str, status: int, needle: str) -> None:
    r = client.get(path)
    assert r.status_code == status, r.text
    assert needle in r.json()["message"]


# ------------------------------------------------------------------ $select
def test_select_on_a_collection_keeps_only_the_selected(client: TestClient) -> None:
    body = _json(client, "/v1.1/Things", **{"$select": "id,name", "$count": "true", "$top": "1"})
    assert body["@iot.count"] == 2 and "@iot.nextLink" in body
    assert body["value"] == [{"@iot.id": body["value"][0]["@iot.id"], "name": "net/a-1"}]
    # the next page keeps the selection
    nxt = client.get(body["@iot.nextLink"]).json()
    assert nxt["value"] == [{"@iot.id": nxt["value"][0]["@iot.id"], "name": "net/b-1"}]


def test_select_a_navigation_property_yields_its_link(client: TestClient) -> None:
    ds = _get(client, m.DatastreamCollection, "/v1.1/Datastreams").value[0]
    body = _json(client, ds.self_link, **{"$select": "id,Observations,Thing,unitOfMeasurement"})
    assert body == {
        "@iot.id": ds.id,
        "Observations@iot.navigationLink": ds.observations_link,
        "Thing@iot.navigationLink": ds.thing_link,
        "unitOfMeasurement": ds.unit_of_measurement.model_dump(),
    }
    assert client.get(body["Observations@iot.navigationLink"]).status_code == 200


def test_select_on_every_entity_route(client: TestClient) -> None:
    for entity_set in ENTITY_SETS:
        page = _json(client, f"/v1.1/{entity_set}", **{"$select": "id", "$top": "1"})
        for entity in page["value"]:
            assert list(entity) == ["@iot.id"], entity_set
        full = _json(client, f"/v1.1/{entity_set}", **{"$top": "1"})["value"]
        if full:
            one = _json(client, full[0]["@iot.selfLink"], **{"$select": "id"})
            assert one == {"@iot.id": full[0]["@iot.id"]}, entity_set


def test_grafana_select_with_a_time_range_and_paging(client: TestClient) -> None:
    """The FROST Grafana data source: the panel's path with ``$select``, the dashboard range
    appended as ``phenomenonTime ge <from> and phenomenonTime le <to>`` (JavaScript
    ``toISOString``), ``$top=1000`` unless given, and further pages by grafting the nextLink's
    query onto the panel's path."""
    ds = _get(
        client,
        m.DatastreamCollection,
        "/v1.1/Datastreams",
        **{"$filter": "name eq 'net/a-1 PM2.5'"},
    ).value[0]
    path = f"/v1.1/Datastreams({ds.id})/Observations"
    url = (
        f"{path}?$select=phenomenonTime,result"
        "&$filter=phenomenonTime ge 2026-11-01T00:05:00.000Z"
        " and phenomenonTime le 2026-11-01T00:10:00.000Z&$top=1000"
    )
    body = _json(client, url)
    assert body == {
        "value": [
            {"phenomenonTime": f"2026-11-01T00:{minute:02d}:00.000Z", "result": float(minute)}
            for minute in range(5, 11)
        ]
    }
    # the same with a smaller page, followed the way the data source does
    url = url.replace("$top=1000", "$top=4")
    values: list[Any] = []
    pages = 0
    while url:
        page = _json(client, url)
        values += page["value"]
        pages += 1
        nxt = page.get("@iot.nextLink")
        url = f"{path}?{urlsplit(nxt).query}" if nxt else ""
    assert pages == 2 and values == body["value"]


# ------------------------------------------------------------------ every link resolves
_MODELS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "Things": (m.Thing, m.ThingCollection),
    "Locations": (m.Location, m.LocationCollection),
    "HistoricalLocations": (m.HistoricalLocation, m.HistoricalLocationCollection),
    "Datastreams": (m.Datastream, m.DatastreamCollection),
    "Sensors": (m.Sensor, m.SensorCollection),
    "ObservedProperties": (m.ObservedProperty, m.ObservedPropertyCollection),
    "Observations": (m.Observation, m.ObservationCollection),
    "FeaturesOfInterest": (m.FeatureOfInterest, m.FeatureOfInterestCollection),
    "MultiDatastreams": (m.MultiDatastream, m.MultiDatastreamCollection),
}
_LAST = re.compile(r"/(\w+)(\(.*\))?$")


def _links(body: Any) -> Iterator[str]:
    if isinstance(body, dict):
        for key, value in body.items():
            if key.endswith(("@iot.selfLink", "@iot.nextLink", "@iot.navigationLink")):
                yield value
            else:
                yield from _links(value)
    elif isinstance(body, list):
        for item in body:
            yield from _links(item)


def _expand_all(entity_set: str) -> str:
    """``$expand`` of every navigation of ``entity_set``, two deep, small pages with counts."""
    from quartier.api.sensorthings import SET_OF
    from quartier.api.sta import ENTITIES
    from quartier.api.sta import ENTITY_SETS as TYPES

    items = []
    for nav, n in ENTITIES[TYPES[entity_set]].navs.items():
        inner = ",".join(f"{x}($top=1)" for x in ENTITIES[n.target].navs)
        opts = "$top=2;$count=true;" if n.many else ""
        items.append(f"{nav}({opts}$expand={inner})")
        assert SET_OF[n.target]
    return ",".join(items)


def _add_multi_datastream(settings: Settings) -> None:
    """A MultiDatastream of net/a-1 (pm25 and pm10's ObservedProperties, in that order) with 12
    observations (stored under datastream_id -<its id>)."""
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
        Observation(-row[0], T0 + timedelta(minutes=i), None, [i, 2 * i]) for i in range(12)
    )
    w.write(batch)
    w.close()


def test_every_emitted_link_resolves(filled: Settings) -> None:
    """Start at the service root (and at each entity set with every navigation expanded two
    deep) and follow every selfLink, navigationLink and nextLink, expanded ones included (pages
    of 10, so nextLinks appear); each answers 200 with a body its model validates. A
    MultiDatastream and its observations are among them."""
    _add_multi_datastream(filled)
    small = filled.model_copy(update={"api": filled.api.model_copy(update={"default_top": 10})})
    with TestClient(create_app(small)) as client:
        root = _get(client, m.ServiceRoot, "/v1.1")
        queue = deque(e.url for e in root.value)
        queue += [f"{e.url}?$top=3&$expand={_expand_all(e.name)}" for e in root.value]
        seen = set(queue)
        kinds: dict[str, int] = {}
        while queue:
            assert len(seen) < 2000, "crawl bound reached"
            url = queue.popleft()
            r = client.get(url)
            assert r.status_code == 200, (url, r.text)
            body = r.json()
            match = _LAST.search(urlsplit(url).path)
            assert match is not None, url
            entity, collection = _MODELS[match.group(1)]
            (entity if match.group(2) else collection).model_validate(body)
            kind = "next" if "skip" in url else ("entity" if match.group(2) else "collection")
            if "$expand" in url:
                kind = "expanded"
            kinds[kind] = kinds.get(kind, 0) + 1
            for link in _links(body):
                if link not in seen:
                    seen.add(link)
                    queue.append(link)
    # the 29 + 12 observations, 3 datastreams, 2 things … each by its selfLink, and some next
    # pages; the MultiDatastream and its observations (ids "-<its id>:<µs>") among them
    assert kinds["entity"] >= 29 + 12 + 3 + 2 + 2 + 2 + 3 + 3 + 1 + 1
    assert kinds["next"] >= 3
    assert kinds["collection"] >= 9
    assert kinds["expanded"] == 9
    assert sum(1 for u in seen if re.search(r"/Observations\('-\d+:\d+'\)$", u)) == 12
    assert any(re.search(r"/MultiDatastreams\(\d+\)/ObservedProperties$", u) for u in seen)
    # expanded collections' nextLinks were among those followed
    assert any("$skip=" in unquote(u) and "$top=2" in unquote(u) for u in seen)


# ------------------------------------------------------------------ conformance, properties, $ref
def test_service_root_conformance_and_licence(client: TestClient) -> None:
    root = _json(client, "/v1.1")
    spec = "http://www.opengis.net/spec/iot_sensing/1.1/req/"
    classes = [c for c in root["serverSettings"]["conformance"] if c.startswith(spec)]
    # exactly the classes this suite tests (paths here, request-data in test_api_sta_options,
    # _expand and _paging, dataArray in _paging, create-update-delete in test_api_sta_write,
    # multi-datastream in test_api_sta_multidatastream, batch-request in test_api_sta_batch);
    # no MQTT
    assert sorted(classes) == sorted(
        spec + c
        for c in (
            "datamodel",
            "resource-path/resource-path-to-entities",
            "request-data",
            "create-update-delete",
            "data-array/data-array",
            "multi-datastream",
            "batch-request/batch-request",
        )
    )
    extensions = [c for c in root["serverSettings"]["conformance"] if not c.startswith(spec)]
    assert len(extensions) == 3
    for url in extensions:
        assert client.get(url.split("#")[0]).status_code == 200
    assert root["serverSettings"]["license"]["id"] == "dl-de/by-2-0"
    assert root["serverSettings"]["license"]["url"].startswith("https://")


def test_property_value_and_ref_paths(client: TestClient) -> None:
    ds = _json(client, "/v1.1/Datastreams", **{"$top": "1"})["value"][0]
    link = ds["@iot.selfLink"]
    assert _json(client, link + "/name") == {"name": ds["name"]}
    assert _json(client, link + "/unitOfMeasurement") == {
        "unitOfMeasurement": ds["unitOfMeasurement"]
    }
    r = client.get(link + "/name/$value")
    assert r.status_code == 200 and r.text == ds["name"]
    assert r.headers["content-type"].startswith("text/plain")
    assert client.get(link + "/id/$value").text == str(ds["@iot.id"])
    assert client.get(link + "/nosuch").status_code == 404
    obs = _json(client, ds["Observations@iot.navigationLink"], **{"$top": "1"})["value"][0]
    assert _json(client, obs["@iot.selfLink"] + "/result") == {"result": obs["result"]}
    assert client.get(obs["@iot.selfLink"] + "/validTime").status_code == 204  # null
    assert _json(client, obs["@iot.selfLink"] + "/Datastream")["@iot.id"] == ds["@iot.id"]
    assert _json(client, obs["@iot.selfLink"] + "/Datastream/$ref") == {"@iot.selfLink": link}
    refs = _json(client, link + "/Observations/$ref", **{"$top": "2", "$count": "true"})
    assert set(refs) == {"value", "@iot.count", "@iot.nextLink"}
    assert refs["value"][0] == {"@iot.selfLink": obs["@iot.selfLink"]}
    thing = _json(client, ds["Thing@iot.navigationLink"])
    refs = _json(client, thing["@iot.selfLink"] + "/Datastreams/$ref")
    assert link in [x["@iot.selfLink"] for x in refs["value"]]
    r = client.get("/v1.1/Things(x)/name")
    assert r.status_code == 400 and "not an integer" in r.json()["message"]


def test_deeper_navigation_paths(client: TestClient) -> None:
    """Paths deeper than one navigation resolve step by step, each id checked against the
    navigation it is reached by."""
    a1 = _json(client, "/v1.1/Things", **{"$filter": "name eq 'net/a-1'"})["value"][0]
    ds = _json(client, a1["Datastreams@iot.navigationLink"], **{"$orderby": "id"})["value"][0]
    base = f"/v1.1/Things({a1['@iot.id']})/Datastreams({ds['@iot.id']})"
    assert _json(client, base) == _json(client, ds["@iot.selfLink"])
    deep = _json(client, base + "/Observations", **{"$top": "2", "$count": "true"})
    direct = _json(client, ds["Observations@iot.navigationLink"], **{"$top": "2", "$count": "true"})
    assert deep["value"] == direct["value"] and deep["@iot.count"] == direct["@iot.count"]
    assert client.get(deep["@iot.nextLink"]).status_code == 200
    assert _json(client, base + "/ObservedProperty/name")["name"]
    r = client.get(base + "/Sensor/name/$value")
    assert r.status_code == 200 and r.text
    # to-one steps without an id, then a to-many navigation
    locs = _json(client, ds["@iot.selfLink"] + "/Thing/Locations")["value"]
    assert locs == _json(client, a1["Locations@iot.navigationLink"])["value"]
    obs = direct["value"][0]["@iot.selfLink"].split("/v1.1/")[1]
    assert _json(client, f"{base}/{obs}")["@iot.id"] == direct["value"][0]["@iot.id"]
    assert _json(client, f"/v1.1/{obs}/Datastream/Thing")["@iot.id"] == a1["@iot.id"]
    # an id that is not among the navigation's entities, an unknown segment
    b1 = _json(client, "/v1.1/Things", **{"$filter": "name eq 'net/b-1'"})["value"][0]
    r = client.get(f"/v1.1/Things({b1['@iot.id']})/Datastreams({ds['@iot.id']})/Observations")
    assert r.status_code == 404 and "has no Datastreams" in r.json()["message"]
    for bad in (base + "/Nosuch", "/v1.1/Nosuch(1)/Things", f"{base}/Observations('x')"):
        r = client.get(bad)
        assert r.status_code in (400, 404), (bad, r.text)
        assert "Traceback" not in r.text
