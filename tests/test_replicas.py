"""Read replicas with real PostgreSQL streaming standbys (issue #16 item 3).

Two hot standbys are made from the tests' PostgreSQL with ``pg_basebackup -R`` and started on
free ports (as the ``postgres`` user when the tests run as root, like the primary). The API gets
both as ``database.replica_urls``; the tests count the reads each server served (the replica
set's counters, and the standbys' own ``pg_stat_database``), stop a standby under 16 concurrent
clients, pause a standby's replay until it lags, and read their own writes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from quartier.api.app import create_app
from quartier.api.deps import Conn
from quartier.config import Settings
from quartier.services import find_postgres, free_port, is_root, port_open
from quartier.store import api_keys
from quartier.store.replicas import ReplicaSet

pytestmark = pytest.mark.services


@dataclass
class Standby:
    root: Path
    port: int
    primary_url: str

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def url(self, db_url: str) -> str:
        """``db_url`` (a database on the primary) on this standby."""
        return make_conninfo(db_url, host="127.0.0.1", port=str(self.port))

    def start(self) -> None:
        _pg(
            [
                "pg_ctl",
                "start",
                "-D",
                str(self.datadir),
                "-l",
                str(self.root / "log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {self.port} -c shared_buffers=32MB",
            ]
        )

    def stop(self) -> None:
        _pg(["pg_ctl", "stop", "-D", str(self.datadir), "-m", "fast", "-w"], check=False)

    def sql(self, query: str) -> Any:
        with psycopg.connect(self.url(self.primary_url), autocommit=True) as conn:
            row = conn.execute(query).fetchone()
        return None if row is None else row[0]


def _pg(cmd: list[str], *, check: bool = True, env: dict[str, str] | None = None) -> None:
    pg = find_postgres()
    assert pg is not None
    full = [str(pg.bindir / cmd[0]), *cmd[1:]]
    if is_root():
        full = ["runuser", "-u", "postgres", "--", *full]
    proc = subprocess.run(
        full, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[:2])} failed: {proc.stderr.strip()}")


def make_standby(primary_url: str) -> Standby:
    """A hot standby of the primary (``pg_basebackup -R``: it streams from the primary)."""
    root = Path(tempfile.mkdtemp(prefix="quartier-standby-"))
    os.chmod(root, 0o700)
    if is_root():
        shutil.chown(root, "postgres", "postgres")
    info = conninfo_to_dict(primary_url)
    standby = Standby(root, free_port(), primary_url)
    _pg(
        [
            "pg_basebackup",
            "-D",
            str(standby.datadir),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
            "-h",
            str(info["host"]),
            "-p",
            str(info["port"]),
            "-U",
            str(info["user"]),
        ],
        env={"PGPASSWORD": str(info["password"])},
    )
    standby.start()
    return standby


@pytest.fixture(scope="module")
def standbys(service_urls: Any) -> Iterator[list[Standby]]:
    made: list[Standby] = []
    try:
        for _ in range(2):
            made.append(make_standby(service_urls.database_url))
        yield made
    finally:
        for standby in made:
            standby.stop()
            shutil.rmtree(standby.root, ignore_errors=True)


def wait_for(what: str, done: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def replicated(standby: Standby, db_url: str) -> bool:
    """Whether the standby answers for the test's database (its CREATE DATABASE replayed)."""
    try:
        with psycopg.connect(standby.url(db_url), connect_timeout=2) as conn:
            conn.execute("select 1 from quartier_meta")
        return True
    except psycopg.Error:
        return False


@pytest.fixture
def replica_settings(settings: Settings, standbys: list[Standby]) -> Settings:
    db_url = settings.require_database_url()
    for standby in standbys:
        wait_for("the standby to have the test's database", partial(replicated, standby, db_url))
    database = settings.database.model_copy(
        update={
            "replica_urls": [s.url(db_url) for s in standbys],
            "replica_max_lag_seconds": 1.0,
            "replica_check_seconds": 0.2,
        }
    )
    api = settings.api.model_copy(update={"rate_per_second": 0.0, "key_rate_per_second": 0.0})
    return settings.model_copy(update={"database": database, "api": api})


