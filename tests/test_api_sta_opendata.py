"""Open-data niceties of the SensorThings API (issue #13 item 8), against a real database: CORS
for reads, gzip, ETag with 304 on observation pages, ``$resultFormat=GeoJSON`` and ``CSV``."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from quartier.api.app import create_app
from quartier.config import Settings
from quartier.ingest.model import Batch, Position, Reading, Uplink
from quartier.ingest.writer import BatchWriter

pytestmark = pytest.mark.services
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _write(settings: Settings, device: str, readings: list[Reading], where: Position) -> None:
    w = BatchWriter(settings.require_database_url(), auto_register=True)
    batch = Batch()
    batch.uplinks.append((Uplink("net", device, readings, where), "t", b"", T0))
    w.write(batch)
    w.close()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """a-1 (pm25, 300 a minute) at 50.9/6.9, b-1 (no2, 3) at 50.95/7.0; a-1's Thing has a
    description a spreadsheet would run as a formula."""
    _write(
        settings,
        "a-1",
        [Reading("pm25", T0 + timedelta(minutes=i), float(i)) for i in range(300)],
        Position(50.9, 6.9),
    )
    _write(
        settings,
        "b-1",
        [Reading("no2", T0 + timedelta(hours=i), 30.0 + i) for i in range(3)],
        Position(50.95, 7.0),
    )
    with psycopg.connect(settings.require_database_url()) as conn:
        conn.execute("update thing set description = '=HYPERLINK(1)' where name = 'net/a-1'")
    with TestClient(create_app(settings)) as c:
        yield c


def test_cors_for_reads(client: TestClient) -> None:
    r = client.get("/v1.1/Things", headers={"Origin": "https://dashboard.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    pre = client.options(
        "/v1.1/Things",
        headers={"Origin": "https://x.example", "Access-Control-Request-Method": "GET"},
    )
    assert pre.status_code == 200 and "GET" in pre.headers["access-control-allow-methods"]
    refused = client.options(
        "/v1.1/Things",
        headers={"Origin": "https://x.example", "Access-Control-Request-Method": "DELETE"},
    )
    assert refused.status_code == 400  # writes are not opened to other origins


def test_gzip_for_large_bodies(client: TestClient) -> None:
    r = client.get(
        "/v1.1/Observations", params={"$top": "200"}, headers={"Accept-Encoding": "gzip"}
    )
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert len(r.json()["value"]) == 200
    small = client.get("/v1.1/Things(1)/name", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers


def test_etag_and_not_modified_on_observation_pages(client: TestClient, settings: Settings) -> None:
    path = "/v1.1/Datastreams(1)/Observations"
    params = {"$orderby": "phenomenonTime desc", "$top": "10"}
    first = client.get(path, params=params)
    tag = first.headers["etag"]
    assert first.status_code == 200 and tag.startswith('W/"')
    again = client.get(path, params=params, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.headers["etag"] == tag and again.content == b""
    assert client.get(path, params={**params, "$select": "result"}).headers["etag"] != tag
    # a new observation changes the newest page: the old tag no longer matches
    _write(settings, "a-1", [Reading("pm25", T0 + timedelta(days=1), 1.0)], Position(50.9, 6.9))
    changed = client.get(path, params=params, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert changed.json()["value"][0]["phenomenonTime"] == "2026-11-02T00:00:00.000Z"
    for other in ("/v1.1/Observations", "/v1.1/FeaturesOfInterest(1)/Observations"):
        r = client.get(other)
        assert r.status_code in (200, 404) and (r.status_code == 404 or "etag" in r.headers)


def test_geojson_for_locations_and_things(client: TestClient) -> None:
    r = client.get("/v1.1/Locations", params={"$resultFormat": "GeoJSON", "$count": "true"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
    body = r.json()
    assert body["type"] == "FeatureCollection" and body["@iot.count"] == 2
    coords = sorted(f["geometry"]["coordinates"] for f in body["features"])
    assert coords == [[6.9, 50.9], [7.0, 50.95]]
    assert all("location" not in f["properties"] for f in body["features"])
    things = client.get(
        "/v1.1/Things", params={"$resultFormat": "GeoJSON", "$select": "id,name", "$top": "1"}
    ).json()
    [feature] = things["features"]
    assert feature["geometry"]["type"] == "Point"
    assert feature["properties"]["name"] == "net/a-1" and "@iot.nextLink" in things
    r = client.get("/v1.1/Sensors", params={"$resultFormat": "GeoJSON"})
    assert r.status_code == 400 and "no geometry" in r.json()["message"]


def test_csv_result_format(client: TestClient) -> None:
    r = client.get("/v1.1/Things", params={"$resultFormat": "CSV", "$orderby": "name"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["name"] for row in rows] == ["net/a-1", "net/b-1"]
    assert rows[0]["description"] == "'=HYPERLINK(1)"  # inert in a spreadsheet
    obs = client.get(
        "/v1.1/Datastreams(1)/Observations",
        params={"$resultFormat": "CSV", "$select": "phenomenonTime,result", "$top": "2"},
    )
    lines = obs.text.splitlines()
    assert lines == [
        "phenomenonTime,result",
        "2026-11-01T00:00:00.000Z,0.0",
        "2026-11-01T00:01:00.000Z,1.0",
    ]
    assert obs.headers["link"].endswith('>; rel="next"')
    ds = client.get("/v1.1/Datastreams", params={"$resultFormat": "CSV", "$top": "1"})
    header = next(csv.reader(io.StringIO(ds.text)))
    assert "unitOfMeasurement/symbol" in header


def test_bad_result_format(client: TestClient) -> None:
    r = client.get("/v1.1/Things", params={"$resultFormat": "xml"})
    body: Any = r.json()
    assert r.status_code == 400 and "CSV" in body["message"]
