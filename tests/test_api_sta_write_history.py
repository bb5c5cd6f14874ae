"""SensorThings create-update-delete (OGC 18-088 A.3), the parts the first CRUD tests left out:
POST of a HistoricalLocation (a Thing and its Locations linked or described) and PUT of an
Observation (the entity replaced, optional properties left out reset), against a real database:
each read back, nothing stored on a 4xx, audited."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sta_helpers import key, one_reading, scalar

from quartier.api.app import create_app
from quartier.config import Settings

pytestmark = pytest.mark.services
T0 = datetime(2026, 11, 1, tzinfo=UTC)
V = "/v1.1"
LOC = {
    "name": "Heumarkt",
    "description": "d",
    "encodingType": "application/geo+json",
    "location": {"type": "Point", "coordinates": [6.96, 50.936]},
}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A Thing ``net/a-1`` (id 1) at Location 1 with one Datastream (id 1) and one reading."""
    one_reading(settings)
    with TestClient(create_app(settings)) as c:
        yield c


def path_of(link: str) -> str:
    return link[link.index(V) :]


def ids(client: TestClient, path: str) -> list[Any]:
    r = client.get(f"{V}/{path}")
    assert r.status_code == 200, r.text
    return sorted(x["@iot.id"] for x in r.json()["value"])


def counts(settings: Settings) -> tuple[int, ...]:
    tables = ["historical_location", "historical_location_location", "thing_location"]
    tables += ["location", "thing", "audit_event"]
    return tuple(scalar(settings, f"select count(*) from {t}") for t in tables)


def last_audit(settings: Settings) -> tuple[str, str]:
    row = scalar(settings, "select array[action, target] from audit_event order by id desc limit 1")
    return (row[0], row[1])


# --------------------------------------------------------------------------- HistoricalLocations
def test_post_historical_location_links_thing_and_locations_and_moves_the_newest(
    client: TestClient, settings: Settings
) -> None:
    h = key(settings, "entities:write")
    (hl0,) = ids(client, "Things(1)/HistoricalLocations")
    r = client.post(f"{V}/Locations", json=LOC, headers=h)
    assert r.status_code == 201, r.text
    loc2 = r.json()["@iot.id"]
    # an older record: the history grows, the Thing stays where it is
    old = {
        "time": "2020-01-01T00:00:00Z",
        "Thing": {"@iot.id": 1},
        "Locations": [{"@iot.id": loc2}],
    }
    r = client.post(f"{V}/HistoricalLocations", json=old, headers=h)
    assert r.status_code == 201, r.text
    created = r.json()
    assert r.headers["Location"] == created["@iot.selfLink"]
    assert created["time"] == "2020-01-01T00:00:00.000Z"
    assert client.get(path_of(created["@iot.selfLink"])).json() == created
    assert ids(client, f"HistoricalLocations({created['@iot.id']})/Locations") == [loc2]
    assert client.get(f"{V}/HistoricalLocations({created['@iot.id']})/Thing").json()["@iot.id"] == 1
    assert ids(client, "Things(1)/HistoricalLocations") == sorted([hl0, created["@iot.id"]])
    assert ids(client, "Things(1)/Locations") == [1]
    assert ids(client, f"Locations({loc2})/HistoricalLocations") == [created["@iot.id"]]
    assert last_audit(settings) == ("POST /v1.1/HistoricalLocations", "/v1.1/HistoricalLocations")
    # the newest record (here: a Location described in the body): the Thing is there now
    new = {"time": "2030-01-01T00:00:00Z", "Thing": {"@iot.id": 1}, "Locations": [LOC]}
    r = client.post(f"{V}/HistoricalLocations", json=new, headers=h)
    assert r.status_code == 201, r.text
    (loc3,) = ids(client, f"HistoricalLocations({r.json()['@iot.id']})/Locations")
    assert loc3 not in (1, loc2)
    assert ids(client, "Things(1)/Locations") == [loc3]
    assert len(ids(client, "Things(1)/HistoricalLocations")) == 3


