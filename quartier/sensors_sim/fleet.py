"""A deterministic fleet of simulated city sensors in Köln, and crowdsourced speed tests.

Pure: no I/O besides reading the packaged geography once. Sensor placement comes from a numpy
Generator seeded by ``(seed, kind, number)``; every value is a function of ``(seed, sensor, time)``
(smooth city-wide "weather" and per-reading noise are derived from hashes), so ``readings_at(t)``
returns identical bytes however often and in whatever order it is called. Messages follow
``docs/mqtt.md``: ``quartier/v1/{network}/{device}/up`` with a native JSON batch, and
``quartier/v1/{network}/crowd-{k}/speedtest``.

Daily patterns use Europe/Berlin local time: traffic peaks in the morning and evening rush hours
on weekdays (a broad midday hump at weekends) and is low at night; NO2 and noise follow traffic;
PM2.5/PM10 ride on a slowly varying background (higher in winter); temperature is a daily curve
(minimum near 05:00, maximum near 15:00) around a seasonal mean, relative humidity moves against
it. ``traffic_count`` is vehicles per 5 minutes (``parameters.interval_s`` says so).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import numpy as np
import orjson

from quartier.sensors_sim.geography import Geography, Stadtteil, geography

BERLIN: Final = ZoneInfo("Europe/Berlin")

Kind = Literal["air", "noise", "climate", "traffic"]

#: Share of each kind in a fleet, and the quantities each kind measures.
KIND_MIX: Final[dict[Kind, float]] = {"air": 0.4, "noise": 0.2, "climate": 0.2, "traffic": 0.2}
KIND_QUANTITIES: Final[dict[Kind, tuple[str, ...]]] = {
    "air": ("pm25", "pm10", "no2"),
    "noise": ("noise_laeq",),
    "climate": ("temperature", "humidity"),
    "traffic": ("traffic_count",),
}
_KIND_TAG: Final[dict[Kind, int]] = {"air": 1, "noise": 2, "climate": 3, "traffic": 4}
#: traffic_count is the number of vehicles in this many seconds
TRAFFIC_INTERVAL_S: Final = 300

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SPEEDTEST_TAG: Final = 0x5EED
_CROWD_USERS: Final = 10_000

# Speed tests: (technology, share) per Stadtbezirk; operator shares per technology; tariff tiers
# (Mbit/s) with their shares, per technology and "gigabit affinity" of the district.
_TECH_MIX: Final[dict[str, tuple[tuple[str, float], ...]]] = {
    "default": (("ftth", 0.24), ("cable", 0.40), ("dsl", 0.28), ("lte", 0.08)),
    "1": (("ftth", 0.40), ("cable", 0.40), ("dsl", 0.15), ("lte", 0.05)),  # Innenstadt
    "6": (("ftth", 0.10), ("cable", 0.32), ("dsl", 0.42), ("lte", 0.16)),  # Chorweiler
    "7": (("ftth", 0.12), ("cable", 0.33), ("dsl", 0.40), ("lte", 0.15)),  # Porz
}
_OPERATORS: Final[dict[str, tuple[tuple[str, float], ...]]] = {
    "ftth": (("NetCologne", 0.55), ("Telekom", 0.35), ("1&1", 0.10)),
    "cable": (("Vodafone", 0.9), ("NetCologne", 0.1)),
    "dsl": (("Telekom", 0.45), ("1&1", 0.25), ("NetCologne", 0.2), ("O2", 0.1)),
    "lte": (("Telekom", 0.35), ("Vodafone", 0.35), ("O2", 0.3)),
}
_TIERS: Final[dict[str, tuple[float, ...]]] = {
    "ftth": (300, 500, 1000, 2000),
    "cable": (100, 250, 500, 1000),
    "dsl": (16, 50, 100, 250),
}
_TIER_SHARES: Final[dict[str, dict[str, tuple[float, ...]]]] = {
    "high": {
        "ftth": (0.15, 0.30, 0.45, 0.10),
        "cable": (0.10, 0.25, 0.30, 0.35),
        "dsl": (0.05, 0.20, 0.45, 0.30),
    },
    "mid": {
        "ftth": (0.30, 0.35, 0.30, 0.05),
        "cable": (0.20, 0.35, 0.30, 0.15),
        "dsl": (0.15, 0.30, 0.40, 0.15),
    },
    "low": {
        "ftth": (0.45, 0.35, 0.18, 0.02),
        "cable": (0.35, 0.35, 0.22, 0.08),
        "dsl": (0.30, 0.40, 0.25, 0.05),
    },
}
_AFFINITY: Final[dict[str, str]] = {"1": "high", "6": "low", "7": "low"}


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message to publish."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Sensor:
    key: str  # device key, e.g. "air-0007"
    kind: Kind
    lat: float
    lon: float
    stadtteil: str  # STT_NR, e.g. "101"
    stadtteil_name: str
    stadtbezirk: str  # STB_NR, "1".."9"

    @property
    def quantities(self) -> tuple[str, ...]:
        return KIND_QUANTITIES[self.kind]


@dataclass(frozen=True, slots=True)
class _Site:
    """Per-sensor constants that make sensors differ: how busy its road is, its local offsets."""

    road: float  # 0.25..1.2: share of the city's traffic signal this site sees
    capacity: float  # vehicles per 5 min at the rush-hour peak
    pm_offset: float  # µg/m³
    pm_ratio: float  # PM10 / PM2.5
    noise_base: float  # dB(A) at the rush-hour peak
    heat: float  # °C, urban heat island
    humid: float  # % points


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r} must be 1–64 characters of A-Z a-z 0-9 _ . -")
    return value


def kind_counts(n_sensors: int) -> dict[Kind, int]:
    """How many sensors of each kind a fleet of ``n_sensors`` has (largest remainder)."""
    exact = {k: share * n_sensors for k, share in KIND_MIX.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    rest = n_sensors - sum(counts.values())
    for k in sorted(exact, key=lambda k: counts[k] - exact[k])[:rest]:
        counts[k] += 1
    return counts


def utc_text(t: datetime) -> str:
    """RFC 3339 UTC text with "Z", whole seconds."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return math.floor(t.timestamp())


