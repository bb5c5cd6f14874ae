"""FROST's own Python client (PyPI ``frost_sta_client``) against ``quartier serve`` as a real server
process, used as its users use it (issue #13 item 7, docs/sensorthings.md "Clients"): deep insert,
observations one by one and as a dataArray, queries with ``$filter``, ``$expand``, ``$orderby``
and paging through the client's iterators (which follow ``@iot.nextLink``), PATCH, PUT, DELETE,
and every entity type created and read back by id, Observations included."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import frost_sta_client as fsc
import psycopg
import pytest
import requests
from dbs import clone, drop
from frost_sta_client.model.ext.data_array_document import DataArrayDocument

from quartier.services import free_port
from quartier.store import api_keys

pytestmark = [
    pytest.mark.services,
    # the client's own use of a deprecated furl property, not ours
    pytest.mark.filterwarnings("ignore:furl.pathstr is deprecated:DeprecationWarning"),
]
T0 = datetime(2026, 11, 1, tzinfo=UTC)


class BearerAuth(fsc.AuthHandler):  # type: ignore[misc]
    """The client's auth hook: ``add_auth_header`` returns what ``requests`` takes as ``auth=``;
    the stock handler sends HTTP Basic, this one Quartier's ``Authorization: Bearer``."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def add_auth_header(self) -> Any:
        def auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
            request.headers["Authorization"] = f"Bearer {self.token}"
            return request

        return auth


@pytest.fixture(scope="module")
def db(service_urls: Any, template_db: str) -> Iterator[str]:
    """One migrated database for the module (one server process serves every test; each test
    makes its own entities)."""
    url = clone(service_urls.database_url, template_db, "quartier_frost")
    yield url
    drop(service_urls.database_url, url)


