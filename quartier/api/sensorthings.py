"""OGC SensorThings API v1.1 (read part): the eight entity sets, each entity by id and the
navigations the bodies link to, with ``$filter``, ``$orderby``, ``$top``, ``$skip``, ``$count``,
``$select``, ``$expand`` (nested, with options at each level), ``$resultFormat=dataArray`` and
``@iot.nextLink``. The routes are made by four functions over the entity sets (collection,
entity, to-many and to-one navigation; see ``_NAVIGATIONS`` and ``_TO_ONE`` at the end) over one
store query, so every link a body carries has its route. The options are parsed and compiled by
``quartier.api.sta``; valid options Quartier does not implement (``$search`` …) are a 501 that
says so, never ignored.

Server-driven paging: a next page continues after the last row's sort keys (a keyset cursor in
``$skiptoken``), not by an offset, so pages stay cheap deep into a collection and no row that
existed at the first page is skipped or repeated while rows are inserted. ``$expand``: one query
per expanded navigation and level for the whole page (a LATERAL subquery per parent with its own
order and limit), never one per entity.
"""

from __future__ import annotations

import base64
import binascii
import csv
import functools
import hashlib
import inspect
import io
import json
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, overload
from urllib.parse import quote, urlencode

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from psycopg import sql
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.types import Message

from quartier.api import models as m
from quartier.api import sta_fastpage
from quartier.api.csv_cells import safe_row
from quartier.api.deps import (
    AppSettings,
    BaseUrl,
    Conn,
    bounded_skip,
    get_base_url,
    get_conn,
    get_settings,
)
from quartier.api.sta import (
    ENTITIES,
    ENTITY_SETS,
    Expand,
    QueryOptions,
    cast_of,
    check_options,
    compile_filter,
    compile_navigation,
    order_keys,
    parse_query_options,
)
from quartier.api.sta.ast import Compare, Literal, Logical, Path
from quartier.api.sta.model import Nav
from quartier.api.sta_etag import conditional_get, tag_of, tagged
from quartier.config import Settings
from quartier.errors import BadRequestError, NotFoundError
from quartier.store import sensorthings as q
from quartier.store import sensorthings_count
from quartier.store.db import DictConn

PREFIX = "/v1.1"
router = APIRouter(prefix=PREFIX, tags=["SensorThings API v1.1"])

#: The entity set of each entity type ("Thing" → "Things").
SET_OF = {v: k for k, v in ENTITY_SETS.items()}


def _options(request: Request) -> QueryOptions:
    return parse_query_options(request.query_params)


@functools.lru_cache(maxsize=512)
def _parsed(query_string: bytes) -> QueryOptions:
    return parse_query_options(QueryParams(query_string))


def _paging_options(request: Request) -> QueryOptions:
    """``_options``, parsed once per query string and process (a dashboard polls the same page
    URL; a query string that does not parse raises each time): the trees are immutable."""
    query_string: bytes = request.scope.get("query_string", b"")
    if len(query_string) > 4096:  # keep the cache's memory small
        return _options(request)
    return _parsed(query_string)


_ABSENT = object()


def _json_member(value: Any, segments: tuple[str, ...]) -> Any:
    """The member of a JSON object at ``segments`` (keys, one a level), or ``_ABSENT``."""
    for seg in segments:
        if not isinstance(value, dict) or seg not in value:
            return _ABSENT
        value = value[seg]
    return value


def _pick(body: dict[str, Any], select: tuple[Path, ...], entity_type: str) -> dict[str, Any]:
    """The ``$select``ed part of one entity's body: ``id`` is ``@iot.id``, a navigation property
    its ``@iot.navigationLink``, any other property its value (null where Quartier stores none),
    a member of a JSON property (``properties/owner``) nested as in the body, left out where the
    value has no such member (as FROST answers it)."""
    navs = ENTITIES[entity_type].navs
    whole = {p.segments[0] for p in select if len(p.segments) == 1}
    out: dict[str, Any] = {}
    for p in select:
        name = p.segments[0]
        if len(p.segments) > 1:
            value = _json_member(body.get(name), p.segments[1:])
            if name in whole or value is _ABSENT:
                continue
            target = out.setdefault(name, {})
            for seg in p.segments[1:-1]:
                target = target.setdefault(seg, {})
            if isinstance(target, dict):
                target[p.segments[-1]] = value
        elif name == "id":
            out["@iot.id"] = body["@iot.id"]
        elif name in navs:
            key = f"{name}@iot.navigationLink"
            if key in body:  # an Observation without a FeatureOfInterest has no link
                out[key] = body[key]
        else:
            out[name] = body.get(name)
    return out


def _level(
    settings: Settings, options: QueryOptions, entity_set: str, where: str = ""
) -> q.Listing:
    """The compiled ``$filter``, ``$orderby``, ``$top`` (clamped to the server maximum) and
    ``$skip`` of one level of a request over ``entity_set``."""
    alias = q.ALIASES[entity_set]
    filter_sql = None
    params: dict[str, Any] = {}
    if options.filter is not None:
        f = compile_filter(options.filter, entity_set, alias)
        filter_sql, params = f.sql, dict(f.params)
    keys: tuple[q.SortKey, ...] = ()
    if options.orderby:
        compiled, order_params = order_keys(options.orderby, entity_set, alias)
        params.update(order_params)
        keys = tuple(
            q.SortKey(k.sql, k.descending, k.nullable, cast_of(k.type), k.column) for k in compiled
        )
    wanted = settings.api.default_top if options.top is None else options.top
    top = min(wanted, settings.api.max_top)
    skip = bounded_skip(settings, options.skip or 0, f"{where}$skip")
    span = None
    if entity_set == "Observations" and options.filter is not None:
        span = time_range(options.filter)
    return q.Listing(top, skip, filter_sql, keys, params, time_range=span)


_MIRROR: dict[str, str] = {"ge": "le", "gt": "lt", "le": "ge", "lt": "gt"}


def time_range(expr: Any) -> tuple[datetime | None, datetime | None] | None:
    """``(start, end)`` when the ``$filter`` ``expr`` says no more than ``start <=
    phenomenonTime < end`` (comparisons of ``phenomenonTime`` with date-times that carry their
    offset, joined by ``and``; either end may be None); None for any other condition. The
    counts of Observations take the daily rollup for it (``store/sensorthings_count``)."""
    bounds: list[datetime | None] = [None, None]
    tick = timedelta(microseconds=1)  # PostgreSQL's resolution: gt t is ge t + 1 µs

    def walk(e: Any) -> bool:
        if isinstance(e, Logical) and e.op == "and":
            return walk(e.left) and walk(e.right)
        if not isinstance(e, Compare) or e.op not in _MIRROR:
            return False
        op: str = e.op
        left, right = e.left, e.right
        if isinstance(left, Literal) and isinstance(right, Path):
            op, left, right = _MIRROR[op], right, left
        if not (
            isinstance(left, Path)
            and left.segments == ("phenomenonTime",)
            and isinstance(right, Literal)
            and isinstance(right.value, datetime)
            and right.value.utcoffset() is not None
        ):
            return False
        t = right.value + tick if op in ("gt", "le") else right.value
        if op in ("ge", "gt"):
            bounds[0] = t if bounds[0] is None else max(bounds[0], t)
        else:
            bounds[1] = t if bounds[1] is None else min(bounds[1], t)
        return True

    return (bounds[0], bounds[1]) if walk(expr) else None


