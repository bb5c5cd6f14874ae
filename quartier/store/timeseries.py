"""One query layer for observations, the same on both storage paths.

Both paths have the same relations (migrations 0005): ``observation``; ``observation_latest``
(newest observation per datastream, kept by the ingest writer); ``observation_15m``, ``_1h``,
``_1d`` with columns ``(datastream_id, bucket, n_all, n, s, lo, hi)``: continuous aggregates with
real-time aggregation on TimescaleDB, rollup tables plus ``observation_dirty`` on plain
PostgreSQL. On the plain path the buckets marked dirty are read from raw rows until
:func:`quartier.store.rollups.refresh` has recomputed them, so answers are always current.

Buckets are on a UTC grid with origin 2000-01-03 (a Monday), which is TimescaleDB's
``time_bucket`` grid: a day is a UTC day, a week starts on Monday 00:00 UTC. ``count`` counts the
observations of a bucket; ``sum``, ``avg``, ``min`` and ``max`` are over the numeric results
(``avg = sum / number of numeric results``, the same formula on every source). A gap is a run of
buckets without any observation.

Length: one job (the aggregate query layer); its parts (bucket parsing, the dirty-bucket overlay,
raw and rollup reads) share the same grid and SQL, and split apart they would each need the rest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg.rows import tuple_row

from quartier.errors import BadRequestError
from quartier.store.db import Conn
from quartier.store.migrate import StoragePath, storage_path
from quartier.store.pgcopy import Int8Array

SourceChoice = Literal["auto", "raw", "rollup"]
Function = Literal["count", "sum", "avg", "min", "max"]
FUNCTIONS: tuple[Function, ...] = ("count", "sum", "avg", "min", "max")

ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)
#: Rollup relations by bucket width, coarsest first.
ROLLUPS: dict[timedelta, str] = {
    timedelta(days=1): "observation_1d",
    timedelta(hours=1): "observation_1h",
    timedelta(minutes=15): "observation_15m",
}
#: Packed rollups (migration 0045, plain PostgreSQL only) by the width of their buckets: one row
#: per datastream and UTC day (hours) or UTC month (days), see :func:`aggregate`.
PACKED: dict[timedelta, str] = {
    timedelta(hours=1): "observation_1h_packed",
    timedelta(days=1): "observation_1d_packed",
}
#: the span of one packed row (``date_trunc`` unit, in UTC)
PACK_UNIT: dict[timedelta, str] = {timedelta(hours=1): "day", timedelta(days=1): "month"}
#: The bucket widths the API accepts.
WIDTHS: dict[str, timedelta] = {
    "1min": timedelta(minutes=1),
    "5min": timedelta(minutes=5),
    "10min": timedelta(minutes=10),
    "15min": timedelta(minutes=15),
    "30min": timedelta(minutes=30),
    "1h": timedelta(hours=1),
    "2h": timedelta(hours=2),
    "3h": timedelta(hours=3),
    "6h": timedelta(hours=6),
    "12h": timedelta(hours=12),
    "1d": timedelta(days=1),
    "1w": timedelta(days=7),
}
#: Most buckets (datastreams × buckets in the range) one aggregate request may ask for.
MAX_BUCKETS = 1_000_000
#: Most datastreams in one request.
MAX_DATASTREAMS = 5_000
#: @iot.count is counted from raw rows up to this many (estimated) observations; above it the
#: daily rollup answers (exact on plain PostgreSQL, an estimate on TimescaleDB, see
#: count_observations).
EXACT_COUNT_LIMIT = 200_000

_ISO = re.compile(r"^P(?:(\d+)W|(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?$")


# ------------------------------------------------------------------------------------ results
class Latest(NamedTuple):
    """A datastream's newest observation (a named tuple: made thousands at a time, see
    :func:`latest`)."""

    datastream_id: int
    phenomenon_time: datetime
    result: float | None


@dataclass(frozen=True, slots=True)
class RawObservation:
    phenomenon_time: datetime
    result: float | None
    result_json: Any
    result_time: datetime | None
    parameters: Any


@dataclass(frozen=True, slots=True)
class Gap:
    start: datetime  # first empty bucket
    end: datetime  # end of the last empty bucket (exclusive)


@dataclass(frozen=True, slots=True)
class Columns:
    """A series' buckets as numpy columns (``aggregate(columns=True)``): bucket starts
    (``epoch``, seconds since 1970 UTC, int64) and one array per function: ``count`` int64, the
    others float64 with NaN where the value is null (no numeric result)."""

    epoch: npt.NDArray[np.int64]
    values: dict[str, npt.NDArray[Any]]


@dataclass(slots=True)
class Series:
    """The buckets of one datastream that hold observations, as columns: bucket starts (``epoch``,
    seconds since 1970 UTC; ``time`` as datetimes) and one list per function asked for; and the
    gaps between them."""

    datastream_id: int
    epoch: list[int] = field(default_factory=list)
    values: dict[str, list[Any]] = field(default_factory=dict)
    gaps: list[Gap] = field(default_factory=list)
    #: with ``aggregate(as_json=True)``: the buckets as the API's JSON array members, made by
    #: PostgreSQL (``values`` stays empty); None when there is no bucket
    json: str | None = None
    #: with ``aggregate(columns=True)``: the buckets as numpy columns (``epoch`` and ``values``
    #: stay empty); None when there is no bucket
    columns: Columns | None = None

    @property
    def time(self) -> list[datetime]:
        return [_EPOCH + timedelta(seconds=t) for t in self.epoch]

    def rows(self, functions: Sequence[str]) -> list[tuple[Any, ...]]:
        """(time, value of each function in ``functions``) per bucket."""
        cols = [self.values.get(f) or [None] * len(self.epoch) for f in functions]
        return list(zip(self.time, *cols, strict=True))


@dataclass(slots=True)
class Aggregate:
    width: timedelta
    start: datetime  # aligned down to the bucket grid
    end: datetime  # aligned up to the bucket grid (exclusive)
    source: str  # "raw" or the rollup relation used
    functions: tuple[Function, ...]
    series: list[Series]


# ------------------------------------------------------------------------------------ parsing
def parse_width(text: str) -> timedelta:
    """``15min``, ``1h``, ``1d``, ``1w`` (see :data:`WIDTHS`) or ISO 8601 (``PT15M``, ``P1D``)."""
    t = text.strip()
    if t in WIDTHS:
        return WIDTHS[t]
    m = _ISO.match(t.upper())
    if m and any(m.groups()):
        w, d, h, mi = (int(g) if g else 0 for g in m.groups())
        width = timedelta(weeks=w, days=d, hours=h, minutes=mi)
        if width in WIDTHS.values():
            return width
    raise BadRequestError(
        f"interval={text!r} is not supported; use one of {', '.join(WIDTHS)} "
        "(or the same as ISO 8601 durations, e.g. PT15M, PT1H, P1D, P1W)"
    )


def iso_width(width: timedelta) -> str:
    """ISO 8601 duration of a bucket width (``PT15M``, ``PT1H``, ``P1D``, ``P7D``)."""
    if width % timedelta(days=1) == timedelta(0):
        return f"P{width // timedelta(days=1)}D"
    secs = int(width.total_seconds())
    h, m = divmod(secs // 60, 60)
    return "PT" + (f"{h}H" if h else "") + (f"{m}M" if m else "")


def parse_functions(text: str | None) -> tuple[Function, ...]:
    if text is None or not text.strip():
        return FUNCTIONS
    out: list[Function] = []
    for part in text.split(","):
        name = part.strip().lower()
        if name not in FUNCTIONS:
            raise BadRequestError(
                f"fn={text!r}: unknown function {part.strip()!r}; use a comma-separated list of "
                + ", ".join(FUNCTIONS)
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def floor_to(t: datetime, width: timedelta) -> datetime:
    return ORIGIN + ((t - ORIGIN) // width) * width


def month_floor(t: datetime) -> datetime:
    """The start of ``t``'s UTC month."""
    return t.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def ceil_to(t: datetime, width: timedelta) -> datetime:
    f = floor_to(t, width)
    return f if f == t else f + width


