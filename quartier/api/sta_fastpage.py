"""A page of one Datastream's (or MultiDatastream's) Observations, written with the least work
per observation.

The general path (``sensorthings._observation_page``) fetches the rows as dicts in PostgreSQL's
text format (times parsed into datetimes, floats from text), builds a dict per observation and
has orjson write the page. Here the statement hands over only what varies, in binary: the
times as they are stored (``timestamptz`` in binary is µs since 2000-01-01, read by psycopg's C
``int8`` loader instead of as datetimes; ``extract(epoch …)`` in SQL cost the backend 0.35 ms of
its 2 ms a weekly page, docs/benchmarks.md, API), the result as float8, JSON values as their text;
the page's times are formatted at once by numpy and its numeric results at once by orjson, and
each observation's JSON is one f-string over constant pieces (every observation of the page has
the same Datastream). The bytes are the general path's bytes (``tests/test_api_sta_fastpage.py``
compares both on random rows in a real database), so the ETag of a page does not depend on the
path that wrote it. (Having PostgreSQL write each observation's JSON text was tried first: the
same bytes, but ``to_char`` and a dozen text concatenations per row cost the backend about
twice the general query's CPU, more than Python saved; docs/benchmarks.md, API.)

The statement is the general path's query (``store.sensorthings._select_page``: the same
condition, keys, keyset cursor and ``limit top + 1``) with other columns, and one round trip:
whether the datastream exists is asked only when the page is empty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import psycopg
from psycopg import sql
from psycopg.types.numeric import Int8BinaryLoader

from quartier.errors import BadRequestError, NotFoundError
from quartier.store import sensorthings as q
from quartier.store.db import DictConn

_COLUMNS = sql.SQL(
    "o.phenomenon_time, o.result, o.result_json::text, o.result_time, o.parameters::text, o.foi_id"
)
#: ``timestamptz`` in binary: µs since 2000-01-01 UTC; this many µs after 1970-01-01
_EPOCH_2000_US = 946_684_800_000_000
#: PostgreSQL's ``infinity`` and ``-infinity`` in binary (the general path writes those)
_INFINITE = (2**63 - 1, -(2**63))
_OBSERVATIONS = sql.SQL("observation o")
_OF_DATASTREAM = "o.datastream_id = %(_scope)s"
#: the columns before the keyset cursor's
_FIXED = 6


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
    a JSON value is beyond orjson (an integer above 64 bits) or a time is infinite: the general
    path writes those."""
    query, params = q.observation_page_statement(
        _COLUMNS, _OBSERVATIONS, _OF_DATASTREAM, scope_id, listing
    )
    try:
        with conn.cursor(binary=True, row_factory=psycopg.rows.tuple_row) as cur:
            cur.adapters.register_loader("timestamptz", Int8BinaryLoader)
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
    if not rows:  # $top=0
        return FastPage([], False, None)
    try:
        items = _write(rows, scope_id, orjson.dumps(prefix).decode()[1:-1])
    except (orjson.JSONEncodeError, _Infinite):
        return None
    last = list(rows[-1][_FIXED:]) if len(rows[-1]) > _FIXED else None
    return FastPage(items, more, last)


class _Infinite(Exception):
    """A time of the page is PostgreSQL's ``infinity`` or ``-infinity``."""


def _since_1970(since_2000: tuple[int, ...]) -> list[int]:
    """µs since 1970 of binary ``timestamptz`` values (µs since 2000)."""
    if since_2000 and (max(since_2000) == _INFINITE[0] or min(since_2000) == _INFINITE[1]):
        raise _Infinite
    return [u + _EPOCH_2000_US for u in since_2000]


def _times(us: Any) -> list[str]:
    """RFC 3339 with milliseconds and ``Z`` (as ``sensorthings.iso``) of µs since 1970."""
    text = np.datetime_as_string(np.array(us, dtype="datetime64[us]"), unit="ms").tolist()
    return [f"{t}Z" for t in text]


