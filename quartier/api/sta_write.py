"""OGC SensorThings API v1.1 writes (create-update-delete, ``CreateObservations``).

Every write needs an API key: Observations the scope ``observations:write``, other entities
``entities:write`` (``admin`` either); ``api.auth.require_scope`` answers 401/403 before anything
is read and records the audit row once the write succeeded. Bodies are checked by
``quartier.api.sta.body`` (a 400 names the field) before the database is touched.

One place decides what is stored: every write runs on the ingest writer's connection, in one
transaction of ``BatchWriter.write`` (the ingest database login, ``database.ingest_url``).
Observations are a ``Batch``'s ``observations``, stored as MQTT readings are (COPY, first
stored wins on (datastream, phenomenonTime), the rollups and latest values kept current);
entities a deep insert creates, links, the automatic HistoricalLocation and FeatureOfInterest
are made by ``prepare`` in the same transaction (``quartier.store.sta_write``), so a refused
request stores nothing.

An Observation's ``@iot.id`` is derived from (Datastream, phenomenonTime). A second Observation
of a Datastream at the same phenomenonTime is a 409 Conflict naming the stored one, and
nothing changes (PATCH the stored one to change its result); in ``CreateObservations`` that
row's answer is the error, the other rows are stored.

Every answer with one entity carries its ETag (``quartier.api.sta_etag``); PATCH, PUT and
DELETE honour ``If-Match`` / ``If-None-Match``, checked in the write's transaction on the
entity's locked row (412 and nothing changed when they do not hold).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import dict_row

from quartier.api import models as m
from quartier.api.auth import Caller, require_scope
from quartier.api.deps import AppSettings, BaseUrl, Conn
from quartier.api.sensorthings import (
    PREFIX,
    iso,
    observation_id,
    parse_observation_id,
    shape,
)
from quartier.api.sta import ENTITY_SETS
from quartier.api.sta import body as b
from quartier.api.sta_etag import Conditions, conditions, tag_of
from quartier.config import Settings
from quartier.errors import BadRequestError, ConflictError, NotFoundError, PermissionDeniedError
from quartier.ingest.model import Batch, Observation, WriteResult
from quartier.ingest.writer import BatchWriter
from quartier.store import sensorthings as q
from quartier.store import sta_write as w
from quartier.store.db import Conn as RawConn
from quartier.store.db import DictConn

router = APIRouter(prefix=PREFIX, tags=["SensorThings API v1.1"])
OBSERVATIONS = [require_scope("observations:write")]
ENTITIES_ = [require_scope("entities:write")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body is invalid; the message names the field; nothing stored"},
    401: {"description": "no valid API key; nothing stored"},
    403: {"description": "the key lacks the scope; nothing stored"},
}
#: the answers of a PATCH, PUT or DELETE, which honour If-Match / If-None-Match
_CONDITIONAL: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    412: {
        "description": "If-Match / If-None-Match does not hold (the entity changed); nothing"
        " changed"
    },
}
Json = Annotated[Any, Body(description="the entity as JSON (OGC 18-088)")]


# --------------------------------------------------------------------------- the writer
#: The ASGI scope key of a request dispatched inside a ``$batch`` change set
#: (``quartier.api.sta_batch``): its :class:`Held` transaction, which the request writes in and
#: reads its checks and answer from.
CHANGESET = "quartier.changeset"


@contextmanager
def _store_errors() -> Iterator[None]:
    """The database's refusals of a write as the API's errors."""
    try:
        yield
    except pg_errors.UniqueViolation as exc:
        raise ConflictError(_unique_message(exc)) from None
    except (pg_errors.DataError, pg_errors.InternalError) as exc:
        # PostGIS refuses a geometry it cannot read (ST_GeomFromGeoJSON)
        detail = (exc.diag.message_primary or "invalid value").strip()
        raise BadRequestError(f"a value is not valid: {detail}") from None


class _Writer:
    """The app's one SensorThings writer (a BatchWriter owns one connection), used under a
    lock; it logs in as the ingester does."""

    def __init__(self, settings: Settings) -> None:
        self.lock = threading.Lock()
        self.url = settings.database.ingest_url or settings.require_database_url()
        self.cfg = settings.ingest
        self.personal = settings.privacy.personal_networks
        self.writer: BatchWriter | None = None

    def _batch_writer(self) -> BatchWriter:
        if self.writer is None:
            self.writer = self.spare()
        return self.writer

    def spare(self) -> BatchWriter:
        """A writer with a connection of its own, as this one logs in: a ``$batch`` holds a
        change set's transaction across several requests in it (:class:`Held`), which must not
        hold up the app's other writes, nor the threads they wait in, meanwhile."""
        return BatchWriter(
            self.url,
            auto_register=False,
            reject_payload_max_bytes=self.cfg.reject_payload_max_bytes,
            personal_networks=self.personal,
        )

    def write(
        self,
        batch: Batch,
        prepare: Callable[[RawConn], None] | None = None,
        all_or_nothing: bool = False,
    ) -> WriteResult:
        with self.lock, _store_errors():
            return self._batch_writer().write(batch, prepare, all_or_nothing)

    def close(self) -> None:
        with self.lock:
            if self.writer is not None:
                self.writer.close()