def _utc(t: datetime, name: str) -> datetime:
    if t.tzinfo is None:
        raise BadRequestError(f"{name}={t.isoformat()} has no time zone; add Z or an offset")
    return t.astimezone(UTC)


def choose_source(width: timedelta, source: SourceChoice = "auto") -> timedelta | None:
    """The rollup width to aggregate from (None: raw rows).

    The coarsest rollup whose width divides the bucket width reads the fewest rows: per datastream
    and bucket at most width/rollup rows, against every raw observation of the range. Widths no
    rollup divides (1, 5, 10 min) are computed from raw rows; ``source`` forces a choice."""
    if source == "raw":
        return None
    for rollup in ROLLUPS:
        if width % rollup == timedelta(0):
            return rollup
    if source == "rollup":
        raise BadRequestError(
            f"no rollup serves interval {iso_width(width)}: rollups are 15 min, 1 h and 1 day, "
            "and the interval must be a multiple of one"
        )
    return None


# ------------------------------------------------------------------------------------ queries
_LATEST = (
    "select datastream_id, phenomenon_time, result from observation_latest "
    "where datastream_id = any(%s::bigint[]) order by datastream_id"
)
#: more datastreams than this: the latest values are read without a prepared statement (below)
_LATEST_UNPREPARED = 100


def latest(conn: Conn, datastream_ids: Sequence[int]) -> list[Latest]:
    """The newest observation of each datastream that has one, ordered by datastream id.

    The ids go as one binary ``bigint[]`` (a Python list of small ids went as ``smallint[]``,
    which PostgreSQL compared with the bigint key element by element, and psycopg dumped it per
    element); the rows come in binary and become tuples without a Python step per column. For many
    ids the statement is not prepared: a prepared statement's generic plan probes the primary key
    once per id (2,000 probes, 4,000 buffers), where the plan made for the actual array reads the
    small table once with a hashed ``= any`` (docs/benchmarks.md, session 9)."""
    ids = np.asarray(datastream_ids, dtype=np.int64)
    cur = conn.cursor(binary=True, row_factory=tuple_row)
    prepare = False if len(ids) > _LATEST_UNPREPARED else None
    return list(map(Latest._make, cur.execute(_LATEST, (Int8Array(ids),), prepare=prepare)))


def raw_range(
    conn: Conn,
    datastream_id: int,
    start: datetime,
    end: datetime,
    *,
    top: int = 1000,
    order: Literal["asc", "desc"] = "asc",
) -> list[RawObservation]:
    """The observations of one datastream with ``start <= phenomenon_time < end``, at most
    ``top``, by time."""
    direction = sql.SQL("desc" if order == "desc" else "asc")
    query = sql.SQL(
        "select phenomenon_time, result, result_json, result_time, parameters from observation "
        "where datastream_id = %s and phenomenon_time >= %s and phenomenon_time < %s "
        "order by phenomenon_time {} limit %s"
    ).format(direction)
    rows = conn.execute(query, (datastream_id, start, end, top))
    return [RawObservation(*_values(r)) for r in rows]


def _values(row: Any) -> tuple[Any, ...]:
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)


# One row per datastream (in the order of %(ids)s): arrays of bucket starts (seconds since 1970)
# and of each function, built from a per-datastream query that reads one index range in bucket
# order (the arrays take the rows in the order of the sorted subquery; aggregate() checks it).
# Per datastream rather than "datastream_id = any(...)": no global sort of every bucket, and one
# row per datastream to decode instead of one per bucket.
_PER_DATASTREAM = """
select i.ds, a.*{flag}
from unnest(%(ids)s::bigint[]) with ordinality as i(ds, ord)
{dirty_join}
cross join lateral (
    select {times} as t, {arrays}
    from ({inner} order by b) q
) a
order by i.ord"""

