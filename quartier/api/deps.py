"""Request dependencies: a pooled connection (to a migrated database) and the public base URL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from quartier.config import Settings
from quartier.errors import QueryTimeoutError
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


Conn = Annotated[DictConn, Depends(get_conn)]
AnyConn = Annotated[DictConn, Depends(get_any_conn)]
BaseUrl = Annotated[str, Depends(get_base_url)]
AppSettings = Annotated[Settings, Depends(get_settings)]
