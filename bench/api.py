"""API benchmark: typical researcher queries against a running ``quartier serve`` process.

    .venv/bin/python bench/api.py [--rows 5000000] [--things 200] [--datastreams-per-thing 2]
                                  [--step-min 20] [--repeat 40] [--clients 16] [--duration 15]
                                  [--workers 2] [--peer] [--json out.json]

Loads things with a location each (a grid over Köln), their datastreams and observations
(the store benchmark's generator, ``bench/store.py``: binary COPY in time order into monthly
partitions, then the rollups, ``observation_latest`` and VACUUM ANALYZE), starts
``quartier serve --workers N`` as a real process on a free port, and measures over real HTTP
(keep-alive, one request at a time) the p50/p95 of each query shape in :data:`SHAPES`, each
answer checked (status 200 and the expected number of items), then the throughput of the
weekly query with ``--clients`` concurrent connections (an asyncio HTTP/1.1 driver: a few µs
per request, so the server, not the driver, is measured).

``--peer`` runs the same shapes, in the same run, against django-ogc-sensorthings 1.2.0 set
up by ``bench/peer_setup.py`` (its own virtualenv under ``bench/.peer``, its own database on
the same PostgreSQL server) and against Quartier on the same data (40 Things, 80 Datastreams,
a day of observations every minute), and prints the ratios and which shapes the peer refuses
or answers wrongly.

Starts its own PostgreSQL 15 (the stock configuration of ``quartier services``; fsync off,
which only speeds up the load) unless QUARTIER_TEST_DATABASE_URL is set. The API runs with the
rate limit off (``QUARTIER_API__RATE_PER_SECOND=0``: one client address sends everything).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.store import load_month, months, parallel  # noqa: E402
from quartier.services import LocalServices  # noqa: E402
from quartier.store import rollups, timeseries  # noqa: E402
from quartier.store.migrate import migrate  # noqa: E402

T0 = datetime(2025, 1, 1, tzinfo=UTC)
#: Köln's bounding box; the things sit on a grid inside it
BBOX = (6.80, 50.85, 7.15, 51.05)
#: the south-west quarter of it: the polygon of the geo query
POLYGON = (6.80, 50.85, 6.975, 50.95)


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


# ------------------------------------------------------------------------------------ the world
@dataclass
class World:
    """What the query shapes need to know about the data behind one server."""

    base: str  # the service root, e.g. http://127.0.0.1:8000/v1.1
    datastreams: list[Any]  # ids as the server names them (int, or str for the peer's UUIDs)
    start: datetime  # first observation
    step: timedelta
    per_datastream: int  # observations of each datastream
    things_in_polygon: int
    datastreams_per_thing: int
    things: int = 0
    id_quote: str = ""  # the peer's ids go in quotes: Datastreams('…')
    max_top: int = 10_000
    page100: str = ""  # the 100th page's URL, found by following @iot.nextLink (prepare_page100)

    @property
    def end(self) -> datetime:
        return self.start + self.per_datastream * self.step

    @property
    def total(self) -> int:
        return self.per_datastream * len(self.datastreams)

    def ds(self, i: int) -> str:
        q = self.id_quote
        return f"Datastreams({q}{self.datastreams[i % len(self.datastreams)]}{q})"


def grid_points(n: int) -> list[tuple[float, float]]:
    """``n`` points on a regular grid over :data:`BBOX`, none on the polygon's edges."""
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    x0, y0, x1, y1 = BBOX
    out = []
    for k in range(n):
        r, c = divmod(k, cols)
        out.append((x0 + (c + 0.5) * (x1 - x0) / cols, y0 + (r + 0.5) * (y1 - y0) / rows))
    return out


def in_polygon(p: tuple[float, float]) -> bool:
    x0, y0, x1, y1 = POLYGON
    return x0 < p[0] < x1 and y0 < p[1] < y1


def polygon_wkt() -> str:
    x0, y0, x1, y1 = POLYGON
    return f"POLYGON(({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"