_RAW_AGG = """
select date_bin(%(w)s, phenomenon_time, %(origin)s) as b,
       count(*) as n_all, count(result) as n, sum(result) as s, min(result) as lo,
       max(result) as hi
from observation
where datastream_id = i.ds and phenomenon_time >= %(start)s and phenomenon_time < %(end)s
group by 1"""

# a rollup read at its own width, or regrouped to a multiple of it
_ROLLUP_SAME = """
select r.bucket as b, r.n_all::bigint as n_all, r.n::bigint as n, r.s, r.lo, r.hi
from {rollup} r
where r.datastream_id = i.ds and r.bucket >= %(start)s and r.bucket < %(end)s {exclude}"""
_ROLLUP_REGROUP = """
select date_bin(%(w)s, r.bucket, %(origin)s) as b, sum(r.n_all)::bigint as n_all,
       sum(r.n)::bigint as n, sum(r.s) as s, min(r.lo) as lo, max(r.hi) as hi
from {rollup} r
where r.datastream_id = i.ds and r.bucket >= %(start)s and r.bucket < %(end)s {exclude}
group by 1"""

# plain PostgreSQL: the buckets with a dirty 15-minute part (x.dirty, usually none or one per
# datastream) come from raw rows instead of the rollup
_DIRTY_JOIN = """
cross join lateral (
    select coalesce(array_agg(distinct date_bin(%(w)s, bucket, %(origin)s)), '{}') as dirty
    from observation_dirty
    where datastream_id = i.ds and bucket >= %(start)s and bucket < %(end)s
) x"""
_DIRTY_FLAG = """,
       exists (select 1 from observation_dirty where datastream_id = i.ds
               and bucket >= %(start)s and bucket < %(end)s) as dirty"""
_EXCLUDE_DIRTY = "and date_bin(%(w)s, r.bucket, %(origin)s) <> all(x.dirty)"
_DIRTY_FROM_RAW = """
union all
select d.b, a.n_all, a.n, a.s, a.lo, a.hi
from unnest(x.dirty) as d(b) cross join lateral (
    select count(*) as n_all, count(o.result) as n, sum(o.result) as s, min(o.result) as lo,
           max(o.result) as hi
    from observation o
    where o.datastream_id = i.ds and o.phenomenon_time >= d.b
      and o.phenomenon_time < d.b + %(w)s
) a
where a.n_all > 0"""

_COLUMNS: dict[Function, str] = {
    "count": "n_all",
    "sum": "s",
    "avg": "case when n > 0 then s / n end",
    "min": "lo",
    "max": "hi",
}

# One bucket as the API's JSON object (api/aggregates.py ``Bucket``: ``time`` as RFC 3339 UTC with
# milliseconds, then the functions asked for in the order count, sum, avg, min, max); numbers as
# float8's text, the shortest text that reads back as the same double (a JSON number; a whole
# number without ".0"), not-finite numbers as null (as the API's JSON encoder writes them).
# (the time as the text of a UTC timestamp, "YYYY-MM-DD HH:MI:SS" with the ISO DateStyle, the
# server's default; a bucket starts on a whole second: 1.6 times faster than to_char)
_TIME_JSON = """'{"time":"' || replace((q.b at time zone 'UTC')::text, ' ', 'T') || '.000Z"'"""
_NUMBER_JSON = (
    "coalesce(case when {x} in ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)"
    " then null else ({x})::text end, 'null')"
)


# ``columns=True``: no null in the arrays (NaN instead), so each comes to numpy in one piece
_COLUMN_ARRAYS: dict[Function, str] = {
    "count": "array_agg(n_all)",
    **{f: f"array_agg(coalesce({_COLUMNS[f]}, 'NaN'::float8))" for f in FUNCTIONS if f != "count"},
}


class _NumpyArrayLoader(Loader):
    """A one-dimensional binary ``bigint[]`` / ``double precision[]`` without nulls straight into
    a numpy array (psycopg's own loader makes a Python object per element)."""

    format = Format.BINARY
    wire = ">f8"

    def load(self, data: Any) -> npt.NDArray[Any]:
        head = np.frombuffer(data, dtype=">i4", count=3)
        ndim, has_null = int(head[0]), int(head[1])
        native = np.dtype(self.wire).newbyteorder("=")
        if ndim == 0:
            return np.empty(0, dtype=native)
        if ndim != 1 or has_null:
            raise ValueError("expected a one-dimensional array without nulls")
        n = int(np.frombuffer(data, dtype=">i4", count=1, offset=12)[0])
        element = np.dtype([("len", ">i4"), ("v", self.wire)])
        return np.frombuffer(data, dtype=element, count=n, offset=20)["v"].astype(native)


class _Int8ArrayLoader(_NumpyArrayLoader):
    wire = ">i8"


class _TimestamptzArrayLoader(_NumpyArrayLoader):
    """``timestamptz[]`` as seconds since 1970 (whole seconds: bucket starts). PostgreSQL sends
    microseconds since 2000; the array of timestamps costs it half what ``extract(epoch …)``
    per bucket costs (numeric arithmetic)."""

    wire = ">i8"

    def load(self, data: Any) -> npt.NDArray[Any]:
        return super().load(data) // 1_000_000 + _PG_EPOCH_S


#: 2000-01-01 in seconds since 1970
_PG_EPOCH_S = 946_684_800


def _numpy_arrays(cur: psycopg.Cursor[Any]) -> None:
    """Make ``cur`` load bigint[], double precision[] and timestamptz[] (as seconds since 1970)
    as numpy arrays."""
    cur.adapters.register_loader(1016, _Int8ArrayLoader)  # int8[]
    cur.adapters.register_loader(1022, _NumpyArrayLoader)  # float8[]
    cur.adapters.register_loader(1185, _TimestamptzArrayLoader)  # timestamptz[]


def _bucket_json(functions: Sequence[Function]) -> str:
    parts = [_TIME_JSON]
    for f in FUNCTIONS:  # the model's field order
        if f not in functions:
            continue
        value = "q.n_all::text" if f == "count" else _NUMBER_JSON.format(x=_COLUMNS[f])
        parts.append(f"""',"{f}":' || {value}""")
    return "string_agg(" + " || ".join(parts) + " || '}', ',')"