class Held:
    """A change set's transaction on a spare writer (:meth:`_Writer.spare`), from here until
    :meth:`end`: the writes of its requests, and the reads of their checks and answers (which
    must see what the change set wrote), all on that writer's connection."""

    #: PostgreSQL ends a change set's session that waits longer than this between its
    #: requests: its locks then cannot hold up other writes for long (e.g. a write of the same
    #: Observation waiting for them while it holds the app writer's lock and its thread)
    IDLE_TIMEOUT = "30s"

    def __init__(self, wr: BatchWriter) -> None:
        self.wr = wr
        self.conn = wr.begin()
        self.conn.execute(
            "select set_config('idle_in_transaction_session_timeout', %s, true)",
            (self.IDLE_TIMEOUT,),
        )
        self.open = True

    def write(
        self,
        batch: Batch,
        prepare: Callable[[RawConn], None] | None = None,
        all_or_nothing: bool = False,
    ) -> WriteResult:
        with _store_errors():
            return self.wr.write(batch, prepare, all_or_nothing)

    def reads(self) -> DictConn:
        """A cursor in the transaction with dict rows: the store's reads only ``execute`` and
        fetch, which a cursor does as a connection does."""
        return cast(DictConn, self.conn.cursor(row_factory=dict_row))

    def end(self, commit: bool) -> None:
        """Commit or roll back (once)."""
        if self.open:
            self.open = False
            with _store_errors():
                self.wr.end(commit)


def _unique_message(exc: pg_errors.UniqueViolation) -> str:
    if exc.diag.table_name == "observed_property":
        return (
            "an ObservedProperty with this definition exists: link it by its @iot.id instead"
            " of creating it again"
        )
    return f"the entity exists already ({exc.diag.constraint_name})"


def writer(request: Request) -> _Writer | Held:
    """The app's writer, or inside a ``$batch`` change set its held transaction."""
    held: Held | None = request.scope.get(CHANGESET)
    return held if held is not None else app_writer(request)


def app_writer(request: Request) -> _Writer:
    """The app's one writer (made on first use)."""
    state = request.app.state
    if not hasattr(state, "sta_writer"):
        state.sta_writer = _Writer(state.settings)
    wr: _Writer = state.sta_writer
    return wr


def _reads(request: Request, conn: DictConn) -> DictConn:
    """Where a write's checks and answer read: the pooled connection, or inside a ``$batch``
    change set its transaction (which sees what the change set wrote before)."""
    held: Held | None = request.scope.get(CHANGESET)
    return conn if held is None else held.reads()


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _cursor(conn: RawConn) -> Iterator[w.Executor]:
    with conn.cursor(row_factory=dict_row) as cur:
        yield cur


def _created(body: dict[str, Any], link: str, tag: str) -> JSONResponse:
    return JSONResponse(body, status_code=201, headers={"Location": link, "ETag": tag})


def _etag(entity_set: str, row: dict[str, Any]) -> str:
    """The ETag of an entity's row (``quartier.api.sta_etag``)."""
    return tag_of(shape(entity_set, row, ""))


def _entity_answer(entity_set: str, row: dict[str, Any], base: str) -> JSONResponse:
    body = shape(entity_set, row, base).model_dump(mode="json", by_alias=True)
    return JSONResponse(body, headers={"ETag": _etag(entity_set, row)})


def _preconditions(
    cur: w.Executor, cond: Conditions | None, method: str, entity_set: str, entity_id: int
) -> None:
    """412 unless the request's ``If-Match`` / ``If-None-Match`` hold for the entity as stored:
    its row is locked first (``FOR UPDATE``, until the write's transaction ends), so the ETag
    compared is the one the write changes, and no other write comes in between."""
    if cond is None:
        return
    cur.execute(
        sql.SQL("select 1 from {} where id = %s for update").format(
            sql.Identifier(w.TABLES[entity_set])
        ),
        (entity_id,),
    )
    row = q.entity(cast(DictConn, cur), entity_set, ENTITY_SETS[entity_set], entity_id)
    cond.check(_etag(entity_set, row), f"{ENTITY_SETS[entity_set]} {entity_id}", method)


def _observation_preconditions(
    cur: w.Executor, cond: Conditions | None, method: str, ds: int, time: datetime, oid: str
) -> None:
    """:func:`_preconditions` of one Observation."""
    if cond is None:
        return
    cur.execute(
        "select 1 from observation where datastream_id = %s and phenomenon_time = %s for update",
        (ds, time),
    )
    row = q.observation(cast(DictConn, cur), ds, time)
    cond.check(_etag("Observations", row), f"Observation '{oid}'", method)


