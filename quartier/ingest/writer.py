"""The store side of ingest: resolve devices to Datastreams (registering unknown ones when allowed),
then write a whole batch (observations, speed tests, rejects) in one transaction.

Observations and speed tests go through ``COPY`` (binary) into a temporary staging table and from
there into the real table with ``ON CONFLICT DO NOTHING``: a redelivered reading is stored once and
the first value stored for a (datastream, time) wins.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from quartier.config import IngestSettings, PrivacySettings
from quartier.errors import ConfigError, UnknownDevice
from quartier.ingest.model import Batch, Observation, Reject, SpeedTest, Uplink, WriteResult
from quartier.ingest.quantities import QUANTITIES
from quartier.store.db import Conn
from quartier.store.migrate import storage_path
from quartier.store.pgcopy import (
    PG_EPOCH_US,
    Column,
    Float8Array,
    Int8Array,
    TimestamptzArray,
    write_copy,
)
from quartier.store.registry import Registry, Wanted
from quartier.store.timeseries import ORIGIN, ROLLUPS

log = logging.getLogger(__name__)


_PARTITION_LOCK = 0x5155_4950  # "QUIP": one writer creates partitions at a time

ObsRow = tuple[int, datetime, float, Jsonb | None]


#: the store's bucket grid: the finest rollup's buckets, from the store's origin
_BUCKET_ORIGIN_S = int(ORIGIN.timestamp())
_BUCKET_S = int(min(ROLLUPS).total_seconds())
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def _observations_written(conn: Conn, ds: I64, t_us: I64, value: F64) -> None:
    """Tell the store which 15-minute buckets changed and the newest value per datastream (one
    statement per batch; the rollups and observation_latest stay current from it). Both are
    computed here with numpy from the rows just written."""
    secs = t_us // 1_000_000
    bucket = (secs - _BUCKET_ORIGIN_S) // _BUCKET_S  # index of the bucket since the origin
    key = np.unique((ds << 24) | (bucket + (1 << 23)))  # buckets from 1990 to 2100 fit 24 bits
    dirty_ds = key >> 24
    dirty_start = ((key & ((1 << 24) - 1)) - (1 << 23)) * _BUCKET_S + _BUCKET_ORIGIN_S
    order = np.lexsort((t_us, ds))
    ds_sorted = ds[order]
    last = order[np.append(ds_sorted[1:] != ds_sorted[:-1], True)]  # newest row per datastream
    conn.execute(
        "select quartier_observations_written(%s, %s, %s, %s, %s)",
        (
            Int8Array(dirty_ds),
            TimestamptzArray(dirty_start * 1_000_000),
            Int8Array(ds[last]),
            TimestamptzArray(t_us[last]),
            Float8Array(value[last]),
        ),
    )


def _wanted(batch: Batch) -> Iterator[Wanted]:
    """What each message of ``batch`` needs of the registry (``Registry.prepare``)."""
    for uplink, *_ in batch.uplinks:
        if uplink.readings:
            yield (
                uplink.network,
                uplink.device,
                uplink.location,
                uplink.location_from_gateway,
                {r.quantity for r in uplink.readings},
            )
    seen: set[tuple[str, str, str]] = set()
    for m in batch.columns.messages:
        q = m.quantity
        if m.location is None and type(q) is str:
            # the common message: each device and quantity once (prepare keeps the first)
            key = (m.network, m.device, q)
            if key in seen:
                continue
            seen.add(key)
        yield m.network, m.device, m.location, False, (q,) if type(q) is str else q


def _first_per_key(ds: I64, t_us: I64) -> npt.NDArray[np.bool_] | None:
    """Which readings to write when a batch holds the same (datastream, time) more than once:
    the first of each (the rule of the store, "first stored wins", applied inside the batch, so
    that ``observation`` and ``observation_latest`` keep the same value); None when all differ."""
    order = np.lexsort((t_us, ds))  # stable: equal keys stay in batch order
    same = (ds[order][1:] == ds[order][:-1]) & (t_us[order][1:] == t_us[order][:-1])
    if not same.any():
        return None
    keep = np.ones(len(ds), dtype=np.bool_)
    keep[order[1:][same]] = False
    return keep


def _finish_replay(conn: Conn, ids: list[int], rejects: list[Reject]) -> None:
    """Close the replay of the reject rows ``ids`` (one message): marked replayed only when the
    message was stored without a new refusal; otherwise the row stays open with today's reason
    (a new row for the same bytes would be dropped by the once-only index, migration 0020)."""
    if not rejects:
        conn.execute("update ingest_reject set replayed_at = now() where id = any(%s)", (ids,))
        return
    reasons = sorted({r.reason for r in rejects})
    conn.execute(
        "update ingest_reject set reason = %s, detail = %s where id = any(%s)",
        (
            reasons[0] if len(reasons) == 1 else "invalid_readings",
            "; ".join(r.detail for r in rejects).replace("\x00", "\\0"),
            ids,
        ),
    )


def describe_invalid(u: Uplink) -> tuple[str, str]:
    """One reason (and a detail naming each refused reading) for an uplink's invalid readings."""
    total = len(u.readings) + len(u.invalid)
    reasons = {reason for _, reason, _ in u.invalid}
    reason = reasons.pop() if len(reasons) == 1 else "invalid_readings"
    parts = [f"#{i} {r}: {d}" for i, r, d in u.invalid[:20]]
    more = f"; … {len(u.invalid) - 20} more" if len(u.invalid) > 20 else ""
    return reason, f"{len(u.invalid)} of {total} readings refused: " + "; ".join(parts) + more


