"""SensorThings MultiDatastream extension (OGC 18-088, A.5), against a real database: the entity
set, its navigations and query options, its Observations with array results, and writes (deep
insert, PATCH, DELETE, Observations whose result length must match multiObservationDataTypes)
through the ingest writer's path."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import psycopg
import pytest
from fastapi.testclient import TestClient
from sta_helpers import key, scalar

from quartier.api import models as m
from quartier.api.app import create_app
from quartier.config import Settings
from quartier.ingest.model import Batch, Observation, Position, Reading, Uplink
from quartier.ingest.writer import BatchWriter

pytestmark = pytest.mark.services
T0 = datetime(2026, 11, 1, tzinfo=UTC)
V = "/v1.1"
SPEC = "http://www.opengis.net/spec/iot_sensing/1.1/req/"
MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
CATEGORY = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_CategoryObservation"
UNITS = [
    {"name": "degree Celsius", "symbol": "°C", "definition": "ucum:Cel"},
    {"name": "percent", "symbol": "%", "definition": "ucum:%"},
    {"name": "wind direction", "symbol": None, "definition": None},
]


@pytest.fixture
def world(settings: Settings) -> dict[str, int]:
    """Thing ``net/a-1`` (a Location, Datastream pm25 with one reading) and a weather station
    MultiDatastream of it: ObservedProperties temperature, humidity, wind (made in the order
    wind, temperature, humidity, so the MultiDatastream's order is not their ids' order), 30
    observations a minute apart with results ``[i, 50 + i, "N"|"S"]``; a second
    MultiDatastream on another Thing with one observation."""
    wr = BatchWriter(settings.require_database_url(), auto_register=True)
    batch = Batch()
    batch.uplinks.append(
        (Uplink("net", "a-1", [Reading("pm25", T0, 5.0)], Position(50.9, 6.9)), "t", b"", T0)
    )
    wr.write(batch)
    ids: dict[str, int] = {}
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:

        def one(query: str, *params: Any) -> int:
            row = conn.execute(query, params).fetchone()
            assert row is not None
            return int(row[0])

        ids["thing"] = one("select id from thing where name = 'net/a-1'")
        ids["other_thing"] = one("insert into thing (name) values ('mast') returning id")
        ids["sensor"] = one(
            "insert into sensor (name, metadata) values ('WS-100', 'https://x/ws') returning id"
        )
        for name in ("wind", "temperature", "humidity"):
            ids[name] = one(
                "insert into observed_property (name, definition) values (%s, %s) returning id",
                name,
                f"https://example.org/{name}",
            )
        types = psycopg.types.json.Jsonb([MEASUREMENT, MEASUREMENT, CATEGORY])
        ids["mds"] = one(
            "insert into multi_datastream (name, description, multi_observation_data_types,"
            " unit_of_measurements, thing_id, sensor_id, properties)"
            " values ('weather', 'station on the roof', %s, %s, %s, %s, %s) returning id",
            types,
            psycopg.types.json.Jsonb(UNITS),
            ids["thing"],
            ids["sensor"],
            psycopg.types.json.Jsonb({"height_m": 12}),
        )
        ids["mds2"] = one(
            "insert into multi_datastream (name, multi_observation_data_types,"
            " unit_of_measurements, thing_id, sensor_id)"
            " values ('mast pair', %s, %s, %s, %s) returning id",
            psycopg.types.json.Jsonb([MEASUREMENT, MEASUREMENT]),
            psycopg.types.json.Jsonb(UNITS[:2]),
            ids["other_thing"],
            ids["sensor"],
        )
        for mds, props in (
            (ids["mds"], [ids["temperature"], ids["humidity"], ids["wind"]]),
            (ids["mds2"], [ids["humidity"], ids["temperature"]]),
        ):
            for pos, prop in enumerate(props):
                conn.execute(
                    "insert into multi_datastream_observed_property values (%s, %s, %s)",
                    (mds, pos, prop),
                )
    obs = Batch(source="http")
    for i in range(30):
        result = [float(i), 50.0 + i, "N" if i % 2 else "S"]
        obs.observations.append(Observation(-ids["mds"], T0 + timedelta(minutes=i), None, result))
    obs.observations.append(Observation(-ids["mds2"], T0, None, [1.5, 2.5]))
    wr.write(obs)
    wr.close()
    return ids


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    small = settings.model_copy(update={"api": settings.api.model_copy(update={"default_top": 10})})
    with TestClient(create_app(small)) as c:
        yield c


def get(client: TestClient, path: str, **params: str) -> Any:
    r = client.get(path if path.startswith("http") else V + path, params=params)
    assert r.status_code == 200, (path, r.text)
    return r.json()


def path_of(link: str) -> str:
    return link[link.index(V) + len(V) :]


# --------------------------------------------------------------------------- reads
def test_entity_set_entity_and_navigations(client: TestClient, world: dict[str, int]) -> None:
    root = get(client, "")
    assert {"name": "MultiDatastreams", "url": "http://testserver/v1.1/MultiDatastreams"} in root[
        "value"
    ]
    assert SPEC + "multi-datastream" in root["serverSettings"]["conformance"]

    page = m.MultiDatastreamCollection.model_validate(get(client, "/MultiDatastreams"))
    assert [x.name for x in page.value] == ["weather", "mast pair"]
    mds = get(client, f"/MultiDatastreams({world['mds']})")
    m.MultiDatastream.model_validate(mds)
    assert mds["multiObservationDataTypes"] == [MEASUREMENT, MEASUREMENT, CATEGORY]
    assert mds["unitOfMeasurements"][0] == UNITS[0]
    assert mds["observationType"].endswith("OM_ComplexObservation")
    assert mds["phenomenonTime"] == "2026-11-01T00:00:00.000Z/2026-11-01T00:29:00.000Z"
    assert mds["properties"] == {"height_m": 12}

    # its ObservedProperties in the order of the results, not by id
    props = get(client, path_of(mds["ObservedProperties@iot.navigationLink"]))["value"]
    assert [p["name"] for p in props] == ["temperature", "humidity", "wind"]
    assert get(client, path_of(mds["Thing@iot.navigationLink"]))["@iot.id"] == world["thing"]
    assert get(client, f"/MultiDatastreams({world['mds']})/Thing")["name"] == "net/a-1"
    assert get(client, f"/MultiDatastreams({world['mds']})/Sensor")["name"] == "WS-100"

    # from the other side
    thing = get(client, f"/Things({world['thing']})")
    listed = get(client, path_of(thing["MultiDatastreams@iot.navigationLink"]))["value"]
    assert [x["name"] for x in listed] == ["weather"]
    by_sensor = get(client, f"/Sensors({world['sensor']})/MultiDatastreams")["value"]
    assert [x["name"] for x in by_sensor] == ["weather", "mast pair"]
    by_prop = get(client, f"/ObservedProperties({world['humidity']})/MultiDatastreams")["value"]
    assert [x["name"] for x in by_prop] == ["weather", "mast pair"]
    assert get(client, f"/ObservedProperties({world['wind']})/MultiDatastreams/$ref") == {
        "value": [{"@iot.selfLink": f"http://testserver/v1.1/MultiDatastreams({world['mds']})"}]
    }

    # property and $value paths
    assert get(client, f"/MultiDatastreams({world['mds']})/name") == {"name": "weather"}
    r = client.get(f"{V}/MultiDatastreams({world['mds']})/multiObservationDataTypes/$value")
    assert r.status_code == 200 and r.json() == [MEASUREMENT, MEASUREMENT, CATEGORY]
    assert client.get(f"{V}/MultiDatastreams(999999)").status_code == 404
    assert client.get(f"{V}/MultiDatastreams(999999)/Observations").status_code == 404


def test_observations_with_array_results(client: TestClient, world: dict[str, int]) -> None:
    mds = world["mds"]
    page = get(client, f"/MultiDatastreams({mds})/Observations", **{"$count": "true"})
    m.ObservationCollection.model_validate(page)
    assert page["@iot.count"] == 30 and len(page["value"]) == 10
    first = page["value"][0]
    assert first["result"] == [0.0, 50.0, "S"]
    assert first["@iot.id"] == f"-{mds}:{int(T0.timestamp()) * 1_000_000}"
    assert first["MultiDatastream@iot.navigationLink"].endswith(f"/MultiDatastreams({mds})")
    assert "Datastream@iot.navigationLink" not in first
    # by id, and back to its MultiDatastream; it has no Datastream
    one = get(client, path_of(first["@iot.selfLink"]))
    assert one == first
    back = get(client, path_of(first["@iot.selfLink"]) + "/MultiDatastream")
    assert back["@iot.id"] == mds
    r = client.get(f"{V}{path_of(first['@iot.selfLink'])}/Datastream")
    assert r.status_code == 404 and "has no Datastream" in r.text
    # paging by nextLink reaches all 30, in time order
    seen, url = [], f"{V}/MultiDatastreams({mds})/Observations"
    while url:
        body = client.get(url).json()
        seen += [o["result"][0] for o in body["value"]]
        url = body.get("@iot.nextLink")
    assert seen == [float(i) for i in range(30)]
    # a phenomenonTime range, $orderby, $select and $top
    week = get(
        client,
        f"/MultiDatastreams({mds})/Observations",
        **{
            "$filter": "phenomenonTime ge 2026-11-01T00:10:00Z and phenomenonTime lt"
            " 2026-11-01T00:13:00Z",
            "$orderby": "phenomenonTime desc",
            "$select": "result,phenomenonTime",
        },
    )
    assert week == {
        "value": [
            {"result": [float(i), 50.0 + i, "N" if i % 2 else "S"], "phenomenonTime": t}
            for i, t in (
                (12, "2026-11-01T00:12:00.000Z"),
                (11, "2026-11-01T00:11:00.000Z"),
                (10, "2026-11-01T00:10:00.000Z"),
            )
        ]
    }
    # all Observations: those of Datastreams and of MultiDatastreams, filtered by either
    everything = get(client, "/Observations", **{"$count": "true", "$top": "1"})
    assert everything["@iot.count"] == 1 + 30 + 1
    of_multi = get(
        client,
        "/Observations",
        **{"$filter": f"MultiDatastream/id eq {world['mds2']}", "$count": "true"},
    )
    assert of_multi["@iot.count"] == 1 and of_multi["value"][0]["result"] == [1.5, 2.5]
    by_name = get(
        client,
        "/Observations",
        **{"$filter": "MultiDatastream/name eq 'weather'", "$count": "true", "$top": "0"},
    )
    assert by_name["@iot.count"] == 30
    not_multi = get(client, "/Observations", **{"$filter": "Datastream/name ne 'x'"})
    assert [o["result"] for o in not_multi["value"]] == [5.0]
    by_id = get(client, "/Observations", **{"$filter": f"id eq '{first['@iot.id']}'"})
    assert [o["@iot.id"] for o in by_id["value"]] == [first["@iot.id"]]
    # dataArray names the MultiDatastream
    arr = get(
        client,
        f"/MultiDatastreams({mds})/Observations",
        **{"$resultFormat": "dataArray", "$top": "2"},
    )
    assert arr["value"][0]["MultiDatastream@iot.navigationLink"].endswith(
        f"/MultiDatastreams({mds})"
    )
    assert [row[3] for row in arr["value"][0]["dataArray"]] == [[0.0, 50.0, "S"], [1.0, 51.0, "N"]]


def names(body: Any) -> list[str]:
    return [x["name"] for x in body["value"]]


def test_query_options_on_multi_datastreams(client: TestClient, world: dict[str, int]) -> None:
    assert names(get(client, "/MultiDatastreams", **{"$orderby": "name desc"})) == [
        "weather",
        "mast pair",
    ]
    assert names(get(client, "/MultiDatastreams", **{"$filter": "Thing/name eq 'mast'"})) == [
        "mast pair"
    ]
    assert names(
        get(client, "/MultiDatastreams", **{"$filter": "ObservedProperties/name eq 'wind'"})
    ) == ["weather"]
    assert names(get(client, "/MultiDatastreams", **{"$filter": "properties/height_m gt 10"})) == [
        "weather"
    ]
    assert names(
        get(
            client,
            "/MultiDatastreams",
            **{"$filter": "overlaps(phenomenonTime, 2026-11-01T00:05:00Z/2026-11-01T00:06:00Z)"},
        )
    ) == ["weather"]
    counted = get(client, "/MultiDatastreams", **{"$count": "true", "$top": "1", "$skip": "1"})
    assert counted["@iot.count"] == 2 and names(counted) == ["mast pair"]
    assert get(client, "/MultiDatastreams", **{"$select": "id,unitOfMeasurements"})["value"][1] == {
        "@iot.id": world["mds2"],
        "unitOfMeasurements": UNITS[:2],
    }
    # $expand: ObservedProperties in order, the latest Observation, the Thing with its Locations
    body = get(
        client,
        f"/MultiDatastreams({world['mds']})",
        **{
            "$expand": "ObservedProperties($select=name),"
            "Observations($top=1;$orderby=phenomenonTime desc;$count=true),Thing/Locations",
        },
    )
    assert body["ObservedProperties"] == [
        {"name": "temperature"},
        {"name": "humidity"},
        {"name": "wind"},
    ]
    assert body["Observations@iot.count"] == 30
    assert body["Observations"][0]["result"] == [29.0, 79.0, "N"]
    assert "$skip=1" in unquote(body["Observations@iot.nextLink"])
    assert body["Thing"]["Locations"][0]["location"]["coordinates"] == [6.9, 50.9]
    # from Things, Sensors and ObservedProperties, and an Observation's MultiDatastream
    things = get(
        client,
        "/Things",
        **{"$expand": "MultiDatastreams($select=name)", "$filter": "name eq 'mast'"},
    )
    assert things["value"][0]["MultiDatastreams"] == [{"name": "mast pair"}]
    obs = get(
        client,
        f"/MultiDatastreams({world['mds2']})/Observations",
        **{"$expand": "MultiDatastream($select=id)"},
    )
    assert obs["value"][0]["MultiDatastream"] == {"@iot.id": world["mds2"]}
    # unknown names are a 400 naming them
    r = client.get(f"{V}/MultiDatastreams", params={"$filter": "unitOfMeasurement eq 1"})
    assert r.status_code == 400 and "unitOfMeasurement" in r.json()["message"]


def test_observation_table_keeps_its_row_layout(settings: Settings, world: dict[str, int]) -> None:
    """MultiDatastream observations are rows of ``observation`` under datastream_id -id: no
    column was added for them, so other observations cost what they did."""
    columns = scalar(
        settings,
        "select array_agg(attname::text order by attnum) from pg_attribute"
        " where attrelid = 'observation'::regclass and attnum > 0 and not attisdropped",
    )
    assert columns == [
        "datastream_id",
        "phenomenon_time",
        "result",
        "result_json",
        "result_time",
        "parameters",
        "foi_id",
    ]
    assert (
        scalar(settings, "select count(*) from observation where datastream_id = %s", -world["mds"])
        == 30
    )


# --------------------------------------------------------------------------- writes
def _weather(thing: dict[str, Any] | None = None) -> dict[str, Any]:
    """A MultiDatastream body: a new Thing (with a Location), a new Sensor, three
    ObservedProperties (a new one between two linked by id), two Observations."""
    return {
        "name": "roof station",
        "description": "temperature, humidity, wind",
        "multiObservationDataTypes": [MEASUREMENT, MEASUREMENT, CATEGORY],
        "unitOfMeasurements": UNITS,
        "Thing": thing
        or {
            "name": "Rathaus",
            "description": "town hall",
            "Locations": [
                {
                    "name": "Rathaus",
                    "description": "roof",
                    "encodingType": "application/geo+json",
                    "location": {"type": "Point", "coordinates": [6.95, 50.94]},
                }
            ],
        },
        "Sensor": {
            "name": "WS-200",
            "description": "weather station",
            "encodingType": "text/html",
            "metadata": "https://example.org/ws-200",
        },
        "ObservedProperties": [
            {"@iot.id": 1},
            {"name": "humidity", "definition": "https://example.org/rh", "description": "RH"},
            {"@iot.id": 2},
        ],
        "Observations": [
            {"phenomenonTime": "2026-11-01T08:00:00Z", "result": [4.5, 81, "SW"]},
            {"phenomenonTime": "2026-11-01T08:10:00Z", "result": [4.7, 80, "W"]},
        ],
    }


@pytest.fixture
def props(settings: Settings) -> None:
    """ObservedProperties 1 (temperature) and 2 (wind)."""
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        for name in ("temperature", "wind"):
            conn.execute(
                "insert into observed_property (name, definition) values (%s, %s)",
                (name, f"https://example.org/{name}"),
            )


def _rows(settings: Settings) -> tuple[int, ...]:
    tables = (
        "thing",
        "location",
        "sensor",
        "observed_property",
        "multi_datastream",
        "multi_datastream_observed_property",
        "observation",
    )
    return tuple(scalar(settings, f"select count(*) from {t}") for t in tables)


def test_deep_insert_and_observations(client: TestClient, settings: Settings, props: None) -> None:
    h = key(settings, "entities:write", "observations:write")
    assert client.post(f"{V}/MultiDatastreams", json=_weather()).status_code == 401
    r = client.post(f"{V}/MultiDatastreams", json=_weather(), headers=h)
    assert r.status_code == 201, r.text
    mds = r.json()
    m.MultiDatastream.model_validate(mds)
    assert r.headers["Location"] == mds["@iot.selfLink"]
    assert mds["phenomenonTime"] == "2026-11-01T08:00:00.000Z/2026-11-01T08:10:00.000Z"
    assert mds["observationType"].endswith("OM_ComplexObservation")
    mid = mds["@iot.id"]
    # the ObservedProperties in the body's order (linked, new, linked), and the Observations
    names = [
        p["name"] for p in get(client, f"/MultiDatastreams({mid})/ObservedProperties")["value"]
    ]
    assert names == ["temperature", "humidity", "wind"]
    obs = get(client, f"/MultiDatastreams({mid})/Observations")["value"]
    assert [o["result"] for o in obs] == [[4.5, 81, "SW"], [4.7, 80, "W"]]
    # the automatic FeatureOfInterest: its Thing's Location
    foi = get(client, path_of(obs[0]["@iot.selfLink"]) + "/FeatureOfInterest")
    assert foi["feature"] == {"type": "Point", "coordinates": [6.95, 50.94]}

    # POST an Observation by the body's link and by the path
    at = "2026-11-01T08:20:00Z"
    r = client.post(
        f"{V}/Observations",
        json={"MultiDatastream": {"@iot.id": mid}, "phenomenonTime": at, "result": [5, 79, "W"]},
        headers=h,
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["@iot.id"].startswith(f"-{mid}:")
    assert created["MultiDatastream@iot.navigationLink"] == mds["@iot.selfLink"]
    assert get(client, path_of(created["@iot.selfLink"])) == created
    r = client.post(
        f"{V}/MultiDatastreams({mid})/Observations",
        json={"phenomenonTime": "2026-11-01T08:30:00Z", "result": [5.2, 78, None]},
        headers=h,
    )
    assert r.status_code == 201, r.text
    # the same writer: the first stored wins, a second at that instant is a 409 naming it
    r = client.post(
        f"{V}/MultiDatastreams({mid})/Observations",
        json={"phenomenonTime": at, "result": [9, 9, "N"]},
        headers=h,
    )
    assert r.status_code == 409 and created["@iot.id"] in r.json()["message"]
    # a result of the wrong length, or not an array: 400 naming the mismatch, nothing stored
    before = _rows(settings)
    bad_bodies = [
        ([1, 2], "has 2 value(s), but MultiDatastream"),
        ([1, 2, 3, 4], "has 4 value(s)"),
        (7.5, "must be an array of 3 values"),
    ]
    for result, says in bad_bodies:
        for url, body in (
            (f"{V}/MultiDatastreams({mid})/Observations", {"result": result}),
            (f"{V}/Observations", {"MultiDatastream": {"@iot.id": mid}, "result": result}),
        ):
            r = client.post(url, json=body, headers=h)
            assert r.status_code == 400, (url, r.text)
            assert says in r.json()["message"] and "multiObservationDataTypes" in r.text
    both = {"Datastream": {"@iot.id": 1}, "MultiDatastream": {"@iot.id": mid}, "result": [1]}
    r = client.post(f"{V}/Observations", json=both, headers=h)
    assert r.status_code == 400 and "not to both" in r.json()["message"]
    r = client.post(
        f"{V}/Observations",
        json={"MultiDatastream": {"@iot.id": 999999}, "result": [1, 2, 3]},
        headers=h,
    )
    assert r.status_code == 400 and "no MultiDatastream with @iot.id 999999" in r.text
    r = client.post(f"{V}/MultiDatastreams(999999)/Observations", json={"result": [1]}, headers=h)
    assert r.status_code == 404
    assert _rows(settings) == before
    # the Thing and Sensor lead back to it
    thing = get(client, f"/MultiDatastreams({mid})/Thing")
    assert [
        x["@iot.id"] for x in get(client, f"/Things({thing['@iot.id']})/MultiDatastreams")["value"]
    ] == [mid]


def test_deep_insert_refusals_store_nothing(
    client: TestClient, settings: Settings, props: None
) -> None:
    h = key(settings, "entities:write", "observations:write")
    before = _rows(settings)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"unitOfMeasurements": UNITS[:2]}, "unitOfMeasurements has 2 entries"),
        ({"ObservedProperties": [{"@iot.id": 1}]}, "ObservedProperties has 1 entries"),
        ({"ObservedProperties": None}, "ObservedProperties must be an array"),
        ({"multiObservationDataTypes": []}, "multiObservationDataTypes must be a non-empty"),
        ({"observationType": MEASUREMENT}, "OM_ComplexObservation"),
        (
            {"Observations": [{"phenomenonTime": "2026-11-01T08:00:00Z", "result": [1, 2]}]},
            "Observations[0]/result has 2 value(s), but this MultiDatastream has 3",
        ),
        (
            {"ObservedProperties": [{"@iot.id": 1}, {"@iot.id": 999}, {"@iot.id": 2}]},
            "ObservedProperties[1]/@iot.id: there is no ObservedProperty with @iot.id 999",
        ),
        ({"Thing": None}, "Thing must be a JSON object"),
    ]
    for change, says in cases:
        body = {**_weather(), **change}
        r = client.post(f"{V}/MultiDatastreams", json=body, headers=h)
        assert r.status_code == 400, (change, r.text)
        assert says in r.json()["message"], (change, r.json())
    missing = {k: v for k, v in _weather().items() if k != "ObservedProperties"}
    r = client.post(f"{V}/MultiDatastreams", json=missing, headers=h)
    assert r.status_code == 400 and "ObservedProperties is required" in r.json()["message"]
    # Observations in the body need the observations scope
    only_entities = key(settings, "entities:write")
    assert (
        client.post(f"{V}/MultiDatastreams", json=_weather(), headers=only_entities).status_code
        == 403
    )
    assert _rows(settings) == before


def test_thing_with_multi_datastreams_patch_and_delete(
    client: TestClient, settings: Settings, props: None
) -> None:
    h = key(settings, "entities:write", "observations:write")
    inner = {k: v for k, v in _weather().items() if k != "Thing"}
    r = client.post(
        f"{V}/Things",
        json={"name": "Mast", "description": "wind mast", "MultiDatastreams": [inner]},
        headers=h,
    )
    assert r.status_code == 201, r.text
    thing = r.json()
    (mds,) = get(client, path_of(thing["MultiDatastreams@iot.navigationLink"]))["value"]
    mid = mds["@iot.id"]
    # POST through the Thing's navigation
    r = client.post(
        f"{V}/Things({thing['@iot.id']})/MultiDatastreams",
        json={
            **inner,
            "name": "second",
            "ObservedProperties": [{"@iot.id": 1}, {"@iot.id": 3}, {"@iot.id": 2}],
            "Observations": [],
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    second = r.json()["@iot.id"]

    # PATCH: name and the arrays, which must keep one entry per ObservedProperty
    r = client.patch(f"{V}/MultiDatastreams({mid})", json={"name": "renamed"}, headers=h)
    assert r.status_code == 200 and r.json()["name"] == "renamed"
    r = client.patch(
        f"{V}/MultiDatastreams({mid})", json={"unitOfMeasurements": UNITS[:2]}, headers=h
    )
    assert r.status_code == 400
    assert "3 ObservedProperties, 2 unitOfMeasurements" in r.json()["message"]
    assert get(client, f"/MultiDatastreams({mid})")["unitOfMeasurements"] == UNITS
    units = [UNITS[0], UNITS[1], {"name": "degree", "symbol": "°", "definition": None}]
    r = client.patch(f"{V}/MultiDatastreams({mid})", json={"unitOfMeasurements": units}, headers=h)
    assert r.status_code == 200 and r.json()["unitOfMeasurements"] == units
    r = client.patch(
        f"{V}/MultiDatastreams({mid})", json={"Sensor": {"@iot.id": 999999}}, headers=h
    )
    assert r.status_code == 400
    # PATCH an Observation's result: still one value per ObservedProperty
    oid = get(client, f"/MultiDatastreams({mid})/Observations")["value"][0]["@iot.id"]
    r = client.patch(f"{V}/Observations('{oid}')", json={"result": [1, 2]}, headers=h)
    assert r.status_code == 400 and "has 2 value(s)" in r.json()["message"]
    r = client.patch(f"{V}/Observations('{oid}')", json={"result": [1, 2, "E"]}, headers=h)
    assert r.status_code == 200 and r.json()["result"] == [1, 2, "E"]

    # DELETE a MultiDatastream: its observations go with it (they have no foreign key)
    assert client.delete(f"{V}/MultiDatastreams({mid})").status_code == 401
    assert client.delete(f"{V}/MultiDatastreams({mid})", headers=h).status_code == 200
    assert client.get(f"{V}/MultiDatastreams({mid})").status_code == 404
    assert scalar(settings, "select count(*) from observation where datastream_id = %s", -mid) == 0
    assert (
        scalar(settings, "select count(*) from observation_latest where datastream_id = %s", -mid)
        == 0
    )
    # a Thing's DELETE takes its MultiDatastreams; the ObservedProperties stay
    assert client.delete(f"{V}/Things({thing['@iot.id']})", headers=h).status_code == 200
    assert client.get(f"{V}/MultiDatastreams({second})").status_code == 404
    assert scalar(settings, "select count(*) from multi_datastream") == 0
    assert scalar(settings, "select count(*) from observation where datastream_id < 0") == 0
    assert scalar(settings, "select count(*) from observed_property") == 3


def test_deleting_an_observed_property_or_sensor_takes_its_multi_datastreams(
    client: TestClient, settings: Settings, world: dict[str, int]
) -> None:
    h = key(settings, "entities:write")
    r = client.delete(f"{V}/ObservedProperties({world['wind']})", headers=h)
    assert r.status_code == 200, r.text
    assert [x["name"] for x in get(client, "/MultiDatastreams")["value"]] == ["mast pair"]
    assert (
        scalar(settings, "select count(*) from observation where datastream_id = %s", -world["mds"])
        == 0
    )
    assert client.delete(f"{V}/Sensors({world['sensor']})", headers=h).status_code == 200
    assert get(client, "/MultiDatastreams")["value"] == []
    assert scalar(settings, "select count(*) from observation where datastream_id < 0") == 0
    # privacy erase or any other path that deletes a MultiDatastream's row: the trigger
    assert scalar(settings, "select count(*) from observation") == 1
