"""Decentlab DL-SHT35: air temperature and humidity (Sensirion SHT35) in a radiation shield."""

from __future__ import annotations

from quartier.ingest.codecs._decentlab import Block, decode_v2
from quartier.ingest.codecs.base import Codec, FieldMap

NAME = "decentlab-dl-sht35"
MODELS = (("decentlab", "dl-sht35"),)

_BLOCKS = (
    Block(
        2,
        (
            ("air_temperature", lambda x: 175 * x[0] / 65535 - 45),
            ("air_humidity", lambda x: 100 * x[1] / 65535),
        ),
    ),
    Block(1, (("battery_voltage", lambda x: x[0] / 1000),)),
)

QUANTITIES: FieldMap = {
    "air_temperature": ("temperature", 1.0),
    "air_humidity": ("humidity", 1.0),
}


def decode(f_port: int, data: bytes) -> dict[str, float]:
    return decode_v2(_BLOCKS, data)


CODEC = Codec(NAME, "Decentlab DL-SHT35", decode, QUANTITIES, MODELS)
