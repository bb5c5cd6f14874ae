"""The weekly page under 16 clients, server variants alternating: CPU per request and req/s.

    QUARTIER_TEST_DATABASE_URL=… .venv/bin/python bench/api_http.py --db URL \\
        [--before COMMIT] [--variants before,h11,tree] [--rounds 2] [--clients 16] \\
        [--duration 15] [--workers 2] [--py-spy 10] [--json out.json]

``--db`` is a database ``bench/api.py`` loaded (its URL is printed after the load). Each round
starts ``quartier serve --workers N`` once per variant, warms it, and runs ``bench/api.py``'s
16-client driver on the weekly shape (uncompressed, then with gzip asked), reading the CPU of the
server's processes and of the PostgreSQL backends from ``/proc``; variants alternate within a
round, so that a load from other work on the machine falls on all of them alike. Variants:

- ``before``: the code of ``--before COMMIT`` (exported with ``git archive``, run through
  PYTHONPATH) with uvloop and httptools hidden, i.e. uvicorn's asyncio loop and h11;
- ``h11``: this tree with uvloop and httptools hidden (the code's change alone);
- ``tree``: this tree as installed (uvloop and httptools when present).

``--py-spy SECONDS`` records one worker of the ``tree`` variant of the last round with py-spy
(a bench tool, not a dependency) under the same load and prints where its samples went.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.api import (  # noqa: E402
    SHAPES,
    T0,
    CpuMeter,
    World,
    _children,
    _cpu_s,
    _throughput_line,
    grid_points,
    in_polygon,
    log,
    postmaster_of,
    quartier_server,
    throughput,
)

#: modules that make ``import uvloop`` / ``import httptools`` fail: uvicorn's "auto" then takes
#: asyncio's loop and h11, as on a machine without them
_HIDE = "raise ImportError('hidden by bench/api_http.py')\n"


def _hidden_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="quartier-bench-hide-"))
    for name in ("uvloop", "httptools"):
        (d / f"{name}.py").write_text(_HIDE)
    return d


def _export(commit: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix="quartier-bench-before-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "quartier"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(d)], input=archive, check=True)
    return d


def _world(base: str, db: str, things: int, per_thing: int, step: timedelta) -> World:
    with psycopg.connect(db) as conn:
        ids = [r[0] for r in conn.execute("select id from datastream order by id").fetchall()]
        row = conn.execute(
            "select count(*) from observation where datastream_id = %s", (ids[0],)
        ).fetchone()
    assert row is not None
    return World(
        base=base,
        datastreams=ids,
        start=T0,
        step=step,
        per_datastream=int(row[0]),
        things_in_polygon=sum(in_polygon(p) for p in grid_points(things)),
        datastreams_per_thing=per_thing,
        things=things,
    )


def _py_spy(pid: int, seconds: float, out: Path) -> None:
    spy = Path(sys.executable).parent / "py-spy"
    cmd = [str(spy), "record", "--pid", str(pid), "--duration", str(int(seconds))]
    cmd += ["--rate", "200", "--format", "raw", "--output", str(out), "--nonblocking", "--gil"]
    done = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
    )
    if done.returncode != 0:
        log(f"py-spy failed: {done.stderr.decode(errors='replace')[-500:]}")


#: where a sample goes: the first of these substrings found in its stack (leaf first) names it
_PARTS = [
    ("PostgreSQL round trip (psycopg waiting, executing)", ("psycopg/", "psycopg_pool")),
    ("page writing (sta_fastpage)", ("sta_fastpage",)),
    ("ETag (sta_etag / _etagged)", ("sta_etag", "_etagged", "hashlib")),
    ("gzip", ("gzip",)),
    ("$filter / options parsing", ("api/sta/", "lark")),
    ("HTTP parsing and writing (uvicorn protocol)", ("h11", "httptools", "uvicorn/protocols")),
    ("middleware (CORS, gzip, limits, errors)", ("middleware", "quartier/api/app.py")),
    ("routing and FastAPI", ("starlette/routing", "fastapi/")),
    ("thread hand-off (anyio)", ("anyio", "concurrent/futures", "threading.py")),
    ("event loop and sockets", ("asyncio", "uvloop", "selectors")),
]


def summarise(raw: Path) -> dict[str, float]:
    """Share of py-spy's samples (``--format raw``: ``frame;frame;… count`` lines, root first)
    per part of the request, the innermost matching frame deciding (idle threads left out)."""
    parts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        leaf = frames[-1]
        if any(w in leaf for w in ("wait (threading", "select (selectors", "_worker (concurrent")):
            continue  # an idle thread or loop
        total += int(n)
        name = "other"
        for frame in reversed(frames):
            hit = next((p for p, keys in _PARTS if any(k in frame for k in keys)), None)
            if hit:
                name = hit
                break
        parts[name] += int(n)
    return {k: v / max(total, 1) for k, v in parts.most_common()}


def run_variant(
    name: str, env: dict[str, str], args: argparse.Namespace, spy: Path | None
) -> dict[str, Any]:
    weekly = next(s for s in SHAPES if s.counts_for_throughput)
    with quartier_server(args.db, args.workers, env=env) as server:
        w = _world(server.base, args.db, args.things, args.datastreams_per_thing, args.step)
        with httpx.Client(timeout=60) as c:
            c.get(weekly.url(w, 0)).raise_for_status()
        # warm every worker (its pool, its first request's route tables) with the same load
        throughput(w, weekly, args.clients, 5.0)
        cpu = CpuMeter(server.pid, postmaster_of(args.db))
        out: dict[str, Any] = {}
        spying = None
        if spy is not None:
            # the busiest child: a worker (not multiprocessing's resource tracker)
            busiest = max(_children(server.pid) or [server.pid], key=_cpu_s)
            spying = threading.Thread(target=_py_spy, args=(busiest, args.py_spy, spy))
            spying.start()
            time.sleep(1.0)  # py-spy attached
        for gzip in (False, True):
            r = throughput(w, weekly, args.clients, args.duration, cpu, gzip=gzip)
            out["gzip" if gzip else "plain"] = r
            log(f"{name:7} {args.clients} clients: {_throughput_line(r)}")
        if spying is not None:
            spying.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True, help="a database bench/api.py loaded (its URL)")
    ap.add_argument("--before", default="HEAD", help="the commit of the 'before' variant")
    ap.add_argument("--variants", default="before,h11,tree")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--things", type=int, default=200)
    ap.add_argument("--datastreams-per-thing", type=int, default=2)
    ap.add_argument("--step-min", type=float, default=20.0)
    ap.add_argument("--py-spy", type=float, default=0.0, help="seconds of py-spy (tree variant)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    args.step = timedelta(minutes=args.step_min)
    variants = [v for v in args.variants.split(",") if v]
    hide = _hidden_dir()
    envs: dict[str, dict[str, str]] = {
        "h11": {"PYTHONPATH": str(hide)},
        "tree": {},
    }
    if "before" in variants:
        envs["before"] = {"PYTHONPATH": f"{hide}{os.pathsep}{_export(args.before)}"}
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "before": args.before,
        "workers": args.workers,
        "clients": args.clients,
        "rounds": [],
    }
    for k in range(args.rounds):
        results = {}
        for v in variants:
            last = k == args.rounds - 1
            spy = Path(tempfile.mktemp(suffix=".txt")) if args.py_spy and last else None
            results[v] = run_variant(v, envs[v], args, spy if v == "tree" else None)
            if spy is not None and v == "tree" and spy.exists():
                shares = summarise(spy)
                results[v]["py_spy"] = shares
                log(
                    "py-spy, one worker of 'tree': "
                    + ", ".join(f"{p} {s:.0%}" for p, s in shares.items())
                )
                log(f"raw samples: {spy}")
        report["rounds"].append(results)
    print("\nCPU ms per request (server + PostgreSQL), req/s; same-run ratios against 'before'")
    for k, results in enumerate(report["rounds"]):
        for mode in ("plain", "gzip"):
            base = results.get("before", {}).get(mode)
            for v, r in results.items():
                t = r[mode]
                ratio = f"  {base['cpu_ms'] / t['cpu_ms']:.2f}x CPU" if base else ""
                print(
                    f"  round {k + 1} {mode:5} {v:7} {t['cpu_ms']:6.2f} ms "
                    f"({t['cpu_server_ms']:.2f} + {t['cpu_db_ms']:.2f}), "
                    f"{t['req_per_s']:5.0f} req/s, p95 {t['p95_ms']:6.1f} ms,"
                    f" load {t['load_average'][0]:.1f}{ratio}"
                )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
