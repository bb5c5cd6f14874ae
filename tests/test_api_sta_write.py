"""SensorThings create-update-delete (OGC 18-088 A.3) and CreateObservations, against a real
database: each write with and without a key, the created entity read back by id and by
navigation, nothing stored on a 4xx, and the audit row of each write."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sta_helpers import key, one_reading, scalar

from quartier.api.app import create_app
from quartier.config import Settings

pytestmark = pytest.mark.services
T0 = datetime(2026, 11, 1, tzinfo=UTC)
V = "/v1.1"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A Thing ``net/a-1`` at (6.9, 50.9) with one Datastream (pm25, id 1) and one reading."""
    one_reading(settings)
    with TestClient(create_app(settings)) as c:
        yield c


def state(settings: Settings) -> tuple[int, ...]:
    """Rows of every table a SensorThings write may touch, and of the audit trail."""
    tables = [
        "thing",
        "location",
        "thing_location",
        "historical_location",
        "sensor",
        "observed_property",
        "datastream",
        "feature_of_interest",
        "observation",
        "audit_event",
    ]
    return tuple(scalar(settings, f"select count(*) from {t}") for t in tables)


def audits(settings: Settings) -> list[tuple[str, str, int | None]]:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        rows = conn.execute("select action, target, api_key_id from audit_event order by id")
        return [(r[0], r[1], r[2]) for r in rows.fetchall()]


def path_of(link: str) -> str:
    return link[link.index(V) :]


# --------------------------------------------------------------------------- Observations
def test_post_observation_is_created_read_back_and_audited(
    client: TestClient, settings: Settings
) -> None:
    h = key(settings, "observations:write")
    t = T0 + timedelta(minutes=5)
    body = {"Datastream": {"@iot.id": 1}, "phenomenonTime": t.isoformat(), "result": 12.5}
    r = client.post(f"{V}/Observations", json=body, headers=h)
    assert r.status_code == 201, r.text
    created = r.json()
    assert r.headers["Location"] == created["@iot.selfLink"]
    assert created["result"] == 12.5
    assert created["phenomenonTime"] == "2026-11-01T00:05:00.000Z"
    # by id and by navigation
    back = client.get(path_of(created["@iot.selfLink"])).json()
    assert back == created
    listed = client.get(f"{V}/Datastreams(1)/Observations").json()["value"]
    assert created["@iot.id"] in [o["@iot.id"] for o in listed]
    # the automatic FeatureOfInterest: the Thing's Location, made once
    foi = client.get(f"{path_of(created['@iot.selfLink'])}/FeatureOfInterest").json()
    assert foi["feature"] == {"type": "Point", "coordinates": [6.9, 50.9]}
    assert created["FeatureOfInterest@iot.navigationLink"] == foi["@iot.selfLink"]
    r2 = client.post(
        f"{V}/Observations",
        json={**body, "phenomenonTime": (t + timedelta(minutes=1)).isoformat()},
        headers=h,
    )
    assert r2.status_code == 201
    foi2 = client.get(f"{path_of(r2.json()['@iot.selfLink'])}/FeatureOfInterest").json()
    assert foi2["@iot.id"] == foi["@iot.id"]
    assert scalar(settings, "select count(*) from feature_of_interest") == 1
    # the same writer path as MQTT: the latest value is kept current
    assert scalar(settings, "select result from observation_latest where datastream_id = 1") == 12.5
    assert (
        audits(settings)[-2:]
        == [("POST /v1.1/Observations", "/v1.1/Observations", audits(settings)[-1][2])] * 2
    )
    assert audits(settings)[-1][2] is not None


def test_post_to_a_datastreams_observations_with_text_result_and_parameters(
    client: TestClient, settings: Settings
) -> None:
    h = key(settings, "observations:write")
    body = {
        "phenomenonTime": "2026-11-01T02:00:00+01:00",
        "resultTime": "2026-11-01T00:00:05Z",
        "result": "cloudy",
        "parameters": {"rssi": -71},
        "FeatureOfInterest": {
            "name": "Domplatte",
            "description": "in front of the cathedral",
            "encodingType": "application/geo+json",
            "feature": {"type": "Point", "coordinates": [6.958, 50.941]},
        },
    }
    r = client.post(f"{V}/Datastreams(1)/Observations", json=body, headers=h)
    assert r.status_code == 201, r.text
    o = r.json()
    assert o["result"] == "cloudy" and o["parameters"] == {"rssi": -71}
    assert o["phenomenonTime"] == "2026-11-01T01:00:00.000Z"
    assert o["resultTime"] == "2026-11-01T00:00:05.000Z"
    assert o["Datastream@iot.navigationLink"].endswith("/v1.1/Datastreams(1)")
    foi = client.get(f"{path_of(o['@iot.selfLink'])}/FeatureOfInterest").json()
    assert foi["name"] == "Domplatte"
    fois = client.get(f"{V}/FeaturesOfInterest({foi['@iot.id']})/Observations").json()["value"]
    assert [x["@iot.id"] for x in fois] == [o["@iot.id"]]
    assert audits(settings)[-1][0] == "POST /v1.1/Datastreams({ds_id})/Observations"


