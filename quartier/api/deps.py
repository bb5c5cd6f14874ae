"""Request dependencies: a pooled connection (to a migrated database) and the public base URL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from quartier.config import Settings
from quartier.errors import BadRequestError, QueryTimeoutError
from quartier.store.db import DictConn
from quartier.store.migrate import storage_path


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_any_conn(request: Request) -> Iterator[DictConn]:
    """A pooled connection, whatever state the database is in (for ``/health``)."""
    pool: ConnectionPool = request.app.state.pool
    with pool.connection() as conn:
        yield conn  # type: ignore[misc]


def get_conn(request: Request) -> Iterator[DictConn]:
    """A pooled connection to a migrated database: :class:`~quartier.errors.NotMigratedError`
    (503) otherwise. The storage path is read once per pooled connection. A query cancelled by
    the pool's ``statement_timeout`` becomes :class:`~quartier.errors.QueryTimeoutError` (503)."""
    pool: ConnectionPool = request.app.state.pool
    with pool.connection() as conn:
        storage_path(conn)
        try:
            yield conn  # type: ignore[misc]
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
