"""A simulated but realistic broadband and mobile coverage world for Köln, deterministic by seed.

* **Address points with households** inside Köln's Stadtteile, as many per Stadtteil as its share
  of the population, clustered in blocks (so parks, fields and forests stay empty).
* **Fixed network**: a smooth random "build-out" field decides where gigabit is (FTTH/FTTB and
  DOCSIS 3.1 cable); next to it legacy cable (500/50); elsewhere VDSL from street cabinets whose
  speed falls with the distance to the nearest cabinet (250, 175, 100, 50, 30, then ADSL 16 and
  6). Per Stadtbezirk the thresholds are **calibrated** on the 100 m grid (the class of a cell is
  its best offer, its district the one containing the cell centre, exactly as the analysis
  counts) so that the household shares with ≥ 30, ≥ 100, ≥ 400 and ≥ 1000 Mbit/s equal the
  Breitbandatlas figures of mid-2021 for Köln's Stadtbezirke (packaged extract). A few gigabit
  cells are advertised but really get VDSL (wrong operator data) for the measured-vs-advertised
  check to find.
* **Mobile network**: sites per operator (Telekom, Vodafone, Telefónica, 1&1), placed where people
  live plus some evenly, each with 4G, most with 2G, some with 5G; received power falls with
  ``10 n log10(d)`` plus spatially correlated shadowing (per 400 m block and operator) and
  per-measurement noise.
* **Speed tests** at address points (weighted by households): the booked tariff (not above what
  the address gets) times a line/WLAN efficiency; **signal measurements** near address points and
  anywhere in the city: the phone reports the best technology of its operator that it can use.

Pure: numpy, shapely, pyproj and scipy; reads only the packaged data. Same seed, same world.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from pyproj import Transformer
from scipy.spatial import cKDTree

from quartier.sensors_sim.geography import _data_text, geography

BREITBANDATLAS_FILE: Final = "breitbandatlas_koeln_2021_privat.csv"
ATTRIBUTION: Final = "Breitbandatlas | Gigabit-Grundbuch (https://gigabitgrundbuch.bund.de)"
KOELN_AGS: Final = "05315"
CELL: Final = 100
KOELN_HOUSEHOLDS: Final = 550_000
#: (operator, market share, sites per 100,000 households, share of sites with 5G, with 2G)
OPERATORS: Final = (
    ("Telekom", 0.37, 50.0, 0.70, 0.95),
    ("Vodafone", 0.30, 46.0, 0.60, 0.95),
    ("Telefónica", 0.28, 44.0, 0.50, 0.90),
    ("1&1", 0.05, 9.0, 1.00, 0.0),
)
#: received power at 1 km (dBm) and path-loss exponent per technology (urban macro cells)
PROPAGATION: Final = {"2G": (-72.0, 3.5), "4G": (-96.0, 3.5), "5G": (-103.0, 3.8)}
#: a phone uses the technology when its signal reaches (dBm; RSRP for 4G/5G, RSSI for 2G)
USABLE: Final = {"5G": -112.0, "4G": -124.0, "2G": -105.0}
VDSL_TIERS: Final = ((250, 40), (175, 30), (100, 40), (50, 10), (30, 5))
ADSL_TIERS: Final = ((16, 1), (6, 0.6))

_TO_3035 = "EPSG:3035"
FloatArray = npt.NDArray[Any]  # numpy's stubs are too narrow for this arithmetic
IntArray = npt.NDArray[Any]


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 1
    addresses: int = 150_000
    speedtests: int = 200_000
    signals: int = 1_000_000
    mean_households: float = 3.7
    #: share of gigabit cells whose advertised gigabit is wrong (they really get VDSL)
    wrong_advertised: float = 0.01
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    days: int = 365


@dataclass(frozen=True)
class CoverageWorld:
    """Frames with WGS84 ``lon``/``lat``. ``addresses``: ``address_key``, ``households``,
    ``stadtteil``, ``stadtbezirk``; ``offers``: ``address_key``, ``technology``, ``max_down_mbps``,
    ``max_up_mbps``, ``operator``, ``valid_on``; ``speedtests``: ``measured_at``, ``device_key``,
    ``download_mbps``, ``upload_mbps``, ``latency_ms``, ``technology``, ``operator``;
    ``signals``: ``measured_at``, ``device_key``, ``operator``, ``technology``, ``rsrp_dbm``,
    ``rsrq_db``, ``rssi_dbm``; ``sites``: ``operator``, ``technologies``; ``targets``: the
    Breitbandatlas shares (%) per Stadtbezirk (``stadtbezirk`` "1"…"9")."""

    addresses: pd.DataFrame
    offers: pd.DataFrame
    speedtests: pd.DataFrame
    signals: pd.DataFrame
    sites: pd.DataFrame
    targets: pd.DataFrame


def breitbandatlas_targets() -> pd.DataFrame:
    """The packaged Breitbandatlas shares (% of households) per Köln Stadtbezirk: columns
    ``stadtbezirk`` ("1"…"9"), ``ags``, ``ge30``, ``ge100``, ``ge200``, ``ge400``, ``ge1000``."""
    rows = list(csv.reader(io.StringIO(_data_text(BREITBANDATLAS_FILE))))
    head, body = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(head)}
    out = []
    for r in body:
        ags = r[col["AGS"]]
        if not ags.startswith(KOELN_AGS) or ags.endswith("000"):
            continue
        out.append({
            "stadtbezirk": str(int(ags[-3:])), "ags": ags,
            **{f"ge{t}": float(r[col[f"alle Technologien ≥ {t} Mbit/s"]])
               for t in (30, 100, 200, 400, 1000)},
        })  # fmt: skip
    return pd.DataFrame(out).sort_values("stadtbezirk", ignore_index=True)


def _rng(seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, 0xC0F, tag]))


class _Projector:
    def __init__(self) -> None:
        self.fwd = Transformer.from_crs("EPSG:4326", _TO_3035, always_xy=True)
        self.inv = Transformer.from_crs(_TO_3035, "EPSG:4326", always_xy=True)

    def geom(self, g: Any) -> Any:
        return shapely.transform(g, lambda c: np.column_stack(self.fwd.transform(c[:, 0], c[:, 1])))

    def lonlat(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        lon, lat = self.inv.transform(x, y)
        return np.round(np.asarray(lon), 7), np.round(np.asarray(lat), 7)


def _sample_in(rng: np.random.Generator, poly: Any, n: int) -> tuple[FloatArray, FloatArray]:
    """``n`` uniform points inside ``poly`` (rejection in the bounding box)."""
    minx, miny, maxx, maxy = poly.bounds
    xs: list[FloatArray] = []
    ys: list[FloatArray] = []
    got = 0
    while got < n:
        k = max(64, int((n - got) * 1.6))
        x = rng.uniform(minx, maxx, k)
        y = rng.uniform(miny, maxy, k)
        ok = shapely.contains_xy(poly, x, y)
        xs.append(x[ok])
        ys.append(y[ok])
        got += int(ok.sum())
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n]


def _addresses(cfg: WorldConfig, proj: _Projector) -> tuple[pd.DataFrame, FloatArray, FloatArray]:
    geo = geography()
    rng = _rng(cfg.seed, 1)
    counts = rng.multinomial(cfg.addresses, geo.weights)
    xs, ys, stt, stb = [], [], [], []
    for teil, n in zip(geo.stadtteile, counts, strict=True):
        if n == 0:
            continue
        poly = proj.geom(teil.geometry)
        shapely.prepare(poly)
        blocks = max(3, int(n) // 30)
        bx, by = _sample_in(rng, poly, blocks)
        # addresses scatter around their block (sigma 90 m); those outside the Stadtteil are
        # drawn again
        px = np.empty(0)
        py = np.empty(0)
        while len(px) < n:
            k = int((n - len(px)) * 1.3) + 8
            b = rng.integers(0, blocks, k)
            x = bx[b] + rng.normal(0, 90, k)
            y = by[b] + rng.normal(0, 90, k)
            ok = shapely.contains_xy(poly, x, y)
            px, py = np.concatenate([px, x[ok]]), np.concatenate([py, y[ok]])
        xs.append(px[:n])
        ys.append(py[:n])
        stt += [teil.code] * int(n)
        stb += [teil.stadtbezirk] * int(n)
    x, y = np.concatenate(xs), np.concatenate(ys)
    lon, lat = proj.lonlat(x, y)
    p = 1.0 / cfg.mean_households
    households = 1 + rng.geometric(p, len(x)) - 1
    frame = pd.DataFrame({
        "address_key": [f"A{i:07d}" for i in range(len(x))],
        "lon": lon, "lat": lat, "households": households.astype(np.int64),
        "stadtteil": stt, "stadtbezirk": stb,
    })  # fmt: skip
    return frame, x, y


def _field(rng: np.random.Generator, x: FloatArray, y: FloatArray, bumps: int) -> FloatArray:
    """A smooth random field: a sum of Gaussian bumps of 300…1500 m."""
    cx = rng.uniform(x.min(), x.max(), bumps)
    cy = rng.uniform(y.min(), y.max(), bumps)
    sigma = rng.uniform(300, 1500, bumps)
    weight = rng.uniform(0.3, 1.0, bumps)
    out = np.zeros(len(x))
    for i in range(bumps):  # per bump, vectorised over the cells
        out += weight[i] * np.exp(-((x - cx[i]) ** 2 + (y - cy[i]) ** 2) / (2 * sigma[i] ** 2))
    return out + rng.normal(0, 0.02, len(x))


def _weighted_cut(values: FloatArray, weights: FloatArray, share: float, top: bool) -> FloatArray:
    """Boolean mask choosing the largest (``top``) or smallest values whose weight is the
    nearest to ``share`` of the total."""
    if len(values) == 0 or share <= 0:
        return np.zeros(len(values), dtype=bool)
    order = np.argsort(-values if top else values, kind="stable")
    cum = np.cumsum(weights[order])
    target = share * cum[-1]
    k = int(np.searchsorted(cum, target, side="left"))
    if k < len(cum) and (k == 0 or abs(cum[k] - target) < abs(cum[k - 1] - target)):
        k += 1
    chosen = np.zeros(len(values), dtype=bool)
    chosen[order[:k]] = True
    return chosen


def _fixed_network(
    cfg: WorldConfig, addr: pd.DataFrame, x: FloatArray, y: FloatArray, proj: _Projector
) -> tuple[pd.DataFrame, FloatArray]:
    """Offers per address, and the true best download per address (for the speed tests)."""
    rng = _rng(cfg.seed, 2)
    geo = geography()
    targets = breitbandatlas_targets().set_index("stadtbezirk")
    ce = np.floor(x / CELL).astype(np.int64)
    cn = np.floor(y / CELL).astype(np.int64)
    key = cn * 100_000 + ce
    cells, inv = np.unique(key, return_inverse=True)
    n_cells = len(cells)
    hh = np.bincount(inv, weights=addr["households"].to_numpy(float), minlength=n_cells)
    cx = (cells % 100_000) * CELL + CELL / 2.0
    cy = (cells // 100_000) * CELL + CELL / 2.0
    # district of each cell: the Stadtbezirk containing the cell centre (as the analysis does)
    district = np.full(n_cells, "", dtype=object)
    for code, bez in geo.stadtbezirke.items():
        poly = proj.geom(bez.geometry)
        shapely.prepare(poly)
        inside = shapely.intersects_xy(poly, cx, cy) & (district == "")
        district[inside] = code
    field = _field(rng, cx, cy, 400)
    # street cabinets at random addresses (about one per 45 addresses); a cell's VDSL line
    # length is the shortest of its addresses
    cab = rng.choice(len(x), size=max(10, len(x) // 45), replace=False)
    dist, _ = cKDTree(np.column_stack([x[cab], y[cab]])).query(np.column_stack([x, y]))
    dist = dist * rng.uniform(1.0, 1.6, len(x)) + 20  # cable runs are longer than the crow flies
    cell_dist = np.full(n_cells, np.inf)
    np.minimum.at(cell_dist, inv, dist)

    gigabit = np.zeros(n_cells, dtype=bool)
    legacy_cable = np.zeros(n_cells, dtype=bool)
    vdsl_down = np.zeros(n_cells)
    vdsl_up = np.zeros(n_cells)
    for code in np.unique(district):
        sel = np.flatnonzero(district == code)
        t = (
            targets.loc[code]
            if code in targets.index
            else targets.mean(numeric_only=True)  # cells outside every Stadtbezirk
        )
        w = hh[sel]
        s1000, s400 = t["ge1000"] / 100, t["ge400"] / 100
        s100, s30 = t["ge100"] / 100, t["ge30"] / 100
        g = _weighted_cut(field[sel], w, s1000, top=True)
        gigabit[sel[g]] = True
        rest = sel[~g]
        total = w.sum()
        wr = hh[rest]
        lc = _weighted_cut(field[rest], wr, (s400 - s1000) * total / max(wr.sum(), 1e-9), True)
        legacy_cable[rest[lc]] = True
        dsl = rest[~lc]
        wd = hh[dsl]
        share100 = (s100 - s400) * total / max(wd.sum(), 1e-9)
        share30 = (s30 - s400) * total / max(wd.sum(), 1e-9)
        d = cell_dist[dsl]
        fast = _weighted_cut(d, wd, share100, top=False)
        ok30 = _weighted_cut(d, wd, share30, top=False) | fast
        d_fast = d[fast].max() if fast.any() else 0.0
        tier = np.where(d <= d_fast / 3, 0, np.where(d <= 2 * d_fast / 3, 1, 2))
        down = np.array([v[0] for v in VDSL_TIERS])[tier]
        up = np.array([v[1] for v in VDSL_TIERS])[tier]
        mid = ok30 & ~fast
        d_mid = d[mid].max() if mid.any() else d_fast
        down = np.where(mid, np.where(d <= (d_fast + d_mid) / 2, 50, 30), down)
        up = np.where(mid, np.where(d <= (d_fast + d_mid) / 2, 10, 5), up)
        slow = ~ok30
        down = np.where(slow, np.where(d <= 1.5 * d_mid, 16, 6), down)
        up = np.where(slow, np.where(d <= 1.5 * d_mid, 1, 0.6), up)
        vdsl_down[dsl], vdsl_up[dsl] = down, up
    # VDSL/ADSL at every address of a non-gigabit cell; gigabit cells have VDSL 250 as well
    a_gig = gigabit[inv]
    dsl_down = np.where(a_gig, 250.0, vdsl_down[inv])
    dsl_up = np.where(a_gig, 40.0, vdsl_up[inv])
    wrong = a_gig & (rng.random(n_cells) < cfg.wrong_advertised)[inv]
    keys = addr["address_key"].to_numpy()
    lon, lat = addr["lon"].to_numpy(), addr["lat"].to_numpy()
    parts = [pd.DataFrame({
        "address_key": keys, "lon": lon, "lat": lat,
        "technology": np.where(dsl_down >= 30, "vdsl", "adsl"),
        "max_down_mbps": dsl_down, "max_up_mbps": dsl_up, "operator": "Telekom",
    })]  # fmt: skip
    # gigabit: cable (Vodafone, DOCSIS 3.1) and/or fibre (NetCologne, Telekom, Deutsche Glasfaser)
    u = rng.random(n_cells)[inv]
    has_cable = a_gig & (u < 0.75)
    has_fibre = a_gig & ~(u < 0.75) | (a_gig & (rng.random(len(x)) < 0.5))
    parts.append(pd.DataFrame({
        "address_key": keys[has_cable], "lon": lon[has_cable], "lat": lat[has_cable],
        "technology": "hfc", "max_down_mbps": 1000.0, "max_up_mbps": 50.0, "operator": "Vodafone",
    }))  # fmt: skip
    fibre_ops = np.array(["NetCologne", "Telekom", "Deutsche Glasfaser"])
    op_pick = fibre_ops[rng.choice(3, len(x), p=[0.6, 0.3, 0.1])][has_fibre]
    parts.append(pd.DataFrame({
        "address_key": keys[has_fibre], "lon": lon[has_fibre], "lat": lat[has_fibre],
        "technology": np.where(rng.random(int(has_fibre.sum())) < 0.7, "ftth", "fttb"),
        "max_down_mbps": 1000.0, "max_up_mbps": np.where(op_pick == "NetCologne", 500.0, 1000.0),
        "operator": op_pick,
    }))  # fmt: skip
    a_leg = legacy_cable[inv]
    parts.append(pd.DataFrame({
        "address_key": keys[a_leg], "lon": lon[a_leg], "lat": lat[a_leg], "technology": "hfc",
        "max_down_mbps": 500.0, "max_up_mbps": 50.0, "operator": "Vodafone",
    }))  # fmt: skip
    # a few white cells get fixed wireless (25/5), which does not change their class
    fwa = (dsl_down < 30) & (rng.random(len(x)) < 0.2)
    parts.append(pd.DataFrame({
        "address_key": keys[fwa], "lon": lon[fwa], "lat": lat[fwa], "technology": "fwa",
        "max_down_mbps": 25.0, "max_up_mbps": 5.0, "operator": "Telekom",
    }))  # fmt: skip
    offers = pd.concat(parts, ignore_index=True)
    offers["valid_on"] = pd.Timestamp("2021-06-30").date()
    true_best = np.where(
        a_leg, 500.0, np.where(a_gig & ~wrong, 1000.0, np.where(wrong, 50.0, dsl_down))
    )
    return offers, true_best


def _speedtests(
    cfg: WorldConfig, addr: pd.DataFrame, x: FloatArray, y: FloatArray, true_best: FloatArray,
    proj: _Projector,
) -> pd.DataFrame:  # fmt: skip
    rng = _rng(cfg.seed, 3)
    n = cfg.speedtests
    w = addr["households"].to_numpy(float)
    at = rng.choice(len(x), size=n, p=w / w.sum())
    best = true_best[at]
    tariffs = np.array([16, 50, 100, 250, 500, 1000])
    # the booked tariff: one of the tiers up to what the address gets, middle tiers preferred
    allowed = tariffs[None, :] <= best[:, None] + 1e-9
    pref = np.array([0.5, 1.5, 2.5, 2.5, 1.5, 1.2])[None, :] * allowed
    cum = np.cumsum(pref, axis=1)
    pick = (rng.random(n)[:, None] * cum[:, -1:] < cum).argmax(axis=1)
    tariff = np.where(allowed.any(axis=1), tariffs[pick], best)
    tariff = np.minimum(tariff, best)
    wlan = rng.random(n) < 0.35
    eff = np.where(wlan, rng.uniform(0.15, 0.9, n), np.clip(rng.normal(0.9, 0.08, n), 0.3, 1.02))
    down = np.round(tariff * eff, 2)
    up = np.round(np.maximum(0.1, tariff * rng.uniform(0.05, 0.4, n)), 2)
    jitter_x = x[at] + rng.normal(0, 8, n)
    jitter_y = y[at] + rng.normal(0, 8, n)
    lon, lat = proj.lonlat(jitter_x, jitter_y)
    seconds = rng.uniform(0, cfg.days * 86400, n)
    return pd.DataFrame({
        "measured_at": pd.Timestamp(cfg.start) + pd.to_timedelta(np.round(seconds, 3), unit="s"),
        "device_key": np.char.add("crowd-", rng.integers(0, 50_000, n).astype(str)),
        "lon": lon, "lat": lat, "download_mbps": down, "upload_mbps": up,
        "latency_ms": np.round(rng.gamma(4, 4, n) + 4, 1),
        "technology": np.where(tariff >= 1000, "ftth", np.where(tariff >= 500, "cable", "dsl")),
        "operator": None,
    })  # fmt: skip


def _mobile(
    cfg: WorldConfig, addr: pd.DataFrame, x: FloatArray, y: FloatArray, proj: _Projector
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = _rng(cfg.seed, 4)
    geo = geography()
    city = shapely.union_all([proj.geom(b.geometry) for b in geo.stadtbezirke.values()])
    shapely.prepare(city)
    w = addr["households"].to_numpy(float)
    total_hh = w.sum()
    sites: list[pd.DataFrame] = []
    trees: dict[tuple[int, str], tuple[cKDTree, int]] = {}
    for i, (op, _share, per_100k, p5g, p2g) in enumerate(OPERATORS):
        k = max(4, round(per_100k * KOELN_HOUSEHOLDS / 100_000))  # whatever the sample
        k_pop = int(k * 0.75)
        at = rng.choice(len(x), size=k_pop, p=w / total_hh)
        ux, uy = _sample_in(rng, city, k - k_pop)
        sx = np.concatenate([x[at] + rng.normal(0, 50, k_pop), ux])
        sy = np.concatenate([y[at] + rng.normal(0, 50, k_pop), uy])
        has5 = rng.random(k) < p5g
        has2 = rng.random(k) < p2g
        techs = {"4G": np.ones(k, bool), "5G": has5, "2G": has2}
        for tech, m in techs.items():
            if m.any():
                trees[(i, tech)] = (cKDTree(np.column_stack([sx[m], sy[m]])), int(m.sum()))
        slon, slat = proj.lonlat(sx, sy)
        sites.append(pd.DataFrame({
            "operator": op, "lon": slon, "lat": slat,
            "technologies": ["/".join(t for t, m in techs.items() if m[j]) for j in range(k)],
        }))  # fmt: skip
    n = cfg.signals
    near = rng.random(n) < 0.8
    at = rng.choice(len(x), size=n, p=w / total_hh)
    px = np.where(near, x[at] + rng.normal(0, 60, n), 0.0)
    py = np.where(near, y[at] + rng.normal(0, 60, n), 0.0)
    fx, fy = _sample_in(rng, city, int((~near).sum()))
    px[~near], py[~near] = fx, fy
    market = np.array([o[1] for o in OPERATORS])
    op_idx = rng.choice(len(OPERATORS), size=n, p=market / market.sum())
    # spatially correlated shadowing: one normal per 400 m block, operator and technology
    bx = np.floor((px - px.min()) / 400).astype(np.int64)
    by = np.floor((py - py.min()) / 400).astype(np.int64)
    blocks = (bx.max() + 1) * (by.max() + 1)
    shadow = rng.normal(0, 6, (len(OPERATORS), 3, int(blocks)))
    block = by * (bx.max() + 1) + bx
    tech_out = np.full(n, "", dtype=object)
    level = np.full(n, np.nan)
    for i in range(len(OPERATORS)):
        sel = np.flatnonzero(op_idx == i)
        chosen = np.zeros(len(sel), dtype=bool)
        for j, tech in enumerate(("5G", "4G", "2G")):
            if (i, tech) not in trees:
                continue
            tree, _ = trees[(i, tech)]
            d, _ = tree.query(np.column_stack([px[sel], py[sel]]))
            p_ref, expo = PROPAGATION[tech]
            sig = (p_ref - 10 * expo * np.log10(np.maximum(d, 20) / 1000)
                   + shadow[i, j, block[sel]] + rng.normal(0, 4, len(sel)))  # fmt: skip
            use = ~chosen & (sig >= USABLE[tech])
            tech_out[sel[use]] = tech
            level[sel[use]] = sig[use]
            chosen |= use
    ok = tech_out != ""
    lon, lat = proj.lonlat(px[ok], py[ok])
    k_ok = int(ok.sum())
    is2g = tech_out[ok] == "2G"
    lv = np.clip(np.round(level[ok], 1), -150, -25)
    seconds = rng.uniform(0, cfg.days * 86400, k_ok)
    signals = pd.DataFrame({
        "measured_at": pd.Timestamp(cfg.start) + pd.to_timedelta(np.round(seconds, 6), unit="s"),
        "device_key": np.char.add("phone-", rng.integers(0, 20_000, k_ok).astype(str)),
        "lon": lon, "lat": lat,
        "operator": np.array([o[0] for o in OPERATORS])[op_idx[ok]],
        "technology": tech_out[ok].astype(str),
        "rsrp_dbm": np.where(is2g, np.nan, lv),
        "rsrq_db": np.where(is2g, np.nan, np.clip(np.round(-8 + (lv + 95) / 12
                                                           + rng.normal(0, 2, k_ok), 1), -30, -3)),
        "rssi_dbm": np.where(is2g, np.clip(lv, -120, -30), np.nan),
    })  # fmt: skip
    return signals, pd.concat(sites, ignore_index=True)


def coverage_world(cfg: WorldConfig | None = None) -> CoverageWorld:
    """Build the world (about 10 s for the default size: 150,000 addresses, 200,000 speed tests
    and 1,000,000 signal measurements)."""
    c = cfg or WorldConfig()
    proj = _Projector()
    addr, x, y = _addresses(c, proj)
    offers, true_best = _fixed_network(c, addr, x, y, proj)
    tests = _speedtests(c, addr, x, y, true_best, proj)
    signals, sites = _mobile(c, addr, x, y, proj)
    return CoverageWorld(addr, offers, tests, signals, sites, breitbandatlas_targets())