@pytest.fixture(scope="module")
def server(db: str, service_urls: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``quartier serve`` on a free port, as its own process; the base URL of ``/v1.1``."""
    port = free_port()
    env = dict(os.environ)
    env["QUARTIER_DATABASE__URL"] = db
    env["QUARTIER_MQTT__URL"] = service_urls.mqtt_url
    env["QUARTIER_API__RATE_PER_SECOND"] = "10000"
    env["QUARTIER_API__RATE_BURST"] = "10000"
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "quartier.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/v1.1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if requests.get(base, timeout=10).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"quartier serve did not answer:\n{log.read_text()}"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # no answer of the server was a 5xx (issue #13: zero 5xx in the external-client tests)
        assert '" 5' not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def token(db: str) -> str:
    with psycopg.connect(db, autocommit=True) as conn:
        _, tok = api_keys.create(
            conn, "frost", ["entities:write", "observations:write"], created_by="test"
        )
    return tok


@pytest.fixture
def service(server: str, token: str) -> fsc.SensorThingsService:
    return fsc.SensorThingsService(server, auth_handler=BearerAuth(token))


def deep_thing(name: str) -> fsc.Thing:
    """A Thing with its Location and two Datastreams, each with a Sensor and an
    ObservedProperty, all new: one POST."""
    loc = fsc.Location(
        name=f"{name} location",
        description="Ecke Venloer Straße",
        encoding_type="application/geo+json",
        location={"type": "Point", "coordinates": [6.93, 50.95]},
    )
    streams = []
    for prop, unit in (("PM2.5", "µg/m³"), ("Temperature", "°C")):
        streams.append(
            fsc.Datastream(
                name=f"{name} {prop}",
                description=f"{prop} at {name}",
                observation_type="http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                unit_of_measurement=fsc.UnitOfMeasurement(
                    name=unit, symbol=unit, definition=f"http://unitsofmeasure.org/{unit}"
                ),
                sensor=fsc.Sensor(
                    name=f"{name} {prop} sensor",
                    description="SDS011",
                    encoding_type="application/pdf",
                    metadata="https://example.org/sds011.pdf",
                ),
                observed_property=fsc.ObservedProperty(
                    name=prop,
                    definition=f"https://example.org/def/{prop.lower()}/{name}",
                    description=prop,
                ),
            )
        )
    return fsc.Thing(
        name=name,
        description=f"station {name}",
        properties={"owner": "Stadt Köln", "height": 3},
        locations=[loc],
        datastreams=streams,
    )


def answer(error: requests.HTTPError) -> requests.Response:
    """The server's answer to a request the client raised for."""
    assert error.response is not None
    return error.response


def ids(entities: Any) -> list[Any]:
    return [e.id for e in entities]


def test_deep_insert_and_read_back(service: fsc.SensorThingsService) -> None:
    """One POST makes the Thing, its Location, two Datastreams with their Sensors and
    ObservedProperties; each is found again by id and by navigation."""
    thing = deep_thing("k-1")
    service.create(thing)
    assert isinstance(thing.id, int)

    back = service.things().find(thing.id)
    assert back.name == "k-1" and back.description == "station k-1"
    assert back.properties == {"owner": "Stadt Köln", "height": 3}

    [loc] = list(back.get_locations().query().list())
    assert loc.name == "k-1 location"
    assert loc.location["coordinates"] == [6.93, 50.95]
    assert service.locations().find(loc.id).name == "k-1 location"

    streams = {d.name: d for d in back.get_datastreams().query().list()}
    assert set(streams) == {"k-1 PM2.5", "k-1 Temperature"}
    for name, d in streams.items():
        assert service.datastreams().find(d.id).unit_of_measurement.symbol in ("µg/m³", "°C")
        [full] = list(
            service.datastreams()
            .query()
            .filter(f"id eq {d.id}")
            .expand("Sensor,ObservedProperty,Thing")
            .list()
        )
        assert full.name == name and full.thing.id == thing.id
        sensor = service.sensors().find(full.sensor.id)
        assert (
            sensor.name == f"{name} sensor" and sensor.metadata == "https://example.org/sds011.pdf"
        )
        prop = service.observed_properties().find(full.observed_property.id)
        assert prop.name == name.split(" ", 1)[1]

    # the automatic HistoricalLocation of a Thing created with its Location
    [hist] = list(back.get_historical_locations().query().list())
    # the HistoricalLocation the server made when the Thing was created at its Location
    [hist] = list(
        service.historical_locations()
        .query()
        .filter(f"Thing/id eq {thing.id}")
        .expand("Locations")
        .list()
    )
    assert service.historical_locations().find(hist.id).id == hist.id
    assert [x.id for x in hist.locations] == [loc.id]


def test_observations_created_read_back_queried_and_paged(
    service: fsc.SensorThingsService,
) -> None:
    thing = deep_thing("k-2")
    service.create(thing)
    pm = next(
        d
        for d in service.things().find(thing.id).get_datastreams().query().list()
        if "PM" in d.name
    )

    made = []
    for i in range(25):
        o = fsc.Observation(
            result=float(i), phenomenon_time=T0 + timedelta(minutes=i), datastream=pm
        )
        service.create(o)
        made.append(o)
    assert all(o.id is not None for o in made)
    assert len(set(ids(made))) == 25

    # every one read back by the id the client got from the Location header
    for i, o in enumerate(made):
        back = service.observations().find(o.id)
        assert back.id == o.id and back.result == float(i)
        assert back.phenomenon_time.startswith("2026-11-01T00:")

    # an Observation linked by a bare id, and its automatic FeatureOfInterest
    lone = fsc.Observation(
        result=99.0, phenomenon_time=T0 + timedelta(hours=1), datastream=fsc.Datastream(id=pm.id)
    )
    service.create(lone)
    [with_foi] = list(
        service.observations()
        .query()
        .filter(f"id eq '{lone.id}'")
        .expand("FeatureOfInterest")
        .list()
    )
    foi = with_foi.feature_of_interest
    assert foi is not None and foi.id is not None
    assert service.features_of_interest().find(foi.id).feature["type"] == "Point"

    # $filter, $orderby, $top and paging: the client's iterator follows @iot.nextLink
    q = (
        pm.get_observations()
        .query()
        .filter("result ge 10 and result lt 20")
        .orderby("phenomenonTime", "desc")
        .top(3)
    )
    page = q.list()
    assert len(page.entities) == 3 and page.next_link
    assert [o.result for o in page] == [19.0 - i for i in range(10)]

    counted = (
        service.observations().query().filter(f"Datastream/id eq {pm.id}").count().top(5).list()
    )
    assert counted.count == 26
    assert len(list(counted)) == 26

    # $expand with options, and $select
    [t] = list(
        service.things()
        .query()
        .filter(f"id eq {thing.id}")
        .expand("Datastreams($orderby=name asc;$expand=Observations($top=2;$orderby=result desc))")
        .list()
    )
    streams = list(t.datastreams)
    assert [d.name for d in streams] == ["k-2 PM2.5", "k-2 Temperature"]
    assert [o.result for o in streams[0].observations.entities] == [99.0, 24.0]

    names = list(
        service.datastreams().query().select("name", "id").filter("startswith(name, 'k-2')").list()
    )
    assert sorted(d.name for d in names) == ["k-2 PM2.5", "k-2 Temperature"]


def test_update_patch_and_delete(service: fsc.SensorThingsService) -> None:
    thing = deep_thing("k-3")
    service.create(thing)

    # PUT of the whole entity as the client holds it
    back = service.things().find(thing.id)
    back.description = "umgezogen"
    service.update(back)
    assert service.things().find(thing.id).description == "umgezogen"

    # JSON PATCH (RFC 6902), as the client sends it
    service.patch(back, [{"op": "replace", "path": "/name", "value": "k-3b"}])
    assert service.things().find(thing.id).name == "k-3b"

    pm = next(d for d in back.get_datastreams().query().list() if "PM" in d.name)
    o = fsc.Observation(result=1.0, phenomenon_time=T0, datastream=fsc.Datastream(id=pm.id))
    service.create(o)
    found = service.observations().find(o.id)
    assert found.result == 1.0
    service.patch(found, [{"op": "replace", "path": "/result", "value": 2.5}])
    assert service.observations().find(o.id).result == 2.5
    service.delete(found)
    with pytest.raises(requests.HTTPError) as gone:
        service.observations().find(o.id)
    assert answer(gone.value).status_code == 404

    service.delete(back)
    with pytest.raises(requests.HTTPError):
        service.things().find(thing.id)
    with pytest.raises(requests.HTTPError):
        service.datastreams().find(pm.id)  # the standard's cascade


def test_create_observations_as_data_array(service: fsc.SensorThingsService) -> None:
    thing = deep_thing("k-4")
    service.create(thing)
    pm, temp = sorted(
        service.things().find(thing.id).get_datastreams().query().list(), key=lambda d: d.name
    )
    doc = DataArrayDocument()
    for ds, base in ((pm, 0.0), (temp, 100.0)):
        dav = fsc.DataArrayValue()
        dav.datastream = ds
        dav.components = {
            fsc.DataArrayValue.Property.PHENOMENON_TIME,
            fsc.DataArrayValue.Property.RESULT,
        }
        for i in range(50):
            dav.add_observation(
                fsc.Observation(phenomenon_time=T0 + timedelta(seconds=i), result=base + i)
            )
        doc.add_data_array_value(dav)
    created = service.observations().create(doc)
    assert len(created) == 100
    first = created[0].self_link
    got = [service.observations().find(fsc.utils.extract_value(o.self_link)) for o in created[:3]]
    assert [o.result for o in got] == [0.0, 1.0, 2.0], first
    assert service.datastreams().find(temp.id).get_observations().query().count().list().count == 50


def test_every_entity_type_created_alone_and_read_back_by_id(
    service: fsc.SensorThingsService,
) -> None:
    """Each entity set by its own POST, linked to the others by id, as scripts build up a
    network step by step; each found again by the id the client took from the Location."""
    loc = fsc.Location(
        name="Neumarkt",
        description="Platz",
        encoding_type="application/geo+json",
        location={"type": "Point", "coordinates": [6.948, 50.936]},
    )
    service.create(loc)
    thing = fsc.Thing(name="k-5", description="alone", locations=[fsc.Location(id=loc.id)])
    service.create(thing)
    sensor = fsc.Sensor(
        name="SHT31", description="T/RH", encoding_type="text/html", metadata="https://x.org"
    )
    service.create(sensor)
    prop = fsc.ObservedProperty(
        name="Luftfeuchte", definition="https://example.org/def/rh-k5", description="RH"
    )
    service.create(prop)
    ds = fsc.Datastream(
        name="k-5 RH",
        description="relative humidity",
        observation_type="http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
        unit_of_measurement=fsc.UnitOfMeasurement(name="percent", symbol="%", definition="x"),
        thing=fsc.Thing(id=thing.id),
        sensor=fsc.Sensor(id=sensor.id),
        observed_property=fsc.ObservedProperty(id=prop.id),
    )
    service.create(ds)
    foi = fsc.FeatureOfInterest(
        name="Neumarkt Nord",
        description="north side",
        encoding_type="application/geo+json",
        feature={"type": "Point", "coordinates": [6.948, 50.937]},
    )
    service.create(foi)
    obs = fsc.Observation(
        result=55.0,
        phenomenon_time=T0,
        datastream=fsc.Datastream(id=ds.id),
        feature_of_interest=fsc.FeatureOfInterest(id=foi.id),
    )
    service.create(obs)

    assert service.locations().find(loc.id).name == "Neumarkt"
    assert service.things().find(thing.id).name == "k-5"
    assert service.sensors().find(sensor.id).name == "SHT31"
    assert service.observed_properties().find(prop.id).name == "Luftfeuchte"
    assert service.datastreams().find(ds.id).name == "k-5 RH"
    [got_ds] = list(
        service.datastreams().query().filter(f"id eq {ds.id}").expand("Thing,Sensor").list()
    )
    assert got_ds.thing.id == thing.id and got_ds.sensor.id == sensor.id
    assert service.features_of_interest().find(foi.id).name == "Neumarkt Nord"
    assert service.observations().find(obs.id).result == 55.0
    [got] = list(
        service.observations()
        .query()
        .filter(f"id eq '{obs.id}'")
        .expand("FeatureOfInterest")
        .list()
    )
    assert got.feature_of_interest.id == foi.id
    # the HistoricalLocation the server made when the Thing was created at its Location
    [hist] = list(
        service.historical_locations()
        .query()
        .filter(f"Thing/id eq {thing.id}")
        .expand("Locations")
        .list()
    )
    assert service.historical_locations().find(hist.id).id == hist.id
    assert [x.id for x in hist.locations] == [loc.id]


def test_observation_ids_stay_and_one_instant_holds_one_observation(
    service: fsc.SensorThingsService, server: str, token: str
) -> None:
    """docs/sensorthings.md "Observation ids": an id is derived from (Datastream,
    phenomenonTime), so it never changes: a PATCH of phenomenonTime to another instant is a 400
    that changes nothing, the same instant is accepted; a second Observation of a Datastream at
    an instant that has one is a 409 naming the stored one."""
    thing = deep_thing("k-6")
    service.create(thing)
    pm = next(
        d
        for d in service.things().find(thing.id).get_datastreams().query().list()
        if "PM" in d.name
    )
    first = fsc.Observation(result=7.0, phenomenon_time=T0, datastream=fsc.Datastream(id=pm.id))
    service.create(first)
    url = f"{server}/Observations('{first.id}')"
    auth = {"Authorization": f"Bearer {token}"}

    moved = requests.patch(
        url,
        json={"phenomenonTime": (T0 + timedelta(hours=1)).isoformat()},
        headers=auth,
        timeout=30,
    )
    assert moved.status_code == 400, moved.text
    assert "phenomenonTime" in moved.json()["message"]
    same = requests.patch(
        url,
        json={"phenomenonTime": "2026-11-01T00:00:00Z", "result": 8.0},
        headers=auth,
        timeout=30,
    )
    assert same.status_code == 200, same.text
    assert same.json()["@iot.id"] == first.id
    back = service.observations().find(first.id)
    assert back.result == 8.0 and back.phenomenon_time.startswith("2026-11-01T00:00:00")

    twin = fsc.Observation(result=9.0, phenomenon_time=T0, datastream=fsc.Datastream(id=pm.id))
    with pytest.raises(requests.HTTPError) as refused:
        service.create(twin)
    assert answer(refused.value).status_code == 409
    assert first.id in answer(refused.value).json()["message"]
    assert service.observations().find(first.id).result == 8.0
    assert pm.get_observations().query().count().list().count == 1


def test_client_shapes_that_are_refused_say_why(
    service: fsc.SensorThingsService, server: str, token: str
) -> None:
    """A PUT whose @iot.id is another entity's, and a JSON Patch below a property, are 400s
    with the reason; nothing changes."""
    thing = deep_thing("k-7")
    service.create(thing)
    r = requests.put(
        f"{server}/Things({thing.id})",
        json={"@iot.id": thing.id + 1000, "name": "x", "description": "y"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 400 and "@iot.id" in r.json()["message"], r.text
    with pytest.raises(requests.HTTPError) as deep:
        service.patch(
            service.things().find(thing.id),
            [{"op": "add", "path": "/properties/owner", "value": "Land NRW"}],
        )
    assert answer(deep.value).status_code == 400
    assert "/properties/owner" in answer(deep.value).json()["message"]
    assert service.things().find(thing.id).properties == {"owner": "Stadt Köln", "height": 3}
    # the whole property, as the message says
    service.patch(
        service.things().find(thing.id),
        [{"op": "replace", "path": "/properties", "value": {"owner": "Land NRW"}}],
    )
    assert service.things().find(thing.id).properties == {"owner": "Land NRW"}


def test_select_filter_and_orderby_on_members_of_json_properties(
    service: fsc.SensorThingsService, server: str
) -> None:
    """``$select=properties/owner`` and ``result/temperature`` (nested as in the body, left out
    where the value has no such member), and ``$filter``/``$orderby`` on them."""
    for name, owner, height in (
        ("k-8a", "Amt 67", 5),
        ("k-8b", "Amt 67", 2),
        ("k-8c", "RheinEnergie", 9),
    ):
        t = deep_thing(name)
        t.properties = {"owner": owner, "height": height, "tags": ["a", "b"]}
        service.create(t)
    picked = list(
        service.things()
        .query()
        .select("name", "properties/owner", "properties/none")
        .filter("properties/owner eq 'Amt 67' and startswith(name, 'k-8')")
        .orderby("properties/height", "asc")
        .list()
    )
    assert [(t.name, t.properties) for t in picked] == [
        ("k-8b", {"owner": "Amt 67"}),
        ("k-8a", {"owner": "Amt 67"}),
    ]

    [thing] = list(service.things().query().filter("name eq 'k-8c'").list())
    pm = next(d for d in thing.get_datastreams().query().list() if "PM" in d.name)
    for i, result in enumerate(({"temperature": 3.5, "rh": 40}, {"rh": 41}, {"temperature": -1.0})):
        o = fsc.Observation(
            result=result,
            phenomenon_time=T0 + timedelta(minutes=i),
            datastream=fsc.Datastream(id=pm.id),
        )
        service.create(o)
    body = requests.get(
        f"{server}/Datastreams({pm.id})/Observations",
        params={
            "$select": "phenomenonTime,result/temperature",
            "$filter": "result/temperature lt 10",
            "$orderby": "result/temperature desc",
        },
        timeout=30,
    ).json()
    assert [o.get("result") for o in body["value"]] == [{"temperature": 3.5}, {"temperature": -1.0}]
    everything = requests.get(
        f"{server}/Datastreams({pm.id})/Observations",
        params={"$select": "result/rh", "$orderby": "phenomenonTime"},
        timeout=30,
    ).json()
    assert everything["value"] == [{"result": {"rh": 40}}, {"result": {"rh": 41}}, {}]
    arrays = requests.get(
        f"{server}/Datastreams({pm.id})/Observations",
        params={"$select": "result/rh", "$resultFormat": "dataArray", "$orderby": "phenomenonTime"},
        timeout=30,
    ).json()
    assert arrays["value"][0]["components"] == ["result/rh"]
    assert arrays["value"][0]["dataArray"] == [[40], [41], [None]]


def test_feature_of_interest_navigation_reads_the_partial_index(db: str) -> None:
    """Migration 0041: ``FeaturesOfInterest(id)/Observations`` is an ordered range of the partial
    index on ``foi_id``, not a scan of every observation filtered by it."""
    with psycopg.connect(db, autocommit=True) as conn:
        foi = conn.execute(
            "insert into feature_of_interest (name, feature) values"
            " ('plan', st_setsrid(st_makepoint(6.9, 50.9), 4326)) returning id"
        ).fetchone()
        ds = conn.execute(
            "with t as (insert into thing (name) values ('plan') returning id),"
            " s as (insert into sensor (name) values ('plan') returning id),"
            " p as (insert into observed_property (name, definition)"
            " values ('plan', 'https://example.org/def/plan') returning id)"
            " insert into datastream (name, unit_of_measurement, thing_id, sensor_id,"
            " observed_property_id) select 'plan', '{}'::jsonb, t.id, s.id, p.id"
            " from t, s, p returning id"
        ).fetchone()
        assert foi is not None and ds is not None
        conn.execute(
            "insert into observation (datastream_id, phenomenon_time, result, foi_id)"
            " select %s, %s + g * interval '1 minute', g, case when g %% 10 = 0 then %s end"
            " from generate_series(1, 20000) g",
            (ds[0], T0, foi[0]),
        )
        conn.execute("analyze observation")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "explain select o.* from observation o join feature_of_interest _p"
                " on o.foi_id = _p.id where _p.id = %s"
                " order by o.datastream_id, o.phenomenon_time limit 101",
                (foi[0],),
            )
        )
    assert "foi_id_datastream_id_phenomenon_time_idx" in plan, plan
