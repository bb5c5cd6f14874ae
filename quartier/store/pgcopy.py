"""PostgreSQL binary COPY for numpy columns, both ways, without a Python loop per row.

Reading: a query whose columns are all fixed-width and never null (use ``coalesce``) comes back as
one numpy structured array. Writing: numeric, boolean and text columns (text as codes into a small
list of categories, code -1 is null; numbers null where NaN or masked) are encoded in chunks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER = b"\xff\xff"
_CHUNK_ROWS = 262_144
_READ_CHUNK_BYTES = 32 * 1024 * 1024

#: PostgreSQL binary wire type of each numpy type code we write
_WIRE: dict[str, str] = {"int2": ">i2", "int4": ">i4", "int8": ">i8", "float4": ">f4",
                         "float8": ">f8", "bool": "u1"}  # fmt: skip


def read_copy(
    conn: psycopg.Connection[Any],
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


def _encode_chunk(cols: Sequence[Column], lo: int, hi: int) -> bytes:
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


def write_copy(conn: psycopg.Connection[Any], table: str, cols: Sequence[Column]) -> int:
    """Append the rows of ``cols`` to ``table`` with binary COPY; returns the number of rows."""
    stmt = sql.SQL("copy {} ({}) from stdin (format binary)").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c.name) for c in cols)
    )
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        for chunk in encode(cols):
            copy.write(chunk)
    return len(cols[0].values) if cols else 0
