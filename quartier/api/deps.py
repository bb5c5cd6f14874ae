"""Request dependencies: a pooled connection (to a migrated database; open-data reads from a read
replica when there is a fit one) and the public base URL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, cast

from fastapi import Depends, Query, Request
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from quartier.config import Settings
from quartier.errors import BadRequestError, DatabaseUnreachableError, QueryTimeoutError
from quartier.store.db import DictConn
from quartier.store.migrate import storage_path
from quartier.store.replicas import ReplicaSet


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_any_conn(request: Request) -> Iterator[DictConn]:
    """A pooled connection, whatever state the database is in (for ``/health``)."""
    pool: ConnectionPool = request.app.state.pool
    with pool.connection() as conn:
        yield conn  # type: ignore[misc]


#: Paths whose GET/HEAD reads may go to a read replica (``database.replica_urls``): the open
#: data (SensorThings reads and aggregates, coverage, OGC API Features, maps). Everything else
#: (``/indicators`` and ``/strategy`` may refresh stored values on a read) uses the primary.
REPLICA_PATHS = ("/v1.1/", "/coverage", "/ogc", "/maps/")
#: Set in the request's scope by ``app.ReplicaRetry``: ``{"primary": bool, "failed": bool}``.
REPLICA_SCOPE_KEY = "quartier.replica"


def reads_from_replica(request: Request) -> bool:
    """Whether this request may read from a replica: an open-data GET/HEAD without an API key
    (a client with a key may have just written: it reads its writes from the primary), not
    already retried on the primary."""
    if request.method not in ("GET", "HEAD") or not request.url.path.startswith(REPLICA_PATHS):
        return False
    if "authorization" in request.headers or "x-api-key" in request.headers:
        return False
    flags = request.scope.get(REPLICA_SCOPE_KEY)
    return not (flags and flags.get("primary"))


def get_conn(request: Request) -> Iterator[DictConn]:
    """A pooled connection to a migrated database: :class:`~quartier.errors.NotMigratedError`
    (503) otherwise. The storage path is read once per pooled connection. A query cancelled by
    the pool's ``statement_timeout`` becomes :class:`~quartier.errors.QueryTimeoutError` (503).

    Open-data reads (:func:`reads_from_replica`) take a fit read replica's connection when
    there is one. A replica that fails before the route runs is marked down and the read goes to
    the primary; one that fails during the route is marked down and the request answered
    :class:`~quartier.errors.DatabaseUnreachableError`, which ``app.ReplicaRetry`` swallows to
    run the request again on the primary."""
    replicas: ReplicaSet | None = getattr(request.app.state, "replicas", None)
    if replicas is not None and reads_from_replica(request):
        replica = replicas.choose()
        conn = replicas.getconn(replica) if replica is not None else None
        if replica is not None and conn is not None:
            try:
                try:
                    storage_path(conn)
                except pg_errors.OperationalError as exc:  # gone between check and query
                    replicas.mark_down(replica, exc)
                else:
                    yield from _timed(request, conn)
                    return
            except pg_errors.OperationalError as exc:
                replicas.mark_down(replica, exc)
                flags = request.scope.get(REPLICA_SCOPE_KEY)
                if flags is not None:
                    flags["failed"] = True
                raise DatabaseUnreachableError(
                    "a read replica stopped answering; retry", replica.address
                ) from exc
            finally:
                replica.pool.putconn(conn)
        replicas.count_primary_read()
    pool: ConnectionPool = request.app.state.pool
    with pool.connection() as primary:
        storage_path(primary)
        yield from _timed(request, cast(DictConn, primary))


def _timed(request: Request, conn: DictConn) -> Iterator[DictConn]:
    try:
        yield conn
    except pg_errors.QueryCanceled as exc:
        seconds = request.app.state.settings.api.statement_timeout_seconds
        raise QueryTimeoutError(
            f"the query took longer than {seconds:g} s and was cancelled; ask for less"
            " (a shorter time range, fewer entities, a smaller $top)"
        ) from exc


def get_base_url(request: Request) -> str:
    settings: Settings = request.app.state.settings
    return (settings.api.base_url or str(request.base_url)).rstrip("/")


def bounded_skip(settings: Settings, skip: int, name: str = "offset") -> int:
    """``skip`` if it is at most ``api.max_skip``; :class:`~quartier.errors.BadRequestError`
    (400) otherwise (a deep offset costs a scan of everything before it)."""
    if skip > settings.api.max_skip:
        raise BadRequestError(
            f"{name} {skip} is above the maximum of {settings.api.max_skip}; narrow the query"
            " (a filter or a time range) instead of paging that far"
        )
    return skip


def get_offset(
    request: Request,
    offset: Annotated[int, Query(ge=0, description="items to skip (at most api.max_skip)")] = 0,
) -> int:
    return bounded_skip(request.app.state.settings, offset)


Conn = Annotated[DictConn, Depends(get_conn)]
Offset = Annotated[int, Depends(get_offset)]
AnyConn = Annotated[DictConn, Depends(get_any_conn)]
BaseUrl = Annotated[str, Depends(get_base_url)]
AppSettings = Annotated[Settings, Depends(get_settings)]
