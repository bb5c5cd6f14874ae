"""The SensorThings writes other than storing observations (which the ingest writer does, see
``quartier.ingest.writer``): entities inserted, updated and deleted, links between them, the
automatic HistoricalLocation and FeatureOfInterest. Plain data in (column → value, already
checked by ``quartier.api.sta.body``), ids out; the caller owns the transaction.

Cascades of a DELETE (OGC 18-088, 10.4): a Thing takes its Datastreams and MultiDatastreams (and
their Observations) and HistoricalLocations; a Location its links to Things and
HistoricalLocations (a HistoricalLocation left without Locations goes too); a Sensor or
ObservedProperty its Datastreams and MultiDatastreams; a (Multi)Datastream its Observations; a
FeatureOfInterest its Observations. Observations have no foreign key to their Datastream (the
hypertable/partitions carry none), so their deletion is done here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from quartier.errors import BadRequestError, ConflictError, NotFoundError
from quartier.store.db import DictConn
from quartier.store.timeseries import ORIGIN

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
    "MultiDatastreams": "multi_datastream",
}
#: Columns that hold a geometry (sent as GeoJSON, stored in EPSG:4326).
GEOMETRY_COLUMNS = {"location", "feature", "observed_area"}
#: Columns that hold JSON.
JSON_COLUMNS = {
    "properties",
    "unit_of_measurement",
    "multi_observation_data_types",
    "unit_of_measurements",
}


def _singular(entity_set: str) -> str:
    """``ObservedProperties`` -> ``ObservedProperty``, ``FeaturesOfInterest`` ->
    ``FeatureOfInterest``, ``Things`` -> ``Thing`` (for messages)."""
    if entity_set.endswith("ies"):
        return entity_set[:-3] + "y"
    if entity_set.startswith("FeaturesOf"):
        return "Feature" + entity_set[len("Features") :]
    return entity_set.removesuffix("s")


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


def existing(conn: Executor, entity_set: str, ids: list[int]) -> set[int]:
    """Which of ``ids`` are entities of ``entity_set``."""
    if not ids:
        return set()
    query = sql.SQL("select id from {} where id = any(%s)").format(
        sql.Identifier(TABLES[entity_set])
    )
    return {int(r["id"]) for r in conn.execute(query, (ids,)).fetchall()}


def require(conn: Executor, entity_set: str, entity_id: int, where: str) -> None:
    """400 (naming ``where`` in the body) unless entity ``entity_id`` of ``entity_set`` exists."""
    if not exists(conn, entity_set, entity_id):
        what = _singular(entity_set)
        raise BadRequestError(f"{where}: there is no {what} with @iot.id {entity_id}")


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
        raise NotFoundError(f"no {_singular(entity_set)} with @iot.id {entity_id}")


def link_location(conn: Executor, thing_id: int, location_ids: list[int], at: datetime) -> int:
    """Make ``location_ids`` the Thing's Locations and record that as a HistoricalLocation
    (the standard's automatic one); its id."""
    conn.execute(
        "insert into thing_location (thing_id, location_id) select %s, unnest(%s::int8[])"
        " on conflict do nothing",
        (thing_id, location_ids),
    )
    return _historical_location(conn, thing_id, location_ids, at)


def _historical_location(
    conn: Executor, thing_id: int, location_ids: list[int], at: datetime
) -> int:
    row = conn.execute(
        "insert into historical_location (thing_id, time) values (%s, %s) returning id",
        (thing_id, at),
    ).fetchone()
    assert row is not None
    conn.execute(
        "insert into historical_location_location (historical_location_id, location_id)"
        " select distinct %s::int8, unnest(%s::int8[])",
        (row["id"], location_ids),
    )
    return int(row["id"])


def add_historical_location(
    conn: Executor, thing_id: int, location_ids: list[int], at: datetime
) -> int:
    """A HistoricalLocation a client creates (OGC 18-088, A.3): the Thing was at
    ``location_ids`` from ``at``; its id. When no other HistoricalLocation of the Thing is later
    than ``at``, those become the Thing's current Locations (as FROST-Server does), so that
    ``Things(id)/Locations`` and the newest HistoricalLocation agree; an older one only adds to
    the history."""
    # one request at a time decides which HistoricalLocation of a Thing is the newest
    conn.execute("select pg_advisory_xact_lock(%s, %s)", (0x51484C, thing_id & 0x7FFFFFFF))
    later = conn.execute(
        "select 1 from historical_location where thing_id = %s and time > %s limit 1",
        (thing_id, at),
    ).fetchone()
    hl_id = _historical_location(conn, thing_id, location_ids, at)
    if later is None:
        conn.execute("delete from thing_location where thing_id = %s", (thing_id,))
        conn.execute(
            "insert into thing_location (thing_id, location_id)"
            " select distinct %s::int8, unnest(%s::int8[])",
            (thing_id, location_ids),
        )
    return hl_id


def set_locations(conn: Executor, thing_id: int, location_ids: list[int], at: datetime) -> int:
    """The Thing's current Locations become ``location_ids`` (a Thing that moved)."""
    conn.execute("delete from thing_location where thing_id = %s", (thing_id,))
    return link_location(conn, thing_id, location_ids, at)


def set_historical_locations(conn: Executor, hl_id: int, location_ids: list[int]) -> None:
    """The Locations a HistoricalLocation records become ``location_ids`` (a correction of
    the history; the Thing's current Locations stay)."""
    conn.execute(
        "delete from historical_location_location where historical_location_id = %s", (hl_id,)
    )
    conn.execute(
        "insert into historical_location_location (historical_location_id, location_id)"
        " select distinct %s::int8, unnest(%s::int8[])",
        (hl_id, location_ids),
    )


def observation_feature(
    conn: Executor,
    datastream_id: int,
    linked: int | None,
    described: dict[str, Any] | None,
    where: str = "",
) -> int | None:
    """The FeatureOfInterest of a new Observation of ``datastream_id``: the one it links
    (``linked``, checked: a 400 naming ``where``), one made from the columns it describes
    (``described``), or else the automatic one (:func:`feature_of_datastream`). Every way an
    Observation is created (REST, ``$batch``, MQTT) resolves it here."""
    if linked is not None:
        require(conn, "FeaturesOfInterest", linked, f"{where}FeatureOfInterest")
        return linked
    if described is not None:
        return insert(conn, "FeaturesOfInterest", described)
    return feature_of_datastream(conn, datastream_id)


def feature_of_datastream(conn: Executor, datastream_id: int) -> int | None:
    """The FeatureOfInterest an Observation of the Datastream gets when it names none: the one
    made from its Thing's (newest) Location, made now if there is none yet (the standard's
    automatic FeatureOfInterest); None for a Thing without a Location. A MultiDatastream's
    observations (``datastream_id`` -<its id>) get its Thing's."""
    loc = conn.execute(
        "select tl.location_id as id from"
        " (select thing_id from datastream where id = %(d)s"
        "  union all select thing_id from multi_datastream where id = -(%(d)s::int8)) d"
        " join thing_location tl on tl.thing_id = d.thing_id"
        " order by tl.location_id desc limit 1",
        {"d": datastream_id},
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


# ----------------------------------------------------------------------------- MultiDatastreams
def link_observed_properties(conn: Executor, mds_id: int, property_ids: list[int]) -> None:
    """The MultiDatastream's ObservedProperties, in the order of its results."""
    conn.execute(
        "insert into multi_datastream_observed_property"
        " (multi_datastream_id, position, observed_property_id)"
        " select %s, p.i - 1, p.id from unnest(%s::int8[]) with ordinality as p(id, i)",
        (mds_id, property_ids),
    )


def multi_datastream_types(conn: Executor, mds_id: int) -> list[str] | None:
    """The multiObservationDataTypes of a MultiDatastream (one per value of a result); None when
    there is no such MultiDatastream."""
    row = conn.execute(
        "select multi_observation_data_types as t from multi_datastream where id = %s", (mds_id,)
    ).fetchone()
    return None if row is None else list(row["t"])


def check_multi_datastream(
    conn: Executor, mds_id: int, changes: dict[str, Any] | None = None
) -> None:
    """400 unless the MultiDatastream has (once ``changes``, column → value, are made) as many
    ObservedProperties as unitOfMeasurements and multiObservationDataTypes."""
    row = conn.execute(
        "select jsonb_array_length(m.multi_observation_data_types) as types,"
        " jsonb_array_length(m.unit_of_measurements) as units,"
        " (select count(*) from multi_datastream_observed_property x"
        "  where x.multi_datastream_id = m.id) as props"
        " from multi_datastream m where m.id = %s",
        (mds_id,),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no MultiDatastream with @iot.id {mds_id}")
    row = dict(row)
    for column, key in (
        ("multi_observation_data_types", "types"),
        ("unit_of_measurements", "units"),
    ):
        if changes and changes.get(column) is not None:
            row[key] = len(changes[column])
    if not row["types"] == row["units"] == row["props"]:
        raise BadRequestError(
            f"MultiDatastream {mds_id} would have {row['props']} ObservedProperties,"
            f" {row['units']} unitOfMeasurements and {row['types']} multiObservationDataTypes:"
            " one of each per value of its results, in the same order"
        )


def _delete_multi_datastreams(conn: Executor, ids: list[int]) -> None:
    """Delete MultiDatastreams with their observations (stored under datastream_id -id)."""
    if not ids:
        return
    negative = [-i for i in ids]
    delete_observations(conn, sql.SQL("o.datastream_id = any(%(_ds)s)"), {"_ds": negative})
    conn.execute("delete from observation_latest where datastream_id = any(%s)", (negative,))
    conn.execute("delete from multi_datastream where id = any(%s)", (ids,))


#: The MultiDatastreams a DELETE of an entity takes with it (OGC 18-088, A.5: as Datastreams).
_MULTI_OF = {
    "Things": "select id from multi_datastream where thing_id = %s",
    "Sensors": "select id from multi_datastream where sensor_id = %s",
    "ObservedProperties": "select distinct multi_datastream_id as id"
    " from multi_datastream_observed_property where observed_property_id = %s",
    "MultiDatastreams": "select id from multi_datastream where id = %s",
}


# ----------------------------------------------------------------------------- deletes
def _observations_changed(conn: Executor, where: sql.Composable, params: dict[str, Any]) -> None:
    """Before observations matching ``where`` (over ``o``) are deleted or changed: their
    15-minute buckets are marked for the rollups' refresh (plain PostgreSQL path; TimescaleDB's
    continuous aggregates refresh themselves)."""
    row = conn.execute("select to_regclass('observation_dirty') is not null as has").fetchone()
    if row is None or not row["has"]:
        return
    conn.execute(
        sql.SQL(
            "insert into observation_dirty (datastream_id, bucket)"
            " select distinct o.datastream_id,"
            " date_bin('15 minutes', o.phenomenon_time, %(_origin)s) from observation o"
            " where {} on conflict do nothing"
        ).format(where),
        {**params, "_origin": ORIGIN},
    )


def refresh_latest(conn: Executor, datastream_ids: list[int]) -> None:
    """``observation_latest`` of these Datastreams again from their observations (after a
    delete or a change of the newest one)."""
    conn.execute("delete from observation_latest where datastream_id = any(%s)", (datastream_ids,))
    conn.execute(
        "insert into observation_latest (datastream_id, phenomenon_time, result)"
        " select d, x.phenomenon_time, x.result from unnest(%s::int8[]) as d"
        " cross join lateral (select o.phenomenon_time, o.result from observation o"
        "  where o.datastream_id = d order by o.phenomenon_time desc limit 1) x",
        (datastream_ids,),
    )


def delete_observations(conn: Executor, where: sql.Composable, params: dict[str, Any]) -> int:
    """Delete the observations matching ``where`` (over ``o``), keeping the rollups and the
    latest values right; how many."""
    _observations_changed(conn, where, params)
    rows = conn.execute(
        sql.SQL("delete from observation o where {} returning o.datastream_id").format(where),
        params,
    ).fetchall()
    touched = sorted({int(r["datastream_id"]) for r in rows})
    if touched:
        refresh_latest(conn, touched)
    return len(rows)


def update_observation(
    conn: Executor, datastream_id: int, time: datetime, values: dict[str, Any]
) -> None:
    """Set ``values`` (columns of ``observation``) on one observation (404 when there is none)."""
    key = {"_d": datastream_id, "_t": time}
    where = sql.SQL("o.datastream_id = %(_d)s and o.phenomenon_time = %(_t)s")
    if "result" in values or "result_json" in values:
        _observations_changed(conn, where, key)
    params = dict(key)
    sets = []
    for i, (column, value) in enumerate(values.items()):
        name = f"_v{i}"
        params[name] = (
            Jsonb(value) if column in ("result_json", "parameters") and value is not None else value
        )
        sets.append(sql.SQL("{} = %({})s").format(sql.Identifier(column), sql.SQL(name)))
    cur = conn.execute(
        sql.SQL("update observation o set {} where {}").format(sql.SQL(", ").join(sets), where),
        params,
    )
    if cur.rowcount == 0:
        raise NotFoundError(f"no Observation of Datastream {datastream_id} at {time.isoformat()}")
    if "result" in values:
        refresh_latest(conn, [datastream_id])


def _delete_datastreams(conn: Executor, ids: list[int]) -> None:
    if not ids:
        return
    delete_observations(conn, sql.SQL("o.datastream_id = any(%(_ds)s)"), {"_ds": ids})
    conn.execute("delete from observation_latest where datastream_id = any(%s)", (ids,))
    conn.execute("delete from datastream where id = any(%s)", (ids,))


#: the devices (network, key) whose readings feed an entity: a Thing, or the Datastreams of a
#: Datastream, Sensor or ObservedProperty
_FED_BY = {
    "Things": "select d.network, d.device_key from device d where d.thing_id = %s",
    "Datastreams": "select d.network, d.device_key from device d join device_datastream dd"
    " on dd.device_id = d.id where dd.datastream_id = %s",
    "Sensors": "select d.network, d.device_key from device d join device_datastream dd"
    " on dd.device_id = d.id join datastream s on s.id = dd.datastream_id where s.sensor_id = %s",
    "ObservedProperties": "select d.network, d.device_key from device d join device_datastream dd"
    " on dd.device_id = d.id join datastream s on s.id = dd.datastream_id"
    " where s.observed_property_id = %s",
}


def _refuse_device_fed(conn: Executor, entity_set: str, entity_id: int) -> None:
    """A registered device's Thing or Datastreams are not deleted over the API: its readings go
    on arriving, and a running ingester, which keeps the device's ids, would go on writing to
    them. The device is stopped first (``quartier devices revoke``), then erased with its data
    (``quartier privacy erase``)."""
    query = _FED_BY.get(entity_set)
    if query is None:
        return
    rows = conn.execute(query + " limit 3", (entity_id,)).fetchall()
    if rows:
        devices = ", ".join(f"{r['network']}/{r['device_key']}" for r in rows)
        raise ConflictError(
            f"{entity_set}({entity_id}) is fed by the registered device(s) {devices}, whose "
            "readings go on arriving: revoke the device (quartier devices revoke) and erase it "
            "with its data (quartier privacy erase --device …) instead"
        )


def delete(conn: Executor, entity_set: str, entity_id: int) -> None:
    """Delete one entity with the cascades of the standard (see the module's docstring); 404
    when there is none."""
    if not exists(conn, entity_set, entity_id):
        raise NotFoundError(f"no {_singular(entity_set)} with @iot.id {entity_id}")
    _refuse_device_fed(conn, entity_set, entity_id)
    if entity_set in _MULTI_OF:
        rows = conn.execute(_MULTI_OF[entity_set], (entity_id,)).fetchall()
        _delete_multi_datastreams(conn, [int(r["id"]) for r in rows])
        if entity_set == "MultiDatastreams":
            return
    table = TABLES[entity_set]
    column = {
        "Things": "thing_id",
        "Sensors": "sensor_id",
        "ObservedProperties": "observed_property_id",
        "Datastreams": "id",
    }.get(entity_set)
    if column is not None:
        rows = conn.execute(
            sql.SQL("select id from datastream where {} = %s").format(sql.Identifier(column)),
            (entity_id,),
        ).fetchall()
        _delete_datastreams(conn, [int(r["id"]) for r in rows])
    if entity_set == "FeaturesOfInterest":
        delete_observations(conn, sql.SQL("o.foi_id = %(_f)s"), {"_f": entity_id})
    orphans: list[int] = []
    if entity_set == "Locations":
        rows = conn.execute(
            "select historical_location_id as id from historical_location_location"
            " where location_id = %s",
            (entity_id,),
        ).fetchall()
        orphans = [int(r["id"]) for r in rows]
    if entity_set != "Datastreams":
        conn.execute(
            sql.SQL("delete from {} where id = %s").format(sql.Identifier(table)), (entity_id,)
        )
    if orphans:  # HistoricalLocations left without any Location
        conn.execute(
            "delete from historical_location h where h.id = any(%s) and not exists"
            " (select 1 from historical_location_location x where x.historical_location_id = h.id)",
            (orphans,),
        )
