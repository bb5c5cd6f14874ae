"""Broadband and mobile coverage indicators: pure math on cell tables.

Input interfaces (what the geo part's coverage analysis hands over; see docs/evaluation.md):

Broadband cells, one row per 100 m cell with households:
    ``cell_id``, ``district_code`` (NA outside every district), ``households`` (float >= 0),
    ``max_download_mbps`` (best download available from any operator, NaN: none known),
    ``fibre`` (bool: FTTH or FTTB available), ``funding_class`` ("white", "grey", "dark_grey",
    "black" or NA; classified by the geo part).

Mobile cells, one row per cell of the analysed area (covered or not):
    ``cell_id``, ``district_code``, ``area_m2``.
Mobile offers, one row per cell, operator and technology available there:
    ``cell_id``, ``operator``, ``technology`` ("2g", "3g", "4g", "5g").

Household shares weigh cells by households; area shares by area. A scope without households
(or area) gets None.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from quartier.evaluation.scopes import ScopeResult, Scopes, per_scope, ratio

BROADBAND_COLUMNS = (
    "cell_id", "district_code", "households", "max_download_mbps", "fibre", "funding_class"
)  # fmt: skip
MOBILE_CELL_COLUMNS = ("cell_id", "district_code", "area_m2")
MOBILE_OFFER_COLUMNS = ("cell_id", "operator", "technology")
FUNDING_CLASSES = ("white", "grey", "dark_grey", "black")
TECHNOLOGY_RANK = {"2g": 2, "3g": 3, "4g": 4, "5g": 5}


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = set(columns) - set(frame.columns)
    if missing:
        raise ValueError(f"{what} lack columns: {', '.join(sorted(missing))}")


def _households(frame: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.float64]]:
    hh = pd.to_numeric(frame["households"], errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    return np.where(np.isfinite(hh) & (hh > 0), hh, 0.0)


def _household_share(cells: pd.DataFrame, scopes: Scopes, selected: pd.Series) -> list[ScopeResult]:
    frame = pd.DataFrame(
        {
            "district_code": cells["district_code"],
            "hh": _households(cells),
            "sel": selected.to_numpy(dtype=bool),
        }
    )

    def measure(
        part: pd.DataFrame,
    ) -> tuple[float | None, float | None, float | None, dict[str, Any]]:
        total = float(part["hh"].sum())
        hit = float(part.loc[part["sel"], "hh"].sum())
        return ratio(hit, total), hit, total, {"cells": len(part)}

    return per_scope(frame, scopes, measure)


def households_with_speed(cells: pd.DataFrame, scopes: Scopes, mbps: float) -> list[ScopeResult]:
    """Share (%) of households in cells where at least ``mbps`` download is available."""
    _require(cells, BROADBAND_COLUMNS, "broadband cells")
    speed = pd.to_numeric(cells["max_download_mbps"], errors="coerce")
    return _household_share(cells, scopes, (speed >= mbps).fillna(False))


def households_with_fibre(cells: pd.DataFrame, scopes: Scopes) -> list[ScopeResult]:
    """Share (%) of households in cells with FTTH or FTTB available."""
    _require(cells, BROADBAND_COLUMNS, "broadband cells")
    fibre = cells["fibre"].astype("boolean").fillna(False)
    return _household_share(cells, scopes, fibre)


def households_in_class(cells: pd.DataFrame, scopes: Scopes, klass: str) -> list[ScopeResult]:
    """Share (%) of households in cells of one funding class; the numerator is the household
    count."""
    _require(cells, BROADBAND_COLUMNS, "broadband cells")
    if klass not in FUNDING_CLASSES:
        raise ValueError(f"unknown funding class {klass!r}")
    return _household_share(cells, scopes, (cells["funding_class"] == klass).fillna(False))


def _area_frame(cells: pd.DataFrame, covered_ids: set[str]) -> pd.DataFrame:
    area = pd.to_numeric(cells["area_m2"], errors="coerce").fillna(0.0).clip(lower=0.0)
    return pd.DataFrame(
        {
            "district_code": cells["district_code"],
            "area": area.to_numpy(dtype=np.float64),
            "hit": cells["cell_id"].astype(str).isin(covered_ids).to_numpy(dtype=bool),
        }
    )


def _area_share(
    part: pd.DataFrame,
) -> tuple[float | None, float | None, float | None, dict[str, Any]]:
    total = float(part["area"].sum())
    hit = float(part.loc[part["hit"], "area"].sum())
    return ratio(hit, total), hit / 1e6, total / 1e6, {"cells": len(part)}


def area_with_technology(
    cells: pd.DataFrame, offers: pd.DataFrame, scopes: Scopes, technology: str
) -> list[ScopeResult]:
    """Share (%) of the area where at least ``technology`` (e.g. "4g": 4G or 5G) is available:
    from any operator (variant "") and from each operator (variant "operator:<name>").
    Numerator and denominator in km²."""
    _require(cells, MOBILE_CELL_COLUMNS, "mobile cells")
    _require(offers, MOBILE_OFFER_COLUMNS, "mobile offers")
    floor = TECHNOLOGY_RANK[technology]
    rank = offers["technology"].astype(str).str.lower().map(TECHNOLOGY_RANK).fillna(0)
    good = offers[(rank >= floor).to_numpy(dtype=bool)]
    out = per_scope(_area_frame(cells, set(good["cell_id"].astype(str))), scopes, _area_share)
    for operator in sorted(offers["operator"].dropna().astype(str).unique()):
        ids = set(good.loc[good["operator"].astype(str) == operator, "cell_id"].astype(str))
        out += per_scope(_area_frame(cells, ids), scopes, _area_share, f"operator:{operator}")
    return out


def dead_zone_area(cells: pd.DataFrame, offers: pd.DataFrame, scopes: Scopes) -> list[ScopeResult]:
    """Area (km²) where no operator offers mobile broadband (4G or 5G), as in the geo part's
    analysis and the BNetzA's "weiße Flecken"; the share (%) of the analysed area in
    ``details["share"]``. Numerator: dead area, denominator: analysed area, both km²."""
    _require(cells, MOBILE_CELL_COLUMNS, "mobile cells")
    _require(offers, MOBILE_OFFER_COLUMNS, "mobile offers")
    rank = offers["technology"].astype(str).str.lower().map(TECHNOLOGY_RANK).fillna(0)
    broadband = offers[(rank >= TECHNOLOGY_RANK["4g"]).to_numpy(dtype=bool)]
    frame = _area_frame(cells, set(broadband["cell_id"].astype(str)))
    frame["hit"] = ~frame["hit"]

    def measure(
        part: pd.DataFrame,
    ) -> tuple[float | None, float | None, float | None, dict[str, Any]]:
        total = float(part["area"].sum())
        dead = float(part.loc[part["hit"], "area"].sum())
        if total <= 0:
            return None, 0.0, 0.0, {"cells": len(part)}
        return dead / 1e6, dead / 1e6, total / 1e6, {"share": ratio(dead, total)}

    return per_scope(frame, scopes, measure)
