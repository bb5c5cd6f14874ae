"""The SensorThings writes other than storing observations (which the ingest writer does, see
``quartier.ingest.writer``): entities inserted, updated and deleted, links between them, the
automatic HistoricalLocation and FeatureOfInterest. Plain data in (column → value, already
checked by ``quartier.api.sta.body``), ids out; the caller owns the transaction.

Cascades of a DELETE (OGC 18-088, 10.4): a Thing takes its Datastreams (and their Observations)
and HistoricalLocations; a Location its links to Things and HistoricalLocations (a
HistoricalLocation left without Locations goes too); a Sensor or ObservedProperty its
Datastreams; a Datastream its Observations; a FeatureOfInterest its Observations. Observations
have no foreign key to their Datastream (the hypertable/partitions carry none), so their
deletion is done here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from quartier.errors import BadRequestError, NotFoundError
from quartier.store.db import DictConn

#: What the functions here run their statements on: a connection or a cursor with dict rows.
Executor = DictConn | psycopg.Cursor[dict[str, Any]]

#: The table of each entity set written here.
TABLES = {
    "Things": "thing",
    "Locations": "location",
    "HistoricalLocations": "historical_location",
    "Datastreams": "datastream",
    "Sensors": "sensor",
    "ObservedProperties": "observed_property",
    "FeaturesOfInterest": "feature_of_interest",
}
#: Columns that hold a geometry (sent as GeoJSON, stored in EPSG:4326).
GEOMETRY_COLUMNS = {"location", "feature", "observed_area"}
#: Columns that hold JSON.
JSON_COLUMNS = {"properties", "unit_of_measurement"}


def _value(column: str, value: Any) -> tuple[sql.Composable, Any]:
    if column in GEOMETRY_COLUMNS:
        if value is None:
            return sql.SQL("%s::geometry"), None
        return sql.SQL("ST_SetSRID(ST_GeomFromGeoJSON(%s::jsonb), 4326)"), Jsonb(value)
    if column in JSON_COLUMNS:
        return sql.SQL("%s"), None if value is None else Jsonb(value)
    return sql.SQL("%s"), value


def exists(conn: Executor, entity_set: str, entity_id: int) -> bool:
    query = sql.SQL("select 1 from {} where id = %s").format(sql.Identifier(TABLES[entity_set]))
    return conn.execute(query, (entity_id,)).fetchone() is not None


def require(conn: Executor, entity_set: str, entity_id: int, where: str) -> None:
    """400 (naming ``where`` in the body) unless entity ``entity_id`` of ``entity_set`` exists."""
    if not exists(conn, entity_set, entity_id):
        raise BadRequestError(f"{where}: there is no {entity_set[:-1]} with @iot.id {entity_id}")


def insert(conn: Executor, entity_set: str, values: dict[str, Any]) -> int:
    """A new row of ``entity_set`` with ``values`` (column → value); its id."""
    columns = list(values)
    parts = [_value(c, values[c]) for c in columns]
    query = sql.SQL("insert into {} ({}) values ({}) returning id").format(
        sql.Identifier(TABLES[entity_set]),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", ").join(p for p, _ in parts),
    )
    row = conn.execute(query, [v for _, v in parts]).fetchone()
    assert row is not None
    return int(row["id"])


def update(conn: Executor, entity_set: str, entity_id: int, values: dict[str, Any]) -> None:
    """Set ``values`` on one entity (404 when there is none)."""
    parts = [(c, *_value(c, v)) for c, v in values.items()]
    query = sql.SQL("update {} set {} where id = %s").format(
        sql.Identifier(TABLES[entity_set]),
        sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), p) for c, p, _ in parts),
    )
    cur = conn.execute(query, [*(v for _, _, v in parts), entity_id])
    if cur.rowcount == 0:
        raise NotFoundError(f"no {entity_set[:-1]} with @iot.id {entity_id}")


def link_location(conn: Executor, thing_id: int, location_ids: list[int], at: datetime) -> int:
    """Make ``location_ids`` the Thing's Locations and record that as a HistoricalLocation
    (the standard's automatic one); its id."""
    conn.execute(
        "insert into thing_location (thing_id, location_id) select %s, unnest(%s::int8[])"
        " on conflict do nothing",
        (thing_id, location_ids),
    )
    row = conn.execute(
        "insert into historical_location (thing_id, time) values (%s, %s) returning id",
        (thing_id, at),
    ).fetchone()
    assert row is not None
    conn.execute(
        "insert into historical_location_location (historical_location_id, location_id)"
        " select %s, unnest(%s::int8[])",
        (row["id"], location_ids),
    )
    return int(row["id"])


def set_locations(conn: Executor, thing_id: int, location_ids: list[int], at: datetime) -> int:
    """The Thing's current Locations become ``location_ids`` (a Thing that moved)."""
    conn.execute("delete from thing_location where thing_id = %s", (thing_id,))
    return link_location(conn, thing_id, location_ids, at)


def feature_of_datastream(conn: Executor, datastream_id: int) -> int | None:
    """The FeatureOfInterest an Observation of the Datastream gets when it names none: the one
    made from its Thing's (newest) Location, made now if there is none yet (the standard's
    automatic FeatureOfInterest); None for a Thing without a Location."""
    loc = conn.execute(
        "select tl.location_id as id from datastream d"
        " join thing_location tl on tl.thing_id = d.thing_id where d.id = %s"
        " order by tl.location_id desc limit 1",
        (datastream_id,),
    ).fetchone()
    if loc is None:
        return None
    loc_id = int(loc["id"])
    # one request at a time makes the feature of a location, so two requests make one feature
    conn.execute("select pg_advisory_xact_lock(%s, %s)", (0x51465F, loc_id & 0x7FFFFFFF))
    row = conn.execute(
        "select f.id from feature_of_interest f join location l on l.id = %s"
        " where f.name = l.name and f.encoding_type = l.encoding_type"
        " and f.feature ~= l.location and ST_Equals(f.feature, l.location)"
        " order by f.id limit 1",
        (loc_id,),
    ).fetchone()
    if row is None:
        row = conn.execute(
            "insert into feature_of_interest (name, description, encoding_type, feature,"
            " properties) select name, description, encoding_type, location, properties"
            " from location where id = %s returning id",
            (loc_id,),
        ).fetchone()
    assert row is not None
    return int(row["id"])