def test_observation_writes_without_a_key_or_scope_store_nothing(
    client: TestClient, settings: Settings
) -> None:
    body = {"Datastream": {"@iot.id": 1}, "phenomenonTime": "2026-11-01T02:00:00Z", "result": 1}
    before = state(settings)
    assert client.post(f"{V}/Observations", json=body).status_code == 401
    assert client.post(f"{V}/Datastreams(1)/Observations", json=body).status_code == 401
    wrong = key(settings, "indicators:write")
    r = client.post(f"{V}/Observations", json=body, headers=wrong)
    assert r.status_code == 403 and "observations:write" in r.json()["message"]
    assert state(settings) == before


DS = {"Datastream": {"@iot.id": 1}}
T2 = "2026-11-01T02:00:00Z"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"phenomenonTime": T2, "result": 1}, "Datastream"),
        ({**DS, "phenomenonTime": T2}, "result"),
        ({**DS, "phenomenonTime": "yesterday", "result": 1}, "phenomenonTime"),
        ({**DS, "phenomenonTime": "2026-11-01T02:00:00", "result": 1}, "phenomenonTime"),
        ({**DS, "phenomenonTime": f"{T2}/2026-11-01T03:00:00Z", "result": 1}, "phenomenonTime"),
        ({**DS, "phenomenonTime": "2999-01-01T00:00:00Z", "result": 1}, "phenomenonTime"),
        ({**DS, "result": 1, "colour": "red"}, "colour"),
        ({**DS, "result": 1, "validTime": T2}, "validTime"),
        ({"Datastream": {"@iot.id": 99}, "result": 1}, "Datastream/@iot.id"),
        ({"Datastream": {"@iot.id": "x"}, "result": 1}, "Datastream/@iot.id"),
        ({**DS, "result": 1, "parameters": [1]}, "parameters"),
        ({**DS, "result": 1, "FeatureOfInterest": {"@iot.id": 7}}, "FeatureOfInterest"),
        ({**DS, "result": 1, "FeatureOfInterest": {"name": "x"}}, "FeatureOfInterest/description"),
        ([1, 2], "body"),
    ],
)
def test_an_invalid_observation_is_a_400_naming_the_field_and_stores_nothing(
    client: TestClient, settings: Settings, body: Any, named: str
) -> None:
    h = key(settings, "observations:write")
    before = state(settings)
    r = client.post(f"{V}/Observations", json=body, headers=h)
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith(named) or named in r.json()["message"], r.text
    assert state(settings) == before


def test_an_unknown_datastream_in_the_path_is_404(client: TestClient, settings: Settings) -> None:
    h = key(settings, "observations:write")
    before = state(settings)
    r = client.post(f"{V}/Datastreams(42)/Observations", json={"result": 1}, headers=h)
    assert r.status_code == 404 and "Datastream" in r.json()["message"]
    assert state(settings) == before


def test_a_second_observation_at_the_same_time_is_409_and_the_first_stays(
    client: TestClient, settings: Settings
) -> None:
    """The store keeps the first value of a (Datastream, phenomenonTime): the REST answer says
    so (409 naming the stored Observation) and changes nothing, not even the FeatureOfInterest
    it would have made."""
    h = key(settings, "observations:write")
    # the fixture's reading came over the ingest path at T0, without a FeatureOfInterest
    before = state(settings)
    body = {"Datastream": {"@iot.id": 1}, "phenomenonTime": T0.isoformat(), "result": 99}
    r = client.post(f"{V}/Observations", json=body, headers=h)
    assert r.status_code == 409, r.text
    assert r.json()["type"] == "ConflictError"
    assert "Observations('1:" in r.json()["message"]
    assert state(settings) == before
    assert scalar(settings, "select result from observation") == 5.0


# --------------------------------------------------------------------------- deep insert
def thing_body(definition: str = "https://example.org/pm25") -> dict[str, Any]:
    return {
        "name": "Station Neumarkt",
        "description": "Luftmessstation",
        "properties": {"operator": "Stadt Köln"},
        "Locations": [
            {
                "name": "Neumarkt",
                "description": "Neumarkt 1",
                "encodingType": "application/geo+json",
                "location": {"type": "Point", "coordinates": [6.946, 50.936]},
            }
        ],
        "Datastreams": [
            {
                "name": "PM2.5 Neumarkt",
                "description": "Feinstaub",
                "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/"
                "OM_Measurement",
                "unitOfMeasurement": {"name": "µg/m³", "symbol": "µg/m³", "definition": "u"},
                "Sensor": {
                    "name": "SDS011",
                    "description": "laser",
                    "encodingType": "application/pdf",
                    "metadata": "https://example.org/sds011.pdf",
                },
                "ObservedProperty": {
                    "name": "PM2.5",
                    "definition": definition,
                    "description": "particles below 2.5 µm",
                },
                "Observations": [
                    {"phenomenonTime": "2026-11-01T10:00:00Z", "result": 7},
                    {"phenomenonTime": "2026-11-01T10:01:00Z", "result": 8},
                ],
            }
        ],
    }


