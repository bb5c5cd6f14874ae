"""Indicators: the catalogue of definitions, the value model with provenance, and the glue that
turns per-scope results of the pure math into values.

The math lives in ``coverage_indicators`` (broadband, mobile), ``environment`` (air, noise),
``network`` (sensor network) and here (``gigabit_cell_share_by_district``, from speed tests);
``compute`` is the thin I/O that feeds it from the store. Manual indicators
(``origin="manual"``) are not computed: their values are recorded through the API or a CSV
import (``manual``).

Length: one job; most of it is the catalogue of indicator definitions (data, one per indicator).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from quartier.evaluation.scopes import CITY, ScopeResult, Scopes
from quartier.geo import speedtest_cells

log = logging.getLogger(__name__)

Family = Literal["speedtest", "broadband", "mobile", "environment", "network", "manual"]
Direction = Literal["increase", "decrease"]


class IndicatorDefinition(BaseModel):
    """A catalogue entry: what an indicator measures, in which unit, after which standard, for
    which areas and periods, and how it is obtained (``family``: which computation, or manual)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name_de: str
    name_en: str
    unit: str
    description_de: str = ""
    description_en: str = ""
    category: str = ""
    standard: str | None = None
    scopes: tuple[str, ...] = (CITY, "stadtbezirk")
    time_resolution: str = "snapshot"
    family: Family = "manual"
    origin: Literal["computed", "manual"] = "computed"
    better: Direction | None = None

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """The range values can take: 0…100 for shares, ≥ 0 for everything in the catalogue."""
        return (0.0, 100.0) if self.unit == "%" else (0.0, None)

    def name(self, lang: str) -> str:
        return self.name_en if lang == "en" else self.name_de

    def description(self, lang: str) -> str:
        return (self.description_en or self.description_de) if lang == "en" else self.description_de


class IndicatorValue(BaseModel):
    """One value of one indicator for one area and period, with where it came from.

    ``value`` is None when the area has no data (which is not the same as 0). ``variant`` names a
    breakdown inside the area (e.g. ``operator:Telekom``), "" for the total. ``provenance`` holds
    the data range used (``data_from``, ``data_to``), amounts and method; manual values carry
    ``source`` and ``origin="manual"``.
    """

    model_config = ConfigDict(frozen=True)

    indicator_id: str
    name_de: str
    name_en: str
    unit: str
    scope_type: str
    scope_code: str
    scope_name: str
    variant: str = ""
    value: float | None
    numerator: float | None = None
    denominator: float | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    computed_at: datetime
    origin: Literal["computed", "manual"] = "computed"
    source: str | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)


def to_values(
    definition: IndicatorDefinition,
    results: Iterable[ScopeResult],
    scopes: Scopes,
    *,
    period_start: datetime | None,
    period_end: datetime | None,
    computed_at: datetime,
    provenance: Mapping[str, Any] | None = None,
) -> list[IndicatorValue]:
    """Values of ``definition`` from per-scope results; ``provenance`` is copied into each value,
    with the result's details added."""
    base = dict(provenance or {})
    return [
        IndicatorValue(
            indicator_id=definition.id,
            name_de=definition.name_de,
            name_en=definition.name_en,
            unit=definition.unit,
            scope_type=r.scope_type,
            scope_code=r.scope_code,
            scope_name=scopes.name(r.scope_type, r.scope_code),
            variant=r.variant,
            value=None if r.value is None or not np.isfinite(r.value) else float(r.value),
            numerator=r.numerator,
            denominator=r.denominator,
            period_start=period_start,
            period_end=period_end,
            computed_at=computed_at,
            provenance={**base, **r.details},
        )
        for r in results
    ]


def _d(**kw: Any) -> IndicatorDefinition:
    return IndicatorDefinition(**kw)


_EU_AQ = "Richtlinie 2008/50/EG; ISO 37120:2018 (Umwelt); ITU U4SSC KPI Luftqualität"
_BB_CLASS = (
    "Gigabit-Rahmenregelung / Gigabit-Richtlinie 2.0 des Bundes, EU-Breitbandleitlinien 2023 "
    "(weiße, graue, dunkelgraue Flecken)"
)

