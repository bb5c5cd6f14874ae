"""The request shapes real SensorThings clients send, recorded from their source as fixtures in
``tests/data/sta_clients/`` (QGIS's SensorThings provider, Grafana's SensorThings data source)
and replayed against a real database: each answers 200 with the shape the client reads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from quartier.api.app import create_app
from quartier.config import Settings
from quartier.ingest.model import Batch, Position, Reading, Uplink
from quartier.ingest.writer import BatchWriter

pytestmark = pytest.mark.services
T0 = datetime(2026, 11, 1, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "data" / "sta_clients"
CASES = [
    (f.stem, request)
    for f in sorted(FIXTURES.glob("*.json"))
    for request in json.loads(f.read_text(encoding="utf-8"))["requests"]
]


def _uplink(device: str, readings: list[Reading], where: Position) -> Any:
    return (Uplink("net", device, readings, where), "t", b"", T0)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """a-1 (pm25 0…24 a minute, pm10), b-1 (no2, hourly), c-1 (pm25, four) and one
    FeatureOfInterest."""
    import psycopg

    url = settings.require_database_url()
    w = BatchWriter(url, auto_register=True)
    batch = Batch()
    batch.uplinks.append(
        _uplink(
            "a-1",
            [Reading("pm25", T0 + timedelta(minutes=i), float(i)) for i in range(25)]
            + [Reading("pm10", T0, 7.0)],
            Position(50.9, 6.9),
        )
    )
    batch.uplinks.append(
        _uplink(
            "b-1",
            [Reading("no2", T0 + timedelta(hours=i), 30.0 + i) for i in range(3)],
            Position(50.95, 7.0),
        )
    )
    batch.uplinks.append(
        _uplink(
            "c-1",
            [Reading("pm25", T0 + timedelta(minutes=i), 100.0 + i) for i in range(4)],
            Position(51.0, 7.1),
        )
    )
    w.write(batch)
    w.close()
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into feature_of_interest (name, feature)"
            " values ('b-1 site', ST_SetSRID(ST_MakePoint(7.0, 50.95), 4326))"
        )
    with TestClient(create_app(settings)) as c:
        yield c


def _check_expanded(entities: list[Any], chain: list[str], latest: bool) -> int:
    """Every entity carries the first navigation of ``chain`` expanded, recursively; returns how
    many entities the last level held."""
    if not chain:
        return len(entities)
    nav, rest = chain[0], chain[1:]
    found = 0
    for e in entities:
        assert nav in e, (nav, sorted(e))
        inner = e[nav] if isinstance(e[nav], list) else [e[nav]]
        if latest and nav == "Observations":
            assert len(inner) <= 1
        found += _check_expanded(inner, rest, latest)
    return found


@pytest.mark.parametrize(("client_name", "case"), CASES, ids=[c[1]["name"] for c in CASES])
def test_client_request_shape(client: TestClient, client_name: str, case: dict[str, Any]) -> None:
    r = client.get(case["url"])
    assert r.status_code == case.get("expect_status", 200), (client_name, r.text)
    body = r.json()
    x = case.get("expect", {})
    if x.get("root"):
        assert {e["name"] for e in body["value"]} >= {"Things", "Datastreams", "Observations"}
        assert body["serverSettings"]["conformance"]
        return
    assert isinstance(body["value"], list)
    if "count" in x:
        assert body["@iot.count"] == x["count"]
    if x.get("empty"):
        assert body["value"] == []
    if "items" in x:
        assert len(body["value"]) == x["items"]
    for item in body["value"]:
        for key in x.get("item_keys", []):
            assert key in item, (key, item)
        if "geometry" in x:
            geometry = item[x["geometry"]]
            assert geometry["type"] == "Point" and len(geometry["coordinates"]) == 2
    if x.get("no_next"):
        assert "@iot.nextLink" not in body
    if x.get("next"):
        assert "@iot.nextLink" in body
    if "expanded" in x:
        assert _check_expanded(body["value"], x["expanded"], x.get("latest_observations", False))
    if "sorted_desc" in x:
        times = [v[x["sorted_desc"]] for v in body["value"]]
        assert times == sorted(times, reverse=True)
    if "follow_total" in x:  # QGIS: the nextLink is opaque and followed as it is
        values, page = list(body["value"]), body
        while "@iot.nextLink" in page:
            page = client.get(page["@iot.nextLink"]).json()
            values += page["value"]
        assert len({v["@iot.id"] for v in values}) == x["follow_total"] == len(values)
    if "graft_total" in x:  # Grafana: the nextLink's query grafted onto the panel's path
        path = case["url"].split("?")[0]
        values, page = list(body["value"]), body
        while page.get("@iot.nextLink"):
            page = client.get(f"{path}?{urlsplit(page['@iot.nextLink']).query}").json()
            values += page["value"]
        assert len(values) == x["graft_total"]
        assert len({v["phenomenonTime"] for v in values}) == len(values)