def test_deep_insert_of_a_thing_in_one_transaction(client: TestClient, settings: Settings) -> None:
    h = key(settings, "entities:write", "observations:write")
    r = client.post(f"{V}/Things", json=thing_body(), headers=h)
    assert r.status_code == 201, r.text
    thing = r.json()
    assert r.headers["Location"] == thing["@iot.selfLink"]
    assert thing["name"] == "Station Neumarkt" and thing["properties"]["operator"] == "Stadt Köln"
    tid = thing["@iot.id"]
    assert client.get(f"{V}/Things({tid})").json() == thing
    locs = client.get(f"{V}/Things({tid})/Locations").json()["value"]
    assert [x["name"] for x in locs] == ["Neumarkt"]
    # the automatic HistoricalLocation
    hls = client.get(f"{V}/Things({tid})/HistoricalLocations").json()["value"]
    assert len(hls) == 1
    hl_locs = client.get(f"{V}/HistoricalLocations({hls[0]['@iot.id']})/Locations").json()
    assert [x["@iot.id"] for x in hl_locs["value"]] == [locs[0]["@iot.id"]]
    (ds,) = client.get(f"{V}/Things({tid})/Datastreams").json()["value"]
    assert ds["unitOfMeasurement"]["symbol"] == "µg/m³"
    assert client.get(path_of(ds["Sensor@iot.navigationLink"])).json()["name"] == "SDS011"
    op = client.get(path_of(ds["ObservedProperty@iot.navigationLink"])).json()
    assert op["definition"] == "https://example.org/pm25"
    obs = client.get(f"{V}/Datastreams({ds['@iot.id']})/Observations?$orderby=phenomenonTime")
    assert [o["result"] for o in obs.json()["value"]] == [7, 8]
    # their FeatureOfInterest: the new Location's
    o1 = obs.json()["value"][0]
    foi = client.get(f"{path_of(o1['@iot.selfLink'])}/FeatureOfInterest").json()
    assert foi["feature"]["coordinates"] == [6.946, 50.936]
    assert audits(settings)[-1][:2] == ("POST /v1.1/Things", "/v1.1/Things")


def test_links_to_existing_entities_by_id(client: TestClient, settings: Settings) -> None:
    h = key(settings, "entities:write")
    sensor = client.post(
        f"{V}/Sensors",
        json={"name": "S", "description": "d", "encodingType": "text/html", "metadata": "m"},
        headers=h,
    )
    assert sensor.status_code == 201, sensor.text
    op = client.post(
        f"{V}/ObservedProperties",
        json={"name": "NO2", "definition": "https://example.org/no2", "description": "d"},
        headers=h,
    )
    assert op.status_code == 201
    ds = {
        "name": "NO2 a-1",
        "description": "d",
        "observationType": "OM_Measurement",
        "unitOfMeasurement": {"name": "µg/m³", "symbol": "µg/m³"},
        "Thing": {"@iot.id": 1},
        "Sensor": {"@iot.id": sensor.json()["@iot.id"]},
        "ObservedProperty": {"@iot.id": op.json()["@iot.id"]},
    }
    r = client.post(f"{V}/Datastreams", json=ds, headers=h)
    assert r.status_code == 201, r.text
    new_id = r.json()["@iot.id"]
    ids = [x["@iot.id"] for x in client.get(f"{V}/Things(1)/Datastreams").json()["value"]]
    assert new_id in ids
    by_sensor = client.get(f"{V}/Sensors({sensor.json()['@iot.id']})/Datastreams").json()
    assert [x["@iot.id"] for x in by_sensor["value"]] == [new_id]
    # a Location linked to the existing Thing 1 becomes its Location, with a HistoricalLocation
    hl_before = scalar(settings, "select count(*) from historical_location where thing_id = 1")
    loc = {
        "name": "moved",
        "description": "d",
        "encodingType": "application/geo+json",
        "location": {"type": "Point", "coordinates": [7.0, 51.0]},
        "Things": [{"@iot.id": 1}],
    }
    r = client.post(f"{V}/Locations", json=loc, headers=h)
    assert r.status_code == 201, r.text
    now = client.get(f"{V}/Things(1)/Locations").json()["value"]
    assert [x["name"] for x in now] == ["moved"]
    assert scalar(settings, "select count(*) from historical_location where thing_id = 1") == (
        hl_before + 1
    )


ND = {"name": "x", "description": "d"}
LOC = {**ND, "encodingType": "e"}
LINKS = {"Sensor": {"@iot.id": 1}, "ObservedProperty": {"@iot.id": 1}}


