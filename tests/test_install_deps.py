"""Installing system packages is set-up (scripts/install-deps.sh, run by `make test` and
`make demo`), not product behaviour: Quartier only checks and names what is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from quartier import services
from quartier.errors import QuartierError, ServiceError

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install-deps.sh"


def test_services_up_names_missing_packages_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        services, "missing_packages", lambda: ["mosquitto", "postgresql-15-postgis-3"]
    )
    with pytest.raises(ServiceError) as info:
        services.check_installed()
    msg = str(info.value)
    assert isinstance(info.value, QuartierError)  # the CLI prints it without a traceback
    assert "\n" not in msg
    assert "mosquitto, postgresql-15-postgis-3" in msg
    assert (
        "scripts/install-deps.sh" in msg
        and "apt-get install mosquitto postgresql-15-postgis-3" in msg
    )
    monkeypatch.setattr(services, "missing_packages", lambda: [])
    services.check_installed()  # nothing missing: nothing said


def test_services_never_run_apt_get() -> None:
    assert 'apt-get", "install' not in Path(services.__file__).read_text()
    assert not hasattr(services, "ensure_installed")


def _path_without(tmp_path: Path, *absent: str) -> str:
    """A PATH with the tools the script needs, but none of ``absent``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sed", "basename", "dirname", "ls", "id", "node", "npm", "pdftoppm",
                 "mosquitto", "env", "apt-get", "chromium"):  # fmt: skip
        found = shutil.which(tool) or (
            f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None
        )
        if found and tool not in absent:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_install_deps_check_reports_what_is_missing(tmp_path: Path) -> None:
    if not shutil.which("node") or not shutil.which("pdftoppm") or not shutil.which("chromium"):
        pytest.skip("this test starts from a machine where install-deps.sh has run")
    env = {**os.environ, "PATH": _path_without(tmp_path, "node", "npm", "pdftoppm")}
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--check"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "missing: nodejs npm poppler-utils" in proc.stdout
    assert "apt-get install nodejs npm poppler-utils" in proc.stdout
    # the demo needs none of them
    demo = subprocess.run(
        ["bash", str(SCRIPT), "--check", "--demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    # with everything there (make test ran it first) it says so and exits 0, installing nothing
    ok = subprocess.run(
        ["bash", str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0 and "all present" in ok.stdout, ok.stdout + ok.stderr


def test_install_deps_names_chromium_for_the_browser_tests(tmp_path: Path) -> None:
    if not shutil.which("chromium"):
        pytest.skip("this test starts from a machine where install-deps.sh has run")
    env = {**os.environ, "PATH": _path_without(tmp_path, "chromium")}
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--check"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "missing: chromium" in proc.stdout
    assert "apt-get install chromium" in proc.stdout
    demo = subprocess.run(
        ["bash", str(SCRIPT), "--check", "--demo"], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr  # the demo needs no browser
