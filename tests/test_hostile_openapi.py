"""schemathesis against the whole OpenAPI document of the API (issue #12 item 8), in process
(ASGI), on a real migrated database with sensors, observations and an indicator key.

Each operation gets a few generated requests (``QUARTIER_SCHEMATHESIS_EXAMPLES``, default 1;
schemathesis also sends its own hostile variants), without a key and with a key holding every
scope. The property paths (``Things(1)/name``, ``…/$value``) are run for Things and
Observations only unless ``QUARTIER_SCHEMATHESIS_ALL=1`` (the whole document: 167 operations,
about 9 minutes on a busy 2-core machine). Every response must be: no 5xx; the status and the
body those the document declares; an error in the API's one JSON format
(``{"code", "type", "message"}``, ``quartier/api/errors.py``) without a stack trace.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
import schemathesis
from conftest import ServiceUrls
from dbs import clone, drop
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from quartier.api.app import create_app
from quartier.config import IngestSettings, Settings
from quartier.ingest.pipeline import Message, build_batch
from quartier.ingest.writer import BatchWriter
from quartier.store import api_keys

pytestmark = pytest.mark.services

EXAMPLES = int(os.environ.get("QUARTIER_SCHEMATHESIS_EXAMPLES", "1"))
SCOPES = sorted(api_keys.SCOPES) if hasattr(api_keys, "SCOPES") else ["admin"]
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)


def seed(url: str) -> None:
    """Two networks of sensors with a day of readings and positions, through the ingest path."""
    msgs = []
    for d in range(6):
        doc = {
            "location": {"lat": 50.93 + d / 100, "lon": 6.95},
            "readings": [
                {"quantity": q, "value": 10.0 + k, "time": (T0 + timedelta(minutes=k)).isoformat()}
                for k in range(20)
                for q in ("pm25", "temperature")
            ],
        }
        msgs.append(Message(f"quartier/v1/net{d % 2}/dev-{d}/up", orjson.dumps(doc), T0))
    writer = BatchWriter(url, auto_register=True)
    try:
        writer.write(build_batch(msgs, IngestSettings(), datetime.now(UTC)))
    finally:
        writer.close()


@pytest.fixture(scope="module")
def api_app(service_urls: ServiceUrls, template_db: str) -> Iterator[FastAPI]:
    url = clone(service_urls.database_url, template_db, "quartier_oas")
    try:
        seed(url)
        settings = Settings(
            _env_file=None,
            database={"url": url},
            mqtt={"url": service_urls.mqtt_url},
            api={"rate_per_second": 0},  # schemathesis sends hundreds of requests a second
        )
        app = create_app(settings)
        with psycopg.connect(url) as conn:
            _, token = api_keys.create(conn, "schemathesis", SCOPES, created_by="test")
        app.state.test_token = token
        with TestClient(app):  # runs the lifespan: the pool is open
            yield app
    finally:
        drop(service_urls.database_url, url)


class _Requests:
    """The app without its lifespan: schemathesis' ASGI transport runs the lifespan around every
    request, which would close the app's pool after the first; the fixture runs it once."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return


@pytest.fixture(scope="module")
def api_schema(api_app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", _Requests(api_app))


def _operations() -> list[Any]:
    """Every operation of the document (which needs no database to be made): without a key, and
    those that declare a key with one too (a key changes nothing for reads of open data)."""
    app = create_app(Settings(_env_file=None, database={"url": "host=127.0.0.1 port=1"}))
    out = []
    for path, ops in app.openapi()["paths"].items():
        for method, op in ops.items():
            for with_key in [False, True] if op.get("security") else [False]:
                label = f"{method.upper()} {path}{' with key' if with_key else ''}"
                out.append(pytest.param(method.upper(), path, with_key, id=label))
    return out


OPERATIONS = [
    op
    for op in _operations()
    # the property paths of six more entity sets are made by the same route maker as these two
    if os.environ.get("QUARTIER_SCHEMATHESIS_ALL")
    or not re.search(r"\)/[a-zA-Z]+(/\$value)?$", op.values[1])
    or op.values[1].startswith(("/v1.1/Things(", "/v1.1/Observations("))
]
#: the property paths (Things(1)/name, .../$value: over a hundred, made by one route maker)
#: get one example each
PROPERTY_PATH = re.compile(r"\)/[a-zA-Z]+(/\$value)?$")

#: a Python stack trace (request values are echoed in messages, so not just any path)
TRACE = re.compile(r'Traceback \(most recent call last\)|File "[^"]+", line \d+')


def error_format(response: Any) -> None:
    """An error is the API's one JSON body, with no stack trace or driver text in it."""
    text = response.text
    assert TRACE.search(text) is None, f"a stack trace in a {response.status_code}: {text[:300]}"
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith("application/json"), f"{content_type}: {text[:200]}"
    body = response.json()
    assert set(body) == {"code", "type", "message"}, body
    assert body["code"] == response.status_code and body["type"] and body["message"]


def check(case: Any, headers: dict[str, str] | None) -> None:
    response = case.call(headers=headers)
    # 501 is the deliberate answer to a SensorThings option not implemented ($format, ...)
    unsupported = response.status_code == 501 and "NotImplementedQueryError" in response.text
    assert response.status_code < 500 or unsupported, (
        f"{case.method} {case.formatted_path} {case.query}: {response.status_code} "
        f"{response.text[:300]}"
    )
    error_format(response)
    checks = [status_code_conformance, response_schema_conformance]
    if not case.path.endswith("/$value"):  # see test_value_paths_declare_their_content_type
        checks.append(content_type_conformance)
    case.validate_response(response, checks=checks)


@pytest.mark.parametrize(("method", "path", "with_key"), OPERATIONS)
def test_every_operation(
    api_schema: Any, api_app: FastAPI, method: str, path: str, with_key: bool
) -> None:
    operation = api_schema[path][method]
    headers = {"Authorization": f"Bearer {api_app.state.test_token}"} if with_key else None
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @given(operation.as_strategy(generation_mode=mode))
        @hsettings(
            max_examples=1 if PROPERTY_PATH.search(path) else EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            check(case, headers)

        try:
            run()
        except Unsatisfiable:
            # no request can break the schema (no parameters, or only free text ones)
            assert mode is GenerationMode.NEGATIVE


def test_value_paths_declare_their_content_type(api_app: FastAPI) -> None:
    doc = api_app.openapi()
    declared = doc["paths"]["/v1.1/Things({entity_id})/name/$value"]["get"]["responses"]["200"]
    with TestClient(_Requests(api_app)) as client:
        r = client.get("/v1.1/Things(1)/name/$value")
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] in declared.get("content", {})
