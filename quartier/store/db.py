"""Connections and their types. Pools are created by entry points (the app factory) and passed
down."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from quartier.config import Settings

#: A connection with any row factory: the API pool's rows are dicts, the CLI's and the
#: ingester's tuples; code typed with it reads rows either way (or only by position).
Conn = psycopg.Connection[Any]
#: A connection whose rows are dicts (``row_factory=dict_row``, as the API pool's).
DictConn = psycopg.Connection[dict[str, Any]]


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
