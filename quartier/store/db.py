"""Connections. Pools are created by entry points (the app factory) and passed down."""

from __future__ import annotations

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from quartier.config import Settings


def make_pool(settings: Settings, *, name: str = "quartier-api") -> ConnectionPool:
    """An unopened pool; its owner opens (``pool.open()``) and closes it."""
    return ConnectionPool(
        settings.require_database_url(),
        min_size=settings.database.pool_min,
        max_size=settings.database.pool_max,
        # JIT compiles for tens of ms; no API query runs long enough to gain from it
        kwargs={
            "row_factory": dict_row,
            "application_name": name,
            "autocommit": True,
            "options": "-c jit=off",
        },
        open=False,
    )
