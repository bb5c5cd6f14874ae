"""Coverage inputs in PostgreSQL: read for an analysis (binary COPY straight into numpy) and
written from frames (households, broadband offers, speed tests, signal measurements).

Every function takes an open psycopg 3 connection and leaves the transaction to the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg
from psycopg.rows import tuple_row

from quartier.errors import ConfigError
from quartier.geo import io as geo_io
from quartier.geo.analysis import FIXED_TECHNOLOGIES, MOBILE_TECHNOLOGIES, CoverageInputs
from quartier.geo.memory import release_free_memory
from quartier.geo.speedtest_cells import MIN_CONTRIBUTORS, contributed_cells
from quartier.store.db import Conn
from quartier.store.pgcopy import Column, read_table_columns, write_copy

# --- reading ------------------------------------------------------------------------------------


def _operators(conn: Conn) -> list[str]:
    """The distinct operators of ``mobile_measurement`` (a loose index scan)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            """
            with recursive ops as (
                (select operator from mobile_measurement order by operator limit 1)
                union all
                select (select m.operator from mobile_measurement m
                        where m.operator > ops.operator order by m.operator limit 1)
                from ops where ops.operator is not null
            )
            select operator from ops where operator is not null
            """
        ).fetchall()
    return [str(r[0]) for r in rows]


def _read_signals(
    conn: Conn, window: str, period: dict[str, Any], ranges: bool = True, devices: bool = False
) -> tuple[list[str], dict[str, npt.NDArray[Any]]]:
    """The signal measurements with operator codes (index in the returned list) and technology
    codes (index in MOBILE_TECHNOLOGIES). PostgreSQL sends both in one int4: ``hashtext(operator)``
    with its lowest three bits replaced by the technology's digit - 2, which is cheaper than
    looking the texts up per row (and every column sent costs about 50 ns a row)."""
    ops = _operators(conn)
    with conn.cursor(row_factory=tuple_row) as cur:
        hashes: dict[str, int] = dict(
            cur.execute("select o, hashtext(o) & -8 from unnest(%s::text[]) o", (ops,)).fetchall()
        )
    signals = read_table_columns(
        conn,
        "mobile_measurement",
        [("cell_e", "int4", "cell_e"), ("cell_n", "int4", "cell_n"),
         ("optech", "int4", "(hashtext(operator) & -8) | (ascii(technology) - ascii('2'))"),
         ("level", "float4", "coalesce(rsrp_dbm, rssi_dbm, 'NaN'::real)"),
         ("dev", "int4", "hashtext(device_key)")],
        _in_slice(conn, "mobile_measurement", window, period),
        period,
        ranges=ranges,
    )  # fmt: skip
    _only_contributed(signals, int(period.get("min_contributors") or 1), devices)
    # technology: '2G' '3G' '4G' '5G' (the table's check) → 0…3, the order of MOBILE_TECHNOLOGIES
    assert [t[0] for t in MOBILE_TECHNOLOGIES] == ["2", "3", "4", "5"]
    optech = signals.pop("optech")
    signals["tech"] = (optech & 7).astype(np.int8)
    optech &= -8
    if len(set(hashes.values())) != len(ops):  # pragma: no cover - a hash collision
        raise ValueError("two operators with the same hashtext")
    op = np.zeros(len(optech), dtype=np.int8 if len(ops) < 128 else np.int16)
    for i, o in enumerate(ops[1:], start=1):
        op[optech == np.int32(hashes[o])] = i
    signals["op"] = op
    return ops, signals


def _only_contributed(
    columns: dict[str, npt.NDArray[Any]], min_contributors: int, devices: bool = False
) -> None:
    """Keep, in place, the rows of cells with at least ``min_contributors`` distinct devices
    (``dev``: a 32-bit hash of the pseudonym; a collision can only merge two devices, which
    errs towards leaving a cell out); ``dev`` itself is dropped. ``devices``: keep every row
    and the hashes (as ``device``), for a caller that applies the rule per cell later."""
    if devices:
        columns["device"] = columns.pop("dev")
        return
    dev = columns.pop("dev")
    keep = contributed_cells(columns["cell_e"], columns["cell_n"], dev, min_contributors)
    if not keep.all():
        for name in list(columns):
            columns[name] = columns[name][keep]


