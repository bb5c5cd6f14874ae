"""Writes the fictional Musterstadt (tests/test_second_city.py) into this directory:

- ``bezirke.gpkg``: EPSG:25832 (ETRS89 / UTM 32N, as German surveying offices publish), layer
  ``bezirke`` (4 Stadtbezirke, columns BEZ_SCHL, BEZ_BEZ, EW) and layer ``ortsteile`` (8, columns
  OT_NR, OT_NAME);
- ``vg250_gem.shp`` (+ .shx .dbf .prj .cpg): shaped like BKG's VG250 Gemeinden (AGS, GEN, BEZ,
  GF): Musterstadt's land (GF 4), a lake of Musterstadt (GF 2) east of it, the neighbour
  Nachbarhausen west of it;
- ``haushalte.csv`` and ``angebote.csv``: address points with households, broadband offers
  (WGS84 lon/lat, German column names).

Run from the repository: ``.venv/bin/python tests/data/musterstadt/make_musterstadt.py``. The
expected values in the test are written down by hand from the numbers below, not from the files.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
from pyproj import Transformer
from shapely.geometry import box

HERE = Path(__file__).resolve().parent
CRS = "EPSG:25832"
X0, Y0 = 600_000, 5_500_000  # south-west corner of Musterstadt (4 km x 3 km)

# Stadtbezirke: code, name, population, (xmin, ymin, xmax, ymax) in metres from the corner
BEZIRKE = [
    ("01", "Altstadt", 12_345, (0, 1500, 2000, 3000)),
    ("02", "Nordviertel", 8_200, (2000, 1500, 4000, 3000)),
    ("03", "Südstadt-Ost", 15_010, (2000, 0, 4000, 1500)),
    ("04", "Weststadt", 9_870, (0, 0, 2000, 1500)),
]
# Broadband per Stadtbezirk, for its 4 address points of 10 households each:
# technology, download, upload (Südstadt-Ost: 2 points with fibre, 2 with VDSL)
OFFERS = {
    "01": [("Glasfaser", 1000, 200)] * 4,
    "02": [("VDSL2-Vectoring", 100, 40)] * 4,
    "03": [("Glasfaser", 1000, 200)] * 2 + [("VDSL2-Vectoring", 100, 40)] * 2,
    "04": [("ADSL2+", 16, 1)] * 4,
}
POINTS = [(550, 450), (1450, 450), (550, 1050), (1450, 1050)]  # inside each Bezirk, 100 m cells


def _box(b: tuple[int, int, int, int]) -> object:
    return box(X0 + b[0], Y0 + b[1], X0 + b[2], Y0 + b[3])


def main() -> None:
    bezirke = gpd.GeoDataFrame(
        {
            "BEZ_SCHL": [b[0] for b in BEZIRKE],
            "BEZ_BEZ": [b[1] for b in BEZIRKE],
            "EW": [b[2] for b in BEZIRKE],
        },
        geometry=[_box(b[3]) for b in BEZIRKE],
        crs=CRS,
    )
    rows = []
    for code, name, _, (x1, y1, x2, y2) in BEZIRKE:
        mid = (x1 + x2) // 2
        rows.append((f"{code}1", f"{name} West", (x1, y1, mid, y2)))
        rows.append((f"{code}2", f"{name} Ost", (mid, y1, x2, y2)))
    ortsteile = gpd.GeoDataFrame(
        {"OT_NR": [r[0] for r in rows], "OT_NAME": [r[1] for r in rows]},
        geometry=[_box(r[2]) for r in rows],
        crs=CRS,
    )
    gpkg = HERE / "bezirke.gpkg"
    gpkg.unlink(missing_ok=True)
    bezirke.to_file(gpkg, layer="bezirke", driver="GPKG")
    ortsteile.to_file(gpkg, layer="ortsteile", driver="GPKG")

    gem = gpd.GeoDataFrame(
        {
            "AGS": ["09999000", "09999000", "09999111"],
            "GEN": ["Musterstadt", "Musterstadt", "Nachbarhausen"],
            "BEZ": ["Kreisfreie Stadt", "Kreisfreie Stadt", "Gemeinde"],
            "GF": [4, 2, 4],
        },
        geometry=[_box((0, 0, 4000, 3000)), _box((4000, 500, 6000, 2500)),
                  _box((-4000, 0, 0, 3000))],
        crs=CRS,
    )  # fmt: skip
    gem.to_file(HERE / "vg250_gem.shp", encoding="utf-8")

    to_wgs84 = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    households, offers = [], []
    for code, _, _, (x1, y1, _, _) in BEZIRKE:
        for i, ((dx, dy), (tech, down, up)) in enumerate(zip(POINTS, OFFERS[code], strict=True)):
            lon, lat = to_wgs84.transform(X0 + x1 + dx, Y0 + y1 + dy)
            key = f"MS-{code}-{i + 1}"
            households.append(
                {"ADRESSE": key, "LAENGE": round(lon, 6), "BREITE": round(lat, 6), "HH_ANZ": 10}
            )
            offers.append(
                {
                    "ADRESSE": key,
                    "LAENGE": round(lon, 6),
                    "BREITE": round(lat, 6),
                    "TECHNIK": tech,
                    "DOWN": down,
                    "UP": up,
                    "ANBIETER": "Stadtwerke",
                }
            )
    pd.DataFrame(households).to_csv(HERE / "haushalte.csv", index=False)
    pd.DataFrame(offers).to_csv(HERE / "angebote.csv", index=False)


if __name__ == "__main__":
    main()
