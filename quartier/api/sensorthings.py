"""OGC SensorThings API v1.1 (read part): Things, Locations, Datastreams, Sensors,
ObservedProperties and Observations with ``$filter``, ``$orderby``, ``$top``, ``$skip``, ``$count``
and ``@iot.nextLink``. The options are parsed and compiled by ``quartier.api.sta``; valid options
Quartier does not implement yet (``$select``, ``$expand``, ``$resultFormat``, ``$search`` …) are a
501 that says so, never ignored.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, overload
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request

from quartier.api import models as m
from quartier.api.deps import AppSettings, BaseUrl, Conn
from quartier.api.sta import QueryOptions, compile_filter, compile_orderby, parse_query_options
from quartier.errors import BadRequestError, NotImplementedQueryError
from quartier.store import sensorthings as q

PREFIX = "/v1.1"
router = APIRouter(prefix=PREFIX, tags=["SensorThings API v1.1"])

_NOT_YET = {"select": "$select", "expand": "$expand", "result_format": "$resultFormat"}


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
    ) -> None:
        options = parse_query_options(request.query_params)
        for attr, name in _NOT_YET.items():
            if getattr(options, attr) not in (None, ()):
                raise NotImplementedQueryError(f"query option {name} is not supported yet")
        self.request = request
        self.options: QueryOptions = options
        wanted = settings.api.default_top if options.top is None else options.top
        self.top = min(wanted, settings.api.max_top)
        self.skip = options.skip or 0
        self.count = bool(options.count)

    def listing(self, entity_set: str) -> q.Listing:
        """The compiled ``$filter`` and ``$orderby`` of this request over ``entity_set``."""
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
@router.get("", response_model=m.ServiceRoot, operation_id="sta_service_root")
def service_root(base: BaseUrl) -> m.ServiceRoot:
    names = ["Things", "Locations", "Datastreams", "Sensors", "ObservedProperties"]
    return m.ServiceRoot(
        value=[m.ServiceEndpoint(name=n, url=f"{base}{PREFIX}/{n}") for n in names],
        serverSettings={
            "conformance": [
                "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data/top",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data/skip",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data/count",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data/orderby",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data/filter",
            ]
        },
    )


@router.get("/Things", response_model=m.ThingCollection, operation_id="sta_list_things")
def list_things(conn: Conn, base: BaseUrl, p: PagingDep) -> m.ThingCollection:
    listing = p.listing("Things")
    rows, nxt = p.page(q.things(conn, listing), base)
    return m.ThingCollection(
        value=[_thing(r, base) for r in rows],
        next_link=nxt,
        count=q.count_things(conn, listing) if p.count else None,
    )


@router.get("/Things({thing_id})", response_model=m.Thing, operation_id="sta_get_thing")
def get_thing(thing_id: int, conn: Conn, base: BaseUrl) -> m.Thing:
    return _thing(q.thing(conn, thing_id), base)


@router.get(
    "/Things({thing_id})/Datastreams",
    response_model=m.DatastreamCollection,
    operation_id="sta_thing_datastreams",
)
def thing_datastreams(
    thing_id: int, conn: Conn, base: BaseUrl, p: PagingDep
) -> m.DatastreamCollection:
    listing = p.listing("Datastreams")
    rows, nxt = p.page(q.datastreams(conn, listing, thing_id), base)
    return m.DatastreamCollection(
        value=[_datastream(r, base) for r in rows],
        next_link=nxt,
        count=q.count_datastreams(conn, listing, thing_id) if p.count else None,
    )


@router.get(
    "/Things({thing_id})/Locations",
    response_model=m.LocationCollection,
    operation_id="sta_thing_locations",
)
def thing_locations(thing_id: int, conn: Conn, base: BaseUrl, p: PagingDep) -> m.LocationCollection:
    listing = p.listing("Locations")
    rows, nxt = p.page(q.locations(conn, listing, thing_id), base)
    return m.LocationCollection(
        value=[_location(r, base) for r in rows],
        next_link=nxt,
        count=q.count_locations(conn, listing, thing_id) if p.count else None,
    )


@router.get("/Locations", response_model=m.LocationCollection, operation_id="sta_list_locations")
def list_locations(conn: Conn, base: BaseUrl, p: PagingDep) -> m.LocationCollection:
    listing = p.listing("Locations")
    rows, nxt = p.page(q.locations(conn, listing), base)
    return m.LocationCollection(
        value=[_location(r, base) for r in rows],
        next_link=nxt,
        count=q.count_locations(conn, listing) if p.count else None,
    )


@router.get(
    "/Datastreams", response_model=m.DatastreamCollection, operation_id="sta_list_datastreams"
)
def list_datastreams(conn: Conn, base: BaseUrl, p: PagingDep) -> m.DatastreamCollection:
    listing = p.listing("Datastreams")
    rows, nxt = p.page(q.datastreams(conn, listing), base)
    return m.DatastreamCollection(
        value=[_datastream(r, base) for r in rows],
        next_link=nxt,
        count=q.count_datastreams(conn, listing) if p.count else None,
    )


@router.get("/Datastreams({ds_id})", response_model=m.Datastream, operation_id="sta_get_datastream")
def get_datastream(ds_id: int, conn: Conn, base: BaseUrl) -> m.Datastream:
    return _datastream(q.datastream(conn, ds_id), base)


@router.get(
    "/Datastreams({ds_id})/Observations",
    response_model=m.ObservationCollection,
    operation_id="sta_datastream_observations",
)
def datastream_observations(
    ds_id: int, conn: Conn, base: BaseUrl, p: PagingDep
) -> m.ObservationCollection:
    listing = p.listing("Observations")
    rows, nxt = p.page(q.observations(conn, ds_id, listing), base)
    count, exact = q.count_observations(conn, ds_id, listing) if p.count else (None, True)
    return m.ObservationCollection(
        value=[_observation(r, base) for r in rows],
        next_link=nxt,
        count=count,
        count_is_estimate=None if exact else True,
    )


@router.get("/Sensors", response_model=m.SensorCollection, operation_id="sta_list_sensors")
def list_sensors(conn: Conn, base: BaseUrl, p: PagingDep) -> m.SensorCollection:
    listing = p.listing("Sensors")
    rows, nxt = p.page(q.sensors(conn, listing), base)
    return m.SensorCollection(
        value=[_sensor(r, base) for r in rows],
        next_link=nxt,
        count=q.count_sensors(conn, listing) if p.count else None,
    )


@router.get("/Sensors({sensor_id})", response_model=m.Sensor, operation_id="sta_get_sensor")
def get_sensor(sensor_id: int, conn: Conn, base: BaseUrl) -> m.Sensor:
    return _sensor(q.sensor(conn, sensor_id), base)


@router.get(
    "/ObservedProperties",
    response_model=m.ObservedPropertyCollection,
    operation_id="sta_list_observed_properties",
)
def list_observed_properties(
    conn: Conn, base: BaseUrl, p: PagingDep
) -> m.ObservedPropertyCollection:
    listing = p.listing("ObservedProperties")
    rows, nxt = p.page(q.observed_properties(conn, listing), base)
    return m.ObservedPropertyCollection(
        value=[_observed_property(r, base) for r in rows],
        next_link=nxt,
        count=q.count_observed_properties(conn, listing) if p.count else None,
    )


@router.get(
    "/ObservedProperties({op_id})",
    response_model=m.ObservedProperty,
    operation_id="sta_get_observed_property",
)
def get_observed_property(op_id: int, conn: Conn, base: BaseUrl) -> m.ObservedProperty:
    return _observed_property(q.observed_property(conn, op_id), base)


@router.get(
    "/Observations('{obs_id}')",
    response_model=m.Observation,
    operation_id="sta_get_observation",
)
def get_observation(obs_id: str, conn: Conn, base: BaseUrl) -> m.Observation:
    """One Observation by its @iot.id (``'<datastream id>:<µs since 1970>'``)."""
    ds_id, time = parse_observation_id(obs_id)
    return _observation(q.observation(conn, ds_id, time), base)