def load_inputs(
    conn: Conn,
    *,
    district_level: str | None = "stadtbezirk",
    since: datetime | None = None,
    until: datetime | None = None,
    conninfo: str | None = None,
    min_contributors: int = MIN_CONTRIBUTORS,
    rows: tuple[int, int] | None = None,
    part: tuple[int, int] | None = None,
    columns: tuple[int, int] | None = None,
) -> CoverageInputs:
    """Households, offers, speed tests and signal measurements (the latter two measured in
    ``[since, until]``, either bound optional) by cell, and the districts of one level (none
    with ``district_level`` None). With ``conninfo`` the signal measurements are read over a
    second connection at the same time. With ``rows`` = (n0, n1), only the rows whose cell's
    northing lies in ``[n0, n1)`` (a band of Dask tiles: one range of the ``(cell_n, cell_e)``
    index of migration 0044); with ``columns`` = (e0, e1) too, only those whose cell's
    easting lies in ``[e0, e1)`` (part of a band). With ``part`` = (i, n), only the i-th of n
    equal ranges of each table's blocks (TID range scans, as the whole read does), with every
    speed test and signal measurement and its device's hash (``device``, int32): k-anonymity is
    then the caller's, per cell over all parts (the Dask path, :mod:`quartier.geo.distributed`).

    k-anonymity: speed tests and signal measurements only of cells where at least
    ``min_contributors`` distinct devices measured (each kind counted on its own), so that
    nothing the analysis publishes stems from fewer (docs/privacy.md)."""
    period: dict[str, Any] = {"since": since, "until": until, "min_contributors": min_contributors}
    if part is not None:
        period["part"] = part
    devices = part is not None
    area, ranges = "true", rows is None
    if rows is not None:
        area = "cell_n >= %(n0)s and cell_n < %(n1)s"
        period.update(n0=int(rows[0]), n1=int(rows[1]))
        if columns is not None:
            area += " and cell_e >= %(e0)s and cell_e < %(e1)s"
            period.update(e0=int(columns[0]), e1=int(columns[1]))
    window = (
        f"({area}) and "
        "(%(since)s::timestamptz is null or measured_at >= %(since)s) and "
        "(%(until)s::timestamptz is null or measured_at <= %(until)s)"
    )
    pending: Future[tuple[list[str], dict[str, npt.NDArray[Any]]]] | None = None
    pool = ThreadPoolExecutor(max_workers=1) if conninfo else None
    if pool is not None and conninfo is not None:

        def other() -> tuple[list[str], dict[str, npt.NDArray[Any]]]:
            with psycopg.connect(conninfo) as second:
                return _read_signals(second, window, period, ranges, devices)

        pending = pool.submit(other)
    hh = read_table_columns(
        conn,
        "household",
        [("cell_e", "int4", "cell_e"), ("cell_n", "int4", "cell_n"),
         ("households", "int4", "households")],
        _in_slice(conn, "household", area, period),
        period,
        ranges=ranges,
    )  # fmt: skip
    offers = read_table_columns(
        conn,
        "broadband_offer",
        [("cell_e", "int4", "cell_e"), ("cell_n", "int4", "cell_n"),
         ("tech", "int2", "(array_position(%(tech)s::text[], technology) - 1)::int2"),
         ("down", "float4", "max_down_mbps"),
         ("up", "float4", "coalesce(max_up_mbps, 'NaN'::real)")],
        _in_slice(conn, "broadband_offer", area, period),
        {**period, "tech": list(FIXED_TECHNOLOGIES)},
        ranges=ranges,
    )  # fmt: skip
    tests = read_table_columns(
        conn,
        "speedtest",
        [("cell_e", "int4", "cell_e"), ("cell_n", "int4", "cell_n"),
         ("down", "float4", "download_mbps"), ("dev", "int4", "hashtext(device_key)")],
        _in_slice(conn, "speedtest", window, period),
        period,
        ranges=ranges,
    )  # fmt: skip
    _only_contributed(tests, min_contributors, devices)
    if pending is not None and pool is not None:
        ops, signals = pending.result()
        pool.shutdown()
    else:
        ops, signals = _read_signals(conn, window, period, ranges, devices)
    districts = geo_io.load_districts(conn, district_level) if district_level else None

    def frame(columns: dict[str, Any]) -> pd.DataFrame:
        return pd.DataFrame(columns, copy=False)

    release_free_memory()

    return CoverageInputs(
        households=frame(hh),
        offers=frame({
            "cell_e": offers["cell_e"], "cell_n": offers["cell_n"],
            "technology": pd.Categorical.from_codes(offers["tech"], FIXED_TECHNOLOGIES),
            "max_down_mbps": offers["down"], "max_up_mbps": offers["up"],
        }),
        speedtests=frame(
            {"cell_e": tests["cell_e"], "cell_n": tests["cell_n"], "download_mbps": tests["down"],
             **_device(tests)}
        ),
        signals=frame({
            "cell_e": signals["cell_e"], "cell_n": signals["cell_n"],
            "operator": pd.Categorical.from_codes(signals["op"], ops),
            "technology": pd.Categorical.from_codes(signals["tech"], MOBILE_TECHNOLOGIES),
            "signal_dbm": signals["level"], **_device(signals),
        }),
        districts=districts if districts is not None and len(districts) else None,
    )  # fmt: skip


