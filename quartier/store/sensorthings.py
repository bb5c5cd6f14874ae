"""Queries behind the SensorThings API. They return plain dicts (rows); the API shapes them.

A collection query takes a :class:`Listing`: the page (``top``, ``skip``) and, already compiled by
``quartier.api.sta``, the ``$filter`` condition and ``$orderby`` keys over the entity's table
alias (:data:`ALIASES`) with named placeholders. It fetches one row more than asked, so the
caller knows whether a next page exists without counting, and always sorts last by the primary
key (``datastream_id, phenomenon_time`` for Observations), so pages are stable. Counts apply the
same condition. :func:`entities` serves every entity set, whole or navigated to from one entity
(a :class:`Within`); one datastream's Observations have their own range-scan query.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import sql

from quartier.errors import NotFoundError
from quartier.store import timeseries
from quartier.store.db import DictConn

#: The table alias of each entity set in the queries here (the compilers' ``alias``).
ALIASES = {
    "Things": "t",
    "Locations": "l",
    "Datastreams": "d",
    "Sensors": "s",
    "ObservedProperties": "p",
    "Observations": "o",
    "HistoricalLocations": "h",
    "FeaturesOfInterest": "f",
}


@dataclass(frozen=True)
class Listing:
    """One page of a collection. ``where`` and ``order`` are SQL over the entity's alias
    (:data:`ALIASES`) with named placeholders whose values are in ``params``; ``order`` is the
    list after ``ORDER BY`` (the primary key follows it)."""

    top: int
    skip: int = 0
    where: sql.Composable | None = None
    order: sql.Composable | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Within:
    """A navigation from one entity (``/Sensors(3)/Datastreams``), compiled by
    ``quartier.api.sta.compile_navigation``: ``source`` is the target's FROM item under its alias,
    ``on`` ties it to the parent row aliased ``_p`` of table ``parent_table`` with id ``parent_id``;
    ``parent`` names the parent entity type for the 404."""

    source: sql.Composable
    on: sql.Composable
    parent: str
    parent_table: str
    parent_id: int


@dataclass(frozen=True)
class _Collection:
    columns: str
    source: str  # the FROM item: the entity's table under its alias
    key: str  # the primary key, the last sort key

    @property
    def select(self) -> str:
        return f"select {self.columns} from {self.source}"


_THING = _Collection("t.id, t.name, t.description, t.properties", "thing t", "t.id")
_DATASTREAM = _Collection(
    """d.id, d.name, d.description, d.observation_type, d.unit_of_measurement, d.thing_id,
       d.sensor_id, d.observed_property_id, d.properties,
       ST_AsGeoJSON(d.observed_area)::json as observed_area,
       (select min(o.phenomenon_time) from observation o where o.datastream_id = d.id) as t_min,
       (select max(o.phenomenon_time) from observation o where o.datastream_id = d.id) as t_max""",
    "datastream d",
    "d.id",
)
_LOCATION = _Collection(
    "l.id, l.name, l.description, l.encoding_type,"
    " ST_AsGeoJSON(l.location)::json as location, l.properties",
    "location l",
    "l.id",
)
_SENSOR = _Collection(
    "s.id, s.name, s.description, s.encoding_type, s.metadata, s.properties", "sensor s", "s.id"
)
_OBSERVED_PROPERTY = _Collection(
    "p.id, p.name, p.definition, p.description, p.properties", "observed_property p", "p.id"
)
_OBSERVATION = _Collection(
    "o.datastream_id, o.phenomenon_time, o.result, o.result_json, o.result_time, o.parameters",
    "observation o",
    "o.phenomenon_time",  # with the datastream fixed by the scope: the primary key's rest
)
_HISTORICAL_LOCATION = _Collection("h.id, h.time, h.thing_id", "historical_location h", "h.id")
_FEATURE_OF_INTEREST = _Collection(
    "f.id, f.name, f.description, f.encoding_type,"
    " ST_AsGeoJSON(f.feature)::json as feature, f.properties",
    "feature_of_interest f",
    "f.id",
)

#: Each entity set's collection; Observations over all datastreams sort by the whole primary key.
_COLLECTIONS = {
    "Things": _THING,
    "Locations": _LOCATION,
    "HistoricalLocations": _HISTORICAL_LOCATION,
    "Datastreams": _DATASTREAM,
    "Sensors": _SENSOR,
    "ObservedProperties": _OBSERVED_PROPERTY,
    "Observations": _Collection(
        _OBSERVATION.columns, _OBSERVATION.source, "o.datastream_id, o.phenomenon_time"
    ),
    "FeaturesOfInterest": _FEATURE_OF_INTEREST,
}


def _where(scope: str, listing: Listing) -> sql.Composable:
    conds: list[sql.Composable] = [sql.SQL(scope)] if scope else []
    if listing.where is not None:
        conds.append(listing.where)
    if not conds:
        return sql.SQL("")
    return sql.SQL(" where ") + sql.SQL(" and ").join(conds)


def _page(
    conn: DictConn,
    c: _Collection,
    listing: Listing,
    scope: str = "",
    scope_id: int | None = None,
) -> list[dict[str, Any]]:
    """One page (plus one row) of ``c``; ``scope`` is a condition on ``%(_scope)s``."""
    keys: list[sql.Composable] = [sql.SQL(c.key)]
    if listing.order is not None:
        keys.insert(0, listing.order)
    query = sql.SQL("{}{} order by {} limit %(_top)s offset %(_skip)s").format(
        sql.SQL(c.select), _where(scope, listing), sql.SQL(", ").join(keys)
    )
    params = {**listing.params, "_scope": scope_id, "_top": listing.top + 1, "_skip": listing.skip}
    return conn.execute(query, params).fetchall()


def _count(
    conn: DictConn,
    c: _Collection,
    listing: Listing,
    scope: str = "",
    scope_id: int | None = None,
) -> int:
    query = sql.SQL("select count(*) as n from {}{}").format(
        sql.SQL(c.source), _where(scope, listing)
    )
    row = conn.execute(query, {**listing.params, "_scope": scope_id}).fetchone()
    assert row is not None
    return int(row["n"])


def _one(conn: DictConn, c: _Collection, entity: str, entity_id: int) -> dict[str, Any]:
    row = conn.execute(f"{c.select} where {c.key} = %s", (entity_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no {entity} with @iot.id {entity_id}")
    return row


# ------------------------------------------------------------------------- Observations
_OF_DATASTREAM = "o.datastream_id = %(_scope)s"


def observations(conn: DictConn, ds_id: int, listing: Listing) -> list[dict[str, Any]]:
    """A page of one datastream's observations; a ``phenomenonTime`` filter is a range scan of
    the ``(datastream_id, phenomenon_time)`` primary key."""
    if conn.execute("select 1 from datastream where id = %s", (ds_id,)).fetchone() is None:
        raise NotFoundError(f"no Datastream with @iot.id {ds_id}")
    return _page(conn, _OBSERVATION, listing, _OF_DATASTREAM, ds_id)


def observation(conn: DictConn, ds_id: int, time: datetime) -> dict[str, Any]:
    """One observation by its primary key (the parts of its derived @iot.id)."""
    row = conn.execute(
        f"{_OBSERVATION.select} where o.datastream_id = %s and o.phenomenon_time = %s",
        (ds_id, time),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no Observation of Datastream {ds_id} at {time.isoformat()}")
    return row


def count_observations(conn: DictConn, ds_id: int, listing: Listing) -> tuple[int, bool]:
    """(count, exact). Without a filter: exact where cheap, an estimate on very large TimescaleDB
    datastreams (``timeseries.count_observations``); with one, the matching rows are counted."""
    if listing.where is None:
        return timeseries.count_observations(conn, ds_id)
    return _count(conn, _OBSERVATION, listing, _OF_DATASTREAM, ds_id), True


# ------------------------------------------------------------------------- any entity set
def _from(c: _Collection, within: Within | None) -> tuple[sql.Composable, str]:
    """The FROM item of ``c`` (joined to the parent row when navigating) and the scope."""
    if within is None:
        return sql.SQL(c.source), ""
    source = sql.SQL("{} join {} _p on {}").format(
        within.source, sql.Identifier(within.parent_table), within.on
    )
    return source, "_p.id = %(_scope)s"


def _check_parent(conn: DictConn, within: Within) -> None:
    query = sql.SQL("select 1 from {} where id = %s").format(sql.Identifier(within.parent_table))
    if conn.execute(query, (within.parent_id,)).fetchone() is None:
        raise NotFoundError(f"no {within.parent} with @iot.id {within.parent_id}")


def entities(
    conn: DictConn, entity_set: str, listing: Listing, within: Within | None = None
) -> list[dict[str, Any]]:
    """A page (plus one row) of ``entity_set``, all of it or navigated to from one entity."""
    c = _COLLECTIONS[entity_set]
    if within is not None:
        _check_parent(conn, within)
    source, scope = _from(c, within)
    keys: list[sql.Composable] = [sql.SQL(c.key)]
    if listing.order is not None:
        keys.insert(0, listing.order)
    query = sql.SQL("select {} from {}{} order by {} limit %(_top)s offset %(_skip)s").format(
        sql.SQL(c.columns), source, _where(scope, listing), sql.SQL(", ").join(keys)
    )
    scope_id = None if within is None else within.parent_id
    params = {**listing.params, "_scope": scope_id, "_top": listing.top + 1, "_skip": listing.skip}
    return conn.execute(query, params).fetchall()


def count_entities(
    conn: DictConn, entity_set: str, listing: Listing, within: Within | None = None
) -> int:
    """How many entities of ``entity_set`` match ``listing``'s condition (its ``@iot.count``)."""
    source, scope = _from(_COLLECTIONS[entity_set], within)
    query = sql.SQL("select count(*) as n from {}{}").format(source, _where(scope, listing))
    scope_id = None if within is None else within.parent_id
    row = conn.execute(query, {**listing.params, "_scope": scope_id}).fetchone()
    assert row is not None
    return int(row["n"])


def entity(conn: DictConn, entity_set: str, entity_type: str, entity_id: int) -> dict[str, Any]:
    """One entity of ``entity_set`` by its integer @iot.id."""
    return _one(conn, _COLLECTIONS[entity_set], entity_type, entity_id)
