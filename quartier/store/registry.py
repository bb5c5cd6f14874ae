"""The device registry: which Thing and Datastreams a device's readings belong to (cached),
registering unknown devices when allowed, and recording a device's new position as a new
Location and HistoricalLocation of its Thing. The ingest writer and the HTTP ingest use it inside
their write transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol

from psycopg.types.json import Jsonb

from quartier.errors import UnknownDevice
from quartier.pseudonym import is_personal_network
from quartier.store.db import Conn

log = logging.getLogger(__name__)


class Place(Protocol):
    """A position in WGS 84 (the ingest model's ``Position``)."""

    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...


class QuantityInfo(Protocol):
    """What the registry needs of a quantity to create its ObservedProperty and Datastream (the
    ingest catalogue's ``Quantity``)."""

    @property
    def key(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def name_de(self) -> str: ...
    @property
    def definition(self) -> str: ...
    @property
    def unit_name(self) -> str: ...
    @property
    def unit_symbol(self) -> str: ...
    @property
    def unit_definition(self) -> str: ...


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


#: what a message needs of the registry: (network, device key, position or None, whether the
#: position is its gateway's, the quantities it carries)
Wanted = tuple[str, str, Place | None, bool, Iterable[str]]

#: a reported position closer than this (degrees, about a metre) to the current one is no move
_SAME_PLACE_DEG = 1e-5


class Registry:
    """Device → Thing/Datastream lookups, cached; registers unknown devices when allowed, and
    records a device's new position as a new Location and HistoricalLocation of its Thing.

    Devices of a personal network (``personal_networks``, fnmatch patterns: citizen sensors,
    phones; docs/privacy.md) are stored coarsened: their Thing's one Location is the centre of
    the 100 m INSPIRE cell (EPSG:3035) of the reported position, updated in place, with no
    HistoricalLocation; a gateway's position is never used for them."""

    def __init__(
        self,
        auto_register: bool,
        quantities: Mapping[str, QuantityInfo],
        *,
        personal_networks: Sequence[str] = (),
    ) -> None:
        self.auto_register = auto_register
        self.quantities = quantities
        self.personal_networks = tuple(personal_networks)
        self._personal: dict[str, bool] = {}
        #: quantity key → its place in the catalogue (the order datastreams are created in)
        self._rank = {q: i for i, q in enumerate(quantities)}
        self._devices: dict[tuple[str, str], int] = {}
        self._streams: dict[tuple[int, str], int] = {}
        #: device id → (thing id, current position or None)
        self._things: dict[int, tuple[int, Place | None]] = {}

    def clear(self) -> None:
        self._devices.clear()
        self._streams.clear()
        self._things.clear()

    def preload(self, conn: Conn) -> None:
        """Load every known device and datastream in two queries (instead of one round trip per
        device on first contact)."""
        for dev_id, network, key, thing_id, lat, lon in conn.execute(_DEVICES):
            self._devices[(str(network), str(key))] = _int(dev_id)
            # a personal device's stored place is not compared with: its next position is
            # stored coarsened again (which also coarsens one stored before it counted as
            # personal, and drops its history)
            place = None if self._is_personal(str(network)) else _position(lat, lon)
            self._things[_int(dev_id)] = (_int(thing_id), place)
        for dev_id, quantity, ds_id in conn.execute(
            "select device_id, quantity, datastream_id from device_datastream"
        ):
            self._streams[(_int(dev_id), str(quantity))] = _int(ds_id)

    def device_id(
        self,
        conn: Conn,
        network: str,
        device: str,
        location: Place | None,
        *,
        from_gateway: bool = False,
    ) -> int:
        personal = self._is_personal(network)
        if personal and from_gateway:
            location = None  # a gateway's position is someone's home, not the device's
        key = (network, device)
        found = self._devices.get(key)
        if found is None:
            row = conn.execute(_DEVICES + " where d.network = %s and d.device_key = %s", key)
            hit = row.fetchone()
            if hit is None:
                if not self.auto_register:
                    raise UnknownDevice(
                        f"device {device!r} on network {network!r} is not registered"
                    )
                found, thing_id = self._register(conn, network, device, location, personal)
                self._things[found] = (thing_id, location)
            else:
                found = _int(hit[0])
                place = None if personal else _position(hit[4], hit[5])
                self._things[found] = (_int(hit[3]), place)
            self._devices[key] = found
        if location is not None:
            thing_id, current = self._things[found]
            if current is None or (
                not from_gateway
                and (
                    abs(current.lat - location.lat) > _SAME_PLACE_DEG
                    or abs(current.lon - location.lon) > _SAME_PLACE_DEG
                )
            ):
                _place(
                    conn, thing_id, f"{network}/{device}", location, replace=True, coarse=personal
                )
                self._things[found] = (thing_id, location)
                if personal:
                    log.debug("device %s/%s moved (stored coarsened)", network, device)
                else:
                    log.info(
                        "device %s/%s is now at %s, %s",
                        network,
                        device,
                        location.lat,
                        location.lon,
                    )
        return found

    def _is_personal(self, network: str) -> bool:
        personal = self._personal.get(network)
        if personal is None:
            personal = self._personal[network] = is_personal_network(
                network, self.personal_networks
            )
        return personal

    def prepare(self, conn: Conn, wanted: Iterable[Wanted]) -> None:
        """Register the batch's unknown devices, then its missing datastreams, each in one order
        (devices by key, a device's datastreams in the catalogue's order of quantities), before
        its readings are resolved one by one. Registrations take locks held until the batch
        commits (an advisory lock per device and per datastream, index entries); taken in one
        global order, two writers registering the same new devices wait for each other
        instead of deadlocking. An unknown device that may not be registered is left for the
        caller, which rejects its message."""
        devices = self._devices
        streams = self._streams
        new: dict[tuple[str, str], tuple[Place | None, bool, set[str]]] = {}
        missing: set[tuple[int, str]] = set()
        for network, device, location, from_gateway, quantities in wanted:
            key = (network, device)
            dev = devices.get(key)
            if dev is None:
                entry = new.get(key)
                if entry is None:
                    entry = new[key] = (location, from_gateway, set())
                entry[2].update(quantities)
            else:
                for q in quantities:  # a loop, not a generator: this runs for every message
                    if (dev, q) not in streams:
                        missing.add((dev, q))
        if not new and not missing:
            return
        for key in sorted(new):
            location, from_gateway, quantities = new[key]
            try:
                dev = self.device_id(conn, *key, location, from_gateway=from_gateway)
            except UnknownDevice:
                continue
            missing.update((dev, q) for q in quantities if (dev, q) not in streams)
        rank = self._rank
        last = len(rank)
        for dev, q in sorted(missing, key=lambda dq: (dq[0], rank.get(dq[1], last), dq[1])):
            self.datastream_id(conn, dev, q)

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
    def _register(
        conn: Conn, network: str, device: str, location: Place | None, personal: bool = False
    ) -> tuple[int, int]:
        """A new device with its Thing (and Location); returns (device id, thing id)."""
        # Serialise concurrent registrations of the same device (several ingest workers).
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"{network}/{device}",))
        row = conn.execute(
            "select id, thing_id from device where network = %s and device_key = %s",
            (network, device),
        ).fetchone()
        if row is not None:
            return _int(row[0]), _int(row[1])
        name = f"{network}/{device}"
        thing = conn.execute(
            "insert into thing (name, description, properties) values (%s, %s, %s) returning id",
            (name, f"Device {device} on network {network}", Jsonb({"network": network})),
        ).fetchone()
        assert thing is not None
        if location is not None:
            _place(conn, _int(thing[0]), name, location, replace=False, coarse=personal)
        dev = conn.execute(
            "insert into device (network, device_key, thing_id, auto_registered) "
            "values (%s, %s, %s, true) returning id",
            (network, device, thing[0]),
        ).fetchone()
        assert dev is not None
        log.info("registered device %s (thing %s)", name, thing[0])
        return _int(dev[0]), _int(thing[0])

    def _create_datastream(self, conn: Conn, device_id: int, quantity: str) -> int:
        q = self.quantities[quantity]
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
        # read first: an upsert would lock the shared row until this batch commits, so every
        # writer creating a datastream of the same quantity would wait for the others
        op = (
            conn.execute(
                "select id from observed_property where definition = %s", (q.definition,)
            ).fetchone()
            or conn.execute(
                "insert into observed_property (name, definition, description, properties) "
                "values (%s, %s, %s, %s) on conflict (definition) "
                "do update set name = excluded.name returning id",
                (q.name, q.definition, q.name, Jsonb({"key": q.key, "name_de": q.name_de})),
            ).fetchone()
        )
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