def make_things(url: str, things: int, per_thing: int) -> np.ndarray:
    """``things`` Things, each at one Location of :func:`grid_points` with ``per_thing``
    Datastreams; returns the datastream ids in order."""
    points = grid_points(things)
    with psycopg.connect(url) as conn:
        sensor = conn.execute(
            "insert into sensor (name, encoding_type, metadata) values ('bench', 'text/html', '')"
            " returning id"
        ).fetchone()
        op = conn.execute(
            "insert into observed_property (name, definition) values ('pm25', 'bench:pm25')"
            " returning id"
        ).fetchone()
        assert sensor is not None and op is not None
        ds_ids: list[int] = []
        for k, (x, y) in enumerate(points):
            thing = conn.execute(
                "insert into thing (name, description) values (%s, 'bench') returning id",
                (f"thing {k}",),
            ).fetchone()
            loc = conn.execute(
                "insert into location (name, location) values (%s,"
                " ST_SetSRID(ST_MakePoint(%s, %s), 4326)) returning id",
                (f"location {k}", x, y),
            ).fetchone()
            assert thing is not None and loc is not None
            conn.execute("insert into thing_location values (%s, %s)", (thing[0], loc[0]))
            for j in range(per_thing):
                row = conn.execute(
                    "insert into datastream (name, unit_of_measurement, thing_id, sensor_id,"
                    " observed_property_id) values (%s, %s, %s, %s, %s) returning id",
                    (
                        f"thing {k} ds {j}",
                        '{"name": "µg/m³", "symbol": "µg/m³", "definition": "ucum:ug/m3"}',
                        thing[0],
                        sensor[0],
                        op[0],
                    ),
                ).fetchone()
                assert row is not None
                ds_ids.append(int(row[0]))
        conn.commit()
    return np.array(ds_ids, dtype=np.int64)


def load_world(
    url: str,
    things: int,
    per_thing: int,
    steps: int,
    step: timedelta,
    workers: int = 2,
    start: datetime = T0,
) -> tuple[np.ndarray, dict[str, float]]:
    """Things, datastreams and ``steps`` observations of each datastream from ``start``, loaded
    as ``bench/store.py`` loads them; then rollups, latest, VACUUM ANALYZE. Returns the
    datastream ids and the seconds each stage took."""
    end = start + steps * step
    timing: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select quartier_ensure_observation_partitions(%s, %s)", (start, end))
    ds_ids = make_things(url, things, per_thing)
    t = time.perf_counter()
    parallel(
        [lambda a=a, b=b: load_month(url, ds_ids, a, b, step) for a, b in months(start, end)],
        workers,
    )
    timing["load_s"] = time.perf_counter() - t
    t = time.perf_counter()

    def rebuild(a: datetime, b: datetime) -> None:
        with psycopg.connect(url, autocommit=True) as c:
            rollups.rebuild(c, a, b)

    parallel([lambda a=a, b=b: rebuild(a, b) for a, b in months(start, end)], workers)
    with psycopg.connect(url, autocommit=True) as conn:
        timeseries.rebuild_latest(conn)
        timing["rollups_s"] = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute("vacuum (analyze)")
        timing["vacuum_s"] = time.perf_counter() - t
    return ds_ids, timing


# ------------------------------------------------------------------------------------ shapes
@dataclass
class Answer:
    status: int
    body: Any
    ms: float


Check = Callable[[Any], str | None]  # None: right; else what is wrong


@dataclass
class Shape:
    name: str
    what: str
    url: Callable[[World, int], str]
    check: Callable[[World, int], Check]
    counts_for_throughput: bool = False
    notes: list[str] = field(default_factory=list)


def _q(**params: str) -> str:
    return "&".join(f"{k}={quote(v, safe=',()/;=')}" for k, v in params.items())


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def week_of(w: World, i: int) -> tuple[datetime, datetime]:
    """The ``i``-th week-long window inside the data (the whole span when it is shorter)."""
    span = w.end - w.start
    week = timedelta(days=7)
    if span <= week:
        return w.start, w.start + week
    days = max(1, int((span - week) / timedelta(days=1)))
    a = w.start + timedelta(days=(i * 7) % days)
    return a, a + week


