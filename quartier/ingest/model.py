"""The ingest path's plain data, no I/O: what decoders produce (readings, uplinks, speed tests)
and what the writer takes and reports (batches, rejects, results)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from quartier.ingest.columnar import Columns


class Reading(NamedTuple):
    """One value of one quantity at one time (a NamedTuple: made by the million, cheaply)."""

    quantity: str
    time: datetime  # timezone-aware, UTC
    value: float
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Position:
    lat: float
    lon: float


@dataclass(slots=True)
class Uplink:
    """A decoded sensor message: readings for one device, plus the readings it had to refuse."""

    network: str
    device: str
    readings: list[Reading]
    location: Position | None = None
    #: (index in the payload, reason key, detail) for each reading that failed validation
    invalid: list[tuple[int, str, str]] = field(default_factory=list)
    #: the location is a receiving gateway's, not the device's own (The Things Stack): it is
    #: used for a device without a location but does not move one that has
    location_from_gateway: bool = False


class Observation(NamedTuple):
    """One observation addressed to its Datastream by id (SensorThings over REST: POST
    Observations, CreateObservations): a numeric result in ``result``, any other JSON value
    (text, boolean, object, array) in ``result_json``; the store's first-stored-wins rule on
    (datastream, time) applies as to readings."""

    datastream_id: int
    time: datetime  # timezone-aware, UTC
    result: float | None
    result_json: Any = None
    result_time: datetime | None = None
    parameters: dict[str, Any] | None = None
    foi_id: int | None = None


@dataclass(frozen=True, slots=True)
class SpeedTest:
    """A crowdsourced broadband speed test."""

    source: str
    device: str
    time: datetime
    position: Position
    download_mbps: float
    upload_mbps: float | None = None
    latency_ms: float | None = None
    technology: str | None = None
    operator: str | None = None


# ------------------------------------------------------------------ what the writer takes and says
def _columns() -> Columns:
    from quartier.ingest.columnar import Columns  # columnar builds on this module's types

    return Columns()


@dataclass(frozen=True, slots=True)
class Reject:
    """A refused message, kept whole with the reason (``ingest_reject``)."""

    topic: str
    payload: bytes
    reason: str
    detail: str
    received_at: datetime
    source: str = "mqtt"


@dataclass
class Batch:
    """Decoded messages to store in one transaction, with the messages refused while decoding."""

    uplinks: list[tuple[Uplink, str, bytes, datetime]] = field(default_factory=list)
    #: plainly valid native messages, decoded into columns (see quartier.ingest.columnar)
    columns: Columns = field(default_factory=_columns)
    speedtests: list[SpeedTest] = field(default_factory=list)
    #: observations addressed to datastreams by id (SensorThings REST), stored with the rest
    observations: list[Observation] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    #: where the messages came from, recorded with rejects: mqtt, http, import
    source: str = "mqtt"
    #: ids of ingest_reject rows whose replay this batch completes (marked in the same transaction)
    replayed: list[int] = field(default_factory=list)


@dataclass
class WriteResult:
    """What one batch did to the store."""

    observations: int = 0  # rows newly stored
    duplicates: int = 0  # rows already there
    speedtests: int = 0
    rejects: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # rejects by reason
    #: indexes into ``Batch.observations`` of those not stored: their (datastream, time) was
    #: stored before, or came earlier in the batch (first stored wins)
    not_stored: list[int] = field(default_factory=list)
