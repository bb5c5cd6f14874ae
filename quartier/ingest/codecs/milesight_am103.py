"""Milesight AM103 (indoor temperature, humidity, CO2), usually on f_port 85.

The frame is a sequence of channels ``(channel id, channel type, data)``, little endian. Device
information channels (``0xff ..``) are skipped; an unknown channel ends decoding with an error,
because its length is unknown. Channel ``0x20 0xce`` is a stored (history) record with its own
Unix timestamp, returned by :func:`history`.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from quartier.ingest.codecs.base import Codec, FieldMap, need

NAME = "milesight-am103"
MODELS = (("milesight-iot", "am103"),)

QUANTITIES: FieldMap = {
    "battery": ("battery", 1.0),
    "temperature": ("temperature", 1.0),
    "humidity": ("humidity", 1.0),
    "co2": ("co2", 1.0),
}

# device information and event channels: (id, type) → data length, skipped
_INFO = {
    (0xFF, 0x01): 1,  # IPSO version
    (0xFF, 0x09): 2,  # hardware version
    (0xFF, 0x0A): 2,  # firmware version
    (0xFF, 0x0B): 1,  # device status (power on)
    (0xFF, 0x0F): 1,  # LoRaWAN class
    (0xFF, 0x16): 8,  # serial number
    (0xFF, 0x18): 1,  # sensor enable bits
    (0xFF, 0xFE): 1,  # reset event
    (0xFF, 0xFF): 2,  # TSL version
}


def _parse(data: bytes) -> tuple[dict[str, float], list[tuple[datetime, dict[str, float]]]]:
    if not data:
        raise ValueError("payload is empty")
    now: dict[str, float] = {}
    stored: list[tuple[datetime, dict[str, float]]] = []
    i = 0
    while i < len(data):
        need(data, i + 2, f"the channel header at byte {i}")
        channel = (data[i], data[i + 1])
        i += 2
        if channel == (0x01, 0x75):
            need(data, i + 1, "battery")
            now["battery"] = float(data[i])
            i += 1
        elif channel == (0x03, 0x67):
            need(data, i + 2, "temperature")
            now["temperature"] = struct.unpack_from("<h", data, i)[0] / 10
            i += 2
        elif channel == (0x04, 0x68):
            need(data, i + 1, "humidity")
            now["humidity"] = data[i] / 2
            i += 1
        elif channel == (0x07, 0x7D):
            need(data, i + 2, "co2")
            now["co2"] = float(struct.unpack_from("<H", data, i)[0])
            i += 2
        elif channel == (0x20, 0xCE):
            need(data, i + 9, "a history record")
            ts, temp, hum, co2 = struct.unpack_from("<IhBH", data, i)
            values = {"temperature": temp / 10, "humidity": hum / 2, "co2": float(co2)}
            stored.append((datetime.fromtimestamp(ts, tz=UTC), values))
            i += 9
        elif channel in _INFO:
            need(data, i + _INFO[channel], f"channel {channel[0]:#04x} {channel[1]:#04x}")
            i += _INFO[channel]
        else:
            raise ValueError(f"unknown channel {channel[0]:#04x} {channel[1]:#04x} at byte {i - 2}")
    return now, stored


def decode(f_port: int, data: bytes) -> dict[str, float]:
    return _parse(data)[0]


def history(f_port: int, data: bytes) -> list[tuple[datetime, dict[str, float]]]:
    return _parse(data)[1]


CODEC = Codec(NAME, "Milesight AM103", decode, QUANTITIES, MODELS, history)
