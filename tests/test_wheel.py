"""The built wheel works without the checkout (slow packaging test, about 2–3 minutes).

Builds the wheel from the package's sources (``pip wheel --no-deps``), installs it into a fresh
virtualenv that sees the dependencies of the test virtualenv but not its editable ``quartier``, and
runs ``quartier services up``, ``quartier demo`` (stopped with Ctrl-C) and ``quartier services
down`` from a working directory outside the checkout. What the product reads at run time must
come from the package (``quartier/resources/``, ``quartier/data/``, migrations, templates): a
path into the checkout fails here.

Marked ``packaging``: ``make test PYTEST_ARGS='-m "not packaging"'`` skips it. Building needs the
build backend (setuptools) from PyPI or pip's cache.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from quartier.services import port_open

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[1]
#: what the wheel is built from: the project metadata and the package, nothing else
SOURCES = ("pyproject.toml", "README.md", "quartier")
#: the addresses the demo prints
DEMO_URLS = (
    "/docs",
    "/v1.1/Things",
    "/v1.1/Datastreams",
    "/maps/coverage",
    "/indicators",
    "/health",
    "/strategy/evaluations/latest",
)


@dataclass(frozen=True)
class Installed:
    bin: Path
    site_packages: Path
    work: Path
    state: Path
    env: dict[str, str]

    def quartier(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "quartier"), *args],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _run(*cmd: str | Path, timeout: float = 300, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False
    )
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    tmp = Path(tempfile.mkdtemp(prefix="quartier-wheel-"))
    os.chmod(tmp, 0o755)  # the postgres and mosquitto users must reach the state directory
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("QUARTIER_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env["QUARTIER_SERVICES__STATE_DIR"] = str(tmp / "state")
    env["COLUMNS"] = "200"  # rich: one URL per line
    try:
        src = tmp / "src"
        src.mkdir()
        for name in SOURCES:
            if (ROOT / name).is_dir():
                shutil.copytree(
                    ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy2(ROOT / name, src / name)
        pip = (sys.executable, "-m", "pip")
        _run(*pip, "wheel", "-q", "--no-deps", "-w", tmp / "dist", src)
        (wheel,) = (tmp / "dist").glob("quartier-*.whl")

        venv = tmp / "venv"
        _run(sys.executable, "-m", "venv", "--without-pip", venv)
        python = venv / "bin" / "python"
        _run(*pip, "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)
        site_packages = Path(
            _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
        )
        # The dependencies: the test virtualenv's site-packages as a plain path entry. Python
        # does not run the .pth files of a directory added this way, so the editable install's
        # finder (which would import quartier from the checkout) stays off.
        (site_packages / "_quartier_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
        work = tmp / "work"
        work.mkdir()
        yield Installed(venv / "bin", site_packages, work, tmp / "state", env)
    finally:
        if (tmp / "venv" / "bin" / "quartier").exists():
            subprocess.run(
                [str(tmp / "venv" / "bin" / "quartier"), "services", "down"],
                cwd=tmp,
                env=env,
                capture_output=True,
                timeout=120,
                check=False,
            )
        shutil.rmtree(tmp, ignore_errors=True)


def test_wheel_imports_quartier_from_itself(installed: Installed) -> None:
    out = _run(
        installed.bin / "python",
        "-c",
        "import quartier, quartier.services as s; print(quartier.__file__); "
        "print(s.MOSQUITTO_CONF); import quartier.resources as r; "
        "print(r.resource('strategy-koeln.yaml'))",
        cwd=installed.work,
    )
    paths = out.split()
    assert len(paths) == 3
    for path in paths:
        assert Path(path).is_relative_to(installed.site_packages), out
        assert Path(path).is_file(), path
        assert not Path(path).is_relative_to(ROOT), out


def test_services_demo_and_down_from_the_wheel(installed: Installed) -> None:
    up = installed.quartier("services", "up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "postgresql://" in up.stderr and "mqtt://" in up.stderr, up.stdout + up.stderr

    text = _demo(installed)
    for path in DEMO_URLS:
        assert re.search(rf"http://127\.0\.0\.1:\d+{re.escape(path)}\s", text), (path, text)
    assert "coverage gap analysis stored" in text, text
    # --world-scale 0.1: about 5,000 simulated speed tests (the full world has 50,000)
    tests = int(re.search(r"(\d+) speed tests", text).group(1))  # type: ignore[union-attr]
    assert 4_000 < tests < 10_000, text
    assert "demo stopped" in text, text
    # the example strategy came from the package: the demo evaluated it and wrote the report
    assert (installed.state / "report.html").is_file(), text

    state = json.loads((installed.state / "services.json").read_text())
    down = installed.quartier("services", "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not port_open(state["pg_port"]), "PostgreSQL still listening"
    assert not port_open(state["mqtt_port"]), "Mosquitto still listening"


def _demo(installed: Installed) -> str:
    """Run ``quartier demo``, ask its API while it runs, then stop it with Ctrl-C (SIGINT) as a
    user does; its output. The demo keeps the services it found running, for ``services down``
    to stop."""
    # 5 sensors instead of 40 and a tenth of the coverage world: the same steps, sooner
    cmd = ["demo", "--sensors", "5", "--world-scale", "0.1", "--keep-services"]
    proc = subprocess.Popen(
        [str(installed.bin / "quartier"), *cmd],
        cwd=installed.work,
        env=installed.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    answered: dict[str, int] = {}
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
            health = re.search(r"(http://127\.0\.0\.1:\d+)/health", line)
            if health and not answered:
                base = health.group(1)
                for path in ("/health", "/v1.1/Things"):
                    answered[path] = httpx.get(base + path, timeout=30).status_code
                proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    output = "".join(seen)
    assert rc == 0, output
    assert answered == {"/health": 200, "/v1.1/Things": 200}, (answered, output)
    return output
