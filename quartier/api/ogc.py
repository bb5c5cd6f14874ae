"""OGC API – Features (Part 1: Core, GeoJSON, OpenAPI 3.0) over the coverage results, so QGIS,
GDAL (OAPIF driver) and OWSLib load them: ``/ogc`` (landing page), ``/ogc/conformance``,
``/ogc/collections``, ``/ogc/collections/{collectionId}``, ``.../items`` (``limit``, ``offset``,
``bbox``; ``next``/``prev`` links) and ``.../items/{featureId}``. Always the latest run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import shapely
import shapely.geometry
from fastapi import APIRouter, Query
from pydantic import BaseModel

from quartier.api.coverage_gaps import GeoJSONResponse, Link, parse_bbox
from quartier.api.deps import BaseUrl, Conn, Offset
from quartier.errors import NotFoundError
from quartier.geo import features, grid, run_store

router = APIRouter(prefix="/ogc", tags=["OGC API - Features"])

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
GEOJSON = "application/geo+json"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
]
COLLECTIONS: dict[str, tuple[str, str]] = {
    "coverage_cells": (
        "Versorgung je 100-m-Zelle",
        "INSPIRE 100 m cells: households, best fixed offer, class, measured vs advertised "
        "download, mobile coverage (4G/5G operators, dead zones).",
    ),
    "coverage_gaps": (
        "Versorgungslücken (Cluster)",
        "Connected gap cells merged into polygons, ranked by priority.",
    ),
    "coverage_districts": (
        "Versorgung je Bezirk",
        "Households and shares per class, 4G/5G area shares per operator, per district.",
    ),
}
MAX_LIMIT = 10_000


class LandingPage(BaseModel):
    title: str
    description: str
    links: list[Link]


class Conformance(BaseModel):
    conformsTo: list[str]


class SpatialExtent(BaseModel):
    bbox: list[list[float]]
    crs: str = CRS84


class Extent(BaseModel):
    spatial: SpatialExtent


class Collection(BaseModel):
    id: str
    title: str
    description: str
    itemType: str = "feature"
    crs: list[str] = [CRS84]
    extent: Extent | None = None
    links: list[Link]


class Collections(BaseModel):
    collections: list[Collection]
    links: list[Link]


class Feature(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: str | int
    geometry: dict[str, Any] | None
    properties: dict[str, Any]
    links: list[Link] = []


class FeatureCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[Feature]
    links: list[Link]
    numberReturned: int
    timeStamp: datetime


def _extent(conn: Conn) -> Extent | None:
    run_id = run_store.current_run_id(conn)  # the one rule for "current" (maps, API, indicators)
    if run_id is None:
        return None
    row = conn.execute(
        "select min(e) as e0, max(e) as e1, min(n) as n0, max(n) as n1 from coverage_cell"
        " where run_id = %s",
        (run_id,),
    ).fetchone()
    if row is None or row["e0"] is None:
        return None
    xs = [row["e0"], row["e1"] + 100, row["e1"] + 100, row["e0"]]
    ys = [row["n0"], row["n0"], row["n1"] + 100, row["n1"] + 100]
    lon, lat = grid.from_grid_crs(xs, ys)
    box = [round(float(lon.min()), 6), round(float(lat.min()), 6), round(float(lon.max()), 6),
           round(float(lat.max()), 6)]  # fmt: skip
    return Extent(spatial=SpatialExtent(bbox=[box]))


def _collection(base: str, cid: str, extent: Extent | None) -> Collection:
    title, description = COLLECTIONS[cid]
    href = f"{base}/ogc/collections/{cid}"
    return Collection(
        id=cid,
        title=title,
        description=description,
        extent=extent,
        links=[
            Link(href=href, rel="self", type="application/json", title=title),
            Link(href=f"{href}/items", rel="items", type=GEOJSON, title=title),
        ],
    )


def _check(collection_id: str) -> None:
    if collection_id not in COLLECTIONS:
        raise NotFoundError(f"no collection {collection_id!r}; one of {', '.join(COLLECTIONS)}")


@router.get("", response_model=LandingPage, operation_id="ogc_landing_page")
def landing(base: BaseUrl) -> LandingPage:
    """The OGC API – Features landing page."""
    return LandingPage(
        title="Quartier: Breitband- und Mobilfunkversorgung",
        description="Coverage-gap analysis on the INSPIRE 100 m grid as OGC API – Features.",
        links=[
            Link(href=f"{base}/ogc", rel="self", type="application/json", title="this document"),
            Link(href=f"{base}/openapi.json", rel="service-desc",
                 type="application/vnd.oai.openapi+json;version=3.0", title="the API definition"),
            Link(href=f"{base}/docs", rel="service-doc", type="text/html", title="API docs"),
            Link(href=f"{base}/ogc/conformance", rel="conformance", type="application/json",
                 title="conformance classes"),
            Link(href=f"{base}/ogc/collections", rel="data", type="application/json",
                 title="collections"),
        ],
    )  # fmt: skip


@router.get("/conformance", response_model=Conformance, operation_id="ogc_conformance")
def conformance() -> Conformance:
    """The conformance classes implemented."""
    return Conformance(conformsTo=CONFORMANCE)


@router.get("/collections", response_model=Collections, operation_id="ogc_collections")
def collections(conn: Conn, base: BaseUrl) -> Collections:
    """The coverage layers."""
    extent = _extent(conn)
    return Collections(
        collections=[_collection(base, cid, extent) for cid in COLLECTIONS],
        links=[Link(href=f"{base}/ogc/collections", rel="self", type="application/json")],
    )


def _items(
    conn: Conn, collection_id: str, bbox: str | None, limit: int, offset: int,
    feature_id: str | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    run = run_store.get_run(conn)
    box = parse_bbox(bbox)
    if collection_id == "coverage_cells":
        if feature_id is not None:
            return [features.get_cell(conn, run, feature_id)]
        return features.query_cells(conn, run, bbox=box, limit=limit, offset=offset)
    if collection_id == "coverage_gaps":
        if feature_id is not None:
            try:
                cid = int(feature_id)
            except ValueError:
                raise NotFoundError(f"no gap cluster {feature_id!r}") from None
            return features.query_gaps(conn, run, cluster_id=cid, limit=1)
        return features.query_gaps(conn, run, bbox=box, limit=limit, offset=offset)
    feats = features.query_districts(conn, run, code=feature_id, limit=limit, offset=offset)
    for f in feats:  # nested lists flattened for GIS clients
        props = f["properties"]
        for c in props.pop("classes"):
            props[f"households_{c['key']}"] = c["households"]
            props[f"share_{c['key']}"] = c["share"]
        for m in props.pop("mobile"):
            props[f"area_{m['technology'].lower()}_{m['operator']}"] = m["area_share"]
    if box is not None:
        area = shapely.box(*box)
        feats = [f for f in feats if f["geometry"] is not None
                 and shapely.intersects(shapely.geometry.shape(f["geometry"]), area)]  # fmt: skip
    return feats


@router.get("/collections/{collectionId}", response_model=Collection, operation_id="ogc_collection")
def collection(conn: Conn, base: BaseUrl, collectionId: str) -> Collection:
    """One coverage layer."""
    _check(collectionId)
    return _collection(base, collectionId, _extent(conn))


@router.get(
    "/collections/{collectionId}/items",
    response_model=FeatureCollection,
    response_class=GeoJSONResponse,
    operation_id="ogc_items",
)
def items(
    conn: Conn,
    base: BaseUrl,
    collectionId: str,
    offset: Offset,
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat (CRS84)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> dict[str, Any]:
    """Features of a layer, a page at a time (``next`` link while pages are full)."""
    _check(collectionId)
    feats = _items(conn, collectionId, bbox, limit, offset)
    href = f"{base}/ogc/collections/{collectionId}/items"
    keep = {"bbox": bbox} if bbox else {}
    links = [
        Link(href=f"{href}?{urlencode({**keep, 'limit': limit, 'offset': offset})}", rel="self",
             type=GEOJSON),
        Link(href=f"{base}/ogc/collections/{collectionId}", rel="collection",
             type="application/json"),
    ]  # fmt: skip
    if len(feats) == limit:
        nxt = urlencode({**keep, "limit": limit, "offset": offset + limit})
        links.append(Link(href=f"{href}?{nxt}",
                          rel="next", type=GEOJSON))  # fmt: skip
    if offset > 0:
        prev = urlencode({**keep, "limit": limit, "offset": max(0, offset - limit)})
        links.append(Link(href=f"{href}?{prev}",
                          rel="prev", type=GEOJSON))  # fmt: skip
    return {"type": "FeatureCollection", "features": feats, "links": links,
            "numberReturned": len(feats), "timeStamp": datetime.now(UTC)}  # fmt: skip


@router.get(
    "/collections/{collectionId}/items/{featureId}",
    response_model=Feature,
    response_class=GeoJSONResponse,
    operation_id="ogc_item",
)
def item(conn: Conn, base: BaseUrl, collectionId: str, featureId: str) -> dict[str, Any]:
    """One feature."""
    _check(collectionId)
    feats = _items(conn, collectionId, None, 1, 0, feature_id=featureId)
    if not feats:
        raise NotFoundError(f"no feature {featureId!r} in {collectionId}")
    href = f"{base}/ogc/collections/{collectionId}"
    return {**feats[0], "links": [
        Link(href=f"{href}/items/{featureId}", rel="self", type=GEOJSON),
        Link(href=href, rel="collection", type="application/json"),
    ]}  # fmt: skip
