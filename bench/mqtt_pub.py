"""Build ``bench/mqtt_pub.c``, the lean C publisher of bench/ingest.py's live runs, and run it.

The Python publishers (paho) saturate the two cores at about 5,000 msgs/s together with the
broker, the ingester and PostgreSQL; the C one (libmosquitto, one thread) needs 15–32 µs of CPU a
message, 10–25 times less, and kept 15,000 msgs/s (docs/benchmarks.md, Ingest, session 7).
It is compiled on first use with ``cc`` into ``build/bench/`` (rebuilt when the source is newer)
and needs the Debian package ``libmosquitto-dev`` (and a C compiler).

    python3 bench/mqtt_pub.py            # build it; say what is missing if it cannot
    python3 bench/mqtt_pub.py --install  # as root on Debian/Ubuntu: apt-get what is missing first

Standard library only, so that ``make deps`` can run it before the virtualenv exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "bench" / "mqtt_pub.c"
BUILD_DIR = ROOT / "build" / "bench"
BINARY = BUILD_DIR / "mqtt_pub"
PACKAGE = "libmosquitto-dev"


class BuildError(RuntimeError):
    """The C publisher cannot be built here; the message says what to install."""


def missing_packages() -> list[str]:
    """Debian packages the build still needs (empty: it can be built)."""
    missing = []
    if shutil.which("cc") is None:
        missing.append("gcc")
    if not _header_found():
        missing.append(PACKAGE)
    return missing


def _header_found() -> bool:
    cc = shutil.which("cc")
    if cc is None:
        return Path("/usr/include/mosquitto.h").exists()
    probe = subprocess.run(
        [cc, "-E", "-x", "c", "-"],
        input="#include <mosquitto.h>\n",
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0


def install_hint(missing: list[str]) -> str:
    return (
        f"the C publisher needs {', '.join(missing)}: install with"
        f" `sudo apt-get install {' '.join(missing)}` (or run `sudo python3 bench/mqtt_pub.py"
        " --install`); until then bench/ingest.py publishes with Python (--publisher python)"
    )


def install_missing() -> list[str]:
    """As root on Debian/Ubuntu, apt-get what the build needs (printing each command), as
    scripts/install-deps.sh does for the suite's other packages. Returns what it installed;
    raises ``BuildError`` naming the command when it may not or cannot."""
    missing = missing_packages()
    if not missing:
        return []
    debian = Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None
    if os.geteuid() != 0 or not debian:
        raise BuildError(install_hint(missing))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    print(f"mqtt_pub: + {' '.join(cmd)}", file=sys.stderr, flush=True)
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        # the package lists may be missing or stale (a fresh container): update once, retry
        print("mqtt_pub: + apt-get update -qq", file=sys.stderr, flush=True)
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"apt-get could not install {' '.join(missing)}: {done.stderr[-300:]}")
    still = missing_packages()
    if still:
        raise BuildError(install_hint(still))
    return missing


def build(*, install: bool = False) -> Path:
    """The compiled publisher, built now if it is missing or older than its source. With
    ``install``, missing packages are installed first (root only). Raises ``BuildError`` with
    the command that installs what is missing."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    if install:
        install_missing()
    missing = missing_packages()
    if missing:
        raise BuildError(install_hint(missing))
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    tmp = BINARY.with_suffix(f".tmp{os.getpid()}")
    cmd = ["cc", "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(SOURCE), "-lmosquitto"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"cc could not build {SOURCE.name}: {done.stderr.strip()[-600:]}")
    tmp.replace(BINARY)  # atomic: a parallel build never runs a half-written binary
    return BINARY


def available() -> bool:
    """Whether the C publisher is built or can be built without installing anything."""
    try:
        build()
    except BuildError:
        return False
    return True


@dataclass(frozen=True)
class Published:
    sent: int
    acked: int
    failed: int
    #: from the first send to the last PUBACK
    seconds: float
    #: from the first send to the last send: ``sent / send_seconds`` is the rate reached
    send_seconds: float
    #: how far a send fell behind its schedule, at most
    lag_max_ms: float


def parse_result(line: str) -> Published:
    """The publisher's last line, ``sent=N acked=N failed=N seconds=S send_seconds=S
    lag_max_ms=L`` (the Python publisher of bench/ingest.py prints the same)."""
    kv = dict(item.split("=", 1) for item in line.split())
    return Published(
        sent=int(kv["sent"]),
        acked=int(kv["acked"]),
        failed=int(kv["failed"]),
        seconds=float(kv["seconds"]),
        send_seconds=float(kv["send_seconds"]),
        lag_max_ms=float(kv["lag_max_ms"]),
    )


def command(
    mqtt_url: str,
    *,
    rate: float,
    count: int,
    network: str = "bench",
    devices: int = 200,
    part: int = 0,
    parts: int = 1,
    client_id: str | None = None,
    window: int = 2000,
) -> list[str]:
    """The command line that publishes ``count`` readings at ``rate`` from ``devices`` devices
    (``dev-{part + parts * k}``, k < devices) of ``network``. Plain ``mqtt://`` only."""
    url = urlsplit(mqtt_url)
    if url.scheme != "mqtt":
        raise BuildError(f"the C publisher speaks plain mqtt:// only, not {url.scheme}://")
    cmd = [str(build()), "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 1883)]
    if url.username:
        cmd += ["-u", unquote(url.username), "-P", unquote(url.password or "")]
    cmd += ["-r", f"{rate:g}", "-n", str(count), "-N", network, "-D", str(devices)]
    cmd += ["-k", str(part), "-K", str(parts), "-w", str(window)]
    if client_id:
        cmd += ["-i", client_id]
    return cmd


def publish(mqtt_url: str, *, rate: float, count: int, **kw: object) -> Published:
    """Run the C publisher to the end (see :func:`command`)."""
    done = subprocess.run(
        command(mqtt_url, rate=rate, count=count, **kw),  # type: ignore[arg-type]
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mqtt_pub failed ({done.returncode}): {done.stderr.strip()}")
    return parse_result(done.stdout.strip().splitlines()[-1])


def main() -> int:
    install = "--install" in sys.argv[1:]
    try:
        path = build(install=install)
    except BuildError as exc:
        print(f"mqtt_pub: {exc}", file=sys.stderr)
        return 1
    print(f"mqtt_pub: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
