"""Connections. Pools are created by entry points (the app factory, the ingester) and passed down."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from quartier.config import Settings


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=autocommit, application_name="quartier")


def async_pool(settings: Settings) -> AsyncConnectionPool:
    """An unopened async pool; the owner opens it (``await pool.open()``) and closes it."""
    return AsyncConnectionPool(
        settings.require_database_url(),
        min_size=settings.database.pool_min,
        max_size=settings.database.pool_max,
        kwargs={"row_factory": dict_row, "application_name": "quartier-api", "autocommit": True},
        open=False,
    )