_DEVICES = """select d.id, d.network, d.device_key, d.thing_id, ST_Y(p.pt), ST_X(p.pt)
from device d
left join lateral (
    select ST_PointOnSurface(l.location) as pt from thing_location tl
    join location l on l.id = tl.location_id
    where tl.thing_id = d.thing_id order by l.id desc limit 1
) p on true"""


class _Point(NamedTuple):
    lat: float
    lon: float


def _position(lat: object, lon: object) -> Place | None:
    if isinstance(lat, float) and isinstance(lon, float):
        return _Point(lat, lon)
    return None


#: the centre of the 100 m INSPIRE cell (EPSG:3035) of a WGS 84 point (lon, lat); the cell
#: functions are those of migration 0010, the grid of quartier/geo/grid.py
_CELL_CENTRE = (
    "ST_Transform(ST_SetSRID(ST_MakePoint("
    "quartier_cell_e(ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)) + 50, "
    "quartier_cell_n(ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)) + 50), 3035), 4326)"
)


def _place_coarse(conn: Conn, thing_id: int, name: str, where: Place) -> None:
    """Make the centre of ``where``'s 100 m cell the Thing's one Location: the existing row is
    updated in place (no new Location, no HistoricalLocation), so no past position is kept."""
    params = {"lon": where.lon, "lat": where.lat, "thing": thing_id, "name": name,
              "props": Jsonb({"precision": "centre of the 100 m INSPIRE grid cell"})}  # fmt: skip
    current = conn.execute(
        "select location_id from thing_location where thing_id = %s order by location_id desc",
        (thing_id,),
    ).fetchall()
    if current:
        keep = current[0][0]
        conn.execute(
            f"update location set location = {_CELL_CENTRE}, properties = %(props)s "
            "where id = %(id)s",
            {**params, "id": keep},
        )
        old = [row[0] for row in current[1:]]
        if old:
            conn.execute("delete from location where id = any(%s)", (old,))
        _forget_history(conn, thing_id, keep)
        return
    loc = conn.execute(
        "insert into location (name, description, location, properties) values "
        f"(%(name)s, 'Position of ' || %(name)s || ' (100 m cell)', {_CELL_CENTRE}, %(props)s) "
        "returning id",
        params,
    ).fetchone()
    assert loc is not None
    conn.execute("insert into thing_location values (%s, %s)", (thing_id, loc[0]))


