"""Helpers of the SensorThings write tests: an API key's header, one value from the database."""

from __future__ import annotations

from typing import Any

import psycopg

from quartier.config import Settings
from quartier.store import api_keys


def key(settings: Settings, *scopes: str) -> dict[str, str]:
    """The ``Authorization`` header of a new API key with ``scopes``."""
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        _, token = api_keys.create(conn, "sta", scopes, created_by="test")
    return {"Authorization": f"Bearer {token}"}


def scalar(settings: Settings, query: str, *params: Any) -> Any:
    """The first column of the first row of ``query`` (there must be one)."""
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]
