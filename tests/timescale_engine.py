"""A real TimescaleDB engine for the tests, without a TimescaleDB package on the machine.

``timescale_engine()`` is a context manager that yields an :class:`Engine` whose ``url`` psycopg
can connect to:

* if ``QUARTIER_TEST_TIMESCALE_URL`` is set, that server (e.g. ``docker compose up db``) is used
  as is;
* otherwise PGlite (PostgreSQL 17.5 in WebAssembly, with TimescaleDB) from ``deploy/pglite`` is
  started on a free loopback port: ``npm ci`` installs it into ``deploy/pglite/node_modules`` the
  first time (then it is cached), ``node server.mjs --postgis-standin`` serves it over the wire
  protocol, with deploy/pglite/postgis-standin.sql as the extension ``postgis`` (NOT PostGIS: a
  geometry type and a few ST_ functions that do no geometry) so that Quartier's whole migration
  set runs unchanged.

When the engine cannot be had for reasons outside the project (no ``node``/``npm``, or the npm
registry cannot be reached) it raises :class:`EngineUnavailable`, which the fixture turns into a
skip (or a failure when ``QUARTIER_TEST_TIMESCALE_REQUIRED=1``). Anything else (an integrity
mismatch, a crashing server) is an error.

PGlite limits that tests must respect: ONE backend session shared by every connection (so one
connection at a time, ``prepare_threshold=None``, session state such as ``search_path`` and temp
tables survives a reconnect), no ``COPY ... FROM STDIN`` (it crashes the engine; BatchWriter sees
PGlite and INSERTs instead), no background workers (TimescaleDB jobs only run through
``CALL run_job(id)``). See docs/timescaledb-testing.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg

log = logging.getLogger(__name__)

PGLITE_DIR = Path(__file__).resolve().parents[1] / "deploy" / "pglite"
URL_ENV = "QUARTIER_TEST_TIMESCALE_URL"
REQUIRED_ENV = "QUARTIER_TEST_TIMESCALE_REQUIRED"
MIN_NODE_MAJOR = 20
NPM_TIMEOUT_S = 600.0
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
_STAMP = ".quartier-installed"
_READY = re.compile(r"^READY port=(\d+) url=(\S+)$")

#: npm error codes that mean "the registry could not be used" (network, TLS, proxy, HTTP status,
#: version missing on this registry): the engine is unavailable, not broken. Everything else
#: (EINTEGRITY above all: the pinned tarball changed) is a real failure.
_REGISTRY_CODES = re.compile(
    r"^(E(NOTFOUND|AI_AGAIN|CONNREFUSED|CONNRESET|TIMEDOUT|SOCKETTIMEDOUT|HOSTUNREACH|NETUNREACH"
    r"|PROTO|PIPE|TARGET|NOVERSIONS|40[0-9]|4[1-9][0-9]|5[0-9][0-9])"
    r"|ERR_SOCKET_TIMEOUT|ERR_TLS_CERT_ALTNAME_INVALID|SELF_SIGNED_CERT_IN_CHAIN"
    r"|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_(GET_ISSUER_CERT(_LOCALLY)?|VERIFY_LEAF_SIGNATURE)"
    r"|CERT_HAS_EXPIRED|ECONNABORTED)$"
)
_NPM_CODE = re.compile(r"^npm (?:error|ERR!) code (\S+)", re.MULTILINE)
_NETWORK_TEXT = re.compile(
    r"network|request to \S+ failed|getaddrinfo|socket hang up|proxy", re.IGNORECASE
)


class EngineUnavailable(Exception):
    """The engine cannot be provided on this machine (tests should skip, with this reason)."""


@dataclass(frozen=True)
class Engine:
    url: str
    kind: str  # "pglite" or "external"
    install_seconds: float | None = None  # None: nothing was installed (cache hit or external)
    start_seconds: float | None = None


def _lock_digest() -> str:
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        h.update((PGLITE_DIR / name).read_bytes())
    return h.hexdigest()


def _check_node() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
        raise EngineUnavailable(
            f"{missing} not found on PATH: the PGlite TimescaleDB engine needs Node.js "
            f">= {MIN_NODE_MAJOR} with npm (or set {URL_ENV} to a TimescaleDB server)"
        )
    out = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    m = re.match(r"v(\d+)\.", out)
    if m is None or int(m.group(1)) < MIN_NODE_MAJOR:
        raise EngineUnavailable(
            f"node {out or '(unknown version)'} is too old for the PGlite TimescaleDB engine "
            f"(needs >= {MIN_NODE_MAJOR}; or set {URL_ENV} to a TimescaleDB server)"
        )
    return node, npm


def _npm_failure(output: str, returncode: int) -> Exception:
    codes = _NPM_CODE.findall(output)
    # the messages, without stack traces and dumped error objects
    lines = [
        ln
        for ln in output.strip().splitlines()
        if ln.strip() and not re.match(r"npm (error|ERR!)(\s+at |\s{2,}|\s*[{}])", ln)
    ]
    tail = "\n".join(lines[:12])
    if codes and all(_REGISTRY_CODES.match(c) for c in codes):
        return EngineUnavailable(
            f"npm ci in {PGLITE_DIR} could not use the npm registry ({', '.join(codes)}); "
            f"PGlite TimescaleDB engine not installed:\n{tail}"
        )
    if not codes and _NETWORK_TEXT.search(output):
        return EngineUnavailable(
            f"npm ci in {PGLITE_DIR} failed with a network error; PGlite TimescaleDB engine "
            f"not installed:\n{tail}"
        )
    return RuntimeError(f"npm ci in {PGLITE_DIR} failed (exit {returncode}):\n{tail}")


def ensure_installed(npm: str) -> float | None:
    """Install the pinned packages into deploy/pglite/node_modules unless already there.

    Returns the seconds ``npm ci`` took, or None when the cached install was used. A lock file
    serialises concurrent test runs on the same checkout.
    """
    digest = _lock_digest()
    modules = PGLITE_DIR / "node_modules"
    stamp = modules / _STAMP

    def installed() -> bool:
        return (
            stamp.is_file()
            and stamp.read_text().strip() == digest
            and all(
                (modules / "@electric-sql" / p / "package.json").is_file()
                for p in ("pglite", "pglite-socket")
            )
        )

    if installed():
        return None
    with open(PGLITE_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed():
            return None
        cmd = [
            npm,
            "ci",
            "--ignore-scripts",
            "--legacy-peer-deps",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ]
        log.info("installing the PGlite TimescaleDB engine: %s (in %s)", " ".join(cmd), PGLITE_DIR)
        # fail fast without a registry (npm's default retries take 70 s), unless configured
        env = {
            "npm_config_fetch_retries": "1",
            "npm_config_fetch_retry_mintimeout": "2000",
            "npm_config_fetch_retry_maxtimeout": "10000",
            **os.environ,
            "npm_config_update_notifier": "false",
        }
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                cmd,
                cwd=PGLITE_DIR,
                env=env,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EngineUnavailable(
                f"npm ci in {PGLITE_DIR} did not finish within {NPM_TIMEOUT_S:.0f} s "
                "(npm registry unreachable or very slow?)"
            ) from exc
        took = time.monotonic() - t0
        if proc.returncode != 0:
            raise _npm_failure(proc.stdout + "\n" + proc.stderr, proc.returncode)
        stamp.write_text(digest + "\n")
        log.info("npm ci took %.1f s", took)
        return took


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _tail(f: IO[bytes], n: int = 30) -> str:
    f.flush()
    f.seek(0)
    return "\n".join(f.read().decode(errors="replace").strip().splitlines()[-n:])


@contextlib.contextmanager
def _pglite() -> Iterator[Engine]:
    node, npm = _check_node()
    installed = ensure_installed(npm)
    with tempfile.TemporaryFile() as errlog:
        t0 = time.monotonic()
        # stdin stays an open pipe: with --exit-on-stdin-close the server stops by itself if this
        # process dies without reaching the cleanup below.
        proc = subprocess.Popen(
            [
                node,
                "server.mjs",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--exit-on-stdin-close",
                "--postgis-standin",
            ],
            cwd=PGLITE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None and proc.stdin is not None
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(
            target=_pump, args=(proc.stdout, lines), daemon=True, name="pglite-stdout"
        )
        reader.start()
        try:
            url = None
            deadline = t0 + START_TIMEOUT_S
            while url is None:
                try:
                    line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise RuntimeError(
                        f"PGlite TimescaleDB engine not ready within {START_TIMEOUT_S:.0f} s:\n"
                        + _tail(errlog)
                    ) from None
                if line is None:
                    raise RuntimeError(
                        f"PGlite TimescaleDB engine exited (code {proc.wait()}) before it was "
                        f"ready:\n" + _tail(errlog)
                    )
                m = _READY.match(line)
                if m:
                    url = m.group(2)
            started = time.monotonic() - t0
            log.info("PGlite TimescaleDB engine ready at %s in %.1f s", url, started)
            yield Engine(url, "pglite", installed, started)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("PGlite engine ignored SIGTERM; killing it")
                proc.kill()
                proc.wait()
            with contextlib.suppress(OSError):
                proc.stdin.close()
            reader.join(timeout=5)
            proc.stdout.close()
            if proc.returncode not in (0, -signal.SIGTERM):
                log.warning("PGlite engine exited with %s:\n%s", proc.returncode, _tail(errlog))


def connect(url: str, *, retry_s: float = 5.0) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection without server-side prepared statements (PGlite shares one
    session between connections, so prepared statement names would collide). Retries for a few
    seconds: PGlite refuses a connection while the previous one is still being closed."""
    deadline = time.monotonic() + retry_s
    while True:
        try:
            return psycopg.connect(url, autocommit=True, prepare_threshold=None, connect_timeout=15)
        except psycopg.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def timescale_engine() -> Iterator[Engine]:
    """The TimescaleDB engine for a test module (see the module docstring)."""
    external = os.environ.get(URL_ENV)
    if external:
        yield Engine(external, "external")
        return
    with _pglite() as engine:
        yield engine


def required() -> bool:
    """True when a missing engine must fail the tests instead of skipping them (CI)."""
    return os.environ.get(REQUIRED_ENV, "").strip().lower() in {"1", "true", "yes"}
