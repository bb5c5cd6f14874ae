"""SensorThings API read conformance, against a real database filled through the store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from quartier.api import models as m
from quartier.api.app import create_app
from quartier.config import Settings
from quartier.ingest.model import Batch, Position, Reading, Uplink
from quartier.ingest.writer import BatchWriter

pytestmark = pytest.mark.services
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def filled(settings: Settings) -> Settings:
    """Two things: a-1 with pm25 (25 readings, one per minute) and pm10 (1), b-1 with no2 (3)."""
    w = BatchWriter(settings.require_database_url(), auto_register=True)
    batch = Batch()
    batch.uplinks.append(
        (
            Uplink(
                "net",
                "a-1",
                [Reading("pm25", T0 + timedelta(minutes=i), float(i)) for i in range(25)]
                + [Reading("pm10", T0, 7.0)],
                Position(50.9, 6.9),
            ),
            "t",
            b"",
            T0,
        )
    )
    batch.uplinks.append(
        (
            Uplink(
                "net",
                "b-1",
                [Reading("no2", T0 + timedelta(hours=i), 30.0 + i) for i in range(3)],
                Position(50.95, 7.0),
            ),
            "t",
            b"",
            T0,
        )
    )
    w.write(batch)
    w.close()
    return settings


@pytest.fixture
def client(filled: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(filled)) as c:
        yield c


def test_things_and_navigation(client: TestClient) -> None:
    body = m.ThingCollection.model_validate(client.get("/v1.1/Things?$count=true").json())
    assert body.count == 2
    assert [t.name for t in body.value] == ["net/a-1", "net/b-1"]
    thing = body.value[0]
    assert thing.self_link.endswith(f"/v1.1/Things({thing.id})")
    ds = m.DatastreamCollection.model_validate(client.get(thing.datastreams_link).json())
    assert sorted(d.unit_of_measurement.symbol or "" for d in ds.value) == ["µg/m³", "µg/m³"]
    locs = m.LocationCollection.model_validate(client.get(thing.locations_link).json())
    assert locs.value[0].location == {"type": "Point", "coordinates": [6.9, 50.9]}


def test_datastream_phenomenon_time_and_observations_paging(client: TestClient) -> None:
    streams = m.DatastreamCollection.model_validate(client.get("/v1.1/Datastreams").json())
    pm25 = next(d for d in streams.value if d.name.endswith("PM2.5"))
    assert pm25.phenomenon_time == "2026-11-01T00:00:00.000Z/2026-11-01T00:24:00.000Z"
    url = pm25.observations_link + "?$top=10&$count=true"
    seen: list[float] = []
    pages = 0
    while url:
        page = m.ObservationCollection.model_validate(client.get(url).json())
        if pages == 0:
            assert page.count == 25
        seen += [o.result for o in page.value]
        url = page.next_link  # type: ignore[assignment]
        pages += 1
    assert pages == 3
    assert seen == [float(i) for i in range(25)]


def test_orderby_desc_and_top(client: TestClient) -> None:
    streams = m.DatastreamCollection.model_validate(client.get("/v1.1/Datastreams").json())
    no2 = next(d for d in streams.value if "dioxide" in d.name)
    body = client.get(
        no2.observations_link, params={"$orderby": "phenomenonTime desc", "$top": "2"}
    ).json()
    obs = m.ObservationCollection.model_validate(body)
    assert [o.phenomenon_time for o in obs.value] == [
        "2026-11-01T02:00:00.000Z",
        "2026-11-01T01:00:00.000Z",
    ]
    assert obs.next_link is not None and "%24skiptoken=" in obs.next_link
    rest = m.ObservationCollection.model_validate(client.get(obs.next_link).json())
    assert [o.phenomenon_time for o in rest.value] == ["2026-11-01T00:00:00.000Z"]
    assert rest.next_link is None


@pytest.mark.parametrize(
    ("path", "status", "needle"),
    [
        ("/v1.1/Datastreams(999999)/Observations", 404, "no Datastream with @iot.id 999999"),
        ("/v1.1/Things(424242)", 404, "no Thing"),
        ("/v1.1/Datastreams(1)/Observations?$orderby=nosuch", 400, "no property 'nosuch'"),
        ("/v1.1/Things?$top=-1", 400, "$top"),
        ("/v1.1/Things?$filter=name eq", 400, "$filter: unexpected end"),
        ("/v1.1/Things?$search=x", 501, "$search"),
        ("/v1.1/Datastreams(abc)", 400, "entity_id"),
        ("/v1.1/Nothing", 404, "no resource"),
    ],
)
def test_errors_say_what_was_wrong(client: TestClient, path: str, status: int, needle: str) -> None:
    r = client.get(path)
    assert r.status_code == status
    body = r.json()
    assert needle in body["message"]
    assert "Traceback" not in r.text


def test_health_reports_database_and_broker(client: TestClient) -> None:
    r = client.get("/health")
    body = m.Health.model_validate(r.json())
    assert r.status_code == 200, body
    assert body.database.ok and body.mqtt.ok


def test_health_degraded_when_broker_unreachable(filled: Settings) -> None:
    from quartier.services import free_port

    broken = filled.model_copy(
        update={"mqtt": filled.mqtt.model_copy(update={"url": f"mqtt://127.0.0.1:{free_port()}"})}
    )
    with TestClient(create_app(broken)) as c:
        r = c.get("/health")
    assert r.status_code == 503
    assert not m.Health.model_validate(r.json()).mqtt.ok


def test_observation_self_link_resolves_by_its_derived_id(client: TestClient) -> None:
    streams = m.DatastreamCollection.model_validate(client.get("/v1.1/Datastreams").json())
    pm25 = next(d for d in streams.value if d.name.endswith("PM2.5"))
    page = m.ObservationCollection.model_validate(
        client.get(pm25.observations_link, params={"$top": "3"}).json()
    )
    third = page.value[2]
    assert third.id == f"{pm25.id}:{int((T0 + timedelta(minutes=2)).timestamp()) * 1_000_000}"
    again = m.Observation.model_validate(client.get(third.self_link).json())
    assert again == third
    missing = client.get(f"/v1.1/Observations('{pm25.id}:1')")
    assert missing.status_code == 404 and "no Observation" in missing.json()["message"]
    bad = client.get("/v1.1/Observations('abc')")
    assert bad.status_code == 400 and "microseconds since 1970" in bad.json()["message"]
