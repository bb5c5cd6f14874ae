"""FROST's own Python client (PyPI ``frost_sta_client``) against ``quartier serve`` (the server
and key fixtures of tests/test_sta_frost_client.py) for the writes that were 405 before:
``service.create(HistoricalLocation(...))`` and ``service.update(observation)`` (PUT), as its
users call them (docs/sensorthings.md, "HistoricalLocations and PUT of Observations")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import frost_sta_client as fsc
import pytest
from test_sta_frost_client import (  # the module's server, database and key, started once here
    T0,
    db,
    deep_thing,
    server,
    service,
    token,
)

pytestmark = [
    pytest.mark.services,
    pytest.mark.filterwarnings("ignore:furl.pathstr is deprecated:DeprecationWarning"),
]
__all__ = ["db", "server", "service", "token"]  # fixtures, used by name


def test_the_client_creates_a_historical_location_and_the_thing_moves(
    service: fsc.SensorThingsService,
) -> None:
    thing = deep_thing("k-h1")
    service.create(thing)
    [old] = list(service.things().find(thing.id).get_locations().query().list())
    loc = fsc.Location(
        name="Rudolfplatz",
        description="neuer Standort",
        encoding_type="application/geo+json",
        location={"type": "Point", "coordinates": [6.939, 50.936]},
    )
    service.create(loc)
    # later than the HistoricalLocation the server made when the Thing was created
    when = datetime.now(UTC) + timedelta(seconds=1)
    hl = fsc.HistoricalLocation(
        time=when, thing=fsc.Thing(id=thing.id), locations=[fsc.Location(id=loc.id)]
    )
    service.create(hl)
    assert hl.id is not None
    [got] = list(
        service.historical_locations()
        .query()
        .filter(f"id eq {hl.id}")
        .expand("Thing,Locations")
        .list()
    )
    assert got.thing.id == thing.id and [x.id for x in got.locations] == [loc.id]
    now_at = list(service.things().find(thing.id).get_locations().query().list())
    assert [x.id for x in now_at] == [loc.id] != [old.id]
    history = service.things().find(thing.id).get_historical_locations().query().list()
    assert len(list(history)) == 2


def test_the_client_replaces_an_observation_with_put(service: fsc.SensorThingsService) -> None:
    thing = deep_thing("k-h2")
    service.create(thing)
    pm = next(
        d
        for d in service.things().find(thing.id).get_datastreams().query().list()
        if "PM" in d.name
    )
    o = fsc.Observation(
        result=1.0,
        phenomenon_time=T0,
        parameters={"rssi": -70},
        datastream=fsc.Datastream(id=pm.id),
    )
    service.create(o)
    found = service.observations().find(o.id)
    found.result = 3.5
    found.parameters = None
    service.update(found)  # PUT of the whole entity as the client holds it
    back = service.observations().find(o.id)
    assert back.id == o.id and back.result == 3.5
    assert not back.parameters