# --------------------------------------------------------------------------- Observations
def _create_observation(
    request: Request,
    conn: DictConn,
    base: str,
    settings: Settings,
    raw: Any,
    ds: int | None,
    mds: int | None = None,
) -> JSONResponse:
    conn = _reads(request, conn)
    new = b.observation(raw, _now(), settings.ingest.max_future_seconds)
    if mds is not None or new.multi_datastream_id is not None:
        return _create_multi_observation(request, conn, base, new, ds, mds)
    if ds is not None:
        if new.datastream_id not in (None, ds):
            raise BadRequestError(
                f"Datastream/@iot.id: the body names Datastream {new.datastream_id}, the path"
                f" Datastream {ds}"
            )
        if not w.exists(conn, "Datastreams", ds):
            raise NotFoundError(f"no Datastream with @iot.id {ds}")
    elif new.datastream_id is None:
        raise BadRequestError('Datastream is required: {"Datastream": {"@iot.id": <id>}}')
    else:
        ds = new.datastream_id
        w.require(conn, "Datastreams", ds, "Datastream/@iot.id")
    return _store_observation(request, conn, base, new, ds, f"Datastream {ds}")


def _store_observation(
    request: Request, conn: DictConn, base: str, new: b.NewObservation, stored_as: int, owner: str
) -> JSONResponse:
    """Store one Observation through the ingester's writer (under datastream id ``stored_as``),
    409 when ``owner`` has one at that instant already; 201 with the stored body."""
    batch = Batch(source="http")

    def prepare(raw_conn: RawConn) -> None:
        with _cursor(raw_conn) as cur:
            foi = w.observation_feature(cur, stored_as, new.feature_id, new.feature_values)
            batch.observations.append(new.stored(stored_as, foi))

    result = writer(request).write(batch, prepare, all_or_nothing=True)
    if result.not_stored:
        oid = observation_id(stored_as, new.time)
        raise ConflictError(
            f"{owner} has an Observation at {iso(new.time)} already"
            f" (@iot.id '{oid}'); Quartier keeps the first: PATCH"
            f" {base}{PREFIX}/Observations('{oid}') to change it"
        )
    row = q.observation(conn, stored_as, new.time)
    body = shape("Observations", row, base).model_dump(mode="json", by_alias=True)
    return _created(body, body["@iot.selfLink"], _etag("Observations", row))


def _create_multi_observation(
    request: Request,
    conn: DictConn,
    base: str,
    new: b.NewObservation,
    ds: int | None,
    mds: int | None,
) -> JSONResponse:
    """An Observation of a MultiDatastream (MultiDatastream extension, A.5): its result an
    array with one value per multiObservationDataType, stored by the same writer under
    datastream_id -<MultiDatastream id>."""
    if ds is not None:
        raise BadRequestError(
            f"MultiDatastream: the path names Datastream {ds}; post an Observation of a"
            " MultiDatastream to /MultiDatastreams(<id>)/Observations or /Observations"
        )
    if mds is not None and new.datastream_id is not None:
        raise BadRequestError(
            f"Datastream: the path names MultiDatastream {mds}; an Observation belongs to one"
        )
    if mds is not None and new.multi_datastream_id not in (None, mds):
        raise BadRequestError(
            f"MultiDatastream/@iot.id: the body names MultiDatastream {new.multi_datastream_id},"
            f" the path MultiDatastream {mds}"
        )
    target = mds if mds is not None else new.multi_datastream_id
    assert target is not None
    types = w.multi_datastream_types(conn, target)
    if types is None:
        if mds is not None:
            raise NotFoundError(f"no MultiDatastream with @iot.id {mds}")
        raise BadRequestError(
            f"MultiDatastream/@iot.id: there is no MultiDatastream with @iot.id {target}"
        )
    b.multi_result(new.result, types, f"MultiDatastream {target}")
    # a MultiDatastream's observations: datastream_id -<its id>
    return _store_observation(request, conn, base, new, -target, f"MultiDatastream {target}")


@router.post(
    "/MultiDatastreams({mds_id})/Observations",
    response_model=m.Observation,
    status_code=201,
    operation_id="sta_create_multi_datastream_observation",
    dependencies=OBSERVATIONS,
    responses={
        **_ERRORS,
        409: {"description": "the MultiDatastream has an Observation at that time"},
    },
)
def create_multi_datastream_observation(
    mds_id: int, request: Request, conn: Conn, base: BaseUrl, settings: AppSettings, body: Json
) -> JSONResponse:
    """Creates an Observation of MultiDatastream ``mds_id``: its result an array of one value
    per ObservedProperty, in their order (400 naming the mismatch otherwise)."""
    return _create_observation(request, conn, base, settings, body, None, mds_id)


