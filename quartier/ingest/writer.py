"""The store side of ingest: resolve devices to Datastreams (registering unknown ones when allowed),
then write a whole batch (observations, speed tests, rejects) in one transaction.

Observations and speed tests go through ``COPY`` (binary) into a temporary staging table and from
there into the real table with ``ON CONFLICT DO NOTHING``: a redelivered reading is stored once and
the first value stored for a (datastream, time) wins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from quartier.ingest.model import Position, SpeedTest, Uplink
from quartier.ingest.quantities import QUANTITIES

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class Reject:
    topic: str
    payload: bytes
    reason: str
    detail: str
    received_at: datetime
    source: str = "mqtt"


@dataclass
class Batch:
    uplinks: list[tuple[Uplink, str, bytes, datetime]] = field(default_factory=list)
    speedtests: list[SpeedTest] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    #: where the messages came from, recorded with rejects: mqtt, http, import
    source: str = "mqtt"
    #: ids of ingest_reject rows whose replay this batch completes (marked in the same transaction)
    replayed: list[int] = field(default_factory=list)


@dataclass
class WriteResult:
    observations: int = 0  # rows newly stored
    duplicates: int = 0  # rows already there
    speedtests: int = 0
    rejects: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # rejects by reason


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


ObsRow = tuple[int, datetime, float, Jsonb | None]


#: origin of the 15-minute buckets of the rollups (date_bin origin in quartier.store)
_BUCKET_ORIGIN = datetime(2000, 1, 3, tzinfo=UTC).timestamp()
_BUCKET_S = 900


def _observations_written(
    conn: Conn, buckets: set[tuple[int, float]], latest: dict[int, tuple[datetime, float]]
) -> None:
    """Tell the store which 15-minute buckets changed and the newest value per datastream (one
    statement per batch; the rollups and observation_latest stay current from it)."""
    dirty = sorted(buckets)
    conn.execute(
        "select quartier_observations_written(%s::bigint[], %s::timestamptz[], %s::bigint[],"
        " %s::timestamptz[], %s::float8[])",
        (
            [d for d, _ in dirty],
            [datetime.fromtimestamp(b, tz=UTC) for _, b in dirty],
            list(latest),
            [t for t, _ in latest.values()],
            [v for _, v in latest.values()],
        ),
    )


class UnknownDevice(Exception):
    pass


class Registry:
    """Device → Thing/Datastream lookups, cached; registers unknown devices when allowed."""

    def __init__(self, auto_register: bool) -> None:
        self.auto_register = auto_register
        self._devices: dict[tuple[str, str], int] = {}
        self._streams: dict[tuple[int, str], int] = {}

    def clear(self) -> None:
        self._devices.clear()
        self._streams.clear()

    def preload(self, conn: Conn) -> None:
        """Load every known device and datastream in two queries (instead of one round trip per
        device on first contact)."""
        for dev_id, network, key in conn.execute("select id, network, device_key from device"):
            self._devices[(str(network), str(key))] = _int(dev_id)
        for dev_id, quantity, ds_id in conn.execute(
            "select device_id, quantity, datastream_id from device_datastream"
        ):
            self._streams[(_int(dev_id), str(quantity))] = _int(ds_id)

    def device_id(self, conn: Conn, network: str, device: str, location: Position | None) -> int:
        key = (network, device)
        found = self._devices.get(key)
        if found is not None:
            return found
        row = conn.execute(
            "select id from device where network = %s and device_key = %s", key
        ).fetchone()
        if row is None:
            if not self.auto_register:
                raise UnknownDevice(f"device {device!r} on network {network!r} is not registered")
            row = (self._register(conn, network, device, location),)
        self._devices[key] = _int(row[0])
        return self._devices[key]

    def datastream_id(self, conn: Conn, device_id: int, quantity: str) -> int:
        key = (device_id, quantity)
        found = self._streams.get(key)
        if found is not None:
            return found
        row = conn.execute(
            "select datastream_id from device_datastream where device_id = %s and quantity = %s",
            key,
        ).fetchone()
        if row is None:
            row = (self._create_datastream(conn, device_id, quantity),)
        self._streams[key] = _int(row[0])
        return self._streams[key]

    @staticmethod
    def _register(conn: Conn, network: str, device: str, location: Position | None) -> int:
        # Serialise concurrent registrations of the same device (several ingest workers).
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"{network}/{device}",))
        row = conn.execute(
            "select id from device where network = %s and device_key = %s", (network, device)
        ).fetchone()
        if row is not None:
            return _int(row[0])
        name = f"{network}/{device}"
        thing = conn.execute(
            "insert into thing (name, description, properties) values (%s, %s, %s) returning id",
            (name, f"Device {device} on network {network}", Jsonb({"network": network})),
        ).fetchone()
        assert thing is not None
        if location is not None:
            loc = conn.execute(
                "insert into location (name, description, location) values "
                "(%s, %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326)) returning id",
                (name, f"Position of {name}", location.lon, location.lat),
            ).fetchone()
            assert loc is not None
            conn.execute("insert into thing_location values (%s, %s)", (thing[0], loc[0]))
            hist = conn.execute(
                "insert into historical_location (thing_id, time) values (%s, now()) returning id",
                (thing[0],),
            ).fetchone()
            assert hist is not None
            conn.execute(
                "insert into historical_location_location values (%s, %s)", (hist[0], loc[0])
            )
        dev = conn.execute(
            "insert into device (network, device_key, thing_id, auto_registered) "
            "values (%s, %s, %s, true) returning id",
            (network, device, thing[0]),
        ).fetchone()
        assert dev is not None
        log.info("registered device %s (thing %s)", name, thing[0])
        return _int(dev[0])

    @staticmethod
    def _create_datastream(conn: Conn, device_id: int, quantity: str) -> int:
        q = QUANTITIES[quantity]
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"ds/{device_id}/{quantity}",))
        row = conn.execute(
            "select datastream_id from device_datastream where device_id = %s and quantity = %s",
            (device_id, quantity),
        ).fetchone()
        if row is not None:
            return _int(row[0])
        dev = conn.execute(
            "select d.thing_id, t.name from device d join thing t on t.id = d.thing_id "
            "where d.id = %s",
            (device_id,),
        ).fetchone()
        assert dev is not None
        thing_id, thing_name = dev
        op = conn.execute(
            "insert into observed_property (name, definition, description, properties) "
            "values (%s, %s, %s, %s) on conflict (definition) do update set name = excluded.name "
            "returning id",
            (q.name, q.definition, q.name, Jsonb({"key": q.key, "name_de": q.name_de})),
        ).fetchone()
        sensor = conn.execute(
            "insert into sensor (name, description, properties) values (%s, %s, %s) returning id",
            (f"{thing_name} {q.key}", f"Sensor measuring {q.name}", Jsonb({"quantity": q.key})),
        ).fetchone()
        assert op is not None and sensor is not None
        ds = conn.execute(
            "insert into datastream (name, description, unit_of_measurement, thing_id, sensor_id,"
            " observed_property_id, observed_area, properties) "
            "select %s, %s, %s, %s, %s, %s, "
            " (select l.location from thing_location tl join location l on l.id = tl.location_id"
            "  where tl.thing_id = %s limit 1), %s returning id",
            (
                f"{thing_name} {q.name}",
                f"{q.name} measured by {thing_name}",
                Jsonb(
                    {"name": q.unit_name, "symbol": q.unit_symbol, "definition": q.unit_definition}
                ),
                thing_id,
                sensor[0],
                op[0],
                thing_id,
                Jsonb({"quantity": q.key}),
            ),
        ).fetchone()
        assert ds is not None
        conn.execute(
            "insert into device_datastream values (%s, %s, %s)", (device_id, quantity, ds[0])
        )
        return _int(ds[0])


def _describe_invalid(u: Uplink, total: int) -> tuple[str, str]:
    reasons = {reason for _, reason, _ in u.invalid}
    reason = reasons.pop() if len(reasons) == 1 else "invalid_readings"
    parts = [f"#{i} {r}: {d}" for i, r, d in u.invalid[:20]]
    more = f"; … {len(u.invalid) - 20} more" if len(u.invalid) > 20 else ""
    return reason, f"{len(u.invalid)} of {total} readings refused: " + "; ".join(parts) + more


class BatchWriter:
    """Writes batches on one connection it owns. Not thread-safe: one writer per thread."""

    def __init__(self, url: str, *, auto_register: bool, optimistic: bool = True) -> None:
        self.url = url
        self.registry = Registry(auto_register)
        self._conn: Conn | None = None
        self._months: set[tuple[int, int]] = set()
        #: COPY straight into observation first (see _store_observations)
        self._optimistic = optimistic
        self.fallbacks = 0

    def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, application_name="quartier-ingest")
            self._conn.execute(
                "create temp table if not exists _obs_stage (datastream_id bigint, "
                "phenomenon_time timestamptz, result double precision, parameters jsonb) "
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

    def write(self, batch: Batch) -> WriteResult:
        """Store everything in ``batch`` in one transaction; raises ``psycopg.Error`` (nothing
        stored) when the database fails, so the caller can retry without acknowledging."""
        conn = self._connection()
        try:
            result = self._write(conn, batch)
            conn.commit()
        except BaseException:
            self.registry.clear()  # registrations of this transaction were rolled back
            if not conn.closed:
                conn.rollback()
            raise
        return result

    def _write(self, conn: Conn, batch: Batch) -> WriteResult:
        res = WriteResult()
        rows: list[ObsRow] = []
        buckets: set[tuple[int, float]] = set()  # 15-minute rollup buckets touched
        latest: dict[int, tuple[datetime, float]] = {}  # newest value per datastream
        rejects = list(batch.rejects)
        for uplink, topic, payload, received_at in batch.uplinks:
            total = len(uplink.readings) + len(uplink.invalid)
            if not uplink.readings:  # nothing to store: keep the message, register nothing
                if uplink.invalid:
                    reason, detail = _describe_invalid(uplink, total)
                    rejects.append(
                        Reject(topic, payload, reason, detail, received_at, batch.source)
                    )
                continue
            try:
                dev = self.registry.device_id(conn, uplink.network, uplink.device, uplink.location)
            except UnknownDevice as exc:
                rejects.append(
                    Reject(topic, payload, "unknown_device", str(exc), received_at, batch.source)
                )
                continue
            streams: dict[str, int] = {}
            for r in uplink.readings:  # the hot loop: one pass builds rows and rollup marks
                ds = streams.get(r.quantity)
                if ds is None:
                    ds = streams[r.quantity] = self.registry.datastream_id(conn, dev, r.quantity)
                t = r.time
                rows.append((ds, t, r.value, None if r.parameters is None else Jsonb(r.parameters)))
                ts = t.timestamp()
                buckets.add((ds, ts - (ts - _BUCKET_ORIGIN) % _BUCKET_S))
                cur = latest.get(ds)
                if cur is None or t > cur[0]:
                    latest[ds] = (t, r.value)
            if uplink.invalid:
                reason, detail = _describe_invalid(uplink, total)
                rejects.append(Reject(topic, payload, reason, detail, received_at, batch.source))
        if rows:
            self._ensure_partitions(conn, {b for _, b in buckets})
            res.observations = self._store_observations(conn, rows)
            _observations_written(conn, buckets, latest)
            res.duplicates = len(rows) - res.observations
        if batch.speedtests:
            res.speedtests = self._write_speedtests(conn, batch.speedtests)
        if rejects:
            self._write_rejects(conn, rejects)
            res.rejects = len(rejects)
            for rej in rejects:
                res.reasons[rej.reason] = res.reasons.get(rej.reason, 0) + 1
        if batch.replayed:
            conn.execute(
                "update ingest_reject set replayed_at = now() where id = any(%s)", (batch.replayed,)
            )
        return res

    def _store_observations(self, conn: Conn, rows: list[ObsRow]) -> int:
        """Store rows, skipping any (datastream, time) already stored; returns rows added.

        Optimistic: COPY straight into ``observation`` inside a savepoint, which is as fast as
        PostgreSQL loads data. Only when that hits a duplicate (a redelivery) does the batch
        take the slower path through a staging table and ``ON CONFLICT DO NOTHING``.
        """
        if self._optimistic:
            try:
                with conn.transaction():
                    self._copy(conn, "observation", rows)
                return len(rows)
            except psycopg.errors.UniqueViolation:
                self.fallbacks += 1
        self._copy(conn, "_obs_stage", rows)
        cur = conn.execute(
            "insert into observation (datastream_id, phenomenon_time, result, parameters) "
            "select datastream_id, phenomenon_time, result, parameters from _obs_stage "
            "on conflict do nothing"
        )
        return max(cur.rowcount, 0)

    @staticmethod
    def _copy(conn: Conn, table: str, rows: list[ObsRow]) -> None:
        with conn.cursor().copy(
            sql.SQL(
                "copy {} (datastream_id, phenomenon_time, result, parameters) "
                "from stdin (format binary)"
            ).format(sql.Identifier(table))
        ) as copy:
            copy.set_types(["int8", "timestamptz", "float8", "jsonb"])
            for row in rows:
                copy.write_row(row)

    def _ensure_partitions(self, conn: Conn, bucket_starts: set[float]) -> None:
        """Monthly partitions for the months of these bucket starts (seconds since 1970)."""
        months = {
            (t.year, t.month) for t in (datetime.fromtimestamp(b, tz=UTC) for b in bucket_starts)
        } - self._months
        for y, m in sorted(months):
            start = datetime(y, m, 1, tzinfo=UTC)
            end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
            conn.execute("select quartier_ensure_observation_partitions(%s, %s)", (start, end))
            self._months.add((y, m))

    @staticmethod
    def _write_speedtests(conn: Conn, tests: list[SpeedTest]) -> int:
        with conn.cursor().copy(
            "copy _st_stage (measured_at, source, device_key, geom, download_mbps, upload_mbps,"
            " latency_ms, technology, operator) from stdin"
        ) as copy:
            for t in tests:
                copy.write_row(
                    (
                        t.time,
                        t.source,
                        t.device,
                        f"SRID=4326;POINT({t.position.lon} {t.position.lat})",
                        t.download_mbps,
                        t.upload_mbps,
                        t.latency_ms,
                        t.technology,
                        t.operator,
                    )
                )
        cur = conn.execute(
            "insert into speedtest (measured_at, source, device_key, geom, download_mbps,"
            " upload_mbps, latency_ms, technology, operator) "
            "select measured_at, source, device_key, geom, download_mbps, upload_mbps,"
            " latency_ms, technology, operator from _st_stage on conflict do nothing"
        )
        return max(cur.rowcount, 0)

    @staticmethod
    def _write_rejects(conn: Conn, rejects: list[Reject]) -> int:
        """Keep refused messages; the same bytes on the same topic (a redelivery) once."""
        with conn.cursor() as cur:
            cur.executemany(
                "insert into ingest_reject (received_at, source, topic, payload, reason, detail)"
                " values (%s, %s, %s, %s, %s, %s)"
                " on conflict (topic, payload_sha256) where replayed_at is null do nothing",
                [
                    (
                        r.received_at,
                        r.source,
                        r.topic,
                        r.payload,
                        r.reason,
                        r.detail.replace("\x00", "\\0"),
                    )
                    for r in rejects
                ],
            )
        return len(rejects)