@pytest.mark.parametrize(
    ("entity_set", "body", "named"),
    [
        ("Things", {"description": "d"}, "name"),
        ("Things", {**ND, "Datastreams": [{"name": "d"}]}, "Datastreams[0]/description"),
        ("Things", {**ND, "Locations": [{"@iot.id": 999}]}, "Locations[0]/@iot.id"),
        ("Things", {**ND, "colour": 1}, "colour"),
        ("Locations", {**LOC, "location": {"type": "Pt"}}, "location/type"),
        ("Locations", {**LOC, "location": {"type": "Point", "coordinates": ["a"]}}, "not valid"),
        ("Datastreams", {**ND, "observationType": "o", "unitOfMeasurement": {}, **LINKS}, "Thing"),
        ("Sensors", {**LOC, "metadata": 5}, "metadata"),
    ],
)
def test_an_invalid_entity_is_a_400_naming_the_field_and_stores_nothing(
    client: TestClient, settings: Settings, entity_set: str, body: Any, named: str
) -> None:
    h = key(settings, "entities:write", "observations:write")
    before = state(settings)
    r = client.post(f"{V}/{entity_set}", json=body, headers=h)
    assert r.status_code == 400, r.text
    assert named in r.json()["message"], r.text
    assert state(settings) == before


def test_a_failing_part_of_a_deep_insert_stores_nothing(
    client: TestClient, settings: Settings
) -> None:
    """The ObservedProperty's definition exists already (unique): the Thing, its Location and
    Sensor made before it in the same request are rolled back."""
    h = key(settings, "entities:write", "observations:write")
    assert client.post(f"{V}/Things", json=thing_body("https://x/a"), headers=h).status_code == 201
    before = state(settings)
    r = client.post(f"{V}/Things", json=thing_body("https://x/a"), headers=h)
    assert r.status_code == 409 and "ObservedProperty" in r.json()["message"], r.text
    assert state(settings) == before


def test_entity_writes_without_a_key_or_scope_store_nothing(
    client: TestClient, settings: Settings
) -> None:
    before = state(settings)
    assert client.post(f"{V}/Things", json=thing_body()).status_code == 401
    obs_only = key(settings, "observations:write")
    assert client.post(f"{V}/Things", json=thing_body(), headers=obs_only).status_code == 403
    # entities:write alone does not cover the Observations nested in the body
    ent_only = key(settings, "entities:write")
    r = client.post(f"{V}/Things", json=thing_body(), headers=ent_only)
    assert r.status_code == 403 and "observations:write" in r.json()["message"]
    assert state(settings) == before


# --------------------------------------------------------------------------- update, delete
def make_thing(client: TestClient, settings: Settings) -> tuple[int, dict[str, Any]]:
    h = key(settings, "entities:write", "observations:write")
    r = client.post(f"{V}/Things", json=thing_body(), headers=h)
    assert r.status_code == 201, r.text
    tid = r.json()["@iot.id"]
    (ds,) = client.get(f"{V}/Things({tid})/Datastreams").json()["value"]
    return tid, ds