@router.post(
    "/Observations",
    response_model=m.Observation,
    status_code=201,
    operation_id="sta_create_observation",
    dependencies=OBSERVATIONS,
    responses={**_ERRORS, 409: {"description": "the Datastream has an Observation at that time"}},
)
def create_observation(
    request: Request, conn: Conn, base: BaseUrl, settings: AppSettings, body: Json
) -> JSONResponse:
    """Creates an Observation of the Datastream its body links (``Datastream: {"@iot.id"}``),
    or of the MultiDatastream (``MultiDatastream: {"@iot.id"}``, an array result)."""
    return _create_observation(request, conn, base, settings, body, None)


@router.post(
    "/Datastreams({ds_id})/Observations",
    response_model=m.Observation,
    status_code=201,
    operation_id="sta_create_datastream_observation",
    dependencies=OBSERVATIONS,
    responses={**_ERRORS, 409: {"description": "the Datastream has an Observation at that time"}},
)
def create_datastream_observation(
    ds_id: int, request: Request, conn: Conn, base: BaseUrl, settings: AppSettings, body: Json
) -> JSONResponse:
    """Creates an Observation of Datastream ``ds_id``."""
    return _create_observation(request, conn, base, settings, body, ds_id)


# --------------------------------------------------------------------------- other entities
#: A Datastream's to-one links: navigation → (entity set, column).
_DATASTREAM_LINKS = {
    "Thing": ("Things", "thing_id"),
    "Sensor": ("Sensors", "sensor_id"),
    "ObservedProperty": ("ObservedProperties", "observed_property_id"),
}
#: The column of a Datastream that links it to a parent of this entity set.
_DATASTREAM_PARENT = {v[0]: v[1] for v in _DATASTREAM_LINKS.values()}


def _at(path: str, nav: str, i: int | None = None) -> str:
    p = f"{path}/{nav}" if path else nav
    return p if i is None else f"{p}[{i}]"