def test_post_historical_location_under_a_thing_or_a_location(
    client: TestClient, settings: Settings
) -> None:
    h = key(settings, "entities:write")
    body = {"time": "2026-11-02T00:00:00Z", "Locations": [{"@iot.id": 1}]}
    r = client.post(f"{V}/Things(1)/HistoricalLocations", json=body, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["Thing@iot.navigationLink"].endswith("/v1.1/Things(1)")
    r = client.post(
        f"{V}/Locations(1)/HistoricalLocations",
        json={"time": "2026-11-03T00:00:00Z", "Thing": {"@iot.id": 1}},
        headers=h,
    )
    assert r.status_code == 201, r.text
    assert ids(client, f"HistoricalLocations({r.json()['@iot.id']})/Locations") == [1]
    # a described Thing is created with it
    r = client.post(
        f"{V}/Locations(1)/HistoricalLocations",
        json={"time": "2026-11-03T00:00:00Z", "Thing": {"name": "Rad 7", "description": "d"}},
        headers=h,
    )
    assert r.status_code == 201, r.text
    thing = client.get(f"{V}/HistoricalLocations({r.json()['@iot.id']})/Thing").json()
    assert thing["name"] == "Rad 7"
    assert ids(client, f"Things({thing['@iot.id']})/Locations") == [1]


TIME = "2026-11-01T00:00:00Z"
THING_1 = {"@iot.id": 1}
AT_1 = [{"@iot.id": 1}]


@pytest.mark.parametrize(
    ("path", "body", "status", "named"),
    [
        ("HistoricalLocations", {"Thing": THING_1, "Locations": AT_1}, 400, "time"),
        ("HistoricalLocations", {"time": TIME, "Locations": AT_1}, 400, "Thing is required"),
        ("HistoricalLocations", {"time": TIME, "Thing": THING_1}, 400, "Locations is required"),
        (
            "HistoricalLocations",
            {"time": TIME, "Thing": {"@iot.id": 9}, "Locations": AT_1},
            400,
            "Thing/@iot.id",
        ),
        (
            "HistoricalLocations",
            {"time": TIME, "Thing": THING_1, "Locations": [*AT_1, {"@iot.id": 9}]},
            400,
            "Locations[1]/@iot.id",
        ),
        (
            "HistoricalLocations",
            {"time": "gestern", "Thing": THING_1, "Locations": AT_1},
            400,
            "time",
        ),
        (
            "HistoricalLocations",
            {"time": TIME, "Thing": THING_1, "Locations": [{"name": "x"}]},
            400,
            "Locations[0]/description",
        ),
        ("Things(9)/HistoricalLocations", {"time": TIME, "Locations": AT_1}, 404, "Thing"),
    ],
)
def test_an_invalid_historical_location_is_refused_and_stores_nothing(
    client: TestClient, settings: Settings, path: str, body: Any, status: int, named: str
) -> None:
    h = key(settings, "entities:write")
    before = counts(settings)
    r = client.post(f"{V}/{path}", json=body, headers=h)
    assert r.status_code == status, r.text
    assert named in r.json()["message"], r.text
    assert counts(settings) == before


def test_historical_location_create_needs_the_entities_scope(
    client: TestClient, settings: Settings
) -> None:
    body = {"time": "2026-11-01T00:00:00Z", "Thing": {"@iot.id": 1}, "Locations": [{"@iot.id": 1}]}
    before = counts(settings)
    assert client.post(f"{V}/HistoricalLocations", json=body).status_code == 401
    h = key(settings, "observations:write")
    assert client.post(f"{V}/HistoricalLocations", json=body, headers=h).status_code == 403
    assert counts(settings) == before


def test_put_and_patch_of_a_historical_location_replace_its_locations(
    client: TestClient, settings: Settings
) -> None:
    h = key(settings, "entities:write")
    loc2 = client.post(f"{V}/Locations", json=LOC, headers=h).json()["@iot.id"]
    (hl,) = ids(client, "Things(1)/HistoricalLocations")
    r = client.put(
        f"{V}/HistoricalLocations({hl})",
        json={"time": "2026-10-01T00:00:00Z", "Locations": [{"@iot.id": loc2}]},
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert r.json()["time"] == "2026-10-01T00:00:00.000Z"
    assert ids(client, f"HistoricalLocations({hl})/Locations") == [loc2]
    # a correction of the history: the Thing's current Location stays
    assert ids(client, "Things(1)/Locations") == [1]
    r = client.patch(
        f"{V}/HistoricalLocations({hl})", json={"Locations": [{"@iot.id": 1}]}, headers=h
    )
    assert r.status_code == 200, r.text
    assert ids(client, f"HistoricalLocations({hl})/Locations") == [1]


# --------------------------------------------------------------------------- PUT Observations
def test_put_observation_replaces_it_and_resets_what_is_left_out(
    client: TestClient, settings: Settings
) -> None:
    h = key(settings, "observations:write", "entities:write")
    t = T0 + timedelta(minutes=5)
    body = {
        "Datastream": {"@iot.id": 1},
        "phenomenonTime": t.isoformat(),
        "resultTime": t.isoformat(),
        "result": 12.5,
        "parameters": {"rssi": -70},
    }
    created = client.post(f"{V}/Observations", json=body, headers=h).json()
    link = path_of(created["@iot.selfLink"])
    foi = client.get(f"{link}/FeatureOfInterest").json()["@iot.id"]
    r = client.put(link, json={"result": 13.0}, headers=h)
    assert r.status_code == 200, r.text
    put = r.json()
    assert put["@iot.id"] == created["@iot.id"]
    assert put["result"] == 13.0
    assert put["phenomenonTime"] == created["phenomenonTime"]
    assert put.get("resultTime") is None and put.get("parameters") is None
    assert client.get(link).json() == put
    assert client.get(f"{link}/FeatureOfInterest").json()["@iot.id"] == foi  # a link stays
    # the latest value follows, as for PATCH
    assert scalar(settings, "select result from observation_latest where datastream_id = 1") == 13
    assert last_audit(settings) == ("PUT /v1.1/Observations('{obs_id}')", link)
    # the entity sent whole (FROST's clients): its own id, time and Datastream are accepted
    whole = {k: v for k, v in created.items() if k == "@iot.id" or "@" not in k}
    whole.update(result="bewölkt", parameters={"n": 1}, Datastream={"@iot.id": 1})
    r = client.put(link, json=whole, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "bewölkt" and r.json()["parameters"] == {"n": 1}
    # another FeatureOfInterest by link
    feature = {k: v for k, v in LOC.items() if k != "location"} | {"feature": LOC["location"]}
    r = client.post(f"{V}/FeaturesOfInterest", json=feature, headers=h)
    assert r.status_code == 201, r.text
    foi2 = r.json()["@iot.id"]
    r = client.put(link, json={"result": 1, "FeatureOfInterest": {"@iot.id": foi2}}, headers=h)
    assert r.status_code == 200, r.text
    assert client.get(f"{link}/FeatureOfInterest").json()["@iot.id"] == foi2


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({"parameters": {"a": 1}}, 400, "result is required"),
        ({"result": 1, "phenomenonTime": "2026-11-01T01:00:00Z"}, 400, "phenomenonTime"),
        ({"result": 1, "Datastream": {"@iot.id": 2}}, 400, "Datastream"),
        ({"result": 1, "@iot.id": "1:5"}, 400, "@iot.id"),
        ({"result": 1, "FeatureOfInterest": {"@iot.id": 999}}, 400, "FeatureOfInterest"),
        ({"result": 1, "validTime": "2026-11-01T00:00:00Z"}, 400, "validTime"),
    ],
)
def test_an_invalid_put_of_an_observation_changes_nothing(
    client: TestClient, settings: Settings, body: Any, status: int, named: str
) -> None:
    h = key(settings, "observations:write")
    (o,) = client.get(f"{V}/Datastreams(1)/Observations").json()["value"]
    link = path_of(o["@iot.selfLink"])
    r = client.put(link, json=body, headers=h)
    assert r.status_code == status, r.text
    assert named in r.json()["message"], r.text
    assert client.get(link).json() == o


def test_put_of_an_observation_needs_a_key_and_an_existing_observation(
    client: TestClient, settings: Settings
) -> None:
    (o,) = client.get(f"{V}/Datastreams(1)/Observations").json()["value"]
    link = path_of(o["@iot.selfLink"])
    assert client.put(link, json={"result": 2}).status_code == 401
    assert (
        client.put(link, json={"result": 2}, headers=key(settings, "entities:write")).status_code
        == 403
    )
    h = key(settings, "observations:write")
    assert client.put(f"{V}/Observations('1:5')", json={"result": 2}, headers=h).status_code == 404
    assert client.get(link).json() == o
