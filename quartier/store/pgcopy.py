"""PostgreSQL binary COPY for numpy columns, both ways, without a Python loop per row; and numpy
arrays as binary array parameters (:class:`Int8Array`, :class:`Float8Array`,
:class:`TimestamptzArray`).

Reading: a query whose columns are all fixed-width and never null (use ``coalesce``) comes back as
one numpy structured array. Writing: numeric, boolean and text columns (text as codes into a small
list of categories, code -1 is null; numbers null where NaN or masked) are encoded in chunks.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.adapt import Dumper
from psycopg.pq import Format

from quartier.store.db import Conn

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER = b"\xff\xff"
_CHUNK_ROWS = 262_144
_READ_CHUNK_BYTES = 32 * 1024 * 1024

#: PostgreSQL binary wire type of each numpy type code we write
_WIRE: dict[str, str] = {"int2": ">i2", "int4": ">i4", "int8": ">i8", "float4": ">f4",
                         "float8": ">f8", "bool": "u1"}  # fmt: skip


def read_copy(
    conn: Conn,
    query: sql.Composable | str,
    columns: Sequence[tuple[str, str]],
    params: Mapping[str, Any] | None = None,
) -> np.ndarray[Any, np.dtype[np.void]]:
    """Run ``query`` as ``COPY (query) TO STDOUT (FORMAT binary)``; ``columns`` names each output
    column with its type (``int2``, ``int4``, ``int8``, ``float4``, ``float8``). No value may be
    null. Returns a structured array with native-endian fields of those names."""
    inner = sql.SQL(query) if isinstance(query, str) else query
    stmt = sql.SQL("copy ({}) to stdout (format binary)").format(inner)
    fields: list[tuple[str, str]] = [("_n", ">i2")]
    for name, kind in columns:
        fields += [(f"_l_{name}", ">i4"), (name, _WIRE[kind])]
    wire = np.dtype(fields)
    native = np.dtype([(n, np.dtype(_WIRE[k]).newbyteorder("=")) for n, k in columns])
    parts: list[np.ndarray[Any, np.dtype[np.void]]] = []
    pending = bytearray()
    header_left = len(_SIGNATURE)

    def parse(final: bool) -> None:
        nonlocal pending, header_left
        if header_left:
            cut = min(header_left, len(pending))
            del pending[:cut]
            header_left -= cut
        usable = len(pending) - (len(_TRAILER) if final else 0)
        rows_n = usable // wire.itemsize
        if final and usable % wire.itemsize:
            raise ValueError("binary COPY rows are not fixed-width: is a column null?")
        if rows_n:
            rows = np.frombuffer(pending, dtype=wire, count=rows_n)
            if (rows["_n"] != len(columns)).any():
                raise ValueError("unexpected field count in binary COPY")
            part = np.empty(rows_n, dtype=native)
            for name, _ in columns:
                if (rows[f"_l_{name}"] < 0).any():
                    raise ValueError(f"column {name} has nulls; coalesce it in the query")
                part[name] = rows[name]
            parts.append(part)
            del rows
            del pending[: rows_n * wire.itemsize]

    with conn.cursor() as cur, cur.copy(stmt, params) as copy:
        for chunk in copy:
            pending += chunk
            if len(pending) >= _READ_CHUNK_BYTES:
                parse(final=False)
    parse(final=True)
    if not parts:
        return np.empty(0, dtype=native)
    out = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return out


@dataclass(frozen=True)
class Column:
    """One column to write: numbers (``kind`` a key of the wire table, ``null`` marks nulls; NaN
    floats are null too) or text (``kind="text"``: ``values`` are codes into ``categories``, -1
    null)."""

    name: str
    kind: str
    values: npt.NDArray[Any]
    null: npt.NDArray[np.bool_] | None = None
    categories: Sequence[str] = ()


def _fixed_chunk(cols: Sequence[tuple[str, npt.NDArray[Any]]], lo: int, hi: int) -> bytes:
    """Rows ``lo:hi`` of numeric columns ((kind, values), no nulls; NaN floats as NaN) as one
    numpy structured array: every row has the same width, so no per-row work."""
    fields: list[tuple[str, str]] = [("_n", ">i2")]
    for i, (kind, _) in enumerate(cols):
        fields += [(f"_l{i}", ">i4"), (f"_v{i}", _WIRE[kind])]
    rec = np.empty(hi - lo, dtype=fields)
    rec["_n"] = len(cols)
    for i, (kind, values) in enumerate(cols):
        rec[f"_l{i}"] = np.dtype(_WIRE[kind]).itemsize
        rec[f"_v{i}"] = values[lo:hi]
    return rec.tobytes()


def _encode_fixed(cols: Sequence[Column], lo: int, hi: int) -> bytes | None:
    """The common case, numbers without nulls, as :func:`_fixed_chunk`. None when a column has
    text or nulls (NaN floats are nulls here)."""
    for c in cols:
        if c.kind == "text" or c.null is not None:
            return None
        if c.values.dtype.kind == "f" and np.isnan(c.values[lo:hi]).any():
            return None
    return _fixed_chunk([(c.kind, c.values) for c in cols], lo, hi)


def _copy_statement(table: str, names: Sequence[str], *, freeze: bool = False) -> sql.Composed:
    return sql.SQL("copy {} ({}) from stdin (format binary{})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(n) for n in names),
        sql.SQL(", freeze" if freeze else ""),
    )


def _encode_chunk(cols: Sequence[Column], lo: int, hi: int) -> bytes:
    fixed = _encode_fixed(cols, lo, hi)
    if fixed is not None:
        return fixed
    n = hi - lo
    lengths: list[npt.NDArray[np.int64]] = []
    cat_bytes: list[list[bytes]] = []
    for c in cols:
        v = c.values[lo:hi]
        if c.kind == "text":
            enc = [s.encode() for s in c.categories]
            cat_bytes.append(enc)
            table = np.array([len(b) for b in enc] + [-1], dtype=np.int64)
            lengths.append(table[np.where(v < 0, len(enc), v)])
        else:
            cat_bytes.append([])
            null = np.zeros(n, dtype=bool) if c.null is None else c.null[lo:hi].copy()
            if v.dtype.kind == "f":
                null |= np.isnan(v)
            lengths.append(np.where(null, -1, np.dtype(_WIRE[c.kind]).itemsize).astype(np.int64))
    sizes = 2 + sum(4 + np.maximum(ln, 0) for ln in lengths)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    buf = np.zeros(int(starts[-1]), dtype=np.uint8)
    row0 = starts[:-1]
    buf[row0[:, None] + np.arange(2)] = (
        np.full(n, len(cols), dtype=">i2").view(np.uint8).reshape(n, 2)
    )
    pos = row0 + 2
    for c, ln, enc in zip(cols, lengths, cat_bytes, strict=True):
        buf[pos[:, None] + np.arange(4)] = ln.astype(">i4").view(np.uint8).reshape(n, 4)
        data = pos + 4
        v = c.values[lo:hi]
        if c.kind == "text":
            lens = np.maximum(ln, 0)
            total = int(lens.sum())
            if total:
                pool = np.frombuffer(b"".join(enc), dtype=np.uint8)
                cat_start = np.concatenate([[0], np.cumsum([len(b) for b in enc])])[:-1]
                row_start = np.repeat(np.cumsum(lens) - lens, lens)
                within = np.arange(total) - row_start
                src = np.repeat(cat_start[np.maximum(v, 0)], lens) + within
                buf[np.repeat(data, lens) + within] = pool[src]
        else:
            width = np.dtype(_WIRE[c.kind]).itemsize
            ok = ln >= 0
            wire = np.ascontiguousarray(v[ok].astype(_WIRE[c.kind]))
            buf[data[ok][:, None] + np.arange(width)] = wire.view(np.uint8).reshape(-1, width)
        pos = data + np.maximum(ln, 0)
    return buf.tobytes()


def encode(cols: Sequence[Column]) -> Iterator[bytes]:
    """The binary COPY stream for ``cols`` (all of the same length), in chunks."""
    n = len(cols[0].values) if cols else 0
    yield _SIGNATURE
    for lo in range(0, n, _CHUNK_ROWS):
        yield _encode_chunk(cols, lo, min(n, lo + _CHUNK_ROWS))
    yield _TRAILER


def write_copy(conn: Conn, table: str, cols: Sequence[Column]) -> int:
    """Append the rows of ``cols`` to ``table`` with binary COPY; returns the number of rows."""
    stmt = _copy_statement(table, [c.name for c in cols])
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        for chunk in encode(cols):
            copy.write(chunk)
    return len(cols[0].values) if cols else 0


def write_copy_fixed(
    conn: Conn,
    table: str,
    cols: Sequence[tuple[str, str, npt.NDArray[Any]]],
    *,
    freeze: bool = False,
    chunk_rows: int = _CHUNK_ROWS,
) -> int:
    """Append rows to ``table`` with binary COPY when no value is null: every row has the same
    width, so each chunk is one numpy structured array (a field assignment per column, no
    per-row work). ``cols``: (name, kind, values) with ``kind`` a key of the wire table (int2,
    int4, int8, float4, float8, bool); NaN floats are sent as NaN. ``freeze``: ``COPY … FREEZE``
    (the table must have been created or truncated in this transaction). Returns the rows."""
    n = len(cols[0][2]) if cols else 0
    columns = [(kind, values) for _, kind, values in cols]
    stmt = _copy_statement(table, [name for name, _, _ in cols], freeze=freeze)
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        copy.write(_SIGNATURE)
        for lo in range(0, n, chunk_rows):
            copy.write(_fixed_chunk(columns, lo, min(n, lo + chunk_rows)))
        copy.write(_TRAILER)
    return n


# ---------------------------------------------------------------- numpy arrays as query parameters


class _Values:
    """A one-dimensional numpy array to pass as a PostgreSQL array parameter, in binary (psycopg
    would otherwise dump it element by element in Python)."""

    __slots__ = ("values",)

    def __init__(self, values: npt.NDArray[Any]) -> None:
        self.values = values


class Int8Array(_Values):
    """``bigint[]`` from integers."""


class Float8Array(_Values):
    """``double precision[]`` from floats (NaN stays NaN)."""


class TimestamptzArray(_Values):
    """``timestamptz[]`` from microseconds since 1970-01-01 UTC."""


#: PostgreSQL's epoch (2000-01-01) in microseconds since 1970
PG_EPOCH_US = 946_684_800_000_000


def _binary_array(values: npt.NDArray[Any], elem_oid: int, wire: str) -> bytes:
    n = len(values)
    if n == 0:
        return struct.pack("!iii", 0, 0, elem_oid)
    rec = np.empty(n, dtype=[("len", ">i4"), ("v", wire)])
    rec["len"] = np.dtype(wire).itemsize
    rec["v"] = values
    return struct.pack("!iiiii", 1, 0, elem_oid, n, 1) + rec.tobytes()


class _Int8ArrayDumper(Dumper):
    format = Format.BINARY
    oid = 1016  # int8[]

    def dump(self, obj: Any) -> bytes:
        return _binary_array(obj.values, 20, ">i8")


class _Float8ArrayDumper(Dumper):
    format = Format.BINARY
    oid = 1022  # float8[]

    def dump(self, obj: Any) -> bytes:
        return _binary_array(obj.values, 701, ">f8")


class _TimestamptzArrayDumper(Dumper):
    format = Format.BINARY
    oid = 1185  # timestamptz[]

    def dump(self, obj: Any) -> bytes:
        return _binary_array(np.asarray(obj.values, dtype=np.int64) - PG_EPOCH_US, 1184, ">i8")


psycopg.adapters.register_dumper(Int8Array, _Int8ArrayDumper)
psycopg.adapters.register_dumper(Float8Array, _Float8ArrayDumper)
psycopg.adapters.register_dumper(TimestamptzArray, _TimestamptzArrayDumper)


# ------------------------------------------------------- whole tables, batched by PostgreSQL


def read_table_columns(
    conn: Conn,
    table: str,
    columns: Sequence[tuple[str, str, str]],
    where: str = "true",
    params: Mapping[str, Any] | None = None,
    *,
    batch_rows: int = 262_144,
    ranges: bool = True,
) -> dict[str, npt.NDArray[Any]]:
    """Every row of ``table`` matching ``where`` as one numpy array per column. ``columns``:
    (name, kind, SQL expression) with ``kind`` one of int2, int4, int8, float4, float8; no value
    may be null (use ``coalesce``). ``where`` and the expressions are SQL (constants of the
    caller only); ``params`` fills their ``%(name)s`` placeholders (with ``params``, a literal
    ``%`` is written ``%%``, as everywhere in psycopg).

    Binary COPY sends one message per row, and taking 10 M messages apart costs Python more than
    the data itself (0.7 µs a row). Here PostgreSQL aggregates each range of about
    ``batch_rows`` rows (a TID range scan over consecutive heap blocks) into one array per
    column, and one COPY row is a whole batch: Python handles a few dozen messages. Before
    PostgreSQL 14 (no TID range scans) it falls back to :func:`read_copy`.

    ``ranges=False``: one aggregate over ``where`` instead, for a small part of the table that an
    index finds (the TID ranges would visit every block)."""
    if conn.info.server_version < 140000:
        plain = sql.SQL("select {} from {} where {}").format(
            sql.SQL(", ").join(sql.SQL(expr) for _, _, expr in columns),
            sql.Identifier(table),
            sql.SQL(where),
        )
        rows = read_copy(conn, plain, [(name, kind) for name, kind, _ in columns], params)
        return {name: np.ascontiguousarray(rows[name]) for name, _, _ in columns}
    with conn.cursor() as cur:
        found = cur.execute(
            "select relpages, reltuples from pg_class where oid = %s::regclass", (table,)
        ).fetchone()
    pages, tuples = (int(found[0]), float(found[1])) if found is not None else (0, -1.0)
    per_block = tuples / pages if pages > 0 and tuples > 0 else 50.0
    step = max(1, int(batch_rows / max(per_block, 1.0)))
    aggs = sql.SQL(", ").join(
        sql.SQL("array_agg({})").format(sql.SQL(expr)) for _, _, expr in columns
    )
    query: sql.Composable = sql.SQL(
        "select _cols.* from generate_series(0, pg_relation_size({table_lit}::regclass)"
        " / current_setting('block_size')::int, {step}) _batch(_first_block),"
        " lateral (select {aggs} from {table}"
        " where ctid >= ('(' || _batch._first_block || ',0)')::tid"
        " and ctid < ('(' || _batch._first_block + {step} || ',0)')::tid and ({where})) _cols"
    ).format(
        table_lit=sql.Literal(table),
        step=sql.Literal(step),
        aggs=aggs,
        table=sql.Identifier(table),
        where=sql.SQL(where),
    )
    if not ranges:
        query = sql.SQL("select {aggs} from {table} where {where}").format(
            aggs=aggs, table=sql.Identifier(table), where=sql.SQL(where)
        )
    stmt = sql.SQL("copy ({}) to stdout (format binary)").format(query)
    elements = [np.dtype([("_l", ">i4"), ("v", _WIRE[kind])]) for _, kind, _ in columns]
    parts: list[list[npt.NDArray[Any]]] = [[] for _ in columns]

    def take(row: memoryview) -> None:
        pos = 2  # the field count
        for i, el in enumerate(elements):
            size = int.from_bytes(row[pos : pos + 4], "big", signed=True)
            pos += 4
            if size < 0:  # an empty range: array_agg of no rows is null
                continue
            ndim = int.from_bytes(row[pos : pos + 4], "big")
            if int.from_bytes(row[pos + 4 : pos + 8], "big"):
                raise ValueError(f"column {columns[i][0]} has nulls; coalesce it in the query")
            if ndim:
                count = int.from_bytes(row[pos + 12 : pos + 16], "big")
                data = np.frombuffer(row, dtype=el, count=count, offset=pos + 20)
                parts[i].append(data["v"].astype(el["v"].newbyteorder("=")))
            pos += size

    with conn.cursor() as cur, cur.copy(stmt, params) as copy:
        for chunk in copy:
            # a COPY data message is exactly one row (the first one after the file header)
            body = memoryview(chunk)
            if bytes(body[: len(_SIGNATURE)]) == _SIGNATURE:
                body = body[len(_SIGNATURE) :]
            if len(body) >= 2 and bytes(body[:2]) != _TRAILER:
                take(body)
    out: dict[str, npt.NDArray[Any]] = {}
    for (name, kind, _), got in zip(columns, parts, strict=True):
        native = np.dtype(_WIRE[kind]).newbyteorder("=")
        out[name] = np.concatenate(got) if got else np.empty(0, native)
        got.clear()
    return out
