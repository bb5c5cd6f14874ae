"""Indicators of the strategy evaluation and the coverage map."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from quartier.api.deps import Conn
from quartier.evaluation.indicators import CATALOGUE, IndicatorDefinition, IndicatorValue
from quartier.evaluation.indicators import compute_indicators as compute
from quartier.geo import coverage
from quartier.geo import io as geo_io
from quartier.maps.coverage import render_coverage_map

router = APIRouter(tags=["Indicators and maps"])


class IndicatorList(BaseModel):
    computed_at: datetime
    definitions: list[IndicatorDefinition]
    values: list[IndicatorValue]


@router.get("/indicators", response_model=IndicatorList, operation_id="list_indicators")
def list_indicators(conn: Conn) -> IndicatorList:
    """Current values of every indicator per district, computed from the stored data, each with
    its provenance (the data range and amount it was computed from)."""
    now = datetime.now(UTC)
    return IndicatorList(
        computed_at=now, definitions=list(CATALOGUE.values()), values=compute(conn, now)
    )


@router.get(
    "/maps/coverage",
    response_class=HTMLResponse,
    operation_id="coverage_map",
    responses={200: {"content": {"text/html": {}}, "description": "a folium map"}},
)
def coverage_map(conn: Conn) -> HTMLResponse:
    """Map of measured broadband download speed per 100 m INSPIRE cell, the districts and the
    sensors (German legend)."""
    districts = geo_io.load_districts(conn, "stadtbezirk")
    tests = geo_io.load_speedtests(conn)
    cells = coverage.classify_cells(tests, districts if len(districts) else None)
    html = render_coverage_map(cells, geo_io.load_sensor_locations(conn), districts)
    return HTMLResponse(html)
