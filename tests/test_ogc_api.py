"""``/coverage`` and ``/ogc`` against a stored run; the OGC layers read by real clients (GDAL's
OAPIF driver through pyogrio, and OWSLib) from a live uvicorn server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_coverage_runs import load_scenario

from quartier.api import coverage_gaps as coverage
from quartier.api import errors, ogc
from quartier.config import Settings
from quartier.geo import service
from quartier.store.db import make_pool

pytestmark = pytest.mark.services


def make_app(settings: Settings) -> FastAPI:
    """The coverage routers on an app like ``create_app``'s (pool, error mapping), without the
    other parts' routers, so these tests depend only on the coverage code."""
    pool = make_pool(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=False)
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(lifespan=lifespan)
    app.state.settings = settings
    app.state.pool = pool
    errors.install(app)
    app.include_router(coverage.router)
    app.include_router(ogc.router)
    return app


@pytest.fixture
def filled(settings: Settings) -> Settings:
    with psycopg.connect(settings.require_database_url()) as conn:
        load_scenario(conn)
        # the scenario has one measuring device per kind: below the privacy threshold (k = 5)
        # the analysis would drop its signal measurements (tests/test_privacy.py tests k)
        service.analyse_and_store(conn, min_contributors=1)
    return settings


@pytest.fixture
def client(filled: Settings) -> Iterator[TestClient]:
    with TestClient(make_app(filled)) as c:
        yield c


def test_no_run_is_a_404(settings: Settings) -> None:
    with TestClient(make_app(settings)) as c:
        r = c.get("/coverage/cells")
    assert r.status_code == 404 and "quartier coverage analyse" in r.json()["message"]


def test_cells_with_bbox_and_class_filters(client: TestClient) -> None:
    r = client.get("/coverage/cells")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    body = coverage.CellCollection.model_validate(r.json())
    assert body.numberReturned == 8
    r = client.get("/coverage/cells", params={"class": "white,grey"})
    body = coverage.CellCollection.model_validate(r.json())
    assert sorted(f.properties.households for f in body.features) == [2, 5, 6, 10]
    a = next(f for f in body.features if f.properties.households == 10)
    assert a.properties.operators_4g == "A-Net" and a.properties.single_operator
    lon, lat = a.geometry["coordinates"][0][0]  # lower-left corner of cell A
    r = client.get("/coverage/cells", params={"bbox": f"{lon},{lat},{lon + 1e-4},{lat + 1e-4}"})
    ids = [f["id"] for f in r.json()["features"]]
    assert ids == ["CRS3035RES100mN3090000E4100000"]
    r = client.get("/coverage/cells", params={"gaps_only": True, "limit": 2})
    body = coverage.CellCollection.model_validate(r.json())
    assert body.numberReturned == 2 and [link.rel for link in body.links] == ["self", "next"]
    assert client.get("/coverage/cells", params={"class": "purple"}).status_code == 400
    assert client.get("/coverage/cells", params={"bbox": "1,2,3"}).status_code == 400
    assert client.get("/coverage/cells", params={"bbox": "7,51,6,50"}).status_code == 400


def test_gaps_and_districts(client: TestClient) -> None:
    body = coverage.GapCollection.model_validate(client.get("/coverage/gaps").json())
    assert [f.properties.households for f in body.features] == [20, 6]
    assert [f.properties.rank for f in body.features] == [1, 2]
    only2 = client.get("/coverage/gaps", params={"district": "1"}).json()
    assert len(only2["features"]) == 2
    assert len(client.get("/coverage/gaps", params={"district": "2"}).json()["features"]) == 1
    d = coverage.DistrictList.model_validate(client.get("/coverage/districts").json())
    assert [x.code for x in d.districts] == ["1", "2", "all"]
    assert d.districts[2].households == 37
    assert sum(c.share for c in d.districts[0].classes) == pytest.approx(100)
    run = coverage.RunInfo.model_validate(client.get("/coverage/runs/latest").json())
    assert run.profile == "de" and run.inputs["households_used"] == 7


