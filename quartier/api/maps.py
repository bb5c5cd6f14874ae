"""Maps as HTML pages under ``/maps/…`` (German, English with ``?lang=en``): scripts and styles
from Quartier's own ``/static``, the basemap only if one is configured (``maps.tile_url``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from quartier.api.deps import AppSettings, Conn
from quartier.api.frontend import content_security_policy, static_base
from quartier.maps import pages
from quartier.maps.assets import Assets
from quartier.maps.render import MapOptions

router = APIRouter(tags=["Maps"])

Lang = Annotated[
    Literal["de", "en"], Query(description="language of legend and labels: de (default) or en")
]
_HTML: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "a map: a standalone HTML page (Leaflet)"}
}


def _page(
    conn: Conn, settings: AppSettings, request: Request, name: str, lang: str
) -> HTMLResponse:
    options = MapOptions.from_settings(
        settings, lang="en" if lang == "en" else "de", assets=Assets(static_base(request))
    )
    return HTMLResponse(
        pages.render_page(conn, name, options),
        headers={"Content-Security-Policy": content_security_policy(settings.maps.tile_url)},
    )


@router.get("/maps/coverage", response_class=HTMLResponse, operation_id="coverage_map",
            responses=_HTML)  # fmt: skip
def coverage_map(
    conn: Conn, settings: AppSettings, request: Request, lang: Lang = "de"
) -> HTMLResponse:
    """Broadband coverage per 100 m INSPIRE cell: the stored gap analysis (classes, gap clusters
    with rank, households and priority, dead zones) or, before one, the measured download speed;
    districts and sensors; legend, scale bar and source line."""
    return _page(conn, settings, request, "coverage", lang)


@router.get("/maps/sensors", response_class=HTMLResponse, operation_id="sensor_map",
            responses=_HTML)  # fmt: skip
def sensor_map(
    conn: Conn, settings: AppSettings, request: Request, lang: Lang = "de"
) -> HTMLResponse:
    """Every sensor (clustered), its latest value per datastream with unit and age; sensors
    without a reading for 6 hours are grey and marked stale."""
    return _page(conn, settings, request, "sensors", lang)


@router.get("/maps/mobile", response_class=HTMLResponse, operation_id="mobile_map",
            responses=_HTML)  # fmt: skip
def mobile_map(
    conn: Conn, settings: AppSettings, request: Request, lang: Lang = "de"
) -> HTMLResponse:
    """Measured mobile coverage of the stored coverage analysis: per operator and technology (4G,
    5G) a layer of the cells it covers, dead zones (no 4G/5G from any operator), the measured
    cells; only cells measured by at least ``privacy.min_contributors`` devices."""
    return _page(conn, settings, request, "mobile", lang)
