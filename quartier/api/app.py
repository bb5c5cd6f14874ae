"""The app factory: ``create_app(settings)`` owns the connection pool for its lifetime."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import paho.mqtt.client as mqtt
from fastapi import FastAPI
from fastapi.responses import JSONResponse, RedirectResponse

from quartier import __version__
from quartier.api import (
    aggregates,
    coverage_gaps,
    errors,
    indicators,
    ingest_http,
    ogc,
    sensorthings,
    strategy,
)
from quartier.api.deps import AnyConn, AppSettings
from quartier.api.models import ComponentHealth, Health
from quartier.config import Settings
from quartier.errors import NotMigratedError
from quartier.ingest.mqtt_client import mqtt_client
from quartier.store.db import DictConn, make_pool
from quartier.store.migrate import storage_path

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    pool = make_pool(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=False)
        try:
            yield
        finally:
            if hasattr(app.state, "http_writer"):
                app.state.http_writer.close()
            pool.close()

    app = FastAPI(
        title="Quartier open-data API",
        version=__version__,
        description=(
            "Open data of the city: sensor observations (OGC SensorThings API v1.1), "
            "indicators of the digitalisation strategy, and broadband coverage."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = pool
    errors.install(app)
    app.include_router(aggregates.router)  # before sensorthings: more specific paths
    app.include_router(sensorthings.router)
    app.include_router(indicators.router)
    app.include_router(ingest_http.router)
    app.include_router(strategy.router)
    app.include_router(coverage_gaps.router)
    app.include_router(ogc.router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get(
        "/health", response_model=Health, operation_id="health", responses={503: {"model": Health}}
    )
    def health(conn: AnyConn, settings: AppSettings) -> JSONResponse:
        db = _check_database(conn)
        broker = _check_mqtt(settings)
        body = Health(status="ok" if db.ok and broker.ok else "degraded", database=db, mqtt=broker)
        return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)

    return app


def _check_database(conn: DictConn) -> ComponentHealth:
    try:
        conn.execute("select 1")  # the server answers now (the storage path is cached)
        path = storage_path(conn)
    except NotMigratedError as exc:
        return ComponentHealth(ok=False, detail=str(exc))
    except Exception as exc:  # health must report, not raise
        return ComponentHealth(ok=False, detail=f"database error: {exc}")
    return ComponentHealth(ok=True, detail=f"storage path {path}")


def _check_mqtt(settings: Settings, timeout: float = 3.0) -> ComponentHealth:
    if not settings.mqtt.url:
        return ComponentHealth(ok=False, detail="no broker configured")
    done = threading.Event()
    result: list[str] = []

    def on_connect(
        client: mqtt.Client, userdata: object, flags: object, reason: object, properties: object
    ) -> None:
        result.append(str(reason))
        done.set()

    try:
        client, host, port = mqtt_client(
            settings.mqtt.url, f"quartier-health-{uuid.uuid4().hex[:8]}"
        )
        client.on_connect = on_connect
        client.connect(host, port, keepalive=5)
        client.loop_start()
        ok = done.wait(timeout)
        client.disconnect()
        client.loop_stop()
    except (OSError, ValueError) as exc:
        return ComponentHealth(ok=False, detail=f"broker unreachable: {exc}")
    if not ok:
        return ComponentHealth(ok=False, detail="broker did not answer CONNECT")
    return ComponentHealth(ok=result[0] == "Success", detail=f"broker says {result[0]}")
