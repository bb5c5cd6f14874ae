"""Maps as HTML pages under ``/maps/…`` (German, English with ``?lang=en``): scripts and styles
from Quartier's own ``/static``, the basemap only if one is configured (``maps.tile_url``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from quartier.api.coverage_gaps import parse_bbox
from quartier.api.deps import AppSettings, Conn
from quartier.api.frontend import content_security_policy, static_base
from quartier.errors import BadRequestError
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


#: the measured map's 100 m cells of an area (fetched by the page when zoomed in)
CELLS_PATH = "/maps/measured/cells"


def _page(
    conn: Conn,
    settings: AppSettings,
    request: Request,
    name: str,
    lang: str,
    indicator: str | None = None,
) -> HTMLResponse:
    root = str(request.scope.get("root_path", "")).rstrip("/")
    options = MapOptions.from_settings(
        settings, lang="en" if lang == "en" else "de", assets=Assets(static_base(request)),
        indicator=indicator, cells_url=root + CELLS_PATH,
    )  # fmt: skip
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


@router.get("/maps/measured", response_class=HTMLResponse, operation_id="measured_map",
            responses=_HTML)  # fmt: skip
def measured_map(
    conn: Conn, settings: AppSettings, request: Request, lang: Lang = "de"
) -> HTMLResponse:
    """Measured vs advertised: the 100 m cells of the stored coverage analysis where the median of
    the crowdsourced speed tests falls well below the best advertised offer (shaded by how far,
    with the number of tests), and the other compared cells; only cells measured by at least
    ``privacy.min_contributors`` devices."""
    return _page(conn, settings, request, "measured", lang)


_CELLS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/geo+json": {}},
        "description": "a GeoJSON FeatureCollection: per compared 100 m cell a square (WGS84) with"
        " s (shade: 0, 1, 2 well below the offer, furthest first; 3 as expected), m (measured"
        " median, Mbit/s), o (best offer, Mbit/s), r (measured / offer, %), t (tests), c (cell)",
    },
    400: {"description": "bbox missing, malformed, or holding too many cells"},
}


@router.get(CELLS_PATH, response_class=Response, operation_id="measured_map_cells",
            responses=_CELLS)  # fmt: skip
def measured_map_cells(
    conn: Conn,
    settings: AppSettings,
    bbox: Annotated[
        str, Query(description="west,south,east,north (WGS84 degrees)", max_length=200)
    ],
) -> Response:
    """The measured-vs-advertised map zoomed in: the compared 100 m cells of the stored coverage
    analysis in ``bbox``, with measured median, offer, ratio and tests; only cells measured by at
    least ``privacy.min_contributors`` devices. The map page asks for them from zoom 14 on."""
    box = parse_bbox(bbox)
    if box is None:  # pragma: no cover - bbox is a required parameter
        raise BadRequestError("bbox is required: west,south,east,north")
    options = MapOptions.from_settings(settings)
    return Response(pages.measured_cells(conn, options, box), media_type="application/geo+json")


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **_HTML,
    400: {"description": "no indicator given, or one without values per Stadtbezirk"},
    404: {"description": "unknown indicator"},
}


@router.get("/maps/districts", response_class=HTMLResponse, operation_id="district_map",
            responses=_NOT_FOUND)  # fmt: skip
def district_map(
    conn: Conn,
    settings: AppSettings,
    request: Request,
    indicator: Annotated[
        str | None, Query(description="the indicator's id (GET /indicators lists them)",
                          max_length=64)
    ] = None,
    lang: Lang = "de",
) -> HTMLResponse:  # fmt: skip
    """One indicator per Stadtbezirk: each district in the colour of its status in the newest
    strategy evaluation (on track, at risk, off track, no data), value, target and status in the
    tooltip; coloured by value where the indicator was not evaluated per district."""
    return _page(conn, settings, request, "districts", lang, indicator)
