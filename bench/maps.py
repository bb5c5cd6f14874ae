"""Map size and speed on a Köln-sized world (issue #15 item 4): each page ≤ 5 MB and interactive
within 2 s in headless Chromium.

    .venv/bin/python bench/maps.py [--runs 5] [--data-dir DIR] [--maps measured,...]
                                   [--no-baseline] [--profile]

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
a run without stored layers gets); both must give the same page (``--no-baseline`` skips it).

Since session 7 the measured map shows an overview per 1 km cell zoomed out and fetches the
100 m cells of the view from zoom 14 on (``docs/maps.md``, "Zoom levels of the measured map"):
the benchmark also times the session-6 page that drew every 100 m cell while loading (made from
the same stored layers, answered by the benchmark itself) in the same runs, interleaved, for a
same-run ratio; the zoom-in to 14 on the city's centre (until the view's 100 m cells are fetched
and drawn); and the size of the measured map as a file (``quartier map measured --out``).
``--profile`` prints, per page, where the time to interactive goes: the renderer main thread's
trace events by self time (parsing, compiling and running scripts, style, layout, paint, GC; as
DevTools' Performance panel) and the JavaScript functions by self time (V8 CPU profile).
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
from quartier.maps.assets import Assets
from quartier.maps.measured import FINE_MIN_ZOOM
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
#: the measured map zoomed in to zoom ``z`` on its centre: milliseconds until the 100 m cells of
#: the view are fetched and drawn (the layer's load event, then two animation frames), and how
#: many cells that was
ZOOM_IN = """z => new Promise(resolve => {
    let map, fine;
    for (const k in window) {
        if (window[k] instanceof L.Map) map = window[k];
        if (k.startsWith('zoomed_cells_') && window[k] instanceof L.LayerGroup) fine = window[k];
    }
    const t = performance.now();
    fine.once('quartier:loaded', e => requestAnimationFrame(() => requestAnimationFrame(
        () => resolve([performance.now() - t, e.features]))));
    map.setZoom(z, {animate: false});
})"""


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


#: the measured map as it was before the overview per 1 km cell (session 6): every 100 m cell
#: drawn while the page loads; served by the benchmark itself (the browser's request answered
#: with the page made from the same stored layers), for same-run ratios and the profile
ALL_CELLS = "measured_all_cells"
ALL_CELLS_PATH = "/bench/measured-all-cells"


def all_cells_page(url: str) -> str:
    """The session-6 measured page from the run's stored layers: districts, the compared cells
    merged and the cells below the offer one square each (canvas, tooltip per cell), all added
    at load; the scripts linked from the API's ``/static`` as on the served pages."""
    from quartier.geo import io as geo_io
    from quartier.maps import render
    from quartier.maps.measured import COMPARED_COLOUR, RATIO_COLOURS

    with psycopg.connect(url) as conn:
        run = run_store.get_run(conn)
        layers = layer_store.load_layers(conn, run.id, "measured")
        districts = geo_io.load_districts(conn, "stadtbezirk")
        city = geo_io.load_districts(conn, "city")
    if layers is None:
        raise SystemExit("the run has no stored layers")
    compared, below = layers.get("compared"), layers.get("below")
    assert compared is not None and below is not None
    options = MapOptions()
    fmap = render._base_map(options, render._bounds([city, districts]), "measured (all cells)")
    render._add_districts(fmap, districts, "de")
    render.CellLayer(compared.geojson, "Verglichene Zellen",
                     [render._fill(COMPARED_COLOUR, 0.35)]).add_to(fmap)  # fmt: skip
    render.CellLayer(
        below.geojson, "Messung deutlich unter dem Angebot",
        [render._fill(c, 0.75) for c in RATIO_COLOURS], style_key="s",
        fields=[(k, k, None) for k in ("m", "o", "r", "t", "c")], canvas=True,
    ).add_to(fmap)  # fmt: skip
    legend = render._legend("Alle 100-m-Zellen beim Laden (Sitzung 6)", "", options)
    return render._page(fmap, legend, options)


def _router(own: str, elsewhere: list[str], body: str | None) -> Callable[[Any], None]:
    """A route handler: requests to Quartier (``own``) go through, the baseline page's
    (``ALL_CELLS_PATH``) is answered with ``body``, any other is aborted and recorded in
    ``elsewhere``. (Playwright passes the request too to a handler taking two arguments, so the
    handler takes one and closes over the rest.)"""

    def route(r: Any) -> None:
        parts = urlsplit(r.request.url)
        if parts.netloc == own and body is not None and parts.path == ALL_CELLS_PATH:
            r.fulfill(status=200, content_type="text/html", body=body)
        elif parts.netloc == own:
            r.continue_()
        else:
            elsewhere.append(r.request.url)
            r.abort()

    return route


