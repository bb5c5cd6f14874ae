"""What decoders produce: plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple


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