def nav_order(listing: q.Listing, nav: Nav, alias: str) -> q.Listing:
    """``listing`` sorted by the navigation's own order (``Nav.order``, e.g. a MultiDatastream's
    ObservedProperties by position) when ``$orderby`` names no key; else unchanged."""
    if not nav.order or listing.keys:
        return listing
    fmt = {"b": sql.Identifier(alias), "x": sql.Identifier(alias + "x")}
    key = sql.SQL(nav.order).format(**{k: v for k, v in fmt.items() if "{" + k + "}" in nav.order})
    return replace(listing, keys=(q.SortKey(key, cast="bigint"),))


def _encode_cursor(values: list[str | None]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> tuple[str | None, ...]:
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or not all(v is None or isinstance(v, str) for v in values):
        raise BadRequestError("$skiptoken is not valid; start again without it")
    return tuple(values)


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
        expand: Annotated[
            str | None,
            Query(alias="$expand", description="related entities to include, with options"),
        ] = None,
        result_format: Annotated[
            str | None,
            Query(alias="$resultFormat", description="dataArray (Observations only)"),
        ] = None,
    ) -> None:
        options = _paging_options(request)
        self.request = request
        self.settings = settings
        self.options: QueryOptions = options
        probe = _level(settings, replace(options, filter=None, orderby=()), "Things")
        self.top, self.skip = probe.top, probe.skip
        self.count = bool(options.count)
        self.after = None if options.skiptoken is None else _decode_cursor(options.skiptoken)

    def listing(self, entity_set: str) -> q.Listing:
        """The compiled ``$filter``, ``$orderby`` and page of this request over ``entity_set``
        (``$select`` and ``$expand`` are checked when the body is shaped)."""
        fmt = self.options.result_format
        if fmt == "dataArray" and entity_set != "Observations":
            raise BadRequestError("$resultFormat=dataArray applies to Observations only")
        if fmt == "GeoJSON" and entity_set not in GEOMETRY:
            raise BadRequestError(
                f"$resultFormat=GeoJSON applies to {', '.join(GEOMETRY)}; {entity_set} have no"
                " geometry"
            )
        check_options(
            QueryOptions(select=self.options.select, expand=self.options.expand), entity_set
        )
        listing = _level(self.settings, self.options, entity_set)
        if self.after is not None:
            listing = replace(listing, skip=0, after=self.after)
        return listing

    def page(
        self, rows: list[dict[str, Any]], base: str, listing: q.Listing
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The rows of this page and the ``@iot.nextLink`` when there are more: the same request
        continuing after this page's last row (``$skiptoken``, a keyset cursor), or by ``$skip``
        where a sort key cannot be carried by a cursor; none for ``$top=0``."""
        if self.top == 0 or len(rows) <= self.top:
            return rows[: self.top], None
        rows = rows[: self.top]
        last = rows[-1]
        n = sum(1 for k in last if k.startswith("_k"))
        return rows, self.next_link(base, [last[f"_k{i}"] for i in range(n)] if n else None)

    def next_link(self, base: str, last_keys: list[str | None] | None) -> str:
        """The ``@iot.nextLink`` after a full page whose last row's sort keys (as text) are
        ``last_keys``: the same request with them as ``$skiptoken``, or by ``$skip`` (None:
        the order cannot be carried by a cursor)."""
        params = dict(self.request.query_params)
        params["$top"] = str(self.top)
        if last_keys is not None:
            params.pop("$skip", None)
            params["$skiptoken"] = _encode_cursor(last_keys)
        else:
            params.pop("$skiptoken", None)
            params["$skip"] = str(self.skip + self.top)
        query = urlencode(params, quote_via=quote)
        return f"{base}{self.request.url.path}?{query}"

    def rollup_floor(self) -> datetime | None:
        """Before this day rollup rows may be gone (``database.rollup_retention``): counts from
        the rollups count the rows before it one by one (``store/sensorthings_count``)."""
        return sensorthings_count.rollup_floor(self.settings.database.rollup_retention)

    def plain(self) -> bool:
        """Whether the body is the entities as they are (no ``$select``, ``$expand`` or
        ``$resultFormat``): what ``sta_fastpage`` writes for Observations."""
        o = self.options
        return not o.select and not o.expand and o.result_format is None

    def fast_observations(self, conn: DictConn, base: str, scope_id: int) -> Response | None:
        """The page of the observations stored under ``scope_id`` (a Datastream's id, minus a
        MultiDatastream's) written by PostgreSQL (``sta_fastpage``), with its count when
        asked; None where that path does not apply (the caller takes the general one)."""
        if not self.plain():
            return None
        listing = self.listing("Observations")
        page = sta_fastpage.observation_page(conn, scope_id, listing, f"{base}{PREFIX}")
        if page is None:
            return None
        nxt = self.next_link(base, page.last_keys) if page.more else None
        count, exact = None, True
        if self.count and scope_id < 0:
            count = q.count_multi_observations(
                conn, -scope_id, listing, rollup_floor=self.rollup_floor()
            )
        elif self.count:
            count, exact = q.count_observations(
                conn, scope_id, listing, rollup_floor=self.rollup_floor()
            )
        body = sta_fastpage.collection(page.items, nxt, count, not exact)
        return _etagged(self.request, Response(body, media_type="application/json"))

    def respond(
        self,
        conn: DictConn,
        base: str,
        entity_set: str,
        rows: list[dict[str, Any]],
        nxt: str | None,
        count: int | None,
        estimate: bool = False,
    ) -> Any:
        """The collection body: the response model itself when no option reshapes it, else the
        ``$select``ed, ``$expand``ed or dataArray JSON."""
        body = self._body(conn, base, entity_set, rows, nxt, count, estimate)
        if entity_set != "Observations":
            return body
        return _etagged(self.request, body)

    def _body(
        self,
        conn: DictConn,
        base: str,
        entity_set: str,
        rows: list[dict[str, Any]],
        nxt: str | None,
        count: int | None,
        estimate: bool,
    ) -> Any:
        spec = _SETS[entity_set]
        o = self.options
        if o.result_format == "dataArray":
            return JSONResponse(_data_array(rows, base, o.select, count, nxt))
        if o.result_format == "GeoJSON":
            shown = o
            if entity_set == "Things" and not any(x.path[0] == "Locations" for x in o.expand):
                shown = replace(o, expand=(*o.expand, Expand(("Locations",), QueryOptions())))
            bodies = render(conn, base, self.settings, entity_set, rows, shown)
            return _geojson(entity_set, bodies, count, nxt)
        if o.result_format == "CSV":
            return _csv(render(conn, base, self.settings, entity_set, rows, o), nxt)
        if not o.select and not o.expand and entity_set == "Observations":
            page = _observation_page(rows, base, nxt, count, estimate)
            if page is not None:
                return page
        if not o.select and not o.expand:
            return spec.collection.model_validate(
                {
                    "value": [spec.shape(r, base) for r in rows],
                    "@iot.nextLink": nxt,
                    "@iot.count": count,
                    "@quartier.countIsEstimate": True if estimate else None,
                }
            )
        data: dict[str, Any] = {}
        if count is not None:
            data["@iot.count"] = count
            if estimate:
                data["@quartier.countIsEstimate"] = True
        data["value"] = render(conn, base, self.settings, entity_set, rows, o)
        if nxt is not None:
            data["@iot.nextLink"] = nxt
        return JSONResponse(data)


PagingDep = Annotated[Paging, Depends()]


def _etagged(request: Request, body: BaseModel | Response) -> Response:
    """A page of observations with an ETag over its bytes (weak: gzip may re-encode them), and
    304 Not Modified when the client's ``If-None-Match`` names it, so a dashboard that polls the
    same page downloads it again only when it changed. (No Last-Modified: Quartier stores no
    modification time of observations, and their phenomenon or result time is not one.)"""
    if isinstance(body, BaseModel):
        body = Response(body.model_dump_json(by_alias=True), media_type="application/json")
    tag = f'W/"{hashlib.sha256(bytes(body.body)).hexdigest()[:32]}"'
    asked = {t.strip() for t in request.headers.get("if-none-match", "").split(",")}
    if tag in asked or "*" in asked:
        return Response(status_code=304, headers={"ETag": tag})
    body.headers["ETag"] = tag
    return body


class Selection:
    """The ``$select`` and ``$expand`` of a request for one entity."""

    def __init__(
        self,
        request: Request,
        settings: AppSettings,
        select: Annotated[
            str | None, Query(alias="$select", description="properties to return")
        ] = None,
        expand: Annotated[
            str | None,
            Query(alias="$expand", description="related entities to include, with options"),
        ] = None,
    ) -> None:
        o = _options(request)
        self.settings = settings
        self.options = QueryOptions(select=o.select, expand=o.expand)

    def respond(self, conn: DictConn, base: str, entity_set: str, row: dict[str, Any]) -> Any:
        if not self.options.select and not self.options.expand:
            return _SETS[entity_set].shape(row, base)
        check_options(self.options, entity_set)
        return JSONResponse(render(conn, base, self.settings, entity_set, [row], self.options)[0])


SelectionDep = Annotated[Selection, Depends()]


# --------------------------------------------------------------------------- $expand, dataArray
def render(
    conn: DictConn,
    base: str,
    settings: Settings,
    entity_set: str,
    rows: list[dict[str, Any]],
    options: QueryOptions,
) -> list[dict[str, Any]]:
    """The JSON bodies of ``rows`` with ``options``' ``$select`` and ``$expand`` applied (the
    expansions of all rows fetched together, level by level)."""
    from quartier.api import sta_expand_latest  # imports this module

    fast = sta_expand_latest.render(conn, base, settings, entity_set, rows, options)
    if fast is not None:  # Things → Datastreams → Observations: the fast path
        return fast
    entity_type = ENTITY_SETS[entity_set]
    shape = _SETS[entity_set].shape
    bodies = [shape(r, base).model_dump(mode="json", by_alias=True) for r in rows]
    if options.select:
        bodies = [_pick(b, options.select, entity_type) for b in bodies]
    for x in normalized(options.expand):
        _expand(conn, base, settings, entity_set, rows, bodies, x)
    return bodies


def _expand_text(path: tuple[str, ...], raw: tuple[tuple[str, str], ...]) -> str:
    inner = ";".join(f"{k}={v}" for k, v in raw)
    return "/".join(path) + (f"({inner})" if inner else "")


def normalized(expands: tuple[Expand, ...]) -> list[Expand]:
    """``$expand`` items one navigation deep: ``Datastreams/Observations($top=1)`` becomes
    ``Datastreams($expand=Observations($top=1))``, and items of the same navigation are merged
    (their nested expansions joined; the first item's other options win)."""
    out: dict[str, Expand] = {}
    for x in expands:
        head, rest = x.path[0], x.path[1:]
        item = x
        if rest:
            inner = Expand(rest, x.options, x.raw)
            item = Expand(
                (head,), QueryOptions(expand=(inner,)), (("$expand", _expand_text(rest, x.raw)),)
            )
        prev = out.get(head)
        if prev is None:
            out[head] = Expand((head,), item.options, item.raw)
            continue
        own = prev if _has_own(prev) else item
        expand = prev.options.expand + item.options.expand
        texts = [v for x2 in (prev, item) for k, v in x2.raw if k == "$expand"]
        raw = tuple((k, v) for k, v in own.raw if k != "$expand")
        raw += (("$expand", ",".join(texts)),) if texts else ()
        out[head] = Expand((head,), replace(own.options, expand=expand), raw)
    return list(out.values())


def _has_own(x: Expand) -> bool:
    return any(k != "$expand" for k, _ in x.raw)


def _expand(
    conn: DictConn,
    base: str,
    settings: Settings,
    entity_set: str,
    rows: list[dict[str, Any]],
    bodies: list[dict[str, Any]],
    x: Expand,
) -> None:
    """Put the entities ``x`` navigates to into each body: a to-one navigation as the entity, a
    to-many one as a list with ``@iot.count`` (``$count=true``) and ``@iot.nextLink`` when it
    has more than ``$top``."""
    entity_type = ENTITY_SETS[entity_set]
    name = x.path[0]
    nav = ENTITIES[entity_type].navs[name]
    target_set = SET_OF[nav.target]
    o = x.options
    listing = _level(settings, o, target_set, f"$expand={name}: ")
    # server-driven paging inside expansions: all parents together get at most api.max_top
    # entities per level (each at least one), the rest is behind the nextLinks
    budget = max(1, settings.api.max_top // max(1, len(rows)))
    if nav.many and listing.top > budget:
        listing = replace(listing, top=budget)
    inner = QueryOptions(select=o.select, expand=o.expand)
    listing = nav_order(listing, nav, q.ALIASES[target_set])
    if not nav.many:
        fks = [r.get(nav.fk) for r in rows]
        targets = q.by_ids(conn, target_set, sorted({i for i in fks if i is not None}), listing)
        trows = list(targets.values())
        by_id = dict(
            zip(targets, render(conn, base, settings, target_set, trows, inner), strict=True)
        )
        for fk, body in zip(fks, bodies, strict=True):
            if fk in by_id:
                body[name] = by_id[fk]
        return
    source, on = compile_navigation(entity_type, name, "_p", q.ALIASES[target_set])
    parent_ids = [int(r["id"]) for r in rows]
    table = ENTITIES[entity_type].table
    found = q.expand_many(conn, target_set, source, on, table, parent_ids, listing)
    groups: dict[int, list[dict[str, Any]]] = {}
    for r in found:
        groups.setdefault(int(r["_parent"]), []).append(r)
    more = {pid for pid, g in groups.items() if len(g) > listing.top}
    kept = [r for pid in parent_ids for r in groups.get(pid, [])[: listing.top]]
    rendered = iter(render(conn, base, settings, target_set, kept, inner))
    counts = q.count_many(conn, source, on, table, parent_ids, listing) if o.count else None
    for pid, body in zip(parent_ids, bodies, strict=True):
        if counts is not None:
            body[f"{name}@iot.count"] = counts.get(pid, 0)
        body[name] = [next(rendered) for _ in groups.get(pid, [])[: listing.top]]
        if pid in more and listing.top > 0:
            params = dict(x.raw)
            params["$top"] = str(listing.top)
            params["$skip"] = str(listing.skip + listing.top)
            query = urlencode(params, quote_via=quote)
            body[f"{name}@iot.nextLink"] = f"{_link(base, entity_set, pid, name)}?{query}"


#: The geometry of each entity set's GeoJSON features (Things: their first Location's).
GEOMETRY = {
    "Things": "Locations",
    "Locations": "location",
    "FeaturesOfInterest": "feature",
    "Datastreams": "observedArea",
    "MultiDatastreams": "observedArea",
}


def _geojson(
    entity_set: str, bodies: list[dict[str, Any]], count: int | None, nxt: str | None
) -> Response:
    """``$resultFormat=GeoJSON``: a FeatureCollection, one Feature per entity with its geometry
    and its other properties (navigation links left out); ``@iot.count`` and ``@iot.nextLink``
    as foreign members."""
    key = GEOMETRY[entity_set]
    features = []
    for b in bodies:
        geometry = b.get(key)
        if key == "Locations":
            geometry = next((x.get("location") for x in b.get("Locations") or []), None)
        props = {k: v for k, v in b.items() if k != key and not k.endswith("@iot.navigationLink")}
        features.append(
            {"type": "Feature", "id": b.get("@iot.id"), "geometry": geometry, "properties": props}
        )
    data: dict[str, Any] = {"type": "FeatureCollection"}
    if count is not None:
        data["@iot.count"] = count
    data["features"] = features
    if nxt is not None:
        data["@iot.nextLink"] = nxt
    return Response(json.dumps(data), media_type="application/geo+json")


def _flat(body: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in body.items():
        if k.endswith("@iot.navigationLink"):
            continue
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}/"))
        elif isinstance(v, list):
            out[f"{prefix}{k}"] = json.dumps(v)
        else:
            out[f"{prefix}{k}"] = v
    return out


def _csv(bodies: list[dict[str, Any]], nxt: str | None) -> Response:
    """``$resultFormat=CSV``: one row per entity, one column per (nested: ``a/b``) property in
    the order first seen; text that a spreadsheet would run as a formula is made inert. The
    nextLink travels in a ``Link`` header (``rel="next"``)."""
    rows = [_flat(b) for b in bodies]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow(safe_row("" if r.get(c) is None else r.get(c) for c in columns))
    headers = {"Link": f'<{nxt}>; rel="next"'} if nxt else {}
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


#: The components of a dataArray without ``$select`` (the standard's example).
DATA_ARRAY_COMPONENTS = ("id", "phenomenonTime", "resultTime", "result")


def _data_array(
    rows: list[dict[str, Any]],
    base: str,
    select: tuple[Path, ...],
    count: int | None,
    nxt: str | None,
) -> dict[str, Any]:
    """Observations as ``$resultFormat=dataArray``: one item per datastream (in the order of the
    page) with its ``components`` (the ``$select``ed properties, navigation properties left out)
    and one array of values per observation."""
    navs = ENTITIES["Observation"].navs
    components = [str(p) for p in select if p.segments[0] not in navs] or list(
        DATA_ARRAY_COMPONENTS
    )
    keys = ["@iot.id" if c == "id" else c for c in components]
    groups: dict[int, list[list[Any]]] = {}
    for r in rows:
        body = _observation(r, base).model_dump(mode="json", by_alias=True)
        groups.setdefault(r["datastream_id"], []).append([_component(body, k) for k in keys])
    data: dict[str, Any] = {}
    if count is not None:
        data["@iot.count"] = count
    data["value"] = [
        {
            # a MultiDatastream's observations are stored under datastream_id -<its id>
            **(
                {"MultiDatastream@iot.navigationLink": _link(base, "MultiDatastreams", -ds)}
                if ds < 0
                else {"Datastream@iot.navigationLink": _link(base, "Datastreams", ds)}
            ),
            "components": components,
            "dataArray@iot.count": len(values),
            "dataArray": values,
        }
        for ds, values in groups.items()
    ]
    if nxt is not None:
        data["@iot.nextLink"] = nxt
    return data


def _component(body: dict[str, Any], key: str) -> Any:
    """A dataArray component's value: a property, or a member of one (``result/temperature``)."""
    if "/" not in key:
        return body.get(key)
    name, *rest = key.split("/")
    value = _json_member(body.get(name), tuple(rest))
    return None if value is _ABSENT else value


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
        multi_datastreams_link=_link(base, "Things", r["id"], "MultiDatastreams"),
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
        multi_datastreams_link=_link(base, "Sensors", r["id"], "MultiDatastreams"),
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
        multi_datastreams_link=_link(base, "ObservedProperties", r["id"], "MultiDatastreams"),
    )


def observation_id(datastream_id: int, time: datetime) -> str:
    """The derived @iot.id of an Observation: ``"<datastream id>:<µs since 1970>"``."""
    return f"{datastream_id}:{(time - _EPOCH) // _MICROSECOND}"


def parse_observation_id(text: str) -> tuple[int, datetime]:
    """The (datastream_id, phenomenonTime) of an Observation's @iot.id; a MultiDatastream's
    observations have the datastream_id -<its id>."""
    ds, sep, us = text.partition(":")
    if not (sep and ds.removeprefix("-").isdigit() and us.lstrip("-").isdigit()):
        raise BadRequestError(
            f"Observation id {text!r} is not '<datastream id>:<microseconds since 1970>'"
        )
    return int(ds), _EPOCH + int(us) * _MICROSECOND


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _observation(r: dict[str, Any], base: str) -> m.Observation:
    oid = observation_id(r["datastream_id"], r["phenomenon_time"])
    multi = r["datastream_id"] < 0
    return m.Observation(
        id=oid,
        self_link=f"{base}{PREFIX}/Observations('{oid}')",
        phenomenon_time=iso(r["phenomenon_time"]) or "",
        result_time=iso(r["result_time"]),
        result=r["result"] if r["result_json"] is None else r["result_json"],
        parameters=r["parameters"],
        datastream_link=None if multi else _link(base, "Datastreams", r["datastream_id"]),
        multi_datastream_link=(
            _link(base, "MultiDatastreams", -r["datastream_id"]) if multi else None
        ),
        feature_of_interest_link=(
            None if r["foi_id"] is None else _link(base, "FeaturesOfInterest", r["foi_id"])
        ),
    )


def observation_body(
    r: dict[str, Any], prefix: str, oid: str, phenomenon_time: str
) -> dict[str, Any]:
    """An Observation row as ``m.Observation``'s JSON dump writes it (the same members in the
    same order), its id and phenomenonTime already written; ``prefix`` is the service root."""
    ds = r["datastream_id"]
    obs = {
        "@iot.id": oid,
        "@iot.selfLink": f"{prefix}/Observations('{oid}')",
        "phenomenonTime": phenomenon_time,
        "resultTime": iso(r["result_time"]),
        "result": r["result"] if r["result_json"] is None else r["result_json"],
        "parameters": r["parameters"],
    }
    if ds < 0:
        obs["MultiDatastream@iot.navigationLink"] = f"{prefix}/MultiDatastreams({-ds})"
    else:
        obs["Datastream@iot.navigationLink"] = f"{prefix}/Datastreams({ds})"
    if r["foi_id"] is not None:
        obs["FeatureOfInterest@iot.navigationLink"] = f"{prefix}/FeaturesOfInterest({r['foi_id']})"
    return obs


def _observation_page(
    rows: list[dict[str, Any]], base: str, nxt: str | None, count: int | None, estimate: bool
) -> Response | None:
    """A page of Observations as ``m.ObservationCollection`` writes it (the same members in the
    same order; ``tests/test_api_sta_observation_page.py`` compares both on random rows),
    written by orjson from plain dicts: building and dumping a model per row was half of a
    page's CPU time (bench/api.py's profile). None when orjson cannot write a value (an integer
    beyond 64 bits in a JSON result): the model then writes the page."""
    data = sta_fastpage.collection_head(count, nxt, estimate)
    prefix = f"{base}{PREFIX}"
    us = [(r["phenomenon_time"] - _EPOCH) // _MICROSECOND for r in rows]
    # RFC 3339 with milliseconds, as iso() writes them, for the whole page at once
    times = np.datetime_as_string(np.array(us, dtype="datetime64[us]"), unit="ms").tolist()
    value = []
    for r, t_us, t in zip(rows, us, times, strict=True):
        value.append(observation_body(r, prefix, f"{r['datastream_id']}:{t_us}", f"{t}Z"))
    data["value"] = value
    try:
        body = orjson.dumps(data)
    except orjson.JSONEncodeError:
        return None
    return Response(body, media_type="application/json")


def _multi_datastream(r: dict[str, Any], base: str) -> m.MultiDatastream:
    span = f"{iso(r['t_min'])}/{iso(r['t_max'])}" if r["t_min"] else None
    return m.MultiDatastream(
        id=r["id"],
        self_link=_link(base, "MultiDatastreams", r["id"]),
        name=r["name"],
        description=r["description"],
        observation_type=r["observation_type"],
        multi_observation_data_types=r["multi_observation_data_types"],
        unit_of_measurements=[m.UnitOfMeasurement(**u) for u in r["unit_of_measurements"]],
        observed_area=r["observed_area"],
        phenomenon_time=span,
        properties=r["properties"],
        thing_link=_link(base, "Things", r["thing_id"]),
        sensor_link=_link(base, "Sensors", r["sensor_id"]),
        observed_properties_link=_link(base, "MultiDatastreams", r["id"], "ObservedProperties"),
        observations_link=_link(base, "MultiDatastreams", r["id"], "Observations"),
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
    "MultiDatastreams": _Set(_multi_datastream, m.MultiDatastream, m.MultiDatastreamCollection),
}


def shape(entity_set: str, row: dict[str, Any], base: str) -> BaseModel:
    """The response body of one entity of ``entity_set`` from its store row."""
    return _SETS[entity_set].shape(row, base)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


_SPEC = "http://www.opengis.net/spec/iot_sensing/1.1/req/"
#: The conformance classes of OGC 18-088 the read API passes (tests/test_api_sta_*.py, one group
#: per class): the data model, resource paths (entities, properties, $value, $ref, navigation),
#: every request-data option, dataArray, and create-update-delete (POST with deep insert and
#: links by @iot.id, PATCH, PUT, DELETE with cascades, automatic HistoricalLocations:
#: tests/test_api_sta_write.py) and the MultiDatastream extension
#: (tests/test_api_sta_multidatastream.py), batch requests (JSON and multipart, with change sets:
#: tests/test_api_sta_batch.py). Not (yet): the two MQTT classes.
CONFORMANCE = (
    f"{_SPEC}datamodel",
    f"{_SPEC}resource-path/resource-path-to-entities",
    f"{_SPEC}request-data",
    f"{_SPEC}create-update-delete",
    f"{_SPEC}data-array/data-array",
    f"{_SPEC}multi-datastream",
    f"{_SPEC}batch-request/batch-request",
)
#: Quartier's own extensions, each documented by its part of the OpenAPI description.
EXTENSIONS = {
    "aggregate": "/docs#/Aggregates/aggregate_datastream_observations",
    "latest": "/docs#/Aggregates/latest_observations_of_datastreams",
    "skiptoken": "/docs#/SensorThings%20API%20v1.1/sta_list_observations",
}


@router.get("", response_model=m.ServiceRoot, operation_id="sta_service_root")
def service_root(base: BaseUrl, settings: AppSettings) -> m.ServiceRoot:
    """The entity sets, the conformance classes passed (plus Quartier's extensions, which name
    their documentation), the data's licence and attribution."""
    api = settings.api
    return m.ServiceRoot(
        value=[m.ServiceEndpoint(name=n, url=f"{base}{PREFIX}/{n}") for n in ENTITY_SETS],
        serverSettings={
            "conformance": [*CONFORMANCE, *(f"{base}{path}" for path in EXTENSIONS.values())],
            "license": {
                "id": api.data_licence,
                "url": api.data_licence_url,
                "attribution": api.data_attribution,
            },
            "maxTop": api.max_top,
            "defaultTop": api.default_top,
        },
    )


def _list(
    conn: DictConn,
    base: str,
    p: Paging,
    entity_set: str,
    within: q.Within | None = None,
    refs: bool = False,
    order: Nav | None = None,
) -> Any:
    """One page of ``entity_set`` (all of it, or navigated to ``within`` one entity over the
    navigation ``order``, whose own order applies without ``$orderby``); ``refs``: only their
    selfLinks (a ``/$ref`` path)."""
    listing = p.listing(entity_set)
    if order is not None:
        listing = nav_order(listing, order, q.ALIASES[entity_set])
    rows, nxt = p.page(q.entities(conn, entity_set, listing, within), base, listing)
    count, exact = (
        q.count_collection(conn, entity_set, listing, within, rollup_floor=p.rollup_floor())
        if p.count
        else (None, True)
    )
    if refs:
        return _ref_page(base, entity_set, rows, nxt, count)
    from quartier.api import sta_expand_latest  # imports this module

    fast = sta_expand_latest.page(conn, base, p.settings, entity_set, rows, p.options, nxt, count)
    if fast is not None:  # Things → Datastreams → Observations, written by orjson
        return fast
    return p.respond(conn, base, entity_set, rows, nxt, count, estimate=not exact)


def _ref_page(
    base: str, entity_set: str, rows: list[dict[str, Any]], nxt: str | None, count: int | None
) -> JSONResponse:
    shape = _SETS[entity_set].shape
    data: dict[str, Any] = {} if count is None else {"@iot.count": count}
    data["value"] = [{"@iot.selfLink": shape(r, base).self_link} for r in rows]
    if nxt is not None:
        data["@iot.nextLink"] = nxt
    return JSONResponse(data)


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

    def route(
        entity_id: int,
        request: Request,
        response: Response,
        conn: Conn,
        base: BaseUrl,
        s: SelectionDep,
    ) -> Any:
        row = q.entity(conn, entity_set, entity_type, entity_id)
        tag = tag_of(shape(entity_set, row, ""))  # the entity's ETag (api/sta_etag.py)
        what = f"{entity_type} {entity_id}"
        not_modified = conditional_get(request.headers, tag, what, not s.options.expand)
        if not_modified is not None:
            return not_modified
        return tagged(s.respond(conn, base, entity_set, row), response, tag)

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

    order = ENTITIES[entity_type].navs[nav]

    def route(entity_id: int, conn: Conn, base: BaseUrl, p: PagingDep) -> Any:
        source, on = compile_navigation(entity_type, nav, "_p", q.ALIASES[nav])
        table = ENTITIES[entity_type].table
        within = q.Within(source, on, entity_type, table, entity_id)
        return _list(conn, base, p, nav, within, order=order)

    router.add_api_route(
        f"/{entity_set}({{entity_id}})/{nav}",
        route,
        response_model=_SETS[nav].collection,
        operation_id=f"sta_{_snake(entity_type)}_{_snake(nav)}",
        summary=f"The {nav} of one {entity_type}",
    )

    def ref_route(entity_id: int, conn: Conn, base: BaseUrl, p: PagingDep) -> Any:
        source, on = compile_navigation(entity_type, nav, "_p", q.ALIASES[nav])
        table = ENTITIES[entity_type].table
        within = q.Within(source, on, entity_type, table, entity_id)
        return _list(conn, base, p, nav, within, refs=True, order=order)

    router.add_api_route(
        f"/{entity_set}({{entity_id}})/{nav}/$ref",
        ref_route,
        operation_id=f"sta_{_snake(entity_type)}_{_snake(nav)}_ref",
        summary=f"The selfLinks of the {nav} of one {entity_type}",
    )


def _entity_path(entity_set: str) -> str:
    """The path of one entity of ``entity_set`` (an Observation's id is a quoted string)."""
    if entity_set == "Observations":
        return "/Observations('{entity_id}')"
    return f"/{entity_set}({{entity_id}})"


def _entity_row(conn: DictConn, entity_set: str, entity_id: str) -> dict[str, Any]:
    """One entity's row by the id in its path (404 when there is none)."""
    if entity_set == "Observations":
        ds_id, time = parse_observation_id(entity_id)
        return q.observation(conn, ds_id, time)
    if not entity_id.isdigit():
        raise BadRequestError(f"@iot.id {entity_id!r} of {entity_set} is not an integer")
    return q.entity(conn, entity_set, ENTITY_SETS[entity_set], int(entity_id))


def _fk(row: dict[str, Any], column: str) -> int | None:
    """The id a to-one navigation of ``row`` leads to; None when there is none (an Observation of
    a MultiDatastream, stored under datastream_id -<its id>, has no Datastream)."""
    fk = row.get(column)
    return None if fk is None or int(fk) < 0 else int(fk)


def _add_to_one(entity_set: str, nav: str) -> None:
    """``GET /<entity set>(<id>)/<nav>`` for a to-one navigation property: the one entity, read
    by the parent's foreign key, with the ETag of the entity's own URL and its conditional GET
    (``If-None-Match``: 304, ``If-Match``: 412), and ``…/<nav>/$ref``: its selfLink."""
    entity_type = ENTITY_SETS[entity_set]
    n = ENTITIES[entity_type].navs[nav]
    target_set = SET_OF[n.target]

    def target(conn: DictConn, entity_id: str) -> dict[str, Any]:
        fk = _fk(_entity_row(conn, entity_set, entity_id), n.fk)
        if fk is None:
            raise NotFoundError(f"{entity_type} {entity_id} has no {nav}")
        return q.entity(conn, target_set, n.target, int(fk))

    def route(
        entity_id: str,
        request: Request,
        response: Response,
        conn: Conn,
        base: BaseUrl,
        s: SelectionDep,
    ) -> Any:
        """The entity with the ETag (and the conditions) of its own URL (api/sta_etag.py)."""
        row = target(conn, entity_id)
        tag = tag_of(shape(target_set, row, ""))
        what = f"{n.target} {row['id']}"
        not_modified = conditional_get(request.headers, tag, what, not s.options.expand)
        if not_modified is not None:
            return not_modified
        return tagged(s.respond(conn, base, target_set, row), response, tag)

    def ref_route(entity_id: str, conn: Conn, base: BaseUrl) -> Any:
        row = target(conn, entity_id)
        return JSONResponse({"@iot.selfLink": _SETS[target_set].shape(row, base).self_link})

    path = f"{_entity_path(entity_set)}/{nav}"
    router.add_api_route(
        path,
        route,
        response_model=_SETS[target_set].model,
        operation_id=f"sta_{_snake(entity_type)}_{_snake(nav)}",
        summary=f"The {nav} of one {entity_type}",
    )
    router.add_api_route(
        f"{path}/$ref",
        ref_route,
        operation_id=f"sta_{_snake(entity_type)}_{_snake(nav)}_ref",
        summary=f"The selfLink of the {nav} of one {entity_type}",
    )


def _add_property(entity_set: str, prop: str) -> None:
    """``GET /<entity set>(<id>)/<property>`` (``{"<property>": value}``) and ``…/$value`` (the
    value alone, as text); 204 No Content when the value is null."""
    entity_type = ENTITY_SETS[entity_set]
    key = "@iot.id" if prop == "id" else prop
    shape = _SETS[entity_set].shape

    def value_of(conn: DictConn, base: str, entity_id: str) -> Any:
        body = shape(_entity_row(conn, entity_set, entity_id), base)
        return body.model_dump(mode="json", by_alias=True).get(key)

    def route(entity_id: str, conn: Conn, base: BaseUrl) -> Any:
        value = value_of(conn, base, entity_id)
        return Response(status_code=204) if value is None else JSONResponse({prop: value})

    def raw_route(entity_id: str, conn: Conn, base: BaseUrl) -> Any:
        value = value_of(conn, base, entity_id)
        if value is None:
            return Response(status_code=204)
        text = value if isinstance(value, str) else json.dumps(value)
        return Response(text, media_type="text/plain; charset=utf-8")

    path = f"{_entity_path(entity_set)}/{prop}"
    op = f"sta_{_snake(entity_type)}_property_{_snake(prop)}"
    router.add_api_route(path, route, operation_id=op, summary=f"One {entity_type}'s {prop}")
    router.add_api_route(
        f"{path}/$value",
        raw_route,
        operation_id=f"{op}_value",
        summary=f"One {entity_type}'s {prop}, the value alone",
        response_class=Response,
        responses={
            200: {
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "description": "the value as text (JSON for objects and arrays)",
            },
            204: {"description": "the value is null"},
        },
    )


async def _paging_query(**_: Any) -> None:
    """The query options ``Paging`` reads, declared for the OpenAPI description and validation
    of the routes that make their ``Paging`` themselves (``_in_one_thread``)."""


_paging_query.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        p
        for name, p in inspect.signature(Paging.__init__).parameters.items()
        if name not in ("self", "request", "settings")
    ]
)


def _in_one_thread(request: Request, work: Callable[[DictConn, str, Paging], Any]) -> Any:
    """``work`` with what ``Conn``, ``BaseUrl`` and ``PagingDep`` give a route, made in the
    thread that runs it: FastAPI runs each synchronous dependency in a thread of its own pool,
    and these hand-offs were a fifth of a weekly page's CPU in py-spy (docs/benchmarks.md,
    API). The observation pages, the throughput target's routes, take one hop instead."""
    p = Paging(request, get_settings(request))
    base = get_base_url(request)
    with contextmanager(get_conn)(request) as conn:
        return work(conn, base, p)


@router.get(
    "/Datastreams({ds_id})/Observations",
    response_model=m.ObservationCollection,
    operation_id="sta_datastream_observations",
    dependencies=[Depends(_paging_query)],
)
async def datastream_observations(ds_id: int, request: Request) -> Any:
    """One datastream's observations: a ``phenomenonTime`` filter is a primary-key range scan
    and an unfiltered ``$count`` may be an estimate on very large TimescaleDB datastreams.
    Without ``$select``/``$expand``/``$resultFormat`` PostgreSQL writes the page's JSON."""

    def work(conn: DictConn, base: str, p: Paging) -> Any:
        return _datastream_observations(ds_id, conn, base, p)

    return await run_in_threadpool(_in_one_thread, request, work)


def _datastream_observations(ds_id: int, conn: DictConn, base: str, p: Paging) -> Any:
    fast = p.fast_observations(conn, base, ds_id)
    if fast is not None:
        return fast
    listing = p.listing("Observations")
    rows, nxt = p.page(q.observations(conn, ds_id, listing), base, listing)
    count, exact = (
        q.count_observations(conn, ds_id, listing, rollup_floor=p.rollup_floor())
        if p.count
        else (None, True)
    )
    return p.respond(conn, base, "Observations", rows, nxt, count, estimate=not exact)


@router.get(
    "/Datastreams({ds_id})/Observations/$ref",
    operation_id="sta_datastream_observations_ref",
)
def datastream_observation_refs(ds_id: int, conn: Conn, base: BaseUrl, p: PagingDep) -> Any:
    """The selfLinks of one datastream's observations."""
    listing = p.listing("Observations")
    rows, nxt = p.page(q.observations(conn, ds_id, listing), base, listing)
    count = (
        q.count_observations(conn, ds_id, listing, rollup_floor=p.rollup_floor())[0]
        if p.count
        else None
    )
    return _ref_page(base, "Observations", rows, nxt, count)


@router.get(
    "/MultiDatastreams({mds_id})/Observations",
    response_model=m.ObservationCollection,
    operation_id="sta_multi_datastream_observations",
    dependencies=[Depends(_paging_query)],
)
async def multi_datastream_observations(mds_id: int, request: Request) -> Any:
    """One MultiDatastream's observations (each result an array, one value per ObservedProperty);
    a ``phenomenonTime`` filter is a primary-key range scan as for a Datastream."""

    def work(conn: DictConn, base: str, p: Paging) -> Any:
        return _multi_datastream_observations(mds_id, conn, base, p)

    return await run_in_threadpool(_in_one_thread, request, work)


def _multi_datastream_observations(mds_id: int, conn: DictConn, base: str, p: Paging) -> Any:
    fast = p.fast_observations(conn, base, -mds_id)
    if fast is not None:
        return fast
    listing = p.listing("Observations")
    rows, nxt = p.page(q.multi_observations(conn, mds_id, listing), base, listing)
    count = (
        q.count_multi_observations(conn, mds_id, listing, rollup_floor=p.rollup_floor())
        if p.count
        else None
    )
    return p.respond(conn, base, "Observations", rows, nxt, count)


@router.get(
    "/MultiDatastreams({mds_id})/Observations/$ref",
    operation_id="sta_multi_datastream_observations_ref",
)
def multi_datastream_observation_refs(mds_id: int, conn: Conn, base: BaseUrl, p: PagingDep) -> Any:
    """The selfLinks of one MultiDatastream's observations."""
    listing = p.listing("Observations")
    rows, nxt = p.page(q.multi_observations(conn, mds_id, listing), base, listing)
    count = (
        q.count_multi_observations(conn, mds_id, listing, rollup_floor=p.rollup_floor())
        if p.count
        else None
    )
    return _ref_page(base, "Observations", rows, nxt, count)


@router.get(
    "/Observations('{obs_id}')",
    response_model=m.Observation,
    operation_id="sta_get_observation",
)
def get_observation(
    obs_id: str, request: Request, response: Response, conn: Conn, base: BaseUrl, s: SelectionDep
) -> Any:
    """One Observation by its @iot.id (``'<datastream id>:<µs since 1970>'``), with its ETag."""
    ds_id, time = parse_observation_id(obs_id)
    row = q.observation(conn, ds_id, time)
    tag = tag_of(shape("Observations", row, ""))
    what = f"Observation '{obs_id}'"
    not_modified = conditional_get(request.headers, tag, what, not s.options.expand)
    if not_modified is not None:
        return not_modified
    return tagged(s.respond(conn, base, "Observations", row), response, tag)


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
    ("Things", "MultiDatastreams"),
    ("Sensors", "MultiDatastreams"),
    ("ObservedProperties", "MultiDatastreams"),
    ("MultiDatastreams", "ObservedProperties"),
]
#: The to-one navigations of entities with integer ids (bodies link straight to the entity, e.g.
#: ``Thing@iot.navigationLink`` is ``Things(1)``; these paths are the standard's other spelling).
_TO_ONE = [
    ("Datastreams", "Thing"),
    ("Datastreams", "Sensor"),
    ("Datastreams", "ObservedProperty"),
    ("HistoricalLocations", "Thing"),
    ("Observations", "Datastream"),
    ("Observations", "FeatureOfInterest"),
    ("Observations", "MultiDatastream"),
    ("MultiDatastreams", "Thing"),
    ("MultiDatastreams", "Sensor"),
]
for _entity_set in ENTITY_SETS:
    _add_collection(_entity_set)
    if _entity_set != "Observations":
        _add_entity(_entity_set)