class _Tree:
    """One deep insert, run by ``prepare`` in the writer's transaction."""

    def __init__(self, cur: w.Executor, at: datetime) -> None:
        self.cur = cur
        self.at = at
        #: the Observations nested in it (Datastream id, body, JSON path), stored after it
        self.observations: list[tuple[int, b.NewObservation, str, int | None]] = []

    def _linked(self, new: b.NewEntity, nav: str, target: str, path: str) -> list[int]:
        ids = list(new.links.get(nav, []))
        for i, entity_id in enumerate(ids):
            w.require(self.cur, target, entity_id, f"{_at(path, nav, i)}/@iot.id")
        return ids

    def insert(self, new: b.NewEntity, path: str, parent: tuple[str, int] | None = None) -> int:
        """Insert ``new`` and everything it nests; its id."""
        cur, es = self.cur, new.entity_set
        if es == "HistoricalLocations":
            return self._historical_location(new, path, parent)
        values = dict(new.values)
        if es in ("Datastreams", "MultiDatastreams"):
            for nav, (target, column) in _DATASTREAM_LINKS.items():
                if nav not in b.LINKS[es]:
                    continue  # a MultiDatastream's ObservedProperties: after it is inserted
                if nav in new.links:
                    values[column] = self._linked(new, nav, target, path)[0]
                elif nav in new.nested:
                    values[column] = self.insert(new.nested[nav][0], _at(path, nav))
                elif parent is not None and parent[0] == target:
                    values[column] = parent[1]
                else:
                    raise BadRequestError(
                        f"{_at(path, nav)} is required: link an existing one"
                        ' ({"@iot.id": <id>}) or describe a new one'
                    )
        new_id = w.insert(cur, es, values)
        if es == "MultiDatastreams":
            self._observed_properties(new, new_id, path)
        if es == "Things":
            locations = self._linked(new, "Locations", "Locations", path)
            for i, loc in enumerate(new.nested.get("Locations", [])):
                locations.append(self.insert(loc, _at(path, "Locations", i)))
            if parent is not None and parent[0] == "Locations":
                locations.append(parent[1])
            if locations:
                w.link_location(cur, new_id, locations, self.at)
        elif es == "Locations":
            things = self._linked(new, "Things", "Things", path)
            if parent is not None and parent[0] == "Things":  # POST Things(id)/Locations
                things.append(parent[1])
            for thing in things:
                w.set_locations(cur, thing, [new_id], self.at)
            for i, thing_body in enumerate(new.nested.get("Things", [])):
                self.insert(thing_body, _at(path, "Things", i), (es, new_id))
        if es in _DATASTREAM_PARENT:
            column = _DATASTREAM_PARENT[es]
            for ds in self._linked(new, "Datastreams", "Datastreams", path):
                w.update(cur, "Datastreams", ds, {column: new_id})
            for i, ds_body in enumerate(new.nested.get("Datastreams", [])):
                self.insert(ds_body, _at(path, "Datastreams", i), (es, new_id))
        if es in ("Things", "Sensors"):
            column = _DATASTREAM_PARENT[es]
            for mds in self._linked(new, "MultiDatastreams", "MultiDatastreams", path):
                w.update(cur, "MultiDatastreams", mds, {column: new_id})
            for i, mds_body in enumerate(new.nested.get("MultiDatastreams", [])):
                self.insert(mds_body, _at(path, "MultiDatastreams", i), (es, new_id))
        for i, o in enumerate(new.observations):
            opath = _at(path, "Observations", i)
            if es == "Datastreams":
                self.observations.append((new_id, o, opath + "/", None))
            elif es == "MultiDatastreams":  # stored under datastream_id -<its id>
                self.observations.append((-new_id, o, opath + "/", None))
            elif o.multi_datastream_id is not None:  # a FeatureOfInterest's, of a MultiDatastream
                mds = o.multi_datastream_id
                types = w.multi_datastream_types(cur, mds)
                if types is None:
                    raise BadRequestError(
                        f"{opath}/MultiDatastream/@iot.id: there is no MultiDatastream with"
                        f" @iot.id {mds}"
                    )
                b.multi_result(o.result, types, f"MultiDatastream {mds}", opath)
                self.observations.append((-mds, o, opath + "/", new_id))
            else:  # a FeatureOfInterest's Observations name their Datastream
                if o.datastream_id is None:
                    raise BadRequestError(f"{opath}/Datastream is required")
                w.require(cur, "Datastreams", o.datastream_id, f"{opath}/Datastream/@iot.id")
                self.observations.append((o.datastream_id, o, opath + "/", new_id))
        return new_id

    def _historical_location(
        self, new: b.NewEntity, path: str, parent: tuple[str, int] | None
    ) -> int:
        """A HistoricalLocation a client creates: its Thing (linked, described, or the parent
        of the path) was at its Locations (linked or described, at least one) from ``time``."""
        if "Thing" in new.links:
            thing = new.links["Thing"][0]
            w.require(self.cur, "Things", thing, f"{_at(path, 'Thing')}/@iot.id")
        elif "Thing" in new.nested:
            thing = self.insert(new.nested["Thing"][0], _at(path, "Thing"))
        elif parent is not None and parent[0] == "Things":
            thing = parent[1]
        else:
            raise BadRequestError(
                f"{_at(path, 'Thing')} is required: link the Thing that was there"
                ' ({"@iot.id": <id>}) or describe a new one'
            )
        locations = self._linked(new, "Locations", "Locations", path)
        for i, loc in enumerate(new.nested.get("Locations", [])):
            locations.append(self.insert(loc, _at(path, "Locations", i)))
        if parent is not None and parent[0] == "Locations":
            locations.append(parent[1])
        if not locations:
            raise BadRequestError(
                f"{_at(path, 'Locations')} is required: one or more Locations where the Thing"
                ' was, each linked ({"@iot.id": <id>}) or described'
            )
        return w.add_historical_location(self.cur, thing, locations, new.values["time"])

    def _observed_properties(self, new: b.NewEntity, mds_id: int, path: str) -> None:
        """A new MultiDatastream's ObservedProperties, linked or created, in the body's order
        (the order of its results)."""
        ids = []
        for i, item in enumerate(new.ordered.get("ObservedProperties", [])):
            ipath = _at(path, "ObservedProperties", i)
            if isinstance(item, int):
                w.require(self.cur, "ObservedProperties", item, f"{ipath}/@iot.id")
                ids.append(item)
            else:
                ids.append(self.insert(item, ipath))
        if not ids:
            raise BadRequestError(
                f"{_at(path, 'ObservedProperties')} is required: one per value of the results,"
                ' each linked ({"@iot.id": <id>}) or described'
            )
        w.link_observed_properties(self.cur, mds_id, ids)
        w.check_multi_datastream(self.cur, mds_id)

    def stored_observations(self) -> list[Observation]:
        seen: dict[tuple[int, datetime], str] = {}
        out = []
        for ds, o, path, foi in self.observations:
            if (ds, o.time) in seen:
                raise BadRequestError(
                    f"{path}phenomenonTime: {seen[(ds, o.time)]}phenomenonTime has the same time"
                    " in the same Datastream"
                )
            seen[(ds, o.time)] = path
            if foi is None:
                foi = w.observation_feature(self.cur, ds, o.feature_id, o.feature_values, path)
            out.append(o.stored(ds, foi))
        return out


def _create_entity(
    request: Request,
    conn: DictConn,
    base: str,
    who: Caller,
    entity_set: str,
    raw: Any,
    parent: tuple[str, int] | None = None,
) -> JSONResponse:
    settings: Settings = request.app.state.settings
    conn = _reads(request, conn)
    now = _now()
    new = b.entity(entity_set, raw, "", now, settings.ingest.max_future_seconds)
    batch = Batch(source="http")
    created: list[int] = []

    def prepare(raw_conn: RawConn) -> None:
        with _cursor(raw_conn) as cur:
            if parent is not None and not w.exists(cur, *parent):
                raise NotFoundError(f"no {ENTITY_SETS[parent[0]]} with @iot.id {parent[1]}")
            tree = _Tree(cur, now)
            created.append(tree.insert(new, "", parent))
            batch.observations.extend(tree.stored_observations())
            if batch.observations and not who.key.allows("observations:write"):
                raise PermissionDeniedError(
                    f"the API key {who.key.prefix}… ({who.key.name}) lacks the scope"
                    " 'observations:write' for the Observations in this body"
                )

    result = writer(request).write(batch, prepare, all_or_nothing=True)
    if result.not_stored:
        raise ConflictError("an Observation in the body exists already; nothing was stored")
    row = q.entity(conn, entity_set, ENTITY_SETS[entity_set], created[0])
    body = shape(entity_set, row, base).model_dump(mode="json", by_alias=True)
    return _created(body, body["@iot.selfLink"], _etag(entity_set, row))


