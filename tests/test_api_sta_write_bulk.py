"""SensorThings CreateObservations (OGC 18-088, 14.2) for MultiDatastreams (A.5), against a real
database: dataArrays whose results are arrays go through the same bulk path as a Datastream's
(the ingest writer's COPY), each row answered with its selfLink or ``"error"`` (a result of the
wrong length, a time the MultiDatastream has already), Datastreams and MultiDatastreams mixed in
one body."""

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
MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
ND = {"name": "x", "description": "d"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """Thing ``net/a-1`` (id 1) with Datastream 1 (pm25, one reading at T0)."""
    one_reading(settings)
    with TestClient(create_app(settings)) as c:
        yield c


def make_mds(client: TestClient, settings: Settings) -> int:
    """A MultiDatastream of Thing 1: temperature and humidity (a result is two numbers)."""
    body = {
        **ND,
        "multiObservationDataTypes": [MEASUREMENT, MEASUREMENT],
        "unitOfMeasurements": [{"name": "degree Celsius"}, {"name": "percent"}],
        "Thing": {"@iot.id": 1},
        "Sensor": {**ND, "encodingType": "e", "metadata": "m"},
        "ObservedProperties": [
            {**ND, "definition": "https://example.org/t"},
            {**ND, "definition": "https://example.org/h"},
        ],
    }
    r = client.post(f"{V}/MultiDatastreams", json=body, headers=key(settings, "entities:write"))
    assert r.status_code == 201, r.text
    return int(r.json()["@iot.id"])


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def test_create_observations_of_a_multi_datastream_through_the_bulk_path(
    client: TestClient, settings: Settings
) -> None:
    mds = make_mds(client, settings)
    h = key(settings, "observations:write")
    body: list[dict[str, Any]] = [
        {
            "MultiDatastream": {"@iot.id": mds},
            "components": ["phenomenonTime", "result", "parameters"],
            "dataArray@iot.count": 4,
            "dataArray": [
                [at(1), [20.5, 61], {"q": 1}],
                [at(2), [20.75, 60], None],
                [at(3), [21], None],  # one value short: this row only is refused
                [at(2), [99, 99], None],  # the time of an earlier row: the first is kept
            ],
        },
        {"Datastream": {"@iot.id": 1}, "components": ["phenomenonTime", "result"],
         "dataArray": [[at(1), 6.0]]},
    ]  # fmt: skip
    r = client.post(f"{V}/CreateObservations", json=body, headers=h)
    assert r.status_code == 201, r.text
    links = r.json()
    assert len(links) == 5
    assert links[2] == "error" and links[3] == "error", links
    assert "2 value(s)" not in r.headers["X-Quartier-Errors"]
    assert "has 1 value(s)" in r.headers["X-Quartier-Errors"], r.headers
    first = client.get(links[0][links[0].index(V) :])
    assert first.status_code == 200, first.text
    assert first.json()["result"] == [20.5, 61]
    assert first.json()["parameters"] == {"q": 1}
    assert first.json()["MultiDatastream@iot.navigationLink"].endswith(f"/MultiDatastreams({mds})")
    listed = client.get(f"{V}/MultiDatastreams({mds})/Observations?$orderby=phenomenonTime")
    assert [o["result"] for o in listed.json()["value"]] == [[20.5, 61], [20.75, 60]]
    assert [o["@iot.selfLink"] for o in listed.json()["value"]] == links[:2]
    # the Datastream's row of the same body is stored too
    assert links[4] != "error"
    assert scalar(settings, "select count(*) from observation where datastream_id = 1") == 2
    # the automatic FeatureOfInterest: the Thing's Location, as for a single POST
    foi = client.get(f"{links[0][links[0].index(V) :]}/FeatureOfInterest").json()
    assert foi["feature"] == {"type": "Point", "coordinates": [6.9, 50.9]}
    # again: every row exists already, nothing changes
    r = client.post(f"{V}/CreateObservations", json=body[:1], headers=h)
    assert r.json() == ["error"] * 4
    assert "MultiDatastream" in r.headers["X-Quartier-Errors"]
    assert scalar(settings, "select count(*) from observation where datastream_id = %s", -mds) == 2


def test_create_observations_refuses_an_unknown_multi_datastream_and_stores_nothing(
    client: TestClient, settings: Settings
) -> None:
    mds = make_mds(client, settings)
    h = key(settings, "observations:write")
    before = scalar(settings, "select count(*) from observation")
    good = {"MultiDatastream": {"@iot.id": mds}, "components": ["phenomenonTime", "result"],
            "dataArray": [[at(1), [1, 2]]]}  # fmt: skip
    for body, named in [
        ([good, {**good, "MultiDatastream": {"@iot.id": mds + 99}}], "[1]/MultiDatastream/@iot.id"),
        ([{**good, "Datastream": {"@iot.id": 1}}], "not to both"),
        ([{**good, "MultiDatastream": {"@iot.id": "x"}}], "[0]/MultiDatastream/@iot.id"),
    ]:
        r = client.post(f"{V}/CreateObservations", json=body, headers=h)
        assert r.status_code == 400, r.text
        assert named in r.json()["message"], r.text
    assert scalar(settings, "select count(*) from observation") == before
    assert client.post(f"{V}/CreateObservations", json=[good]).status_code == 401
    assert scalar(settings, "select count(*) from observation") == before


def test_the_fast_rows_of_a_multi_datastream_equal_the_clear_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A MultiDatastream's dataArray rows (array results) through the fast row parser give what
    the full Observation parser gives, for valid, invalid and odd rows."""
    import random

    from quartier.api.sta import body as b

    rnd = random.Random(42)
    now = datetime(2026, 11, 28, tzinfo=UTC)
    times = ["2026-11-01T00:00:00Z", "2026-11-01T01:00:00+01:00", "2026-11-01T00:00:00", "x",
             "2026-11-28T00:05:01Z", None, 5, "2026-11-01T00:00:00Z/2026-11-02"]  # fmt: skip
    results = [[1, 2], [1.5, "N"], [], [float("nan"), 1], [[1], None], 3, 1.5, "t", None, {"a": 1}]
    for components in (["phenomenonTime", "result"], ["result", "resultTime"], ["result"]):
        rows = []
        for _ in range(300):
            row: Any = [
                rnd.choice(results) if c == "result" else rnd.choice(times) for c in components
            ]
            if rnd.random() < 0.05:
                row = row[:-1] if rnd.random() < 0.5 else "row"
            rows.append(row)
        raw = [{"MultiDatastream": {"@iot.id": 3}, "components": components, "dataArray": rows}]
        fast = b.create_observations(raw, now, 300)
        with monkeypatch.context() as mp:
            mp.setattr(b, "_fast_rows", lambda *_: None)
            clear = b.create_observations(raw, now, 300)
        assert fast[0].multi and fast[0].stored_id == -3
        for f, c in zip(fast[0].rows, clear[0].rows, strict=True):
            if isinstance(c, Exception):
                assert isinstance(f, Exception) and str(f) == str(c)
            else:
                assert f == c