def aggregate_query(
    path: StoragePath,
    width: timedelta,
    rollup: timedelta | None,
    functions: Sequence[Function] = FUNCTIONS,
    *,
    dirty: bool = True,
    flag_dirty: bool = False,
    as_json: bool = False,
    columns: bool = False,
) -> sql.Composed:
    """The SQL for :func:`aggregate` (parameters ids, start, end, w, origin): one row per
    datastream, in the order of ``ids``: its id, an array of bucket starts (seconds since 1970)
    and one array per function, all in bucket order (NULL arrays when there is no bucket).
    ``dirty=False`` leaves out the plain path's dirty overlay (when nothing in range is dirty);
    ``flag_dirty`` then adds a last column that says whether the datastream has dirty buckets in
    range after all (the answer must then be read again with the overlay). ``as_json``: instead
    of one array per function, one text column with the buckets as JSON objects, comma-separated
    (:func:`_bucket_json`). ``columns``: the arrays without nulls (NaN instead, count never
    null), for numpy."""
    dirty_join: sql.Composable = sql.SQL("")
    if rollup is None:
        inner: sql.Composable = sql.SQL(_RAW_AGG)
    else:
        overlay = path == "postgres" and dirty
        template = _ROLLUP_SAME if rollup == width else _ROLLUP_REGROUP
        inner = sql.SQL(template).format(
            rollup=sql.Identifier(ROLLUPS[rollup]),
            exclude=sql.SQL(_EXCLUDE_DIRTY if overlay else ""),
        )
        if overlay:
            dirty_join = sql.SQL(_DIRTY_JOIN)
            inner = sql.Composed([inner, sql.SQL(_DIRTY_FROM_RAW)])
    arrays: sql.Composable
    if as_json:
        arrays = sql.SQL(_bucket_json(functions))
    elif columns:
        arrays = sql.SQL(", ").join(sql.SQL(_COLUMN_ARRAYS[f]) for f in functions)
    else:
        arrays = sql.SQL(", ").join(
            sql.SQL("array_agg({})").format(sql.SQL(_COLUMNS[f])) for f in functions
        )
    flag = sql.SQL(_DIRTY_FLAG if flag_dirty and not dirty else "")
    times = sql.SQL("array_agg(q.b)" if columns else "array_agg(extract(epoch from q.b)::bigint)")
    return sql.SQL(_PER_DATASTREAM).format(
        times=times, dirty_join=dirty_join, arrays=arrays, inner=inner, flag=flag
    )


def aggregate(
    conn: Conn,
    datastream_ids: Sequence[int],
    width: timedelta,
    start: datetime,
    end: datetime,
    *,
    functions: Sequence[Function] = FUNCTIONS,
    source: SourceChoice = "auto",
    path: StoragePath | None = None,
    as_json: bool = False,
    columns: bool = False,
    packed: bool = True,
) -> Aggregate:
    """Aggregates per bucket of ``width`` for each datastream over ``[start, end)``, widened to
    whole buckets, with the gaps (runs of buckets without observations) of each datastream.
    ``as_json``: each series' buckets come as JSON text made by PostgreSQL (``Series.json``)
    instead of Python values, for the API's JSON answers (no Python work per bucket).
    ``columns``: each series' buckets as numpy arrays (``Series.columns``), decoded from the
    binary arrays without a Python object per bucket (the API's columnar answers).
    ``packed``: on plain PostgreSQL, buckets of 1 h and 1 d come from the packed rollups
    (migration 0045: one row per datastream and day or month; the same values); False reads the
    rollup rows (the benchmark's comparison).

    The source is the coarsest rollup that serves the width (see :func:`choose_source`); raw rows
    otherwise. Datastreams without observations in the range come back with one gap over it."""
    if width not in WIDTHS.values():
        raise BadRequestError(f"interval {iso_width(width)} is not supported")
    ids = sorted(set(datastream_ids))
    if not ids:
        raise BadRequestError("no datastream given")
    if len(ids) > MAX_DATASTREAMS:
        raise BadRequestError(f"{len(ids)} datastreams; at most {MAX_DATASTREAMS} per request")
    start, end = _utc(start, "from"), _utc(end, "to")
    if end <= start:
        raise BadRequestError(f"to ({end.isoformat()}) must be after from ({start.isoformat()})")
    start, end = floor_to(start, width), ceil_to(end, width)
    buckets = (end - start) // width
    if buckets * len(ids) > MAX_BUCKETS:
        raise BadRequestError(
            f"{len(ids)} datastream(s) × {buckets} buckets of {iso_width(width)} is more than "
            f"{MAX_BUCKETS:,} values; shorten the range or choose a coarser interval"
        )
    fns = tuple(dict.fromkeys(functions))
    if not fns or any(f not in FUNCTIONS for f in fns):
        raise BadRequestError(f"functions {fns!r}: use some of {', '.join(FUNCTIONS)}")
    if as_json and columns:
        raise ValueError("as_json and columns exclude each other")
    path = path or storage_path(conn)
    rollup = choose_source(width, source)
    if packed and path == "postgres" and rollup == width and width in PACKED and not as_json:
        # one row per datastream and day (month) instead of one per bucket (migration 0045)
        series = _read_packed(conn, ids, width, start, end, fns, columns=columns)
        for s in series:
            s.gaps = _gaps(s.epoch if s.columns is None else s.columns.epoch, start, end, width)
        return Aggregate(width, start, end, ROLLUPS[width], fns, series)
    params = {"ids": ids, "start": start, "end": end, "w": width, "origin": ORIGIN}
    cur = conn.cursor(binary=True, row_factory=tuple_row)
    if columns:
        _numpy_arrays(cur)
    shape = {"as_json": as_json, "columns": columns}
    if rollup is not None and len(ids) * buckets <= _SMALL and conn.autocommit:
        # a few hundred rollup rows: too cheap for JIT to start, so no transaction to turn it
        # off in (three round trips fewer; they are a third of the time here)
        # one round trip: the clean query, which also says whether it was clean
        flagged = path == "postgres"
        query = aggregate_query(path, width, rollup, fns, dirty=False, flag_dirty=flagged, **shape)
        rows = cur.execute(query, params).fetchall()
        if flagged:
            if any(r[-1] for r in rows):
                query = aggregate_query(path, width, rollup, fns, dirty=True, **shape)
                rows = cur.execute(query, params).fetchall()
            else:
                rows = [r[:-1] for r in rows]
    else:
        with conn.transaction():
            # JIT compiling costs tens of ms, more than these queries take
            conn.execute("set local jit = off")
            dirty = path == "postgres" and rollup is not None and _any_dirty(cur, params)
            query = aggregate_query(path, width, rollup, fns, dirty=dirty, **shape)
            rows = cur.execute(query, params).fetchall()
    series = []
    for ds, epochs, *values in rows:
        if epochs is None:
            series.append(Series(ds))
            continue
        if as_json:
            # the JSON text and the epochs come from one ordered subquery (see _PER_DATASTREAM)
            if sorted(epochs) != epochs:  # not expected; the array path then sorts
                return aggregate(conn, ids, width, start, end, functions=fns, source=source,
                                 path=path)  # fmt: skip
            series.append(Series(ds, epochs, json=values[0]))
            continue
        if columns:
            if len(epochs) > 1 and not bool(np.all(epochs[1:] > epochs[:-1])):
                by_time = np.argsort(epochs, kind="stable")  # not expected; be safe
                epochs, values = epochs[by_time], [v[by_time] for v in values]
            series.append(Series(ds, columns=Columns(epochs, dict(zip(fns, values, strict=True)))))
            continue
        if sorted(epochs) != epochs:  # not expected (see _PER_DATASTREAM); be safe
            order = sorted(range(len(epochs)), key=epochs.__getitem__)
            epochs = [epochs[k] for k in order]
            values = [[v[k] for k in order] for v in values]
        series.append(Series(ds, epochs, dict(zip(fns, values, strict=True))))
    for s in series:
        s.gaps = _gaps(s.epoch if s.columns is None else s.columns.epoch, start, end, width)
    return Aggregate(width, start, end, "raw" if rollup is None else ROLLUPS[rollup], fns, series)


