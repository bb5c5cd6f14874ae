"""Decentlab DL-LP8P: CO2 (Senseair LP8), air temperature and humidity, barometric pressure."""

from __future__ import annotations

from quartier.ingest.codecs._decentlab import Block, decode_v2
from quartier.ingest.codecs.base import Codec, FieldMap

NAME = "decentlab-dl-lp8p"
MODELS = (("decentlab", "dl-lp8p"),)

_BLOCKS = (
    Block(
        2,
        (
            ("air_temperature", lambda x: 175.72 * x[0] / 65536 - 46.85),
            ("air_humidity", lambda x: 125 * x[1] / 65536 - 6),
        ),
    ),
    Block(
        2,
        (
            ("barometer_temperature", lambda x: (x[0] - 5000) / 100),
            ("barometric_pressure", lambda x: x[1] * 2),  # Pa
        ),
    ),
    Block(
        8,
        (
            ("co2_concentration", lambda x: x[0] - 32768),
            ("co2_concentration_lpf", lambda x: x[1] - 32768),
            ("co2_sensor_temperature", lambda x: (x[2] - 32768) / 100),
            ("capacitor_voltage_1", lambda x: x[3] / 1000),
            ("capacitor_voltage_2", lambda x: x[4] / 1000),
            ("co2_sensor_status", lambda x: x[5]),
            ("raw_ir_reading", lambda x: x[6]),
            ("raw_ir_reading_lpf", lambda x: x[7]),
        ),
    ),
    Block(1, (("battery_voltage", lambda x: x[0] / 1000),)),
)

QUANTITIES: FieldMap = {
    "air_temperature": ("temperature", 1.0),
    "air_humidity": ("humidity", 1.0),
    "barometric_pressure": ("pressure", 0.01),  # Pa → hPa
    "co2_concentration": ("co2", 1.0),
}


def decode(f_port: int, data: bytes) -> dict[str, float]:
    return decode_v2(_BLOCKS, data)


CODEC = Codec(NAME, "Decentlab DL-LP8P", decode, QUANTITIES, MODELS)
