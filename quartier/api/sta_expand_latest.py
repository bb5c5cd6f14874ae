"""The fast ``$expand`` of Things → Datastreams → Observations: "Things with their Datastreams'
latest observation" (``$expand=Datastreams/Observations($top=1;$orderby=phenomenonTime desc)``),
the researchers' and dashboards' favourite query (issue #13).

``sensorthings.render`` hands a request here first; :func:`render` answers the shapes listed in
:func:`handles` and returns None for every other one, which the general path
(``sensorthings._expand``) then answers. The bodies are the general path's, member for member
and in the same order (``tests/test_api_sta_expand_fast.py`` compares both on random data);
what differs is how they are made:

* the Datastreams of all Things in one query without their span subqueries, and the spans of
  all of them in a second one that probes one partition per bound instead of every monthly
  partition (``store.sensorthings_expand``);
* ``$top=1`` Observations ordered by ``phenomenonTime``: the newest (oldest) observation of a
  Datastream is the one at its span's end (start), so they are read by primary key in one
  query (``store.sensorthings.observations_at``; run-time pruning visits one partition each),
  and a Datastream has more than one (an ``@iot.nextLink``) exactly when its span is not one
  instant. Other ``$top``s and orders use the general path's LATERAL query;
* plain dicts instead of one pydantic model per entity, and each level's ``@iot.nextLink``
  query string encoded once, not once per parent.

Handled: Things or Datastreams (collection or one entity), with ``$select`` at any level and
``$expand`` of ``Datastreams`` (of Things; options ``$top``, ``$skip``, ``$select`` and a nested
``$expand`` of ``Observations``) and of ``Observations`` (of Datastreams; options ``$top``,
``$select`` and ``$orderby`` of ``phenomenonTime`` in either direction). Anything else
(``$filter``, ``$count``, another ``$orderby`` inside the expansion, other navigations) is the
general path's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal
from urllib.parse import quote, urlencode

import numpy as np
import orjson
from fastapi.responses import JSONResponse, Response

from quartier.api import sensorthings as st
from quartier.api.sta import ENTITY_SETS, Expand, QueryOptions, compile_navigation
from quartier.api.sta.ast import OrderItem, Path
from quartier.api.sta_fastpage import _Infinite, _since_1970, _times
from quartier.config import Settings
from quartier.store import sensorthings as q
from quartier.store import sensorthings_expand as qx
from quartier.store.db import DictConn
from quartier.store.migrate import storage_path
from quartier.store.pgcopy import Int8Array, TimestamptzArray

_PHENOMENON_TIME = Path(("phenomenonTime",))
#: the Observations orders handled: none (by phenomenonTime, ascending), or phenomenonTime
_ORDERS: dict[tuple[OrderItem, ...], bool] = {
    (): False,
    (OrderItem(_PHENOMENON_TIME, False),): False,
    (OrderItem(_PHENOMENON_TIME, True),): True,
}


# ----------------------------------------------------------------------------- what is handled
def _level_handled(entity_set: str, options: QueryOptions) -> bool:
    """Whether the expansions of ``options`` on entities of ``entity_set`` are all handled."""
    for x in st.normalized(options.expand):
        o = x.options
        if o.filter is not None or o.count or o.result_format or o.skiptoken:
            return False
        if entity_set == "Things" and x.path == ("Datastreams",):
            if o.orderby or not _level_handled("Datastreams", o):
                return False
        elif entity_set == "Datastreams" and x.path == ("Observations",):
            if o.orderby not in _ORDERS or o.skip or o.expand:
                return False
        else:
            return False
    return True


def handles(entity_set: str, options: QueryOptions) -> bool:
    """Whether :func:`render` answers ``options`` (with at least one ``$expand``) on
    ``entity_set``."""
    return (
        entity_set in ("Things", "Datastreams")
        and bool(options.expand)
        and _level_handled(entity_set, options)
    )


# ----------------------------------------------------------------------------- bodies
def _thing(r: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``sensorthings._thing``'s model as its JSON dump writes it."""
    link = f"{prefix}/Things({r['id']})"
    body: dict[str, Any] = {
        "@iot.id": r["id"],
        "@iot.selfLink": link,
        "name": r["name"],
        "description": r["description"],
    }
    if r["properties"] is not None:
        body["properties"] = r["properties"]
    body["Locations@iot.navigationLink"] = f"{link}/Locations"
    body["HistoricalLocations@iot.navigationLink"] = f"{link}/HistoricalLocations"
    body["Datastreams@iot.navigationLink"] = f"{link}/Datastreams"
    body["MultiDatastreams@iot.navigationLink"] = f"{link}/MultiDatastreams"
    return body