def _add_create(entity_set: str) -> None:
    entity_type = ENTITY_SETS[entity_set]

    def route(
        request: Request,
        conn: Conn,
        base: BaseUrl,
        who: Annotated[Caller, require_scope("entities:write")],
        body: Json,
    ) -> JSONResponse:
        return _create_entity(request, conn, base, who, entity_set, body)

    route.__doc__ = (
        f"Creates a {entity_type}, with the entities it nests (deep insert) and links to"
        " existing ones by @iot.id, in one transaction."
    )
    router.add_api_route(
        f"/{entity_set}",
        route,
        methods=["POST"],
        status_code=201,
        response_model=m.__dict__[entity_type],
        operation_id=f"sta_create_{_snake(entity_type)}",
        summary=f"Create a {entity_type}",
        responses=_ERRORS,
    )


# --------------------------------------------------------------------------- update, delete
def _entity_id(entity_set: str, text: str) -> int:
    if not text.isdigit():
        raise BadRequestError(f"@iot.id {text!r} of {entity_set} is not an integer")
    return int(text)


def _update(
    request: Request,
    conn: DictConn,
    base: str,
    entity_set: str,
    entity_id: int,
    values: dict[str, Any],
    links: dict[str, int],
) -> JSONResponse:
    conn = _reads(request, conn)
    moved = values.pop("_locations", None)
    cond = conditions(request.headers)

    def prepare(raw_conn: RawConn) -> None:
        with _cursor(raw_conn) as cur:
            if not w.exists(cur, entity_set, entity_id):
                raise NotFoundError(f"no {ENTITY_SETS[entity_set]} with @iot.id {entity_id}")
            _preconditions(cur, cond, request.method, entity_set, entity_id)
            changes = dict(values)
            for nav, target_id in links.items():
                target, column = _DATASTREAM_LINKS[nav]
                w.require(cur, target, target_id, f"{nav}/@iot.id")
                changes[column] = target_id
            if entity_set == "MultiDatastreams":
                w.check_multi_datastream(cur, entity_id, changes)
            if changes:
                w.update(cur, entity_set, entity_id, changes)
            if moved:
                for i, loc in enumerate(moved):
                    w.require(cur, "Locations", loc, f"Locations[{i}]/@iot.id")
                if entity_set == "HistoricalLocations":
                    w.set_historical_locations(cur, entity_id, moved)
                else:
                    w.set_locations(cur, entity_id, moved, _now())

    writer(request).write(Batch(source="http"), prepare)
    row = q.entity(conn, entity_set, ENTITY_SETS[entity_set], entity_id)
    return _entity_answer(entity_set, row, base)


def _delete(request: Request, entity_set: str, entity_id: int) -> Response:
    cond = conditions(request.headers)

    def prepare(raw_conn: RawConn) -> None:
        with _cursor(raw_conn) as cur:
            if cond is not None and not w.exists(cur, entity_set, entity_id):
                raise NotFoundError(f"no {ENTITY_SETS[entity_set]} with @iot.id {entity_id}")
            _preconditions(cur, cond, "DELETE", entity_set, entity_id)
            w.delete(cur, entity_set, entity_id)

    writer(request).write(Batch(source="http"), prepare)
    return Response(status_code=200)