def _forget_history(conn: Conn, thing_id: int, keep: int) -> None:
    """Delete the Thing's HistoricalLocations and their past Locations (not ``keep``), e.g. of
    a device registered before its network counted as personal."""
    conn.execute(
        "delete from location l using historical_location_location hll, historical_location h "
        "where hll.location_id = l.id and h.id = hll.historical_location_id "
        "and h.thing_id = %s and l.id <> %s",
        (thing_id, keep),
    )
    conn.execute("delete from historical_location where thing_id = %s", (thing_id,))


def _place(
    conn: Conn, thing_id: int, name: str, where: Place, *, replace: bool, coarse: bool = False
) -> None:
    """Make ``where`` the Thing's current Location, with a HistoricalLocation from now
    (``coarse``: see :func:`_place_coarse`)."""
    conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"thing-location/{thing_id}",))
    if coarse:
        _place_coarse(conn, thing_id, name, where)
        return
    loc = conn.execute(
        "insert into location (name, description, location) values "
        "(%s, %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326)) returning id",
        (name, f"Position of {name}", where.lon, where.lat),
    ).fetchone()
    assert loc is not None
    if replace:
        conn.execute("delete from thing_location where thing_id = %s", (thing_id,))
    conn.execute("insert into thing_location values (%s, %s)", (thing_id, loc[0]))
    hist = conn.execute(
        "insert into historical_location (thing_id, time) values (%s, now()) returning id",
        (thing_id,),
    ).fetchone()
    assert hist is not None
    conn.execute("insert into historical_location_location values (%s, %s)", (hist[0], loc[0]))
