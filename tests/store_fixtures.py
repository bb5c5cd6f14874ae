"""Rows other parts' tests put into the store by hand (stations, coverage result rows)."""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb


def station(conn: Any, name: str, where: tuple[float, float], quantity: str, **props: Any) -> int:
    """A Thing at ``where`` (lon, lat) with one Datastream of ``quantity``; returns its id."""
    thing = conn.execute("insert into thing (name) values (%s) returning id", (name,)).fetchone()[0]
    loc = conn.execute(
        "insert into location (name, location) values (%s, ST_SetSRID(ST_MakePoint(%s, %s), 4326))"
        " returning id",
        (name, *where),
    ).fetchone()[0]
    conn.execute("insert into thing_location values (%s, %s)", (thing, loc))
    sensor = conn.execute("insert into sensor (name) values (%s) returning id", (name,)).fetchone()
    prop = conn.execute(
        "insert into observed_property (name, definition) values (%s, %s) on conflict (definition)"
        " do update set name = excluded.name returning id",
        (quantity, f"urn:test:{quantity}"),
    ).fetchone()[0]
    ds: int = conn.execute(
        "insert into datastream (name, unit_of_measurement, thing_id, sensor_id,"
        " observed_property_id, properties) values (%s, '{}', %s, %s, %s, %s) returning id",
        (f"{name} {quantity}", thing, sensor[0], prop, Jsonb({"quantity": quantity, **props})),
    ).fetchone()[0]
    return ds


def insert_filled(conn: Any, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` into a table of another part (the geo coverage tables), filling the
    not-null columns a row does not name with a zero of their type, so the test depends only on
    the columns the evaluation reads."""
    zero = {"boolean": False, "text": "", "jsonb": "{}", "ARRAY": "{}"}
    required = conn.execute(
        "select column_name, data_type from information_schema.columns where table_name = %s"
        " and is_nullable = 'NO' and column_default is null and is_generated = 'NEVER'",
        (table,),
    ).fetchall()
    for row in rows:
        full = {c: zero.get(t, 0) for c, t in required} | row
        cols = list(full)
        conn.execute(
            sql.SQL("insert into {} ({}) values ({})").format(
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.SQL(", ").join(sql.Placeholder() * len(cols)),
            ),
            [full[c] for c in cols],
        )
