"""Sensor.Community firmware pushing over HTTP, and the archive CSV import."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from quartier.config import Settings

pytestmark = pytest.mark.services
AIR = Path(__file__).parent / "data" / "air_quality"

PUSH = {
    "esp8266id": "15005826",
    "software_version": "NRZ-2020-129",
    "sensordatavalues": [
        {"value_type": "SDS_P1", "value": "11.37"},
        {"value_type": "SDS_P2", "value": "6.20"},
        {"value_type": "BME280_temperature", "value": "4.25"},
        {"value_type": "BME280_pressure", "value": "101325.00"},
        {"value_type": "samples", "value": "664560"},
    ],
}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    from quartier.api.app import create_app

    with TestClient(create_app(settings)) as c:
        yield c


def rows(url: str, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_push_is_stored_and_a_bad_push_refused_with_reason(client: TestClient, db_url: str):
    r = client.post(
        "/ingest/sensor-community",
        content=orjson.dumps(PUSH),
        headers={"X-Sensor": "esp8266-15005826", "X-PIN": "1"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["device"] == "esp8266-15005826"
    stored = dict(
        rows(
            db_url,
            "select dd.quantity, o.result from observation o join "
            "device_datastream dd on dd.datastream_id = o.datastream_id",
        )
    )
    assert stored == {"pm10": 11.37, "pm25": 6.2, "temperature": 4.25, "pressure": 1013.25}

    bad = client.post(
        "/ingest/sensor-community", content=b"{oops", headers={"X-Sensor": "esp8266-15005826"}
    )
    assert bad.status_code == 400
    assert "invalid_json" in bad.json()["message"]
    assert rows(db_url, "select source, reason, payload from ingest_reject") == [
        ("http", "invalid_json", b"{oops")
    ]


def test_archive_csv_import_is_idempotent(settings: Settings, db_url: str) -> None:
    from quartier.ingest.archive import import_sensor_community_csv

    path = AIR / "stuttgart_2019-12-31_sds011_sensor_553.csv"
    first = import_sensor_community_csv(settings, [path])
    again = import_sensor_community_csv(settings, [path])
    assert (first.stored, again.stored, again.duplicates) == (456, 0, 456)
    peak = rows(
        db_url,
        "select max(o.result) from observation o join device_datastream dd "
        "on dd.datastream_id = o.datastream_id where dd.quantity = 'pm10'",
    )
    assert peak == [(577.67,)]
