"""Indicators: a catalogue of definitions, the value model with provenance, and the math.

The math (``gigabit_cell_share_by_district``) takes classified cells and districts and returns
values; ``compute_indicators`` is the thin I/O around it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
from pydantic import BaseModel, ConfigDict, Field

from quartier.geo import coverage, grid
from quartier.geo import io as geo_io

log = logging.getLogger(__name__)


class IndicatorDefinition(BaseModel):
    """A catalogue entry: what an indicator measures and in which unit."""

    model_config = ConfigDict(frozen=True)

    id: str
    name_de: str
    name_en: str
    unit: str
    description_de: str = ""


class IndicatorValue(BaseModel):
    """One value of one indicator for one area and period, with where it came from.

    ``value`` is None when the area has no data (which is not the same as 0).
    """

    model_config = ConfigDict(frozen=True)

    indicator_id: str
    name_de: str
    name_en: str
    unit: str
    scope_type: str
    scope_code: str
    scope_name: str
    value: float | None
    numerator: float | None = None
    denominator: float | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    computed_at: datetime
    provenance: dict[str, Any] = Field(default_factory=dict)


GIGABIT_CELL_SHARE = IndicatorDefinition(
    id="gigabit_cell_share",
    name_de="Anteil gemessener 100-m-Zellen mit Gigabit-Download",
    name_en="Share of measured 100 m cells with gigabit download",
    unit="%",
    description_de=(
        "Anteil der 100-m-Gitterzellen (INSPIRE, EPSG:3035) mit mindestens einer Speedtest-Messung,"
        " deren Median der gemessenen Download-Geschwindigkeit mindestens 1000 Mbit/s beträgt."
    ),
)

CATALOGUE: dict[str, IndicatorDefinition] = {GIGABIT_CELL_SHARE.id: GIGABIT_CELL_SHARE}


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

    ``cells`` as from :func:`quartier.geo.coverage.classify_cells` (``district_code``,
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
                "gigabit": (cells["class_key"] == coverage.GIGABIT_CLASS).astype(np.int64),
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


def compute_indicators(
    conn: psycopg.Connection[Any], now: datetime, *, since: datetime | None = None
) -> list[IndicatorValue]:
    """Compute every catalogued indicator from the store, as of ``now`` (tz-aware).

    Uses the speed tests measured up to ``now`` (and from ``since``, if given) and the
    Stadtbezirke from ``district``. Returns [] (and logs a warning) if no Stadtbezirke are loaded.
    Provenance: tests and cells used (inside a Stadtbezirk), tests loaded for the period and the
    time range (``data_from``, ``data_to``) and sources of the loaded tests, and the method.
    """
    if now.tzinfo is None or (since is not None and since.tzinfo is None):
        raise ValueError("now and since must be timezone-aware")
    districts = geo_io.load_districts(conn, "stadtbezirk")
    if districts.empty:
        log.warning("no Stadtbezirke in the district table; run the district import first")
        return []
    tests = geo_io.load_speedtests(conn, since=since, until=now)
    cells = coverage.classify_cells(tests, districts)
    first = tests["measured_at"].min() if len(tests) else None
    last = tests["measured_at"].max() if len(tests) else None
    in_city = cells["district_code"].notna().to_numpy()
    provenance: dict[str, Any] = {
        "source": "speedtest",
        # tests in cells whose centre lies in a Stadtbezirk, and every test of the period
        "tests_used": int(cells.loc[in_city, "n_tests"].sum()),
        "tests_loaded": len(tests),
        "data_from": first.isoformat() if first is not None else None,
        "data_to": last.isoformat() if last is not None else None,
        "sources": sorted(str(v) for v in tests["source"].dropna().unique()),
        "cells_measured": int(in_city.sum()),
        "grid": f"INSPIRE {grid.CELL_SIZE_M} m ({grid.GRID_CRS})",
        "cell_value": "median download_mbps",
        "class_bounds_mbps": [c.lower_mbps for c in coverage.SPEED_CLASSES[1:]],
        "district_assignment": "Stadtbezirk polygon containing the cell centre",
    }
    period_start = since or (first.to_pydatetime() if first is not None else None)
    values = gigabit_cell_share_by_district(
        cells,
        districts,
        period_start=period_start,
        period_end=now,
        computed_at=now,
        provenance=provenance,
    )
    log.info(
        "computed %d indicator values from %d speed tests", len(values), provenance["tests_used"]
    )
    return values
