"""Sensor.Community firmware pushing over HTTP (authenticated per device with HTTP Basic against
``device_credential``), and the archive CSV import."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from quartier.config import Settings
from quartier.store import credentials

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
    """The API as deployed: devices must authenticate (no open registration)."""
    from quartier.api.app import create_app

    closed = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"http_allow_unknown_devices": False})}
    )
    with TestClient(create_app(closed)) as c:
        yield c


def rows(url: str, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


DEVICE = "esp8266-15005826"
PASSWORD = "s3cret-for-the-test"


@pytest.fixture
def device(db_url: str) -> tuple[str, str]:
    """The pushing device's credentials, as `quartier devices add` stores them (the broker side
    is tested in tests/test_mqtt_auth.py)."""
    with psycopg.connect(db_url) as conn:
        credentials.add(
            conn, f"sensor.community/{DEVICE}", "sensor.community", DEVICE, "device", PASSWORD
        )
    return DEVICE, PASSWORD


def push(client: TestClient, auth: Any, device: str = DEVICE) -> Any:
    chip = device.rsplit("-", 1)[1]
    return client.post(
        "/ingest/sensor-community",
        content=orjson.dumps({**PUSH, "esp8266id": chip}),
        headers={"X-Sensor": device},
        auth=auth,
    )


def stored_count(url: str) -> tuple[int, int]:
    """(observations, rejects)"""
    (o,), (r,) = rows(
        url, "select count(*) from observation union all select count(*) from ingest_reject"
    )
    return o, r


def test_push_is_stored_and_a_bad_push_refused_with_reason(
    client: TestClient, db_url: str, device: tuple[str, str]
) -> None:
    r = client.post(
        "/ingest/sensor-community",
        content=orjson.dumps(PUSH),
        headers={"X-Sensor": "esp8266-15005826", "X-PIN": "1"},  # X-PIN is not a secret: unread
        auth=device,
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
        "/ingest/sensor-community",
        content=b"{oops",
        headers={"X-Sensor": "esp8266-15005826"},
        auth=device,
    )
    assert bad.status_code == 400
    assert "invalid_json" in bad.json()["message"]
    assert rows(db_url, "select source, reason, payload from ingest_reject") == [
        ("http", "invalid_json", b"{oops")
    ]


def test_a_push_without_valid_credentials_is_refused_and_nothing_stored(
    client: TestClient, db_url: str, device: tuple[str, str]
) -> None:
    for auth in (None, (DEVICE, "wrong"), ("esp8266-999", PASSWORD)):
        r = push(client, auth)
        assert r.status_code == 401, r.text
        assert r.headers["WWW-Authenticate"].startswith("Basic")
        assert "Traceback" not in r.text
    # the full account name works as the user too
    assert push(client, (f"sensor.community/{DEVICE}", PASSWORD)).status_code == 201
    assert stored_count(db_url) == (4, 0)


def test_a_device_cannot_push_as_another(
    client: TestClient, db_url: str, device: tuple[str, str]
) -> None:
    r = push(client, device, device="esp8266-4242")
    assert r.status_code == 403, r.text
    assert "do not cover" in r.json()["message"]
    assert stored_count(db_url) == (0, 0)


def test_a_revoked_device_is_refused(
    client: TestClient, db_url: str, device: tuple[str, str]
) -> None:
    assert push(client, device).status_code == 201
    with psycopg.connect(db_url) as conn:
        credentials.revoke(conn, f"sensor.community/{DEVICE}")
    r = push(client, device)
    assert r.status_code == 401 and "revoked" in r.json()["message"]
    with psycopg.connect(db_url) as conn:  # a new password lets it in again, the old one not
        credentials.set_password(conn, f"sensor.community/{DEVICE}", "new-one")
    assert push(client, device).status_code == 401
    assert push(client, (DEVICE, "new-one")).status_code == 201


def test_open_registration_admits_unknown_devices_only(
    settings: Settings, db_url: str, device: tuple[str, str]
) -> None:
    from quartier.api.app import create_app

    assert settings.ingest.http_allow_unknown_devices  # as the fixture sets it
    with TestClient(create_app(settings)) as c:
        assert push(c, None, device="esp8266-777").status_code == 201  # unknown: registers
        assert push(c, None).status_code == 401  # has credentials: must use them
        assert push(c, device).status_code == 201
    assert stored_count(db_url) == (8, 0)


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