def _insert_observations(
    conn: Conn, table: str, rows: list[ObsRow], columns: tuple[I64, I64, F64]
) -> None:
    """What ``BatchWriter._copy`` does by COPY, by INSERT: for servers without COPY FROM STDIN."""
    ds, t_us, value = columns
    target = sql.Identifier(table)
    if len(ds):
        conn.execute(
            sql.SQL(
                "insert into {} (datastream_id, phenomenon_time, result) "
                "select d, t, nullif(r, 'NaN') from unnest(%s::int8[], %s::timestamptz[], "
                "%s::float8[]) as x(d, t, r)"
            ).format(target),
            (Int8Array(ds), TimestamptzArray(t_us), Float8Array(value)),
        )
    if rows:
        conn.execute(
            sql.SQL(
                "insert into {} (datastream_id, phenomenon_time, result, parameters) "
                "select * from unnest(%s::int8[], %s::timestamptz[], %s::float8[], %s::jsonb[])"
            ).format(target),
            [list(col) for col in zip(*rows, strict=True)],
        )


_REJECT_PAYLOAD_MAX: int = IngestSettings.model_fields["reject_payload_max_bytes"].default
#: A refused message's topic is kept up to this many characters: with the payload hash it must
#: fit a btree entry of the once-only index (2,704 bytes; 4 bytes a character at most). No topic
#: the ingester accepts is near it; a longer one (MQTT allows 65,535 bytes) would fail every
#: insert and stall the ingester (tests/test_hostile_mqtt.py).
REJECT_TOPIC_MAX = 512


def reject_topic(topic: str) -> str:
    """The topic as ``ingest_reject`` keeps it (NUL escaped, at most ``REJECT_TOPIC_MAX``)."""
    topic = topic.replace("\x00", "\\0")
    if len(topic) <= REJECT_TOPIC_MAX:
        return topic
    more = f"…[{len(topic)} characters]"
    return topic[: REJECT_TOPIC_MAX - len(more)] + more