# ------------------------------------------------------------------------------------ packed
# Plain PostgreSQL, widths 1 h and 1 d: the packed rollups (migration 0045) give each datastream's
# buckets as a few bytea values per UTC day or month. They are read as they are stored, every
# datastream in one index scan, sorted by (datastream, start) (no aggregate: concatenating them in
# PostgreSQL cost it 3-4 times the scan, docs/benchmarks.md; the sort of a few thousand rows costs
# it less than putting them in order costs Python), and numpy reads each column of the whole
# answer in one piece (and puts the rows in order if they were not). A full row (every bucket of
# its day or month) sends only its first bucket time (_FIRST_TIME_WHEN_FULL). The dirty
# buckets in range come in the same statement (one snapshot) as rows of the same shape, one per
# bucket, computed from raw rows (``kind`` 1; 2 when the bucket has no observation any more):
# they replace what the packed rows say of them. When nothing in range is dirty, the usual case,
# an InitPlan evaluated once skips that part.
_PACKED_READ = """
(select p.datastream_id, 0 as kind, {names}
from {packed} p
where p.datastream_id = any(%(ids)s::bigint[]) and p.start >= %(row_start)s
  and p.start < %(end)s
order by p.datastream_id, p.start)
union all
{rest}"""
# the dirty buckets as rows of the packed rows' shape
_PACKED_DIRTY = """
select x.ds, case when r.n_all > 0 then 1 else 2 end, {dirty_names}
from (
    select distinct datastream_id as ds, date_bin(%(w)s, bucket, %(origin)s) as b
    from observation_dirty
    where datastream_id = any(%(ids)s::bigint[]) and bucket >= %(start)s and bucket < %(end)s
) x cross join lateral (
    select count(*) as n_all, count(o.result) as n,
           coalesce(sum(o.result), 'NaN') as s, coalesce(min(o.result), 'NaN') as lo,
           coalesce(max(o.result), 'NaN') as hi
    from observation o
    where o.datastream_id = x.ds and o.phenomenon_time >= x.b
      and o.phenomenon_time < x.b + %(w)s
) r
where {any_dirty}"""
# without the dirty part (its plan alone, never run, opens every partition of observation and
# its index at each execution): one row of kind -1 says that some bucket in range is dirty, and
# the read is made again with it
_PACKED_FLAG = """
select null, -1, {nulls} where {any_dirty}"""
_ANY_DIRTY = """(select exists (
    select 1 from observation_dirty where datastream_id = any(%(ids)s::bigint[])
    and bucket >= %(start)s and bucket < %(end)s))"""

#: a dirty bucket's value of each packed column, in the packed rows' wire format
_DIRTY_WIRE = {
    "t": "int8send(extract(epoch from x.b)::int8)",
    "n_all": "int4send(r.n_all::int4)",
    "n": "int4send(r.n::int4)",
    "s": "float8send(r.s)",
    "lo": "float8send(r.lo)",
    "hi": "float8send(r.hi)",
}

#: the packed columns each function needs, and their wire types (big-endian)
_PACKED_NEEDS: dict[Function, tuple[str, ...]] = {
    "count": ("n_all",),
    "sum": ("s",),
    "avg": ("s", "n"),
    "min": ("lo",),
    "max": ("hi",),
}
_PACKED_WIRE = {"t": ">i8", "n_all": ">i4", "n": ">i4", "s": ">f8", "lo": ">f8", "hi": ">f8"}


