"""Decentlab's protocol version 2, shared by all their LoRaWAN sensors.

Layout (big endian): version byte (2), device id (uint16), sensor flags (uint16), then, for each
flag bit set from the lowest up, that sensor's block of uint16 words. Each model defines its
blocks and how words convert to values (vendor documentation, decentlab.com).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from quartier.ingest.codecs.base import need

PROTOCOL_VERSION = 2
HEADER = 5

Convert = Callable[[Sequence[int]], float]


@dataclass(frozen=True)
class Block:
    """A sensor block: its length in 16-bit words and the values computed from those words."""

    words: int
    values: tuple[tuple[str, Convert], ...]


def decode_v2(blocks: Sequence[Block], data: bytes) -> dict[str, float]:
    need(data, HEADER, "the Decentlab header")
    if data[0] != PROTOCOL_VERSION:
        raise ValueError(f"Decentlab protocol version {data[0]}, expected {PROTOCOL_VERSION}")
    flags = struct.unpack_from(">H", data, 3)[0]
    if flags >> len(blocks):
        raise ValueError(
            f"sensor flags {flags:#06x} announce blocks this model does not have (wrong model?)"
        )
    out: dict[str, float] = {}
    pos = HEADER
    for i, block in enumerate(blocks):
        if not flags >> i & 1:
            continue
        need(data, pos + 2 * block.words, f"sensor block {i}")
        words = struct.unpack_from(f">{block.words}H", data, pos)
        pos += 2 * block.words
        for name, convert in block.values:
            out[name] = float(convert(words))
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} bytes left after the last sensor block (wrong model?)")
    return out
