"""What a codec is: a pure function from a LoRaWAN frame payload to named values, plus the table
that says which of those values are Quartier quantities (and how to scale them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

#: field name in the codec's output → (quantity key, factor to the catalogue unit)
FieldMap = Mapping[str, tuple[str, float]]

Decode = Callable[[int, bytes], dict[str, float]]
History = Callable[[int, bytes], list[tuple[datetime, dict[str, float]]]]


@dataclass(frozen=True)
class Codec:
    """One device model's payload format.

    ``decode(f_port, data)`` returns every value the frame carries (diagnostics included) under the
    vendor's field names and raises ``ValueError`` when the bytes do not fit the format.
    ``quantities`` picks the fields Quartier stores; fields not listed there are dropped.
    ``models`` are the ``(brand_id, model_id)`` pairs of The Things Stack's ``version_ids`` (the
    LoRaWAN Device Repository) that select this codec automatically. ``history``, when a format
    carries stored measurements with their own timestamps, returns them as (time, values).
    """

    name: str
    title: str
    decode: Decode
    quantities: FieldMap
    models: tuple[tuple[str, str], ...] = ()
    history: History | None = field(default=None)


def need(data: bytes, end: int, what: str) -> None:
    """Raise ``ValueError`` when ``data`` is shorter than ``end`` bytes."""
    if len(data) < end:
        raise ValueError(f"payload is truncated: {what} needs {end} bytes, got {len(data)}")