def packed_query(
    width: timedelta, functions: Sequence[Function], *, dirty: bool = True
) -> sql.Composed:
    """The SQL of the packed read (parameters ids, start, end, row_start, w, origin): the
    packed rows of ``ids`` that overlap the range, sorted by (datastream, start), each as its
    datastream, ``kind`` 0, then ``t`` and each packed column the functions need (bytea); then
    one row per dirty bucket in range in the same shape (``kind`` 1, or 2 when the bucket holds
    no observation now). ``dirty=False``: instead of those, one row of ``kind`` -1 when any
    bucket in range is dirty (read again with ``dirty=True`` then). A packed row with every
    bucket of its day (month) has only its first bucket time in ``t``. Hourly sums and means
    read the narrow copy of the hourly rows (:data:`_MEANS`)."""
    columns = _packed_columns(functions)
    any_dirty = sql.SQL(_ANY_DIRTY)
    rest = (
        sql.SQL(_PACKED_DIRTY).format(
            dirty_names=sql.SQL(", ").join(sql.SQL(_DIRTY_WIRE[c]) for c in columns),
            any_dirty=any_dirty,
        )
        if dirty
        else sql.SQL(_PACKED_FLAG).format(
            nulls=sql.SQL(", ").join(sql.SQL("null::bytea") for _ in columns), any_dirty=any_dirty
        )
    )
    values = [sql.SQL("p.{}").format(sql.Identifier(c)) for c in columns[1:]]
    table = _MEANS.get(width)
    if table is not None and set(columns[1:]) <= _MEANS_COLUMNS:  # t stored as the read sends it
        return sql.SQL(_PACKED_READ).format(
            packed=sql.Identifier(table), names=sql.SQL(", ").join([sql.SQL("p.t"), *values]),
            rest=rest,
        )  # fmt: skip
    return sql.SQL(_PACKED_READ).format(
        packed=sql.Identifier(PACKED[width]),
        names=sql.SQL(", ").join([sql.SQL(_FIRST_TIME_WHEN_FULL[width]), *values]),
        rest=rest,
    )


#: Narrow copies of a packed rollup (migration 0048): the hourly rows' n and s, with t as the
#: read sends it (a full day: its first time only), for the functions that need no other column
#: (avg, sum): about a third of the packed table's pages per request.
_MEANS: dict[timedelta, str] = {timedelta(hours=1): "observation_1h_means"}
_MEANS_COLUMNS = {"n", "s"}


#: ``t`` of a packed row as the read sends it: a row with every bucket of its day (month) sends
#: only its first bucket's time (the others follow at one width each; :func:`_packed_series`
#: tells the two apart by the number of values in the row). For hourly means that is 8 bytes a
#: bucket fewer of 20 (t, n, s), the largest part of what the read sends (docs/benchmarks.md,
#: session 9).
_FIRST_TIME_WHEN_FULL: dict[timedelta, str] = {
    timedelta(hours=1): (
        "case when length(p.t) = 192 then substring(p.t from 1 for 8) else p.t end"
    ),
    timedelta(days=1): (
        "case when length(p.t) = 8 * extract(day from date_trunc('month', p.start at time zone"
        " 'UTC') + interval '1 month - 1 day')::int then substring(p.t from 1 for 8)"
        " else p.t end"
    ),
}


def _packed_columns(functions: Sequence[Function]) -> list[str]:
    return ["t", *dict.fromkeys(c for f in functions for c in _PACKED_NEEDS[f])]


class _DirtyInRange(Exception):
    """The packed read without the dirty buckets met some (``packed_query(dirty=False)``)."""


def _packed_series(
    rows: list[tuple[Any, ...]],
    ids: Sequence[int],
    functions: Sequence[Function],
    start: datetime,
    end: datetime,
    *,
    columns: bool,
    width: timedelta | None = None,
) -> list[Series]:
    """The series of ``ids`` (increasing) from the rows of a packed read (:func:`packed_query`):
    the buckets inside ``[start, end)``, the dirty ones replaced by their values from raw rows.
    The whole answer is decoded at once (one ``frombuffer`` per column), then cut into series.
    A row whose ``t`` holds one time but whose columns hold several buckets is a full row: its
    buckets follow each other at ``width``."""
    names = _packed_columns(functions)
    # column by column, without a Python step per row
    cols = [list(map(itemgetter(k), rows)) for k in range(2 + len(names))]
    kind = np.array(cols[1], dtype=np.int64)
    if bool((kind < 0).any()):
        raise _DirtyInRange
    if len(rows) > 1 and not bool(kind.any()):
        cols = _rows_in_order(cols)  # as the read sorts them; a row at a time if not
    first_value = names[1]  # every function needs a column besides t
    sizes = (
        np.fromiter(map(len, cols[3]), dtype=np.int64, count=len(rows))
        // np.dtype(_PACKED_WIRE[first_value]).itemsize
    )
    whole = {
        c: np.frombuffer(b"".join(cols[2 + k]), dtype=_PACKED_WIRE[c]) for k, c in enumerate(names)
    }
    total = int(sizes.sum())
    if any(len(v) != total for c, v in whole.items() if c != "t"):
        raise ValueError("packed rollup rows whose columns differ in length")
    epoch = _packed_times(whole.pop("t"), cols[2], sizes, width)
    row_ds = np.array(cols[0], dtype=np.int64)
    bucket_ds = np.repeat(row_ds, sizes)
    keep = (epoch >= _epoch(start)) & (epoch < _epoch(end))  # first and last rows may be cut
    if bool(kind.any()):  # dirty buckets: theirs first among equal (datastream, time), then
        # the packed ones of the same bucket dropped, and those without observations
        bucket_kind = np.repeat(kind, sizes)
        order = np.lexsort((bucket_kind == 0, epoch, bucket_ds))
        epoch, bucket_ds, bucket_kind = epoch[order], bucket_ds[order], bucket_kind[order]
        whole, keep = {c: v[order] for c, v in whole.items()}, keep[order]
        same = np.zeros(len(epoch), dtype=bool)
        same[1:] = (epoch[1:] == epoch[:-1]) & (bucket_ds[1:] == bucket_ds[:-1])
        keep &= ~same & (bucket_kind != 2)
    # else the rows are in (datastream, time) order (_rows_in_order), and a row's buckets too
    if not bool(keep.all()):
        epoch, bucket_ds = epoch[keep], bucket_ds[keep]
        whole = {c: v[keep] for c, v in whole.items()}
    computed = _packed_values(whole, functions)
    wanted = np.asarray(ids, dtype=np.int64)
    bounds = zip(
        np.searchsorted(bucket_ds, wanted, "left").tolist(),
        np.searchsorted(bucket_ds, wanted, "right").tolist(),
        strict=True,
    )
    out: list[Series] = []
    for ds, (a, b) in zip(ids, bounds, strict=True):
        if a == b:
            out.append(Series(ds))
        elif columns:
            out.append(
                Series(ds, columns=Columns(epoch[a:b], {f: v[a:b] for f, v in computed.items()}))
            )
        else:
            lists = {f: _nullable_list(f, v[a:b]) for f, v in computed.items()}
            out.append(Series(ds, epoch[a:b].tolist(), lists))
    return out


