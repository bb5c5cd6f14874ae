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

import psycopg
from psycopg import sql

from quartier.errors import BadRequestError, NotFoundError
from quartier.store import sensorthings_count, timeseries
from quartier.store.db import DictConn
from quartier.store.migrate import storage_path

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
    "MultiDatastreams": "m",
}


@dataclass(frozen=True)
class SortKey:
    """One sort key: ``sql`` over the entity's alias, its direction, whether it can be null, the
    PostgreSQL type a keyset cursor value of it is cast back to (``None``: it cannot be carried
    by a cursor) and the entity's column when it is just that column."""

    sql: sql.Composable
    descending: bool = False
    nullable: bool = False
    cast: str | None = None
    column: str | None = None


@dataclass(frozen=True)
class Listing:
    """One page of a collection. ``where`` is SQL over the entity's alias (:data:`ALIASES`) with
    named placeholders whose values are in ``params``; ``keys`` the ``$orderby`` (the primary key
    follows them). ``after``: a keyset cursor, the sort keys' values (as text) of the last row of
    the previous page; the page starts after it (``skip`` is then 0)."""

    top: int
    skip: int = 0
    where: sql.Composable | None = None
    keys: tuple[SortKey, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    after: tuple[str | None, ...] | None = None
    #: Observations: ``where`` says no more than ``start <= phenomenonTime < end`` (either may
    #: be None), so counts may come from the daily rollup (``sensorthings_count``)
    time_range: tuple[datetime | None, datetime | None] | None = None


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

    @property
    def tail(self) -> tuple[SortKey, ...]:
        """The primary key as sort keys (the tie-breakers that make every order total)."""
        return tuple(
            SortKey(
                sql.SQL(k.strip()),
                cast="timestamptz" if k.strip().endswith("_time") else "bigint",
                column=k.strip().split(".")[1],
            )
            for k in self.key.split(",")
        )


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
    "o.datastream_id, o.phenomenon_time, o.result, o.result_json, o.result_time, o.parameters,"
    " o.foi_id, case when o.datastream_id < 0 then -o.datastream_id end as multi_datastream_id",
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

# The MultiDatastream extension: its observations are stored under datastream_id -<its id>.
_MULTI_DATASTREAM = _Collection(
    """m.id, m.name, m.description, m.observation_type, m.multi_observation_data_types,
       m.unit_of_measurements, m.thing_id, m.sensor_id, m.properties,
       ST_AsGeoJSON(m.observed_area)::json as observed_area,
       (select min(o.phenomenon_time) from observation o where o.datastream_id = -m.id) as t_min,
       (select max(o.phenomenon_time) from observation o where o.datastream_id = -m.id) as t_max""",
    "multi_datastream m",
    "m.id",
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
    "MultiDatastreams": _MULTI_DATASTREAM,
}


def _where(
    scope: str, listing: Listing, extra: list[sql.Composable] | None = None
) -> sql.Composable:
    conds: list[sql.Composable] = [sql.SQL(scope)] if scope else []
    if listing.where is not None:
        conds.append(listing.where)
    conds += extra or []
    if not conds:
        return sql.SQL("")
    return sql.SQL(" where ") + sql.SQL(" and ").join(conds)


def _keys(c: _Collection, listing: Listing) -> list[SortKey]:
    """``listing``'s keys, then the primary key's columns it does not already sort by."""
    named = {k.column for k in listing.keys if k.column and not k.nullable}
    return [*listing.keys, *(k for k in c.tail if k.column not in named)]


def _order_by(keys: list[SortKey]) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("{} " + ("desc" if k.descending else "asc")).format(k.sql) for k in keys
    )


def _cursor_columns(keys: list[SortKey]) -> sql.Composable:
    """The sort keys' values as text (``_k0`` …): what the next page's keyset cursor carries."""
    if any(k.cast is None for k in keys):
        return sql.SQL("")
    return sql.SQL("").join(
        sql.SQL(", ({})::text as {}").format(k.sql, sql.Identifier(f"_k{i}"))
        for i, k in enumerate(keys)
    )


def keyset_capable(listing: Listing) -> bool:
    """Whether pages of ``listing`` can continue by a keyset cursor (every key castable)."""
    return all(k.cast is not None for k in listing.keys)


