"""SensorThings over MQTT (OGC 18-088 A.7 create, A.8 receive updates) against the real
Mosquitto and PostgreSQL: paho subscribers on the standard's topics and ``$select`` topics get
every new entity, whichever way it arrived (MQTT ingest, REST POST, CreateObservations,
``$batch``, archive import, create over MQTT), as the REST API returns it; observations of
personal networks are not published; Observations published by clients are stored, bad ones
kept as rejects with their reason. Plus the pure parts (topics, subscriptions from the broker's
log, the commit notices)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from quartier.api.app import create_app
from quartier.config import Settings, parse_mqtt_url
from quartier.ingest.model import Batch, Observation, Position, Reading, Uplink, WriteResult
from quartier.ingest.mqtt import Ingester
from quartier.ingest.writer import BatchWriter
from quartier.sta_mqtt import notice as nt
from quartier.sta_mqtt import topics as tp
from quartier.sta_mqtt.service import StaMqtt
from quartier.store import api_keys

DATA = Path(__file__).parent / "data"
pytestmark_services = pytest.mark.services
T0 = datetime(2026, 11, 1, tzinfo=UTC)
V = "v1.1"


def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met within timeout")


# ------------------------------------------------------------------------------ pure parts
def test_select_topics_project_the_body_as_the_rest_api_names_it() -> None:
    body = {
        "@iot.id": "1:5",
        "@iot.selfLink": "http://x/v1.1/Observations('1:5')",
        "phenomenonTime": "2026-11-01T00:00:00.000Z",
        "result": 3.5,
        "Datastream@iot.navigationLink": "http://x/v1.1/Datastreams(1)",
    }
    path, fields = tp.split_select(f"{V}/Datastreams(1)/Observations?$select=result,id,Datastream")
    assert path == f"{V}/Datastreams(1)/Observations"
    assert tp.select(body, fields or ()) == {
        "result": 3.5,
        "@iot.id": "1:5",
        "Datastream@iot.navigationLink": "http://x/v1.1/Datastreams(1)",
    }
    assert tp.split_select(f"{V}/Things") == (f"{V}/Things", None)


def test_subscriptions_follow_the_brokers_log() -> None:
    subs = tp.Subscriptions(ignore="me")
    log = tp.apply_log
    log(subs, tp.LOG_NOTICE, b"1: New client connected from 1.2.3.4:5 as a (p5, c1, k60).")
    log(subs, tp.LOG_SUBSCRIBE, b"1: a 1 v1.1/Datastreams(1)/Observations?$select=result")
    log(subs, tp.LOG_SUBSCRIBE, b"1: a 1 v1.1/+/Observations")
    log(subs, tp.LOG_SUBSCRIBE, b"1: me 1 v1.1/Observations")  # the publisher's own
    log(subs, tp.LOG_SUBSCRIBE, b"1: a 1 quartier/v1/+/+/up")  # not SensorThings
    log(subs, tp.LOG_NOTICE, b"1: New client connected from 1.2.3.4:6 as b (p5, c0, k60).")
    log(subs, tp.LOG_SUBSCRIBE, b"1: b 1 v1.1/Things(7)")
    full, selects = subs.wanted(f"{V}/Datastreams(1)/Observations")
    assert full  # the wildcard
    assert selects == ((f"{V}/Datastreams(1)/Observations?$select=result", ("result",)),)
    assert not subs.wanted(f"{V}/Observations")[0]
    assert subs.wanted(f"{V}/Things(7)")[0]
    log(subs, tp.LOG_UNSUBSCRIBE, b"1: a v1.1/+/Observations")
    assert subs.wanted(f"{V}/Datastreams(1)/Observations") == (False, selects)
    # a clean session's subscriptions end with it; a persistent one's stay
    log(subs, tp.LOG_NOTICE, b"1: Client a disconnected.")
    log(subs, tp.LOG_NOTICE, b"1: Client b closed its connection.")
    assert subs.filters() == [f"{V}/Things(7)"]
    assert not subs.any_wanted([f"{V}/Datastreams(1)/Observations"])


def test_create_topics() -> None:
    assert tp.create_target(f"{V}/Observations") == (None, None)
    assert tp.create_target(f"{V}/Datastreams(12)/Observations") == (12, None)
    assert tp.create_target(f"{V}/MultiDatastreams(3)/Observations") == (-3, None)
    for bad in (
        f"{V}/Things(1)/Observations",
        f"{V}/Datastreams/Observations",
        f"{V}/Datastreams(-3)/Observations",
        f"{V}/MultiDatastreams(-3)/Observations",
    ):
        assert tp.create_target(bad)[1] is not None
    # the body's link: none, or the topic's own; one on v1.1/Observations
    assert tp.create_owner(12, None, None) == (12, None)
    assert tp.create_owner(12, 12, None) == (12, None)
    assert tp.create_owner(-3, None, 3) == (-3, None)
    assert tp.create_owner(None, 12, None) == (12, None)
    assert tp.create_owner(None, None, 3) == (-3, None)
    for topic_id, ds, mds, named in (
        (12, 13, None, "the body names Datastream 13, the topic Datastream 12"),
        (12, None, 3, "the body names MultiDatastream 3, the topic Datastream 12"),
        (-3, 3, None, "the body names Datastream 3, the topic MultiDatastream 3"),
        (None, None, None, "Datastream is required"),
    ):
        owner, problem = tp.create_owner(topic_id, ds, mds)
        assert owner is None and problem is not None and named in problem, problem


def test_notices_round_trip_and_split_below_postgres_limit() -> None:
    batch = Batch(source="http")
    times = [T0 + timedelta(seconds=i) for i in range(20_000)]
    batch.uplinks.append(
        (Uplink("city", "d-1", [Reading("pm25", t, 1.0) for t in times]), "t", b"", T0)
    )
    batch.observations = [Observation(7, T0, 1.0), Observation(7, T0, 2.0)]
    n = nt.from_batch(batch, WriteResult(observations=20_001, not_stored=[1]))
    payloads = nt.encode(n)
    assert len(payloads) > 1 and all(len(p) <= nt.MAX_NOTICE for p in payloads)
    back = [nt.decode(p) for p in payloads]
    got = sorted(t for b in back for ts in b.readings.values() for t in ts)
    assert got == [(t - nt._EPOCH) // nt._US for t in times]
    assert [o for b in back for o in b.observations] == [(7, (T0 - nt._EPOCH) // nt._US)]
    assert {b.source for b in back} == {"http"} and back[0].entities


@pytestmark_services
def test_the_writer_announces_only_committed_batches(db_url: str) -> None:
    assert BatchWriter.after_commit is None  # off unless installed: the hot path skips it
    seen: list[tuple[str, int]] = []
    BatchWriter.after_commit = lambda w, b, r: seen.append((b.source, r.observations))
    try:
        w = BatchWriter(db_url, auto_register=True)
        batch = Batch()
        batch.uplinks.append((Uplink("city", "h-1", [Reading("pm25", T0, 1.0)]), "t", b"", T0))
        w.write(batch)
        assert seen == [("mqtt", 1)]
        w.begin()  # a held transaction ($batch change set): announced at its commit only

        def batch_at(day: int) -> Batch:
            b = Batch(source="http")
            t = T0 + timedelta(days=day)
            b.uplinks.append((Uplink("city", "h-1", [Reading("pm25", t, 2.0)]), "t", b"", t))
            return b

        def prepare(conn: psycopg.Connection[Any]) -> None:
            conn.execute("select 1")  # the transaction is open before the COPY's savepoint

        w.write(batch_at(1), prepare=prepare)
        assert len(seen) == 1
        w.end(commit=False)
        assert len(seen) == 1  # rolled back: nothing to announce
        w.begin()
        w.write(batch_at(2), prepare=prepare)
        w.write(batch_at(3))
        assert len(seen) == 1
        w.end(commit=True)
        assert seen == [("mqtt", 1), ("http", 1), ("http", 1)]
        w.close()
    finally:
        BatchWriter.after_commit = None


# ------------------------------------------------------------------------------ with servers


class Subscriber:
    """A paho client that keeps every message per topic (JSON bodies)."""

    def __init__(self, url: str) -> None:
        host, port, user, password, _ = parse_mqtt_url(url)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if user:
            self.client.username_pw_set(user, password)
        self.lock = threading.Lock()
        self.got: dict[str, list[dict[str, Any]]] = {}
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:  # raw creates (A.7) of other clients arrive too, some of them not JSON
            body = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            body = {"raw": bytes(msg.payload).decode("utf-8", "replace")}
        with self.lock:
            self.got.setdefault(msg.topic, []).append(body)

    def subscribe(self, sta: StaMqtt, *topics: str) -> None:
        self.client.subscribe([(t, 1) for t in topics])
        wait_for(lambda: all(t in sta.subs.filters() for t in topics))

    def on(
        self, topic: str, n: int = 1, timeout: float = 15.0, every: bool = False
    ) -> list[dict[str, Any]]:
        """The bodies of entities on ``topic`` (those with an @iot.id unless ``every``: not the
        raw bodies of creates, A.7, on the same topic) once there are ``n``."""

        def bodies() -> list[dict[str, Any]]:
            with self.lock:
                got = self.got.get(topic, [])
                return [b for b in got if every or "?$select=" in topic or "@iot.id" in b]

        wait_for(lambda: len(bodies()) >= n, timeout)
        return bodies()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def sta(settings: Settings) -> Iterator[StaMqtt]:
    """The notices installed in this process and ``quartier sta-mqtt`` running in a thread."""
    settings.api.base_url = "http://testserver"  # the TestClient's: the same selfLinks
    notifier = nt.install()
    service = StaMqtt(settings, client_id=f"sta-{uuid.uuid4().hex[:8]}", entity_interval=0.3)
    try:
        with running(service):
            yield service
    finally:
        nt.uninstall()
        assert notifier.failed == 0


@contextmanager
def running(service: StaMqtt) -> Iterator[StaMqtt]:
    """``service`` (``quartier sta-mqtt``) running in a thread until the block ends."""
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        assert service.ready.wait(15)
        yield service
    finally:
        service.stop_event.set()
        thread.join(15)
    assert not thread.is_alive()


@pytest.fixture
def sub(settings: Settings) -> Iterator[Subscriber]:
    s = Subscriber(settings.require_mqtt_url())
    yield s
    s.close()


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def bearer(settings: Settings) -> dict[str, str]:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        _, token = api_keys.create(
            conn, "sta-mqtt", ["entities:write", "observations:write"], created_by="test"
        )
    return {"Authorization": f"Bearer {token}"}


def rest(api: TestClient, link: str) -> dict[str, Any]:
    r = api.get(link[link.index("/v1.1") :])
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def publish(settings: Settings, msgs: list[tuple[str, bytes]]) -> None:
    host, port, *_ = parse_mqtt_url(settings.require_mqtt_url())
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    c.connect(host, port)
    c.loop_start()
    for info in [c.publish(t, p, qos=1) for t, p in msgs]:
        info.wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def reading(t: datetime, value: float, quantity: str = "pm25") -> bytes:
    return orjson.dumps({"time": t.isoformat(), "quantity": quantity, "value": value})


def datastream_of(settings: Settings, network: str, device: str) -> int:
    with psycopg.connect(settings.require_database_url()) as conn:
        row = conn.execute(
            "select dd.datastream_id from device d join device_datastream dd"
            " on dd.device_id = d.id where d.network = %s and d.device_key = %s",
            (network, device),
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def ingester(settings: Settings) -> Iterator[Ingester]:
    ing = Ingester(settings)
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    assert ing.connected.wait(10)
    time.sleep(0.2)
    yield ing
    ing.stop_event.set()
    thread.join(15)


@pytestmark_services
def test_mqtt_ingest_reaches_observation_topics_and_select_topics(
    settings: Settings, sta: StaMqtt, sub: Subscriber, ingester: Ingester, api: TestClient
) -> None:
    net = f"city{uuid.uuid4().hex[:6]}"
    sub.subscribe(sta, f"{V}/Observations")
    publish(settings, [(f"quartier/v1/{net}/air-1/up", reading(T0, 11.5))])
    first = sub.on(f"{V}/Observations")[0]
    assert first["result"] == 11.5 and first["phenomenonTime"] == "2026-11-01T00:00:00.000Z"
    assert first == rest(api, first["@iot.selfLink"])  # the REST API's body, selfLinks and all
    ds = datastream_of(settings, net, "air-1")
    own = f"{V}/Datastreams({ds})/Observations"
    sel = f"{own}?$select=result,phenomenonTime"
    sub.subscribe(sta, own, sel)
    publish(settings, [(f"quartier/v1/{net}/air-1/up", reading(T0 + timedelta(minutes=1), 12.0))])
    assert sub.on(own)[0]["result"] == 12.0
    assert sub.on(sel)[0] == {"result": 12.0, "phenomenonTime": "2026-11-01T00:01:00.000Z"}
    assert len(sub.on(f"{V}/Observations", 2)) == 2
    # a second reading at a stored time is not stored (first stored wins) and never published;
    # in a batch with new readings the stored one may be published again (at least once)
    publish(settings, [(f"quartier/v1/{net}/air-1/up", reading(T0, 99.0))])
    publish(settings, [(f"quartier/v1/{net}/air-1/up", reading(T0 + timedelta(minutes=2), 13.0))])
    wait_for(lambda: 13.0 in [b["result"] for b in sub.on(own)])
    assert set(b["result"] for b in sub.on(own)) <= {11.5, 12.0, 13.0}


@pytestmark_services
def test_personal_networks_observations_are_not_published(
    settings: Settings, sta: StaMqtt, sub: Subscriber, ingester: Ingester
) -> None:
    citizen = f"citizen-{uuid.uuid4().hex[:6]}"  # personal by the default patterns
    city = f"city{uuid.uuid4().hex[:6]}"
    sub.subscribe(sta, "v1.1/#")
    publish(settings, [(f"quartier/v1/{citizen}/balkon-1/up", reading(T0, 40.0))])
    wait_for(lambda: _count(settings, "select count(*) from observation") == 1)
    publish(settings, [(f"quartier/v1/{city}/air-1/up", reading(T0, 7.0))])
    published = sub.on(f"{V}/Observations")
    time.sleep(0.5)
    everything = [b for bodies in sub.got.values() for b in bodies]
    assert [b["result"] for b in published] == [7.0]
    assert not any(b.get("result") == 40.0 for b in everything)  # on no topic at all
    ds = datastream_of(settings, citizen, "balkon-1")
    assert f"{V}/Datastreams({ds})/Observations" not in sub.got


def _count(settings: Settings, query: str, *params: Any) -> int:
    with psycopg.connect(settings.require_database_url()) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


@pytestmark_services
def test_rest_writes_reach_entity_navigation_and_observation_topics(
    settings: Settings, sta: StaMqtt, sub: Subscriber, api: TestClient
) -> None:
    h = bearer(settings)
    sub.subscribe(sta, f"{V}/Things", f"{V}/Things?$select=name")
    thing = {
        "name": "Station Neumarkt",
        "description": "Luftmessstation",
        "Locations": [
            {
                "name": "Neumarkt",
                "description": "Neumarkt 1",
                "encodingType": "application/geo+json",
                "location": {"type": "Point", "coordinates": [6.946, 50.936]},
            }
        ],
    }
    r = api.post(f"/{V}/Things", json=thing, headers=h)
    assert r.status_code == 201, r.text
    created = sub.on(f"{V}/Things")[0]
    assert created == rest(api, r.headers["Location"])
    assert sub.on(f"{V}/Things?$select=name")[0] == {"name": "Station Neumarkt"}
    tid = created["@iot.id"]
    navigation = f"{V}/Things({tid})/Datastreams"
    sub.subscribe(sta, navigation, f"{V}/Things({tid})", f"{V}/Things({tid})/description")
    ds_body = {
        "name": "NO2",
        "description": "d",
        "observationType": "OM_Measurement",
        "unitOfMeasurement": {"name": "µg/m³", "symbol": "µg/m³"},
        "Thing": {"@iot.id": tid},
        "Sensor": {"name": "s", "description": "s", "encodingType": "text/html", "metadata": "m"},
        "ObservedProperty": {"name": "NO2", "definition": "urn:no2", "description": "no2"},
    }
    r = api.post(f"/{V}/Datastreams", json=ds_body, headers=h)
    assert r.status_code == 201, r.text
    ds = sub.on(navigation)[0]
    assert ds["name"] == "NO2" and ds == rest(api, r.headers["Location"])
    # an update: the entity and the changed property, nothing for the unchanged name
    r = api.patch(f"/{V}/Things({tid})", json={"description": "neu"}, headers=h)
    assert r.status_code == 200, r.text
    assert sub.on(f"{V}/Things({tid})")[0]["description"] == "neu"
    assert sub.on(f"{V}/Things({tid})/description", every=True) == [{"description": "neu"}]
    # Observations by POST, CreateObservations and a $batch change set
    own = f"{V}/Datastreams({ds['@iot.id']})/Observations"
    sub.subscribe(sta, own)
    post = {"phenomenonTime": T0.isoformat(), "result": 21.0}
    assert api.post(f"/{own}", json=post, headers=h).status_code == 201
    array = [
        {
            "Datastream": {"@iot.id": ds["@iot.id"]},
            "components": ["phenomenonTime", "result"],
            "dataArray": [[(T0 + timedelta(minutes=i)).isoformat(), 22.0 + i] for i in (1, 2)],
        }
    ]
    assert api.post(f"/{V}/CreateObservations", json=array, headers=h).status_code == 201
    batch = {
        "requests": [
            {
                "id": "o",
                "atomicityGroup": "g",
                "method": "post",
                "url": f"Datastreams({ds['@iot.id']})/Observations",
                "body": {"phenomenonTime": (T0 + timedelta(minutes=5)).isoformat(), "result": 30},
            }
        ]
    }
    r = api.post(f"/{V}/$batch", json=batch, headers=h)
    assert r.status_code == 200, r.text
    bodies = sub.on(own, 4)
    assert sorted(b["result"] for b in bodies) == [21.0, 23.0, 24.0, 30]
    for b in bodies:
        assert b == rest(api, b["@iot.selfLink"])
        assert b["FeatureOfInterest@iot.navigationLink"]  # the automatic FeatureOfInterest


@pytestmark_services
def test_archive_import_is_published_unless_its_network_is_personal(
    settings: Settings, sub: Subscriber
) -> None:
    from quartier.ingest.archive import import_sensor_community_csv

    csv = DATA / "air_quality" / "stuttgart_2019-12-31_sds011_sensor_553.csv"
    open_data = settings.model_copy(
        update={"privacy": settings.privacy.model_copy(update={"personal_networks": []})}
    )
    nt.install()
    service = StaMqtt(open_data, client_id=f"sta-{uuid.uuid4().hex[:8]}")
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        assert service.ready.wait(15)
        sub.subscribe(service, f"{V}/Observations")
        result = import_sensor_community_csv(open_data, [csv])
        stored = _count(settings, "select count(*) from observation")
        assert stored > 10
        assert len(sub.on(f"{V}/Observations", stored)) == stored
    finally:
        service.stop_event.set()
        thread.join(15)
        nt.uninstall()
    assert result.files == 1
    # with the default settings Sensor.Community is a personal network: nothing published
    before = len(sub.got.get(f"{V}/Observations", []))
    nt.install()
    service = StaMqtt(settings, client_id=f"sta-{uuid.uuid4().hex[:8]}")
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        assert service.ready.wait(15)
        sub.subscribe(service, f"{V}/+/Observations")
        with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
            conn.execute("delete from observation")
        import_sensor_community_csv(settings, [csv])
        assert _count(settings, "select count(*) from observation") == stored
        time.sleep(1.5)
        assert len(sub.got.get(f"{V}/Observations", [])) == before
        assert not any(t.startswith(f"{V}/Datastreams(") for t in sub.got)
    finally:
        service.stop_event.set()
        thread.join(15)
        nt.uninstall()


@pytestmark_services
def test_observations_published_by_clients_are_stored_and_bad_ones_rejected(
    settings: Settings, sta: StaMqtt, sub: Subscriber, api: TestClient
) -> None:
    w = BatchWriter(settings.require_database_url(), auto_register=True)
    batch = Batch()
    place = Position(50.9, 6.9)
    batch.uplinks.append((Uplink("city", "c-1", [Reading("pm25", T0, 5.0)], place), "t", b"", T0))
    w.write(batch)
    w.close()
    ds = datastream_of(settings, "city", "c-1")
    own = f"{V}/Datastreams({ds})/Observations"
    sub.subscribe(sta, own, f"{V}/Observations")
    t1, t2 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    good = [
        (own, orjson.dumps({"phenomenonTime": t1.isoformat(), "result": 6.5})),
        (
            f"{V}/Observations",
            orjson.dumps(
                {"phenomenonTime": t2.isoformat(), "result": 7, "Datastream": {"@iot.id": ds}}
            ),
        ),
    ]
    bad = [
        (own, b"{not json"),
        (own, orjson.dumps({"phenomenonTime": t1.isoformat(), "result": 1, "colour": "red"})),
        (f"{V}/Datastreams(999)/Observations", orjson.dumps({"result": 1})),
        (f"{V}/Things(1)/Observations", orjson.dumps({"result": 1})),
        (f"{V}/Observations", orjson.dumps({"result": 1})),  # no Datastream
    ]
    publish(settings, good + bad)
    wait_for(lambda: _count(settings, "select count(*) from ingest_reject") == len(bad))
    wait_for(lambda: _count(settings, "select count(*) from observation") == 3)
    with psycopg.connect(settings.require_database_url()) as conn:
        rows = conn.execute(
            "select topic, reason, detail, source from ingest_reject order by id"
        ).fetchall()
    reasons = {(r[0], r[1]) for r in rows}
    assert reasons == {
        (own, "invalid_json"),
        (own, "invalid_format"),
        (f"{V}/Datastreams(999)/Observations", "unknown_datastream"),
        (f"{V}/Things(1)/Observations", "invalid_topic"),
        (f"{V}/Observations", "invalid_format"),
    }
    assert any("colour" in r[2] for r in rows) and {r[3] for r in rows} == {"mqtt"}
    # the stored ones come back with their ids, as the REST API has them
    # (the fixture's reading, written just before the subscription, may come too)
    wait_for(lambda: {6.5, 7} <= {b["result"] for b in sub.on(own)})
    stored = [b for b in sub.on(own) if b["result"] != 5.0]
    assert sorted(b["result"] for b in stored) == [6.5, 7]
    for b in stored:
        assert b == rest(api, b["@iot.selfLink"])
    assert sta.created == 2 and sta.rejected == len(bad)


@pytestmark_services
def test_multi_datastream_observations_published_by_clients_are_stored(
    settings: Settings, sta: StaMqtt, sub: Subscriber, api: TestClient
) -> None:
    """A MultiDatastream's Observations created over MQTT (its topic, or v1.1/Observations with
    the link): array results stored and published as the REST API has them; a result of the
    wrong length and an unknown MultiDatastream are rejects with their reason."""
    h = bearer(settings)
    measurement = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
    nd = {"name": "x", "description": "d"}
    r = api.post(
        f"/{V}/Things",
        json={
            **nd,
            "MultiDatastreams": [
                {
                    **nd,
                    "multiObservationDataTypes": [measurement, measurement],
                    "unitOfMeasurements": [{"name": "degree Celsius"}, {"name": "percent"}],
                    "Sensor": {**nd, "encodingType": "e", "metadata": "m"},
                    "ObservedProperties": [
                        {**nd, "definition": "https://example.org/t"},
                        {**nd, "definition": "https://example.org/h"},
                    ],
                }
            ],
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    thing = r.json()["@iot.id"]
    mds = api.get(f"/{V}/Things({thing})/MultiDatastreams").json()["value"][0]["@iot.id"]
    own = f"{V}/MultiDatastreams({mds})/Observations"
    sub.subscribe(sta, own)
    t1, t2 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    good = [
        (own, orjson.dumps({"phenomenonTime": t1.isoformat(), "result": [4.5, 81]})),
        (
            f"{V}/Observations",
            orjson.dumps(
                {
                    "phenomenonTime": t2.isoformat(),
                    "result": [5, 80],
                    "MultiDatastream": {"@iot.id": mds},
                }
            ),
        ),
    ]
    bad = [
        (own, orjson.dumps({"phenomenonTime": t1.isoformat(), "result": [1]})),
        (f"{V}/MultiDatastreams({mds + 99})/Observations", orjson.dumps({"result": [1, 2]})),
        (own, orjson.dumps({"result": [1, 2], "Datastream": {"@iot.id": 1}})),
    ]
    publish(settings, good + bad)
    wait_for(lambda: _count(settings, "select count(*) from ingest_reject") == len(bad))
    wait_for(lambda: _count(settings, "select count(*) from observation") == 2)
    with psycopg.connect(settings.require_database_url()) as conn:
        got = conn.execute("select reason, detail from ingest_reject order by id").fetchall()
    reasons = sorted(r[0] for r in got)
    assert reasons == ["invalid_format", "invalid_format", "unknown_datastream"], got
    assert any("has 1 value(s)" in r[1] for r in got), got
    assert any("the topic MultiDatastream" in r[1] for r in got), got
    published = sub.on(own, 2)
    assert sorted(b["result"] for b in published) == [[4.5, 81], [5, 80]]
    for b in published:
        assert b == rest(api, b["@iot.selfLink"])


# ------------------------------------------------------------------------------ accounts
@pytestmark_services
def test_accounts_publisher_readers_and_writers_on_a_broker_with_access_control(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With accounts on: the publisher learns a reader's subscription and publishes to it; a
    writer creates an Observation; a reader can neither create nor read the broker's log."""
    import os
    import shutil
    import tempfile
    from urllib.parse import quote

    from typer.testing import CliRunner

    from quartier.cli.main import app
    from quartier.services import LocalServices

    state_dir = Path(tempfile.mkdtemp(prefix="quartier-sta-auth-"))
    os.chmod(state_dir, 0o755)
    local = LocalServices(state_dir, fast_unsafe=True, allow_anonymous=False)
    try:
        state = local.up()
        assert state.mqtt_admin_url
        monkeypatch.setenv("QUARTIER_MQTT__ADMIN_URL", state.mqtt_admin_url)
        _, port, *_ = parse_mqtt_url(state.mqtt_url)
        urls = {}
        for kind in ("publisher", "reader", "writer"):
            out = CliRunner().invoke(app, ["devices", "add-sta", kind, "t1"])
            assert out.exit_code == 0, out.output
            lines = dict(x.split(":", 1) for x in out.stdout.splitlines() if ":" in x)
            user, password = lines["username"].strip(), lines["password"].strip()
            assert user == f"sta-{kind}/t1"
            urls[kind] = f"mqtt://{quote(user, safe='')}:{password}@127.0.0.1:{port}"
        bad = CliRunner().invoke(app, ["devices", "add-sta", "admin", "x"])
        assert bad.exit_code != 0 and "publisher, reader, writer" in bad.output

        w = BatchWriter(db_url, auto_register=True)
        batch = Batch()
        batch.uplinks.append((Uplink("city", "a-1", [Reading("pm25", T0, 5.0)]), "t", b"", T0))
        w.write(batch)
        w.close()
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database={"url": db_url},
            mqtt={"url": state.mqtt_url},
            sta={"mqtt_publish": True, "mqtt_url": urls["publisher"]},
        )
        nt.install()
        service = StaMqtt(settings)  # its client id is its account's name: sta-publisher/t1

        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        reader = Subscriber(urls["reader"])
        try:
            assert service.ready.wait(15)
            own = f"{V}/Datastreams(1)/Observations"
            reader.client.subscribe([(own, 1), (tp.LOG_SUBSCRIBE, 1)])
            wait_for(lambda: own in service.subs.filters())
            assert service.subs.filters() == [own]  # not the publisher's own (for creates)
            # the reader's create is refused by the broker (not stored, not rejected)
            info = reader.client.publish(own, orjson.dumps({"result": 1.0}), qos=1)
            info.wait_for_publish(10)
            # the writer's create is stored and comes back to the reader
            t1 = (T0 + timedelta(minutes=1)).isoformat()
            writer = Subscriber(urls["writer"])
            writer.client.publish(own, orjson.dumps({"phenomenonTime": t1, "result": 6.0}), qos=1)
            stored = reader.on(own)
            assert [b["result"] for b in stored] == [6.0]
            writer.close()
            time.sleep(0.5)
            assert _count(settings, "select count(*) from observation") == 2
            assert _count(settings, "select count(*) from ingest_reject") == 0
            assert tp.LOG_SUBSCRIBE not in reader.got  # the log is the publisher's only
        finally:
            reader.close()
            service.stop_event.set()
            thread.join(15)
            nt.uninstall()
    finally:
        local.down()
        shutil.rmtree(state_dir, ignore_errors=True)


def test_sta_mqtt_command_says_when_publishing_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from quartier.cli.main import app

    monkeypatch.setenv("QUARTIER_STA__MQTT_PUBLISH", "false")
    out = CliRunner().invoke(app, ["sta-mqtt"])
    assert out.exit_code == 1
    assert "QUARTIER_STA__MQTT_PUBLISH=true" in out.output and "Traceback" not in out.output
    assert BatchWriter.after_commit is None  # the CLI installs the notices only when on