def _datastream(r: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``sensorthings._datastream``'s model as its JSON dump writes it."""
    link = f"{prefix}/Datastreams({r['id']})"
    unit = r["unit_of_measurement"]
    if "_span" in r:  # written with the page's other times (_Renderer._datastreams)
        span = r["_span"]
    else:
        t_min = r["t_min"]
        span = f"{st.iso(t_min)}/{st.iso(r['t_max'])}" if t_min else None
    body: dict[str, Any] = {
        "@iot.id": r["id"],
        "@iot.selfLink": link,
        "name": r["name"],
        "description": r["description"],
        "observationType": r["observation_type"],
        "unitOfMeasurement": {
            "name": unit.get("name"),
            "symbol": unit.get("symbol"),
            "definition": unit.get("definition"),
        },
        "observedArea": r["observed_area"],
        "phenomenonTime": span,
    }
    if r["properties"] is not None:
        body["properties"] = r["properties"]
    body["Thing@iot.navigationLink"] = f"{prefix}/Things({r['thing_id']})"
    body["Sensor@iot.navigationLink"] = f"{prefix}/Sensors({r['sensor_id']})"
    body["ObservedProperty@iot.navigationLink"] = (
        f"{prefix}/ObservedProperties({r['observed_property_id']})"
    )
    body["Observations@iot.navigationLink"] = f"{link}/Observations"
    return body


def _observation(r: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``sensorthings._observation``'s model as its JSON dump writes it."""
    oid = st.observation_id(r["datastream_id"], r["phenomenon_time"])
    return st.observation_body(r, prefix, oid, st.iso(r["phenomenon_time"]))


_SHAPES = {"Things": _thing, "Datastreams": _datastream, "Observations": _observation}


# ----------------------------------------------------------------------------- rendering
def render(
    conn: DictConn,
    base: str,
    settings: Settings,
    entity_set: str,
    rows: list[dict[str, Any]],
    options: QueryOptions,
) -> list[dict[str, Any]] | None:
    """``sensorthings.render``'s bodies of ``rows`` when :func:`handles` the request, else
    None (the general path answers it)."""
    if not handles(entity_set, options):
        return None
    timescaledb = storage_path(conn) == "timescaledb"
    try:
        return _Renderer(conn, base, settings, timescaledb).bodies(entity_set, rows, options)
    except _Infinite:  # a time is PostgreSQL's ±infinity: the general path's
        return None


def page(
    conn: DictConn,
    base: str,
    settings: Settings,
    entity_set: str,
    rows: list[dict[str, Any]],
    options: QueryOptions,
    nxt: str | None,
    count: int | None,
) -> Response | None:
    """The collection body ``Paging.respond`` writes for these rows (``@iot.count``, ``value``,
    ``@iot.nextLink``), written by orjson, when :func:`handles` the request (and no
    ``$resultFormat`` asks for another format); else None. Its ``@iot.count`` is exact: an
    estimate is only ever given for all Observations."""
    if options.result_format is not None:
        return None
    bodies = render(conn, base, settings, entity_set, rows, options)
    if bodies is None:
        return None
    data: dict[str, Any] = {}
    if count is not None:
        data["@iot.count"] = count
    data["value"] = bodies
    if nxt is not None:
        data["@iot.nextLink"] = nxt
    try:
        return Response(orjson.dumps(data), media_type="application/json")
    except orjson.JSONEncodeError:  # an integer beyond 64 bits in a JSON property
        return JSONResponse(data)


class _Renderer:
    def __init__(self, conn: DictConn, base: str, settings: Settings, timescaledb: bool) -> None:
        self.conn = conn
        self.base = base
        self.prefix = f"{base}{st.PREFIX}"
        self.settings = settings
        self.timescaledb = timescaledb

    def bodies(
        self, entity_set: str, rows: list[dict[str, Any]], options: QueryOptions
    ) -> list[dict[str, Any]]:
        shape = _SHAPES[entity_set]
        bodies = [shape(r, self.prefix) for r in rows]
        if options.select:
            entity_type = ENTITY_SETS[entity_set]
            bodies = [st._pick(b, options.select, entity_type) for b in bodies]
        for x in st.normalized(options.expand):
            if entity_set == "Things":
                self._datastreams(rows, bodies, x)
            else:
                self._observations(rows, bodies, x)
        return bodies

    def _listing(self, target_set: str, x: Expand, parents: int) -> q.Listing:
        """The expansion's page as ``sensorthings._expand`` computes it: ``$top`` clamped to
        the server maximum, then to the level's share of it."""
        name = x.path[0]
        listing = st._level(self.settings, x.options, target_set, f"$expand={name}: ")
        budget = max(1, self.settings.api.max_top // max(1, parents))
        if listing.top > budget:
            listing = replace(listing, top=budget)
        return listing

    def _attach(
        self,
        entity_set: str,
        parent_ids: list[int],
        bodies: list[dict[str, Any]],
        x: Expand,
        listing: q.Listing,
        groups: dict[int, list[dict[str, Any]]],
        more: set[int],
    ) -> None:
        """Each parent's expanded entities (already rendered, at most ``listing.top``) and,
        for the parents in ``more``, the ``@iot.nextLink`` to the rest."""
        name = x.path[0]
        query = ""
        if more and listing.top > 0:
            params = dict(x.raw)
            params["$top"] = str(listing.top)
            params["$skip"] = str(listing.skip + listing.top)
            query = urlencode(params, quote_via=quote)
        for pid, body in zip(parent_ids, bodies, strict=True):
            body[name] = groups.get(pid, [])
            if query and pid in more:
                body[f"{name}@iot.nextLink"] = f"{self.prefix}/{entity_set}({pid})/{name}?{query}"

    def _datastreams(
        self, rows: list[dict[str, Any]], bodies: list[dict[str, Any]], x: Expand
    ) -> None:
        listing = self._listing("Datastreams", x, len(rows))
        parent_ids = [int(r["id"]) for r in rows]
        found = qx.datastreams_of_things(self.conn, parent_ids, listing.top, listing.skip)
        by_parent: dict[int, list[dict[str, Any]]] = {}
        for r in found:
            by_parent.setdefault(int(r["_parent"]), []).append(r)
        more = {pid for pid, g in by_parent.items() if len(g) > listing.top}
        kept = [r for pid in parent_ids for r in by_parent.get(pid, [])[: listing.top]]
        # the spans, and with them the one observation a "$top=1" expansion below shows
        end = self._end(x.options, len(kept))
        found_spans = qx.span_rows(self.conn, [int(r["id"]) for r in kept], self.timescaledb, end)
        self._add_spans(kept, found_spans, end is not None)
        inner = QueryOptions(select=x.options.select, expand=x.options.expand)
        rendered = iter(self.bodies("Datastreams", kept, inner))
        groups = {
            pid: [next(rendered) for _ in by_parent.get(pid, [])[: listing.top]]
            for pid in parent_ids
        }
        self._attach("Things", parent_ids, bodies, x, listing, groups, more)

    def _add_spans(
        self, kept: list[dict[str, Any]], found: list[tuple[Any, ...]], with_end: bool
    ) -> None:
        """Each Datastream row's ``t_min``/``t_max`` (µs since 1970, ``None`` without
        observations), its ``phenomenonTime`` written (``_span``) and, ``with_end``, the body
        of the observation at the span's end (``_end``, ``None`` without one): every time of
        the page formatted at once (``sta_fastpage``)."""
        by_id = {row[0]: row for row in found}
        spans = [by_id.get(int(r["id"])) for r in kept]
        with_data = [s for s in spans if s is not None and s[1] is not None]
        # the times: each span's two ends, and each end observation's resultTime
        result_times = [s[7] for s in with_data if with_end and s[7] is not None]
        us = _since_1970(tuple(t for s in with_data for t in (s[1], s[2])) + tuple(result_times))
        text = _times(us)
        at: dict[int, tuple[int, str, int, str]] = {}
        for k, s in enumerate(with_data):
            at[s[0]] = (us[2 * k], text[2 * k], us[2 * k + 1], text[2 * k + 1])
        result_text = dict(zip(result_times, text[2 * len(with_data) :], strict=True))
        for r in kept:
            a = at.get(int(r["id"]))
            if a is None:
                r["t_min"] = r["t_max"] = r["_span"] = None
                if with_end:
                    r["_end"] = None
                continue
            r["t_min"], r["t_max"], r["_span"] = a[0], a[2], f"{a[1]}/{a[3]}"
            if with_end:
                s = by_id[int(r["id"])]
                last = (s[1], a[0], a[1]) if s[4] == s[1] else (s[2], a[2], a[3])
                r["_end"] = self._end_body(s, last[1], last[2], result_text)

    def _end_body(
        self, s: tuple[Any, ...], us: int, text: str, result_text: dict[int, str]
    ) -> dict[str, Any]:
        """The body of the observation in the span row ``s`` (columns 3… are
        ``qx.OBSERVATION_COLUMNS``), its phenomenonTime ``us`` (µs since 1970) written as
        ``text``, as ``sensorthings._observation`` writes it."""
        ds, result, result_json, result_time, parameters, foi = s[3], s[5], s[6], s[7], s[8], s[9]
        r = {
            "datastream_id": ds,
            "result": result,
            "result_json": result_json,
            "result_time": None,
            "parameters": parameters,
            "foi_id": foi,
        }
        body = st.observation_body(r, self.prefix, f"{ds}:{us}", text)
        if result_time is not None:
            body["resultTime"] = result_text[result_time]
        return body

    def _attach_bodies(
        self,
        parent_ids: list[int],
        bodies: list[dict[str, Any]],
        x: Expand,
        listing: q.Listing,
        by_parent: dict[int, list[dict[str, Any]]],
        more: set[int],
    ) -> None:
        """:meth:`_attach` of Observation bodies already written, ``$select``ed here."""
        if x.options.select:
            entity_type = ENTITY_SETS["Observations"]
            by_parent = {
                pid: [st._pick(b, x.options.select, entity_type) for b in group]
                for pid, group in by_parent.items()
            }
        self._attach("Datastreams", parent_ids, bodies, x, listing, by_parent, more)

    def _end(self, options: QueryOptions, datastreams: int) -> Literal["first", "last"] | None:
        """Which end of their span the Datastreams' expanded Observations show when they show
        one observation each (``$top=1``, by ``phenomenonTime``), else None."""
        for x in st.normalized(options.expand):
            if x.path == ("Observations",):
                listing = self._listing("Observations", x, datastreams)
                if listing.top == 1 and not listing.skip:
                    return "last" if _ORDERS[x.options.orderby] else "first"
        return None

    def _observations(
        self, rows: list[dict[str, Any]], bodies: list[dict[str, Any]], x: Expand
    ) -> None:
        listing = self._listing("Observations", x, len(rows))
        parent_ids = [int(r["id"]) for r in rows]
        descending = _ORDERS[x.options.orderby]
        by_parent: dict[int, list[dict[str, Any]]] = {}
        more: set[int] = set()
        if listing.top == 1 and not listing.skip:
            # the one observation at the end (start) of each Datastream's span; a Datastream
            # has more than one exactly when its span is longer than an instant
            with_data = [r for r in rows if r["t_min"] is not None]
            more = {int(r["id"]) for r in with_data if r["t_min"] < r["t_max"]}
            if all("_end" in r for r in rows):  # written with the spans (_datastreams)
                for r in with_data:
                    if r["_end"] is not None:
                        by_parent[int(r["id"])] = [r["_end"]]
                self._attach_bodies(parent_ids, bodies, x, listing, by_parent, more)
                return
            ends = [r["t_max"] if descending else r["t_min"] for r in with_data]
            found = q.observations_at(
                self.conn,
                Int8Array(np.array([r["id"] for r in with_data], np.int64)),
                TimestamptzArray(
                    np.array([(t - st._EPOCH) // st._MICROSECOND for t in ends], np.int64)
                ),
            )
            for r in found:
                by_parent[int(r["datastream_id"])] = [r]
        elif listing.top > 0:
            source, on = compile_navigation("Datastream", "Observations", "_p", "o")
            found = q.expand_many(
                self.conn, "Observations", source, on, "datastream", parent_ids, listing
            )
            for r in found:
                by_parent.setdefault(int(r["_parent"]), []).append(r)
            more = {pid for pid, g in by_parent.items() if len(g) > listing.top}
        kept = [r for pid in parent_ids for r in by_parent.get(pid, [])[: listing.top]]
        inner = QueryOptions(select=x.options.select)
        rendered = iter(self.bodies("Observations", kept, inner))
        groups = {
            pid: [next(rendered) for _ in by_parent.get(pid, [])[: listing.top]]
            for pid in parent_ids
        }
        self._attach("Datastreams", parent_ids, bodies, x, listing, groups, more)
