"""The long-running commands: ``quartier ingest``, ``serve``, ``simulate`` and ``demo``."""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.logging import RichHandler
from rich.table import Table

from quartier.cli.common import console, settings, stop_on_signals, user_errors
from quartier.cli.connect import broker_url, database_url

if TYPE_CHECKING:
    from fastapi import FastAPI

    from quartier.config import Settings

app = typer.Typer()


@app.command("ingest")
def ingest(
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus metrics on this port")
    ] = None,
    stats: Annotated[
        bool, typer.Option("--stats", help="show a live view of the counters")
    ] = False,
) -> None:
    """Subscribe to the sensor topics and store what arrives (Ctrl-C stops)."""
    from quartier.ingest.metrics import serve_metrics
    from quartier.ingest.mqtt import Ingester
    from quartier.store.rollups import start_maintenance

    s = settings()
    with user_errors(s):
        url = database_url(s)  # the owner's login, for the maintenance thread
        own = s.for_service("ingest")
        database_url(own)  # the ingester's own login answers too
        broker_url(s)
        ing = Ingester(own)
    stop_on_signals(ing.stop_event)
    # the indicators are refreshed by `quartier indicators refresh --every …` in a process of
    # its own, not here: a refresh takes seconds of CPU that ingest needs (docs/evaluation.md)
    start_maintenance(url, s.database, ing.stop_event, raw_retention=s.privacy.raw_retention)
    port = metrics_port or s.ingest.metrics_port
    if port:
        serve_metrics(ing, port)
        console.print(f"metrics on http://127.0.0.1:{port}/metrics")
    if not stats:
        ing.run()
        if ing.failed is not None:
            raise typer.Exit(1)
        return
    from rich.live import Live

    worker = threading.Thread(target=ing.run, name="ingest", daemon=True)
    worker.start()
    with Live(_stats_table(ing), console=console, refresh_per_second=2) as live:
        while worker.is_alive():
            worker.join(1.0)
            live.update(_stats_table(ing))
    if ing.failed is not None:
        raise typer.Exit(1)


def _stats_table(ing: Any) -> Table:
    st = ing.stats
    up = max(time.monotonic() - st.started, 1e-9)
    table = Table("counter", "value", "per second", title="quartier ingest")
    for name in ("received", "stored", "duplicates", "speedtests", "rejected", "batches"):
        value = getattr(st, name)
        table.add_row(name, f"{value:,}", f"{value / up:,.0f}")
    table.add_row("buffer", f"{ing.buffered():,} / {ing.cfg.buffer_max:,}", "")
    table.add_row("last batch", f"{st.last_batch_size} msgs in {st.last_batch_ms:.0f} ms", "")
    table.add_row("lag", f"{st.lag_s:.2f} s", "")
    table.add_row("connected", "yes" if ing.connected.is_set() else "no", "")
    return table


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="worker processes, each with its own connection pool and rate-limit buckets",
        ),
    ] = 1,
    access_log: Annotated[bool, typer.Option(help="log every request")] = True,
) -> None:
    """Run the HTTP API (SensorThings v1.1, indicators, maps)."""
    import uvicorn

    s = settings()
    with user_errors(s):
        api = s.for_service("api")  # the API's own database login
        database_url(api)
    host, port = host or s.api.host, port or s.api.port
    protocols = server_protocols()
    logging.getLogger(__name__).info(
        "HTTP parser %s, event loop %s", protocols["http"], protocols["loop"]
    )
    if workers == 1:
        uvicorn.run(
            serve_app(api),
            host=host,
            port=port,
            log_level="info",
            access_log=access_log,
            **protocols,
        )
        return
    # several processes: each imports the app factory below and reads the settings itself (from
    # the same environment), so no pool, thread or bucket is shared across a fork; the logging
    # options of this invocation go with them
    root = logging.getLogger()
    json_logs = any(not isinstance(h, RichHandler) for h in root.handlers)
    os.environ[_WORKER_LOGGING] = (
        f"{int(root.level <= logging.DEBUG)},{'json' if json_logs else 'text'}"
    )
    config = uvicorn.Config(
        f"{__name__}:api_app",
        factory=True,
        workers=workers,
        # a worker answers the supervisor's pings only once it has imported what it runs:
        # uvicorn's 5 s would kill and restart it forever on a busy machine
        timeout_worker_healthcheck=60,
        host=host,
        port=port,
        log_level="info",
        access_log=access_log,
        **protocols,
    )
    _run_workers(config)