def _device(columns: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    return {"device": columns["device"]} if "device" in columns else {}


def _in_slice(conn: Conn, table: str, where: str, period: dict[str, Any]) -> str:
    """``where``, and with ``period["part"]`` = (i, n) only the i-th of n equal ranges of the
    table's blocks (the last one open-ended: rows added meanwhile are read too)."""
    if "part" not in period:
        return where
    i, n = period["part"]
    with conn.cursor(row_factory=tuple_row) as cur:
        found = cur.execute(
            "select pg_relation_size(%s::regclass) / current_setting('block_size')::int", (table,)
        ).fetchone()
    blocks = int(found[0]) if found is not None else 0
    lo, hi = blocks * i // n, blocks * (i + 1) // n
    bounds = f"ctid >= '({lo},0)'::tid" + (f" and ctid < '({hi},0)'::tid" if i < n - 1 else "")
    return f"({where}) and {bounds}"


# --- writing ------------------------------------------------------------------------------------


def _text(name: str, values: Any) -> Column:
    codes, cats = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    return Column(name, "text", codes.astype(np.int64), categories=[str(c) for c in cats])


def _device_keys(values: Any, pseudonyms: Callable[[str], str] | None) -> Column:
    """The ``device_key`` column under pseudonyms (one HMAC per distinct key; docs/privacy.md):
    crowdsourced device keys are never stored raw."""
    if pseudonyms is None:
        raise ConfigError(
            "speed tests and signal measurements are stored only under a pseudonym: "
            "pass the pseudonymizer of the settings (quartier.pseudonym.pseudonymizer)"
        )
    codes, cats = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    return Column(
        "device_key", "text", codes.astype(np.int64), categories=[pseudonyms(str(c)) for c in cats]
    )


def _float_col(name: str, values: Any, kind: str = "float8") -> Column:
    return Column(name, kind, pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan))  # fmt: skip


def _time_col(name: str, values: Any) -> Column:
    """timestamptz as microseconds since 2000-01-01 UTC (the PostgreSQL epoch)."""
    ts = pd.to_datetime(pd.Series(values), utc=True)
    micros = (ts - pd.Timestamp("2000-01-01", tz="UTC")) // pd.Timedelta(microseconds=1)
    return Column(name, "int8", micros.to_numpy(dtype=np.int64))


_EPOCH_2000 = "'2000-01-01 00:00:00+00'::timestamptz"


def _write_points(
    conn: Conn,
    table: str,
    frame: pd.DataFrame,
    cols: list[Column],
    stage_types: dict[str, str],
) -> int:
    """Stage ``cols`` plus ``lon``/``lat`` with binary COPY, then insert into ``table`` with a
    WGS84 point ``geom`` (the cells are generated columns). Stage columns named ``*_at`` are
    microseconds since 2000 (timestamptz), ``valid_days`` days since 2000 (``valid_on``)."""
    stage = f"_stage_{table}"
    defs = ", ".join(f"{name} {kind}" for name, kind in {"lon": "float8", "lat": "float8",
                                                          **stage_types}.items())  # fmt: skip
    conn.execute(f"create temp table {stage} ({defs}) on commit drop")
    write_copy(conn, stage, [_float_col("lon", frame["lon"]), _float_col("lat", frame["lat"]),
                             *cols])  # fmt: skip
    targets, selects = [], []
    for name in stage_types:
        if name.endswith("_at"):
            targets.append(name)
            selects.append(f"{_EPOCH_2000} + make_interval(secs => {name} / 1e6)")
        elif name == "valid_days":
            targets.append("valid_on")
            selects.append("date '2000-01-01' + valid_days")
        else:
            targets.append(name)
            selects.append(name)
    conflict = " on conflict do nothing" if table in ("speedtest", "mobile_measurement") else ""
    with conn.cursor() as cur:
        cur.execute(
            f"insert into {table} ({', '.join(targets)}, geom)"
            f" select {', '.join(selects)}, ST_SetSRID(ST_MakePoint(lon, lat), 4326)"
            f" from {stage}{conflict}"
        )
        n = max(cur.rowcount, 0)
    conn.execute(f"drop table {stage}")
    return n


def write_households(conn: Conn, frame: pd.DataFrame, source: str) -> int:
    """Append address points (``lon``, ``lat``, ``households``, optional ``address_key``)."""
    keys = frame["address_key"] if "address_key" in frame.columns else [None] * len(frame)
    return _write_points(
        conn, "household", frame,
        [_text("source", [source] * len(frame)), _text("address_key", keys),
         Column("households", "int4", frame["households"].to_numpy(dtype=np.int64))],
        {"source": "text", "address_key": "text", "households": "int4"},
    )  # fmt: skip