# --- deterministic randomness -------------------------------------------------------------------


def _hash(*parts: object) -> bytes:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).digest()


def _uniform(*parts: object) -> float:
    """A uniform number in [0, 1) fixed by ``parts``."""
    return int.from_bytes(_hash(*parts)[:8], "big") / 2**64


def _normal(*parts: object) -> float:
    """A standard normal number fixed by ``parts`` (Box-Muller), clipped to ±4."""
    h = _hash(*parts)
    u1 = (int.from_bytes(h[:8], "big") + 1) / (2**64 + 1)
    u2 = int.from_bytes(h[8:], "big") / 2**64
    return max(-4.0, min(4.0, math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)))


def _smooth(seed: int, name: str, epoch: float, period_s: float) -> float:
    """Value noise in [-1, 1] that varies smoothly over ``period_s`` (city-wide "weather")."""
    x = epoch / period_s
    i = math.floor(x)
    f = x - i
    a = 2 * _uniform(seed, name, i) - 1
    b = 2 * _uniform(seed, name, i + 1) - 1
    return a + (b - a) * f * f * (3 - 2 * f)


# --- daily and seasonal shapes --------------------------------------------------------------------


def _gauss(x: float, mu: float, sigma: float) -> float:
    return math.exp(-0.5 * ((x - mu) / sigma) ** 2)


def traffic_profile(local: datetime) -> float:
    """Relative traffic (about 0.05 at night, about 1 at the weekday morning peak)."""
    h = local.hour + local.minute / 60 + local.second / 3600
    wd = local.weekday()
    if wd < 5:
        day = 1.0 * _gauss(h, 7.75, 1.0) + 0.9 * _gauss(h, 17.0, 1.5) + 0.5 * _gauss(h, 12.5, 2.6)
        return 0.06 + 0.9 * min(day, 1.05)
    if wd == 5:
        return 0.07 + 0.6 * _gauss(h, 13.0, 3.5)
    return 0.05 + 0.4 * _gauss(h, 15.0, 3.5)


def _winter(doy: int) -> float:
    """1 in mid-January, 0 in mid-July."""
    return 0.5 * (1 + math.cos(2 * math.pi * (doy - 15) / 365.25))


def _diurnal(h: float) -> float:
    """-1 at 05:00, +1 at 15:00, a half cosine up (10 h) and a half cosine down (14 h)."""
    if 5.0 <= h < 15.0:
        return -math.cos(math.pi * (h - 5.0) / 10.0)
    return math.cos(math.pi * ((h - 15.0) % 24.0) / 14.0)


# --- the fleet ------------------------------------------------------------------------------------


