"""Personal data in the store (DSGVO; docs/privacy.md): retention of raw crowdsourced rows, and
what answers access (Art. 15) and erasure (Art. 17) requests for one device.

A device is named by its pseudonym (``p{key_id}-…``, as stored) and, when the requester gave it,
its raw key: rows stored before pseudonymisation, refused messages (kept raw for replay, their
topic names the device) and registered Things (``device.device_key``) are found by the raw key.
Every function takes an open connection and leaves the transaction to the caller.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from quartier.store.db import Conn
from quartier.store.migrate import storage_path

log = logging.getLogger(__name__)

#: crowdsourced raw tables: (table, time column)
RAW_TABLES = (("speedtest", "measured_at"), ("mobile_measurement", "measured_at"))
#: topics of refused messages that hold crowdsourced raw data (LIKE patterns)
RAW_REJECT_TOPICS = ("quartier/v1/%/speedtest",)
#: the plain-PostgreSQL rollup tables (on TimescaleDB continuous aggregates, refreshed instead)
_ROLLUP_TABLES = (
    "observation_15m", "observation_1h", "observation_1d", "observation_dirty",
    "observation_1h_packed", "observation_1d_packed",  # migration 0045
)  # fmt: skip


def expire_personal(
    conn: Conn, retention: timedelta, *, now: datetime | None = None
) -> dict[str, int]:
    """Delete raw speed tests and signal measurements measured before ``now - retention``, and
    refused messages of their topics received before then; returns rows deleted per table."""
    cutoff = (now or datetime.now(UTC)) - retention
    deleted: dict[str, int] = {}
    for table, column in RAW_TABLES:
        cur = conn.execute(
            sql.SQL("delete from {} where {} < %s").format(
                sql.Identifier(table), sql.Identifier(column)
            ),
            (cutoff,),
        )
        deleted[table] = max(cur.rowcount, 0)
    cur = conn.execute(
        "delete from ingest_reject where received_at < %s and topic like any(%s)",
        (cutoff, list(RAW_REJECT_TOPICS)),
    )
    deleted["ingest_reject"] = max(cur.rowcount, 0)
    if any(deleted.values()):
        log.info("privacy retention: deleted %s (older than %s)", deleted, cutoff.isoformat())
    return deleted


def _keys(pseudonym: str, raw: str | None) -> list[str]:
    return [pseudonym] if raw is None else [pseudonym, raw]


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _reject_topics(raw: str) -> list[str]:
    """LIKE patterns of the topics that name device ``raw``: native and The Things Stack."""
    key = _like_literal(raw)
    return [f"quartier/v1/%/{key}/%", f"v3/%/devices/{key}/%"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    return value


def _rows(conn: Conn, query: str, params: Any) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [{k: _jsonable(v) for k, v in row.items()} for row in cur.execute(query, params)]


def _things(conn: Conn, raw: str | None) -> list[int]:
    if raw is None:
        return []
    rows = conn.execute("select thing_id from device where device_key = %s", (raw,)).fetchall()
    return [int(r[0]) for r in rows]


def export_device(conn: Conn, pseudonym: str, raw: str | None = None) -> dict[str, Any]:
    """Everything stored for the device: speed tests, signal measurements, refused messages,
    and its Things with their Locations, Datastreams and Observations (JSON-ready)."""
    keys = _keys(pseudonym, raw)
    out: dict[str, Any] = {
        "device": {"pseudonym": pseudonym, **({"key": raw} if raw is not None else {})},
        "exported_at": datetime.now(UTC).isoformat(),
        "speedtests": _rows(
            conn,
            "select id, measured_at, source, device_key, ST_Y(geom) as lat, ST_X(geom) as lon,"
            " download_mbps, upload_mbps, latency_ms, technology, operator, received_at"
            " from speedtest where device_key = any(%s) order by measured_at, id",
            (keys,),
        ),
        "signal_measurements": _rows(
            conn,
            "select id, measured_at, source, device_key, ST_Y(geom) as lat, ST_X(geom) as lon,"
            " technology, operator, rsrp_dbm, rsrq_db, rssi_dbm, received_at"
            " from mobile_measurement where device_key = any(%s) order by measured_at, id",
            (keys,),
        ),
        "rejects": [],
        "things": [],
    }
    if raw is not None:
        out["rejects"] = _rows(
            conn,
            "select id, received_at, source, topic, payload, payload_truncated, reason, detail,"
            " replayed_at from ingest_reject where topic like any(%s) order by id",
            (_reject_topics(raw),),
        )
    for thing_id in _things(conn, raw):
        thing = _rows(
            conn,
            "select t.id, t.name, t.description, t.properties, d.network, d.device_key,"
            " d.created_at from thing t join device d on d.thing_id = t.id where t.id = %s",
            (thing_id,),
        )[0]
        thing["locations"] = _rows(
            conn,
            "select l.id, l.name, ST_AsGeoJSON(l.location)::jsonb as location"
            " from location l join thing_location tl on tl.location_id = l.id"
            " where tl.thing_id = %s",
            (thing_id,),
        )
        thing["historical_locations"] = _rows(
            conn,
            "select h.id, h.time, ST_AsGeoJSON(l.location)::jsonb as location"
            " from historical_location h"
            " left join historical_location_location hl on hl.historical_location_id = h.id"
            " left join location l on l.id = hl.location_id where h.thing_id = %s order by h.time",
            (thing_id,),
        )
        streams = _rows(
            conn,
            "select id, name, unit_of_measurement from datastream where thing_id = %s order by id",
            (thing_id,),
        )
        for ds in streams:
            ds["observations"] = _rows(
                conn,
                "select phenomenon_time, result, parameters from observation"
                " where datastream_id = %s order by phenomenon_time",
                (ds["id"],),
            )
        thing["datastreams"] = streams
        out["things"].append(thing)
    return out


def erase_device(
    conn: Conn, pseudonym: str, raw: str | None = None, *, reference: str | None = None
) -> dict[str, int]:
    """Delete everything :func:`export_device` finds, and record the erasure (counts per table
    and the operator's ``reference``, no personal data) in ``privacy_erasure``."""
    keys = _keys(pseudonym, raw)
    deleted: dict[str, int] = {}
    for table, _ in RAW_TABLES:
        cur = conn.execute(
            sql.SQL("delete from {} where device_key = any(%s)").format(sql.Identifier(table)),
            (keys,),
        )
        deleted[table] = max(cur.rowcount, 0)
    deleted["ingest_reject"] = 0
    if raw is not None:
        cur = conn.execute(
            "delete from ingest_reject where topic like any(%s)", (_reject_topics(raw),)
        )
        deleted["ingest_reject"] = max(cur.rowcount, 0)
    things = _things(conn, raw)
    deleted["thing"] = len(things)
    deleted["observation"] = 0
    if things:
        # the observation ids of the Things' Datastreams, and of their MultiDatastreams (stored
        # under minus their id): the rows, latest values and rollups of both go
        streams = [
            int(r[0])
            for r in conn.execute(
                "select id from datastream where thing_id = any(%(t)s)"
                " union all select -id from multi_datastream where thing_id = any(%(t)s)",
                {"t": things},
            ).fetchall()
        ]
        cur = conn.execute("delete from observation where datastream_id = any(%s)", (streams,))
        deleted["observation"] = max(cur.rowcount, 0)
        conn.execute("delete from observation_latest where datastream_id = any(%s)", (streams,))
        if storage_path(conn) == "postgres":
            for table in _ROLLUP_TABLES:
                conn.execute(
                    sql.SQL("delete from {} where datastream_id = any(%s)").format(
                        sql.Identifier(table)
                    ),
                    (streams,),
                )
        sensors = [
            int(r[0])
            for r in conn.execute(
                "select distinct sensor_id from datastream where thing_id = any(%s)", (things,)
            ).fetchall()
        ]
        locations = [
            int(r[0])
            for r in conn.execute(
                "select location_id from thing_location where thing_id = any(%(t)s) union "
                "select hl.location_id from historical_location_location hl"
                " join historical_location h on h.id = hl.historical_location_id"
                " where h.thing_id = any(%(t)s)",
                {"t": things},
            ).fetchall()
        ]
        # device, datastreams, links and historical locations go with the thing (cascade)
        conn.execute("delete from thing where id = any(%s)", (things,))
        conn.execute("delete from location where id = any(%s)", (locations,))
        conn.execute(
            "delete from sensor s where s.id = any(%s)"
            " and not exists (select 1 from datastream d where d.sensor_id = s.id)",
            (sensors,),
        )
    conn.execute(
        "insert into privacy_erasure (reference, deleted) values (%s, %s::jsonb)",
        (reference, _json(deleted)),
    )
    log.info("privacy erasure (%s): %s", reference or "no reference", deleted)
    return deleted


def _json(value: dict[str, int]) -> str:
    return json.dumps(value, sort_keys=True)
