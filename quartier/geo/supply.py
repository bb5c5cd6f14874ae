"""Fixed broadband supply (and households) from operator files: CSV, GeoJSON or GeoPackage, with a
column mapping, and a clear report of the rows that could not be used.

A row is located by a point geometry (GeoJSON/GeoPackage; other geometries by a point on their
surface), by ``lon``/``lat`` columns (WGS84) or by an INSPIRE ``cell_id``
(``CRS3035RES100mN…E…``, located at the cell centre). Technologies are normalised through
:data:`TECHNOLOGY_ALIASES` (case-insensitive), e.g. "Glasfaser" → ``ftth``, "DOCSIS 3.1" → ``hfc``.

Reasons a row is rejected: ``no_position``, ``bad_position`` (not a number, outside WGS84 or
outside the grid), ``bad_cell_id``, ``unknown_technology``, ``bad_download`` (missing, not a
number, negative), ``bad_upload`` (not a number, negative), ``bad_date``, ``bad_households``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quartier.errors import BadRequestError
from quartier.geo import grid

log = logging.getLogger(__name__)

TECHNOLOGY_ALIASES: dict[str, str] = {
    **{k: "ftth" for k in ("ftth", "fiber", "fibre", "glasfaser", "ftth/b", "gpon", "xgs-pon")},
    **{k: "fttb" for k in ("fttb", "fttb/h")},
    **{k: "hfc" for k in ("hfc", "catv", "cable", "kabel", "docsis", "docsis 3.0", "docsis 3.1",
                          "koax", "tv-kabel")},
    **{k: "vdsl" for k in ("vdsl", "vdsl2", "vectoring", "supervectoring", "super vectoring",
                           "svdsl", "vdsl2-vectoring")},
    **{k: "adsl" for k in ("adsl", "adsl2", "adsl2+", "dsl")},
    **{k: "fwa" for k in ("fwa", "fixed wireless", "fixed wireless access", "funk", "wimax")},
    "other": "other",
}  # fmt: skip
MAX_REPORTED_ROWS = 1000


@dataclass(frozen=True)
class ColumnMapping:
    """Source column for each field (None: not in the file). Positions: geometry, or ``lon`` and
    ``lat``, or ``cell_id``."""

    technology: str | None = "technology"
    max_down_mbps: str | None = "max_down_mbps"
    max_up_mbps: str | None = "max_up_mbps"
    operator: str | None = "operator"
    valid_on: str | None = "valid_on"
    address_key: str | None = "address_key"
    households: str | None = "households"
    lon: str | None = "lon"
    lat: str | None = "lat"
    cell_id: str | None = "cell_id"

    @classmethod
    def parse(cls, pairs: list[str]) -> ColumnMapping:
        """From ``field=source`` strings, e.g. ``["max_down_mbps=download", "lon=x"]``."""
        known = set(cls.__dataclass_fields__)
        values: dict[str, Any] = {}
        for pair in pairs:
            name, sep, source = pair.partition("=")
            if not sep or name.strip() not in known:
                raise BadRequestError(
                    f"bad column mapping {pair!r}: use field=column with field one of "
                    + ", ".join(sorted(known))
                )
            values[name.strip()] = source.strip() or None
        return cls(**values)


@dataclass(frozen=True)
class ImportReport:
    rows: int
    used: int
    #: rejected rows per reason
    reasons: dict[str, int]
    #: up to MAX_REPORTED_ROWS rejected rows: 1-based data row number, reason, offending value
    rejected: pd.DataFrame = field(repr=False)

    def summary(self) -> str:
        parts = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items()))
        return f"{self.used} of {self.rows} rows usable" + (f"; rejected: {parts}" if parts else "")


def read_table(path: Path | str, layer: str | None = None, sep: str = ",") -> pd.DataFrame:
    """A CSV, GeoJSON or GeoPackage as a frame; geometries become ``_lon``/``_lat`` (WGS84)."""
    p = Path(path)
    if not p.exists():
        raise BadRequestError(f"no such file: {p}")
    if p.suffix.lower() in (".csv", ".txt", ".tsv"):
        return pd.read_csv(p, sep="\t" if p.suffix.lower() == ".tsv" else sep, dtype=str,
                           keep_default_na=False, na_values=[""])  # fmt: skip
    import pyogrio

    frame = pyogrio.read_dataframe(p, layer=layer)
    geoms = frame.geometry
    if geoms.crs is not None and not geoms.crs.equals(grid.WGS84):
        geoms = geoms.to_crs(grid.WGS84)
    pts = geoms.copy()
    not_point = (pts.geom_type != "Point") & pts.notna() & ~pts.is_empty
    pts[not_point] = pts[not_point].representative_point()
    ok = pts.notna() & ~pts.is_empty
    out = pd.DataFrame(frame.drop(columns=frame.geometry.name))
    out["_lon"] = np.where(ok, pts.x.where(ok), np.nan)
    out["_lat"] = np.where(ok, pts.y.where(ok), np.nan)
    return out


def _col(frame: pd.DataFrame, name: str | None) -> pd.Series | None:
    if name is None or name not in frame.columns:
        return None
    return frame[name]


def _numbers(values: pd.Series) -> np.ndarray[Any, np.dtype[np.float64]]:
    text = values.astype(str).str.strip().str.replace(",", ".", regex=False)
    nums = pd.to_numeric(text.where(values.notna()), errors="coerce")
    out: np.ndarray[Any, np.dtype[np.float64]] = nums.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _positions(
    frame: pd.DataFrame, m: ColumnMapping, reason: np.ndarray[Any, np.dtype[np.object_]]
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]:
    n = len(frame)
    lon = np.full(n, np.nan)
    lat = np.full(n, np.nan)
    has = np.zeros(n, dtype=bool)
    if "_lon" in frame.columns:
        lon, lat = frame["_lon"].to_numpy(float), frame["_lat"].to_numpy(float)
        has = np.isfinite(lon) & np.isfinite(lat)
    lon_col, lat_col = _col(frame, m.lon), _col(frame, m.lat)
    if lon_col is not None and lat_col is not None:
        given = ~has & lon_col.notna().to_numpy() & lat_col.notna().to_numpy()
        lon = np.where(given, _numbers(lon_col), lon)
        lat = np.where(given, _numbers(lat_col), lat)
        bad = given & ~(np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180)
                        & (np.abs(lat) <= 90))  # fmt: skip
        reason[bad & (reason == None)] = "bad_position"  # noqa: E711
        has |= given & ~bad
    cells = _col(frame, m.cell_id)
    if cells is not None:
        given = ~has & cells.notna().to_numpy() & (reason == None)  # noqa: E711
        e_m, n_m, ok = grid.parse_cell_ids(cells[given])
        idx = np.flatnonzero(given)
        reason[idx[~ok]] = "bad_cell_id"
        good = idx[ok]
        if len(good):
            clon, clat = grid.cell_centres(e_m[ok], n_m[ok])
            lon[good], lat[good] = clon, clat
            has[good] = True
    reason[~has & (reason == None)] = "no_position"  # noqa: E711
    if has.any():
        x, y = grid.to_grid_crs(np.where(has, lon, 0), np.where(has, lat, 0))
        off = has & ~(np.isfinite(x) & np.isfinite(y))
        reason[off & (reason == None)] = "bad_position"  # noqa: E711
    return lon, lat


def _report(reason: np.ndarray[Any, np.dtype[np.object_]], values: list[Any]) -> ImportReport:
    bad = np.flatnonzero(reason != None)  # noqa: E711
    counts = pd.Series(reason[bad]).value_counts().to_dict() if len(bad) else {}
    shown = bad[:MAX_REPORTED_ROWS]
    rejected = pd.DataFrame({
        "row": shown + 1, "reason": reason[shown],
        "value": [str(values[i]) for i in shown],
    })  # fmt: skip
    return ImportReport(
        len(reason), len(reason) - len(bad), {str(k): int(v) for k, v in counts.items()}, rejected
    )


def normalise_offers(
    frame: pd.DataFrame, mapping: ColumnMapping
) -> tuple[pd.DataFrame, ImportReport]:
    """The usable offers (``lon``, ``lat``, ``technology``, ``max_down_mbps``, ``max_up_mbps``,
    ``operator``, ``valid_on``, ``address_key``) and the report of the rest."""
    n = len(frame)
    reason: np.ndarray[Any, np.dtype[np.object_]] = np.full(n, None, dtype=object)
    offending: list[Any] = [""] * n
    lon, lat = _positions(frame, mapping, reason)
    tech_col = _col(frame, mapping.technology)
    if tech_col is None:
        raise BadRequestError(f"no technology column {mapping.technology!r} in the file")
    raw = tech_col.astype(str).str.strip().str.lower()
    tech = raw.map(TECHNOLOGY_ALIASES).to_numpy(dtype=object)
    unknown = pd.isna(tech) & (reason == None)  # noqa: E711
    reason[unknown] = "unknown_technology"
    down_col = _col(frame, mapping.max_down_mbps)
    if down_col is None:
        raise BadRequestError(f"no download column {mapping.max_down_mbps!r} in the file")
    down = _numbers(down_col)
    bad_down = ~(np.isfinite(down) & (down >= 0)) & (reason == None)  # noqa: E711
    reason[bad_down] = "bad_download"
    up_col = _col(frame, mapping.max_up_mbps)
    up = _numbers(up_col) if up_col is not None else np.full(n, np.nan)
    if up_col is not None:
        bad_up = up_col.notna().to_numpy() & ~(np.isfinite(up) & (up >= 0)) & (reason == None)  # noqa: E711
        reason[bad_up] = "bad_upload"
    date_col = _col(frame, mapping.valid_on)
    valid = pd.Series([pd.NaT] * n)
    if date_col is not None:
        valid = pd.to_datetime(date_col, errors="coerce", format="mixed", dayfirst=False)
        bad_date = date_col.notna().to_numpy() & valid.isna().to_numpy() & (reason == None)  # noqa: E711
        reason[bad_date] = "bad_date"
    for i in np.flatnonzero(reason != None)[:MAX_REPORTED_ROWS]:  # noqa: E711
        r = reason[i]
        src = {"unknown_technology": tech_col, "bad_download": down_col, "bad_upload": up_col,
               "bad_date": date_col}.get(r)  # fmt: skip
        offending[i] = src.iloc[i] if src is not None else ""
    ok = reason == None  # noqa: E711
    op_col = _col(frame, mapping.operator)
    key_col = _col(frame, mapping.address_key)
    offers = pd.DataFrame({
        "lon": lon[ok], "lat": lat[ok], "technology": tech[ok].astype(str),
        "max_down_mbps": down[ok], "max_up_mbps": up[ok],
        "operator": op_col[ok].to_numpy(dtype=object) if op_col is not None else None,
        "valid_on": valid[ok].dt.date.to_numpy(dtype=object),
        "address_key": key_col[ok].to_numpy(dtype=object) if key_col is not None else None,
    })  # fmt: skip
    report = _report(reason, offending)
    log.info("broadband offers: %s", report.summary())
    return offers, report


def normalise_households(
    frame: pd.DataFrame, mapping: ColumnMapping
) -> tuple[pd.DataFrame, ImportReport]:
    """Usable address points or cells with households (``lon``, ``lat``, ``households``,
    ``address_key``) and the report of the rest."""
    n = len(frame)
    reason: np.ndarray[Any, np.dtype[np.object_]] = np.full(n, None, dtype=object)
    lon, lat = _positions(frame, mapping, reason)
    col = _col(frame, mapping.households)
    if col is None:
        raise BadRequestError(f"no households column {mapping.households!r} in the file")
    hh = _numbers(col)
    bad = ~(np.isfinite(hh) & (hh >= 0) & (hh == np.round(hh))) & (reason == None)  # noqa: E711
    reason[bad] = "bad_households"
    ok = reason == None  # noqa: E711
    key_col = _col(frame, mapping.address_key)
    out = pd.DataFrame({
        "lon": lon[ok], "lat": lat[ok], "households": hh[ok].astype(np.int64),
        "address_key": key_col[ok].to_numpy(dtype=object) if key_col is not None else None,
    })  # fmt: skip
    return out, _report(reason, [col.iloc[i] if bad[i] else "" for i in range(n)])


def import_broadband(
    conn: Any,
    path: Path | str,
    mapping: ColumnMapping | None = None,
    *,
    source: str | None = None,
    layer: str | None = None,
    sep: str = ",",
) -> ImportReport:
    """Read, normalise and append the usable offers of a file to ``broadband_offer`` (in the
    caller's transaction); ``source`` defaults to the file name."""
    from quartier.geo.input_store import write_offers

    offers, report = normalise_offers(read_table(path, layer, sep), mapping or ColumnMapping())
    write_offers(conn, offers, source or Path(path).name)
    return report


def import_households(
    conn: Any,
    path: Path | str,
    mapping: ColumnMapping | None = None,
    *,
    source: str | None = None,
    layer: str | None = None,
    sep: str = ",",
) -> ImportReport:
    """Read, normalise and append address points or cells with households to ``household``."""
    from quartier.geo.input_store import write_households

    rows, report = normalise_households(read_table(path, layer, sep), mapping or ColumnMapping())
    write_households(conn, rows, source or Path(path).name)
    return report