class Fleet:
    """``n_sensors`` simulated sensors placed in Köln's Stadtteile, weighted by population."""

    def __init__(self, seed: int, n_sensors: int = 40, network: str = "sim") -> None:
        if seed < 0:
            raise ValueError("seed must be >= 0")
        if n_sensors < 0:
            raise ValueError("n_sensors must be >= 0")
        self.seed = seed
        self.network = _check_name(network, "network")
        self._geo: Geography = geography()
        self.sensors: list[Sensor] = []
        self._sites: dict[str, _Site] = {}
        for kind, count in kind_counts(n_sensors).items():
            for number in range(count):
                sensor, site = self._place(kind, number)
                self.sensors.append(sensor)
                self._sites[sensor.key] = site

    def _place(self, kind: Kind, number: int) -> tuple[Sensor, _Site]:
        rng = np.random.default_rng([self.seed, _KIND_TAG[kind], number])
        stt = self._geo.pick_stadtteil(rng)
        lat, lon = self._geo.sample_point(rng, stt)
        inner = stt.stadtbezirk == "1"
        road = float(rng.uniform(0.25, 1.0)) + (0.2 if inner else 0.0)
        site = _Site(
            road=road,
            capacity=float(np.exp(rng.uniform(math.log(40), math.log(300))))
            * (1.3 if inner else 1),
            pm_offset=float(rng.normal(0.0, 1.2)) + (1.5 if inner else 0.0),
            pm_ratio=float(rng.uniform(1.35, 1.8)),
            noise_base=float(rng.uniform(58.0, 69.0)) + (2.0 if inner else 0.0),
            heat=float(rng.uniform(-0.5, 0.8)) + (1.0 if inner else 0.0),
            humid=float(rng.normal(0.0, 2.0)),
        )
        sensor = Sensor(
            key=f"{kind}-{number:04d}",
            kind=kind,
            lat=lat,
            lon=lon,
            stadtteil=stt.code,
            stadtteil_name=stt.name,
            stadtbezirk=stt.stadtbezirk,
        )
        return sensor, site

    @property
    def readings_per_tick(self) -> int:
        """Readings in one call of ``readings_at`` (all quantities of all sensors)."""
        return sum(len(s.quantities) for s in self.sensors)

    def topic(self, sensor: Sensor) -> str:
        return f"quartier/v1/{self.network}/{sensor.key}/up"

    def values_at(self, sensor: Sensor, t: datetime) -> dict[str, float]:
        """The sensor's values at ``t`` (whole seconds), by quantity key."""
        epoch = _epoch(t)
        local = datetime.fromtimestamp(epoch, tz=BERLIN)
        site = self._sites[sensor.key]
        seed, key = self.seed, sensor.key
        if sensor.kind == "traffic":
            profile = traffic_profile(local)
            count = site.capacity * profile * (1 + 0.12 * _normal(seed, key, "traffic", epoch))
            return {"traffic_count": float(max(0, round(count)))}
        if sensor.kind == "noise":
            profile = traffic_profile(local) * (0.5 + 0.5 * site.road) / 0.8
            laeq = site.noise_base + 10 * math.log10(max(profile, 0.01))
            laeq += 1.3 * _normal(seed, key, "noise", epoch)
            return {"noise_laeq": round(min(max(laeq, 35.0), 95.0), 1)}
        doy = local.timetuple().tm_yday
        winter = _winter(doy)
        if sensor.kind == "air":
            traffic = traffic_profile(local) * site.road
            pm_bg = (
                8.0
                + 5.0 * winter
                + 6.0 * _smooth(seed, "pm", epoch, 30 * 3600)
                + 2.0 * _smooth(seed, "pm-short", epoch, 5 * 3600)
            )
            pm25 = max(pm_bg, 4.0) + site.pm_offset + 3.0 * traffic
            pm25 = max(1.0, pm25 + 1.0 * _normal(seed, key, "pm25", epoch))
            pm10 = pm25 * site.pm_ratio + 0.5 + 4.0 * traffic
            pm10 += 1.5 * abs(_normal(seed, key, "pm10", epoch))
            no2_bg = 13.0 + 6.0 * winter + 5.0 * _smooth(seed, "no2", epoch, 18 * 3600)
            no2 = no2_bg + 45.0 * traffic + 2.5 * _normal(seed, key, "no2", epoch)
            return {
                "pm25": round(pm25, 1),
                "pm10": round(pm10, 1),
                "no2": round(min(max(no2, 2.0), 250.0), 1),
            }
        # climate
        h = local.hour + local.minute / 60 + local.second / 3600
        mean = 10.6 - 8.3 * math.cos(2 * math.pi * (doy - 18) / 365.25)
        amplitude = 3.0 + 2.0 * (1 - winter)
        anomaly = 3.0 * _smooth(seed, "temp", epoch, 40 * 3600) + 1.0 * _smooth(
            seed, "temp-short", epoch, 9 * 3600
        )
        daily = amplitude * _diurnal(h)
        temp = mean + daily + anomaly + site.heat + 0.15 * _normal(seed, key, "temp", epoch)
        humidity = (
            70.0
            + 12.0 * winter
            - 2.8 * daily
            - 2.0 * anomaly
            + 5.0 * _smooth(seed, "humidity", epoch, 30 * 3600)
            + site.humid
            + 1.5 * _normal(seed, key, "humidity", epoch)
        )
        return {"temperature": round(temp, 1), "humidity": round(min(max(humidity, 18.0), 99.0), 1)}

    def payload(self, sensor: Sensor, t: datetime) -> bytes:
        readings: list[dict[str, Any]] = []
        for quantity, value in self.values_at(sensor, t).items():
            reading: dict[str, Any] = {"quantity": quantity, "value": value}
            if quantity == "traffic_count":
                reading["value"] = int(value)
                reading["parameters"] = {"interval_s": TRAFFIC_INTERVAL_S}
            readings.append(reading)
        doc = {
            "location": {"lat": sensor.lat, "lon": sensor.lon},
            "time": utc_text(t),
            "readings": readings,
        }
        return orjson.dumps(doc)

    def readings_at(self, t: datetime) -> list[Message]:
        """One batch message per sensor with all its quantities at ``t`` (whole seconds)."""
        return [Message(self.topic(s), self.payload(s, t)) for s in self.sensors]

    # --- crowdsourced speed tests ---------------------------------------------------------------

    def speedtests(self, t: datetime, n: int) -> list[Message]:
        """``n`` speed tests at ``t`` from random places in Köln (weighted by population). Test
        ``i`` depends only on (seed, t, i); device keys are distinct within one call."""
        epoch = _epoch(t)
        first = int(_uniform(self.seed, "crowd", epoch) * _CROWD_USERS)
        return [
            self._speedtest(epoch, i, f"crowd-{(first + i) % _CROWD_USERS:04d}") for i in range(n)
        ]

    def _speedtest(self, epoch: int, index: int, device: str) -> Message:
        rng = np.random.default_rng([self.seed, _SPEEDTEST_TAG, epoch % 2**63, index])
        stt: Stadtteil = self._geo.pick_stadtteil(rng)
        lat, lon = self._geo.sample_point(rng, stt)
        tech = _choose(rng, _TECH_MIX.get(stt.stadtbezirk, _TECH_MIX["default"]))
        operator = _choose(rng, _OPERATORS[tech])
        if tech == "lte":
            down = float(np.clip(rng.lognormal(math.log(40), 0.6), 5.0, 150.0))
            up = down * float(rng.uniform(0.15, 0.4))
            latency = rng.uniform(25, 70)
        else:
            shares = _TIER_SHARES[_AFFINITY.get(stt.stadtbezirk, "mid")][tech]
            tier = _TIERS[tech][int(rng.choice(len(shares), p=np.array(shares) / sum(shares)))]
            if tech == "ftth":
                down = tier * float(rng.uniform(0.72, 1.0))
                up = down * float(rng.uniform(0.2, 0.5))
                latency = rng.uniform(4, 12)
            elif tech == "cable":
                down = tier * float(rng.uniform(0.6, 1.02))
                up = min(down * float(rng.uniform(0.05, 0.1)), 100.0)
                latency = rng.uniform(10, 25)
            else:  # dsl: the line length costs speed
                down = tier * float(rng.uniform(0.6, 1.0))
                up = down * float(rng.uniform(0.1, 0.2))
                latency = rng.uniform(12, 35)
        doc = {
            "time": utc_text(datetime.fromtimestamp(epoch, tz=UTC)),
            "lat": lat,
            "lon": lon,
            "download_mbps": round(down, 1),
            "upload_mbps": round(up, 1),
            "latency_ms": round(float(latency)),
            "technology": tech,
            "operator": operator,
        }
        return Message(f"quartier/v1/{self.network}/{device}/speedtest", orjson.dumps(doc))


def _choose(rng: np.random.Generator, options: tuple[tuple[str, float], ...]) -> str:
    weights = np.array([w for _, w in options])
    return options[int(rng.choice(len(options), p=weights / weights.sum()))][0]
