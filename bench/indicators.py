"""``GET /indicators`` benchmark: stored current values against the per-request recompute (the
path before issue #14) in the same run, on the same data, through the same app.

    .venv/bin/python bench/indicators.py [--datastreams 40] [--days 1] [--step-min 5]
                                         [--requests 50] [--old-requests 5] [--repeat 5]
    .venv/bin/python bench/indicators.py --large [--data-dir DIR]
                                         # the issue's 2,000 datastreams x a year + Köln world

Starts its own PostgreSQL and Mosquitto (unless QUARTIER_TEST_DATABASE_URL and
QUARTIER_TEST_MQTT_URL are set), loads the Köln districts, ``--datastreams`` sensors (air quality,
noise and other quantities, spread over the Stadtbezirke) with a reading every ``--step-min``
minutes for ``--days`` days up to now, builds the rollups (as the maintenance round would), and
a small coverage run. Then, ``--repeat`` times, it times ``--requests`` requests each of

* ``GET /indicators`` and ``GET /indicators/pm10_annual_mean`` (stored values), and
* the same responses computed per request by ``quartier.evaluation.current.recompute``, the
  old route body, mounted beside them in the same app,

and prints p50/p95 per round, min/median/max over the rounds, the ratio, the time of one
refresh (what the maintenance round and the triggers pay) and whether the targets of issue #14
(p95 ≤ 50 ms for the list, ≤ 20 ms for one indicator) are met.

``--large``: the store benchmark's data set (``bench/store.py``'s COPY generator: 2,000
datastreams × 365 days every 20 minutes up to now, 52.6 M observations, loaded month by month on
two connections, rollups rebuilt in bulk) plus the simulated Köln coverage world analysed as in
``bench/coverage.py`` (150,000 addresses, 200,000 speed tests, 1,000,000 signal measurements).
It measures, ``--repeat`` rounds each with min/median/max: ``/indicators`` and
``/indicators/{id}`` (p50/p95 of ``--requests``), one refresh of the whole catalogue
(``quartier indicators refresh``), and a full evaluation run of the Köln strategy
(``evaluate``: stored values, assessment, run stored) with and without the HTML report. The
recompute baseline runs once (it takes minutes on this data). PostgreSQL runs with its durable
defaults (fsync, synchronous_commit, full_page_writes on). ``--data-dir`` keeps the server and
the loaded database there and reuses them in a later run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quartier.api.app import create_app
from quartier.api.deps import Conn
from quartier.api.indicators import IndicatorDetail, IndicatorList
from quartier.config import Settings
from quartier.evaluation import current
from quartier.evaluation.evaluate import evaluate
from quartier.evaluation.indicators import CATALOGUE
from quartier.evaluation.report import build_report
from quartier.evaluation.strategy import load_strategy
from quartier.geo.io import import_districts
from quartier.services import LocalServices
from quartier.store import rollups
from quartier.store.migrate import migrate
from quartier.store.pgcopy import write_copy_fixed

QUANTITIES = ("pm10", "pm25", "no2", "noise_laeq", "temperature", "humidity")
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
DETAIL = "pm10_annual_mean"
BENCH = Path(__file__).resolve().parent
STRATEGY = BENCH.parent / "quartier" / "resources" / "strategy-koeln.yaml"
#: bump when the --large data changes: a kept database of another version is loaded again
LARGE_VERSION = 1


def _bench_module(name: str) -> Any:
    """``bench/<name>.py`` (the store and coverage benchmarks' generators, reused here)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def fresh_db(admin_url: str) -> str:
    name = f"bench_ind_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    migrate(url)
    return url


def make_sensors(conn: psycopg.Connection[Any], n: int) -> list[int]:
    """``n`` Things with one Datastream each, at points inside the Stadtbezirke."""
    points = conn.execute(
        "select ST_X(p), ST_Y(p) from ("
        " select (ST_Dump(ST_GeneratePoints(ST_Union(geom), %s, 42))).geom as p"
        " from district where level = 'stadtbezirk') g",
        (n,),
    ).fetchall()
    ids = []
    props = {
        q: conn.execute(
            "insert into observed_property (name, definition) values (%s, %s) returning id",
            (q, f"urn:bench:{q}"),
        ).fetchone()[0]  # type: ignore[index]
        for q in QUANTITIES
    }
    for i, (x, y) in enumerate(points):
        q = QUANTITIES[i % len(QUANTITIES)]
        thing = conn.execute(
            "insert into thing (name) values (%s) returning id", (f"s{i}",)
        ).fetchone()[0]  # type: ignore[index]
        loc = conn.execute(
            "insert into location (name, location) values"
            " (%s, ST_SetSRID(ST_MakePoint(%s, %s), 4326)) returning id",
            (f"s{i}", x, y),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("insert into thing_location values (%s, %s)", (thing, loc))
        sensor = conn.execute(
            "insert into sensor (name) values (%s) returning id", (f"s{i}",)
        ).fetchone()[0]  # type: ignore[index]
        ds = conn.execute(
            "insert into datastream (name, unit_of_measurement, thing_id, sensor_id,"
            " observed_property_id, properties) values (%s, '{}', %s, %s, %s, %s) returning id",
            (f"s{i} {q}", thing, sensor, props[q], psycopg.types.json.Jsonb({"quantity": q})),
        ).fetchone()[0]  # type: ignore[index]
        ids.append(int(ds))
    return ids


def load_observations(
    conn: psycopg.Connection[Any],
    ds_ids: list[int],
    start: datetime,
    end: datetime,
    step: timedelta,
) -> int:
    ds_arr = np.array(ds_ids, dtype=np.int64)
    step_us = int(step / timedelta(microseconds=1))
    chunk = max(1, 500_000 // len(ds_ids))
    total, t = 0, start
    while t < end:
        steps = min(chunk, int((end - t) / step))
        if steps <= 0:
            break
        t0 = int((t - PG_EPOCH) / timedelta(microseconds=1))
        ts = np.repeat(t0 + np.arange(steps, dtype=np.int64) * step_us, len(ds_arr))
        ds = np.tile(ds_arr, steps)
        hours = (ts // 3_600_000_000) % 24
        noise = ((ts // step_us * 7919 + ds * 104729) % 1000) / 100.0
        v = np.round(15 + (ds % 7) * 4 + 8 * np.sin(hours / 24 * 2 * np.pi) + noise, 2)
        total += write_copy_fixed(
            conn,
            "observation",
            [
                ("datastream_id", "int8", ds),
                ("phenomenon_time", "int8", ts),
                ("result", "float8", v),
            ],
        )
        t += steps * step
    conn.commit()
    return total


def make_coverage_run(conn: psycopg.Connection[Any], cells: int) -> None:
    """A coverage run with ``cells`` cells in the Stadtbezirke (the columns the indicators read;
    the other not-null columns zero)."""
    run = conn.execute(
        "insert into coverage_run (profile, parameters, inputs, classes, operators, technologies)"
        " values ('de', '{}', '{}', '{}', '{A,B,C}', '{2G,3G,4G,5G}') returning id"
    ).fetchone()[0]  # type: ignore[index]
    required = conn.execute(
        "select column_name, data_type from information_schema.columns"
        " where table_name = 'coverage_cell' and is_nullable = 'NO' and column_default is null"
        " and is_generated = 'NEVER'"
    ).fetchall()
    zero = {"boolean": False, "text": "", "jsonb": "{}", "ARRAY": "{}"}
    codes = [r[0] for r in conn.execute("select code from district where level = 'stadtbezirk'")]
    rng = np.random.default_rng(7)
    rows = []
    for i in range(cells):
        row = {c: zero.get(t, 0) for c, t in required} | {
            "run_id": run, "e": 4_100_000 + (i % 200) * 100, "n": 3_090_000 + (i // 200) * 100,
            "district_code": codes[i % len(codes)], "households": int(rng.integers(0, 40)),
            "best_technology": ["ftth", "vdsl", "hfc", "adsl"][i % 4],
            "max_down_mbps": float(rng.choice([16, 50, 100, 250, 1000])),
            "class_key": ["white", "grey", "dark_grey", "gigabit"][i % 4],
            "mobile_mask": int(rng.integers(0, 4096)), "dead_zone": i % 50 == 0,
            "n_signal": int(rng.integers(0, 6)),
        }  # fmt: skip
        rows.append(row)
    cols = list(rows[0])
    with conn.cursor() as cur:
        cur.executemany(
            psycopg.sql.SQL("insert into coverage_cell ({}) values ({})").format(
                psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, cols)),
                psycopg.sql.SQL(", ").join(psycopg.sql.Placeholder() * len(cols)),
            ),
            [[r[c] for c in cols] for r in rows],
        )
    conn.commit()


def add_old_routes(app: Any) -> None:
    """The route bodies before issue #14: every request recomputes from raw rows."""

    @app.get("/bench/old/indicators", response_model=IndicatorList)
    def old_list(conn: Conn) -> IndicatorList:
        now = datetime.now(UTC)
        values, notes = current.recompute(conn, now, list(CATALOGUE))
        return IndicatorList(
            computed_at=now, definitions=list(CATALOGUE.values()), values=values, notes=notes
        )

    @app.get("/bench/old/indicators/{indicator_id}", response_model=IndicatorDetail)
    def old_detail(indicator_id: str, conn: Conn) -> IndicatorDetail:
        from quartier.evaluation import storage

        now = datetime.now(UTC)
        hist = storage.history(conn, indicator_id, variant=None)
        values, notes = current.recompute(conn, now, [indicator_id])
        return IndicatorDetail(
            definition=CATALOGUE[indicator_id], computed_at=now, current=values, history=hist,
            note=notes.get(indicator_id),
        )  # fmt: skip


def timed(client: TestClient, url: str, n: int) -> tuple[float, float]:
    """p50, p95 in ms of ``n`` GETs of ``url``."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(url)
        times.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"{url}: {r.status_code} {r.text[:200]}")
    q = np.percentile(times, [50, 95])
    return float(q[0]), float(q[1])


def summary(rounds: list[tuple[float, float]]) -> str:
    p50 = [r[0] for r in rounds]
    p95 = [r[1] for r in rounds]
    return (
        f"p50 {statistics.median(p50):8.1f} ms (min {min(p50):.1f}, max {max(p50):.1f})  "
        f"p95 {statistics.median(p95):8.1f} ms (min {min(p95):.1f}, max {max(p95):.1f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datastreams", type=int, default=40)
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--step-min", type=float, default=5.0)
    ap.add_argument("--cells", type=int, default=5000, help="cells of the coverage run")
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--old-requests", type=int, default=5, help="the recompute takes seconds")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--large", action="store_true", help="2,000 datastreams x 365 days + the Köln world"
    )
    ap.add_argument("--data-dir", type=Path, help="--large: keep server and data here, reuse")
    args = ap.parse_args()
    if args.large:
        args.datastreams, args.days, args.step_min = 2000, 365.0, 20.0
        args.old_requests = min(args.old_requests, 1)

    admin = os.environ.get("QUARTIER_TEST_DATABASE_URL")
    mqtt_url = os.environ.get("QUARTIER_TEST_MQTT_URL")
    local = None
    if args.data_dir is not None or not (admin and mqtt_url):
        if args.data_dir is not None:
            state = args.data_dir
            state.mkdir(parents=True, exist_ok=True)
        else:
            state = Path(tempfile.mkdtemp(prefix="quartier-bench-ind-"))
        os.chmod(state, 0o755)
        # --large measures with PostgreSQL's durable defaults (fsync on)
        local = LocalServices(state, fast_unsafe=not args.large)
        up = local.up()
        admin, mqtt_url = up.database_url, up.mqtt_url
    try:
        if args.large:
            run_large(args, admin, mqtt_url)
        else:
            run(args, admin, mqtt_url)
    finally:
        if local is not None:
            local.down()


def _settings(url: str, mqtt_url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database={"url": url},  # type: ignore[arg-type]
        mqtt={"url": mqtt_url},  # type: ignore[arg-type]
        api={"indicators_max_age_seconds": 24 * 3600},  # type: ignore[arg-type]
    )


def _durability(url: str) -> str:
    with psycopg.connect(url) as conn:
        got = [
            f"{k} {conn.execute(f'show {k}').fetchone()[0]}"  # type: ignore[index]
            for k in ("fsync", "synchronous_commit", "full_page_writes", "shared_buffers")
        ]
    return ", ".join(got)


def load_large(url: str, end: datetime, days: int, n_ds: int, step: timedelta) -> int:
    """The Köln coverage world (analysed: one coverage run) and the store benchmark's
    observations for ``n_ds`` sensors over ``days`` days up to ``end``, rollups built."""
    cov = _bench_module("coverage")
    store = _bench_module("store")
    start = end - timedelta(days=days)
    t = time.perf_counter()
    cov.load_koeln(url)  # districts, households, offers, speed tests, signals
    run = cov.end_to_end(url)
    log(f"Köln coverage world loaded and analysed in {time.perf_counter() - t:.0f} s: {run}")
    with psycopg.connect(url) as conn:
        conn.execute("select quartier_ensure_observation_partitions(%s, %s)", (start, end))
        ds_ids = np.array(make_sensors(conn, n_ds), dtype=np.int64)
        conn.commit()
    t = time.perf_counter()
    chunks = store.months(start, end)
    loaded = store.parallel(
        [lambda a=a, b=b: store.load_month(url, ds_ids, a, b, step) for a, b in chunks], 2
    )
    log(f"loaded {sum(loaded):,} observations in {time.perf_counter() - t:.0f} s")

    def rebuild(a: datetime, b: datetime) -> None:
        with psycopg.connect(url, autocommit=True) as c:
            rollups.rebuild(c, a, b)

    t = time.perf_counter()
    store.parallel([lambda a=a, b=b: rebuild(a, b) for a, b in chunks], 2)
    with psycopg.connect(url, autocommit=True) as conn:
        from quartier.store.timeseries import rebuild_latest

        rebuild_latest(conn)
        conn.execute("vacuum (analyze)")
    log(f"rollups, latest values and vacuum analyze in {time.perf_counter() - t:.0f} s")
    return int(sum(loaded))


def large_db(admin: str, end: datetime, args: argparse.Namespace) -> tuple[str, int, datetime]:
    """The --large database: kept from an earlier run with --data-dir, or loaded now."""
    name = f"bench_ind_large_v{LARGE_VERSION}"
    url = psycopg.conninfo.make_conninfo(admin, dbname=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
    if exists:
        with psycopg.connect(url, autocommit=True) as conn:
            found = conn.execute("select to_regclass('bench_loaded')").fetchone()
            if found and found[0] is not None:
                row = conn.execute("select n_obs, data_end from bench_loaded").fetchone()
                assert row is not None
                migrate(url)
                log(f"reusing the loaded database {name} ({row[0]:,} observations)")
                return url, int(row[0]), row[1]
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database "{name}"')
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    migrate(url)
    n_obs = load_large(url, end, int(args.days), args.datastreams, timedelta(minutes=args.step_min))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table bench_loaded (n_obs bigint, data_end timestamptz)")
        conn.execute("insert into bench_loaded values (%s, %s)", (n_obs, end))
    return url, n_obs, end


def _spread(xs: list[float]) -> str:
    return f"min {min(xs):.2f}, median {statistics.median(xs):.2f}, max {max(xs):.2f}"


def run_large(args: argparse.Namespace, admin: str, mqtt_url: str) -> None:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    url, n_obs, data_end = large_db(admin, end, args)
    durability = _durability(url)
    strategy = load_strategy(STRATEGY)
    refresh_s: list[float] = []
    eval_s: list[float] = []
    report_s: list[float] = []
    app = create_app(_settings(url, mqtt_url))
    add_old_routes(app)
    stored_cases = {
        "GET /indicators": "/indicators",
        f"GET /indicators/{DETAIL}": f"/indicators/{DETAIL}",
    }
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in stored_cases}
    old: dict[str, float] = {}
    with TestClient(app) as client:
        for i in range(args.repeat):
            with psycopg.connect(url, autocommit=True) as conn:
                t = time.perf_counter()
                stored = current.refresh_indicators(conn, trigger="bench")
                refresh_s.append(time.perf_counter() - t)
                log(f"refresh: {len(stored.values)} values in {refresh_s[-1]:.2f} s")
                t = time.perf_counter()
                # the values were just refreshed; a refresh that took longer than the default
                # max_age (5 min) must not make the evaluation refresh again
                evaluation = evaluate(conn, strategy, datetime.now(UTC), max_age=timedelta(hours=1))
                eval_s.append(time.perf_counter() - t)
                t = time.perf_counter()
                build_report(conn, strategy, evaluation, lang=strategy.lang)
                report_s.append(time.perf_counter() - t + eval_s[-1])
                log(
                    f"evaluation run {evaluation.run_id}: {eval_s[-1]:.2f} s"
                    f" ({report_s[-1]:.2f} s with the HTML report); {evaluation.summary}"
                )
            if i == 0:
                for u in stored_cases.values():  # warm up: imports, pool, plans
                    client.get(u)
            for name, u in stored_cases.items():
                results[name].append(timed(client, u, args.requests))
            if i == 0 and args.old_requests > 0:
                for name, u in (
                    ("GET /indicators", "/bench/old/indicators"),
                    (f"GET /indicators/{DETAIL}", f"/bench/old/indicators/{DETAIL}"),
                ):
                    t = time.perf_counter()
                    timed(client, u, 1)
                    old[name] = (time.perf_counter() - t) * 1000
                    log(f"recompute {name}: {old[name] / 1000:.1f} s")
            log(f"round {i + 1}/{args.repeat} done")

    out: Callable[[str], None] = lambda s: print(s)  # noqa: E731
    load = os.getloadavg()
    out(
        f"\ndata: {args.datastreams} datastreams x {args.days:g} days every {args.step_min:g} min"
        f" up to {data_end:%Y-%m-%d %H:%M} UTC ({n_obs:,} observations) + the Köln coverage"
        f" world; {args.repeat} rounds of {args.requests} requests"
    )
    out(f"PostgreSQL: {durability}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for name in stored_cases:
        out(f"{name + ' (stored)':48} {summary(results[name])}")
    for name, ms in old.items():
        out(f"{name + ' (recompute, 1 request)':48} {ms:,.0f} ms")
    out(f"refresh of the whole catalogue (s): {_spread(refresh_s)}")
    out(f"evaluation run (s): {_spread(eval_s)}; with the HTML report: {_spread(report_s)}")
    p95_l = statistics.median(r[1] for r in results["GET /indicators"])
    p95_d = statistics.median(r[1] for r in results[f"GET /indicators/{DETAIL}"])
    ev = statistics.median(eval_s)
    out(f"target list p95 <= 50 ms: {'met' if p95_l <= 50 else 'MISSED'} ({p95_l:.1f} ms)")
    out(f"target one p95 <= 20 ms: {'met' if p95_d <= 20 else 'MISSED'} ({p95_d:.1f} ms)")
    out(f"target evaluation run <= 5 s: {'met' if ev <= 5 else 'MISSED'} ({ev:.2f} s)")


def run(args: argparse.Namespace, admin: str, mqtt_url: str) -> None:
    url = fresh_db(admin)
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=args.days)
    step = timedelta(minutes=args.step_min)
    with psycopg.connect(url) as conn:
        import_districts(conn)
        conn.execute("select quartier_ensure_observation_partitions(%s, %s)", (start, end))
        ds_ids = make_sensors(conn, args.datastreams)
        conn.commit()
        t = time.perf_counter()
        n_obs = load_observations(conn, ds_ids, start, end, step)
        took = time.perf_counter() - t
        log(f"loaded {n_obs:,} observations ({len(ds_ids)} datastreams) in {took:.1f} s")
        make_coverage_run(conn, args.cells)
    with psycopg.connect(url, autocommit=True) as conn:
        t = time.perf_counter()
        rollups.rebuild(conn, start, end + timedelta(hours=1))
        log(f"rollups built in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        stored = current.refresh_indicators(conn, trigger="bench")
        refresh_s = time.perf_counter() - t
        log(f"refresh: {len(stored.values)} values in {refresh_s:.2f} s")

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database={"url": url},  # type: ignore[arg-type]
        mqtt={"url": mqtt_url},  # type: ignore[arg-type]
        api={"indicators_max_age_seconds": 24 * 3600},  # type: ignore[arg-type]
    )
    app = create_app(settings)
    add_old_routes(app)
    cases: dict[str, tuple[str, int]] = {
        "GET /indicators (stored)": ("/indicators", args.requests),
        "GET /indicators (recompute, before #14)": ("/bench/old/indicators", args.old_requests),
        f"GET /indicators/{DETAIL} (stored)": (f"/indicators/{DETAIL}", args.requests),
        f"GET /indicators/{DETAIL} (recompute)": (
            f"/bench/old/indicators/{DETAIL}", args.old_requests,
        ),
    }  # fmt: skip
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    with TestClient(app) as client:
        for u, _ in cases.values():  # warm up: imports, pool, plans
            client.get(u)
        for i in range(args.repeat):
            for name, (u, n) in cases.items():
                results[name].append(timed(client, u, n))
            log(f"round {i + 1}/{args.repeat} done")

    def med(name: str, k: int) -> float:
        return statistics.median(r[k] for r in results[name])

    out: Callable[[str], None] = lambda s: print(s)  # noqa: E731
    out(
        f"\ndata: {args.datastreams} datastreams, {args.days:g} days every {args.step_min:g} min"
        f" ({n_obs:,} observations), coverage run of {args.cells} cells;"
        f" {args.repeat} rounds of {args.requests} (stored) / {args.old_requests} (recompute)"
        " requests"
    )
    for name in cases:
        out(f"{name:48} {summary(results[name])}")
    lst, det = "GET /indicators", f"GET /indicators/{DETAIL}"
    ratio_l = med(f"{lst} (recompute, before #14)", 1) / med(f"{lst} (stored)", 1)
    ratio_d = med(f"{det} (recompute)", 1) / med(f"{det} (stored)", 1)
    out(f"ratio (p95 recompute / stored): list {ratio_l:.0f}x, one indicator {ratio_d:.0f}x")
    out(f"one refresh of the whole catalogue (maintenance round, triggers): {refresh_s:.2f} s")
    p95_l, p95_d = med(f"{lst} (stored)", 1), med(f"{det} (stored)", 1)
    out(f"target list p95 <= 50 ms: {'met' if p95_l <= 50 else 'MISSED'} ({p95_l:.1f} ms)")
    out(f"target one p95 <= 20 ms: {'met' if p95_d <= 20 else 'MISSED'} ({p95_d:.1f} ms)")


if __name__ == "__main__":
    main()