def test_ogc_documents(client: TestClient) -> None:
    landing = ogc.LandingPage.model_validate(client.get("/ogc").json())
    assert {link.rel for link in landing.links} >= {"conformance", "data", "service-desc"}
    conf = ogc.Conformance.model_validate(client.get("/ogc/conformance").json())
    assert any(c.endswith("/conf/geojson") for c in conf.conformsTo)
    cols = ogc.Collections.model_validate(client.get("/ogc/collections").json())
    assert [c.id for c in cols.collections] == list(ogc.COLLECTIONS)
    assert cols.collections[0].extent is not None
    r = client.get("/ogc/collections/coverage_cells/items", params={"limit": 3, "offset": 3})
    page = ogc.FeatureCollection.model_validate(r.json())
    assert page.numberReturned == 3 and {x.rel for x in page.links} >= {"next", "prev"}
    one = client.get("/ogc/collections/coverage_gaps/items/1")
    assert ogc.Feature.model_validate(one.json()).properties["households"] == 20
    assert client.get("/ogc/collections/nope/items").status_code == 404
    assert client.get("/ogc/collections/coverage_cells/items/CRS3035RES100mN1E2").status_code == 404
    district = client.get("/ogc/collections/coverage_districts/items/1").json()
    assert district["properties"]["share_white"] == 64.0
    spec = client.get("/openapi.json").json()
    ops = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert ops == {"coverage_cells", "coverage_gaps", "coverage_districts", "coverage_latest_run",
                   "ogc_landing_page", "ogc_conformance", "ogc_collections", "ogc_collection",
                   "ogc_items", "ogc_item"}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live(filled: Settings) -> Iterator[str]:
    """uvicorn in a child process (GDAL holds the GIL while it reads, so no thread here)."""
    port = _free_port()
    code = (
        "import sys, uvicorn; sys.path.insert(0, sys.argv[1]);"
        "from test_ogc_api import make_app; from quartier.config import Settings;"
        "s = Settings(_env_file=None, database={'url': sys.argv[2]});"
        "uvicorn.run(make_app(s), host='127.0.0.1', port=int(sys.argv[3]),"
        " log_level='warning', timeout_graceful_shutdown=1)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(Path(__file__).parent),
         filled.require_database_url(), str(port)]
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/ogc/conformance", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.kill()  # a test server: no graceful shutdown needed
        proc.wait(timeout=10)


def test_real_clients_read_the_layers(live: str) -> None:
    """GDAL (OAPIF driver via pyogrio) and OWSLib against one live server."""
    _gdal(live)
    _owslib(live)


def _gdal(live: str) -> None:
    import pyogrio

    url = f"OAPIF:{live}/ogc"
    layers = [str(name) for name, _ in pyogrio.list_layers(url)]
    assert layers == list(ogc.COLLECTIONS)
    cells = pyogrio.read_dataframe(url, layer="coverage_cells", PAGE_SIZE=3)  # pages of 3
    assert len(cells) == 8 and cells.crs.to_epsg() == 4326
    assert int(cells["households"].sum()) == 37
    assert set(cells["class_key"].dropna()) == {"white", "grey", "dark_grey", "very_high",
                                                 "gigabit"}  # fmt: skip
    gaps = pyogrio.read_dataframe(url, layer="coverage_gaps")
    assert gaps.sort_values("rank")["households"].tolist() == [20, 6]
    assert gaps.geometry.geom_type.isin(["MultiPolygon", "Polygon"]).all()
    centre = cells.loc[cells["households"] == 10].geometry.iloc[0].centroid
    box = (centre.x - 1e-4, centre.y - 1e-4, centre.x + 1e-4, centre.y + 1e-4)
    near = pyogrio.read_dataframe(url, layer="coverage_cells", bbox=box)
    assert near["cell_id"].tolist() == ["CRS3035RES100mN3090000E4100000"]


def _owslib(live: str) -> None:
    from owslib.ogcapi.features import Features

    api = Features(f"{live}/ogc")
    assert [c["id"] for c in api.collections()["collections"]] == list(ogc.COLLECTIONS)
    assert (
        "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core"
        in (api.conformance()["conformsTo"])
    )
    page = api.collection_items("coverage_gaps", limit=1)
    assert page["numberReturned"] == 1 and page["features"][0]["properties"]["rank"] == 1
    assert any(link["rel"] == "next" for link in page["links"])
    districts = api.collection_items("coverage_districts")
    assert [f["id"] for f in districts["features"]] == ["1", "2", "all"]