def replica_set(app: FastAPI) -> ReplicaSet:
    replicas = app.state.replicas
    assert isinstance(replicas, ReplicaSet)
    return replicas


def reads_per_server(app: FastAPI) -> dict[str, int]:
    replicas = replica_set(app)
    return {r.name: r.reads for r in replicas.replicas} | {"primary": replicas.primary_reads}


def xact_commits(standby: Standby, dbname: str) -> int:
    """Transactions the standby itself ran in ``dbname`` (its own statistics)."""
    with psycopg.connect(standby.url(standby.primary_url), autocommit=True) as conn:
        row = conn.execute(
            "select xact_commit from pg_stat_database where datname = %s", (dbname,)
        ).fetchone()
    return 0 if row is None else int(row[0])


def api_key(settings: Settings, *scopes: str) -> dict[str, str]:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        _, token = api_keys.create(conn, "replica-test", scopes, created_by="test")
    return {"Authorization": f"Bearer {token}"}


def test_open_data_reads_spread_over_the_standbys(
    replica_settings: Settings, standbys: list[Standby]
) -> None:
    dbname = str(conninfo_to_dict(replica_settings.require_database_url())["dbname"])
    before = [xact_commits(s, dbname) for s in standbys]
    app = create_app(replica_settings)
    with TestClient(app) as client:
        health = client.get("/health").json()
        assert [(r["name"], r["state"]) for r in health["replicas"]] == [
            ("replica-1", "ok"),
            ("replica-2", "ok"),
        ]
        assert health["database"]["ok"] is True
        for path in (
            "/v1.1/Things",
            "/v1.1/Datastreams",
            "/coverage/districts",
            "/ogc/collections",
        ):
            for _ in range(10):
                response = client.get(path)
                assert response.status_code in (200, 404), (path, response.text)
        counts = reads_per_server(app)
        # not open data: the primary, not counted as a replica read
        assert client.get("/indicators").status_code == 200
        assert reads_per_server(app) == counts
    assert counts["primary"] == 0
    assert counts["replica-1"] == counts["replica-2"] == 20, counts
    # the standbys' own statistics (flushed when the closed pools' backends exit)
    wait_for(
        "the standbys' statistics",
        lambda: all(
            xact_commits(s, dbname) - b >= 20 for s, b in zip(standbys, before, strict=True)
        ),
        timeout=10,
    )


def test_a_standby_stopped_under_16_clients_costs_no_request(
    replica_settings: Settings, standbys: list[Standby]
) -> None:
    app = create_app(replica_settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for("uvicorn", lambda: server.started, timeout=10)
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    stop = threading.Event()
    states_seen: set[str] = set()

    def client() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            while not stop.is_set():
                try:
                    statuses[http.get("/v1.1/Things?$top=5").status_code] += 1
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))

    def watch() -> None:
        replicas = replica_set(app)
        while not stop.is_set():
            states_seen.add(replicas.statuses()[0].state)
            time.sleep(0.02)

    threads = [threading.Thread(target=client) for _ in range(16)]
    threads.append(threading.Thread(target=watch))
    try:
        for t in threads:
            t.start()
        wait_for("reads", lambda: sum(statuses.values()) >= 50, timeout=60)
        standbys[0].stop()
        assert not port_open(standbys[0].port)
        reads_at_stop = reads_per_server(app)
        wait_for("replica-1 seen down", lambda: "down" in states_seen)
        wait_for(
            "replica-2 serving alone",
            lambda: reads_per_server(app)["replica-2"] >= reads_at_stop["replica-2"] + 100,
            timeout=60,
        )
        reads_while_stopped = reads_per_server(app)
        standbys[0].start()
        wait_for("replica-1 back", lambda: replica_set(app).statuses()[0].state == "ok", 60)
        back = reads_per_server(app)["replica-1"]
        wait_for(
            "replica-1 serving again",
            lambda: reads_per_server(app)["replica-1"] >= back + 20,
            timeout=60,
        )
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        server.should_exit = True
        thread.join(10)
        if not port_open(standbys[0].port):
            standbys[0].start()
    assert errors == []
    assert set(statuses) == {200}, statuses  # no request failed
    # while it was stopped, replica-1 served nothing (reads are counted once connected)
    assert reads_while_stopped["replica-1"] == reads_at_stop["replica-1"]
    # replica-2 took the rest; only reads in flight to replica-1 when it stopped fell back to
    # the primary (at most one per client: the first failure marks replica-1 down)
    assert reads_while_stopped["primary"] - reads_at_stop["primary"] <= 16