DEFINITIONS: tuple[IndicatorDefinition, ...] = (
    # -- broadband (household shares from the geo part's coverage analysis)
    _d(
        id="bb_households_30",
        name_de="Haushalte mit ≥ 30 Mbit/s verfügbar",
        name_en="Households with ≥ 30 Mbit/s available",
        unit="%",
        category="broadband",
        description_de="Anteil der Haushalte in 100-m-Zellen, in denen mindestens 30 Mbit/s "
        "Download von mindestens einem Anbieter verfügbar sind.",
        description_en="Share of households in 100 m cells where at least one operator offers "
        "30 Mbit/s download or more.",
        standard="Breitbandatlas (Gigabitbüro des Bundes), Verfügbarkeitsklasse ≥ 30 Mbit/s; "
        "EU-Breitbandziel 2020",
        family="broadband",
        better="increase",
    ),
    _d(
        id="bb_households_100",
        name_de="Haushalte mit ≥ 100 Mbit/s verfügbar",
        name_en="Households with ≥ 100 Mbit/s available",
        unit="%",
        category="broadband",
        description_de="Anteil der Haushalte, in deren Zelle mindestens 100 Mbit/s verfügbar sind.",
        description_en="Share of households whose cell has at least 100 Mbit/s available.",
        standard="Breitbandatlas ≥ 100 Mbit/s; ISO 37122:2019 (Telekommunikation: Anteil der "
        "Bevölkerung mit ausreichend schnellem Breitband)",
        family="broadband",
        better="increase",
    ),
    _d(
        id="bb_households_1000",
        name_de="Haushalte mit Gigabit (≥ 1000 Mbit/s) verfügbar",
        name_en="Households with gigabit (≥ 1000 Mbit/s) available",
        unit="%",
        category="broadband",
        description_de="Anteil der Haushalte, in deren Zelle mindestens 1000 Mbit/s verfügbar "
        "sind.",
        description_en="Share of households whose cell has at least 1000 Mbit/s available.",
        standard="EU Digital Decade 2030 (Gigabit für alle Haushalte); Gigabitstrategie der "
        "Bundesregierung 2022",
        family="broadband",
        better="increase",
    ),
    _d(
        id="bb_households_fibre",
        name_de="Haushalte mit FTTH/FTTB",
        name_en="Households with FTTH/FTTB",
        unit="%",
        category="broadband",
        description_de="Anteil der Haushalte, in deren Zelle Glasfaser bis ins Gebäude (FTTB) "
        "oder bis in die Wohnung (FTTH) verfügbar ist.",
        description_en="Share of households whose cell has fibre to the building or home.",
        standard="Gigabitstrategie 2022 (50 % Glasfaser bis Ende 2025, flächendeckend bis 2030)",
        family="broadband",
        better="increase",
    ),
    _d(
        id="bb_households_white",
        name_de="Haushalte in weißen Flecken",
        name_en="Households in white areas",
        unit="%",
        category="broadband",
        description_de="Anteil der Haushalte in Zellen der Förderklasse „weiß“ (Zähler: Anzahl "
        "Haushalte). Die Klasse vergibt die Versorgungsanalyse (quartier.geo).",
        description_en="Share of households in cells classified white (numerator: households).",
        standard=_BB_CLASS,
        family="broadband",
        better="decrease",
    ),
    _d(
        id="bb_households_grey",
        name_de="Haushalte in grauen Flecken",
        name_en="Households in grey areas",
        unit="%",
        category="broadband",
        description_de="Anteil der Haushalte in Zellen der Förderklasse „grau“ (Zähler: Anzahl "
        "Haushalte).",
        description_en="Share of households in cells classified grey (numerator: households).",
        standard=_BB_CLASS,
        family="broadband",
        better="decrease",
    ),
    _d(
        id="bb_households_dark_grey",
        name_de="Haushalte in dunkelgrauen Flecken",
        name_en="Households in dark-grey areas",
        unit="%",
        category="broadband",
        description_de="Anteil der Haushalte in Zellen der Förderklasse „dunkelgrau“ (Zähler: "
        "Anzahl Haushalte).",
        description_en="Share of households in cells classified dark grey (numerator: households).",
        standard=_BB_CLASS,
        family="broadband",
        better="decrease",
    ),
    _d(
        id="gigabit_cell_share",
        name_de="Anteil gemessener 100-m-Zellen mit Gigabit-Download",
        name_en="Share of measured 100 m cells with gigabit download",
        unit="%",
        category="broadband",
        description_de="Anteil der 100-m-Gitterzellen (INSPIRE, EPSG:3035) mit mindestens einer "
        "Speedtest-Messung, deren Median der gemessenen Download-Geschwindigkeit mindestens "
        "1000 Mbit/s beträgt.",
        description_en="Share of 100 m cells with speed tests whose median measured download is "
        "at least 1000 Mbit/s.",
        standard=None,
        scopes=("stadtbezirk",),
        time_resolution="all tests up to the date",
        family="speedtest",
        better="increase",
    ),
    # -- mobile
    _d(
        id="mobile_4g_area_share",
        name_de="Flächenanteil mit 4G (LTE) oder besser",
        name_en="Area share with 4G (LTE) or better",
        unit="%",
        category="mobile",
        description_de="Anteil der Fläche, auf der mindestens ein Netzbetreiber 4G oder 5G "
        "anbietet; je Betreiber als Variante „operator:<Name>“.",
        description_en="Share of the area where at least one operator offers 4G or 5G; per "
        "operator as variant 'operator:<name>'.",
        standard="Mobilfunk-Monitoring der Bundesnetzagentur; Mobilfunkstrategie des Bundes",
        family="mobile",
        better="increase",
    ),
    _d(
        id="mobile_5g_area_share",
        name_de="Flächenanteil mit 5G",
        name_en="Area share with 5G",
        unit="%",
        category="mobile",
        description_de="Anteil der Fläche, auf der mindestens ein Netzbetreiber 5G anbietet; je "
        "Betreiber als Variante „operator:<Name>“.",
        description_en="Share of the area where at least one operator offers 5G.",
        standard="EU Digital Decade 2030 (5G in allen besiedelten Gebieten); Gigabitstrategie 2022",
        family="mobile",
        better="increase",
    ),
    _d(
        id="mobile_dead_zone_area",
        name_de="Funklochfläche",
        name_en="Dead-zone area",
        unit="km²",
        category="mobile",
        description_de="Fläche, auf der kein Netzbetreiber mobiles Breitband (4G oder 5G) "
        "anbietet, innerhalb der analysierten Fläche (Anteil in der Herkunftsangabe).",
        description_en="Area where no operator offers mobile broadband (4G or 5G).",
        standard="Mobilfunk-Monitoring der Bundesnetzagentur („Funklöcher“)",
        family="mobile",
        better="decrease",
    ),
    # -- environment
    *[
        _d(
            id=f"{key}_{kind}_mean",
            name_de=f"{label}: "
            + ("Jahresmittel" if kind == "annual" else "gleitendes 365-Tage-Mittel"),
            name_en=f"{label}: {'annual mean' if kind == 'annual' else 'rolling 365-day mean'}",
            unit="µg/m³",
            category="environment",
            description_de=(
                "Mittel der gültigen Tagesmittel (≥ 18 Stundenwerte) je Messstation "
                + (
                    "im Kalenderjahr bis zum Stichtag"
                    if kind == "annual"
                    else "der letzten 365 Tage vor dem Stichtag"
                )
                + ", gemittelt über die Stationen im Gebiet."
            ),
            description_en=(
                "Mean of the valid daily means (≥ 18 hourly values) per station "
                + ("in the calendar year to date" if kind == "annual" else "over the last 365 days")
                + ", averaged over the stations in the area."
            ),
            standard=f"{_EU_AQ}; Grenzwert {limit} µg/m³, WHO 2021: {who} µg/m³",
            time_resolution="calendar_year" if kind == "annual" else "rolling_365d",
            family="environment",
            better="decrease",
        )
        for key, label, limit, who in (
            ("pm25", "PM2,5", 25, 5),
            ("pm10", "PM10", 40, 15),
            ("no2", "NO₂", 40, 10),
        )
        for kind in ("annual", "rolling")
    ],
    _d(
        id="pm10_days_over_50",
        name_de="Tage mit PM10-Tagesmittel über 50 µg/m³",
        name_en="Days with PM10 daily mean above 50 µg/m³",
        unit="Tage",
        category="environment",
        description_de="Anzahl der Tage im Kalenderjahr mit gültigem PM10-Tagesmittel über "
        "50 µg/m³, an der Station mit den meisten solchen Tagen (zulässig: 35 Tage im Jahr).",
        description_en="Days in the calendar year with a valid PM10 daily mean above 50 µg/m³, at "
        "the station with the most such days (EU limit: 35 per year).",
        standard="Richtlinie 2008/50/EG, Anhang XI (50 µg/m³, 35 Überschreitungen/Jahr)",
        time_resolution="calendar_year",
        family="environment",
        better="decrease",
    ),
    _d(
        id="pm25_days_over_who",
        name_de="Tage mit PM2,5-Tagesmittel über WHO-Richtwert",
        name_en="Days with PM2.5 daily mean above the WHO guideline",
        unit="Tage",
        category="environment",
        description_de="Anzahl der Tage im Kalenderjahr mit gültigem PM2,5-Tagesmittel über "
        "15 µg/m³, an der Station mit den meisten solchen Tagen.",
        description_en="Days in the calendar year with a valid PM2.5 daily mean above 15 µg/m³.",
        standard="WHO Global Air Quality Guidelines 2021 (24-h-Richtwert 15 µg/m³, 3–4 Tage/Jahr)",
        time_resolution="calendar_year",
        family="environment",
        better="decrease",
    ),
    _d(
        id="noise_lden_over_55_share",
        name_de="Lärmsensoren mit Lden über 55 dB",
        name_en="Noise sensors with Lden above 55 dB",
        unit="%",
        category="environment",
        description_de="Anteil der Lärmsensoren, deren Lden (Tag-Abend-Nacht-Pegel) im "
        "Kalenderjahr bis zum Stichtag 55 dB übersteigt.",
        description_en="Share of noise sensors whose Lden in the calendar year to date exceeds "
        "55 dB.",
        standard="Umgebungslärmrichtlinie 2002/49/EG (Lden, Kartierungsschwelle 55 dB); WHO "
        "Environmental Noise Guidelines 2018",
        time_resolution="calendar_year",
        family="environment",
        better="decrease",
    ),
    # -- sensor network
    _d(
        id="sensor_availability",
        name_de="Verfügbarkeit des Sensornetzes",
        name_en="Sensor network availability",
        unit="%",
        category="sensor_network",
        description_de="Anteil der erwarteten Messwerte der letzten 24 Stunden, die angekommen "
        "sind (erwartetes Intervall aus der Datastream-Eigenschaft interval_s, sonst dem Median "
        "der Abstände der letzten 7 Tage).",
        description_en="Share of the expected readings of the last 24 hours that arrived.",
        time_resolution="rolling_24h",
        family="network",
        better="increase",
    ),
    _d(
        id="sensor_stale_count",
        name_de="Sensoren ohne aktuelle Daten",
        name_en="Stale sensors",
        unit="Sensoren",
        category="sensor_network",
        description_de="Anzahl der Sensoren (Things), deren letzter Messwert älter als eine "
        "Stunde ist oder die nie gemeldet haben.",
        description_en="Sensors (Things) whose latest reading is older than one hour, or that "
        "never reported.",
        time_resolution="instant",
        family="network",
        better="decrease",
    ),
    _d(
        id="sensor_data_freshness",
        name_de="Datenaktualität (Median)",
        name_en="Data freshness (median)",
        unit="min",
        category="sensor_network",
        description_de="Median des Alters des letzten Messwerts der in den letzten 30 Tagen "
        "aktiven Sensoren, in Minuten.",
        description_en="Median age of the latest reading of sensors active in the last 30 days.",
        time_resolution="instant",
        family="network",
        better="decrease",
    ),
    # -- manual (recorded through the API or a CSV import)
    _d(
        id="ozg_services_online_share",
        name_de="Online verfügbare Verwaltungsleistungen (OZG)",
        name_en="Administrative services available online (OZG)",
        unit="%",
        category="egovernment",
        description_de="Anteil der OZG-Leistungen der Stadt, die vollständig online beantragt "
        "werden können (Reifegrad ≥ 2).",
        description_en="Share of the city's OZG services that can be applied for online.",
        standard="Onlinezugangsgesetz (OZG), OZG-Dashboard; EU Digital Decade 2030 (100 % der "
        "wichtigen öffentlichen Dienste online); ITU U4SSC KPI E-Government",
        scopes=(CITY,),
        time_resolution="reported",
        family="manual",
        origin="manual",
        better="increase",
    ),
    _d(
        id="digital_skills_participants",
        name_de="Teilnehmende an Kursen zu digitalen Kompetenzen",
        name_en="Participants in digital-skills courses",
        unit="Personen",
        category="education",
        description_de="Teilnehmende an städtischen oder geförderten Kursen zu digitalen "
        "Kompetenzen im Berichtsjahr (VHS, Bibliotheken, Quartierszentren).",
        description_en="Participants in municipal or funded digital-skills courses in the year.",
        standard="EU Digital Decade 2030 (80 % mit digitalen Grundkompetenzen)",
        scopes=(CITY, "stadtbezirk"),
        time_resolution="reported",
        family="manual",
        origin="manual",
        better="increase",
    ),
    _d(
        id="schools_gigabit_share",
        name_de="Schulen mit Gigabit-Anschluss",
        name_en="Schools with a gigabit connection",
        unit="%",
        category="education",
        description_de="Anteil der städtischen Schulen mit einem Anschluss ≥ 1 Gbit/s.",
        description_en="Share of municipal schools with a connection of at least 1 Gbit/s.",
        standard="Gigabitstrategie 2022 (Schulen gigabitfähig); DigitalPakt Schule; ITU U4SSC",
        scopes=(CITY, "stadtbezirk"),
        time_resolution="reported",
        family="manual",
        origin="manual",
        better="increase",
    ),
    _d(
        id="business_parks_gigabit_share",
        name_de="Gewerbegebiete mit Gigabit-Anschluss",
        name_en="Business parks with gigabit access",
        unit="%",
        category="economy",
        description_de="Anteil der ausgewiesenen Gewerbegebiete mit gigabitfähiger Versorgung.",
        description_en="Share of designated business parks with gigabit-capable access.",
        standard="Gigabitstrategie 2022; EU Digital Decade 2030",
        scopes=(CITY,),
        time_resolution="reported",
        family="manual",
        origin="manual",
        better="increase",
    ),
    _d(
        id="open_data_datasets",
        name_de="Offene Datensätze im Open-Data-Portal",
        name_en="Datasets on the open-data portal",
        unit="Datensätze",
        category="smart_city",
        description_de="Anzahl der im Open-Data-Portal der Stadt veröffentlichten Datensätze.",
        description_en="Number of datasets published on the city's open-data portal.",
        standard="ITU U4SSC KPI Open Data; Open-Data-Gesetz NRW",
        scopes=(CITY,),
        time_resolution="reported",
        family="manual",
        origin="manual",
        better="increase",
    ),
)