def write_offers(conn: Conn, frame: pd.DataFrame, source: str) -> int:
    """Append fixed broadband offers (``lon``, ``lat``, ``technology``, ``max_down_mbps``,
    ``max_up_mbps``, optional ``operator``, ``valid_on``, ``address_key``)."""
    n = len(frame)

    def opt(col: str) -> Any:
        return frame[col] if col in frame.columns else [None] * n

    valid = pd.to_datetime(pd.Series(opt("valid_on")), errors="coerce")
    days = (valid - pd.Timestamp("2000-01-01")).dt.days
    return _write_points(
        conn, "broadband_offer", frame,
        [_text("source", [source] * n), _text("address_key", opt("address_key")),
         _text("technology", frame["technology"]),
         _float_col("max_down_mbps", frame["max_down_mbps"], "float4"),
         _float_col("max_up_mbps", opt("max_up_mbps"), "float4"),
         _text("operator", opt("operator")),
         Column("valid_days", "int4", days.fillna(0).to_numpy(dtype=np.int64),
                null=days.isna().to_numpy())],
        {"source": "text", "address_key": "text", "technology": "text", "max_down_mbps": "real",
         "max_up_mbps": "real", "operator": "text", "valid_days": "int4"},
    ) if n else 0  # fmt: skip


def write_speedtests(
    conn: Conn,
    frame: pd.DataFrame,
    source: str,
    pseudonyms: Callable[[str], str] | None = None,
) -> int:
    """Append speed tests (``measured_at``, ``device_key``, ``lon``, ``lat``, ``download_mbps``,
    optional ``upload_mbps``, ``latency_ms``, ``technology``, ``operator``), each device key
    stored as its pseudonym (``pseudonyms`` is required); duplicates of (source, device_key,
    measured_at) are skipped."""
    n = len(frame)

    def opt(col: str) -> Any:
        return frame[col] if col in frame.columns else [None] * n

    return _write_points(
        conn, "speedtest", frame,
        [_text("source", [source] * n), _device_keys(frame["device_key"], pseudonyms),
         _time_col("measured_at", frame["measured_at"]),
         _float_col("download_mbps", frame["download_mbps"], "float4"),
         _float_col("upload_mbps", opt("upload_mbps"), "float4"),
         _float_col("latency_ms", opt("latency_ms"), "float4"),
         _text("technology", opt("technology")), _text("operator", opt("operator"))],
        {"source": "text", "device_key": "text", "measured_at": "int8", "download_mbps": "real",
         "upload_mbps": "real", "latency_ms": "real", "technology": "text", "operator": "text"},
    ) if n else 0  # fmt: skip


def write_signals(
    conn: Conn,
    frame: pd.DataFrame,
    source: str,
    pseudonyms: Callable[[str], str] | None = None,
) -> int:
    """Append mobile signal measurements (``measured_at``, ``device_key``, ``lon``, ``lat``,
    ``technology``, ``operator``, ``rsrp_dbm``, ``rsrq_db``, ``rssi_dbm``), each device key
    stored as its pseudonym (``pseudonyms`` is required); duplicates of (source, device_key,
    measured_at) are skipped."""
    n = len(frame)

    def opt(col: str) -> Any:
        return frame[col] if col in frame.columns else [None] * n

    return _write_points(
        conn, "mobile_measurement", frame,
        [_text("source", [source] * n), _device_keys(frame["device_key"], pseudonyms),
         _time_col("measured_at", frame["measured_at"]),
         _text("technology", frame["technology"]), _text("operator", frame["operator"]),
         _float_col("rsrp_dbm", opt("rsrp_dbm"), "float4"),
         _float_col("rsrq_db", opt("rsrq_db"), "float4"),
         _float_col("rssi_dbm", opt("rssi_dbm"), "float4")],
        {"source": "text", "device_key": "text", "measured_at": "int8", "technology": "text",
         "operator": "text", "rsrp_dbm": "real", "rsrq_db": "real", "rssi_dbm": "real"},
    ) if n else 0  # fmt: skip


def write_inputs(
    conn: Conn,
    addresses: pd.DataFrame,
    offers: pd.DataFrame,
    speedtests: pd.DataFrame,
    signals: pd.DataFrame,
    source: str,
    pseudonyms: Callable[[str], str] | None = None,
) -> tuple[int, int, int, int]:
    """All four inputs of an analysis at once (e.g. a simulated world); the caller commits.
    ``pseudonyms``: see :func:`write_speedtests`."""
    return (
        write_households(conn, addresses, source),
        write_offers(conn, offers, source),
        write_speedtests(conn, speedtests, source, pseudonyms),
        write_signals(conn, signals, source, pseudonyms),
    )