def _after(
    keys: list[SortKey], values: tuple[str | None, ...]
) -> tuple[sql.Composable, dict[str, Any]]:
    """The condition "sorts after ``values``" (PostgreSQL's order: nulls last ascending, first
    descending), and its parameters. A leading bound on the first key lets an index serve it."""
    if len(values) != len(keys):
        raise BadRequestError("$skiptoken does not belong to this query; start again without it")
    params: dict[str, Any] = {}
    ties: list[sql.Composable] = []
    branches: list[sql.Composable] = []
    lead: sql.Composable | None = None
    for i, (k, v) in enumerate(zip(keys, values, strict=True)):
        name = f"_c{i}"
        params[name] = v
        p = sql.SQL("%({})s::text::" + str(k.cast)).format(sql.SQL(name))
        if v is None and not k.nullable:
            raise BadRequestError("$skiptoken is not valid; start again without it")
        if v is None:
            beyond: sql.Composable | None = (
                sql.SQL("({} is not null)").format(k.sql) if k.descending else None
            )
            tie: sql.Composable = sql.SQL("({} is null)").format(k.sql)
        else:
            op = "<" if k.descending else ">"
            beyond = sql.SQL("({} " + op + " {})").format(k.sql, p)
            if k.nullable and not k.descending:
                beyond = sql.SQL("({} or {} is null)").format(beyond, k.sql)
            tie = sql.SQL("({} = {})").format(k.sql, p)
            if i == 0 and not k.nullable:
                lead = sql.SQL("({} " + op + "= {})").format(k.sql, p)
        if beyond is not None:
            branches.append(sql.SQL("({})").format(sql.SQL(" and ").join([*ties, beyond])))
        ties.append(tie)
    cond = sql.SQL("({})").format(sql.SQL(" or ").join(branches)) if branches else sql.SQL("false")
    if lead is not None:
        cond = sql.SQL("({} and {})").format(lead, cond)
    return cond, params


def _page_statement(
    c: _Collection,
    columns: sql.Composable,
    source: sql.Composable,
    scope: str,
    scope_id: int | None,
    listing: Listing,
) -> tuple[sql.Composed, dict[str, Any]]:
    """The statement of one page (plus one row) of ``c``'s ``columns`` from ``source``, the
    keyset cursor columns after them, and its parameters: ``listing``'s condition, order,
    cursor, ``$top`` and ``$skip``."""
    keys = _keys(c, listing)
    params: dict[str, Any] = {
        **listing.params,
        "_scope": scope_id,
        "_top": listing.top + 1,
        "_skip": listing.skip,
    }
    extra: list[sql.Composable] = []
    if listing.after is not None:
        cond, cursor = _after(keys, listing.after)
        extra.append(cond)
        params.update(cursor)
    where = _where(scope, listing, extra)
    query = sql.SQL("select {}{} from {}{} order by {} limit %(_top)s offset %(_skip)s").format(
        columns, _cursor_columns(keys), source, where, _order_by(keys)
    )
    return query, params


def observation_page_statement(
    columns: sql.Composable, source: sql.Composable, scope: str, scope_id: int, listing: Listing
) -> tuple[sql.Composed, dict[str, Any]]:
    """:func:`_select_page`'s statement for a page of Observations with other ``columns``
    (``api/sta_fastpage.py`` reads them in binary), and its parameters."""
    return _page_statement(_OBSERVATION, columns, source, scope, scope_id, listing)


def _select_page(
    conn: DictConn,
    c: _Collection,
    source: sql.Composable,
    scope: str,
    scope_id: int | None,
    listing: Listing,
) -> list[dict[str, Any]]:
    """One page (plus one row) of ``c`` from ``source``, with the keyset cursor columns."""
    query, params = _page_statement(c, sql.SQL(c.columns), source, scope, scope_id, listing)
    try:
        return conn.execute(query, params).fetchall()
    except psycopg.errors.DataError:
        if listing.after is None:
            raise
        raise BadRequestError("$skiptoken is not valid; start again without it") from None


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
    source = sql.SQL(_OBSERVATION.source)
    return _select_page(conn, _OBSERVATION, source, _OF_DATASTREAM, ds_id, listing)


def multi_observations(conn: DictConn, mds_id: int, listing: Listing) -> list[dict[str, Any]]:
    """A page of one MultiDatastream's observations (stored under datastream_id -``mds_id``, so
    a ``phenomenonTime`` filter is a range scan of the primary key as for a Datastream)."""
    if conn.execute("select 1 from multi_datastream where id = %s", (mds_id,)).fetchone() is None:
        raise NotFoundError(f"no MultiDatastream with @iot.id {mds_id}")
    source = sql.SQL(_OBSERVATION.source)
    return _select_page(conn, _OBSERVATION, source, _OF_DATASTREAM, -mds_id, listing)