def _add_update_delete(entity_set: str) -> None:
    entity_type = ENTITY_SETS[entity_set]
    path = f"/{entity_set}({{entity_id}})"
    op = _snake(entity_type)

    def patch_route(
        entity_id: str, request: Request, conn: Conn, base: BaseUrl, body: Json
    ) -> JSONResponse:
        values, links = b.patch(entity_set, b.merge_patch(body))
        return _update(
            request, conn, base, entity_set, _entity_id(entity_set, entity_id), values, links
        )

    def put_route(
        entity_id: str, request: Request, conn: Conn, base: BaseUrl, body: Json
    ) -> JSONResponse:
        new = b.entity(entity_set, b.without_own_id(body, _entity_id(entity_set, entity_id)))
        if new.nested or new.observations:
            raise BadRequestError("PUT replaces one entity's properties; it nests no entities")
        values = {
            f.column: new.values.get(f.column, f.default) for f in b.FIELDS[entity_set].values()
        }
        links = {nav: ids[0] for nav, ids in new.links.items() if nav in _DATASTREAM_LINKS}
        if entity_set in ("Things", "HistoricalLocations") and "Locations" in new.links:
            values["_locations"] = new.links["Locations"]
        return _update(
            request, conn, base, entity_set, _entity_id(entity_set, entity_id), values, links
        )

    def delete_route(entity_id: str, request: Request) -> Response:
        return _delete(request, entity_set, _entity_id(entity_set, entity_id))

    common: dict[str, Any] = {"dependencies": ENTITIES_, "responses": _CONDITIONAL}
    router.add_api_route(
        path,
        patch_route,
        methods=["PATCH"],
        response_model=m.__dict__[entity_type],
        operation_id=f"sta_patch_{op}",
        summary=f"Change some properties of a {entity_type}",
        **common,
    )
    router.add_api_route(
        path,
        put_route,
        methods=["PUT"],
        response_model=m.__dict__[entity_type],
        operation_id=f"sta_put_{op}",
        summary=f"Replace the properties of a {entity_type}",
        **common,
    )
    router.add_api_route(
        path,
        delete_route,
        methods=["DELETE"],
        operation_id=f"sta_delete_{op}",
        summary=f"Delete a {entity_type} with what the standard deletes with it",
        **common,
    )


@router.patch(
    "/Observations('{obs_id}')",
    response_model=m.Observation,
    operation_id="sta_patch_observation",
    dependencies=OBSERVATIONS,
    responses=_CONDITIONAL,
)
def patch_observation(
    obs_id: str, request: Request, conn: Conn, base: BaseUrl, body: Json
) -> JSONResponse:
    """Changes an Observation's result, resultTime, parameters or FeatureOfInterest (its
    Datastream and phenomenonTime make its id and stay)."""
    return _change_observation(request, conn, base, obs_id, b.merge_patch(body), replace=False)


@router.put(
    "/Observations('{obs_id}')",
    response_model=m.Observation,
    operation_id="sta_put_observation",
    dependencies=OBSERVATIONS,
    responses=_CONDITIONAL,
)
def put_observation(
    obs_id: str, request: Request, conn: Conn, base: BaseUrl, body: Json
) -> JSONResponse:
    """Replaces an Observation: ``result`` is required, ``resultTime`` and ``parameters`` left
    out become null, the FeatureOfInterest left out stays; its Datastream and phenomenonTime
    make its id and cannot change (sent, they must be its own)."""
    return _change_observation(request, conn, base, obs_id, body, replace=True)


def _change_observation(
    request: Request, conn: DictConn, base: str, obs_id: str, body: Any, replace: bool
) -> JSONResponse:
    ds, time = parse_observation_id(obs_id)
    conn = _reads(request, conn)
    cond = conditions(request.headers)
    q.observation(conn, ds, time)  # 404 when there is none
    if replace:
        values, foi = b.observation_put(body, obs_id, ds, time)
    else:
        values, foi = b.observation_patch(body, time)
    if ds < 0 and "result" in values:  # of MultiDatastream -ds
        types = w.multi_datastream_types(conn, -ds) or []
        b.multi_result(body["result"], types, f"MultiDatastream {-ds}")

    def prepare(raw_conn: RawConn) -> None:
        with _cursor(raw_conn) as cur:
            _observation_preconditions(cur, cond, request.method, ds, time, obs_id)
            if foi is not None:
                w.require(cur, "FeaturesOfInterest", foi, "FeatureOfInterest/@iot.id")
            w.update_observation(cur, ds, time, values)

    writer(request).write(Batch(source="http"), prepare)
    return _entity_answer("Observations", q.observation(conn, ds, time), base)


@router.delete(
    "/Observations('{obs_id}')",
    operation_id="sta_delete_observation",
    dependencies=OBSERVATIONS,
    responses=_CONDITIONAL,
)
def delete_observation(obs_id: str, request: Request, conn: Conn) -> Response:
    """Deletes an Observation."""
    ds, time = parse_observation_id(obs_id)
    cond = conditions(request.headers)
    q.observation(_reads(request, conn), ds, time)  # 404 when there is none

    def prepare(raw_conn: RawConn) -> None:
        with _cursor(raw_conn) as cur:
            _observation_preconditions(cur, cond, "DELETE", ds, time, obs_id)
            w.delete_observations(
                cur,
                sql.SQL("o.datastream_id = %(_d)s and o.phenomenon_time = %(_t)s"),
                {"_d": ds, "_t": time},
            )

    writer(request).write(Batch(source="http"), prepare)
    return Response(status_code=200)