def _weekly_url(w: World, i: int) -> str:
    a, b = week_of(w, i)
    top = min(1000, w.max_top)
    flt = f"phenomenonTime ge {_iso(a)} and phenomenonTime lt {_iso(b)}"
    opts = _q(**{"$top": str(top), "$filter": flt, "$orderby": "phenomenonTime asc"})
    return f"{w.base}/{w.ds(i)}/Observations?{opts}"


def _weekly_check(w: World, i: int) -> Check:
    a, b = week_of(w, i)
    in_range = min(w.per_datastream, int((min(b, w.end) - a) / w.step))
    want = min(1000, w.max_top, in_range)

    def check(body: Any) -> str | None:
        got = body.get("value", [])
        if len(got) != want:
            return f"{len(got)} observations, expected {want}"
        first = got[0].get("phenomenonTime", "")
        if not str(first).startswith(_iso(a)[:16]):
            return f"first phenomenonTime {first}, expected {_iso(a)}"
        return None

    return check


def _polygon_url(w: World, i: int) -> str:
    opts = _q(
        **{
            "$filter": f"st_within(Locations/location, geography'{polygon_wkt()}')",
            "$expand": "Datastreams/Observations($top=1;$orderby=phenomenonTime desc)",
            "$top": "100",
        }
    )
    return f"{w.base}/Things?{opts}"


def _polygon_check(w: World, i: int) -> Check:
    last = _iso(w.end - w.step)

    def check(body: Any) -> str | None:
        things = body.get("value", [])
        if len(things) != w.things_in_polygon:
            return f"{len(things)} Things, expected {w.things_in_polygon}"
        for t in things:
            dss = t.get("Datastreams", [])
            if len(dss) != w.datastreams_per_thing:
                return f"a Thing with {len(dss)} Datastreams, expected {w.datastreams_per_thing}"
            for d in dss:
                obs = d.get("Observations", [])
                if len(obs) != 1 or not str(obs[0].get("phenomenonTime", "")).startswith(last[:16]):
                    return f"latest observation {obs[:1]}, expected one at {last}"
        return None

    return check


def _things_url(w: World, i: int) -> str:
    opts = _q(
        **{
            "$expand": "Datastreams/Observations($top=1;$orderby=phenomenonTime desc)",
            "$top": "100",
        }
    )
    return f"{w.base}/Things?{opts}"


def _things_check(w: World, i: int) -> Check:
    inner = _polygon_check(World(**{**w.__dict__, "things_in_polygon": min(100, w.things)}), i)
    return inner


def _count_ds_url(w: World, i: int) -> str:
    return f"{w.base}/{w.ds(i)}/Observations?{_q(**{'$count': 'true', '$top': '1'})}"


def _count_check(want: Callable[[World], int]) -> Callable[[World, int], Check]:
    def make(w: World, i: int) -> Check:
        n = want(w)

        def check(body: Any) -> str | None:
            got = body.get("@iot.count")
            if body.get("@quartier.countIsEstimate") is True and isinstance(got, int):
                # a declared estimate (all Observations above 200,000): within 5 %
                ok = abs(got - n) <= 0.05 * n
                return None if ok else f"@iot.count {got} (estimate), expected about {n}"
            return None if got == n else f"@iot.count {got}, expected {n}"

        return check

    return make


def _count_all_url(w: World, i: int) -> str:
    return f"{w.base}/Observations?{_q(**{'$count': 'true', '$top': '1'})}"


def _page100_url(w: World, i: int) -> str:
    return w.page100


def _page100_check(w: World, i: int) -> Check:
    def check(body: Any) -> str | None:
        n = len(body.get("value", []))
        return None if n == 100 else f"{n} observations, expected 100"

    return check


def _last100_url(w: World, i: int) -> str:
    opts = _q(**{"$top": "100", "$orderby": "phenomenonTime desc"})
    return f"{w.base}/{w.ds(i)}/Observations?{opts}"