def server_protocols() -> dict[str, Any]:
    """uvicorn's HTTP parser and event loop for ``serve``: httptools and uvloop (written in C,
    dependencies of Quartier; on the shared machine their effect on a weekly page's CPU was
    within the noise, docs/benchmarks.md, API), or h11 and asyncio's loop where they cannot be
    imported (a platform without wheels for them). The answers' bytes are the same
    (tests/test_serve_protocols.py)."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        http = "h11"
    else:
        http = "httptools"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        loop = "asyncio"
    else:
        loop = "uvloop"
    return {"http": http, "loop": loop}


def _run_workers(config: Any) -> None:
    """``uvicorn.run`` with workers, but with TCP_NODELAY on the shared listening socket (the
    accepted connections inherit it on Linux). uvicorn binds that socket without naming the
    protocol, so asyncio does not set TCP_NODELAY on its connections, and on a kept-alive
    connection each answer then waited for the client's delayed ACK: 40 ms more per request
    than with one process (bench/api.py: a page of 100 observations 50 ms instead of 10)."""
    import socket

    from uvicorn.supervisors import Multiprocess

    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        Multiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


_WORKER_LOGGING = "QUARTIER_SERVE_WORKER_LOGGING"  # "verbose,format" from the parent


def api_app() -> Any:
    """The API of one ``quartier serve --workers N`` worker process: set up as the ``quartier``
    command sets up every process (logging, the SensorThings MQTT notices) before the app."""
    from quartier.cli.main import setup_logging
    from quartier.sta_mqtt.notice import install_if_enabled

    verbose, log_format = os.environ.get(_WORKER_LOGGING, "0,text").split(",")
    setup_logging(verbose == "1", log_format)
    install_if_enabled()
    return serve_app(settings().for_service("api"))


def serve_app(api: Settings) -> FastAPI:
    """``create_app`` with its OpenAPI document made before the first request: FastAPI builds
    its per-route tables (dependencies, validators of about 250 routes) on first use, which
    took 2 s of CPU at load 15, paid by whichever request came first (``bench/api_http.py``
    saw a 17 s p95 from it); making the document builds them too, before the worker takes
    connections."""
    from quartier.api.app import create_app

    app = create_app(api)
    app.openapi()
    return app


@app.command("simulate")
def simulate_cmd(
    seed: Annotated[int, typer.Option(help="random seed: same seed, same fleet and readings")] = 1,
    sensors: Annotated[int, typer.Option(help="number of sensors")] = 40,
    interval: Annotated[float, typer.Option(help="seconds between readings of a sensor")] = 10.0,
    start: Annotated[
        datetime | None,
        typer.Option(help="replay from this UTC time on a virtual clock (default: live)"),
    ] = None,
    count: Annotated[int | None, typer.Option(help="stop after this many ticks")] = None,
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    speedtests: Annotated[int, typer.Option(help="speed tests per tick")] = 2,
    network: Annotated[str, typer.Option(help="device network name in the topics")] = "sim",
    rate: Annotated[float | None, typer.Option(help="max messages/s when replaying")] = None,
) -> None:
    """Run a deterministic fleet of Köln city sensors publishing over MQTT."""
    from quartier.sensors_sim.run import simulate

    s = settings()
    stop = threading.Event()
    stop_on_signals(stop)
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    with user_errors(s):
        broker_url(s)
    with user_errors(s), console.status("publishing …") as status:
        stats = simulate(
            s,
            seed=seed,
            sensors=sensors,
            interval_s=interval,
            start=start,
            count=count,
            duration_s=duration,
            speedtests_per_tick=speedtests,
            stop_event=stop,
            progress=lambda n: status.update(f"published {n} messages"),
            network=network,
            rate=rate,
        )
    console.print(
        f"published {stats.messages} messages ({stats.readings} readings, "
        f"{stats.speedtests} speed tests) in {stats.ticks} ticks, "
        f"{stats.first_time} … {stats.last_time}"
    )


@app.command("demo")
def demo_cmd(
    duration: Annotated[
        float | None, typer.Option(help="stop by itself after this many seconds")
    ] = None,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 1,
    sensors: Annotated[int, typer.Option(help="simulated sensors")] = 40,
    port: Annotated[int, typer.Option(help="API port (a free one if taken)")] = 8000,
    keep_services: Annotated[
        bool, typer.Option(help="leave PostgreSQL and Mosquitto running afterwards")
    ] = False,
    world_scale: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=1.0,
            help="size of the simulated Köln coverage world (addresses, speed tests, signal "
            "measurements) as a share of the full one; 0.1 is ready sooner",
        ),
    ] = 1.0,
) -> None:
    """Everything at once: services, schema, districts, a day of history, then the simulator,
    ingester and API together until Ctrl-C (or --duration)."""
    from quartier.demo import Demo

    stop = threading.Event()
    stop_on_signals(stop)
    s = settings(local=False)
    with user_errors(s):
        if s.database.url and s.mqtt.url:  # configured servers: they must answer
            database_url(s)
            broker_url(s)
        Demo(
            s,
            console,
            stop,
            seed=seed,
            sensors=sensors,
            port=port,
            keep_services=keep_services,
            world_scale=world_scale,
        ).run(duration)
