"""The catalogue of observed quantities: the key devices use, the SensorThings ObservedProperty
and unit of measurement it maps to, and the range of plausible values (outside it, a reading is
rejected, not stored)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quantity:
    key: str
    name: str
    name_de: str
    definition: str
    unit_name: str
    unit_symbol: str
    unit_definition: str
    min_value: float
    max_value: float


_UG = ("microgram per cubic metre", "µg/m³", "http://qudt.org/vocab/unit/MicroGM-PER-M3")

QUANTITIES: dict[str, Quantity] = {
    q.key: q
    for q in [
        Quantity(
            "pm1",
            "PM1",
            "Feinstaub PM1",
            "http://dd.eionet.europa.eu/vocabulary/aq/pollutant/6002",
            *_UG,
            0,
            1000,
        ),
        Quantity(
            "pm25",
            "PM2.5",
            "Feinstaub PM2,5",
            "http://dd.eionet.europa.eu/vocabulary/aq/pollutant/6001",
            *_UG,
            0,
            1000,
        ),
        Quantity("pm4", "PM4", "Feinstaub PM4", "urn:quartier:property:pm4", *_UG, 0, 1500),
        Quantity(
            "pm10",
            "PM10",
            "Feinstaub PM10",
            "http://dd.eionet.europa.eu/vocabulary/aq/pollutant/5",
            *_UG,
            0,
            2000,
        ),
        Quantity(
            "no2",
            "Nitrogen dioxide",
            "Stickstoffdioxid",
            "http://dd.eionet.europa.eu/vocabulary/aq/pollutant/8",
            *_UG,
            0,
            2000,
        ),
        Quantity(
            "noise_laeq",
            "Noise level LAeq",
            "Schallpegel LAeq",
            "urn:quartier:property:noise-laeq",
            "decibel (A-weighted)",
            "dB(A)",
            "http://qudt.org/vocab/unit/DeciB_A",
            0,
            150,
        ),
        Quantity(
            "temperature",
            "Air temperature",
            "Lufttemperatur",
            "http://vocab.nerc.ac.uk/standard_name/air_temperature/",
            "degree Celsius",
            "°C",
            "http://qudt.org/vocab/unit/DEG_C",
            -60,
            70,
        ),
        Quantity(
            "humidity",
            "Relative humidity",
            "Relative Luftfeuchte",
            "http://vocab.nerc.ac.uk/standard_name/relative_humidity/",
            "percent",
            "%",
            "http://qudt.org/vocab/unit/PERCENT",
            0,
            100,
        ),
        Quantity(
            "pressure",
            "Air pressure",
            "Luftdruck",
            "http://vocab.nerc.ac.uk/standard_name/air_pressure/",
            "hectopascal",
            "hPa",
            "http://qudt.org/vocab/unit/HectoPA",
            300,
            1100,
        ),
        Quantity(
            "co2",
            "Carbon dioxide",
            "Kohlendioxid",
            "urn:quartier:property:co2",
            "parts per million",
            "ppm",
            "http://qudt.org/vocab/unit/PPM",
            0,
            40000,
        ),
        Quantity(
            "traffic_count",
            "Traffic count",
            "Verkehrszählung",
            "urn:quartier:property:traffic-count",
            "vehicles per interval",
            "{vehicles}",
            "http://qudt.org/vocab/unit/NUM",
            0,
            100000,
        ),
        Quantity(
            "parking_occupied",
            "Parking space occupied",
            "Parkplatz belegt",
            "urn:quartier:property:parking-occupied",
            "boolean (0/1)",
            "1",
            "http://qudt.org/vocab/unit/UNITLESS",
            0,
            1,
        ),
        Quantity(
            "battery",
            "Battery level",
            "Batteriestand",
            "urn:quartier:property:battery",
            "percent",
            "%",
            "http://qudt.org/vocab/unit/PERCENT",
            0,
            100,
        ),
    ]
}
