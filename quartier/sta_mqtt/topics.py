"""SensorThings MQTT topics (OGC 18-088 v1.1, A.7 and A.8), pure: which topics a new or changed
entity goes to, ``$select`` topics and their projection, the subscriptions the broker reports,
and the topics clients create Observations on.

Topics are the resource paths of the REST API without the host: ``v1.1/Observations``,
``v1.1/Datastreams(1)/Observations``, ``v1.1/Things(1)`` (the entity, on update),
``v1.1/Things(1)/name`` (a property, on change), ``v1.1/Things(1)/Datastreams`` (a new entity in
the navigation), each optionally followed by ``?$select=a,b``. Mosquitto does not tell a client
who subscribed to what, so the publisher learns the subscriptions from the broker's log topics
(``$SYS/broker/log/M/subscribe`` …, ``log_dest topic``) and publishes a ``$select`` variant only
to the topics someone subscribed to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from paho.mqtt.client import topic_matches_sub

VERSION = "v1.1"
#: The topic filters of the broker's log that the publisher reads (Mosquitto ``log_dest topic``,
#: ``log_type subscribe``, ``log_type unsubscribe``; connections and disconnections are notices).
LOG_SUBSCRIBE = "$SYS/broker/log/M/subscribe"
LOG_UNSUBSCRIBE = "$SYS/broker/log/M/unsubscribe"
LOG_NOTICE = "$SYS/broker/log/N"
#: The topic filters Observations are created on (A.7): ``v1.1/Observations`` with a Datastream
#: link in the body, or ``v1.1/Datastreams(<id>)/Observations``.
CREATE_FILTERS = (f"{VERSION}/Observations", f"{VERSION}/+/Observations")

_ENTITY = re.compile(r"^([A-Za-z]+)\((-?\d+)\)$")
_SELECT = "?$select="
#: The REST body's name of a selected property, where it differs from the property's.
_SELECT_NAMES = {"id": "@iot.id", "selfLink": "@iot.selfLink"}
#: body keys that say nothing about the entity itself (the Datastream's phenomenonTime and
#: resultTime come from its observations; a change there is no update of the Datastream)
DERIVED = frozenset({"phenomenonTime", "resultTime"})


def split_select(topic: str) -> tuple[str, tuple[str, ...] | None]:
    """A topic's path and its ``$select`` properties (None without ``$select``)."""
    path, sep, rest = topic.partition(_SELECT)
    if not sep:
        return topic, None
    fields = tuple(f.strip() for f in rest.split(",") if f.strip())
    return path, fields


def select(body: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """The body with only the ``$select``-ed properties, named as the REST API names them with
    ``$select`` (``id`` → ``@iot.id``, a navigation property → its ``@iot.navigationLink``)."""
    out: dict[str, Any] = {}
    for name in fields:
        key = _SELECT_NAMES.get(name, name)
        if key in body:
            out[key] = body[key]
        elif f"{name}@iot.navigationLink" in body:
            out[f"{name}@iot.navigationLink"] = body[f"{name}@iot.navigationLink"]
    return out


def observation_topics(datastream_id: int, foi_id: int | None) -> list[str]:
    """The collection topics a new Observation goes to (a MultiDatastream's observations are
    stored under datastream id ``-<its id>``)."""
    topics = [f"{VERSION}/Observations"]
    if datastream_id < 0:
        topics.append(f"{VERSION}/MultiDatastreams({-datastream_id})/Observations")
    else:
        topics.append(f"{VERSION}/Datastreams({datastream_id})/Observations")
    if foi_id is not None:
        topics.append(f"{VERSION}/FeaturesOfInterest({foi_id})/Observations")
    return topics


#: For a new entity of a set: its navigation collections, as (parent set, row column with the
#: parent's id, the navigation's name).
NAVIGATIONS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "Datastreams": (
        ("Things", "thing_id", "Datastreams"),
        ("Sensors", "sensor_id", "Datastreams"),
        ("ObservedProperties", "observed_property_id", "Datastreams"),
    ),
    "MultiDatastreams": (
        ("Things", "thing_id", "MultiDatastreams"),
        ("Sensors", "sensor_id", "MultiDatastreams"),
    ),
    "HistoricalLocations": (("Things", "thing_id", "HistoricalLocations"),),
}