def measure(
    own: str, runs: int, names: list[str], extra: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Bytes and server time of each map over HTTP, then time to interactive in chromium: the
    runs interleaved (run 1 of every map, then run 2 …), so that a change in the machine's load
    falls on every map alike. ``extra``: pages by name answered by the benchmark itself (at
    ``ALL_CELLS_PATH``), timed in the browser like the others."""
    from playwright.sync_api import sync_playwright

    extra = extra or {}
    results: dict[str, dict[str, Any]] = {}
    with httpx.Client(timeout=120) as client:
        for name in names:
            path = PAGES[name]
            server, size, zipped = [], 0, 0
            for _ in range(runs):
                t = time.perf_counter()
                r = client.get(f"http://{own}{path}", headers={"Accept-Encoding": "identity"})
                server.append(time.perf_counter() - t)
                r.raise_for_status()
                size = len(r.content)
                zipped = len(gzip.compress(r.content, 6))
            results[name] = {"bytes": size, "gzip": zipped, "server": server, "tti": []}
    for name, html_ in extra.items():
        body = html_.encode()
        results[name] = {"bytes": len(body), "gzip": len(gzip.compress(body, 6)), "server": [0.0],
                         "tti": []}  # fmt: skip
    order = [(n, PAGES[n]) for n in names] + [(n, ALL_CELLS_PATH) for n in extra]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu"])
        for _ in range(runs):
            for name, path in order:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                errors: list[str] = []
                elsewhere: list[str] = []

                page.route("**/*", _router(own, elsewhere, extra.get(name)))
                page.on("pageerror", lambda exc: errors.append(str(exc)))  # noqa: B023
                t = time.perf_counter()
                page.goto(f"http://{own}{path}", wait_until="load", timeout=120_000)
                page.wait_for_function(DRAWN, timeout=120_000)
                page.evaluate(FRAME)
                results[name]["tti"].append(time.perf_counter() - t)
                if name == "measured":
                    ms, cells = page.evaluate(ZOOM_IN, FINE_MIN_ZOOM)
                    results[name].setdefault("zoom", []).append(ms / 1000)
                    results[name]["zoom_cells"] = cells
                page.close()
                if errors or elsewhere:
                    raise SystemExit(f"{name}: errors {errors}, other hosts {elsewhere}")
        browser.close()
    return results


#: trace categories of the page's main-thread work (what DevTools' Performance panel records)
TRACE_CATEGORIES = ["devtools.timeline", "v8.execute", "blink.user_timing", "v8"]


def _self_times(trace: dict[str, Any]) -> tuple[dict[str, float], float]:
    """Self time (ms) per trace event name on the renderer's main thread, and the main thread's
    busy time (top-level events)."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    main = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("ph") == "M"
        and e.get("name") == "thread_name"
        and e.get("args", {}).get("name") == "CrRendererMain"
    }
    spans = sorted(
        (
            (e["ts"], e["ts"] + e.get("dur", 0), e["name"])
            for e in events
            if e.get("ph") == "X" and (e["pid"], e["tid"]) in main and e.get("dur")
        ),
        key=lambda s: (s[0], -s[1]),
    )
    own: dict[str, float] = {}
    stack: list[list[Any]] = []  # [end, name, child time]
    busy = 0.0

    def close(until: float) -> None:
        while stack and stack[-1][0] <= until:
            end, name, child, start = stack.pop()
            own[name] = own.get(name, 0.0) + (end - start - child) / 1000

    for start, end, name in spans:
        close(start)
        if stack:
            stack[-1][2] += end - start
        else:
            busy += (end - start) / 1000
        stack.append([end, name, 0.0, start])
    close(float("inf"))
    return own, busy


def _cpu_self(profile: dict[str, Any]) -> dict[str, float]:
    """Self time (ms) per JavaScript function (name and script) of a V8 CPU profile."""
    nodes = {n["id"]: n for n in profile["nodes"]}
    deltas = profile.get("timeDeltas", [])
    own: dict[str, float] = {}
    for node_id, delta in zip(profile.get("samples", []), deltas, strict=False):
        frame = nodes[node_id]["callFrame"]
        script = frame.get("url", "").rsplit("/", 1)[-1] or "(page)"
        function = frame.get("functionName") or "(anonymous)"
        key = f"{function} [{script}:{frame.get('lineNumber', 0)}]"
        own[key] = own.get(key, 0.0) + delta / 1000
    return own


