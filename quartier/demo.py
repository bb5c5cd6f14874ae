"""``quartier demo``: the whole platform in one process, for a first look.

A composition root like ``cli``: it starts the local services (unless URLs are configured),
migrates, imports the Köln districts, back-fills a day of simulated history through MQTT, then
runs the live simulator, the ingester and the API together until stopped. On stop it ends them in
order (simulator, ingester after draining, API) and stops the local services.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from importlib.resources import as_file
from pathlib import Path

import psycopg
import uvicorn
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from quartier.api.app import create_app
from quartier.config import Settings, redact_url
from quartier.coverage_run import after_coverage_run
from quartier.errors import ServiceError
from quartier.evaluation.current import indicator_refresh
from quartier.evaluation.report import evaluate_to_report
from quartier.geo.io import import_districts
from quartier.ingest.mqtt import Ingester
from quartier.ingest.mqtt_client import mqtt_client
from quartier.resources import resource
from quartier.sensors_sim.run import simulate
from quartier.services import LocalServices, free_port, port_free
from quartier.store.rollups import start_maintenance
from quartier.store.setup import prepare

log = logging.getLogger(__name__)

BACKFILL_HOURS = 24
BACKFILL_STEP_S = 900
LIVE_INTERVAL_S = 10.0
#: parts whose INFO lines (a line per migration, per registered device, …) the start-up replaces
#: with its own few lines; warnings still show, and ``quartier -v demo`` shows everything
STARTUP_LOGGERS = (
    "quartier.services",
    "quartier.store",
    "quartier.geo",
    "quartier.ingest",
    "quartier.sensors_sim",
    "quartier.evaluation",
)


def _self_command() -> str:
    """How to call this ``quartier`` again: the script as it was run (``.venv/bin/quartier``
    under ``make demo``), or ``quartier`` when it was started some other way."""
    script = sys.argv[0] if sys.argv else ""
    return script if Path(script).name == "quartier" else "quartier"


@contextmanager
def quiet_startup() -> Iterator[None]:
    """Raise :data:`STARTUP_LOGGERS` to WARNING for the block (unless logging is verbose)."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(name) for name in STARTUP_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class Demo:
    def __init__(
        self,
        settings: Settings,
        console: Console,
        stop: threading.Event,
        *,
        seed: int,
        sensors: int,
        port: int,
        keep_services: bool,
        world_scale: float = 1.0,
    ) -> None:
        self.settings = settings
        self.world_scale = world_scale
        self.console = console
        self.stop = stop
        self.seed = seed
        self.sensors = sensors
        self.port = port if port_free(port) else free_port()
        self.keep_services = keep_services
        self.local: LocalServices | None = None

    # ------------------------------------------------------------------ steps
    def _services(self) -> Settings:
        s = self.settings
        if s.database.url and s.mqtt.url:
            self.console.print("using the configured PostgreSQL and MQTT broker")
            return s
        # The demo's back-fill sends a day of readings through one connection, which a broker that
        # saves after every change would hold to a few hundred messages a second: the demo's
        # broker saves every 30 s instead (`quartier services up` keeps the durable setting).
        # The demo's broker is open (no accounts; LocalServices warns): the simulated fleet
        # publishes without device accounts (docs/security.md).
        self.local = LocalServices.from_settings(
            s.services, durable_broker=False, allow_anonymous=True
        )
        with self.console.status("starting PostgreSQL and Mosquitto …"):
            state = self.local.up()
        self.console.print(
            f"[green]✓[/green] PostgreSQL {redact_url(state.database_url)}, "
            f"Mosquitto {redact_url(state.mqtt_url)} (demo: saves every 30 s, see docs/mqtt.md)"
        )
        return s.model_copy(
            update={
                "database": s.database.model_copy(update={"url": state.database_url}),
                "mqtt": s.mqtt.model_copy(update={"url": state.mqtt_url}),
            }
        )

    def _prepare_store(self, s: Settings) -> None:
        url = s.require_database_url()
        path, applied = prepare(url, s.database)
        with psycopg.connect(url) as conn:
            counts = import_districts(conn)
        self.console.print(
            f"[green]✓[/green] schema ready ({path}, {len(applied)} new "
            f"migrations); Köln: {counts.get('stadtbezirk', 0)} Stadtbezirke, "
            f"{counts.get('stadtteil', 0)} Stadtteile"
        )

    def _backfill(self, s: Settings) -> int:
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        ticks = BACKFILL_HOURS * 3600 // BACKFILL_STEP_S
        start = end - timedelta(seconds=ticks * BACKFILL_STEP_S)
        speedtests = 40
        total = ticks * (self.sensors + speedtests)
        with Progress(
            TextColumn("back-filling the last day"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        ) as bar:
            task = bar.add_task("backfill", total=total)
            stats = simulate(
                s,
                seed=self.seed,
                sensors=self.sensors,
                interval_s=BACKFILL_STEP_S,
                start=start,
                count=ticks,
                duration_s=None,
                speedtests_per_tick=speedtests,
                stop_event=self.stop,
                progress=lambda n: bar.update(task, completed=n),
                client_id="quartier-demo-backfill",
            )
        return stats.messages

    def _broken_device(self, s: Settings) -> None:
        """A few malformed messages, so that the rejects table has something to show."""
        client, host, port = mqtt_client(  # a publisher's account, never the ingester's
            s.mqtt.publish_url or s.require_mqtt_url(),
            "quartier-demo-broken",
            ca_file=s.mqtt.ca_file,
        )
        client.connect(host, port)
        client.loop_start()
        now = datetime.now(UTC).isoformat()
        infos = [
            client.publish("quartier/v1/sim/broken-0001/up", b'{"time": "' + now.encode(), 1),
            client.publish(
                "quartier/v1/sim/broken-0001/up",
                (f'{{"time": "{now}", "quantity": "pm25", "value": -3}}').encode(),
                1,
            ),
        ]
        for info in infos:
            info.wait_for_publish(5)
        client.disconnect()
        client.loop_stop()

    # ------------------------------------------------------------------ run
    def run(self, duration: float | None) -> None:
        t_start = time.monotonic()
        with quiet_startup():
            s = self._services()
        threads: list[threading.Thread] = []
        ingester: Ingester | None = None
        server: uvicorn.Server | None = None
        sim_stop = threading.Event()
        try:
            with quiet_startup():
                self._prepare_store(s)
                ingester = Ingester(s, self.stop)
                threads.append(threading.Thread(target=ingester.run, name="ingest", daemon=True))
                threads[-1].start()
                threads.append(
                    start_maintenance(
                        s.require_database_url(),
                        s.database,
                        self.stop,
                        after_round=indicator_refresh(s),
                    )
                )
                if not ingester.connected.wait(15):
                    raise ServiceError(
                        "the ingester could not connect to the MQTT broker and subscribe"
                    )
                sent = self._backfill(s)
                self._broken_device(s)
                sent += 2
                server = uvicorn.Server(
                    uvicorn.Config(
                        create_app(s), host="127.0.0.1", port=self.port, log_level="warning"
                    )
                )
                threads.append(threading.Thread(target=server.run, name="api", daemon=True))
                threads[-1].start()
                threads.append(
                    threading.Thread(
                        target=simulate,
                        name="simulator",
                        daemon=True,
                        kwargs={
                            "settings": s,
                            "seed": self.seed,
                            "sensors": self.sensors,
                            "interval_s": LIVE_INTERVAL_S,
                            "start": None,
                            "count": None,
                            "duration_s": None,
                            "speedtests_per_tick": 2,
                            "stop_event": sim_stop,
                            "client_id": "quartier-demo-live",
                        },
                    )
                )
                threads[-1].start()
                self._wait_caught_up(ingester, sent, server)
                self.console.print(
                    f"[green]✓[/green] a day of history ingested: {sent} messages from "
                    f"{self.sensors} simulated sensors and phones"
                )
                self._coverage(s)
                report = self._evaluate(s)
                self._announce(s, time.monotonic() - t_start, report)
            self._watch(s, ingester, duration)
        finally:
            sim_stop.set()
            self.stop.set()
            if server is not None:
                server.should_exit = True
            for t in reversed(threads):
                t.join(20)
            if self.local is not None and not self.keep_services:
                with self.console.status("stopping PostgreSQL and Mosquitto …"):
                    self.local.down()
            self.console.print(
                "demo stopped"
                + (f"; {ingester.stats.stored} observations stored this run" if ingester else "")
            )

    def _wait_caught_up(self, ingester: Ingester, sent: int, server: uvicorn.Server) -> None:
        deadline = time.monotonic() + 120
        with self.console.status("ingesting the back-fill …"):
            while time.monotonic() < deadline and not self.stop.is_set():
                if ingester.stats.received >= sent and server.started:
                    return
                time.sleep(0.1)

    def _coverage(self, s: Settings) -> None:
        """The simulated Köln coverage world (households, offers, speed tests, signal
        measurements) and one gap analysis, so that the map and the broadband indicators show
        something."""
        from quartier.geo.analysis import AnalysisParams
        from quartier.geo.input_store import write_inputs
        from quartier.geo.service import analyse_and_store
        from quartier.pseudonym import pseudonymizer
        from quartier.sensors_sim.coverage_inputs import WorldConfig, coverage_world

        with self.console.status("simulating Köln's broadband and mobile coverage …"):
            world = coverage_world(
                WorldConfig(
                    seed=self.seed,
                    addresses=round(150_000 * self.world_scale),
                    speedtests=round(50_000 * self.world_scale),
                    signals=round(200_000 * self.world_scale),
                )
            )
            with psycopg.connect(s.require_database_url()) as conn:
                write_inputs(
                    conn,
                    world.addresses,
                    world.offers,
                    world.speedtests,
                    world.signals,
                    "sim",
                    pseudonymizer(s),
                )
                k = s.privacy.min_contributors
                run_id, _ = analyse_and_store(
                    conn, AnalysisParams(), on_stored=after_coverage_run(k), min_contributors=k
                )
                conn.commit()
        self.console.print(f"[green]✓[/green] coverage gap analysis stored (run {run_id})")

    def _evaluate(self, s: Settings) -> Path:
        """Evaluate the example strategy once, so /strategy and the report have a run."""
        out = s.services.state_dir.resolve() / "report.html"
        with (
            self.console.status("evaluating the example strategy …"),
            as_file(resource("strategy-koeln.yaml")) as strategy,
            psycopg.connect(s.require_database_url(), autocommit=True) as conn,
        ):
            evaluate_to_report(conn, strategy, out, as_of=datetime.now(UTC))
        return out

    def _counts(self, s: Settings) -> tuple[int, int, int, int]:
        with psycopg.connect(s.require_database_url()) as conn:
            row = conn.execute(
                "select (select count(*) from thing), (select count(*) from observation),"
                " (select count(*) from speedtest), (select count(*) from ingest_reject)"
            ).fetchone()
        assert row is not None
        return (int(row[0]), int(row[1]), int(row[2]), int(row[3]))

    def _announce(self, s: Settings, took: float, report: Path | None) -> None:
        base = f"http://127.0.0.1:{self.port}"
        things, obs, tests, rejects = self._counts(s)
        broker = redact_url(s.require_mqtt_url())
        self.console.print(
            Panel.fit(
                f"Quartier is running (ready after {took:.0f} s)\n\n"
                f"  API docs (OpenAPI)      {base}/docs\n"
                f"  SensorThings API        {base}/v1.1/Things\n"
                f"                          {base}/v1.1/Datastreams\n"
                f"                          {base}/v1.1/Datastreams(1)/Observations\n"
                f"  Coverage map (Karte)    {base}/maps/coverage\n"
                f"  Mobile map (Mobilfunk)  {base}/maps/mobile\n"
                f"  Sensor map (Sensoren)   {base}/maps/sensors\n"
                f"  Indicators              {base}/indicators\n"
                f"  Health                  {base}/health\n"
                f"  Strategy evaluation     {base}/strategy/evaluations/latest\n"
                + (f"  Report (Bericht)        file://{report}\n" if report else "")
                + "\n"
                f"  MQTT broker             {broker}  (topics: docs/mqtt.md)\n"
                f"  Refused messages        {_self_command()} rejects list\n\n"
                f"  {things} things, {obs} observations, {tests} speed tests, {rejects} rejects\n"
                "  Ctrl-C stops everything.",
                title="Quartier demo",
            )
        )
        # where to look, now: with stdout a pipe (`quartier demo | tee demo.log`) the panel
        # would otherwise wait in the buffer while the demo runs
        self.console.file.flush()

    def _watch(self, s: Settings, ingester: Ingester, duration: float | None) -> None:
        end = None if duration is None else time.monotonic() + duration
        while not self.stop.is_set():
            wait = 30.0 if end is None else max(0.0, min(30.0, end - time.monotonic()))
            if self.stop.wait(wait):
                break
            _things, obs, tests, rejects = self._counts(s)
            self.console.print(
                f"{datetime.now():%H:%M:%S}  {obs} observations, {tests} speed "
                f"tests, {rejects} rejects stored; last batch "
                f"{ingester.stats.last_batch_ms:.0f} ms"
            )
            if end is not None and time.monotonic() >= end:
                break