def _rows_in_order(cols: list[list[Any]]) -> list[list[Any]]:
    """The columns of a packed read without dirty rows (datastream, kind, t, …) with the rows in
    (datastream, time) order. The read sorts them; should they come otherwise, they are put in
    order a row at a time (3,000 rows rather than their 72,000 buckets)."""
    row_ds = np.array(cols[0], dtype=np.int64)
    joined = b"".join(cols[2])  # every t has a time at least: all full rows when 8 bytes each
    if len(joined) != 8 * len(cols[2]):
        joined = b"".join([t[:8] for t in cols[2]])
    first = np.frombuffer(joined, dtype=">i8")  # each row's first time
    ds_step = np.diff(row_ds)
    if not bool(np.any(ds_step < 0) or np.any((ds_step == 0) & (np.diff(first) <= 0))):
        return cols
    order = np.lexsort((first, row_ds)).tolist()
    return [list(map(c.__getitem__, order)) for c in cols]


def _packed_times(
    t: npt.NDArray[Any],
    t_values: Sequence[bytes],
    sizes: npt.NDArray[np.int64],
    width: timedelta | None,
) -> npt.NDArray[np.int64]:
    """Each bucket's start (seconds since 1970) from the rows' ``t`` (joined in ``t``, one bytes
    value per row in ``t_values``) and their numbers of buckets: a row whose ``t`` holds all its
    times gives them as they are, a full row (one time, several buckets) its first time and the
    next ones ``width`` apart."""
    times = np.fromiter(map(len, t_values), dtype=np.int64, count=len(t_values)) // 8
    if bool(np.array_equal(times, sizes)):
        return t.astype(np.int64)
    full = times != sizes
    if width is None or bool((times[full] != 1).any()):
        raise ValueError("packed rollup rows whose columns differ in length")
    step = int(width.total_seconds())
    if len(t) == len(sizes) and bool((sizes == sizes[0]).all()):  # full rows of one length
        grid = np.arange(int(sizes[0]), dtype=np.int64) * step
        return (t.astype(np.int64)[:, None] + grid).ravel()
    t_at = np.zeros(len(times), dtype=np.int64)  # each row's first time in t
    np.cumsum(times[:-1], out=t_at[1:])
    row_at = np.zeros(len(sizes), dtype=np.int64)  # each row's first bucket
    np.cumsum(sizes[:-1], out=row_at[1:])
    place = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(row_at, sizes)
    in_full = np.repeat(full, sizes)
    explicit = np.repeat(t_at, sizes) + np.where(in_full, 0, place)
    return t.astype(np.int64)[explicit] + np.where(in_full, place * step, 0)


def _nullable_list(function: str, values: npt.NDArray[Any]) -> list[Any]:
    """``values`` as a list with None for NaN (no numeric result; a Python step per value only
    when there is one)."""
    out: list[Any] = values.tolist()
    if function == "count" or not bool(np.isnan(values).any()):
        return out
    return [None if x != x else x for x in out]


def _packed_values(
    cols: dict[str, npt.NDArray[Any]], functions: Sequence[Function]
) -> dict[str, npt.NDArray[Any]]:
    """The functions' values from the rollup columns (``n_all``, ``n`` whole numbers; ``s``,
    ``lo``, ``hi`` float64 with NaN where there is no numeric result)."""
    values: dict[str, npt.NDArray[Any]] = {}
    for f in functions:
        if f == "count":
            values[f] = cols["n_all"].astype(np.int64)
        elif f == "sum":
            values[f] = cols["s"].astype(np.float64)
        elif f == "avg":  # s / n as PostgreSQL divides (float8 by a whole number)
            n = cols["n"]
            values[f] = np.divide(
                cols["s"], n, out=np.full(len(n), np.nan), where=n > 0, dtype=np.float64
            )
        else:
            values[f] = cols["lo" if f == "min" else "hi"].astype(np.float64)
    return values


