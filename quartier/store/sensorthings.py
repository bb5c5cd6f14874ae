"""Queries behind the SensorThings API. They return plain dicts (rows); the API shapes them.

Every list query takes ``top`` and ``skip`` and fetches one row more than asked, so the caller
knows whether a next page exists without counting.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from quartier.errors import NotFoundError
from quartier.store import timeseries
from quartier.store.db import DictConn

Order = Literal["asc", "desc"]

_THING = "select t.id, t.name, t.description, t.properties from thing t"
_DATASTREAM = """
select d.id, d.name, d.description, d.observation_type, d.unit_of_measurement, d.thing_id,
       d.sensor_id, d.observed_property_id, d.properties,
       ST_AsGeoJSON(d.observed_area)::json as observed_area,
       (select min(o.phenomenon_time) from observation o where o.datastream_id = d.id) as t_min,
       (select max(o.phenomenon_time) from observation o where o.datastream_id = d.id) as t_max
from datastream d"""
_LOCATION = """
select l.id, l.name, l.description, l.encoding_type, ST_AsGeoJSON(l.location)::json as location,
       l.properties
from location l"""
_SENSOR = (
    "select s.id, s.name, s.description, s.encoding_type, s.metadata, s.properties from sensor s"
)
_OBSERVED_PROPERTY = (
    "select p.id, p.name, p.definition, p.description, p.properties from observed_property p"
)


def _page(
    conn: DictConn, query: str, params: tuple[Any, ...], top: int, skip: int, order: str = "id"
) -> list[dict[str, Any]]:
    return conn.execute(
        f"{query} order by {order} limit %s offset %s",  # order is one of our constants
        (*params, top + 1, skip),
    ).fetchall()


def _count(conn: DictConn, table: str, where: str = "", params: tuple[Any, ...] = ()) -> int:
    row = conn.execute(f"select count(*) as n from {table} {where}", params).fetchone()
    assert row is not None
    return int(row["n"])


def _one(conn: DictConn, query: str, entity: str, entity_id: int) -> dict[str, Any]:
    row = conn.execute(query, (entity_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no {entity} with @iot.id {entity_id}")
    return row


# ------------------------------------------------------------------------- Things
def things(conn: DictConn, top: int, skip: int) -> list[dict[str, Any]]:
    return _page(conn, _THING, (), top, skip, "t.id")


def thing(conn: DictConn, thing_id: int) -> dict[str, Any]:
    return _one(conn, f"{_THING} where t.id = %s", "Thing", thing_id)


def count_things(conn: DictConn) -> int:
    return _count(conn, "thing")


# ------------------------------------------------------------------------- Datastreams
def datastreams(
    conn: DictConn, top: int, skip: int, thing_id: int | None = None
) -> list[dict[str, Any]]:
    if thing_id is None:
        return _page(conn, _DATASTREAM, (), top, skip, "d.id")
    thing(conn, thing_id)
    return _page(conn, f"{_DATASTREAM} where d.thing_id = %s", (thing_id,), top, skip, "d.id")


def datastream(conn: DictConn, ds_id: int) -> dict[str, Any]:
    return _one(conn, f"{_DATASTREAM} where d.id = %s", "Datastream", ds_id)


def count_datastreams(conn: DictConn, thing_id: int | None = None) -> int:
    if thing_id is None:
        return _count(conn, "datastream")
    return _count(conn, "datastream", "where thing_id = %s", (thing_id,))


# ------------------------------------------------------------------------- Observations
def observations(
    conn: DictConn, ds_id: int, top: int, skip: int, order: Order = "asc"
) -> list[dict[str, Any]]:
    if conn.execute("select 1 from datastream where id = %s", (ds_id,)).fetchone() is None:
        raise NotFoundError(f"no Datastream with @iot.id {ds_id}")
    direction = "desc" if order == "desc" else "asc"
    return conn.execute(
        "select datastream_id, phenomenon_time, result, result_json, result_time, parameters"
        f" from observation where datastream_id = %s order by phenomenon_time {direction}"
        " limit %s offset %s",
        (ds_id, top + 1, skip),
    ).fetchall()


def observation(conn: DictConn, ds_id: int, time: datetime) -> dict[str, Any]:
    """One observation by its primary key (the parts of its derived @iot.id)."""
    row = conn.execute(
        "select datastream_id, phenomenon_time, result, result_json, result_time, parameters"
        " from observation where datastream_id = %s and phenomenon_time = %s",
        (ds_id, time),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no Observation of Datastream {ds_id} at {time.isoformat()}")
    return row


def count_observations(conn: DictConn, ds_id: int) -> tuple[int, bool]:
    """(count, exact): exact where cheap, an estimate on very large TimescaleDB datastreams."""
    return timeseries.count_observations(conn, ds_id)


# ------------------------------------------------------------------------- others
def locations(
    conn: DictConn, top: int, skip: int, thing_id: int | None = None
) -> list[dict[str, Any]]:
    if thing_id is None:
        return _page(conn, _LOCATION, (), top, skip, "l.id")
    thing(conn, thing_id)
    return _page(
        conn,
        f"{_LOCATION} join thing_location tl on tl.location_id = l.id where tl.thing_id = %s",
        (thing_id,),
        top,
        skip,
        "l.id",
    )


def sensors(conn: DictConn, top: int, skip: int) -> list[dict[str, Any]]:
    return _page(conn, _SENSOR, (), top, skip, "s.id")


def sensor(conn: DictConn, sensor_id: int) -> dict[str, Any]:
    return _one(conn, f"{_SENSOR} where s.id = %s", "Sensor", sensor_id)


def observed_properties(conn: DictConn, top: int, skip: int) -> list[dict[str, Any]]:
    return _page(conn, _OBSERVED_PROPERTY, (), top, skip, "p.id")


def observed_property(conn: DictConn, op_id: int) -> dict[str, Any]:
    return _one(conn, f"{_OBSERVED_PROPERTY} where p.id = %s", "ObservedProperty", op_id)
