"""Request dependencies: a pooled connection and the public base URL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from psycopg_pool import ConnectionPool

from quartier.config import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_conn(request: Request) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    pool: ConnectionPool = request.app.state.pool
    with pool.connection() as conn:
        yield conn  # type: ignore[misc]


def get_base_url(request: Request) -> str:
    settings: Settings = request.app.state.settings
    return (settings.api.base_url or str(request.base_url)).rstrip("/")


Conn = Annotated[psycopg.Connection[dict[str, Any]], Depends(get_conn)]
BaseUrl = Annotated[str, Depends(get_base_url)]
AppSettings = Annotated[Settings, Depends(get_settings)]
