"""The columnar JSON body of an aggregate (``layout=columns``), made without a Python object per
bucket: the store hands each series' buckets over as numpy arrays
(``timeseries.aggregate(columns=True)``), the numbers are written by orjson from the arrays,
the bucket times by :func:`time_items` (the API's one time format, that of
``sensorthings.iso``, for many instants at once), and the body is streamed series by series
when it is large (in pieces of about 1 MiB).

One series::

    {"datastreamId": 7, "time": ["2026-03-02T00:00:00.000Z", …], "avg": [12.5, null, …],
     "gaps": [{"from": …, "to": …}]}

``time`` holds the start of each bucket that has observations, and each function asked for has
one array of the same length, in the order count, sum, avg, min, max (null where a bucket has
observations but none with a numeric result, or the value is not finite).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi.responses import Response, StreamingResponse

from quartier.api.sensorthings import iso
from quartier.store import timeseries as ts

#: answers with more values (datastreams × buckets × functions) than this are streamed, in
#: pieces of about STREAM_PIECE bytes (each piece is a hop to a worker thread and back: streaming
#: a 72,000-value answer series by series cost more than it saved, docs/benchmarks.md)
STREAM_AFTER = 500_000
STREAM_PIECE = 1 << 20

_ITEM = b'"0000-00-00T00:00:00.000Z",'
_TEMPLATE = np.frombuffer(_ITEM, dtype=np.uint8)
_PAIRS = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), dtype=np.uint8).reshape(
    100, 2
)


def _civil(days: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], ...]:
    """(year, month, day) of days since 1970-01-01 (proleptic Gregorian; H. Hinnant's
    ``civil_from_days``)."""
    z = days + 719_468
    era = np.floor_divide(z, 146_097)
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + (month <= 2), month, day


def time_items(epochs: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    """One row of 27 bytes per instant (whole seconds since 1970 UTC, years 1–9999): the JSON
    string ``sensorthings.iso`` writes for it and a comma, ``"2026-03-02T00:00:00.000Z",``."""
    e = np.asarray(epochs, dtype=np.int64)
    days, sod = np.divmod(e, 86_400)
    year, month, day = _civil(days)
    out = np.empty((len(e), len(_ITEM)), dtype=np.uint8)
    out[:] = _TEMPLATE
    fields = (
        (1, year // 100),
        (3, year % 100),
        (6, month),
        (9, day),
        (12, sod // 3600),
        (15, sod // 60 % 60),
        (18, sod % 60),
    )
    for col, value in fields:
        out[:, col : col + 2] = _PAIRS[value]
    return out


class _Times:
    """The bucket times of one answer. The buckets of every series lie on one grid, so when
    the answer has at least as many buckets as the grid, the grid is formatted once and each
    series takes its rows from it."""

    def __init__(self, agg: ts.Aggregate) -> None:
        self.first = int(agg.start.timestamp())
        self.step = int(agg.width.total_seconds())
        n_grid = (agg.end - agg.start) // agg.width
        used = sum(len(s.columns.epoch) for s in agg.series if s.columns is not None)
        self.grid: npt.NDArray[np.uint8] | None = None
        self.whole = b""
        if 0 < n_grid <= used:
            self.grid = time_items(self.first + self.step * np.arange(n_grid, dtype=np.int64))
            # a series with a value in every bucket (the common case) has the whole grid
            self.whole = b"[" + self.grid.tobytes()[:-1] + b"]"

    def json(self, epochs: npt.NDArray[np.int64]) -> bytes:
        if len(epochs) == 0:
            return b"[]"
        if self.grid is not None and len(epochs) == len(self.grid):
            return self.whole  # distinct bucket starts inside the range: all of them
        rows = (
            self.grid[(epochs - self.first) // self.step]
            if self.grid is not None
            else time_items(epochs)
        )
        return b"[" + rows.tobytes()[:-1] + b"]"


def _numbers(values: npt.NDArray[Any]) -> bytes:
    # orjson writes each double as its shortest round-trip text and NaN/±Infinity as null
    return orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)


def _gaps_json(gaps: list[ts.Gap]) -> bytes:
    if not gaps:
        return b"[]"
    return orjson.dumps([{"from": iso(g.start), "to": iso(g.end)} for g in gaps])


def _parts(agg: ts.Aggregate) -> Iterator[bytes]:
    """The body in pieces as they are made (not joined per series: the time arrays, most of the
    bytes, are then copied once, into the body)."""
    head = {
        "interval": ts.iso_width(agg.width),
        "from": iso(agg.start),
        "to": iso(agg.end),
        "functions": list(agg.functions),
        "source": agg.source,
        "layout": "columns",
    }
    yield orjson.dumps(head)[:-1] + b',"series":['
    times = _Times(agg)
    keys = [(f, b',"%s":' % f.encode()) for f in ts.FUNCTIONS if f in agg.functions]
    empty = np.empty(0, dtype=np.int64)
    for k, s in enumerate(agg.series):
        cols = s.columns
        yield b'%s{"datastreamId":%d,"time":' % (b"," if k else b"", s.datastream_id)
        yield times.json(cols.epoch if cols is not None else empty)
        for f, key in keys:
            yield key
            yield _numbers(cols.values[f]) if cols is not None else b"[]"
        yield b',"gaps":' + _gaps_json(s.gaps) + b"}"
    yield b"]}"


def _pieces(parts: Iterator[bytes]) -> Iterator[bytes]:
    buffer: list[bytes] = []
    size = 0
    for part in parts:
        buffer.append(part)
        size += len(part)
        if size >= STREAM_PIECE:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)


def columns_response(agg: ts.Aggregate) -> Response:
    """The columnar body of ``agg`` (from ``timeseries.aggregate(columns=True)``): one
    response, or streamed in pieces of whole series when it holds more than
    :data:`STREAM_AFTER` values."""
    values = sum(len(s.columns.epoch) for s in agg.series if s.columns is not None)
    if values * max(1, len(agg.functions)) > STREAM_AFTER:
        return StreamingResponse(_pieces(_parts(agg)), media_type="application/json")
    return Response(b"".join(_parts(agg)), media_type="application/json")
