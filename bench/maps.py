"""Map size and speed on a Köln-sized world (issue #15 item 4): each page ≤ 5 MB and interactive
within 2 s in headless Chromium.

    .venv/bin/python bench/maps.py [--runs 5] [--data-dir DIR]

Loads the simulated Köln coverage world of ``bench/coverage.py`` (150,000 address points,
200,000 speed tests, 1,000,000 signal measurements; with ``--data-dir`` the loaded database is
kept and reused, the same directory as ``bench/coverage.py --data-dir``), analyses it (about
36,000 cells), evaluates the example strategy, serves the API (uvicorn, one process) and, for
each map, ``--runs`` times:

* page bytes (uncompressed) and gzip bytes as sent,
* server time: the request's wall time with a plain HTTP client,
* time to interactive: in Debian's chromium (Playwright, 1280×800), from ``goto`` until the
  map's features are drawn and the legend is shown (every path of the map's layers in the DOM,
  then one animation frame), with every request to another host aborted.

The coverage run stores the maps' layers (``quartier/maps/layer_store.py``, migration 0043):
the time that adds to the analysis is printed. Also, in the same run, the server side of the
broadband, mobile and measured maps in this process (``pages.render_page``, ``--runs`` times):
from the stored layers against the same page made from the run's cells per request (the layers
merged and, for the mobile and measured maps, the k-anonymity check counting the raw rows: what
a run without stored layers gets); both must give the same page.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quartier.api.app import create_app
from quartier.config import Settings
from quartier.coverage_run import after_coverage_run
from quartier.evaluation.evaluate import evaluate
from quartier.evaluation.strategy import load_strategy
from quartier.geo import run_store, service
from quartier.maps import layer_store, pages
from quartier.maps.render import MapOptions
from quartier.services import LocalServices, free_port

# bench/coverage.py's Köln world and kept databases (a module named like coverage.py's package)
_spec = importlib.util.spec_from_file_location(
    "bench_coverage", Path(__file__).resolve().parent / "coverage.py"
)
assert _spec is not None and _spec.loader is not None
bench_coverage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_coverage)

CHROMIUM = "/usr/bin/chromium"
MAX_BYTES = 5_000_000
MAX_TTI_S = 2.0
PAGES = {
    "coverage": "/maps/coverage",
    "mobile": "/maps/mobile",
    "measured": "/maps/measured",
    "districts": "/maps/districts?indicator=bb_households_1000",
    "sensors": "/maps/sensors",
}
#: drawn: Leaflet has put the features of every GeoJSON layer on the map, the legend is shown
DRAWN = """() => {
    if (!document.querySelector('#quartier-legend')) return false;
    const paths = document.querySelectorAll('path.leaflet-interactive').length;
    const markers = document.querySelectorAll('.leaflet-marker-icon').length;
    return paths + markers > 0;
}"""
FRAME = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(1))))"


def _stats(values: list[float]) -> str:
    return f"min {min(values):.2f}, median {statistics.median(values):.2f}, max {max(values):.2f}"


def _prepare(url: str) -> None:
    """A current coverage run and a strategy evaluation (for the district map)."""
    with psycopg.connect(url) as conn:
        t = time.perf_counter()
        service.analyse_and_store(conn, conninfo=url, on_stored=after_coverage_run(5))
        conn.commit()
        print(f"  coverage analysed in {time.perf_counter() - t:.1f} s (with the maps' layers)")
        t = time.perf_counter()
        layer_store.store_run_layers(conn, run_store.current_run_id(conn) or 0, min_contributors=5)
        conn.commit()
        print(f"  the maps' layers alone (made again): {time.perf_counter() - t:.1f} s")
        strategy = Path(__file__).resolve().parents[1] / "quartier/resources/strategy-koeln.yaml"
        if conn.execute("select 1 from evaluation_run limit 1").fetchone():
            return  # kept from an earlier run (--data-dir)
        t = time.perf_counter()
        evaluate(conn, load_strategy(strategy), datetime.now(UTC))
        conn.commit()
        print(f"  strategy evaluated in {time.perf_counter() - t:.1f} s")


def _layers_baseline(url: str, runs: int) -> None:
    """The server side of the run's maps: stored layers against the same page made per request
    (no stored layers: the run's cells merged, the raw rows counted for k-anonymity)."""
    ids = re.compile(r"[a-z_]+_[0-9a-f]{32}")
    with psycopg.connect(url) as conn:
        run = run_store.get_run(conn)
        for name in ("coverage", "mobile", "measured"):
            stored_t, live_t = [], []
            for _ in range(runs):
                t = time.perf_counter()
                stored = pages.render_page(conn, name, MapOptions())
                stored_t.append(time.perf_counter() - t)
                conn.execute("delete from coverage_map where run_id = %s", (run.id,))
                t = time.perf_counter()
                live = pages.render_page(conn, name, MapOptions())
                live_t.append(time.perf_counter() - t)
                conn.rollback()
            same = ids.sub("X", stored) == ids.sub("X", live)
            ratio = statistics.median(live_t) / statistics.median(stored_t)
            print(
                f"  {name:9s} server, in process: stored layers {_stats(stored_t)} s; made per "
                f"request {_stats(live_t)} s; {ratio:.1f}x; same page: {same}"
            )
            if not same:
                raise SystemExit(f"{name}: the stored and the per-request page differ")


def _serve(settings: Settings) -> tuple[str, Callable[[], None]]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit("uvicorn did not start")
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"127.0.0.1:{port}", stop


def measure(own: str, runs: int) -> dict[str, dict[str, Any]]:
    from playwright.sync_api import Route, sync_playwright

    results: dict[str, dict[str, Any]] = {}
    with httpx.Client(timeout=120) as client:
        for name, path in PAGES.items():
            server, size, zipped = [], 0, 0
            for _ in range(runs):
                t = time.perf_counter()
                r = client.get(f"http://{own}{path}", headers={"Accept-Encoding": "identity"})
                server.append(time.perf_counter() - t)
                r.raise_for_status()
                size = len(r.content)
                zipped = len(gzip.compress(r.content, 6))
            results[name] = {"bytes": size, "gzip": zipped, "server": server, "tti": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu"])
        for name, path in PAGES.items():
            for _ in range(runs):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                errors: list[str] = []
                elsewhere: list[str] = []

                def route(r: Route, errs: list[str] = elsewhere) -> None:
                    if urlsplit(r.request.url).netloc == own:
                        r.continue_()
                    else:
                        errs.append(r.request.url)
                        r.abort()

                page.route("**/*", route)
                page.on("pageerror", lambda exc: errors.append(str(exc)))  # noqa: B023
                t = time.perf_counter()
                page.goto(f"http://{own}{path}", wait_until="load", timeout=120_000)
                page.wait_for_function(DRAWN, timeout=120_000)
                page.evaluate(FRAME)
                results[name]["tti"].append(time.perf_counter() - t)
                page.close()
                if errors or elsewhere:
                    raise SystemExit(f"{name}: errors {errors}, other hosts {elsewhere}")
        browser.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--data-dir", type=Path, help="keep PostgreSQL and the Köln world here")
    args = ap.parse_args()
    if shutil.which(CHROMIUM) is None:
        raise SystemExit(f"{CHROMIUM} missing: apt-get install chromium")
    state_dir = None
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(args.data_dir, 0o755)
        local = LocalServices(args.data_dir, fast_unsafe=True)
    else:
        state_dir = Path(tempfile.mkdtemp(prefix="quartier-bench-maps-"))
        os.chmod(state_dir, 0o755)
        local = LocalServices(state_dir, fast_unsafe=True)
    urls = local.up()
    stop: Callable[[], None] | None = None
    try:
        print("Köln: loading …")
        if args.data_dir is not None:
            url = bench_coverage.kept_db(urls.database_url, "koeln", bench_coverage.load_koeln)
        else:
            url = bench_coverage.fresh_db(urls.database_url)
            bench_coverage.load_koeln(url)
        _prepare(url)
        print("server side, stored layers against made per request:")
        _layers_baseline(url, args.runs)
        settings = Settings(_env_file=None, database={"url": url}, mqtt={"url": urls.mqtt_url})
        own, stop = _serve(settings)
        results = measure(own, args.runs)
        print(f"maps of the Köln world, {args.runs} runs each (seconds; bytes uncompressed/gzip):")
        worst_bytes, worst_tti = 0, 0.0
        for name, r in results.items():
            print(
                f"  {name:9s} {r['bytes'] / 1e6:6.2f} MB ({r['gzip'] / 1e6:.2f} MB gzip); "
                f"server {_stats(r['server'])}; interactive {_stats(r['tti'])}"
            )
            worst_bytes = max(worst_bytes, r["bytes"])
            worst_tti = max(worst_tti, statistics.median(r["tti"]))
        print(f"  load average (1, 5, 15 min): {os.getloadavg()}")
        ok = worst_bytes <= MAX_BYTES
        print(f"  every page ≤ 5 MB: {'met' if ok else 'NOT met'} ({worst_bytes / 1e6:.2f} MB)")
        ok = worst_tti <= MAX_TTI_S
        print(f"  every page interactive ≤ 2 s (median): {'met' if ok else 'NOT met'} "
              f"({worst_tti:.2f} s)")  # fmt: skip
    finally:
        if stop is not None:
            stop()
        local.down()
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
