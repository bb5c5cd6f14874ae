"""`quartier services`: project-local PostgreSQL and Mosquitto, started for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from quartier.services import LocalServices, port_open

pytestmark = pytest.mark.services


def _processes_under(path: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if str(path) in line]


def test_up_is_idempotent_and_down_leaves_no_process() -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="quartier-svc-"))
    os.chmod(state_dir, 0o755)
    local = LocalServices(state_dir, fast_unsafe=True)
    try:
        first = local.up()
        again = local.up()  # running already: same ports, nothing restarted
        assert (again.pg_port, again.mqtt_port) == (first.pg_port, first.mqtt_port)
        assert all(s.running for s in local.status())
        with psycopg.connect(first.database_url) as conn:
            row = conn.execute(
                "select extversion from pg_extension where extname = 'postgis'"
            ).fetchone()
            assert row is None  # PostGIS is installed but enabled by the migrations
            avail = conn.execute(
                "select 1 from pg_available_extensions where name = 'postgis'"
            ).fetchone()
            assert avail == (1,)
        assert (state_dir / "services.json").stat().st_mode & 0o077 == 0  # holds a password
        local.down()
        assert not port_open(first.pg_port) and not port_open(first.mqtt_port)
        assert _processes_under(state_dir) == []
        assert not any(s.running for s in local.status())
        local.down()  # twice is fine
        restarted = local.up()  # the same cluster comes back, data kept
        assert restarted.database_url == first.database_url
    finally:
        local.down()
        shutil.rmtree(state_dir, ignore_errors=True)
    assert _processes_under(state_dir) == []