def count_multi_observations(
    conn: DictConn, mds_id: int, listing: Listing, *, rollup_floor: datetime | None = None
) -> int:
    """How many observations of one MultiDatastream match ``listing``'s condition (without a
    condition on plain PostgreSQL: from the daily rollup, exactly, ``sensorthings_count``;
    ``rollup_floor``: ``sensorthings_count.rollup_floor``)."""
    if _rollup_countable(conn, listing):
        return _rollup_count(conn, -mds_id, listing, rollup_floor)
    return _count(conn, _OBSERVATION, listing, _OF_DATASTREAM, -mds_id)


def multi_datastream_size(conn: DictConn, mds_id: int) -> int | None:
    """How many values an observation of the MultiDatastream has (None: there is none)."""
    row = conn.execute(
        "select jsonb_array_length(multi_observation_data_types) as n from multi_datastream"
        " where id = %s",
        (mds_id,),
    ).fetchone()
    return None if row is None else int(row["n"])


def observation(conn: DictConn, ds_id: int, time: datetime) -> dict[str, Any]:
    """One observation by its primary key (the parts of its derived @iot.id)."""
    row = conn.execute(
        f"{_OBSERVATION.select} where o.datastream_id = %s and o.phenomenon_time = %s",
        (ds_id, time),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no Observation of Datastream {ds_id} at {time.isoformat()}")
    return row


def observations_at(conn: DictConn, datastream_ids: Any, times: Any) -> list[dict[str, Any]]:
    """The observations at these primary keys (pairs of ``datastream_ids[i]``, ``times[i]``:
    arrays psycopg sends as ``int8[]`` and ``timestamptz[]``, e.g. ``pgcopy.Int8Array``), as
    rows the API shapes; keys without an observation give none, in no particular order."""
    return conn.execute(
        f"select {_OBSERVATION.columns} from observation o"
        " join unnest(%s::int8[], %s::timestamptz[]) as k(d, t)"
        " on o.datastream_id = k.d and o.phenomenon_time = k.t",
        (datastream_ids, times),
    ).fetchall()


def _rollup_countable(conn: DictConn, listing: Listing) -> bool:
    """Whether Observations of ``listing`` are counted from the daily rollup: on plain
    PostgreSQL, without a condition or with only a ``phenomenonTime`` range."""
    if listing.where is not None and listing.time_range is None:
        return False
    return storage_path(conn) == "postgres"


def _rollup_count(
    conn: DictConn, scope: int | None, listing: Listing, rollup_floor: datetime | None
) -> int:
    start, end = listing.time_range or (None, None)
    return sensorthings_count.count(conn, scope, floor=rollup_floor, start=start, end=end)


def count_observations(
    conn: DictConn, ds_id: int, listing: Listing, *, rollup_floor: datetime | None = None
) -> tuple[int, bool]:
    """(count, exact). Without a filter: on plain PostgreSQL exactly from the daily rollup
    (``sensorthings_count``, ``rollup_floor`` as there); on TimescaleDB exact where cheap, an
    estimate on very large datastreams (``timeseries.count_observations``). With one, the
    matching rows are counted."""
    if _rollup_countable(conn, listing):
        return _rollup_count(conn, ds_id, listing, rollup_floor), True
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
    scope_id = None if within is None else within.parent_id
    return _select_page(conn, c, source, scope, scope_id, listing)


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


#: TimescaleDB: above this many observations (the planner's estimate), ``$count`` on the
#: unfiltered ``/Observations`` is that estimate, declared as one (FROST's count mode
#: "ESTIMATE_LIMIT"): counting 10^7 rows takes seconds, the estimate a millisecond. Plain
#: PostgreSQL counts them exactly from the daily rollup (``sensorthings_count``).
OBSERVATIONS_EXACT_COUNT_LIMIT = timeseries.EXACT_COUNT_LIMIT


def count_collection(
    conn: DictConn,
    entity_set: str,
    listing: Listing,
    within: Within | None = None,
    *,
    rollup_floor: datetime | None = None,
) -> tuple[int, bool]:
    """``(count, exact)`` for ``@iot.count``: :func:`count_entities`, except for all
    Observations unfiltered: on plain PostgreSQL summed exactly from the daily rollup
    (``sensorthings_count``, ``rollup_floor`` as there), on TimescaleDB counted only up to
    :data:`OBSERVATIONS_EXACT_COUNT_LIMIT` and estimated by the planner (from the statistics
    ANALYZE keeps) above it."""
    if entity_set == "Observations" and within is None and _rollup_countable(conn, listing):
        return _rollup_count(conn, None, listing, rollup_floor), True
    if entity_set == "Observations" and within is None and listing.where is None:
        row = conn.execute("explain (format json) select 1 from observation").fetchone()
        assert row is not None
        estimate = int(next(iter(row.values()))[0]["Plan"]["Plan Rows"])
        if estimate > OBSERVATIONS_EXACT_COUNT_LIMIT:
            return estimate, False
    return count_entities(conn, entity_set, listing, within), True


def entity(conn: DictConn, entity_set: str, entity_type: str, entity_id: int) -> dict[str, Any]:
    """One entity of ``entity_set`` by its integer @iot.id."""
    return _one(conn, _COLLECTIONS[entity_set], entity_type, entity_id)


# ------------------------------------------------------------------------- $expand
def expand_many(
    conn: DictConn,
    entity_set: str,
    source: sql.Composable,
    on: sql.Composable,
    parent_table: str,
    parent_ids: list[int],
    listing: Listing,
) -> list[dict[str, Any]]:
    """For each parent (``parent_table`` rows ``parent_ids``, aliased ``_p``), one page (plus one
    row) of its related ``entity_set`` entities: ``source`` and ``on`` as compiled by
    ``compile_navigation``. Each row carries its parent's id as ``_parent``. A LATERAL subquery
    with its own ORDER BY and LIMIT per parent, so "the latest observation of each datastream"
    reads one index entry per datastream, not the datastreams' observations."""
    if not parent_ids:
        return []
    c = _COLLECTIONS[entity_set]
    keys = _keys(c, listing)
    conds: list[sql.Composable] = [on]
    if listing.where is not None:
        conds.append(listing.where)
    query = sql.SQL(
        "select _p.id as _parent, _x.* from {} _p cross join lateral"
        " (select {} from {} where {} order by {} limit %(_top)s offset %(_skip)s) _x"
        " where _p.id = any(%(_ids)s) order by _p.id"
    ).format(
        sql.Identifier(parent_table),
        sql.SQL(c.columns),
        source,
        sql.SQL(" and ").join(conds),
        _order_by(keys),
    )
    params = {
        **listing.params,
        "_ids": parent_ids,
        "_top": listing.top + 1,
        "_skip": listing.skip,
    }
    return conn.execute(query, params).fetchall()


def count_many(
    conn: DictConn,
    source: sql.Composable,
    on: sql.Composable,
    parent_table: str,
    parent_ids: list[int],
    listing: Listing,
) -> dict[int, int]:
    """For each parent, how many related entities match ``listing``'s condition."""
    if not parent_ids:
        return {}
    conds: list[sql.Composable] = [on]
    if listing.where is not None:
        conds.append(listing.where)
    query = sql.SQL(
        "select _p.id as _parent, (select count(*) from {} where {}) as n"
        " from {} _p where _p.id = any(%(_ids)s)"
    ).format(source, sql.SQL(" and ").join(conds), sql.Identifier(parent_table))
    rows = conn.execute(query, {**listing.params, "_ids": parent_ids}).fetchall()
    return {int(r["_parent"]): int(r["n"]) for r in rows}


def by_ids(
    conn: DictConn, entity_set: str, ids: list[int], listing: Listing
) -> dict[int, dict[str, Any]]:
    """Entities of ``entity_set`` (not Observations) by id, those matching ``listing``'s
    condition: the targets of a to-one ``$expand``."""
    if not ids:
        return {}
    c = _COLLECTIONS[entity_set]
    conds: list[sql.Composable] = [sql.SQL(c.key + " = any(%(_ids)s)")]
    if listing.where is not None:
        conds.append(listing.where)
    query = sql.SQL("select {} from {} where {}").format(
        sql.SQL(c.columns), sql.SQL(c.source), sql.SQL(" and ").join(conds)
    )
    rows = conn.execute(query, {**listing.params, "_ids": ids}).fetchall()
    return {int(r["id"]): r for r in rows}
