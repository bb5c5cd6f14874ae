"""ETags on the SensorThings API's to-one navigation paths (``quartier/api/sta_etag.py``):
``/Datastreams(1)/Thing``, ``/Observations('…')/FeatureOfInterest`` and every other to-one
route, and the deeper paths the path resolver turns into one of them, answer with the ETag of
the entity's own URL, honour ``If-None-Match`` (304, unless the request ``$expand``s) and
``If-Match`` (412), and their tag changes when the entity changes. Real app and database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sta_helpers import T0, fill_two_devices, key

from quartier.api.app import create_app
from quartier.api.sensorthings import _TO_ONE, observation_id
from quartier.config import Settings

pytestmark = pytest.mark.services
V = "/v1.1"
TAG = re.compile(r'^W/"[0-9a-f]{32}"$')


@pytest.fixture
def world(settings: Settings) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    """``fill_two_devices`` (b-1's observations have a FeatureOfInterest), a HistoricalLocation
    of Thing 1 and a MultiDatastream of Thing 1 with one Observation. Yields the client, the
    write key's header and, per to-one route of ``_TO_ONE``, a path that has a target."""
    fill_two_devices(settings)
    h = key(settings, "entities:write", "observations:write")
    with TestClient(create_app(settings)) as client:
        r = client.post(
            f"{V}/HistoricalLocations",
            json={"time": "2026-11-02T00:00:00Z", "Thing": {"@iot.id": 1},
                  "Locations": [{"@iot.id": 1}]},
            headers=h,
        )  # fmt: skip
        assert r.status_code == 201, r.text
        hl = r.json()["@iot.id"]
        r = client.post(
            f"{V}/MultiDatastreams",
            json={
                "name": "weather",
                "description": "two values",
                "unitOfMeasurements": [{"name": "C", "symbol": "C", "definition": "x"}] * 2,
                "multiObservationDataTypes": [
                    "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
                ]
                * 2,
                "Thing": {"@iot.id": 1},
                "Sensor": {"@iot.id": 1},
                "ObservedProperties": [{"@iot.id": 1}, {"@iot.id": 2}],
            },
            headers=h,
        )
        assert r.status_code == 201, r.text
        mds = r.json()["@iot.id"]
        r = client.post(
            f"{V}/MultiDatastreams({mds})/Observations",
            json={"phenomenonTime": "2026-11-01T08:30:00Z", "result": [5.2, 78]},
            headers=h,
        )
        assert r.status_code == 201, r.text
        mds_obs = r.json()["@iot.id"]
        b1_obs = client.get(f"{V}/Datastreams(3)/Observations", params={"$top": "1"})
        obs = b1_obs.json()["value"][0]["@iot.id"]
        paths = {
            "Datastreams/Thing": f"{V}/Datastreams(1)/Thing",
            "Datastreams/Sensor": f"{V}/Datastreams(1)/Sensor",
            "Datastreams/ObservedProperty": f"{V}/Datastreams(1)/ObservedProperty",
            "HistoricalLocations/Thing": f"{V}/HistoricalLocations({hl})/Thing",
            "Observations/Datastream": f"{V}/Observations('{observation_id(1, T0)}')/Datastream",
            "Observations/FeatureOfInterest": f"{V}/Observations('{obs}')/FeatureOfInterest",
            "Observations/MultiDatastream": f"{V}/Observations('{mds_obs}')/MultiDatastream",
            "MultiDatastreams/Thing": f"{V}/MultiDatastreams({mds})/Thing",
            "MultiDatastreams/Sensor": f"{V}/MultiDatastreams({mds})/Sensor",
        }
        yield client, h, paths


def _tag(r: Any) -> str:
    assert r.status_code == 200, r.text
    tag = str(r.headers.get("etag"))
    assert TAG.match(tag), (r.url, tag)
    return tag


def _own(body: dict[str, Any]) -> str:
    """The entity's own URL from its selfLink."""
    return "/v1.1/" + str(body["@iot.selfLink"]).split("/v1.1/", 1)[1]


def test_every_to_one_route_has_the_entitys_etag_and_304(world: Any) -> None:
    client, _, paths = world
    assert {f"{a}/{b}" for a, b in _TO_ONE} == set(paths)  # every route of the resolver's list
    for name, path in paths.items():
        r = client.get(path)
        tag = _tag(r)
        own = client.get(_own(r.json()))
        assert _tag(own) == tag, name
        assert own.json() == r.json(), name
        for asked in (tag, f'W/"{"0" * 32}", {tag}', "*"):
            nm = client.get(path, headers={"If-None-Match": asked})
            assert nm.status_code == 304, (name, asked)
            assert nm.content == b"" and nm.headers["etag"] == tag
        other = client.get(path, headers={"If-None-Match": f'W/"{"0" * 32}"'})
        assert other.status_code == 200 and other.headers["etag"] == tag
        # the tag holds for every representation of the state: $select answers in full with it
        sel = client.get(path, params={"$select": "id"})
        assert sel.headers["etag"] == tag and sel.status_code == 200
        # $expand is not covered by the tag: answered in full even when it matches
        nav = next(k.split("@")[0] for k in r.json() if k.endswith("@iot.navigationLink"))
        ex = client.get(path, params={"$expand": nav}, headers={"If-None-Match": tag})
        assert ex.status_code == 200 and nav in ex.json(), name
        # If-Match naming another tag: 412, naming this one: 200
        assert client.get(path, headers={"If-Match": f'W/"{"1" * 32}"'}).status_code == 412
        assert client.get(path, headers={"If-Match": tag}).status_code == 200


def test_deeper_paths_carry_the_same_etag_and_honour_if_none_match(world: Any) -> None:
    client, _, paths = world
    obs = paths["Observations/Datastream"].removesuffix("/Datastream")
    fo = paths["Observations/FeatureOfInterest"].removesuffix("/FeatureOfInterest")
    cases = {
        f"{obs}/Datastream/Thing": f"{V}/Things(1)",
        f"{obs}/Datastream/Sensor": f"{V}/Sensors(1)",
        f"{obs}/Datastream/ObservedProperty": f"{V}/ObservedProperties(1)",
        f"{V}/Things(1)/Datastreams(1)/Thing": f"{V}/Things(1)",
        f"{V}/Things(1)/Datastreams(1)": f"{V}/Datastreams(1)",
        f"{V}/Things(2)/Datastreams(3)/ObservedProperty": None,  # compared with the to-one
        f"{V}/Datastreams(3)/Observations('{fo.split(chr(39))[1]}')/FeatureOfInterest": None,
    }
    for path, own in cases.items():
        r = client.get(path)
        tag = _tag(r)
        own = own or _own(r.json())
        assert _tag(client.get(own)) == tag, path
        nm = client.get(path, headers={"If-None-Match": tag})
        assert nm.status_code == 304 and nm.headers["etag"] == tag, path
    # a path through an entity that does not belong to the navigation stays a 404
    assert client.get(f"{V}/Things(1)/Datastreams(3)/Thing").status_code == 404


def test_the_tag_changes_with_the_entity_and_a_stale_one_gets_the_body(world: Any) -> None:
    client, h, paths = world
    path = paths["Datastreams/Thing"]
    before = _tag(client.get(path))
    r = client.patch(f"{V}/Things(1)", json={"description": "neu"}, headers=h)
    assert r.status_code == 200, r.text
    after = _tag(client.get(path))
    assert after != before and after == r.headers["etag"]
    stale = client.get(path, headers={"If-None-Match": before})
    assert stale.status_code == 200 and stale.json()["description"] == "neu"
    assert client.get(path, headers={"If-None-Match": after}).status_code == 304
    # the FeatureOfInterest of an Observation: a change of the feature changes the tag there
    path = paths["Observations/FeatureOfInterest"]
    before = _tag(client.get(path))
    foi = client.get(path).json()["@iot.id"]
    r = client.patch(f"{V}/FeaturesOfInterest({foi})", json={"name": "anders"}, headers=h)
    assert r.status_code == 200, r.text
    assert _tag(client.get(path)) not in (before,)
    assert client.get(path, headers={"If-None-Match": before}).status_code == 200
