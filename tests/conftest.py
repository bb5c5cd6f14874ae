"""Session fixtures that start a real PostgreSQL (with PostGIS) and a real Mosquitto.

Set QUARTIER_TEST_DATABASE_URL and QUARTIER_TEST_MQTT_URL to use running servers instead (the
database user must be allowed to create databases). Each test that asks for ``db_url`` gets a
fresh database cloned from a migrated template, so tests never see each other's rows; each test
that asks for ``settings`` gets its own MQTT client id and network name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from dbs import clone, drop
from psycopg import sql

from quartier.config import Settings
from quartier.services import LocalServices
from quartier.store.migrate import migrate

# The tests' brokers run with the development override (no accounts): every LocalServices the
# tests start without saying otherwise, and every `quartier …` they run, sees it. The access
# control itself is tested with brokers that have it on (tests/test_mqtt_auth.py).
os.environ.setdefault("QUARTIER_SERVICES__MQTT_ALLOW_ANONYMOUS", "true")


@dataclass(frozen=True)
class ServiceUrls:
    database_url: str
    mqtt_url: str


@pytest.fixture(scope="session")
def service_urls() -> Iterator[ServiceUrls]:
    db = os.environ.get("QUARTIER_TEST_DATABASE_URL")
    mqtt = os.environ.get("QUARTIER_TEST_MQTT_URL")
    if db and mqtt:
        yield ServiceUrls(db, mqtt)
        return
    state_dir = Path(tempfile.mkdtemp(prefix="quartier-test-"))
    os.chmod(state_dir, 0o755)  # the postgres and mosquitto users must reach it
    local = LocalServices(state_dir, fast_unsafe=True, allow_anonymous=True)
    try:
        state = local.up()
        yield ServiceUrls(db or state.database_url, mqtt or state.mqtt_url)
    finally:
        local.down()
        shutil.rmtree(state_dir, ignore_errors=True)


def _with_db(url: str, name: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname=name)


@pytest.fixture(scope="session")
def template_db(service_urls: ServiceUrls) -> Iterator[str]:
    name = f"quartier_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(service_urls.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    migrate(_with_db(service_urls.database_url, name))
    yield name
    with psycopg.connect(service_urls.database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


@pytest.fixture
def db_url(service_urls: ServiceUrls, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test only."""
    url = clone(service_urls.database_url, template_db)
    yield url
    drop(service_urls.database_url, url)


@pytest.fixture
def settings(db_url: str, service_urls: ServiceUrls) -> Settings:
    """Settings for one test: its own database, its own MQTT client id and share group."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database={"url": db_url},
        mqtt={"url": service_urls.mqtt_url},
        ingest={
            "client_id": f"ingest-{tag}",
            "share_group": f"g{tag}",
            "batch_ms": 50,
            # HTTP pushes from devices without credentials, as before device accounts (the
            # development override's HTTP side; tests/test_ingest_http.py turns it off)
            "http_allow_unknown_devices": True,
        },
    )


@pytest.fixture
def network() -> str:
    """A device network name no other test uses, so topics never overlap."""
    return f"t{uuid.uuid4().hex[:8]}"


# The slowest modules first: pytest-xdist (`make test` runs it with --dist loadscope) hands out
# whole modules in collection order, so a slow module collected last would leave one worker
# running it alone at the end.
_SLOW_MODULES_FIRST = (
    "test_wheel.py",
    "test_faults.py",
    "test_mqtt_auth.py",
    "test_report.py",
    "test_hostile_api.py",
    "test_maps_browser.py",
    "test_bench_api.py",
    "test_bench_ingest_publisher.py",
    "test_maps_measured.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(_SLOW_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: keeps the rest
