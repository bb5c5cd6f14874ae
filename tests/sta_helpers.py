"""Helpers of the SensorThings tests: an API key's header, one value from the database, a small
seeded database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from quartier.config import Settings
from quartier.ingest.model import Batch, Position, Reading, Uplink
from quartier.ingest.writer import BatchWriter
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


#: the time of the first reading of ``fill_two_devices``
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def fill_two_devices(settings: Settings) -> Settings:
    """a-1 with pm25 (results 0…24, one a minute) and pm10 (7.0), b-1 with no2 (30, 31, 32,
    hourly): 29 observations in datastreams 1, 2, 3. Ingest sets no FeatureOfInterest, so one is
    made here and b-1's three observations point to it."""
    w = BatchWriter(settings.require_database_url(), auto_register=True)
    batch = Batch()
    a1 = [Reading("pm25", T0 + timedelta(minutes=i), float(i)) for i in range(25)]
    a1.append(Reading("pm10", T0, 7.0))
    b1 = [Reading("no2", T0 + timedelta(hours=i), 30.0 + i) for i in range(3)]
    batch.uplinks.append((Uplink("net", "a-1", a1, Position(50.9, 6.9)), "t", b"", T0))
    batch.uplinks.append((Uplink("net", "b-1", b1, Position(50.95, 7.0)), "t", b"", T0))
    w.write(batch)
    w.close()
    foi = scalar(
        settings,
        "insert into feature_of_interest (name, feature)"
        " values ('b-1 site', ST_SetSRID(ST_MakePoint(7.0, 50.95), 4326)) returning id",
    )
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        conn.execute(
            "update observation set foi_id = %s where datastream_id in"
            " (select d.id from datastream d join thing t on t.id = d.thing_id"
            "  where t.name = 'net/b-1')",
            (foi,),
        )
    return settings


def one_reading(settings: Settings) -> None:
    """Thing ``net/a-1`` (id 1) at (6.9, 50.9), Location 1, with Datastream 1 (pm25) and one
    reading (5.0 at :data:`T0`), stored by the ingest writer."""
    w = BatchWriter(settings.require_database_url(), auto_register=True)
    batch = Batch()
    batch.uplinks.append(
        (Uplink("net", "a-1", [Reading("pm25", T0, 5.0)], Position(50.9, 6.9)), "t", b"", T0)
    )
    w.write(batch)
    w.close()
