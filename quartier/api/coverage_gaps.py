"""``/coverage``: the results of the coverage-gap analysis (latest run unless ``run`` is given).

``/coverage/cells`` and ``/coverage/gaps`` answer GeoJSON FeatureCollections (WGS84),
``/coverage/districts`` the statistics per district; ``/coverage/runs/latest`` says what the
results were computed from. The same layers are OGC API – Features collections under ``/ogc``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from quartier.api.deps import Conn, Offset
from quartier.errors import BadRequestError
from quartier.geo import features, run_store

router = APIRouter(prefix="/coverage", tags=["Coverage"])

MAX_LIMIT = 10_000


class GeoJSONResponse(JSONResponse):
    media_type = "application/geo+json"


class Link(BaseModel):
    href: str
    rel: str
    type: str | None = None
    title: str | None = None


class CellProperties(BaseModel):
    cell_id: str
    district_code: str | None
    households: int
    addresses: int
    class_key: str | None = Field(
        description="class of the profile; null without households and offers"
    )
    is_gap: bool
    best_technology: str | None
    max_down_mbps: float | None
    max_up_mbps: float | None
    n_tests: int
    measured_down_mbps: float | None = Field(description="median, where n_tests >= min_tests")
    measured_ratio: float | None = Field(description="measured median / advertised maximum")
    disagreement: Literal["below", "above"] | None
    n_signal: int
    operators_4g: str = Field(description="comma-separated operators covering the cell with 4G")
    operators_5g: str
    dead_zone: bool
    single_operator: bool
    cluster_id: int | None


class GapProperties(BaseModel):
    cluster_id: int
    rank: int
    cells: int
    households: int
    area_km2: float
    district_codes: str
    worst_class: str
    severity: float
    distance_gigabit_m: float | None
    priority: float


class ClassShare(BaseModel):
    key: str
    label_de: str
    households: int
    share: float = Field(description="% of the district's households")
    cells: int


class MobileShare(BaseModel):
    operator: str
    technology: str
    area_share: float | None = Field(description="% of the cells with measurements")


class DistrictProperties(BaseModel):
    code: str
    name: str
    households: int
    cells: int
    classes: list[ClassShare]
    mobile: list[MobileShare]


class CellFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: str
    geometry: dict[str, Any]
    properties: CellProperties


class GapFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: int
    geometry: dict[str, Any]
    properties: GapProperties


class CellCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    run_id: int
    features: list[CellFeature]
    numberReturned: int
    links: list[Link] = []


class GapCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    run_id: int
    features: list[GapFeature]
    numberReturned: int
    links: list[Link] = []


class DistrictList(BaseModel):
    run_id: int
    profile: str
    operators: list[str]
    districts: list[DistrictProperties]


class RunInfo(BaseModel):
    id: int
    created_at: datetime
    profile: str
    parameters: dict[str, Any]
    inputs: dict[str, Any]
    classes: list[dict[str, Any]]
    operators: list[str]
    technologies: list[str]


def parse_bbox(bbox: str | None) -> tuple[float, float, float, float] | None:
    if bbox is None:
        return None
    try:
        values = [float(v) for v in bbox.split(",")]
    except ValueError:
        raise BadRequestError("bbox must be four comma-separated numbers") from None
    return features.check_bbox(values)


def _page_links(base: str, params: dict[str, Any], limit: int, offset: int, n: int) -> list[Link]:
    from urllib.parse import urlencode

    keep = {k: v for k, v in params.items() if v is not None}
    links = [Link(href=f"{base}?{urlencode({**keep, 'limit': limit, 'offset': offset})}",
                  rel="self", type="application/geo+json")]  # fmt: skip
    if n == limit:
        nxt = urlencode({**keep, "limit": limit, "offset": offset + limit})
        links.append(Link(href=f"{base}?{nxt}",
                          rel="next", type="application/geo+json"))  # fmt: skip
    if offset > 0:
        prev = max(0, offset - limit)
        links.append(Link(href=f"{base}?{urlencode({**keep, 'limit': limit, 'offset': prev})}",
                          rel="prev", type="application/geo+json"))  # fmt: skip
    return links


Run = Annotated[int | None, Query(description="run id; default the latest")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


@router.get(
    "/cells",
    response_model=CellCollection,
    response_class=GeoJSONResponse,
    operation_id="coverage_cells",
)
def cells(
    conn: Conn,
    offset: Offset,
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat (WGS84)")] = None,
    class_: Annotated[
        str | None, Query(alias="class", description="comma-separated class keys")
    ] = None,
    gaps_only: bool = False,
    run: Run = None,
    limit: Limit = 1000,
) -> dict[str, Any]:
    """100 m cells with households, best offer, class, measured speed and mobile coverage,
    ordered north then east; filter by bounding box and class."""
    info = run_store.get_run(conn, run)
    classes = [c.strip() for c in class_.split(",") if c.strip()] if class_ else None
    feats = features.query_cells(conn, info, bbox=parse_bbox(bbox), classes=classes,
                              gaps_only=gaps_only, limit=limit, offset=offset)  # fmt: skip
    params = {"bbox": bbox, "class": class_, "gaps_only": gaps_only or None, "run": run}
    return {"type": "FeatureCollection", "run_id": info.id, "features": feats,
            "numberReturned": len(feats),
            "links": _page_links("/coverage/cells", params, limit, offset, len(feats))}  # fmt: skip


@router.get(
    "/gaps",
    response_model=GapCollection,
    response_class=GeoJSONResponse,
    operation_id="coverage_gaps",
)
def gaps(
    conn: Conn,
    offset: Offset,
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat (WGS84)")] = None,
    district: Annotated[
        str | None, Query(description="only clusters touching this district")
    ] = None,
    run: Run = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Gap clusters (connected gap cells) ranked by priority, with households, area, districts
    and the distance to the nearest gigabit-served cell."""
    info = run_store.get_run(conn, run)
    feats = features.query_gaps(conn, info, bbox=parse_bbox(bbox), district=district, limit=limit,
                             offset=offset)  # fmt: skip
    params = {"bbox": bbox, "district": district, "run": run}
    return {"type": "FeatureCollection", "run_id": info.id, "features": feats,
            "numberReturned": len(feats),
            "links": _page_links("/coverage/gaps", params, limit, offset, len(feats))}  # fmt: skip


@router.get("/districts", response_model=DistrictList, operation_id="coverage_districts")
def districts(conn: Conn, run: Run = None) -> DistrictList:
    """Households and shares per class, and 4G/5G area shares per operator, per district and for
    the whole area (code "all")."""
    info = run_store.get_run(conn, run)
    rows = features.query_districts(conn, info)
    return DistrictList(
        run_id=info.id,
        profile=info.profile,
        operators=info.operators,
        districts=[DistrictProperties.model_validate(r["properties"]) for r in rows],
    )


@router.get("/runs/latest", response_model=RunInfo, operation_id="coverage_latest_run")
def latest_run(conn: Conn) -> RunInfo:
    """The latest analysis run: profile, parameters and input counts."""
    info = run_store.get_run(conn)
    return RunInfo(**info.__dict__)
