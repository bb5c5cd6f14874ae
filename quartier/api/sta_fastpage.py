"""A page of one Datastream's (or MultiDatastream's) Observations whose JSON PostgreSQL writes.

The general path (``sensorthings._observation_page``) fetches the rows as dicts, formats their
times and ids in Python and has orjson write the page. Here one statement does the page's work in
the database: each observation comes back as the JSON text of its body, so Python joins texts and
touches no datetime, float or dict for a typical numeric sensor page. The bytes are the general
path's bytes (``tests/test_api_sta_fastpage.py`` compares both on random rows in a real
database), so the ETag of a page does not depend on which path wrote it.

What PostgreSQL writes exactly as orjson does: ids (``"<datastream>:<µs since 1970>"``), links,
times (RFC 3339, UTC, milliseconds, ``Z``: ``to_char`` truncates to the millisecond like
``iso()``), and numeric results in ``[1e-4, 1e15)`` (PostgreSQL's and orjson's shortest
round-trip digits agree there; an integral value gets orjson's ``.0``), zero, NaN and ±Infinity
(``null``). What it hands back for Python to write: a numeric result outside that range (as the
float), a JSON result and JSON parameters (as text, loaded as psycopg loads ``jsonb`` and written
by orjson, so a value orjson cannot write makes :func:`observation_page` answer ``None`` and the
caller use the general path).

The statement is the general path's query (``store.sensorthings._select_page``: the same
condition, keys, keyset cursor and ``limit top + 1``) with the body's text as its columns, and one
round trip: whether the datastream exists is asked only when the page is empty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from quartier.errors import BadRequestError, NotFoundError
from quartier.store import sensorthings as q
from quartier.store.db import DictConn

#: RFC 3339 in UTC with milliseconds, as ``sensorthings.iso`` writes it.
_TIME = "to_char({t} at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#: µs since 1970 (exact: ``extract`` is numeric), the id's second part.
_US = "(extract(epoch from o.phenomenon_time) * 1000000)::int8"
#: A numeric result orjson and PostgreSQL write alike (see the module's docstring).
_PLAIN_RESULT = (
    "(o.result is null or o.result in ('NaN', 'Infinity', '-Infinity') or o.result = 0"
    " or (abs(o.result) >= 1e-4 and abs(o.result) < 1e15))"
)
_RESULT = (
    "case when o.result is null or o.result in ('NaN', 'Infinity', '-Infinity') then 'null'"
    " when o.result = trunc(o.result) then o.result::text || '.0'"
    " else o.result::text end"
)
_SIMPLE = f"(o.result_json is null and o.parameters is null and {_PLAIN_RESULT})"
_ID = f"(o.datastream_id::text || ':' || {_US}::text)"
_HEAD = (
    '\'{{"@iot.id":"\' || {id} || \'","@iot.selfLink":"\' || %(_prefix)s'
    " || '/Observations(''' || {id} || ''')\",\"phenomenonTime\":\"' || {pt}"
    " || '\",\"resultTime\":' || coalesce('\"' || {rt} || '\"', 'null') || ',\"result\":'"
).format(
    id=_ID,
    pt=_TIME.format(t="o.phenomenon_time"),
    rt=_TIME.format(t="o.result_time"),
)
_LINKS = (
    "case when o.datastream_id < 0"
    " then ',\"MultiDatastream@iot.navigationLink\":\"' || %(_prefix)s || '/MultiDatastreams('"
    " || (-o.datastream_id)::text || ')\"'"
    " else ',\"Datastream@iot.navigationLink\":\"' || %(_prefix)s || '/Datastreams('"
    " || o.datastream_id::text || ')\"' end"
    ' || coalesce(\',"FeatureOfInterest@iot.navigationLink":"\' || %(_prefix)s'
    " || '/FeaturesOfInterest(' || o.foi_id::text || ')\"', '') || '}'"
)
#: j: the whole body when PostgreSQL writes all of it; else h and t around what Python writes
#: (rf: a float result, rj: a JSON result, pj: JSON parameters)
_COLUMNS = (
    f"case when {_SIMPLE} then {_HEAD} || {_RESULT} || ',\"parameters\":null' || {_LINKS} end"
    f" as j, case when not {_SIMPLE} then {_HEAD}"
    f" || case when o.result_json is null and {_PLAIN_RESULT} then {_RESULT} else '' end end as h,"
    f" case when not {_SIMPLE} then {_LINKS} end as t,"
    f" case when o.result_json is null and not {_PLAIN_RESULT} then o.result end as rf,"
    " o.result_json::text as rj, o.parameters::text as pj"
)
_OBSERVATIONS = sql.SQL("observation o")
_OF_DATASTREAM = "o.datastream_id = %(_scope)s"


@dataclass(frozen=True)
class FastPage:
    """The JSON text of each observation of the page (at most ``top``), whether more follow,
    and the last one's sort keys as text (the next page's keyset cursor; None where the order
    cannot be carried by one and the next page goes by ``$skip``)."""

    items: list[str]
    more: bool
    last_keys: list[str | None] | None


def _compact(text: str) -> str:
    """A ``jsonb`` value's text as the general path writes it: loaded as psycopg loads it
    (``json.loads``), written by orjson."""
    return orjson.dumps(json.loads(text)).decode()


def observation_page(
    conn: DictConn, scope_id: int, listing: q.Listing, prefix: str
) -> FastPage | None:
    """One page of the observations stored under ``scope_id`` (a Datastream's id, or minus a
    MultiDatastream's), ``prefix`` the service root (``http://host/v1.1``) its links start
    with; :class:`NotFoundError` when there is no such Datastream/MultiDatastream; None when
    a JSON value is beyond orjson (an integer above 64 bits): the general path writes it."""
    keys = q._keys(q._OBSERVATION, listing)
    params: dict[str, Any] = {
        **listing.params,
        "_scope": scope_id,
        "_top": listing.top + 1,
        "_skip": listing.skip,
        "_prefix": orjson.dumps(prefix).decode()[1:-1],  # as JSON string content
    }
    extra: list[sql.Composable] = []
    if listing.after is not None:
        cond, cursor = q._after(keys, listing.after)
        extra.append(cond)
        params.update(cursor)
    query = sql.SQL("select {}{} from {}{} order by {} limit %(_top)s offset %(_skip)s").format(
        sql.SQL(_COLUMNS),
        q._cursor_columns(keys),
        _OBSERVATIONS,
        q._where(_OF_DATASTREAM, listing, extra),
        q._order_by(keys),
    )
    try:
        with conn.cursor(row_factory=tuple_row) as cur:
            rows: list[tuple[Any, ...]] = cur.execute(query, params).fetchall()
    except psycopg.errors.DataError:
        if listing.after is None:
            raise
        _check_exists(conn, scope_id)
        raise BadRequestError("$skiptoken is not valid; start again without it") from None
    if not rows:
        _check_exists(conn, scope_id)
        return FastPage([], False, None)
    more = listing.top > 0 and len(rows) > listing.top
    rows = rows[: listing.top]
    items: list[str] = []
    try:
        for j, h, t, rf, rj, pj, *_ in rows:
            if j is not None:
                items.append(j)
                continue
            if rf is not None:
                h += orjson.dumps(rf).decode()
            elif rj is not None:
                h += _compact(rj)
            items.append(f'{h},"parameters":{"null" if pj is None else _compact(pj)}{t}')
    except orjson.JSONEncodeError:
        return None
    last = list(rows[-1][6:]) if rows and len(rows[-1]) > 6 else None
    return FastPage(items, more, last)


def _check_exists(conn: DictConn, scope_id: int) -> None:
    if scope_id < 0:
        found = conn.execute(
            "select 1 from multi_datastream where id = %s", (-scope_id,)
        ).fetchone()
        if found is None:
            raise NotFoundError(f"no MultiDatastream with @iot.id {-scope_id}")
    elif conn.execute("select 1 from datastream where id = %s", (scope_id,)).fetchone() is None:
        raise NotFoundError(f"no Datastream with @iot.id {scope_id}")


def collection(items: list[str], nxt: str | None, count: int | None, estimate: bool) -> bytes:
    """The page's body: the members ``_observation_page`` writes, in its order."""
    head: dict[str, Any] = {}
    if count is not None:
        head["@iot.count"] = count
    if nxt is not None:
        head["@iot.nextLink"] = nxt
    if estimate:
        head["@quartier.countIsEstimate"] = True
    start = orjson.dumps(head)[:-1] + (b"," if head else b"")
    return b"".join((start, b'"value":[', ",".join(items).encode(), b"]}"))
