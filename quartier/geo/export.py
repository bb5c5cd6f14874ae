"""Export a stored coverage run to GeoPackage (one file, three layers), GeoJSON (one file per
layer) and CSV (one file per layer; cells with their centre, gaps with a point on the cluster)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely.geometry

from quartier.errors import BadRequestError
from quartier.geo import features, grid, run_store
from quartier.geo.analysis import operator_lists
from quartier.store.db import Conn

log = logging.getLogger(__name__)

FORMATS = ("gpkg", "geojson", "csv")
LAYERS = ("coverage_cells", "coverage_gaps", "coverage_districts")


def cells_frame(cells: pd.DataFrame, run: run_store.Run) -> gpd.GeoDataFrame:
    """Cells with ``cell_id``, operator lists and polygons (EPSG:4326)."""
    e = cells["e"].to_numpy()
    n = cells["n"].to_numpy()
    out = cells.drop(columns=["mobile_mask", "operators_measured"]).copy()
    out.insert(0, "cell_id", grid.cell_ids(e, n))
    mask = cells["mobile_mask"].to_numpy(dtype=np.int64)
    out["operators_4g_list"] = operator_lists(mask, run.operators, run.technologies, "4G")
    out["operators_5g_list"] = operator_lists(mask, run.operators, run.technologies, "5G")
    for col in ("district_code", "best_technology", "class_key", "disagreement"):
        out[col] = out[col].astype(object)
    return gpd.GeoDataFrame(out, geometry=gpd.GeoSeries(grid.cell_polygons(e, n), crs=grid.WGS84),
                            crs=grid.WGS84)  # fmt: skip


def load_districts_stats(conn: Conn, run: run_store.Run) -> gpd.GeoDataFrame:
    """District statistics flattened (``households_<class>``, ``share_<class>``,
    ``area_4g_<op>``…) with outlines."""
    feats = features.query_districts(conn, run, limit=100_000)
    rows = []
    for f in feats:
        p = dict(f["properties"])
        for c in p.pop("classes"):
            p[f"households_{c['key']}"] = c["households"]
            p[f"share_{c['key']}"] = c["share"]
            p[f"cells_{c['key']}"] = c["cells"]
        for m in p.pop("mobile"):
            p[f"area_{m['technology'].lower()}_{m['operator']}"] = m["area_share"]
        rows.append(p)
    geoms = [shapely.geometry.shape(f["geometry"]) if f["geometry"] else None for f in feats]
    return gpd.GeoDataFrame(pd.DataFrame(rows), geometry=gpd.GeoSeries(geoms, crs=grid.WGS84),
                            crs=grid.WGS84)  # fmt: skip


def export_run(
    conn: Conn,
    out_dir: Path | str,
    *,
    formats: Sequence[str] = FORMATS,
    run_id: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write the layers of the run (default the latest) into ``out_dir``; returns the files.
    ``progress`` is called with a short description before each step."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise BadRequestError(f"unknown format {', '.join(unknown)}; one of {', '.join(FORMATS)}")
    step = progress or (lambda _s: None)
    run = run_store.get_run(conn, run_id)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    step("Zellen lesen")
    cells = cells_frame(run_store.load_cells(conn, run), run)
    step("Lücken und Bezirke lesen")
    layers: dict[str, gpd.GeoDataFrame] = {
        "coverage_cells": cells,
        "coverage_gaps": run_store.load_gaps(conn, run),
        "coverage_districts": load_districts_stats(conn, run),
    }
    written: list[Path] = []
    stem = f"coverage_run{run.id}"
    for fmt in formats:
        for name, frame in layers.items():
            step(f"{name} → {fmt}")
            if fmt == "gpkg":
                path = out / f"{stem}.gpkg"
                frame.to_file(path, layer=name, driver="GPKG", engine="pyogrio")
                if path not in written:
                    written.append(path)
            elif fmt == "geojson":
                path = out / f"{stem}_{name}.geojson"
                frame.to_file(path, driver="GeoJSON", engine="pyogrio")
                written.append(path)
            else:
                path = out / f"{stem}_{name}.csv"
                flat = pd.DataFrame(frame.drop(columns=frame.geometry.name))
                if name == "coverage_cells":
                    lon, lat = grid.cell_centres(flat["e"].to_numpy(), flat["n"].to_numpy())
                    flat["lon"], flat["lat"] = lon.round(6), lat.round(6)
                else:
                    valid = frame.geometry.notna() & ~frame.geometry.is_empty
                    pts = frame.geometry[valid].representative_point()
                    flat.loc[valid, "lon"] = pts.x.round(6)
                    flat.loc[valid, "lat"] = pts.y.round(6)
                flat.to_csv(path, index=False)
                written.append(path)
    log.info("exported coverage run %d: %s", run.id, ", ".join(p.name for p in written))
    return written
