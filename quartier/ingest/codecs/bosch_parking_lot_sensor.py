"""Bosch Parking Lot Sensor (TPS110): one parking space, occupied or free.

f_port 1: parking status (bit 0 of byte 0 = occupied); f_port 2: heartbeat (the same bit, and
byte 1, when present, the sensor's internal temperature as signed °C); f_port 3: start-up frame of
17 bytes (byte 16 bit 0 = occupied; bytes 12–15 firmware version and reset cause, not kept).

The heartbeat temperature is measured inside the sensor in the road surface, not the air, so it is
not mapped to ``temperature``.
"""

from __future__ import annotations

from quartier.ingest.codecs.base import Codec, FieldMap, need

NAME = "bosch-parking-lot-sensor"
MODELS = (("bosch", "tps110"), ("bosch", "tps110-0233"), ("bosch", "tps110-0292"))

QUANTITIES: FieldMap = {"occupied": ("parking_occupied", 1.0)}

STARTUP_LENGTH = 17


def decode(f_port: int, data: bytes) -> dict[str, float]:
    if f_port == 1:
        need(data, 1, "a parking status")
        return {"occupied": float(data[0] & 1)}
    if f_port == 2:
        need(data, 1, "a heartbeat")
        out = {"occupied": float(data[0] & 1)}
        if len(data) >= 2:
            out["temperature"] = float(data[1] - 256 if data[1] & 0x80 else data[1])
        return out
    if f_port == 3:
        need(data, STARTUP_LENGTH, "a start-up frame")
        return {"occupied": float(data[16] & 1)}
    raise ValueError(f"f_port {f_port} is not a Bosch parking lot sensor uplink (1, 2 or 3)")


CODEC = Codec(NAME, "Bosch Parking Lot Sensor", decode, QUANTITIES, MODELS)
