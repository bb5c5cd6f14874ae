"""``quartier sta-mqtt``: the SensorThings MQTT extension on the platform's broker.

- **Receive updates (A.8)**: listens for the commit notices of every writer
  (:mod:`quartier.sta_mqtt.notice`), reads what they stored and publishes it, as the REST API
  returns it (``@iot.selfLink`` and navigation links with ``api.base_url``), with QoS 1 to each
  topic someone subscribed to: ``v1.1/Observations``, ``v1.1/Datastreams(1)/Observations``,
  ``v1.1/FeaturesOfInterest(1)/Observations``, ``v1.1/MultiDatastreams(1)/Observations``, the
  entity sets (``v1.1/Things`` …) and their navigation collections (``v1.1/Things(1)/Datastreams``
  …) for new entities, ``v1.1/Things(1)`` and ``v1.1/Things(1)/name`` for changed ones, each with
  ``?$select=…``. New and changed entities are found by comparing each entity table's rows with
  the last look (a hash per row), after a write that may have touched them and every few seconds.
- **Privacy**: observations of a personal network's devices (``privacy.personal_networks``,
  docs/privacy.md) are never published.
- **Create (A.7)**: Observations that clients publish to ``v1.1/Observations`` (with a
  Datastream or MultiDatastream link), ``v1.1/Datastreams(<id>)/Observations`` or
  ``v1.1/MultiDatastreams(<id>)/Observations`` (an array result, one value per
  multiObservationDataType) are stored through the ingest writer like a REST POST (the
  automatic FeatureOfInterest included; first stored wins); invalid ones are kept as ingest
  rejects with their reason. Acknowledged after the commit, in a persistent session: what was
  not acknowledged comes again after a restart (docs/sensorthings.md, "Creates over MQTT
  delivered twice").

The process runs in its own interpreter so that shaping and publishing do not take the
ingester's CPU: the writers only send notices (docs/benchmarks.md, "SensorThings MQTT").
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from psycopg import sql
from psycopg.rows import dict_row

from quartier.config import Settings, parse_mqtt_url, redact_url
from quartier.errors import BadRequestError, BrokerUnreachableError, QuartierError
from quartier.ingest.model import Batch, Reject
from quartier.pseudonym import is_personal_network
from quartier.sta_mqtt import notice as nt
from quartier.sta_mqtt import topics as tp
from quartier.store.pgcopy import Int8Array, TimestamptzArray

log = logging.getLogger(__name__)

#: Entity sets whose new and changed entities are published, with their tables.
ENTITY_TABLES = {
    "Things": "thing",
    "Locations": "location",
    "HistoricalLocations": "historical_location",
    "Datastreams": "datastream",
    "MultiDatastreams": "multi_datastream",
    "Sensors": "sensor",
    "ObservedProperties": "observed_property",
    "FeaturesOfInterest": "feature_of_interest",
}
#: Observations read per query.
_CHUNK = 5000


class StaMqtt:
    """The publisher and creator of one process; :meth:`run` until :attr:`stop_event`."""

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str = "quartier-sta",
        entity_interval: float = 5.0,
    ) -> None:
        self.settings = settings
        self.mqtt_url = settings.sta.mqtt_url or settings.require_mqtt_url()
        self.db_url = settings.database.ingest_url or settings.require_database_url()
        base = settings.api.base_url or f"http://{settings.api.host}:{settings.api.port}"
        self.base = base.rstrip("/")
        # a broker with use_username_as_clientid (Quartier's) names the client by its account:
        # its own subscriptions in the broker's log carry that name
        self.client_id = parse_mqtt_url(self.mqtt_url)[2] or client_id
        self.entity_interval = entity_interval
        self.subs = tp.Subscriptions(ignore=self.client_id)
        self.stop_event = threading.Event()
        #: set once connected, subscribed and listening (tests wait for it)
        self.ready = threading.Event()
        self.published = 0
        self.dropped = 0
        self.created = 0
        self.rejected = 0
        #: creates the broker delivered again (DUP: not acknowledged before a restart)
        self.redelivered = 0
        self._inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._creates: list[mqtt.MQTTMessage] = []
        self._streams: dict[tuple[str, str, str], int] = {}
        self._public: dict[int, tuple[bool, float]] = {}
        self._personal_net: dict[str, bool] = {}
        self._hashes: dict[str, dict[int, str]] | None = None
        self._bodies: dict[tuple[str, int], dict[str, Any]] = {}
        self._entities_due = 0.0
        self._subscribed = threading.Event()
        self._client: mqtt.Client | None = None
        self._writer: Any = None

    # ------------------------------------------------------------------ MQTT
    def _connect(self) -> mqtt.Client:
        from quartier.ingest.mqtt_client import tls_context

        host, port, user, password, tls = parse_mqtt_url(self.mqtt_url)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.enable_logger(logging.getLogger("paho"))
        if user is not None:
            client.username_pw_set(user, password)
        if tls:
            client.tls_set_context(tls_context(self.settings.mqtt.ca_file))
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(200_000)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *a: self._subscribed.set()
        client.on_message = lambda c, u, msg: self._inbox.put(msg)
        # a persistent session, as the ingester's: creates published while this process is
        # down, or received but not yet acknowledged when it stopped, are delivered again
        # (with DUP) when it comes back; a create that names its phenomenonTime is then stored
        # once (first stored wins on (Datastream, phenomenonTime), docs/sensorthings.md)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.ingest.session_expiry_seconds
        try:
            client.connect(
                host,
                port,
                keepalive=self.settings.mqtt.keepalive,
                clean_start=False,
                properties=props,
            )
        except OSError as exc:
            raise BrokerUnreachableError(
                f"cannot reach the MQTT broker at {host}:{port} ({exc.strerror or exc}): start "
                "the local servers with `quartier services up`, or check QUARTIER_STA__MQTT_URL"
                " / QUARTIER_MQTT__URL",
                f"{host}:{port}",
            ) from None
        client.loop_start()
        return client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error(
                "the broker refused the SensorThings MQTT account (%s) at %s",
                reason,
                redact_url(self.mqtt_url),
            )
            return
        # the broker's log first, so that no subscription made from now on is missed; creates
        # without our own publications (no_local), QoS 1, acknowledged after the commit
        client.subscribe(
            [
                (tp.LOG_NOTICE, SubscribeOptions(qos=0)),
                (tp.LOG_SUBSCRIBE, SubscribeOptions(qos=0)),
                (tp.LOG_UNSUBSCRIBE, SubscribeOptions(qos=0)),
                *((f, SubscribeOptions(qos=1, noLocal=True)) for f in tp.CREATE_FILTERS),
            ]
        )

    def _publish(self, topic: str, body: dict[str, Any]) -> None:
        assert self._client is not None
        info = self._client.publish(topic, orjson.dumps(body), qos=1)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self.published += 1
        else:
            self.dropped += 1

    def _publish_to(self, topics: Iterable[str], body: dict[str, Any]) -> None:
        """``body`` on each of ``topics`` someone subscribed to, and on their ``$select``
        topics projected."""
        for topic in topics:
            full, selects = self.subs.wanted(topic)
            if full:
                self._publish(topic, body)
            for sel_topic, fields in selects:
                self._publish(sel_topic, tp.select(body, fields))

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        from quartier.ingest.writer import BatchWriter

        self._client = self._connect()
        listen = psycopg.connect(self.db_url, autocommit=True, application_name="quartier-sta")
        read = psycopg.connect(
            self.db_url, autocommit=True, row_factory=dict_row, application_name="quartier-sta"
        )
        self._writer = BatchWriter(
            self.db_url,
            auto_register=False,
            reject_payload_max_bytes=self.settings.ingest.reject_payload_max_bytes,
            personal_networks=self.settings.privacy.personal_networks,
        )
        try:
            listen.execute(sql.SQL("listen {}").format(sql.Identifier(nt.CHANNEL)))
            if not self._subscribed.wait(10):
                raise BrokerUnreachableError(
                    "the broker did not confirm the SensorThings MQTT subscriptions within 10 s",
                    redact_url(self.mqtt_url),
                )
            self._scan_entities(read)
            self.ready.set()
            log.info("SensorThings MQTT: publishing to %s", redact_url(self.mqtt_url))
            while not self.stop_event.is_set():
                self._step(listen, read)
        finally:
            self._writer.close()
            listen.close()
            read.close()
            self._client.disconnect()
            self._client.loop_stop()

    def _step(self, listen: psycopg.Connection[Any], read: psycopg.Connection[Any]) -> None:
        self._drain_inbox()
        notices: list[nt.Notice] = []
        for n in listen.notifies(timeout=0.05, stop_after=200):
            try:
                notices.append(nt.decode(n.payload))
            except Exception:
                log.warning("SensorThings MQTT: a commit notice could not be read")
        self._drain_inbox()  # subscriptions made before the notices were sent
        if self._creates:
            self._store_creates()
        if any(n.entities for n in notices):
            self._entities_due = min(self._entities_due, time.monotonic())
        if time.monotonic() >= self._entities_due:
            self._scan_entities(read)
            self._entities_due = time.monotonic() + self.entity_interval
        if notices:
            self._observations(read, notices)

    def _drain_inbox(self) -> None:
        while True:
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                return
            if msg.topic.startswith("$SYS/"):
                tp.apply_log(self.subs, msg.topic, bytes(msg.payload))
            else:
                self._creates.append(msg)

    # ------------------------------------------------------------------ observations
    def _personal(self, network: str) -> bool:
        hit = self._personal_net.get(network)
        if hit is None:
            hit = is_personal_network(network, self.settings.privacy.personal_networks)
            self._personal_net[network] = hit
        return hit

    def _resolve(self, read: psycopg.Connection[Any], keys: Iterable[tuple[str, str, str]]) -> None:
        missing = [k for k in keys if k not in self._streams]
        if not missing:
            return
        devices = sorted({(k[0], k[1]) for k in missing})
        rows = read.execute(
            "select d.network, d.device_key, dd.quantity, dd.datastream_id from device d"
            " join unnest(%s::text[], %s::text[]) as k(n, d) on d.network = k.n"
            " and d.device_key = k.d join device_datastream dd on dd.device_id = d.id",
            ([n for n, _ in devices], [d for _, d in devices]),
        ).fetchall()
        for r in rows:
            self._streams[(r["network"], r["device_key"], r["quantity"])] = int(r["datastream_id"])

    def _public_streams(self, read: psycopg.Connection[Any], ids: set[int]) -> set[int]:
        """Which of these Datastreams (a MultiDatastream as -id) are fed by no device of a
        personal network (known for a minute)."""
        now = time.monotonic()
        ask = [i for i in ids if (hit := self._public.get(i)) is None or hit[1] < now]
        if ask:
            multi = read.execute("select to_regclass('multi_datastream') is not null as has")
            has_multi = bool((multi.fetchone() or {}).get("has"))
            owner = "coalesce(d.thing_id, m.thing_id)" if has_multi else "d.thing_id"
            join_multi = " left join multi_datastream m on m.id = -x.id" if has_multi else ""
            rows = read.execute(
                "select x.id, array_remove(array_agg(dev.network), null) as networks"
                " from unnest(%s::int8[]) as x(id)"
                " left join datastream d on d.id = x.id" + join_multi + " left join device dev"
                " on dev.thing_id = " + owner + " group by x.id",
                (ask,),
            ).fetchall()
            for r in rows:
                public = not any(self._personal(str(n)) for n in r["networks"])
                self._public[int(r["id"])] = (public, now + 60)
        return {i for i in ids if self._public.get(i, (False, 0.0))[0]}

    def _observations(self, read: psycopg.Connection[Any], notices: list[nt.Notice]) -> None:
        v = tp.VERSION
        any_foi = self.subs.wants_prefix(f"{v}/FeaturesOfInterest(")

        def wanted(ds: int) -> bool:
            return any_foi or self.subs.any_wanted(tp.observation_topics(ds, None))

        if not (any_foi or self.subs.wants_prefix(f"{v}/")):
            return  # no one listens: nothing read
        keys: list[tuple[int, int]] = []
        readings: dict[tuple[str, str, str], list[int]] = {}
        for n in notices:
            keys += n.observations
            for key, times in n.readings.items():
                if not self._personal(key[0]):
                    readings.setdefault(key, []).extend(times)
        self._resolve(read, readings)
        for key, times in readings.items():
            ds = self._streams.get(key)
            if ds is not None:
                keys += [(ds, t) for t in times]
        streams = {ds for ds, _ in keys}
        public = self._public_streams(read, streams)
        keep = {ds for ds in public if wanted(ds)}
        keys = [k for k in keys if k[0] in keep]
        from quartier.api.sensorthings import shape
        from quartier.store.sensorthings import observations_at

        for start in range(0, len(keys), _CHUNK):
            part = keys[start : start + _CHUNK]
            ds_col = np.fromiter((k[0] for k in part), np.int64, len(part))
            t_col = np.fromiter((k[1] for k in part), np.int64, len(part))
            rows = observations_at(read, Int8Array(ds_col), TimestamptzArray(t_col))
            for row in rows:
                body = shape("Observations", row, self.base).model_dump(mode="json", by_alias=True)
                self._publish_to(tp.observation_topics(row["datastream_id"], row["foi_id"]), body)

    # ------------------------------------------------------------------ entities
    def _scan_entities(self, read: psycopg.Connection[Any]) -> None:
        """Publish the entities created or changed since the last look (the first look only
        remembers them)."""
        from quartier.api.sensorthings import shape
        from quartier.store import sensorthings as q

        first = self._hashes is None
        hashes: dict[str, dict[int, str]] = {}
        for entity_set, table in ENTITY_TABLES.items():
            exists = read.execute("select to_regclass(%s) is not null as has", (table,))
            if not (exists.fetchone() or {}).get("has"):
                continue
            rows = read.execute(
                sql.SQL("select id, md5(t::text) as h from {} t").format(sql.Identifier(table))
            ).fetchall()
            now = {int(r["id"]): str(r["h"]) for r in rows}
            hashes[entity_set] = now
            before = {} if self._hashes is None else self._hashes.get(entity_set, {})
            new = [i for i in now if i not in before]
            changed = [i for i in now if i in before and before[i] != now[i]]
            for gone in set(before) - set(now):
                self._bodies.pop((entity_set, gone), None)
            todo = new + changed
            if not todo:
                continue
            found = q.by_ids(read, entity_set, todo, q.Listing(top=len(todo)))
            created = set(new)
            for i, row in found.items():
                body = shape(entity_set, row, self.base).model_dump(mode="json", by_alias=True)
                old = self._bodies.get((entity_set, i))
                self._bodies[(entity_set, i)] = body
                if first:
                    continue
                if i in created:
                    things: list[int] = []
                    if entity_set == "Locations":
                        things = [
                            int(r["thing_id"])
                            for r in read.execute(
                                "select thing_id from thing_location where location_id = %s",
                                (i,),
                            ).fetchall()
                        ]
                    self._publish_to(tp.created_topics(entity_set, row, things), body)
                    continue
                props = tp.changed_properties(old, body) if old is not None else []
                if old is not None and not props:
                    continue  # only a derived time moved
                own = f"{tp.VERSION}/{entity_set}({i})"
                self._publish_to([own], body)
                for p in props:
                    self._publish_to([f"{own}/{p}"], {p: body[p]})
        self._hashes = hashes

    # ------------------------------------------------------------------ creates (A.7)
    def _store_creates(self) -> None:
        from psycopg.rows import dict_row as rows

        from quartier.api.sta import body as b
        from quartier.store import sta_write as w

        msgs = self._creates
        batch = Batch(source="mqtt")
        now = datetime.now(UTC)
        valid: list[tuple[mqtt.MQTTMessage, Any, int]] = []

        def refuse(msg: mqtt.MQTTMessage, reason: str, detail: str) -> None:
            batch.rejects.append(Reject(msg.topic, bytes(msg.payload), reason, detail, now, "mqtt"))

        for msg in msgs:
            ds, problem = tp.create_target(msg.topic)
            if problem is not None:
                refuse(msg, "invalid_topic", problem)
                continue
            try:
                raw = orjson.loads(msg.payload)
            except orjson.JSONDecodeError as exc:
                refuse(msg, "invalid_json", f"not JSON: {exc}")
                continue
            try:
                new = b.observation(raw, now, self.settings.ingest.max_future_seconds)
            except BadRequestError as exc:
                refuse(msg, "invalid_format", str(exc))
                continue
            ds, problem = tp.create_owner(ds, new.datastream_id, new.multi_datastream_id)
            if problem is not None or ds is None:
                refuse(msg, "invalid_format", problem or "no Datastream")
                continue
            valid.append((msg, new, ds))

        def prepare(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor(row_factory=rows) as cur:
                for msg, new, ds in valid:
                    try:
                        with conn.transaction():  # a savepoint: one bad message costs itself
                            if ds < 0:  # of MultiDatastream -ds: an array, one value per type
                                types = w.multi_datastream_types(cur, -ds)
                                if types is None:
                                    refuse(
                                        msg,
                                        "unknown_datastream",
                                        f"no MultiDatastream with @iot.id {-ds}",
                                    )
                                    continue
                                b.multi_result(new.result, types, f"MultiDatastream {-ds}")
                            elif not w.exists(cur, "Datastreams", ds):
                                refuse(
                                    msg, "unknown_datastream", f"no Datastream with @iot.id {ds}"
                                )
                                continue
                            foi = w.observation_feature(cur, ds, new.feature_id, new.feature_values)
                            batch.observations.append(new.stored(ds, foi))
                    except (QuartierError, psycopg.DataError, psycopg.IntegrityError) as exc:
                        refuse(msg, "invalid_format", str(exc).strip())

        try:
            result = self._writer.write(batch, prepare)
        except psycopg.OperationalError as exc:
            log.warning("SensorThings MQTT: creates not stored yet (%s); retrying", exc)
            time.sleep(1)
            return
        self._creates = []
        self.created += result.observations
        self.rejected += result.rejects
        assert self._client is not None
        for msg in msgs:
            self.redelivered += msg.dup
            if msg.qos > 0:
                self._client.ack(msg.mid, msg.qos)