class BatchWriter:
    """Writes batches on one connection it owns. Not thread-safe: one writer per thread."""

    #: Called after each commit of any writer of this process with the writer, the batch and its
    #: result; it must only hand them on (SensorThings over MQTT: quartier.sta_mqtt.notify
    #: installs it when ``sta.mqtt_publish`` is on). None: nothing is called.
    after_commit: ClassVar[Callable[[BatchWriter, Batch, WriteResult], None] | None] = None

    def __init__(
        self,
        url: str,
        *,
        auto_register: bool,
        optimistic: bool = True,
        copy: bool | None = None,
        reject_payload_max_bytes: int = _REJECT_PAYLOAD_MAX,
        pseudonyms: Callable[[str], str] | None = None,
        personal_networks: Sequence[str] | None = None,
    ) -> None:
        self.url = url
        #: device key → pseudonym (quartier.pseudonym), applied to speed tests before they are
        #: stored; a batch with speed tests and no pseudonyms is refused (ConfigError)
        self.pseudonyms = pseudonyms
        #: a refused payload above this is kept as its first this many bytes
        #: (``ingest.reject_payload_max_bytes``)
        self.reject_payload_max_bytes = reject_payload_max_bytes
        self.registry = Registry(
            auto_register,
            QUANTITIES,
            personal_networks=(
                PrivacySettings().personal_networks
                if personal_networks is None
                else personal_networks
            ),
        )
        self._conn: Conn | None = None
        self._months: set[tuple[int, int]] = set()
        #: COPY straight into observation first (see _store_observations)
        self._optimistic = optimistic
        self.fallbacks = 0
        #: True: COPY FROM STDIN; False: multi-row INSERTs of array parameters (same rows stored);
        #: None: COPY unless the server cannot take it (PGlite, by version(); see _session)
        self._copy_option = copy
        #: (connection, use COPY, has TimescaleDB), asked once per connection by _session
        self._probed: tuple[Conn, bool, bool] | None = None
        #: timescaledb.max_tuples_decompressed_per_dml_transaction for each batch on TimescaleDB
        #: (0: no limit). TimescaleDB's default, 100000, fails a late write into compressed chunks
        #: once its conflict check has decompressed that many rows in one transaction, e.g. when
        #: an archive import backfills compressed weeks.
        self.decompress_limit = 0
        #: between ``begin`` and ``end``: ``write`` neither commits nor rolls back
        self._held = False
        #: the writes of the held transaction, for ``after_commit`` once ``end`` has committed
        self._held_writes: list[tuple[Batch, WriteResult]] = []

    def _connection(self) -> Conn:
        if self._held and (self._conn is None or self._conn.closed):
            raise psycopg.OperationalError("the connection of the held transaction was lost")
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, application_name="quartier-ingest")
            row = self._conn.execute("select version()").fetchone()
            if row is not None and "emscripten" in str(row[0]).lower():
                # PGlite: one server session shared by every connection, so prepared statements
                # named per connection by psycopg (_pg3_N) would collide with another's
                self._conn.prepare_threshold = None
            self._conn.execute(
                "create temp table if not exists _obs_stage (datastream_id bigint, "
                "phenomenon_time timestamptz, result double precision, parameters jsonb, "
                "result_json jsonb, result_time timestamptz, foi_id bigint) "
                "on commit delete rows"
            )
            self._conn.execute(
                "create temp table if not exists _st_stage (measured_at timestamptz, source text,"
                " device_key text, geom geometry, download_mbps real, upload_mbps real,"
                " latency_ms real, technology text, operator text) on commit delete rows"
            )
            self.registry.clear()
            self.registry.preload(self._conn)
            self._conn.commit()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def begin(self) -> Conn:
        """Hold one transaction over the ``write`` calls until ``end`` (SensorThings ``$batch``
        change sets: several requests, all stored or none): ``write`` then neither commits nor
        rolls back, and an error it raises leaves the rollback to ``end``. The connection, for
        reads that must see the transaction's writes."""
        conn = self._connection()
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            # open the transaction now: a ``conn.transaction()`` block (the COPY's savepoint) on
            # an idle connection would otherwise be the outer transaction and commit on its own
            conn.execute("select 1")
        self._held = True
        return conn

    def end(self, commit: bool) -> None:
        """Commit (``commit``) or roll back the held transaction of ``begin``; a failed commit
        raises ``psycopg.Error`` with everything rolled back."""
        self._held = False
        conn = self._conn
        if conn is None or conn.closed:
            if commit:
                raise psycopg.OperationalError("the connection of the held transaction was lost")
            return
        committed = False
        try:
            if commit:
                conn.commit()
                committed = True
                for batch, result in self._held_writes:  # after_commit, held since begin()
                    if BatchWriter.after_commit is not None:
                        BatchWriter.after_commit(self, batch, result)
        finally:
            self._held_writes.clear()
            if not committed:
                if not conn.closed:
                    conn.rollback()
                self._months.clear()  # partitions made in the transaction are gone with it
                self.registry.clear()

    def write(
        self,
        batch: Batch,
        prepare: Callable[[Conn], None] | None = None,
        all_or_nothing: bool = False,
    ) -> WriteResult:
        """Store everything in ``batch`` in one transaction; raises ``psycopg.Error`` (nothing
        stored) when the database fails, so the caller can retry without acknowledging.

        ``prepare`` runs first in the same transaction (SensorThings: the entities a deep insert
        creates, an automatic FeatureOfInterest) and may add to ``batch.observations``; what it
        raises rolls everything back. ``all_or_nothing``: when an observation of
        ``batch.observations`` is not stored (its key exists), nothing is (the result says
        which, with ``observations`` 0)."""
        conn = self._connection()
        try:
            if prepare is not None:
                prepare(conn)
            result = self._write(conn, batch)
            if self._held:  # end() commits or rolls back
                if all_or_nothing and result.not_stored:
                    result.observations = 0
                if BatchWriter.after_commit is not None:
                    self._held_writes.append((batch, result))
                return result
            if all_or_nothing and result.not_stored:
                conn.rollback()
                self._months.clear()  # partitions made in this transaction are gone with it
                self.registry.clear()
                result.observations = 0
                return result
            conn.commit()
        except BaseException:
            if self._held:  # end() rolls back
                raise
            self.registry.clear()  # registrations of this transaction were rolled back
            if not conn.closed:
                conn.rollback()
            raise
        if BatchWriter.after_commit is not None:
            BatchWriter.after_commit(self, batch, result)
        return result

    def _write(self, conn: Conn, batch: Batch) -> WriteResult:
        res = WriteResult()
        rejects = list(batch.rejects)
        self.registry.prepare(conn, _wanted(batch))
        rows, row_ds, row_us, row_v = self._rows(conn, batch, rejects)
        col_ds, col_us, col_v = self._columns(conn, batch, rejects)
        direct = batch.observations
        if rows or len(col_ds) or direct:
            n = len(direct)
            d_ds = np.fromiter((o.datastream_id for o in direct), np.int64, n)
            d_us = np.fromiter(((o.time - _EPOCH) // _US for o in direct), np.int64, n)
            d_v = np.fromiter(
                (np.nan if o.result is None else o.result for o in direct), np.float64, n
            )
            ds = np.concatenate([np.asarray(row_ds, dtype=np.int64), col_ds, d_ds])
            t_us = np.concatenate([np.asarray(row_us, dtype=np.int64), col_us, d_us])
            value = np.concatenate([np.asarray(row_v, dtype=np.float64), col_v, d_v])
            n_readings = len(ds)
            kept = list(range(n))  # indexes of the direct observations to write
            keep = _first_per_key(ds, t_us)
            if keep is not None:  # the same (datastream, time) twice in this batch
                n_rows, n_cols = len(rows), len(col_ds)
                rows = [row for row, k in zip(rows, keep[:n_rows], strict=True) if k]
                col_keep = keep[n_rows : n_rows + n_cols]
                col_ds, col_us, col_v = col_ds[col_keep], col_us[col_keep], col_v[col_keep]
                kept = [i for i, k in enumerate(keep[n_rows + n_cols :].tolist()) if k]
                ds, t_us, value = ds[keep], t_us[keep], value[keep]
            self._ensure_partitions(conn, t_us)
            res.observations, new = self._store_observations(
                conn, rows, (col_ds, col_us, col_v), [direct[i] for i in kept]
            )
            if direct:
                stored = {
                    i
                    for i in kept
                    if new is None or (direct[i].datastream_id, direct[i].time) in new
                }
                res.not_stored = [i for i in range(n) if i not in stored]
            _observations_written(conn, ds, t_us, value)
            res.duplicates = n_readings - res.observations
        if batch.speedtests:
            res.speedtests = self._write_speedtests(conn, batch.speedtests)
        for rej in rejects:
            res.reasons[rej.reason] = res.reasons.get(rej.reason, 0) + 1
        res.rejects = len(rejects)
        if batch.replayed:
            _finish_replay(conn, batch.replayed, rejects)
        elif rejects:
            self._write_rejects(conn, rejects)
        return res

    def _rows(
        self, conn: Conn, batch: Batch, rejects: list[Reject]
    ) -> tuple[list[ObsRow], list[int], list[int], list[float]]:
        """Rows of the uplinks decoded one by one (they may carry parameters)."""
        rows: list[ObsRow] = []
        row_ds: list[int] = []
        row_us: list[int] = []
        row_v: list[float] = []
        for uplink, topic, payload, received_at in batch.uplinks:
            if not uplink.readings:  # nothing to store: keep the message, register nothing
                if uplink.invalid:
                    reason, detail = describe_invalid(uplink)
                    rejects.append(
                        Reject(topic, payload, reason, detail, received_at, batch.source)
                    )
                continue
            try:
                dev = self.registry.device_id(
                    conn,
                    uplink.network,
                    uplink.device,
                    uplink.location,
                    from_gateway=uplink.location_from_gateway,
                )
            except UnknownDevice as exc:
                rejects.append(
                    Reject(topic, payload, "unknown_device", str(exc), received_at, batch.source)
                )
                continue
            streams: dict[str, int] = {}
            for r in uplink.readings:
                ds = streams.get(r.quantity)
                if ds is None:
                    ds = streams[r.quantity] = self.registry.datastream_id(conn, dev, r.quantity)
                t = r.time
                rows.append((ds, t, r.value, None if r.parameters is None else Jsonb(r.parameters)))
                row_ds.append(ds)
                row_us.append((t - _EPOCH) // _US)
                row_v.append(r.value)
            if uplink.invalid:
                reason, detail = describe_invalid(uplink)
                rejects.append(Reject(topic, payload, reason, detail, received_at, batch.source))
        return rows, row_ds, row_us, row_v

    def _columns(self, conn: Conn, batch: Batch, rejects: list[Reject]) -> tuple[I64, I64, F64]:
        """Datastream, time (µs since 1970) and value of the fast-path readings."""
        cols = batch.columns
        if not cols.messages:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)
        if len(cols.time_us) != sum(m.n for m in cols.messages):
            raise ValueError("batch columns were not validated (Columns.validate)")
        per_msg = [0] * len(cols.messages)
        counts = [m.n for m in cols.messages]
        mixed: list[tuple[int, list[int]]] = []
        registry = self.registry
        #: datastream of (network, device, quantity) for messages without a location, whose
        #: lookup changes nothing (a location may move the device: those are looked up each)
        known: dict[tuple[str, str, str], int] = {}
        for i, m in enumerate(cols.messages):
            q = m.quantity
            if m.location is None and type(q) is str:
                ds_id = known.get((m.network, m.device, q))
                if ds_id is not None:
                    per_msg[i] = ds_id
                    continue
            try:
                dev = registry.device_id(conn, m.network, m.device, m.location)
            except UnknownDevice as exc:
                rejects.append(
                    Reject(
                        m.topic, m.payload, "unknown_device", str(exc), m.received_at, batch.source
                    )
                )
                per_msg[i] = -1
                continue
            if type(q) is str:
                per_msg[i] = ds_id = registry.datastream_id(conn, dev, q)
                if m.location is None:
                    known[(m.network, m.device, q)] = ds_id
            else:
                streams = {q: registry.datastream_id(conn, dev, q) for q in set(m.quantity)}
                per_msg[i] = 0
                mixed.append((m.start, [streams[q] for q in m.quantity]))
        ds = np.repeat(np.array(per_msg, dtype=np.int64), counts)
        for start, ids in mixed:
            ds[start : start + len(ids)] = ids
        if min(per_msg) < 0:
            keep = ds >= 0
            return ds[keep], cols.time_us[keep], cols.value[keep]
        return ds, cols.time_us, cols.value

    def _store_observations(
        self,
        conn: Conn,
        rows: list[ObsRow],
        columns: tuple[I64, I64, F64],
        direct: Sequence[Observation] = (),
    ) -> tuple[int, set[tuple[int, datetime]] | None]:
        """Store rows, columns and observations addressed by datastream id, skipping any
        (datastream, time) already stored; returns the rows added and, when some were skipped
        and ``direct`` is not empty, the keys of those added (None: all were added).

        Optimistic: COPY straight into ``observation`` inside a savepoint, which is as fast as
        PostgreSQL loads data. Only when that hits a duplicate (a redelivery) does the batch
        take the slower path through a staging table and ``ON CONFLICT DO NOTHING``.
        """
        total = len(rows) + len(columns[0]) + len(direct)
        if self._optimistic:
            try:
                with conn.transaction():
                    self._copy(conn, "observation", rows, columns)
                    self._copy_direct(conn, "observation", direct)
                return total, None
            except psycopg.errors.UniqueViolation:
                self.fallbacks += 1
        self._copy(conn, "_obs_stage", rows, columns)
        self._copy_direct(conn, "_obs_stage", direct)
        cur = conn.execute(
            "insert into observation (datastream_id, phenomenon_time, result, parameters, "
            "result_json, result_time, foi_id) "
            "select datastream_id, phenomenon_time, result, parameters, result_json, "
            "result_time, foi_id from _obs_stage on conflict do nothing"
            + (" returning datastream_id, phenomenon_time" if direct else "")
        )
        if not direct:
            return max(cur.rowcount, 0), None
        new = {(int(r[0]), r[1]) for r in cur.fetchall()}
        return len(new), new

    def _copy_direct(self, conn: Conn, table: str, direct: Sequence[Observation]) -> None:
        """Append observations addressed by datastream id to ``table`` with all their columns
        (binary COPY, or one INSERT of array parameters where COPY cannot run)."""
        if not direct:
            return
        cols = (
            "datastream_id, phenomenon_time, result, result_json, result_time, parameters, foi_id"
        )
        data = [
            (
                o.datastream_id,
                o.time,
                o.result,
                None if o.result_json is None else Jsonb(o.result_json),
                o.result_time,
                None if o.parameters is None else Jsonb(o.parameters),
                o.foi_id,
            )
            for o in direct
        ]
        target = sql.Identifier(table)
        if not self._session(conn)[0]:
            conn.execute(
                sql.SQL(
                    "insert into {} (" + cols + ") select * from unnest(%s::int8[], "
                    "%s::timestamptz[], %s::float8[], %s::jsonb[], %s::timestamptz[], "
                    "%s::jsonb[], %s::int8[])"
                ).format(target),
                [list(c) for c in zip(*data, strict=True)],
            )
            return
        with conn.cursor().copy(
            sql.SQL("copy {} (" + cols + ") from stdin (format binary)").format(target)
        ) as copy:
            copy.set_types(
                ["int8", "timestamptz", "float8", "jsonb", "timestamptz", "jsonb", "int8"]
            )
            for row in data:
                copy.write_row(row)

    def _session(self, conn: Conn) -> tuple[bool, bool]:
        """(use COPY, server has TimescaleDB) for ``conn``: asked once per connection."""
        if self._probed is None or self._probed[0] is not conn:
            row = conn.execute("select version()").fetchone()
            assert row is not None
            use_copy = self._copy_option
            if use_copy is None:  # PGlite (PostgreSQL in WebAssembly) dies on COPY FROM STDIN
                use_copy = "emscripten" not in str(row[0]).lower()
            self._probed = (conn, use_copy, storage_path(conn) == "timescaledb")
        return self._probed[1], self._probed[2]

    def _copy(
        self, conn: Conn, table: str, rows: list[ObsRow], columns: tuple[I64, I64, F64]
    ) -> None:
        """Append ``columns`` and ``rows`` to ``table`` (``observation`` or ``_obs_stage``) with
        binary COPY, or, where COPY cannot run, with one INSERT of array parameters for each:
        the same rows either way (NaN in ``columns`` is stored as NULL, in ``rows`` as NaN), and
        a duplicate key fails both the same way."""
        use_copy, timescale = self._session(conn)
        if timescale:  # for this transaction (a savepoint rolled back takes it along)
            conn.execute(
                "select set_config('timescaledb.max_tuples_decompressed_per_dml_transaction', "
                "%s, true)",
                (str(self.decompress_limit),),
            )
        if not use_copy:
            _insert_observations(conn, table, rows, columns)
            return
        ds, t_us, value = columns
        if len(ds):  # numbers only: one binary buffer built by numpy
            write_copy(
                conn,
                table,
                [
                    Column("datastream_id", "int8", ds),
                    Column("phenomenon_time", "int8", t_us - PG_EPOCH_US),
                    Column("result", "float8", value),
                ],
            )
        if not rows:
            return
        with conn.cursor().copy(
            sql.SQL(
                "copy {} (datastream_id, phenomenon_time, result, parameters) "
                "from stdin (format binary)"
            ).format(sql.Identifier(table))
        ) as copy:
            copy.set_types(["int8", "timestamptz", "float8", "jsonb"])
            for row in rows:
                copy.write_row(row)

    def _ensure_partitions(self, conn: Conn, t_us: I64) -> None:
        """Monthly partitions for the months of these times (µs since 1970)."""
        months = np.unique(t_us.astype("datetime64[us]").astype("datetime64[M]"))
        locked = False
        for m in months.tolist():
            key = (m.year, m.month)
            if key in self._months:
                continue
            if not locked:  # other writers may be creating the same partition
                conn.execute("select pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
                locked = True
            start = datetime(m.year, m.month, 1, tzinfo=UTC)
            end = datetime(m.year + (m.month == 12), m.month % 12 + 1, 1, tzinfo=UTC)
            conn.execute("select quartier_ensure_observation_partitions(%s, %s)", (start, end))
            self._months.add(key)

    def _write_speedtests(self, conn: Conn, tests: list[SpeedTest]) -> int:
        """Speed tests, each under its device's pseudonym (never the raw key)."""
        pseudonym = self.pseudonyms
        if pseudonym is None:
            raise ConfigError(
                "speed tests are stored only under a pseudonym: the writer needs a pseudonym "
                "secret (QUARTIER_PRIVACY__PSEUDONYM_SECRET, docs/privacy.md)"
            )
        rows = [
            (
                t.time,
                t.source,
                pseudonym(t.device),
                f"SRID=4326;POINT({t.position.lon} {t.position.lat})",
                t.download_mbps,
                t.upload_mbps,
                t.latency_ms,
                t.technology,
                t.operator,
            )
            for t in tests
        ]
        if self._session(conn)[0]:
            with conn.cursor().copy(
                "copy _st_stage (measured_at, source, device_key, geom, download_mbps,"
                " upload_mbps, latency_ms, technology, operator) from stdin"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
        else:  # no COPY on this server: the same rows in one INSERT (numbers and geometry
            # sent as the same text COPY sends, so that they are parsed the same way)
            cols = [list(col) for col in zip(*rows, strict=True)]
            for i in (4, 5, 6):
                cols[i] = [None if v is None else str(v) for v in cols[i]]
            conn.execute(
                "insert into _st_stage (measured_at, source, device_key, geom, download_mbps,"
                " upload_mbps, latency_ms, technology, operator) "
                "select m, s, d, g::geometry, dl::real, ul::real, lat::real, tech, op from unnest("
                "%s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
                " %s::text[], %s::text[], %s::text[]) as x(m, s, d, g, dl, ul, lat, tech, op)",
                cols,
            )
        cur = conn.execute(
            "insert into speedtest (measured_at, source, device_key, geom, download_mbps,"
            " upload_mbps, latency_ms, technology, operator) "
            "select measured_at, source, device_key, geom, download_mbps, upload_mbps,"
            " latency_ms, technology, operator from _st_stage on conflict do nothing"
        )
        return max(cur.rowcount, 0)

    def _write_rejects(self, conn: Conn, rejects: list[Reject]) -> int:
        """Keep refused messages; the same bytes on the same topic (a redelivery) once. A payload
        above :attr:`reject_payload_max_bytes` is kept as its beginning (``payload_truncated``);
        ``payload_sha256`` and ``payload_bytes`` are of the whole payload (migration 0031)."""
        cap = self.reject_payload_max_bytes
        with conn.cursor() as cur:
            cur.executemany(
                "insert into ingest_reject (received_at, source, topic, payload, payload_sha256,"
                " payload_bytes, payload_truncated, reason, detail)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " on conflict (topic, payload_sha256) where replayed_at is null do nothing",
                [
                    (
                        r.received_at,
                        r.source,
                        reject_topic(r.topic),
                        r.payload[:cap],
                        hashlib.sha256(r.payload).digest(),
                        len(r.payload),
                        len(r.payload) > cap,
                        r.reason,
                        r.detail.replace("\x00", "\\0"),
                    )
                    for r in rejects
                ],
            )
        return len(rejects)
