"""Spatial scopes of indicator values (the city and its districts) and the pure helper that applies
one indicator's math to each of them.

Every pure indicator function takes a frame with a ``district_code`` column (the Stadtbezirk a
row lies in, NA outside every district) and returns one :class:`ScopeResult` for the city (all
rows) and one per district (its rows), in :class:`Scopes` order, districts without rows included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

CITY = "city"
DISTRICT_LEVEL = "stadtbezirk"


@dataclass(frozen=True)
class Scopes:
    """The areas values are computed for: the city and the districts of one level."""

    city_code: str = "city"
    city_name: str = "Stadt"
    districts: tuple[tuple[str, str], ...] = ()  # (code, name)
    district_level: str = DISTRICT_LEVEL

    def name(self, scope_type: str, code: str) -> str:
        if scope_type == CITY:
            return self.city_name
        return dict(self.districts).get(code, code)


@dataclass(frozen=True)
class ScopeResult:
    """One indicator's value for one area (before it becomes an ``IndicatorValue``).

    ``value`` None: no data in the area (not the same as 0).
    """

    scope_type: str
    scope_code: str
    value: float | None
    numerator: float | None = None
    denominator: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    variant: str = ""


Measure = Callable[[pd.DataFrame], tuple[float | None, float | None, float | None, dict[str, Any]]]


def per_scope(
    frame: pd.DataFrame, scopes: Scopes, measure: Measure, variant: str = ""
) -> list[ScopeResult]:
    """``measure`` (value, numerator, denominator, details) of all rows for the city, then of each
    district's rows. ``frame`` needs a ``district_code`` column."""
    if "district_code" not in frame.columns:
        raise ValueError("frame lacks column district_code")
    out = [ScopeResult(CITY, scopes.city_code, *measure(frame), variant=variant)]
    codes = frame["district_code"].astype(object).where(frame["district_code"].notna(), None)
    for code, _ in scopes.districts:
        subset = frame[(codes == code).to_numpy(dtype=bool)]
        out.append(ScopeResult(scopes.district_level, code, *measure(subset), variant=variant))
    return out


def ratio(numerator: float, denominator: float, scale: float = 100.0) -> float | None:
    """``scale * numerator / denominator``, None when the denominator is 0."""
    return scale * numerator / denominator if denominator > 0 else None
