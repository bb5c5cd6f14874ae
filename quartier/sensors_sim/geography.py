"""Köln's Stadtteile and Stadtbezirke with their population, read once from the packaged data.

Pure apart from reading ``quartier/data`` through ``importlib.resources``; the result is cached.
Geometries are WGS84 (lon, lat) shapely polygons, prepared for fast point-in-polygon tests.
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

STADTTEILE_FILE = "koeln_stadtteile.geojson"
STADTBEZIRKE_FILE = "koeln_stadtbezirke.geojson"
POPULATION_FILE = "koeln_bevoelkerung_2012_stadtteile.csv"
#: Table "Einwohner in Köln" of the population statistics.
POPULATION_TABLE = "005"


@dataclass(frozen=True, slots=True)
class Stadtbezirk:
    code: str  # "1".."9"
    name: str
    geometry: BaseGeometry


@dataclass(frozen=True, slots=True)
class Stadtteil:
    code: str  # "101".."909"; the first digit is the Stadtbezirk
    name: str
    stadtbezirk: str
    population: int
    geometry: BaseGeometry


@dataclass(frozen=True, slots=True)
class Geography:
    stadtteile: tuple[Stadtteil, ...]  # ordered by code
    stadtbezirke: dict[str, Stadtbezirk]
    #: population share of each Stadtteil, in the order of ``stadtteile``
    weights: np.ndarray[Any, np.dtype[np.float64]]

    def sample_point(self, rng: np.random.Generator, stadtteil: Stadtteil) -> tuple[float, float]:
        """A point (lat, lon), rounded to 6 decimals, uniformly inside the Stadtteil and its
        Stadtbezirk (rejection sampling in the bounding box)."""
        bezirk = self.stadtbezirke[stadtteil.stadtbezirk].geometry
        minx, miny, maxx, maxy = stadtteil.geometry.bounds
        for _ in range(10_000):
            lon = round(float(rng.uniform(minx, maxx)), 6)
            lat = round(float(rng.uniform(miny, maxy)), 6)
            if shapely.contains_xy(stadtteil.geometry, lon, lat) and shapely.contains_xy(
                bezirk, lon, lat
            ):
                return lat, lon
        raise RuntimeError(f"could not place a point in Stadtteil {stadtteil.code}")

    def pick_stadtteil(self, rng: np.random.Generator) -> Stadtteil:
        """A Stadtteil drawn with probability proportional to its population."""
        return self.stadtteile[int(rng.choice(len(self.stadtteile), p=self.weights))]


def _data_text(name: str) -> str:
    try:
        data = resources.files("quartier").joinpath("data")
    except (NotADirectoryError, TypeError):
        # ``quartier`` without an ``__init__.py`` is a namespace package, and Python 3.11 cannot
        # build resource paths for one that an editable install also lists; read beside us.
        data = Path(__file__).resolve().parent.parent / "data"
    return data.joinpath(name).read_text(encoding="utf-8")


def _features(name: str) -> list[dict[str, Any]]:
    doc = orjson.loads(_data_text(name))
    features: list[dict[str, Any]] = doc["features"]
    return features


def _population() -> dict[str, int]:
    people: dict[str, int] = {}
    for row in csv.DictReader(io.StringIO(_data_text(POPULATION_FILE))):
        raum = row["raum_id"]
        if row["tab_id"] == POPULATION_TABLE and len(raum) == 3 and not raum.startswith("0"):
            people[raum] = round(float(row["zahl"]))
    return people


def _polygon(geometry: dict[str, Any]) -> BaseGeometry:
    geom = shape(geometry)
    if not geom.is_valid:  # a few Stadtteil outlines self-touch
        geom = shapely.make_valid(geom)
    shapely.prepare(geom)
    return geom


@functools.cache
def geography() -> Geography:
    bezirke = {
        f["properties"]["STB_NR"]: Stadtbezirk(
            f["properties"]["STB_NR"], f["properties"]["STB_NAME"], _polygon(f["geometry"])
        )
        for f in _features(STADTBEZIRKE_FILE)
    }
    people = _population()
    teile = tuple(
        sorted(
            (
                Stadtteil(
                    code=(code := f["properties"]["STT_NR"]),
                    name=f["properties"]["STT_NAME"],
                    stadtbezirk=code[0],
                    population=people.get(code, 0),
                    geometry=_polygon(f["geometry"]),
                )
                for f in _features(STADTTEILE_FILE)
            ),
            key=lambda s: s.code,
        )
    )
    pop = np.array([max(s.population, 1) for s in teile], dtype=np.float64)
    return Geography(teile, bezirke, pop / pop.sum())