def profile(own: str, names: list[str], extra: dict[str, str] | None = None, top: int = 14) -> None:
    """Where the time to interactive goes (``--profile``): per page, the main thread's trace
    events by self time (as DevTools' Performance panel: parsing HTML, compiling and running
    scripts, style, layout, paint, GC) and the JavaScript functions by self time (CPU profile,
    sampled every 100 µs)."""
    import json as json_

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu"])
        for name in [*names, *(extra or {})]:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            body = (extra or {}).get(name)

            page.route("**/*", _router(own, [], body))
            cdp = page.context.new_cdp_session(page)
            cdp.send("Profiler.enable")
            cdp.send("Profiler.setSamplingInterval", {"interval": 100})
            browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
            cdp.send("Profiler.start")
            t = time.perf_counter()
            path = ALL_CELLS_PATH if body is not None else PAGES[name]
            page.goto(f"http://{own}{path}", wait_until="load", timeout=120_000)
            page.wait_for_function(DRAWN, timeout=120_000)
            page.evaluate(FRAME)
            tti = time.perf_counter() - t
            cpu = cdp.send("Profiler.stop")["profile"]
            trace = json_.loads(browser.stop_tracing())
            events, busy = _self_times(trace)
            print(f"  {name}: interactive {tti:.2f} s; renderer main thread busy {busy:.0f} ms")
            print("    trace events by self time (ms):")
            for ev, ms in sorted(events.items(), key=lambda kv: -kv[1])[:top]:
                print(f"      {ms:8.1f}  {ev}")
            print("    JavaScript functions by self time (ms):")
            for fn, ms in sorted(_cpu_self(cpu).items(), key=lambda kv: -kv[1])[:top]:
                print(f"      {ms:8.1f}  {fn}")
            page.close()
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--data-dir", type=Path, help="keep PostgreSQL and the Köln world here")
    ap.add_argument("--maps", default=",".join(PAGES), help="the maps to measure (comma-separated)")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also print where each map's time to interactive goes (trace, CPU profile)",
    )
    ap.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the in-process comparison with pages made per request",
    )
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
        names = [m for m in args.maps.split(",") if m]
        if unknown := set(names) - set(PAGES):
            raise SystemExit(f"unknown maps {sorted(unknown)}; known: {', '.join(PAGES)}")
        if not args.no_baseline:
            print("server side, stored layers against made per request:")
            _layers_baseline(url, args.runs)
        settings = Settings(_env_file=None, database={"url": url}, mqtt={"url": urls.mqtt_url})
        own, stop = _serve(settings)
        extra = {}
        if "measured" in names:
            extra[ALL_CELLS] = all_cells_page(url)
        results = measure(own, args.runs, names, extra)
        print(f"maps of the Köln world, {args.runs} runs each (seconds; bytes uncompressed/gzip):")
        worst_bytes, worst_tti = 0, 0.0
        for name, r in results.items():
            print(
                f"  {name:9s} {r['bytes'] / 1e6:6.2f} MB ({r['gzip'] / 1e6:.2f} MB gzip); "
                f"server {_stats(r['server'])}; interactive {_stats(r['tti'])}"
            )
            if name in extra:
                continue  # the baseline, not a page Quartier serves
            worst_bytes = max(worst_bytes, r["bytes"])
            worst_tti = max(worst_tti, statistics.median(r["tti"]))
        if ALL_CELLS in results:
            before = statistics.median(results[ALL_CELLS]["tti"])
            after = statistics.median(results["measured"]["tti"])
            print(f"  measured: overview + 100 m cells when zoomed in {after:.2f} s against every "
                  f"100 m cell at load {before:.2f} s (medians, same run): "
                  f"{before / after:.1f}x")  # fmt: skip
            zoom = results["measured"]["zoom"]
            print(f"  measured zoomed in to {FINE_MIN_ZOOM} on the centre: the 100 m cells of the "
                  f"view ({results['measured']['zoom_cells']}) fetched and drawn in "
                  f"{_stats(zoom)} s")  # fmt: skip
            with psycopg.connect(url) as conn:
                exported = pages.render_page(conn, "measured", MapOptions(assets=Assets(None)))
            size = len(exported.encode())
            print(f"  measured as a file (quartier map measured --out): {size / 1e6:.2f} MB")
            worst_bytes = max(worst_bytes, size)
        if args.profile:
            print("where the time goes (one load each, profiled):")
            profile(own, names, extra)
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
