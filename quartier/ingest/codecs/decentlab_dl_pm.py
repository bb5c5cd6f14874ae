"""Decentlab DL-PM: particulate matter (Sensirion SPS30), air temperature and humidity, pressure."""

from __future__ import annotations

from quartier.ingest.codecs._decentlab import Block, decode_v2
from quartier.ingest.codecs.base import Codec, FieldMap

NAME = "decentlab-dl-pm"
MODELS = (("decentlab", "dl-pm"),)

_BLOCKS = (
    Block(1, (("battery_voltage", lambda x: x[0] / 1000),)),
    Block(
        10,
        (
            ("pm1_0_mass_concentration", lambda x: x[0] / 10),
            ("pm2_5_mass_concentration", lambda x: x[1] / 10),
            ("pm4_mass_concentration", lambda x: x[2] / 10),
            ("pm10_mass_concentration", lambda x: x[3] / 10),
            ("typical_particle_size", lambda x: x[4]),
            ("pm0_5_number_concentration", lambda x: x[5] / 10),
            ("pm1_0_number_concentration", lambda x: x[6] / 10),
            ("pm2_5_number_concentration", lambda x: x[7] / 10),
            ("pm4_number_concentration", lambda x: x[8] / 10),
            ("pm10_number_concentration", lambda x: x[9] / 10),
        ),
    ),
    Block(
        2,
        (
            ("air_temperature", lambda x: 175.72 * x[0] / 65536 - 46.85),
            ("air_humidity", lambda x: 125 * x[1] / 65536 - 6),
        ),
    ),
    Block(1, (("barometric_pressure", lambda x: x[0] * 2),)),  # Pa
)

QUANTITIES: FieldMap = {
    "pm1_0_mass_concentration": ("pm1", 1.0),
    "pm2_5_mass_concentration": ("pm25", 1.0),
    "pm4_mass_concentration": ("pm4", 1.0),
    "pm10_mass_concentration": ("pm10", 1.0),
    "air_temperature": ("temperature", 1.0),
    "air_humidity": ("humidity", 1.0),
    "barometric_pressure": ("pressure", 0.01),  # Pa → hPa
}


def decode(f_port: int, data: bytes) -> dict[str, float]:
    return decode_v2(_BLOCKS, data)


CODEC = Codec(NAME, "Decentlab DL-PM", decode, QUANTITIES, MODELS)
