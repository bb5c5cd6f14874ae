"""OGC SensorThings API v1.1 (read part): the eight entity sets, each entity by id and the to-many
navigations the bodies link to, with ``$filter``, ``$orderby``, ``$top``, ``$skip``, ``$count``,
``$select`` and ``@iot.nextLink``. The routes are made by four functions over the entity sets
(collection, entity, to-many and to-one navigation; see ``_NAVIGATIONS`` and ``_TO_ONE`` at the
end) over one store query, so every link a body carries has its route. The options are parsed
and compiled by ``quartier.api.sta``; valid options Quartier does not implement yet
(``$expand``, ``$resultFormat``, ``$search`` …) are a 501 that says so, never ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, overload
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from quartier.api import models as m
from quartier.api.deps import AppSettings, BaseUrl, Conn, bounded_skip
from quartier.api.sta import (
    ENTITIES,
    ENTITY_SETS,
    QueryOptions,
    check_options,
    compile_filter,
    compile_navigation,
    compile_orderby,
    parse_query_options,
)
from quartier.api.sta.ast import Path
from quartier.errors import BadRequestError, NotFoundError, NotImplementedQueryError
from quartier.store import sensorthings as q
from quartier.store.db import DictConn

PREFIX = "/v1.1"
router = APIRouter(prefix=PREFIX, tags=["SensorThings API v1.1"])

_NOT_YET = {"expand": "$expand", "result_format": "$resultFormat"}


def _options(request: Request) -> QueryOptions:
    options = parse_query_options(request.query_params)
    for attr, name in _NOT_YET.items():
        if getattr(options, attr) not in (None, ()):
            raise NotImplementedQueryError(f"query option {name} is not supported yet")
    return options


def _pick(body: dict[str, Any], select: tuple[Path, ...], entity_type: str) -> dict[str, Any]:
    """The ``$select``ed part of one entity's body: ``id`` is ``@iot.id``, a navigation property
    its ``@iot.navigationLink``, any other property its value (null where Quartier stores none)."""
    navs = ENTITIES[entity_type].navs
    out: dict[str, Any] = {}
    for p in select:
        name = p.segments[0]
        if name == "id":
            out["@iot.id"] = body["@iot.id"]
        elif name in navs:
            key = f"{name}@iot.navigationLink"
            if key in body:  # an Observation's FeatureOfInterest is not linked yet
                out[key] = body[key]
        else:
            out[name] = body.get(name)
    return out


def _selected(body: BaseModel, select: tuple[Path, ...], entity_type: str) -> Any:
    """``body`` itself without ``$select``; else its selected part as a JSON response (a
    collection's ``value`` entity by entity, its annotations kept)."""
    if not select:
        return body
    check_options(QueryOptions(select=select), entity_type)
    data: dict[str, Any] = body.model_dump(mode="json", by_alias=True)
    if isinstance(body, m._Collection):
        data["value"] = [_pick(v, select, entity_type) for v in data["value"]]
    else:
        data = _pick(data, select, entity_type)
    return JSONResponse(data)


class Paging:
    """The system query options of a collection request. The ``Query`` parameters document them
    in the OpenAPI description; ``parse_query_options`` is their one parser. ``$top`` above the
    server's maximum is clamped to it (the standard's server-driven paging), not refused."""

    def __init__(
        self,
        request: Request,
        settings: AppSettings,
        top: Annotated[str | None, Query(alias="$top", description="page size")] = None,
        skip: Annotated[str | None, Query(alias="$skip", description="entities to skip")] = None,
        count: Annotated[str | None, Query(alias="$count", description="true or false")] = None,
        filter_: Annotated[
            str | None, Query(alias="$filter", description="OData condition")
        ] = None,
        orderby: Annotated[
            str | None, Query(alias="$orderby", description="keys, each asc or desc")
        ] = None,
        select: Annotated[
            str | None, Query(alias="$select", description="properties to return")
        ] = None,
    ) -> None:
        options = _options(request)
        self.request = request
        self.options: QueryOptions = options
        wanted = settings.api.default_top if options.top is None else options.top
        self.top = min(wanted, settings.api.max_top)
        self.skip = bounded_skip(settings, options.skip or 0, "$skip")
        self.count = bool(options.count)

    def listing(self, entity_set: str) -> q.Listing:
        """The compiled ``$filter`` and ``$orderby`` of this request over ``entity_set``
        (``$select`` is checked when the body is shaped)."""
        alias = q.ALIASES[entity_set]
        where = None
        params: dict[str, Any] = {}
        if self.options.filter is not None:
            f = compile_filter(self.options.filter, entity_set, alias)
            where, params = f.sql, dict(f.params)
        order = None
        if self.options.orderby:
            o = compile_orderby(self.options.orderby, entity_set, alias)
            order = o.sql
            params.update(o.params)
        return q.Listing(self.top, self.skip, where, order, params)

    def page(
        self, rows: list[dict[str, Any]], base: str
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The rows of this page and the ``@iot.nextLink`` (the same request, ``$skip`` on by
        ``$top``) when there are more; none for ``$top=0``, which asks for no entities."""
        if self.top == 0 or len(rows) <= self.top:
            return rows[: self.top], None
        params = dict(self.request.query_params)
        params["$skip"] = str(self.skip + self.top)
        params["$top"] = str(self.top)
        query = urlencode(params, quote_via=quote)
        return rows[: self.top], f"{base}{self.request.url.path}?{query}"


PagingDep = Annotated[Paging, Depends()]


class Selection:
    """The ``$select`` of a request for one entity; ``$expand`` and ``$resultFormat`` are 501."""

    def __init__(
        self,
        request: Request,
        select: Annotated[
            str | None, Query(alias="$select", description="properties to return")
        ] = None,
    ) -> None:
        self.select = _options(request).select


SelectionDep = Annotated[Selection, Depends()]


@overload
def iso(t: datetime) -> str: ...
@overload
def iso(t: None) -> None: ...
def iso(t: datetime | None) -> str | None:
    """The one time format of the API's bodies: RFC 3339 in UTC with milliseconds and ``Z``."""
    if t is None:
        return None
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _link(base: str, entity: str, entity_id: int, nav: str | None = None) -> str:
    return f"{base}{PREFIX}/{entity}({entity_id})" + (f"/{nav}" if nav else "")


# --------------------------------------------------------------------------- shaping
def _thing(r: dict[str, Any], base: str) -> m.Thing:
    return m.Thing(
        id=r["id"],
        self_link=_link(base, "Things", r["id"]),
        name=r["name"],
        description=r["description"],
        properties=r["properties"],
        locations_link=_link(base, "Things", r["id"], "Locations"),
        historical_locations_link=_link(base, "Things", r["id"], "HistoricalLocations"),
        datastreams_link=_link(base, "Things", r["id"], "Datastreams"),
    )


def _location(r: dict[str, Any], base: str) -> m.Location:
    return m.Location(
        id=r["id"],
        self_link=_link(base, "Locations", r["id"]),
        name=r["name"],
        description=r["description"],
        encoding_type=r["encoding_type"],
        location=r["location"],
        properties=r["properties"],
        things_link=_link(base, "Locations", r["id"], "Things"),
        historical_locations_link=_link(base, "Locations", r["id"], "HistoricalLocations"),
    )


def _historical_location(r: dict[str, Any], base: str) -> m.HistoricalLocation:
    return m.HistoricalLocation(
        id=r["id"],
        self_link=_link(base, "HistoricalLocations", r["id"]),
        time=iso(r["time"]),
        thing_link=_link(base, "Things", r["thing_id"]),
        locations_link=_link(base, "HistoricalLocations", r["id"], "Locations"),
    )


def _feature_of_interest(r: dict[str, Any], base: str) -> m.FeatureOfInterest:
    return m.FeatureOfInterest(
        id=r["id"],
        self_link=_link(base, "FeaturesOfInterest", r["id"]),
        name=r["name"],
        description=r["description"],
        encoding_type=r["encoding_type"],
        feature=r["feature"],
        properties=r["properties"],
        observations_link=_link(base, "FeaturesOfInterest", r["id"], "Observations"),
    )


def _datastream(r: dict[str, Any], base: str) -> m.Datastream:
    span = f"{iso(r['t_min'])}/{iso(r['t_max'])}" if r["t_min"] else None
    return m.Datastream(
        id=r["id"],
        self_link=_link(base, "Datastreams", r["id"]),
        name=r["name"],
        description=r["description"],
        observation_type=r["observation_type"],
        unit_of_measurement=m.UnitOfMeasurement(**r["unit_of_measurement"]),
        observed_area=r["observed_area"],
        phenomenon_time=span,
        properties=r["properties"],
        thing_link=_link(base, "Things", r["thing_id"]),
        sensor_link=_link(base, "Sensors", r["sensor_id"]),
        observed_property_link=_link(base, "ObservedProperties", r["observed_property_id"]),
        observations_link=_link(base, "Datastreams", r["id"], "Observations"),
    )


def _sensor(r: dict[str, Any], base: str) -> m.Sensor:
    return m.Sensor(
        id=r["id"],
        self_link=_link(base, "Sensors", r["id"]),
        name=r["name"],
        description=r["description"],
        encoding_type=r["encoding_type"],
        metadata=r["metadata"],
        properties=r["properties"],
        datastreams_link=_link(base, "Sensors", r["id"], "Datastreams"),
    )


def _observed_property(r: dict[str, Any], base: str) -> m.ObservedProperty:
    return m.ObservedProperty(
        id=r["id"],
        self_link=_link(base, "ObservedProperties", r["id"]),
        name=r["name"],
        definition=r["definition"],
        description=r["description"],
        properties=r["properties"],
        datastreams_link=_link(base, "ObservedProperties", r["id"], "Datastreams"),
    )


def observation_id(datastream_id: int, time: datetime) -> str:
    """The derived @iot.id of an Observation: ``"<datastream id>:<µs since 1970>"``."""
    return f"{datastream_id}:{(time - _EPOCH) // _MICROSECOND}"


def parse_observation_id(text: str) -> tuple[int, datetime]:
    ds, sep, us = text.partition(":")
    if not (sep and ds.isdigit() and us.lstrip("-").isdigit()):
        raise BadRequestError(
            f"Observation id {text!r} is not '<datastream id>:<microseconds since 1970>'"
        )
    return int(ds), _EPOCH + int(us) * _MICROSECOND


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _observation(r: dict[str, Any], base: str) -> m.Observation:
    oid = observation_id(r["datastream_id"], r["phenomenon_time"])
    return m.Observation(
        id=oid,
        self_link=f"{base}{PREFIX}/Observations('{oid}')",
        phenomenon_time=iso(r["phenomenon_time"]) or "",
        result_time=iso(r["result_time"]),
        result=r["result"] if r["result_json"] is None else r["result_json"],
        parameters=r["parameters"],
        datastream_link=_link(base, "Datastreams", r["datastream_id"]),
    )


# --------------------------------------------------------------------------- routes
@dataclass(frozen=True)
class _Set:
    """What the routes of one entity set need: its shaping and its response models."""

    shape: Callable[[dict[str, Any], str], m._Entity]
    model: type[m._Entity]
    collection: type[m._Collection]


_SETS: dict[str, _Set] = {
    "Things": _Set(_thing, m.Thing, m.ThingCollection),
    "Locations": _Set(_location, m.Location, m.LocationCollection),
    "HistoricalLocations": _Set(
        _historical_location, m.HistoricalLocation, m.HistoricalLocationCollection
    ),
    "Datastreams": _Set(_datastream, m.Datastream, m.DatastreamCollection),
    "Sensors": _Set(_sensor, m.Sensor, m.SensorCollection),
    "ObservedProperties": _Set(
        _observed_property, m.ObservedProperty, m.ObservedPropertyCollection
    ),
    "Observations": _Set(_observation, m.Observation, m.ObservationCollection),
    "FeaturesOfInterest": _Set(
        _feature_of_interest, m.FeatureOfInterest, m.FeatureOfInterestCollection
    ),
}


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


@router.get("", response_model=m.ServiceRoot, operation_id="sta_service_root")
def service_root(base: BaseUrl) -> m.ServiceRoot:
    return m.ServiceRoot(
        value=[m.ServiceEndpoint(name=n, url=f"{base}{PREFIX}/{n}") for n in ENTITY_SETS],
        serverSettings={
            "conformance": [
                "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data/top",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data/skip",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data/count",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data/orderby",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data/filter",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data/select",
            ]
        },
    )


def _list(
    conn: DictConn, base: str, p: Paging, entity_set: str, within: q.Within | None = None
) -> Any:
    """One page of ``entity_set`` (all of it, or navigated to ``within`` one entity)."""
    spec = _SETS[entity_set]
    listing = p.listing(entity_set)
    rows, nxt = p.page(q.entities(conn, entity_set, listing, within), base)
    body = spec.collection.model_validate(
        {
            "value": [spec.shape(r, base) for r in rows],
            "@iot.nextLink": nxt,
            "@iot.count": q.count_entities(conn, entity_set, listing, within) if p.count else None,
        }
    )
    return _selected(body, p.options.select, ENTITY_SETS[entity_set])


def _add_collection(entity_set: str) -> None:
    """``GET /<entity set>``."""

    def route(conn: Conn, base: BaseUrl, p: PagingDep) -> Any:
        return _list(conn, base, p, entity_set)

    router.add_api_route(
        f"/{entity_set}",
        route,
        response_model=_SETS[entity_set].collection,
        operation_id=f"sta_list_{_snake(entity_set)}",
        summary=f"The {entity_set}",
    )


def _add_entity(entity_set: str) -> None:
    """``GET /<entity set>(<id>)`` for the entity sets with integer ids."""
    entity_type = ENTITY_SETS[entity_set]

    def route(entity_id: int, conn: Conn, base: BaseUrl, s: SelectionDep) -> Any:
        spec = _SETS[entity_set]
        row = q.entity(conn, entity_set, entity_type, entity_id)
        return _selected(spec.shape(row, base), s.select, entity_type)

    router.add_api_route(
        f"/{entity_set}({{entity_id}})",
        route,
        response_model=_SETS[entity_set].model,
        operation_id=f"sta_get_{_snake(entity_type)}",
        summary=f"One {entity_type}",
    )


def _add_navigation(entity_set: str, nav: str) -> None:
    """``GET /<entity set>(<id>)/<nav>`` for a to-many navigation property (its entity set)."""
    entity_type = ENTITY_SETS[entity_set]

    def route(entity_id: int, conn: Conn, base: BaseUrl, p: PagingDep) -> Any:
        source, on = compile_navigation(entity_type, nav, "_p", q.ALIASES[nav])
        table = ENTITIES[entity_type].table
        return _list(conn, base, p, nav, q.Within(source, on, entity_type, table, entity_id))

    router.add_api_route(
        f"/{entity_set}({{entity_id}})/{nav}",
        route,
        response_model=_SETS[nav].collection,
        operation_id=f"sta_{_snake(entity_type)}_{_snake(nav)}",
        summary=f"The {nav} of one {entity_type}",
    )


def _add_to_one(entity_set: str, nav: str) -> None:
    """``GET /<entity set>(<id>)/<nav>`` for a to-one navigation property: the one entity."""
    entity_type = ENTITY_SETS[entity_set]
    target_type = ENTITIES[entity_type].navs[nav].target
    target_set = next(k for k, v in ENTITY_SETS.items() if v == target_type)

    def route(entity_id: int, conn: Conn, base: BaseUrl, s: SelectionDep) -> Any:
        source, on = compile_navigation(entity_type, nav, "_p", q.ALIASES[target_set])
        table = ENTITIES[entity_type].table
        within = q.Within(source, on, entity_type, table, entity_id)
        rows = q.entities(conn, target_set, q.Listing(1), within)
        if not rows:
            raise NotFoundError(f"{entity_type} {entity_id} has no {nav}")
        return _selected(_SETS[target_set].shape(rows[0], base), s.select, target_type)

    router.add_api_route(
        f"/{entity_set}({{entity_id}})/{nav}",
        route,
        response_model=_SETS[target_set].model,
        operation_id=f"sta_{_snake(entity_type)}_{_snake(nav)}",
        summary=f"The {nav} of one {entity_type}",
    )


@router.get(
    "/Datastreams({ds_id})/Observations",
    response_model=m.ObservationCollection,
    operation_id="sta_datastream_observations",
)
def datastream_observations(ds_id: int, conn: Conn, base: BaseUrl, p: PagingDep) -> Any:
    """One datastream's observations: a ``phenomenonTime`` filter is a primary-key range scan
    and an unfiltered ``$count`` may be an estimate on very large TimescaleDB datastreams."""
    listing = p.listing("Observations")
    rows, nxt = p.page(q.observations(conn, ds_id, listing), base)
    count, exact = q.count_observations(conn, ds_id, listing) if p.count else (None, True)
    body = m.ObservationCollection(
        value=[_observation(r, base) for r in rows],
        next_link=nxt,
        count=count,
        count_is_estimate=None if exact else True,
    )
    return _selected(body, p.options.select, "Observation")


@router.get(
    "/Observations('{obs_id}')",
    response_model=m.Observation,
    operation_id="sta_get_observation",
)
def get_observation(obs_id: str, conn: Conn, base: BaseUrl, s: SelectionDep) -> Any:
    """One Observation by its @iot.id (``'<datastream id>:<µs since 1970>'``)."""
    ds_id, time = parse_observation_id(obs_id)
    return _selected(_observation(q.observation(conn, ds_id, time), base), s.select, "Observation")


#: The resource paths: every entity set, every entity by integer id (an Observation's id is
#: derived, see above) and every to-many navigation whose links the bodies carry.
_NAVIGATIONS = [
    ("Things", "Datastreams"),
    ("Things", "Locations"),
    ("Things", "HistoricalLocations"),
    ("Locations", "Things"),
    ("Locations", "HistoricalLocations"),
    ("HistoricalLocations", "Locations"),
    ("Sensors", "Datastreams"),
    ("ObservedProperties", "Datastreams"),
    ("FeaturesOfInterest", "Observations"),
]
#: The to-one navigations of entities with integer ids (bodies link straight to the entity, e.g.
#: ``Thing@iot.navigationLink`` is ``Things(1)``; these paths are the standard's other spelling).
_TO_ONE = [
    ("Datastreams", "Thing"),
    ("Datastreams", "Sensor"),
    ("Datastreams", "ObservedProperty"),
    ("HistoricalLocations", "Thing"),
]
for _entity_set in ENTITY_SETS:
    _add_collection(_entity_set)
    if _entity_set != "Observations":
        _add_entity(_entity_set)
for _entity_set, _nav in _NAVIGATIONS:
    _add_navigation(_entity_set, _nav)
for _entity_set, _nav in _TO_ONE:
    _add_to_one(_entity_set, _nav)