def _last100_check(w: World, i: int) -> Check:
    want = [_iso(w.end - (k + 1) * w.step)[:16] for k in range(min(100, w.per_datastream))]

    def check(body: Any) -> str | None:
        got = [str(o.get("phenomenonTime", ""))[:16] for o in body.get("value", [])]
        if got != want:
            return f"times {got[:2]}… ({len(got)}), expected {want[:2]}… ({len(want)})"
        return None

    return check


SHAPES: list[Shape] = [
    Shape(
        "weekly",
        "a datastream's observations over a week, $top=1000, phenomenonTime $filter",
        _weekly_url,
        _weekly_check,
        counts_for_throughput=True,
    ),
    Shape(
        "polygon_latest",
        "Things within a polygon (geo $filter) with their latest observation expanded",
        _polygon_url,
        _polygon_check,
    ),
    Shape(
        "things_latest",
        "the same expand without the geo $filter (the first 100 Things)",
        _things_url,
        _things_check,
    ),
    Shape(
        "count_datastream",
        "$count=true on a datastream's Observations",
        _count_ds_url,
        _count_check(lambda w: w.per_datastream),
    ),
    Shape(
        "count_all",
        "$count=true on all Observations",
        _count_all_url,
        _count_check(lambda w: w.total),
    ),
    Shape(
        "page100",
        "page 100 of all Observations ($top=100) reached by following @iot.nextLink",
        _page100_url,
        _page100_check,
    ),
    Shape(
        "last100",
        "a datastream's last 100 observations ($orderby=phenomenonTime desc)",
        _last100_url,
        _last100_check,
    ),
]


def prepare_page100(client: httpx.Client, w: World) -> str | None:
    """Follows @iot.nextLink from the first page of all Observations ($top=100) to the 100th;
    sets ``w.page100`` and returns None, or returns why it could not."""
    url = f"{w.base}/Observations?{_q(**{'$top': '100'})}"
    for page in range(1, 100):
        r = client.get(url)
        if r.status_code != 200:
            return f"page {page}: HTTP {r.status_code}: {r.text[:200]}"
        nxt = r.json().get("@iot.nextLink")
        if not nxt:
            return f"page {page} has no @iot.nextLink"
        url = nxt
    w.page100 = url
    return None


# ------------------------------------------------------------------------------------ measuring
def fetch(client: httpx.Client, url: str) -> Answer:
    t = time.perf_counter()
    r = client.get(url)
    ms = (time.perf_counter() - t) * 1000
    try:
        body = r.json()
    except ValueError:
        body = {"text": r.text[:300]}
    return Answer(r.status_code, body, ms)


def percentiles(times: list[float]) -> dict[str, float]:
    s = sorted(times)
    return {
        "p50_ms": statistics.median(s),
        "p95_ms": s[min(len(s) - 1, round(0.95 * (len(s) - 1)))],
        "max_ms": s[-1],
        "runs": len(s),
    }


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


@dataclass
class CpuMeter:
    """CPU seconds used so far by a server (its process and its workers) and by the backends
    of the PostgreSQL cluster it reads (children of the postmaster): with the machine shared,
    CPU per request is the number that other work does not inflate much."""

    server_pid: int
    postmaster_pid: int

    def __call__(self) -> float:
        return sum(self.parts())

    def parts(self) -> tuple[float, float]:
        """CPU seconds so far of (the server's processes, the PostgreSQL backends)."""
        server = [self.server_pid, *_children(self.server_pid)]
        return (
            sum(_cpu_s(p) for p in server),
            sum(_cpu_s(p) for p in _children(self.postmaster_pid)),
        )