def created_topics(
    entity_set: str, row: Mapping[str, Any], things: Iterable[int] = ()
) -> list[str]:
    """The topics a new entity goes to: its collection, its own topic, and the navigation
    collections it appears in (``things``: the Things a new Location belongs to)."""
    topics = [f"{VERSION}/{entity_set}", f"{VERSION}/{entity_set}({row['id']})"]
    for parent, column, nav in NAVIGATIONS.get(entity_set, ()):
        if row.get(column) is not None:
            topics.append(f"{VERSION}/{parent}({row[column]})/{nav}")
    if entity_set == "Locations":
        topics += [f"{VERSION}/Things({t})/Locations" for t in things]
    return topics


def changed_properties(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The properties (not links, not derived times) whose value differs between two bodies."""
    return [
        k for k, v in new.items() if "@" not in k and k not in DERIVED and old.get(k, _MISSING) != v
    ]


_MISSING = object()


def create_target(topic: str) -> tuple[int | None, str | None]:
    """(the id the topic's Observations are stored under: a Datastream's id, a
    MultiDatastream's as -<its id>, or None for ``v1.1/Observations``; a problem, or None) for a
    topic a client published an Observation to."""
    if topic == f"{VERSION}/Observations":
        return None, None
    parts = topic.split("/")
    m = _ENTITY.match(parts[1]) if len(parts) == 3 else None
    owners = ("Datastreams", "MultiDatastreams")
    if m is None or parts[2] != "Observations" or m.group(1) not in owners or "-" in m.group(2):
        return None, (
            f"Observations are created on {VERSION}/Observations, "
            f"{VERSION}/Datastreams(<id>)/Observations or "
            f"{VERSION}/MultiDatastreams(<id>)/Observations, not on {topic}"
        )
    entity_id = int(m.group(2))
    return (entity_id if m.group(1) == "Datastreams" else -entity_id), None


def _owner(stored_id: int) -> str:
    return f"Datastream {stored_id}" if stored_id > 0 else f"MultiDatastream {-stored_id}"


def create_owner(
    topic_id: int | None, datastream_id: int | None, multi_datastream_id: int | None
) -> tuple[int | None, str | None]:
    """(the id a created Observation is stored under, or None; a problem, or None) from the
    topic's (:func:`create_target`) and the body's ``Datastream`` / ``MultiDatastream`` link:
    the body may name the topic's own, and must name one on ``v1.1/Observations``."""
    named = None
    what = ""
    if multi_datastream_id is not None:
        named, what = -multi_datastream_id, "MultiDatastream"
    elif datastream_id is not None:
        named, what = datastream_id, "Datastream"
    if topic_id is None:
        if named is None:
            return None, (
                'Datastream is required: {"Datastream": {"@iot.id": <id>}} (or a'
                ' MultiDatastream: {"MultiDatastream": {"@iot.id": <id>}})'
            )
        return named, None
    if named is not None and named != topic_id:
        return None, f"{what}/@iot.id: the body names {_owner(named)}, the topic {_owner(topic_id)}"
    return topic_id, None


# ------------------------------------------------------------------------- subscriptions
@dataclass
class Subscriptions:
    """The subscriptions to ``v1.1`` topics the broker reported, per client, and what a topic's
    publication needs: the full body (a subscription to the topic itself or a wildcard filter
    matching it) and the ``$select`` topics on it. ``ignore``: the publisher's own client id."""

    ignore: str = ""
    _by_client: dict[str, set[str]] = field(default_factory=dict)
    _clean: set[str] = field(default_factory=set)
    _count: dict[str, int] = field(default_factory=dict)
    _plain: set[str] = field(default_factory=set)
    _wild: set[str] = field(default_factory=set)
    _selects: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    _cache: dict[str, tuple[bool, tuple[tuple[str, tuple[str, ...]], ...]]] = field(
        default_factory=dict
    )

    @staticmethod
    def relevant(topic_filter: str) -> bool:
        first = topic_filter.split("/", 1)[0]
        return first in (VERSION, "+", "#")

    def add(self, client: str, topic_filter: str) -> None:
        if client == self.ignore or not self.relevant(topic_filter):
            return
        mine = self._by_client.setdefault(client, set())
        if topic_filter in mine:
            return
        mine.add(topic_filter)
        n = self._count.get(topic_filter, 0)
        self._count[topic_filter] = n + 1
        if n == 0:
            self._index(topic_filter, True)

    def remove(self, client: str, topic_filter: str) -> None:
        mine = self._by_client.get(client)
        if not mine or topic_filter not in mine:
            return
        mine.discard(topic_filter)
        n = self._count.pop(topic_filter, 1) - 1
        if n > 0:
            self._count[topic_filter] = n
        else:
            self._index(topic_filter, False)

    def connected(self, client: str, clean: bool) -> None:
        """A client connected; a clean session's subscriptions end with its connection."""
        if clean:
            self.gone(client)  # a new clean session starts without subscriptions
            self._clean.add(client)
        else:
            self._clean.discard(client)

    def disconnected(self, client: str) -> None:
        if client in self._clean:
            self.gone(client)

    def gone(self, client: str) -> None:
        for topic_filter in list(self._by_client.get(client, ())):
            self.remove(client, topic_filter)
        self._by_client.pop(client, None)
        self._clean.discard(client)

    def _index(self, topic_filter: str, add: bool) -> None:
        self._cache.clear()
        path, fields = split_select(topic_filter)
        if fields is not None:
            on_path = self._selects.setdefault(path, {})
            if add:
                on_path[topic_filter] = fields
            else:
                on_path.pop(topic_filter, None)
                if not on_path:
                    self._selects.pop(path, None)
            return
        target = self._wild if ("+" in topic_filter or "#" in topic_filter) else self._plain
        if add:
            target.add(topic_filter)
        else:
            target.discard(topic_filter)

    def wanted(self, topic: str) -> tuple[bool, tuple[tuple[str, tuple[str, ...]], ...]]:
        """(publish the full body on ``topic``, the ``$select`` topics on it with their
        properties)."""
        hit = self._cache.get(topic)
        if hit is None:
            full = topic in self._plain or any(topic_matches_sub(w, topic) for w in self._wild)
            hit = (full, tuple(self._selects.get(topic, {}).items()))
            self._cache[topic] = hit
        return hit

    def any_wanted(self, topics: Iterable[str]) -> bool:
        for t in topics:
            full, selects = self.wanted(t)
            if full or selects:
                return True
        return False

    def wants_prefix(self, prefix: str) -> bool:
        """Whether any subscription could match a topic starting with ``prefix`` (a cheap
        check before reading anything from the database)."""
        if self._wild:
            return True
        return any(t.startswith(prefix) for t in self._plain) or any(
            t.startswith(prefix) for t in self._selects
        )

    def filters(self) -> list[str]:
        return sorted(self._count)


_LOG_LINE = re.compile(r"^\d+: (.*)$", re.S)
_CONNECTED = re.compile(r"^New client connected from \S+ as (\S+) \(p\d+, c(\d)")
_GONE = re.compile(
    r"^(?:Client|Socket error on client) (\S+)(?:,)? (?:disconnected|closed its connection"
    r"|has exceeded timeout)"
)


def apply_log(subs: Subscriptions, topic: str, payload: bytes) -> None:
    """Apply one message of the broker's log topics to ``subs``."""
    text = payload.decode("utf-8", "replace")
    m = _LOG_LINE.match(text)
    line = m.group(1) if m else text
    if topic == LOG_SUBSCRIBE:  # "<client id> <qos> <filter>"
        parts = line.split(" ", 2)
        if len(parts) == 3:
            subs.add(parts[0], parts[2])
    elif topic == LOG_UNSUBSCRIBE:  # "<client id> <filter>"
        parts = line.split(" ", 1)
        if len(parts) == 2:
            subs.remove(parts[0], parts[1])
    elif topic == LOG_NOTICE:
        c = _CONNECTED.match(line)
        if c:
            subs.connected(c.group(1), c.group(2) == "1")
            return
        g = _GONE.match(line)
        if g:
            subs.disconnected(g.group(1))