# --------------------------------------------------------------------------- CreateObservations
@router.post(
    "/CreateObservations",
    status_code=201,
    response_model=list[str],
    operation_id="sta_create_observations",
    dependencies=OBSERVATIONS,
    responses=_ERRORS,
)
def create_observations(
    request: Request, settings: AppSettings, base: BaseUrl, body: Json
) -> JSONResponse:
    """Creates many Observations at once from dataArrays (OGC 18-088, 14.2), of Datastreams
    or of MultiDatastreams (``"MultiDatastream": {"@iot.id"}``, each result an array), through
    the ingest writer's COPY. The answer lists, in the order of the body's rows, each created
    Observation's selfLink or ``"error"`` for a row that was not stored (invalid, or its
    Datastream has an Observation at that time already); ``X-Quartier-Errors`` counts them
    and says why the first was refused."""
    groups = b.create_observations(body, _now(), settings.ingest.max_future_seconds)
    answers: list[str | None] = []
    reasons: list[str] = []
    placed: list[int] = []  # answer index of each Observation handed to the writer
    batch = Batch(source="http")

    def prepare(raw_conn: RawConn) -> None:
        with _cursor(raw_conn) as cur:
            types: dict[int, list[str]] = {}  # a MultiDatastream's, by its index in the body
            for i, g in enumerate(groups):
                if not g.multi:
                    w.require(cur, "Datastreams", g.datastream_id, f"[{i}]/Datastream/@iot.id")
                    continue
                found = w.multi_datastream_types(cur, g.datastream_id)
                if found is None:
                    raise BadRequestError(
                        f"[{i}]/MultiDatastream/@iot.id: there is no MultiDatastream with"
                        f" @iot.id {g.datastream_id}"
                    )
                types[i] = found
            wanted = sorted(
                {
                    r.feature.id
                    for g in groups
                    for r in g.rows
                    if isinstance(r, b.NewObservation) and r.feature and r.feature.id
                }
            )
            known = w.existing(cur, "FeaturesOfInterest", wanted)
            auto: dict[int, int | None] = {}
            for i, g in enumerate(groups):
                for j, r in enumerate(g.rows):
                    if isinstance(r, BadRequestError):
                        answers.append(None)
                        reasons.append(str(r))
                        continue
                    if g.multi:  # an array of one value per multiObservationDataType
                        try:
                            b.multi_result(r.result, types[i], g.owner, f"[{i}]/dataArray[{j}]")
                        except BadRequestError as exc:
                            answers.append(None)
                            reasons.append(str(exc))
                            continue
                    foi: int | None
                    if r.feature is not None and r.feature.id is not None:
                        foi = r.feature.id
                        if foi not in known:
                            answers.append(None)
                            reasons.append(f"no FeatureOfInterest with @iot.id {foi}")
                            continue
                    else:
                        if g.stored_id not in auto:
                            auto[g.stored_id] = w.feature_of_datastream(cur, g.stored_id)
                        foi = auto[g.stored_id]
                    batch.observations.append(r.stored(g.stored_id, foi))
                    placed.append(len(answers))
                    answers.append(
                        f"{base}{PREFIX}/Observations('{observation_id(g.stored_id, r.time)}')"
                    )

    result = writer(request).write(batch, prepare)
    for k in result.not_stored:
        o = batch.observations[k]
        answers[placed[k]] = None
        owner = (
            f"MultiDatastream {-o.datastream_id}"
            if o.datastream_id < 0
            else f"Datastream {o.datastream_id}"
        )
        reasons.append(f"{owner} has an Observation at {iso(o.time)} already")
    headers = {}
    if reasons:
        headers["X-Quartier-Errors"] = f"{len(reasons)}; first: {reasons[0]}"[:500]
    return JSONResponse(
        [a if a is not None else "error" for a in answers], status_code=201, headers=headers
    )


def _add_create_under(parent_set: str, nav: str) -> None:
    """``POST /<parent set>(<id>)/<nav>``: the new entity linked to the parent."""
    parent_type = ENTITY_SETS[parent_set]
    entity_type = ENTITY_SETS[nav]

    def route(
        entity_id: int,
        request: Request,
        conn: Conn,
        base: BaseUrl,
        who: Annotated[Caller, require_scope("entities:write")],
        body: Json,
    ) -> JSONResponse:
        return _create_entity(request, conn, base, who, nav, body, (parent_set, entity_id))

    route.__doc__ = f"Creates a {entity_type} of one {parent_type}."
    router.add_api_route(
        f"/{parent_set}({{entity_id}})/{nav}",
        route,
        methods=["POST"],
        status_code=201,
        response_model=m.__dict__[entity_type],
        operation_id=f"sta_create_{_snake(parent_type)}_{_snake(entity_type)}",
        summary=f"Create a {entity_type} of a {parent_type}",
        responses=_ERRORS,
    )


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


for _entity_set in b.FIELDS:
    _add_create(_entity_set)
    _add_update_delete(_entity_set)
for _parent, _nav in (
    ("Things", "Locations"),
    ("Things", "HistoricalLocations"),
    ("Locations", "HistoricalLocations"),
    ("Things", "Datastreams"),
    ("Locations", "Things"),
    ("Sensors", "Datastreams"),
    ("ObservedProperties", "Datastreams"),
    ("Things", "MultiDatastreams"),
    ("Sensors", "MultiDatastreams"),
):
    _add_create_under(_parent, _nav)