def test_a_lagging_standby_is_skipped_and_writers_read_their_writes(
    replica_settings: Settings, standbys: list[Standby]
) -> None:
    headers = api_key(replica_settings, "entities:write")
    app = create_app(replica_settings)
    try:
        for standby in standbys:
            standby.sql("select pg_wal_replay_pause()")
        with TestClient(app) as client:
            for _ in range(5):
                name = f"thing-{uuid.uuid4().hex[:8]}"
                made = client.post(
                    "/v1.1/Things", json={"name": name, "description": "d"}, headers=headers
                )
                assert made.status_code == 201, made.text
                link = f"Things({made.json()['@iot.id']})"
                # read-your-write: with the key, from the primary, never stale
                for _ in range(5):
                    mine = client.get(f"/v1.1/{link}", headers=headers)
                    assert mine.status_code == 200 and mine.json()["name"] == name
            wait_for(
                "both standbys lagging",
                lambda: {s.state for s in replica_set(app).statuses()} == {"lagging"},
            )
            lagging = reads_per_server(app)
            for _ in range(10):
                assert client.get(f"/v1.1/{link}").json()["name"] == name  # from the primary
            assert reads_per_server(app) == lagging | {"primary": lagging["primary"] + 10}
            health = client.get("/health").json()
            assert {r["state"] for r in health["replicas"]} == {"lagging"}
            assert all(r["lag_seconds"] > 1.0 for r in health["replicas"])
            assert health["status"] == "ok"  # reads still answered: reported, not degraded
            for standby in standbys:
                standby.sql("select pg_wal_replay_resume()")
            wait_for(
                "standbys caught up",
                lambda: all(s.state == "ok" for s in replica_set(app).statuses()),
            )
            caught_up = reads_per_server(app)
            assert client.get(f"/v1.1/{link}").json()["name"] == name  # on a standby now
            assert reads_per_server(app)["primary"] == caught_up["primary"]
    finally:
        for standby in standbys:
            if standby.sql("select pg_is_wal_replay_paused()"):
                standby.sql("select pg_wal_replay_resume()")


def test_a_standby_failing_during_a_query_is_answered_from_the_primary(
    replica_settings: Settings, standbys: list[Standby], caplog: pytest.LogCaptureFixture
) -> None:
    """The standby's backend is terminated while the route's query runs: the client still gets
    the primary's answer (``ReplicaRetry`` runs the GET again), never the 503."""
    app = create_app(replica_settings)
    calls: list[bool] = []

    def slow(conn: Conn) -> dict[str, bool]:
        row = conn.execute("select pg_is_in_recovery() as standby").fetchone()
        assert row is not None
        calls.append(bool(row["standby"]))
        conn.execute("select pg_sleep(%s)", (1.5 if row["standby"] else 0,))
        return {"standby": bool(row["standby"])}

    # first in the routing table: SensorThings' deep-path routes would take it otherwise
    app.router.add_api_route("/v1.1/SlowProbe", slow, methods=["GET"])
    app.router.routes.insert(0, app.router.routes.pop())

    def terminate() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for standby in standbys:
                killed = standby.sql(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity"
                    " where query like 'select pg_sleep%%' and pid <> pg_backend_pid()"
                )
                if killed:
                    return
            time.sleep(0.02)

    with TestClient(app) as client, caplog.at_level("INFO", logger="quartier.api.app"):
        killer = threading.Thread(target=terminate)
        killer.start()
        response = client.get("/v1.1/SlowProbe")
        killer.join()
    assert response.status_code == 200, response.text
    assert response.json() == {"standby": False}  # answered by the primary
    assert calls == [True, False]  # first on a standby, which failed, then on the primary
    assert "answered from the primary" in caplog.text
