"""The fast path for native messages: decoded straight into columns, checked with numpy.

Most traffic is well-formed native JSON, and most readings arrive in batches. For those, building
a ``Reading`` object per value and checking it in Python is most of an ingester's cost. Here a
typed ``msgspec`` decoder parses a whole message in C (RFC 3339 times with a zone included), the
readings go into flat columns for the whole batch, and :meth:`Columns.validate` checks ranges and
times for all of them at once.

A message takes this path only when all of it is plainly valid. Anything else (a reading without a
time, parameters, an unknown quantity, a value out of range, a malformed document) is handed back
and decoded by :func:`quartier.ingest.native.decode_native`, which says exactly what is wrong
with which reading. So both paths store the same rows and refuse the same readings with the same
reasons; ``tests/test_columnar.py`` checks that on valid and invalid messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from quartier.ingest.model import Position
from quartier.ingest.quantities import QUANTITIES
from quartier.ingest.validate import EARLIEST

_Time = Annotated[datetime, msgspec.Meta(tz=True)] | float | None | msgspec.UnsetType


class _Reading(msgspec.Struct, forbid_unknown_fields=True):
    """A reading with parameters (or any other member) takes the full decoder."""

    quantity: str
    value: float
    time: _Time = msgspec.UNSET


class _Position(msgspec.Struct):
    lat: float
    lon: float


class _Native(msgspec.Struct):
    readings: list[_Reading] | msgspec.UnsetType = msgspec.UNSET
    quantity: str | msgspec.UnsetType = msgspec.UNSET
    value: float | msgspec.UnsetType = msgspec.UNSET
    time: _Time = msgspec.UNSET
    location: _Position | msgspec.UnsetType | None = msgspec.UNSET
    parameters: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET


_DECODER = msgspec.json.Decoder(_Native)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_EARLIEST_US = (EARLIEST - _EPOCH) // _US
_BOUNDS = {k: (q.min_value, q.max_value) for k, q in QUANTITIES.items()}
#: each quantity's number, and the bounds by number (for numpy's fancy indexing)
_Q_INDEX = {k: i for i, k in enumerate(_BOUNDS)}
_LO = np.array([lo for lo, _ in _BOUNDS.values()], dtype=np.float64)
_HI = np.array([hi for _, hi in _BOUNDS.values()], dtype=np.float64)
#: epoch milliseconds datetime can represent (years 1 to 9999, a day inside either end); others
#: (and NaN) take the full decoder, which refuses them
_MIN_MS = (datetime(1, 1, 2, tzinfo=UTC) - _EPOCH) / timedelta(milliseconds=1)
_MAX_MS = (datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH) / timedelta(milliseconds=1)


class ColumnMessage(msgspec.Struct, frozen=True, gc=False):
    """One message on the fast path: its readings are ``start:start + n`` of the columns (a
    ``msgspec.Struct``: one per message, made in C)."""

    network: str
    device: str
    location: Position | None
    topic: str
    payload: bytes
    received_at: datetime
    start: int
    n: int
    #: the quantity of every reading, or (the common case) one quantity for all of them
    quantity: str | list[str]


@dataclass
class Columns:
    """Readings of many messages as columns: time (µs since 1970, UTC) and value."""

    messages: list[ColumnMessage] = field(default_factory=list)
    times_s: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    #: the quantity of each reading (until :meth:`validate`)
    quantities: list[str] = field(default_factory=list)
    #: set by :meth:`validate`
    time_us: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    value: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0, np.float64))

    def __len__(self) -> int:
        return len(self.values)

    def add(
        self,
        network: str,
        device: str,
        topic: str,
        payload: bytes,
        received_at: datetime,
        max_bytes: int,
    ) -> bool:
        """Take a native message if it fits the fast path; False leaves it to the full decoder."""
        if len(payload) > max_bytes:
            return False
        try:
            doc = _DECODER.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
            return False  # deeply nested JSON raises RecursionError, a lone surrogate UnicodeError
        location = None
        if doc.location is not msgspec.UNSET:
            loc = doc.location
            if loc is None or not (-90 <= loc.lat <= 90 and -180 <= loc.lon <= 180):
                return False
            location = Position(loc.lat, loc.lon)
        readings = doc.readings
        if readings is msgspec.UNSET:
            quantity1, value1, t = doc.quantity, doc.value, doc.time
            if quantity1 is msgspec.UNSET or value1 is msgspec.UNSET:
                return False
            if doc.parameters is not msgspec.UNSET and doc.parameters is not None:
                return False
            # one reading (most traffic): the same checks as below, without the lists
            if type(t) is datetime:
                time_s = t.timestamp()
            elif type(t) is float and _MIN_MS <= t <= _MAX_MS:
                time_s = datetime.fromtimestamp(t / 1000.0, tz=UTC).timestamp()
            else:
                return False  # no time, or an explicit null: the full decoder says so
            if quantity1 not in _BOUNDS:
                return False
            n = len(self.values)
            self.messages.append(
                ColumnMessage(
                    network, device, location, topic, payload, received_at, n, 1, quantity1
                )
            )
            self.times_s.append(time_s)
            self.values.append(value1)
            self.quantities.append(quantity1)
            return True
        if not readings:
            return False
        base: Any = doc.time
        times = [r.time for r in readings]
        kinds = set(map(type, times))
        if kinds == {datetime}:
            times_s = [t.timestamp() for t in times]  # type: ignore[union-attr]
        else:
            times_s = []
            for t in times:
                if t is msgspec.UNSET:
                    t = base  # the message's time, when a reading has none
                if type(t) is datetime:
                    times_s.append(t.timestamp())
                elif type(t) is float and _MIN_MS <= t <= _MAX_MS:
                    # epoch milliseconds, to the µs exactly as the full decoder rounds them
                    times_s.append(datetime.fromtimestamp(t / 1000.0, tz=UTC).timestamp())
                else:
                    return False  # no time, or an explicit null: the full decoder says so
        quantities = [r.quantity for r in readings]
        distinct = set(quantities)
        if not distinct <= _BOUNDS.keys():
            return False
        quantity: str | list[str] = quantities[0] if len(distinct) == 1 else quantities
        self.messages.append(
            ColumnMessage(
                network,
                device,
                location,
                topic,
                payload,
                received_at,
                len(self.values),
                len(readings),
                quantity,
            )
        )
        self.times_s.extend(times_s)
        self.values.extend([r.value for r in readings])
        self.quantities.extend(quantities)
        return True

    def validate(self, now: datetime, max_future_seconds: int) -> list[ColumnMessage]:
        """Check every reading's value range and time at once; messages with any reading that
        fails are removed from the columns and returned, for the full decoder."""
        msgs = self.messages
        if not msgs:
            return []
        value = np.asarray(self.values, dtype=np.float64)
        time_us = np.rint(np.asarray(self.times_s, dtype=np.float64) * 1e6).astype(np.int64)
        # the bounds of each reading's quantity, looked up for all of them at once
        q = np.fromiter(map(_Q_INDEX.__getitem__, self.quantities), np.intp, len(value))
        latest_us = (now + timedelta(seconds=max_future_seconds) - _EPOCH) // _US
        ok = (
            np.isfinite(value)
            & (value >= _LO[q])
            & (value <= _HI[q])
            & (time_us >= _EARLIEST_US)
            & (time_us <= latest_us)
        )
        self.times_s, self.values, self.quantities = [], [], []
        if ok.all():
            self.time_us, self.value = time_us, value
            return []
        counts = np.fromiter((m.n for m in msgs), dtype=np.int64, count=len(msgs))
        starts = np.fromiter((m.start for m in msgs), dtype=np.int64, count=len(msgs))
        good_msg = np.logical_and.reduceat(ok, starts)
        keep = np.repeat(good_msg, counts)
        self.time_us, self.value = time_us[keep], value[keep]
        kept: list[ColumnMessage] = []
        refused: list[ColumnMessage] = []
        pos = 0
        for m, good in zip(msgs, good_msg.tolist(), strict=True):
            if good:
                kept.append(msgspec.structs.replace(m, start=pos))
                pos += m.n
            else:
                refused.append(m)
        self.messages = kept
        return refused
