"""A server that cannot be reached is one line naming it (never its password) and the fix, exit
status 2, for every command that talks to PostgreSQL or the MQTT broker; no password is printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quartier.cli import app
from quartier.config import redact_url
from quartier.resources import resource
from quartier.services import free_port

PASSWORD = "s3cret-Pw"
EXAMPLE = Path(str(resource("strategy-koeln.yaml")))

#: every command that needs the database (arguments that get past option parsing)
DATABASE_COMMANDS = [
    ["db", "migrate"],
    ["db", "status"],
    ["db", "maintain"],
    ["ingest"],
    ["serve"],
    ["demo"],
    ["import", "districts"],
    ["import", "sensor-community", "{file}"],
    ["import", "broadband", "{file}"],
    ["import", "households", "{file}"],
    ["coverage", "analyse"],
    ["coverage", "export", "--out", "{dir}"],
    ["coverage", "simulate", "--addresses", "10", "--speedtests", "10", "--signals", "10"],
    ["evaluate", "--strategy", str(EXAMPLE), "--out", "{dir}/r.html"],
    ["indicators", "import", "{file}"],
    ["rejects", "list"],
    ["rejects", "show", "1"],
    ["rejects", "replay"],
    ["privacy", "export", "--device", "phone-1"],
    ["privacy", "erase", "--device", "phone-1", "--yes"],
    ["map", "coverage", "--out", "{dir}/m.html"],
    ["keys", "list"],
    ["keys", "add", "--name", "statistics", "--scope", "indicators:write"],
    ["keys", "revoke", "1"],
    ["keys", "audit"],
    ["devices", "list"],
]
#: every command that needs the broker but not the database
BROKER_COMMANDS = [["simulate", "--count", "1"]]


@pytest.fixture
def closed_port() -> int:
    return free_port()  # free: nothing listens there


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no .env, no .quartier/ of the checkout
    (tmp_path / "data.csv").write_text("lon,lat,households\n6.95,50.93,3\n")
    return tmp_path


def _args(command: list[str], workdir: Path) -> list[str]:
    return [a.format(file=workdir / "data.csv", dir=workdir) for a in command]


def _assert_one_line(output: str, address: str, what: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: cannot reach the " + what), output
    assert address in lines[0]
    assert "quartier services up" in lines[0]
    assert PASSWORD not in output
    assert "Traceback" not in output


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_unreachable_database(
    command: list[str], closed_port: int, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "QUARTIER_DATABASE__URL", f"postgresql://quartier:{PASSWORD}@127.0.0.1:{closed_port}/q"
    )
    monkeypatch.setenv("QUARTIER_MQTT__URL", f"mqtt://u:{PASSWORD}@127.0.0.1:{closed_port}")
    r = CliRunner().invoke(app, _args(command, workdir))
    assert r.exit_code == 2, (r.output, r.exception)
    _assert_one_line(r.output, f"127.0.0.1:{closed_port}", "database")


@pytest.mark.parametrize("command", BROKER_COMMANDS, ids=" ".join)
def test_unreachable_broker(
    command: list[str], closed_port: int, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUARTIER_MQTT__URL", f"mqtt://u:{PASSWORD}@127.0.0.1:{closed_port}")
    r = CliRunner().invoke(app, _args(command, workdir))
    assert r.exit_code == 2, (r.output, r.exception)
    _assert_one_line(r.output, f"127.0.0.1:{closed_port}", "MQTT broker")


def test_ingest_with_the_database_up_and_the_broker_down(
    db_url: str, closed_port: int, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUARTIER_DATABASE__URL", db_url)
    monkeypatch.setenv("QUARTIER_MQTT__URL", f"mqtt://u:{PASSWORD}@127.0.0.1:{closed_port}")
    r = CliRunner().invoke(app, ["ingest"])
    assert r.exit_code == 2, (r.output, r.exception)
    _assert_one_line(r.output, f"127.0.0.1:{closed_port}", "MQTT broker")


def test_the_installed_command_answers_in_one_line(closed_port: int, workdir: Path) -> None:
    """As a new user meets it: the console script in a fresh process."""
    env = {
        **os.environ,
        "QUARTIER_DATABASE__URL": f"postgresql://quartier:{PASSWORD}@127.0.0.1:{closed_port}/q",
    }
    script = Path(sys.executable).with_name("quartier")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "quartier.cli"]
    r = subprocess.run(
        [*cmd, "rejects", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    _assert_one_line(r.stderr, f"127.0.0.1:{closed_port}", "database")


def test_printed_urls_hide_the_password(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert redact_url(f"postgresql://quartier:{PASSWORD}@127.0.0.1:5432/q") == (
        "postgresql://quartier:***@127.0.0.1:5432/q"
    )
    assert redact_url(f"host=h port=1 password={PASSWORD}") == "host=h port=1 password=***"
    assert redact_url("mqtt://127.0.0.1:1883") == "mqtt://127.0.0.1:1883"
    state = workdir / "state"
    state.mkdir()
    (state / "services.json").write_text(
        json.dumps({
            "database_url": f"postgresql://quartier:{PASSWORD}@127.0.0.1:1/q",
            "mqtt_url": "mqtt://127.0.0.1:2",
            "pg_port": 1, "mqtt_port": 2, "pg_datadir": str(state / "pg"),
            "mqtt_dir": str(state / "mqtt"), "timescaledb_available": False,
        })
    )  # fmt: skip
    monkeypatch.setenv("QUARTIER_SERVICES__STATE_DIR", str(state))
    monkeypatch.setenv("COLUMNS", "200")
    r = CliRunner().invoke(app, ["services", "status"])
    assert r.exit_code == 0, r.output
    assert PASSWORD not in r.output
    assert "quartier:***@127.0.0.1:1/q" in r.output
