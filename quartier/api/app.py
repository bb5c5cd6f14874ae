"""The app factory: ``create_app(settings)`` owns the connection pool for its lifetime, and the
limits every request meets (a capped body, a statement timeout on the pooled connections)."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict

import paho.mqtt.client as mqtt
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, RedirectResponse
from psycopg_pool import ConnectionPool
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quartier import __version__
from quartier.api import (
    aggregates,
    coverage_gaps,
    errors,
    frontend,
    indicators,
    ingest_http,
    maps,
    ogc,
    sensorthings,
    sta_batch,
    sta_write,
    strategy,
)
from quartier.api.deps import REPLICA_SCOPE_KEY, AnyConn, AppSettings
from quartier.api.models import ComponentHealth, Health
from quartier.config import Settings
from quartier.errors import NotMigratedError, PayloadTooLargeError, QuartierError, RateLimitedError
from quartier.ingest.mqtt_client import PROBE_ANSWERS, mqtt_client, probe_url
from quartier.store.db import DictConn, make_pool
from quartier.store.migrate import storage_path
from quartier.store.replicas import ReplicaSet, replica_urls

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    pool = make_pool(settings)
    timeout_ms = round(settings.api.statement_timeout_seconds * 1000)
    if timeout_ms > 0 and isinstance(pool.kwargs, dict):  # the API's connections only
        pool.kwargs["options"] = (
            f"{pool.kwargs.get('options', '')} -c statement_timeout={timeout_ms}"
        )
    replicas = _replica_set(settings, pool)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=False)
        if replicas is not None:
            replicas.open()
        try:
            yield
        finally:
            if replicas is not None:
                replicas.close()
            if hasattr(app.state, "http_writer"):
                app.state.http_writer.close()
            if hasattr(app.state, "sta_writer"):
                app.state.sta_writer.close()
            pool.close()

    app = FastAPI(
        title="Quartier open-data API",
        version=__version__,
        description=(
            "Open data of the city: sensor observations (OGC SensorThings API v1.1), "
            "indicators of the digitalisation strategy, and broadband coverage."
        ),
        lifespan=lifespan,
        docs_url=None,  # frontend.install: /docs with the shipped Swagger UI, no CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.pool = pool
    app.state.replicas = replicas
    errors.install(app)
    if replicas is not None:  # innermost: a retry on the primary passes no other check twice
        app.add_middleware(ReplicaRetry)
    app.add_middleware(BodyCap, limit=settings.api.max_body_bytes)
    api = settings.api
    if api.rate_per_second > 0 or api.key_rate_per_second > 0:  # outermost: no body read
        app.add_middleware(
            RateLimit,
            buckets=TokenBuckets(api.rate_per_second, api.rate_burst)
            if api.rate_per_second > 0
            else None,
            key_buckets=TokenBuckets(api.key_rate_per_second, api.key_rate_burst)
            if api.key_rate_per_second > 0
            else None,
        )
    # open data: gzip for large bodies, and any web page may read (not write) it. Level 1, as
    # nginx's default: a page of 1,000 observations (362 KiB) takes 3.5 ms to 62 KiB, where
    # Starlette's default level 9 takes 18.6 ms to 51 KiB (docs/benchmarks.md, API)
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=1)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "HEAD", "OPTIONS"],
        expose_headers=["ETag", "Retry-After"],
    )
    app.include_router(aggregates.router)  # before sensorthings: more specific paths
    app.include_router(sta_batch.status_router)  # before sensorthings: its catch-all GET
    app.include_router(sensorthings.router)
    app.include_router(sta_write.router)
    app.include_router(sta_batch.router)
    app.include_router(indicators.router)
    app.include_router(ingest_http.router)
    app.include_router(strategy.router)
    app.include_router(coverage_gaps.router)
    app.include_router(ogc.router)
    app.include_router(maps.router)
    frontend.install(app)  # /static and /docs

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get(
        "/health",
        response_model=HealthWithReplicas,
        response_model_exclude_none=True,
        operation_id="health",
        responses={503: {"model": HealthWithReplicas}},
    )
    def health(conn: AnyConn, settings: AppSettings) -> JSONResponse:
        db = _check_database(conn)
        broker = _check_mqtt(settings)
        body = Health(status="ok" if db.ok and broker.ok else "degraded", database=db, mqtt=broker)
        if replicas is not None:  # reported, not degrading: reads fall back to the primary
            body = HealthWithReplicas(
                **body.model_dump(),
                replicas=[ReplicaHealth(**asdict(s)) for s in replicas.statuses()],
            )
        return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)

    return app


class ReplicaHealth(BaseModel):
    """A read replica in ``/health``: ``ok``, ``lagging`` (behind by more than
    ``database.replica_max_lag_seconds``, or not streaming), ``down`` or ``unknown`` (not
    checked yet); reads go only to those ``ok``."""

    name: str
    state: str
    lag_seconds: float | None
    reads: int
    detail: str


class HealthWithReplicas(Health):
    """``/health`` with the read replicas, when ``database.replica_urls`` names any."""

    replicas: list[ReplicaHealth] | None = None


def _replica_set(settings: Settings, primary: ConnectionPool) -> ReplicaSet | None:
    """The read replicas of ``database.replica_urls``, with pools like the primary's (same
    size, row factory and statement timeout; a connection checked before it is handed out)."""
    db = settings.database
    urls = replica_urls(db)
    if not urls:
        return None
    kwargs = dict(primary.kwargs) if isinstance(primary.kwargs, dict) else {}

    def make(url: str, name: str) -> ConnectionPool:
        return ConnectionPool(
            url,
            min_size=db.pool_min,
            max_size=db.pool_max,
            kwargs=kwargs | {"application_name": name, "connect_timeout": 3},
            check=ConnectionPool.check_connection,
            open=False,
        )

    return ReplicaSet(
        urls,
        make,
        max_lag_seconds=db.replica_max_lag_seconds,
        check_seconds=db.replica_check_seconds,
    )


class ReplicaRetry:
    """Runs a GET/HEAD again on the primary when the read replica it was sent to failed during
    the route (``deps.get_conn`` marks the request's scope and answers 503): the failed answer
    is never sent, so a standby that stops mid-request costs the client only time. A response
    that had started streaming when the replica failed cannot be taken back and goes out as
    it is."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        flags = {"primary": False, "failed": False}
        scope[REPLICA_SCOPE_KEY] = flags
        started = False

        async def guarded(message: Message) -> None:
            nonlocal started
            if flags["failed"] and not started:
                return  # the replica's failure: dropped, the request runs again
            started = True
            await send(message)

        await self.app(scope, receive, guarded)
        if flags["failed"] and not started:
            log.info("read replica failed during %s; answered from the primary", scope["path"])
            flags.update(primary=True, failed=False)
            await self.app(scope, receive, send)


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
            await _error_response(too_large)(scope, receive, send)
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


def _error_response(exc: QuartierError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The error table's answer for ``exc``, for middleware (outside the exception handlers)."""
    status = errors.status_of(exc)
    body = {"code": status, "type": type(exc).__name__, "message": str(exc)}
    return JSONResponse(body, status_code=status, headers=headers)


class TokenBuckets:
    """One token bucket per key (a client address): ``rate`` tokens a second, at most ``burst``
    held. Pure (the time is passed in); buckets that are full again are forgotten, so memory
    holds only the clients active within the last ``burst / rate`` seconds."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str, now: float) -> float:
        """0 if ``key`` may go on (a token taken), else the seconds until it may."""
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._forget_full(now)
        self._buckets[key] = (tokens - 1, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        full = [
            k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]


class RateLimit:
    """Answers 429 with ``Retry-After`` to a client address over its :class:`TokenBuckets` rate,
    and to an API key over its own (a request with a key counts against both; the key is not
    checked here, only hashed, so a made-up key still spends its address's tokens). ``/health``
    is exempt: monitors poll it. Runs on the event loop, so no lock is needed."""

    def __init__(
        self, app: ASGIApp, buckets: TokenBuckets | None, key_buckets: TokenBuckets | None = None
    ) -> None:
        self.app = app
        self.buckets = buckets
        self.key_buckets = key_buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        client = scope.get("client")
        wait, who = 0.0, "this address"
        if self.buckets is not None:
            wait = self.buckets.take(client[0] if client else "", now)
        if wait <= 0 and self.key_buckets is not None:
            key = _api_key(scope)
            if key is not None:
                wait, who = self.key_buckets.take(key, now), "this API key"
        if wait > 0:
            retry_after = math.ceil(wait)
            exc = RateLimitedError(
                f"too many requests from {who}; retry after {retry_after} s", retry_after
            )
            headers = {"Retry-After": str(retry_after)}
            await _error_response(exc, headers)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _api_key(scope: Scope) -> str | None:
    """A digest of the request's API key (``Authorization: Bearer`` or ``X-API-Key``), if any:
    the bucket's name, so that keys are not kept in memory."""
    for name, value in scope.get("headers", ()):
        if name == b"x-api-key" or (name == b"authorization" and value[:7].lower() == b"bearer "):
            return hashlib.sha256(value.rsplit(b" ", 1)[-1].strip()).hexdigest()[:32]
    return None


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
    """Whether the broker answers MQTT (over TLS with the CA file for ``mqtts://``), probed
    without logging in (``mqtt_client.probe_url``: never with the ingester's account); what
    failed goes to the log (the broker's address and the error never reach the client)."""
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
            probe_url(settings.mqtt.url),
            f"quartier-health-{uuid.uuid4().hex[:8]}",
            ca_file=settings.mqtt.ca_file,
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
    if result[0] not in PROBE_ANSWERS:
        log.warning("health: broker refused the connection: %s", result[0])
        return ComponentHealth(ok=False, detail="degraded: the broker refused the connection")
    return ComponentHealth(ok=True, detail="ok")