CATALOGUE: dict[str, IndicatorDefinition] = {d.id: d for d in DEFINITIONS}
GIGABIT_CELL_SHARE = CATALOGUE["gigabit_cell_share"]


def get_definition(indicator_id: str) -> IndicatorDefinition:
    """The catalogue entry, or ``KeyError`` naming the known ids."""
    try:
        return CATALOGUE[indicator_id]
    except KeyError:
        raise KeyError(
            f"unknown indicator {indicator_id!r}; known: {', '.join(sorted(CATALOGUE))}"
        ) from None


def gigabit_cell_share_by_district(
    cells: gpd.GeoDataFrame,
    districts: gpd.GeoDataFrame,
    *,
    scope_type: str = "stadtbezirk",
    period_start: datetime | None = None,
    period_end: datetime | None = None,
    computed_at: datetime | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> list[IndicatorValue]:
    """Per district (in ``districts`` order): the percentage of measured cells in the gigabit class.

    ``cells`` as from :func:`quartier.geo.speedtest_cells.classify_cells` (``district_code``,
    ``class_key``, ``n_tests``); ``districts`` with ``code`` and ``name``. Numerator: gigabit
    cells, denominator: measured cells in the district; a district without measured cells gets
    value None. ``provenance`` is copied into every value, plus the tests and cells in scope.
    """
    missing = {"district_code", "class_key", "n_tests"} - set(cells.columns)
    if missing:
        raise ValueError(f"cells lack columns: {', '.join(sorted(missing))}")
    stamp = computed_at or datetime.now(UTC)
    per_district = (
        pd.DataFrame(
            {
                "code": cells["district_code"].astype(object),
                "gigabit": (cells["class_key"] == speedtest_cells.GIGABIT_CLASS).astype(np.int64),
                "n_tests": cells["n_tests"].astype(np.int64),
            }
        )
        .dropna(subset=["code"])
        .groupby("code")
        .agg(cells=("gigabit", "size"), gigabit=("gigabit", "sum"), tests=("n_tests", "sum"))
    )
    codes = districts["code"].astype(str).tolist()
    names = (districts["name"] if "name" in districts.columns else districts["code"]).astype(str)
    stats = per_district.reindex(codes, fill_value=0)
    n_cells = stats["cells"].to_numpy(dtype=np.int64)
    n_gigabit = stats["gigabit"].to_numpy(dtype=np.int64)
    n_tests = stats["tests"].to_numpy(dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n_cells > 0, 100.0 * n_gigabit / np.maximum(n_cells, 1), np.nan)
    base = dict(provenance or {})
    definition = GIGABIT_CELL_SHARE
    return [
        IndicatorValue(
            indicator_id=definition.id,
            name_de=definition.name_de,
            name_en=definition.name_en,
            unit=definition.unit,
            scope_type=scope_type,
            scope_code=code,
            scope_name=name,
            value=float(s) if np.isfinite(s) else None,
            numerator=float(g),
            denominator=float(c),
            period_start=period_start,
            period_end=period_end,
            computed_at=stamp,
            provenance={**base, "cells_in_scope": int(c), "tests_in_scope": int(t)},
        )
        for code, name, s, g, c, t in zip(
            codes, names.tolist(), share, n_gigabit, n_cells, n_tests, strict=True
        )
    ]