def postmaster_of(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:  # read while the backend lives
        row = conn.execute("select pg_backend_pid()").fetchone()
        assert row is not None
        return int(Path(f"/proc/{row[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])


def run_shape(
    client: httpx.Client,
    w: World,
    shape: Shape,
    repeat: int,
    warmup: int = 3,
    cpu: Callable[[], float] | None = None,
) -> dict:
    """p50/p95 of ``shape`` over ``repeat`` requests (after ``warmup``); every answer checked;
    with ``cpu`` (a :class:`CpuMeter`), the server's CPU ms per request too. A shape that fails
    its first request is reported, not measured."""
    if shape.name == "page100" and not w.page100:
        why = prepare_page100(client, w)
        if why:
            return {"ok": False, "error": why}
    times: list[float] = []
    cpu0 = 0.0
    for i in range(warmup + repeat):
        if i == warmup and cpu is not None:
            cpu0 = cpu()
        a = fetch(client, shape.url(w, i))
        if a.status != 200:
            detail = json.dumps(a.body)[:300]
            return {"ok": False, "error": f"HTTP {a.status}: {detail}", "request": i}
        wrong = shape.check(w, i)(a.body)
        if wrong:
            return {"ok": False, "error": f"wrong answer: {wrong}", "request": i}
        if i >= warmup:
            times.append(a.ms)
    out: dict[str, Any] = {"ok": True} | percentiles(times)
    if cpu is not None:
        out["cpu_ms"] = (cpu() - cpu0) * 1000 / repeat  # server and database, not this client
    return out


async def _http_get(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    target: str,
    gzip: bool = False,
) -> int:
    """One keep-alive HTTP/1.1 GET; returns the status after reading the whole body (with
    ``gzip``, asking for it as browsers and httpx do: the body is read, not decompressed)."""
    encoding = "Accept-Encoding: gzip\r\n" if gzip else ""
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n"
        f"{encoding}\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length is not None:
        await reader.readexactly(length)
    elif chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _load(
    urls: list[str], clients: int, duration: float, gzip: bool = False
) -> dict[str, Any]:
    parts = urlsplit(urls[0])
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    targets = [u[u.index("/", len(parts.scheme) + 3) :] for u in urls]
    stop = time.perf_counter() + duration
    times: list[float] = []
    bad: dict[int, int] = {}

    async def client(k: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        i = k
        try:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                status = await _http_get(
                    reader, writer, f"{host}:{port}", targets[i % len(targets)], gzip
                )
                times.append((time.perf_counter() - t) * 1000)
                if status != 200:
                    bad[status] = bad.get(status, 0) + 1
                i += clients
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "gzip": gzip,
        "requests": len(times),
        "seconds": wall,
        "req_per_s": len(times) / wall,
        "non_200": bad,
    } | percentiles(times)


def throughput(
    w: World,
    shape: Shape,
    clients: int,
    duration: float,
    cpu: CpuMeter | None = None,
    gzip: bool = False,
) -> dict[str, Any]:
    """``clients`` connections sending ``shape`` for ``duration`` s; with ``cpu``, the CPU ms
    per request of the server's processes and of the PostgreSQL backends (process CPU, which
    the other work on a shared machine distorts far less than req/s)."""
    urls = [shape.url(w, i) for i in range(max(64, clients * 4))]
    before = cpu.parts() if cpu is not None else (0.0, 0.0)
    load0 = os.getloadavg()
    out = asyncio.run(_load(urls, clients, duration, gzip))
    out["load_average"] = [load0[0], os.getloadavg()[0]]
    if cpu is not None:
        after = cpu.parts()
        n = max(1, out["requests"])
        out["cpu_server_ms"] = (after[0] - before[0]) * 1000 / n
        out["cpu_db_ms"] = (after[1] - before[1]) * 1000 / n
        out["cpu_ms"] = out["cpu_server_ms"] + out["cpu_db_ms"]
    return out


def _throughput_line(r: dict[str, Any]) -> str:
    cpu = ""
    if "cpu_ms" in r:
        cpu = (
            f", CPU {r['cpu_ms']:.2f} ms/request (server {r['cpu_server_ms']:.2f},"
            f" PostgreSQL {r['cpu_db_ms']:.2f})"
        )
    return (
        f"{r['req_per_s']:.0f} req/s{' gzip' if r['gzip'] else ''} (p50 {r['p50_ms']:.1f} ms,"
        f" p95 {r['p95_ms']:.1f} ms, non-200 {r['non_200']}){cpu}, load average"
        f" {r['load_average'][0]:.1f} -> {r['load_average'][1]:.1f}"
    )


# ------------------------------------------------------------------------------------ servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server ended with status {proc.returncode} before answering")
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no answer from {url} within {timeout:.0f} s")


@dataclass
class Server:
    base: str  # the service root, …/v1.1
    pid: int


@contextmanager
def quartier_server(
    db_url: str, workers: int, port: int | None = None, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """``quartier serve --workers N`` on a free port, the rate limit off; yields its service
    root URL (…/v1.1) and pid, and ends the process (and its workers) afterwards. ``env``: more
    environment for the server (``bench/api_http.py`` runs another commit's code by PYTHONPATH)."""
    port = port or free_port()
    env = (
        os.environ
        | (env or {})
        | {
            "QUARTIER_DATABASE__URL": db_url,
            "QUARTIER_API__RATE_PER_SECOND": "0",
            "QUARTIER_API__KEY_RATE_PER_SECOND": "0",
        }
    )
    cmd = [
        str(Path(sys.executable).parent / "quartier"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
    ]
    with tempfile.TemporaryFile() as log_file:  # the server's log, shown if it does not start
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
        base = f"http://127.0.0.1:{port}/v1.1"
        try:
            try:
                wait_http(base, proc)
            except RuntimeError as exc:
                proc.kill()
                log_file.seek(0)
                err = log_file.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"quartier serve: {exc}\n{err}") from None
            yield Server(base, proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def fresh_db(admin_url: str, prefix: str = "bench_api") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    migrate(url, timescaledb="postgres")
    return url


# ------------------------------------------------------------------------------------ runs
#: the shapes to measure (``--shapes``; all by default)
CHOSEN: set[str] = set()


def measure_server(
    w: World,
    repeat: int,
    clients: int,
    duration: float,
    label: str,
    cpu: CpuMeter | None = None,
    gzip: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {"shapes": {}}
    with httpx.Client(timeout=120) as client:
        for shape in SHAPES:
            if CHOSEN and shape.name not in CHOSEN:
                continue
            r = run_shape(client, w, shape, repeat, cpu=cpu)
            out["shapes"][shape.name] = r
            if r["ok"]:
                p50, p95 = r["p50_ms"], r["p95_ms"]
                c = f"  CPU {r['cpu_ms']:6.1f} ms/request" if "cpu_ms" in r else ""
                log(f"{label:9} {shape.name:17} p50 {p50:8.1f} ms  p95 {p95:8.1f} ms{c}")
            else:
                log(f"{label:9} {shape.name:17} FAILED: {r['error'][:200]}")
    if clients > 0:
        weekly = next(s for s in SHAPES if s.counts_for_throughput)
        if out["shapes"].get(weekly.name, {}).get("ok"):
            r = throughput(w, weekly, clients, duration, cpu)
            out["throughput"] = r
            log(f"{label:9} {weekly.name} with {clients} clients: {_throughput_line(r)}")
            if gzip:
                r = throughput(w, weekly, clients, duration, cpu, gzip=True)
                out["throughput_gzip"] = r
                log(f"{label:9} {weekly.name} with {clients} clients: {_throughput_line(r)}")
    return out


def main_run(args: argparse.Namespace, admin: str, report: dict[str, Any]) -> None:
    step = timedelta(minutes=args.step_min)
    n_ds = args.things * args.datastreams_per_thing
    steps = max(1, round(args.rows / n_ds))
    if args.db:  # a database an earlier run loaded with the same options
        with psycopg.connect(args.db) as conn:
            rows = conn.execute("select id from datastream order by id").fetchall()
        report["data"] = {"observations": steps * n_ds, "things": args.things}
        report["data"] |= {"datastreams": n_ds, "per_datastream": steps, "reused": args.db}
        measure_main(args, args.db, np.array([r[0] for r in rows]), steps, step, report)
        return
    url = fresh_db(admin)
    log(
        f"loading {steps * n_ds:,} observations: {args.things} Things × "
        f"{args.datastreams_per_thing} Datastreams × {steps:,} readings every {args.step_min:g} min"
    )
    ds_ids, timing = load_world(url, args.things, args.datastreams_per_thing, steps, step)
    report["data"] = {
        "observations": steps * n_ds,
        "things": args.things,
        "datastreams": n_ds,
        "per_datastream": steps,
        "step_min": args.step_min,
    } | timing
    log(f"loaded in {timing['load_s']:.0f} s, rollups {timing['rollups_s']:.0f} s; {url}")
    measure_main(args, url, ds_ids, steps, step, report)


def measure_main(
    args: argparse.Namespace,
    url: str,
    ds_ids: np.ndarray,
    steps: int,
    step: timedelta,
    report: dict[str, Any],
) -> None:
    in_poly = sum(in_polygon(p) for p in grid_points(args.things))
    with quartier_server(url, args.workers) as server:
        w = World(
            base=server.base,
            datastreams=[int(x) for x in ds_ids],
            start=T0,
            step=step,
            per_datastream=steps,
            things_in_polygon=in_poly,
            datastreams_per_thing=args.datastreams_per_thing,
            things=args.things,
        )
        cpu = CpuMeter(server.pid, postmaster_of(url))
        report["quartier"] = measure_server(
            w, args.repeat, args.clients, args.duration, "quartier", cpu, args.throughput_gzip
        )


def peer_run(args: argparse.Namespace, admin: str, report: dict[str, Any]) -> None:
    """40 Things, 80 Datastreams, a day every minute, into Quartier and the peer."""
    import peer_setup  # bench/peer_setup.py

    things, per_thing, steps, step = 40, 2, 1440, timedelta(minutes=1)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    url = fresh_db(admin, "bench_api_peercmp")
    ds_ids, _ = load_world(url, things, per_thing, steps, step, start=start)
    peer = peer_setup.setup(admin, things, per_thing, steps, step, start, grid_points(things))
    in_poly = sum(in_polygon(p) for p in grid_points(things))
    common = {
        "start": start,
        "step": step,
        "per_datastream": steps,
        "things_in_polygon": in_poly,
        "datastreams_per_thing": per_thing,
        "things": things,
    }
    report["peer_data"] = {
        "things": things,
        "datastreams": things * per_thing,
        "observations": steps * things * per_thing,
    }
    with quartier_server(url, args.workers) as server:
        w = World(base=server.base, datastreams=[int(x) for x in ds_ids], **common)
        cpu = CpuMeter(server.pid, postmaster_of(url))
        report["peer_quartier"] = measure_server(
            w, args.repeat, args.clients, args.duration, "quartier", cpu
        )
    with peer_setup.server(peer, args.workers) as server:
        w = World(
            base=server.base,
            datastreams=peer.datastreams,
            id_quote="'",
            max_top=peer.max_top,
            **common,
        )
        cpu = CpuMeter(server.pid, postmaster_of(peer.db_url))
        report["peer"] = measure_server(
            w, args.peer_repeat, args.clients, args.duration, "peer", cpu
        )
    report["peer_info"] = peer.info


def print_report(r: dict[str, Any]) -> None:
    if "quartier" in r:
        d = r["data"]
        print(
            f"\nQuartier, {d['observations']:,} observations, {d['things']} Things, "
            f"{d['datastreams']} Datastreams (targets: p95 <= 50 ms each; >= 500 req/s weekly)"
        )
        for name, s in r["quartier"]["shapes"].items():
            if s["ok"]:
                verdict = "met" if s["p95_ms"] <= 50 else "NOT met"
                print(f"  {name:17} p50 {s['p50_ms']:7.1f}  p95 {s['p95_ms']:7.1f} ms  {verdict}")
            else:
                print(f"  {name:17} FAILED {s['error'][:150]}")
        for t in (r["quartier"].get("throughput"), r["quartier"].get("throughput_gzip")):
            if not t:
                continue
            ok = t["req_per_s"] >= 500 and t["p95_ms"] <= 50 and not t["non_200"]
            verdict = "met" if ok else "NOT met"
            print(f"  weekly, {t['clients']} clients: {_throughput_line(t)}  {verdict}")
    if "peer" in r:
        q, p = r["peer_quartier"], r["peer"]
        print("\nSide by side (40 Things, 80 Datastreams, a day every minute); target >= 10x")
        for name in q["shapes"]:
            qs, ps = q["shapes"][name], p["shapes"].get(name, {"ok": False, "error": "not run"})
            if not ps["ok"]:
                qa = "answers" if qs["ok"] else "also fails"
                print(f"  {name:17} peer: {ps['error'][:90]} (Quartier {qa})")
                continue
            if not qs["ok"]:
                print(f"  {name:17} Quartier FAILS where the peer answers: {qs['error'][:90]}")
                continue
            ratio = ps["p50_ms"] / qs["p50_ms"]
            ratio95 = ps["p95_ms"] / qs["p95_ms"]
            verdict = "met" if min(ratio, ratio95) >= 10 else "NOT met"
            print(
                f"  {name:17} Quartier p50/p95 {qs['p50_ms']:6.1f}/{qs['p95_ms']:6.1f} ms, peer "
                f"{ps['p50_ms']:7.1f}/{ps['p95_ms']:7.1f} ms: "
                f"{ratio:5.1f}x / {ratio95:5.1f}x  {verdict}"
            )
        qt, pt = q.get("throughput"), p.get("throughput")
        if qt and pt:
            print(
                f"  weekly, {qt['clients']} clients: Quartier {qt['req_per_s']:.0f} req/s, peer "
                f"{pt['req_per_s']:.0f} req/s ({qt['req_per_s'] / max(pt['req_per_s'], 1e-9):.1f}x)"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000, help="observations to load")
    ap.add_argument("--things", type=int, default=200)
    ap.add_argument("--datastreams-per-thing", type=int, default=2)
    ap.add_argument("--step-min", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=40, help="timed requests per shape")
    ap.add_argument("--peer-repeat", type=int, default=20, help="timed requests per shape (peer)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (0: no load)")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds of load")
    ap.add_argument(
        "--throughput-gzip",
        action="store_true",
        help="run the concurrent load again asking for gzip (Accept-Encoding)",
    )
    ap.add_argument("--workers", type=int, default=2, help="server worker processes")
    ap.add_argument("--peer", action="store_true", help="also the side-by-side run")
    ap.add_argument("--peer-only", action="store_true", help="only the side-by-side run")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--db", default=None, help="measure on a database an earlier run loaded (its URL)"
    )
    ap.add_argument(
        "--shapes",
        default="",
        help=f"comma-separated shapes to measure (default all: {','.join(s.name for s in SHAPES)})",
    )
    args = ap.parse_args()
    CHOSEN.update(n for n in args.shapes.split(",") if n)
    if unknown := CHOSEN - {s.name for s in SHAPES}:
        ap.error(f"unknown shapes: {', '.join(sorted(unknown))}")

    admin = os.environ.get("QUARTIER_TEST_DATABASE_URL")
    local = None
    state = None
    if not admin:
        state = Path(tempfile.mkdtemp(prefix="quartier-bench-api-"))
        os.chmod(state, 0o755)
        local = LocalServices(state, fast_unsafe=True)
        admin = local.up().database_url
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_start": os.getloadavg(),
        "workers": args.workers,
    }
    try:
        if not args.peer_only:
            main_run(args, admin, report)
        if args.peer or args.peer_only:
            peer_run(args, admin, report)
        report["load_average_end"] = os.getloadavg()
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
        print_report(report)
        start, end = report["load_average_start"], report["load_average_end"]
        print(f"\nload average: start {start}, end {end}")
    finally:
        if local is not None:
            local.down()
            assert state is not None
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