for _entity_set, _nav in _NAVIGATIONS:
    _add_navigation(_entity_set, _nav)
for _entity_set, _nav in _TO_ONE:
    _add_to_one(_entity_set, _nav)
for _entity_set, _entity_type in ENTITY_SETS.items():
    for _prop in ENTITIES[_entity_type].props:
        _add_property(_entity_set, _prop)


# --------------------------------------------------------------------------- deeper paths
_SEGMENT = re.compile(r"^(?P<name>[A-Za-z]+)(?:\((?P<id>\d+|'[^'/]*')\))?$")


def _member(conn: DictConn, entity_set: str, entity_id: str, nav: str, target_id: str) -> None:
    """404 unless entity ``target_id`` is among the ``nav`` of ``entity_set(entity_id)``."""
    entity_type = ENTITY_SETS[entity_set]
    target_set = SET_OF[ENTITIES[entity_type].navs[nav].target]
    alias = q.ALIASES[target_set]
    if target_set == "Observations":
        ds_id, time = parse_observation_id(target_id.strip("'"))
        where = sql.SQL("{}.datastream_id = %(_d)s and {}.phenomenon_time = %(_t)s").format(
            sql.Identifier(alias), sql.Identifier(alias)
        )
        params: dict[str, Any] = {"_d": ds_id, "_t": time}
    else:
        where = sql.SQL("{}.id = %(_t)s").format(sql.Identifier(alias))
        params = {"_t": int(target_id)}
    source, on = compile_navigation(entity_type, nav, "_p", alias)
    parent = int(entity_id)
    within = q.Within(source, on, entity_type, ENTITIES[entity_type].table, parent)
    if not q.entities(conn, target_set, q.Listing(1, where=where, params=params), within):
        raise NotFoundError(f"{entity_type} {entity_id} has no {nav} with @iot.id {target_id}")


