"""Checks every decoded reading must pass, whatever format it came in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from quartier.ingest.model import Reading, Uplink
from quartier.ingest.quantities import QUANTITIES

EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)


def check_reading(r: Reading, latest: datetime) -> tuple[str, str] | None:
    """``None`` when the reading is acceptable, else (reason key, detail)."""
    q = QUANTITIES.get(r.quantity)
    if q is None:
        return "unknown_quantity", f"quantity {r.quantity!r} is not in the catalogue"
    if not q.min_value <= r.value <= q.max_value:
        return (
            "out_of_range",
            f"{r.quantity} {r.value} outside [{q.min_value:g}, {q.max_value:g}] {q.unit_symbol}",
        )
    if r.time > latest:
        return "future_time", f"time {r.time.isoformat()} is in the future"
    if r.time < EARLIEST:
        return "past_time", f"time {r.time.isoformat()} is before {EARLIEST.date()}"
    return None


def validate(uplink: Uplink, now: datetime, max_future_seconds: int) -> Uplink:
    """Moves readings that fail the checks from ``readings`` to ``invalid`` (in place)."""
    latest = now + timedelta(seconds=max_future_seconds)
    good: list[Reading] = []
    catalogue = QUANTITIES
    for i, r in enumerate(uplink.readings):
        q = catalogue.get(r.quantity)  # fast path: the same checks as check_reading, inline
        if q is not None and q.min_value <= r.value <= q.max_value and EARLIEST <= r.time <= latest:
            good.append(r)
            continue
        problem = check_reading(r, latest)
        if problem is None:
            good.append(r)
        else:
            uplink.invalid.append((i, *problem))
    uplink.readings = good
    return uplink