def test_patch_and_put_change_an_entity_and_are_audited(
    client: TestClient, settings: Settings
) -> None:
    tid, ds = make_thing(client, settings)
    h = key(settings, "entities:write")
    r = client.patch(f"{V}/Things({tid})", json={"description": "neu"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["description"] == "neu" and r.json()["name"] == "Station Neumarkt"
    assert client.get(f"{V}/Things({tid})").json()["description"] == "neu"
    assert audits(settings)[-1][:2] == ("PATCH /v1.1/Things({entity_id})", f"/v1.1/Things({tid})")
    # a Datastream moves to Thing 1 (a to-one link)
    r = client.patch(f"{V}/Datastreams({ds['@iot.id']})", json={"Thing": {"@iot.id": 1}}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["Thing@iot.navigationLink"].endswith("/v1.1/Things(1)")
    # PATCH Locations of a Thing: it moves, with a HistoricalLocation
    loc1 = client.get(f"{V}/Things(1)/Locations").json()["value"][0]["@iot.id"]
    r = client.patch(f"{V}/Things({tid})", json={"Locations": [{"@iot.id": loc1}]}, headers=h)
    assert r.status_code == 200
    assert [x["@iot.id"] for x in client.get(f"{V}/Things({tid})/Locations").json()["value"]] == [
        loc1
    ]
    assert len(client.get(f"{V}/Things({tid})/HistoricalLocations").json()["value"]) == 2
    # PUT replaces every property: those left out go back to null
    r = client.put(f"{V}/Things({tid})", json={"name": "n", "description": "d"}, headers=h)
    assert r.status_code == 200, r.text
    assert "properties" not in r.json() and r.json()["name"] == "n"  # null: left out


def test_invalid_updates_are_400_or_404_and_change_nothing(
    client: TestClient, settings: Settings
) -> None:
    tid, ds = make_thing(client, settings)
    h = key(settings, "entities:write")
    before = state(settings)
    thing = client.get(f"{V}/Things({tid})").json()
    for body, named in (
        ({"name": None}, "name"),
        ({"colour": "red"}, "colour"),
        ({}, "changes nothing"),
        ({"Datastreams": [{"@iot.id": 1}]}, "Datastreams"),
        ({"Locations": [{"@iot.id": 999}]}, "Locations[0]/@iot.id"),
    ):
        r = client.patch(f"{V}/Things({tid})", json=body, headers=h)
        assert r.status_code == 400 and named in r.json()["message"], r.text
    r = client.patch(
        f"{V}/Datastreams({ds['@iot.id']})", json={"Sensor": {"@iot.id": 99}}, headers=h
    )
    assert r.status_code == 400 and "Sensor/@iot.id" in r.json()["message"]
    r = client.patch(
        f"{V}/Datastreams({ds['@iot.id']})", json={"ObservedProperty": {"@iot.id": 99}}, headers=h
    )
    assert r.status_code == 400, r.text
    assert "there is no ObservedProperty with @iot.id 99" in r.json()["message"], r.text
    assert client.patch(f"{V}/Things(999)", json={"name": "x"}, headers=h).status_code == 404
    assert client.patch(f"{V}/Things({tid})", json={"name": "x"}).status_code == 401
    obs_only = key(settings, "observations:write")
    assert client.delete(f"{V}/Things({tid})", headers=obs_only).status_code == 403
    assert client.delete(f"{V}/Things(999)", headers=h).status_code == 404
    assert client.get(f"{V}/Things({tid})").json() == thing
    assert state(settings) == before


def test_patch_and_delete_of_an_observation(client: TestClient, settings: Settings) -> None:
    _, ds = make_thing(client, settings)
    h = key(settings, "observations:write")
    obs = client.get(f"{V}/Datastreams({ds['@iot.id']})/Observations?$orderby=phenomenonTime")
    first, last = obs.json()["value"]
    link = path_of(last["@iot.selfLink"])
    r = client.patch(link, json={"result": 9.5, "parameters": {"checked": True}}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["@iot.id"] == last["@iot.id"]  # the id stays
    assert client.get(link).json()["result"] == 9.5
    latest = "select result from observation_latest where datastream_id = %s"
    assert scalar(settings, latest, ds["@iot.id"]) == 9.5
    moved = {"phenomenonTime": "2026-11-01T11:00:00Z"}
    r = client.patch(link, json=moved, headers=h)
    assert r.status_code == 400 and "phenomenonTime" in r.json()["message"]
    assert client.patch(link, json={"result": 1}).status_code == 401
    assert client.delete(link, headers=key(settings, "entities:write")).status_code == 403
    r = client.delete(link, headers=h)
    assert r.status_code == 200
    assert client.get(link).status_code == 404
    assert client.delete(link, headers=h).status_code == 404
    # the latest value falls back to the one before
    assert scalar(settings, latest, ds["@iot.id"]) == first["result"]
    assert audits(settings)[-1][0] == "DELETE /v1.1/Observations('{obs_id}')"


def test_delete_cascades_as_the_standard_says(client: TestClient, settings: Settings) -> None:
    """Deleting a Thing deletes its Datastreams and their Observations and its
    HistoricalLocations, not its Locations; deleting a Location deletes the HistoricalLocations
    left without one; deleting a Sensor deletes its Datastreams."""
    tid, ds = make_thing(client, settings)
    h = key(settings, "entities:write")
    loc = client.get(f"{V}/Things({tid})/Locations").json()["value"][0]["@iot.id"]
    sensor = path_of(ds["Sensor@iot.navigationLink"])
    n_obs = scalar(
        settings, "select count(*) from observation where datastream_id = %s", ds["@iot.id"]
    )
    assert n_obs == 2
    r = client.delete(f"{V}/Things({tid})", headers=h)
    assert r.status_code == 200, r.text
    assert client.get(f"{V}/Things({tid})").status_code == 404
    assert client.get(f"{V}/Datastreams({ds['@iot.id']})").status_code == 404
    assert (
        scalar(settings, "select count(*) from observation where datastream_id = %s", ds["@iot.id"])
        == 0
    )
    assert (
        scalar(settings, "select count(*) from historical_location where thing_id = %s", tid) == 0
    )
    assert client.get(f"{V}/Locations({loc})").status_code == 200
    assert client.get(sensor).status_code == 200
    assert audits(settings)[-1][:2] == ("DELETE /v1.1/Things({entity_id})", f"/v1.1/Things({tid})")
    # Location: Thing 1's, with its HistoricalLocations
    loc1 = client.get(f"{V}/Things(1)/Locations").json()["value"][0]["@iot.id"]
    hl_of_1 = "select count(*) from historical_location where thing_id = 1"
    assert (
        client.post(
            f"{V}/Locations",
            json={
                **LOC,
                "location": {"type": "Point", "coordinates": [7, 51]},
                "Things": [{"@iot.id": 1}],
            },
            headers=h,
        ).status_code
        == 201
    )
    kept = scalar(
        settings,
        "select count(*) from historical_location h where thing_id = 1 and exists (select 1"
        " from historical_location_location x where x.historical_location_id = h.id"
        " and x.location_id <> %s)",
        loc1,
    )
    assert kept == 1 and scalar(settings, hl_of_1) >= kept
    r = client.delete(f"{V}/Locations({loc1})", headers=h)
    assert r.status_code == 200
    assert client.get(f"{V}/Locations({loc1})").status_code == 404
    assert client.get(f"{V}/Things(1)").status_code == 200
    assert scalar(settings, hl_of_1) == kept
    # Sensor: its Datastreams (and their Observations) go with it
    tid2, ds2 = make_thing_with(client, settings, "https://x/2")
    r = client.delete(path_of(ds2["Sensor@iot.navigationLink"]), headers=h)
    assert r.status_code == 200
    assert client.get(f"{V}/Datastreams({ds2['@iot.id']})").status_code == 404
    assert client.get(f"{V}/Things({tid2})").status_code == 200


def make_thing_with(
    client: TestClient, settings: Settings, definition: str
) -> tuple[int, dict[str, Any]]:
    h = key(settings, "entities:write", "observations:write")
    r = client.post(f"{V}/Things", json=thing_body(definition), headers=h)
    assert r.status_code == 201, r.text
    tid = r.json()["@iot.id"]
    (ds,) = client.get(f"{V}/Things({tid})/Datastreams").json()["value"]
    return tid, ds


def test_writes_run_with_the_services_own_roles(
    settings: Settings, service_urls: Any, client: TestClient
) -> None:
    """``quartier serve``'s logins: the API reads and audits as quartier_api, the SensorThings
    writes run as quartier_ingest (the grants of store.roles), deep insert to cascade delete."""
    import secrets

    from quartier.store import roles

    chosen = {role: secrets.token_urlsafe(16) for role in (roles.API, roles.INGEST)}
    with psycopg.connect(service_urls.database_url, autocommit=True) as conn:
        for role, password in chosen.items():
            roles.set_login(conn, role, role, password)
    url = settings.require_database_url()

    def login(role: str) -> str:
        return psycopg.conninfo.make_conninfo(url, user=role, password=chosen[role])

    own = Settings(
        _env_file=None,
        database={"url": url, "api_url": login(roles.API), "ingest_url": login(roles.INGEST)},
        mqtt={"url": service_urls.mqtt_url},
    ).for_service("api")
    h = key(settings, "entities:write", "observations:write")
    with TestClient(create_app(own)) as c:
        r = c.post(f"{V}/Things", json=thing_body("https://x/roles"), headers=h)
        assert r.status_code == 201, r.text
        tid = r.json()["@iot.id"]
        (ds,) = c.get(f"{V}/Things({tid})/Datastreams").json()["value"]
        body = {"phenomenonTime": "2026-11-01T12:00:00Z", "result": 3}
        r = c.post(f"{V}/Datastreams({ds['@iot.id']})/Observations", json=body, headers=h)
        assert r.status_code == 201, r.text
        link = path_of(r.json()["@iot.selfLink"])
        assert c.patch(link, json={"result": 4}, headers=h).status_code == 200
        assert c.patch(f"{V}/Things({tid})", json={"name": "r"}, headers=h).status_code == 200
        assert c.delete(link, headers=h).status_code == 200
        assert c.delete(f"{V}/Things({tid})", headers=h).status_code == 200, r.text
        assert c.get(f"{V}/Things({tid})").status_code == 404
    assert [a[0] for a in audits(settings)[-6:]] == [
        "POST /v1.1/Things",
        "POST /v1.1/Datastreams({ds_id})/Observations",
        "PATCH /v1.1/Observations('{obs_id}')",
        "PATCH /v1.1/Things({entity_id})",
        "DELETE /v1.1/Observations('{obs_id}')",
        "DELETE /v1.1/Things({entity_id})",
    ]


# --------------------------------------------------------------------------- CreateObservations
def test_create_observations_answers_a_selflink_or_error_per_row(
    client: TestClient, settings: Settings
) -> None:
    h = key(settings, "observations:write")
    body = [
        {
            "Datastream": {"@iot.id": 1},
            "components": ["phenomenonTime", "result", "parameters"],
            "dataArray@iot.count": 5,
            "dataArray": [
                ["2026-11-01T03:00:00Z", 1.5, None],
                ["2026-11-01T03:01:00Z", "text", {"q": 1}],
                ["not a time", 2, None],  # invalid row
                [T0.isoformat(), 3, None],  # the fixture's reading is there: first wins
                ["2026-11-01T03:00:00Z", 4, None],  # twice in this body: the first wins
            ],
        }
    ]
    before = scalar(settings, "select count(*) from observation")
    r = client.post(f"{V}/CreateObservations", json=body, headers=h)
    assert r.status_code == 201, r.text
    links = r.json()
    assert links[2:] == ["error", "error", "error"]
    assert r.headers["X-Quartier-Errors"].startswith("3; first: [0]/dataArray[2]/phenomenonTime")
    assert scalar(settings, "select count(*) from observation") == before + 2
    first = client.get(path_of(links[0])).json()
    assert first["result"] == 1.5 and first["phenomenonTime"] == "2026-11-01T03:00:00.000Z"
    second = client.get(path_of(links[1])).json()
    assert second["result"] == "text" and second["parameters"] == {"q": 1}
    # the automatic FeatureOfInterest, as for one Observation
    assert client.get(f"{path_of(links[0])}/FeatureOfInterest").status_code == 200
    assert scalar(settings, "select result from observation where phenomenon_time = %s", T0) == 5.0
    assert audits(settings)[-1][:2] == ("POST /v1.1/CreateObservations", "/v1.1/CreateObservations")


ONE = {"Datastream": {"@iot.id": 1}}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "array"),
        ([{**ONE, "components": ["phenomenonTime"], "dataArray": []}], "result"),
        ([{**ONE, "components": ["result", "colour"], "dataArray": []}], "colour"),
        ([{"Datastream": {"@iot.id": 77}, "components": ["result"], "dataArray": [[1]]}], "[0]/"),
        ([{"components": ["result"], "dataArray": [[1]]}], "[0]/Datastream"),
    ],
)
def test_an_invalid_create_observations_body_is_400_and_stores_nothing(
    client: TestClient, settings: Settings, body: Any, named: str
) -> None:
    h = key(settings, "observations:write")
    before = state(settings)
    r = client.post(f"{V}/CreateObservations", json=body, headers=h)
    assert r.status_code == 400 and named in r.json()["message"], r.text
    assert client.post(f"{V}/CreateObservations", json=body).status_code == 401
    assert state(settings) == before


def test_create_observations_throughput(client: TestClient, settings: Settings) -> None:
    """10,000 observations in one request through the writer's COPY (printed: rows/s)."""
    import time

    h = key(settings, "observations:write")
    n = 10_000
    start = T0 + timedelta(days=1)
    rows = [[(start + timedelta(seconds=i)).isoformat(), float(i)] for i in range(n)]
    body = [
        {
            "Datastream": {"@iot.id": 1},
            "components": ["phenomenonTime", "result"],
            "dataArray": rows,
        }
    ]
    t = time.perf_counter()
    r = client.post(f"{V}/CreateObservations", json=body, headers=h)
    took = time.perf_counter() - t
    assert r.status_code == 201, r.text[:300]
    assert "error" not in r.json() and len(r.json()) == n
    assert (
        scalar(settings, "select count(*) from observation where phenomenon_time >= %s", start) == n
    )
    print(f"CreateObservations: {n} rows in {took:.2f} s = {n / took:,.0f} observations/s")  # noqa: T201
    # one Observation per request, as a simple client sends them
    m = 200
    t = time.perf_counter()
    for i in range(m):
        one = {"phenomenonTime": (start - timedelta(seconds=i + 1)).isoformat(), "result": i}
        assert (
            client.post(f"{V}/Datastreams(1)/Observations", json=one, headers=h).status_code == 201
        )
    took = time.perf_counter() - t
    print(f"POST Observations: {m} in {took:.2f} s = {1000 * took / m:.1f} ms each")  # noqa: T201


def test_delete_of_a_feature_of_interest_an_observed_property_and_a_historical_location(
    client: TestClient, settings: Settings
) -> None:
    tid, ds = make_thing(client, settings)
    h = key(settings, "entities:write")
    o = client.get(f"{V}/Datastreams({ds['@iot.id']})/Observations").json()["value"][0]
    foi = client.get(f"{path_of(o['@iot.selfLink'])}/FeatureOfInterest").json()["@iot.id"]
    # a FeatureOfInterest takes its Observations with it
    assert client.delete(f"{V}/FeaturesOfInterest({foi})", headers=h).status_code == 200
    assert client.get(path_of(o["@iot.selfLink"])).status_code == 404
    assert client.get(f"{V}/Datastreams({ds['@iot.id']})").status_code == 200
    # a HistoricalLocation's time can change; deleting it leaves the Thing and its Location
    (hl,) = client.get(f"{V}/Things({tid})/HistoricalLocations").json()["value"]
    when = {"time": "2026-10-01T00:00:00Z"}
    r = client.patch(f"{V}/HistoricalLocations({hl['@iot.id']})", json=when, headers=h)
    assert r.status_code == 200 and r.json()["time"] == "2026-10-01T00:00:00.000Z", r.text
    assert client.delete(f"{V}/HistoricalLocations({hl['@iot.id']})", headers=h).status_code == 200
    assert client.get(f"{V}/Things({tid})/HistoricalLocations").json()["value"] == []
    assert len(client.get(f"{V}/Things({tid})/Locations").json()["value"]) == 1
    # an ObservedProperty takes its Datastreams
    op = path_of(ds["ObservedProperty@iot.navigationLink"])
    assert client.delete(op, headers=h).status_code == 200
    assert client.get(op).status_code == 404
    assert client.get(f"{V}/Datastreams({ds['@iot.id']})").status_code == 404
    assert client.get(f"{V}/Things({tid})").status_code == 200


def test_post_through_a_navigation_links_the_new_entity_to_its_parent(
    client: TestClient, settings: Settings
) -> None:
    h = key(settings, "entities:write")
    loc = {**LOC, "location": {"type": "Point", "coordinates": [6.95, 50.93]}}
    r = client.post(f"{V}/Things(1)/Locations", json=loc, headers=h)
    assert r.status_code == 201, r.text
    assert [x["@iot.id"] for x in client.get(f"{V}/Things(1)/Locations").json()["value"]] == [
        r.json()["@iot.id"]
    ]
    sensor = {**LOC, "metadata": "m"}
    op = {**ND, "definition": "https://x/nav"}
    ds = {**ND, "observationType": "o", "unitOfMeasurement": {"name": "n"}}
    r = client.post(
        f"{V}/Things(1)/Datastreams",
        json={**ds, "Sensor": sensor, "ObservedProperty": op},
        headers=h,
    )
    assert r.status_code == 201, r.text
    assert r.json()["Thing@iot.navigationLink"].endswith("/v1.1/Things(1)")
    r = client.post(f"{V}/Locations(1)/Things", json=ND, headers=h)
    assert r.status_code == 201, r.text
    assert (
        client.get(f"{V}/Things({r.json()['@iot.id']})/Locations").json()["value"][0]["@iot.id"]
        == 1
    )
    before = state(settings)
    assert client.post(f"{V}/Things(999)/Locations", json=loc, headers=h).status_code == 404
    assert client.post(f"{V}/Things(1)/Locations", json=loc).status_code == 401
    assert state(settings) == before


def test_the_fast_data_array_rows_equal_the_clear_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """CreateObservations' fast row parser (times and numbers) gives what the full Observation
    parser gives, for valid, invalid and odd rows."""
    import random

    from quartier.api.sta import body as b

    rnd = random.Random(13)
    now = datetime(2026, 11, 28, tzinfo=UTC)
    times = [
        "2026-11-01T00:00:00Z", "2026-11-01T01:00:00+01:00", "2026-11-01T00:00:00",
        "2026-11-01T00:00:00.123456-05:30", "1989-12-31T23:59:59Z", "2026-11-28T00:04:59Z",
        "2026-11-28T00:05:01Z", "2026-11-01T00:00:00Z/2026-11-02T00:00:00Z", "x", "", None, 5,
        "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
    ]  # fmt: skip
    results = [0, 1.5, -3, float("nan"), float("inf"), True, "t", None, {"a": 1}, [1], 2**70]
    for components in (
        ["phenomenonTime", "result"],
        ["result", "phenomenonTime", "resultTime"],
        ["result"],
        ["resultTime", "result"],
    ):
        rows = []
        for _ in range(400):
            row: Any = [
                rnd.choice(results) if c == "result" else rnd.choice(times) for c in components
            ]
            if rnd.random() < 0.05:
                row = row[:-1] if rnd.random() < 0.5 else "row"
            rows.append(row)
        raw = [{"Datastream": {"@iot.id": 3}, "components": components, "dataArray": rows}]
        fast = b.create_observations(raw, now, 300)
        with monkeypatch.context() as mp:
            mp.setattr(b, "_fast_rows", lambda *_: None)
            clear = b.create_observations(raw, now, 300)
        for f, c in zip(fast[0].rows, clear[0].rows, strict=True):
            if isinstance(c, Exception):
                assert isinstance(f, Exception) and str(f) == str(c)
            else:
                assert f == c


def test_a_body_that_is_not_json_is_a_400(client: TestClient, settings: Settings) -> None:
    h = {
        **key(settings, "observations:write", "entities:write"),
        "content-type": "application/json",
    }
    before = state(settings)
    for url in (f"{V}/Observations", f"{V}/Things", f"{V}/CreateObservations"):
        for content in (b"{", b"", b"\xff"):
            r = client.post(url, content=content, headers=h)
            assert r.status_code == 400, (url, content, r.text)
            assert r.json()["code"] == 400
    assert client.patch(f"{V}/Things(1)", content=b"[", headers=h).status_code == 400
    assert state(settings) == before


def test_a_device_fed_thing_or_datastream_is_not_deleted(
    client: TestClient, settings: Settings
) -> None:
    """Thing 1 and Datastream 1 are fed by the registered device net/a-1: a running ingester
    keeps their ids and would go on writing to them, so DELETE is a 409 that says what to do
    instead, and nothing is deleted (its Sensor and ObservedProperty neither)."""
    h = key(settings, "entities:write")
    before = state(settings)
    ds = client.get(f"{V}/Datastreams(1)").json()
    for path in (
        f"{V}/Things(1)",
        f"{V}/Datastreams(1)",
        path_of(ds["Sensor@iot.navigationLink"]),
        path_of(ds["ObservedProperty@iot.navigationLink"]),
    ):
        r = client.delete(path, headers=h)
        assert r.status_code == 409, (path, r.text)
        message = r.json()["message"]
        assert "net/a-1" in message and "quartier devices revoke" in message
    assert state(settings) == before
    assert client.get(f"{V}/Things(1)").status_code == 200