def _read_packed(
    conn: Conn,
    ids: list[int],
    width: timedelta,
    start: datetime,
    end: datetime,
    functions: Sequence[Function],
    *,
    columns: bool,
) -> list[Series]:
    row_start = (
        floor_to(start, timedelta(days=1)) if PACK_UNIT[width] == "day" else month_floor(start)
    )
    params = {
        "ids": ids, "start": start, "end": end, "row_start": row_start, "w": width,
        "origin": ORIGIN,
    }  # fmt: skip
    cur = conn.cursor(binary=True, row_factory=tuple_row)
    small = len(ids) * -(-(end - row_start) // PACK_SPAN[width]) <= _SMALL_PACKED

    def read(dirty: bool) -> list[tuple[Any, ...]]:
        key = (width, tuple(functions), dirty)
        query = _PACKED_TEXT.get(key)
        if query is None:  # constant identifiers only: the same text for every connection
            query = _PACKED_TEXT[key] = packed_query(width, functions, dirty=dirty).as_string(None)
        if small and conn.autocommit:
            return cur.execute(query, params).fetchall()  # too cheap for JIT to start
        # JIT compiling costs tens of ms; the dirty overlay's estimate can reach its threshold.
        # One round trip for BEGIN, SET, the read and COMMIT (pipeline mode) instead of four.
        with conn.pipeline(), conn.transaction():
            conn.execute("set local jit = off")
            cur.execute(query, params)
        return cur.fetchall()

    try:
        return _packed_series(
            read(dirty=False), ids, functions, start, end, columns=columns, width=width
        )
    except _DirtyInRange:  # again, with the dirty buckets from raw rows
        rows = read(dirty=True)
    return _packed_series(rows, ids, functions, start, end, columns=columns, width=width)


#: the text of :func:`packed_query` by (width, functions): composing it costs more than decoding
_PACKED_TEXT: dict[tuple[timedelta, tuple[Function, ...], bool], str] = {}


#: datastreams × buckets up to which a rollup query runs without the JIT-off transaction
_SMALL = 5_000
#: packed rows (at most) up to which the packed read runs without the JIT-off transaction: the
#: plan's estimate is about one per packed row, far below jit_above_cost (100,000) there
_SMALL_PACKED = 20_000
#: the shortest span of one packed row (a UTC day; a UTC month): the most rows a range touches
PACK_SPAN: dict[timedelta, timedelta] = {
    timedelta(hours=1): timedelta(days=1),
    timedelta(days=1): timedelta(days=28),
}


def _any_dirty(cur: psycopg.Cursor[Any], params: dict[str, Any]) -> bool:
    row = cur.execute(
        "select exists (select 1 from observation_dirty where datastream_id = any(%(ids)s) "
        "and bucket >= %(start)s and bucket < %(end)s)",
        params,
    ).fetchone()
    return bool(row and row[0])


def _gaps(
    epochs: Sequence[int] | npt.NDArray[np.int64], start: datetime, end: datetime, width: timedelta
) -> list[Gap]:
    """The runs of empty buckets in ``[start, end)`` given the bucket starts that hold
    observations (increasing, seconds since 1970; a list or a numpy array)."""
    step = int(width.total_seconds())
    first, stop = _epoch(start), _epoch(end)
    n = len(epochs)
    if n == 0:
        return [Gap(_from_epoch(first), _from_epoch(stop))] if first < stop else []
    runs: list[tuple[int, int]] = []  # (from, to) in seconds
    lo, hi = int(epochs[0]), int(epochs[-1])
    if lo > first:
        runs.append((first, lo))
    if hi - lo != (n - 1) * step:  # gaps inside: find them without a Python step per bucket
        e = np.asarray(epochs, dtype=np.int64)
        for k in np.flatnonzero(np.diff(e) > step).tolist():
            runs.append((int(e[k]) + step, int(e[k + 1])))
    if hi + step < stop:
        runs.append((hi + step, stop))
    return [Gap(_from_epoch(a), _from_epoch(b)) for a, b in runs]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch(t: datetime) -> int:
    return int((t - _EPOCH).total_seconds())


def _from_epoch(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


# ------------------------------------------------------------------------------------ counting
_OLDEST = (
    "select phenomenon_time from observation where datastream_id = %s "
    "order by phenomenon_time limit 1"
)
_COUNT_ROLLUP = (
    "select coalesce(sum(n_all), 0)::bigint from observation_1d "
    "where datastream_id = %(ds)s and bucket >= %(start)s"
)
_COUNT_ROLLUP_OVERLAY = """
with d as materialized (
    select distinct date_bin('1 day', bucket, %(origin)s) as b from observation_dirty
    where datastream_id = %(ds)s and bucket >= %(start)s
)
select (select coalesce(sum(r.n_all), 0) from observation_1d r
        where r.datastream_id = %(ds)s and r.bucket >= %(start)s
          and not exists (select 1 from d where d.b = r.bucket))
     + (select count(*) from d join observation o
          on o.datastream_id = %(ds)s and o.phenomenon_time >= d.b
         and o.phenomenon_time < d.b + interval '1 day')"""
_COUNT_RAW = "select count(*) from observation where datastream_id = %s"


def count_observations(
    conn: Conn, datastream_id: int, *, path: StoragePath | None = None
) -> tuple[int, bool]:
    """``(count, exact)`` of one datastream's observations, for ``@iot.count``.

    The daily rollup is summed from the day of the datastream's oldest observation on (retention
    drops whole months or day-aligned chunks, so that day is complete). On plain PostgreSQL the
    rollup with its dirty overlay is exact. On TimescaleDB the continuous aggregate can miss late
    data until its next refresh, so there the rows are counted when there are at most
    :data:`EXACT_COUNT_LIMIT` of them and the rollup sum is returned as an estimate otherwise."""
    path = path or storage_path(conn)
    oldest = conn.execute(_OLDEST, (datastream_id,)).fetchone()
    if oldest is None:
        return 0, True
    start = floor_to(_values(oldest)[0], timedelta(days=1))
    params = {"ds": datastream_id, "start": start, "origin": ORIGIN}
    query = _COUNT_ROLLUP_OVERLAY if path == "postgres" else _COUNT_ROLLUP
    row = conn.execute(query, params).fetchone()
    n = int(_values(row)[0]) if row is not None else 0
    if path == "postgres":
        return n, True
    if n <= EXACT_COUNT_LIMIT:
        exact = conn.execute(_COUNT_RAW, (datastream_id,)).fetchone()
        return (int(_values(exact)[0]) if exact is not None else 0), True
    return n, False


# ------------------------------------------------------------------------------------ upkeep
def rebuild_latest(conn: Conn) -> int:
    """Recompute ``observation_latest`` for every datastream from raw rows (after loading data
    past the ingest writer, e.g. a bulk import). Returns the number of datastreams updated."""
    cur = conn.execute(
        """
        insert into observation_latest as l (datastream_id, phenomenon_time, result)
        select d.id, o.phenomenon_time, o.result
        from datastream d cross join lateral (
            select phenomenon_time, result from observation
            where datastream_id = d.id order by phenomenon_time desc limit 1) o
        on conflict (datastream_id) do update
            set phenomenon_time = excluded.phenomenon_time, result = excluded.result
            where excluded.phenomenon_time >= l.phenomenon_time"""
    )
    return max(cur.rowcount, 0)
