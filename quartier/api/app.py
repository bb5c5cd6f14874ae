"""The app factory: ``create_app(settings)`` owns the connection pool for its lifetime, and the
limits every request meets (a capped body, a statement timeout on the pooled connections)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import paho.mqtt.client as mqtt
from fastapi import FastAPI
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
from quartier.errors import NotMigratedError, PayloadTooLargeError
from quartier.ingest.mqtt_client import mqtt_client
from quartier.store.db import DictConn, make_pool
from quartier.store.migrate import storage_path

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    pool = make_pool(settings)
    timeout_ms = round(settings.api.statement_timeout_seconds * 1000)
    if timeout_ms > 0 and isinstance(pool.kwargs, dict):  # the API's connections only
        pool.kwargs["options"] = (
            f"{pool.kwargs.get('options', '')} -c statement_timeout={timeout_ms}"
        )

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
    app.add_middleware(BodyCap, limit=settings.api.max_body_bytes)
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


class BodyCap:
    """Refuses request bodies above ``limit`` bytes with 413: a ``Content-Length`` above it at
    once (the body is never read), a body without one (chunked) as soon as the bytes read so far
    pass it (:class:`~quartier.errors.PayloadTooLargeError` from ``receive``, answered by the
    error table). Routes reading ``request.body()`` thus never hold more than ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLargeError(f"request body larger than {self.limit} bytes")
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            status = errors.status_of(too_large)
            body = {"code": status, "type": type(too_large).__name__, "message": str(too_large)}
            await JSONResponse(body, status_code=status)(scope, receive, send)
            return
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_large
            return message

        await self.app(scope, capped, send)


def _check_database(conn: DictConn) -> ComponentHealth:
    """Whether PostgreSQL answers; what failed goes to the log, not to the client."""
    try:
        conn.execute("select 1")  # the server answers now (the storage path is cached)
        storage_path(conn)
    except NotMigratedError as exc:  # our own message, which says what to run
        return ComponentHealth(ok=False, detail=str(exc))
    except Exception as exc:  # health must report, not raise
        log.warning("health: database check failed: %s", exc)
        return ComponentHealth(ok=False, detail="degraded: the database does not answer")
    return ComponentHealth(ok=True, detail="ok")


def _check_mqtt(settings: Settings, timeout: float = 3.0) -> ComponentHealth:
    """Whether the broker accepts a connection; what failed goes to the log (the broker's
    address and the error never reach the client)."""
    if not settings.mqtt.url:
        return ComponentHealth(ok=False, detail="degraded: no broker configured")
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
        log.warning("health: broker unreachable: %s", exc)
        return ComponentHealth(ok=False, detail="degraded: the broker does not answer")
    if not ok:
        log.warning("health: broker did not answer CONNECT within %s s", timeout)
        return ComponentHealth(ok=False, detail="degraded: the broker does not answer")
    if result[0] != "Success":
        log.warning("health: broker refused the connection: %s", result[0])
        return ComponentHealth(ok=False, detail="degraded: the broker refused the connection")
    return ComponentHealth(ok=True, detail="ok")