def canonical_path(conn: DictConn, path: str) -> str:
    """A path deeper than the routes' (``Things(1)/Datastreams(2)/Observations``,
    ``Datastreams(1)/Thing/Locations``) as the route path it addresses
    (``Datastreams(2)/Observations``, ``Things(<its id>)/Locations``), each step checked: an
    entity named by id must belong to the navigation it is reached by (404 otherwise)."""
    parts = [p for p in path.split("/") if p]
    first = _SEGMENT.match(parts[0]) if parts else None
    if first is None or first["name"] not in ENTITY_SETS or first["id"] is None:
        raise NotFoundError(f"no resource at {PREFIX}/{path}")
    current, current_id = first["name"], first["id"].strip("'")
    i = 1
    while i < len(parts) - 1 or (i < len(parts) and "(" in parts[i]):
        seg = _SEGMENT.match(parts[i])
        navs = ENTITIES[ENTITY_SETS[current]].navs
        if seg is None or seg["name"] not in navs:
            break
        nav = navs[seg["name"]]
        target = SET_OF[nav.target]
        if nav.many and seg["id"] is not None:
            _member(conn, current, current_id, seg["name"], seg["id"])
            current, current_id = target, seg["id"].strip("'")
        elif not nav.many and seg["id"] is None:
            fk = _fk(_entity_row(conn, current, current_id), nav.fk)
            if fk is None:
                raise NotFoundError(f"{ENTITY_SETS[current]} {current_id} has no {seg['name']}")
            current, current_id = target, str(fk)
        else:
            break
        i += 1
    if i == 1:
        raise NotFoundError(f"no resource at {PREFIX}/{path}")
    head = f"{current}('{current_id}')" if current == "Observations" else f"{current}({current_id})"
    return "/".join([head, *parts[i:]])


@router.get("/{path:path}", include_in_schema=False)
async def deeper_path(path: str, request: Request) -> Response:
    """Every other path under ``/v1.1``: resolved step by step to the route path it addresses
    (``canonical_path``) and answered by that route, with the same query."""
    pool = request.app.state.pool

    def resolve() -> str:
        with pool.connection() as conn:
            return canonical_path(conn, path)

    target = await run_in_threadpool(resolve)
    scope = dict(request.scope)
    scope["path"] = f"{PREFIX}/{target}"
    scope["raw_path"] = scope["path"].encode()
    status, headers, chunks = 500, [], []

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], message.get("headers", [])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await request.app.router(scope, request.receive, send)
    response = Response(b"".join(chunks), status_code=status)
    response.raw_headers = list(headers)
    return response