def _write(rows: list[tuple[Any, ...]], scope_id: int, prefix: str) -> list[str]:
    """The JSON text of each observation, as ``sensorthings._observation_page`` writes it;
    ``prefix`` already escaped for a JSON string."""
    since_2000, results, result_json, result_2000, parameters, foi = zip(
        *(r[:_FIXED] for r in rows), strict=True
    )
    us = _since_1970(since_2000)
    times = _times(us)
    # orjson writes NaN and ±Infinity as null, as the general path's orjson does
    written = orjson.dumps(results)[1:-1].decode().split(",")
    if scope_id < 0:
        link = f',"MultiDatastream@iot.navigationLink":"{prefix}/MultiDatastreams({-scope_id})"'
    else:
        link = f',"Datastream@iot.navigationLink":"{prefix}/Datastreams({scope_id})"'
    head = f'{{"@iot.id":"{scope_id}:'
    self_link = f'","@iot.selfLink":"{prefix}/Observations(\'{scope_id}:'
    time_key = '\')","phenomenonTime":"'
    plain_tail = f',"parameters":null{link}}}'
    items = [
        f'{head}{u}{self_link}{u}{time_key}{t}","resultTime":null,"result":{r}{plain_tail}'
        for u, t, r in zip(us, times, written, strict=True)
    ]
    # the observations with more than a time and a number: written again, whole
    odd = [
        i
        for i, (a, b, c, d) in enumerate(
            zip(result_json, result_2000, parameters, foi, strict=True)
        )
        if a is not None or b is not None or c is not None or d is not None
    ]
    if odd:
        result_us = dict(
            zip(
                (i for i in odd if result_2000[i] is not None),
                _since_1970(tuple(result_2000[i] for i in odd if result_2000[i] is not None)),
                strict=True,
            )
        )
        result_times = dict(zip(result_us, _times(list(result_us.values())), strict=True))
        for i in odd:
            rt = result_times.get(i)
            result_time = "null" if rt is None else f'"{rt}"'
            r = written[i] if result_json[i] is None else _compact(result_json[i])
            p = "null" if parameters[i] is None else _compact(parameters[i])
            f = foi[i]
            foi_link = "" if f is None else f',"FeatureOfInterest@iot.navigationLink":"{prefix}'
            foi_link += "" if f is None else f'/FeaturesOfInterest({f})"'
            items[i] = (
                f'{head}{us[i]}{self_link}{us[i]}{time_key}{times[i]}","resultTime":{result_time}'
                f',"result":{r},"parameters":{p}{link}{foi_link}}}'
            )
    return items


def _check_exists(conn: DictConn, scope_id: int) -> None:
    if scope_id < 0:
        found = conn.execute(
            "select 1 from multi_datastream where id = %s", (-scope_id,)
        ).fetchone()
        if found is None:
            raise NotFoundError(f"no MultiDatastream with @iot.id {-scope_id}")
    elif conn.execute("select 1 from datastream where id = %s", (scope_id,)).fetchone() is None:
        raise NotFoundError(f"no Datastream with @iot.id {scope_id}")


def collection_head(count: int | None, nxt: str | None, estimate: bool) -> dict[str, Any]:
    """The members an observation page writes before its ``value``, in their order (here and
    in ``sensorthings._observation_page``)."""
    head: dict[str, Any] = {}
    if count is not None:
        head["@iot.count"] = count
    if nxt is not None:
        head["@iot.nextLink"] = nxt
    if estimate:
        head["@quartier.countIsEstimate"] = True
    return head


def collection(items: list[str], nxt: str | None, count: int | None, estimate: bool) -> bytes:
    """The page's body: the members ``_observation_page`` writes, in its order."""
    head = collection_head(count, nxt, estimate)
    start = orjson.dumps(head)[:-1] + (b"," if head else b"")
    return b"".join((start, b'"value":[', ",".join(items).encode(), b"]}"))
