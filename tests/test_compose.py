"""docker-compose.yml and the Dockerfile, checked without a Docker engine (none runs on the
project's machines; docs/scaling.md says what is therefore not run).

- the compose file against the Compose Specification's JSON schema (``tests/data/compose_spec``);
- its shape: the whole platform (db, mqtt, migrate, api, ingest), a scalable ingester, health
  checks, passwords only as secrets or from the environment, every ``QUARTIER_…`` variable a real
  setting, and each service's settings accepted by the production guard;
- the Dockerfile: what it copies exists, the lock's every package has its hash, a non-root user,
  the entry point; its build stage's RUN commands run here (a fresh virtualenv: the pinned
  setuptools with its hash, the wheel built from exactly the files the Dockerfile copies, then
  installed as the runtime stage installs it);
- the entry point script and the health check script, run against a real API.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import venv
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import uvicorn
import yaml
from pydantic import BaseModel

from quartier.api.app import create_app
from quartier.config import Settings
from quartier.services import free_port

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = Path(__file__).parent / "data" / "compose_spec" / "compose-spec.json"
SERVICES = {"db", "mqtt", "migrate", "api", "ingest", "indicators"}


def compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def schema_errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))
    return [str(e) for e in validator.iter_errors(doc)]


# --------------------------------------------------------------------------- compose file


def test_the_compose_file_follows_the_compose_specification() -> None:
    doc = compose()
    assert schema_errors(doc) == []
    # the schema bites: a misspelt key, a wrong type, a bad dependency condition are refused
    for path, value in (
        (("services", "api", "healthcheck", "intervall"), "10s"),
        (("services", "ingest", "ports"), "9100"),
        (("services", "api", "depends_on", "migrate", "condition"), "service_done"),
    ):
        broken = copy.deepcopy(doc)
        node = broken
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        assert schema_errors(broken), path


def test_the_compose_file_runs_the_whole_platform() -> None:
    services = compose()["services"]
    assert set(services) == SERVICES
    for name in ("api", "ingest", "migrate"):
        assert services[name]["build"] == "."
    # migrate runs once; api and ingest start after it succeeded and once the broker is up
    assert services["migrate"]["command"] == ["db", "migrate"]
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "ingest"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["mqtt"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    # the long-running services have health checks
    for name in ("db", "mqtt", "api", "ingest"):
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and not check.get("disable")
    # scalable: `--scale ingest=3` needs no fixed name and no host port
    ingest = services["ingest"]
    assert "container_name" not in ingest and "ports" not in ingest
    assert ingest["environment"]["QUARTIER_INGEST__SHARE_GROUP"]
    assert "QUARTIER_INGEST__CLIENT_ID" not in ingest["environment"]  # one per container
    assert ingest["command"][0] == "ingest"
    # the indicators are refreshed on a schedule by a process of their own, as the API's role
    indicators = services["indicators"]
    assert indicators["command"][:3] == ["indicators", "refresh", "--every"]
    assert float(indicators["command"][3]) > 0
    assert indicators["environment"]["QUARTIER_DATABASE__URL"].startswith(
        "postgresql://quartier_api@"
    )
    deps = indicators["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"


def test_no_password_is_written_in_the_compose_file() -> None:
    doc = compose()
    defined = doc["secrets"]
    for name, secret in defined.items():
        assert secret["file"].startswith("./.quartier/secrets/"), name  # git-ignored
    assert ".quartier" in (ROOT / ".gitignore").read_text()
    for name, service in doc["services"].items():
        env = service.get("environment", {})
        for key, value in env.items():
            if key.endswith("_FILE"):
                secret = value.removeprefix("/run/secrets/")
                assert secret in service.get("secrets", []), (name, key)
                assert secret in defined, (name, key)
            for url in re.findall(r"\w+://[^\s\"]+", str(value)):
                userinfo = url.split("://", 1)[1].rpartition("@")[0]
                if ":" in userinfo:  # a password only from the environment of docker compose
                    assert re.fullmatch(r"[\w.-]+:\$\{[A-Z_]+:\?[^}]+\}", userinfo), (name, key)


def _interpolated(value: str) -> str:
    return re.sub(r"\$\{[A-Z_]+(?::[?-][^}]*)?\}", "s3cr3t-from-env", value)


def _setting_exists(model: type[BaseModel], path: list[str]) -> bool:
    field = model.model_fields.get(path[0].lower())
    if field is None:
        return False
    if len(path) == 1:
        return True
    sub = field.annotation
    return isinstance(sub, type) and issubclass(sub, BaseModel) and _setting_exists(sub, path[1:])


def test_each_service_environment_is_real_settings_the_production_guard_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every QUARTIER_… variable names a setting (a misspelt one would be ignored silently), and
    each Quartier service's environment, with its secrets as files, passes the production guard
    and means what the compose file says."""
    for secret in compose()["secrets"]:
        (tmp_path / secret).write_text(f"{secret}-strong-Xk29fj3\n")
    seen: dict[str, Settings] = {}
    for name in ("migrate", "api", "ingest"):
        env = compose()["services"][name]["environment"]
        for key in env:
            assert key.startswith("QUARTIER_")
            assert _setting_exists(Settings, key.removeprefix("QUARTIER_").split("__")), key
        for key in [k for k in os.environ if k.startswith("QUARTIER_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            value = _interpolated(str(value)).replace("/run/secrets/", f"{tmp_path}/")
            monkeypatch.setenv(key, value)
        settings = Settings(_env_file=None)
        assert settings.environment == "production"
        seen[name] = settings
    owner = seen["migrate"].database
    # migrate: the owner, and the passwords it gives the API's and the ingester's logins
    assert "//postgres:db_owner_password-strong" in (owner.service_url("owner") or "")
    assert "//quartier_api:db_api_password-strong" in (owner.service_url("api") or "")
    assert "//quartier_ingest:db_ingest_password-strong" in (owner.service_url("ingest") or "")
    api = seen["api"].for_service("api").database.url or ""
    assert "//quartier_api:db_api_password-strong" in api
    ingest = seen["ingest"]
    assert "//quartier_ingest:db_ingest_password-strong" in (
        ingest.for_service("ingest").database.url or ""
    )
    assert ingest.ingest.share_group == "quartier-ingest"
    assert (ingest.mqtt.url or "").endswith("@mqtt:1884")  # the ingesters' listener
    assert (ROOT / "deploy/mosquitto/ingest.conf").read_text().count("listener 1884") == 1
    mounts = compose()["services"]["mqtt"]["volumes"]
    assert any(m.startswith("./deploy/mosquitto/ingest.conf:") for m in mounts)


# --------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in dockerfile():
        if instruction[0] == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def test_the_dockerfile_copies_what_exists_and_runs_as_a_user() -> None:
    build, runtime = stages()
    for stage in (build, runtime):
        assert re.fullmatch(r"python:3\.11-slim-\w+( AS \w+)?", stage[0][1])  # Debian slim
    for word, args in dockerfile():
        if word == "COPY" and not args.startswith("--from"):
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    for word, args in dockerfile():  # nothing the image needs is excluded from the context
        if word == "COPY" and not args.startswith("--from"):
            for source in shlex.split(args)[:-1]:
                assert source not in ignored
    # every package from the lock with its hash; the wheel without touching the index
    runs = [args for word, args in runtime if word == "RUN"]
    assert any("--require-hashes --no-deps -r /tmp/requirements.lock" in r for r in runs)
    requirements = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / "requirements.lock").read_text())
    pinned = [r for r in requirements if re.match(r"[A-Za-z0-9][\w.-]*==", r)]
    assert len(pinned) > 50
    assert all("--hash=sha256:" in r for r in pinned)
    # a user without privileges, made in the image and used from there on
    user = [args for word, args in runtime if word == "USER"]
    assert user == ["quartier"]
    assert any("useradd --system" in r and " quartier" in r for r in runs)
    entry = [args for word, args in runtime if word == "ENTRYPOINT"]
    assert entry == ['["quartier-entrypoint"]']
    cmd = json.loads([args for word, args in runtime if word == "CMD"][-1])
    assert cmd[0] == "serve"


def test_the_entry_point_gives_each_ingester_its_own_client_id(tmp_path: Path) -> None:
    fake = tmp_path / "quartier"  # stands in for the installed console script
    fake.write_text('#!/bin/sh\necho "$QUARTIER_INGEST__CLIENT_ID|$*"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    script = str(ROOT / "deploy/docker-entrypoint.sh")

    def run(*args: str, **extra: str) -> str:
        return subprocess.run(
            [script, *args], env=env | extra, capture_output=True, text=True, check=True
        ).stdout.strip()

    assert run("ingest", "--metrics-port", "9100") == (
        f"quartier-ingest-{socket.gethostname()}|ingest --metrics-port 9100"
    )
    assert run("ingest", QUARTIER_INGEST__CLIENT_ID="mine") == "mine|ingest"
    assert run("serve", "--host", "0.0.0.0") == "|serve --host 0.0.0.0"


@pytest.fixture
def build_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv, as the Dockerfile's python:3.11 base has (pip, no setuptools)."""
    path = tmp_path_factory.mktemp("docker-build") / "venv"
    venv.EnvBuilder(with_pip=True).create(path)
    return path


def test_the_dockerfile_build_and_install_steps_run_outside_docker(
    build_venv: Path, tmp_path: Path
) -> None:
    """The build stage's RUN commands as written, in a copy of exactly what it COPYs, then the
    runtime stage's install of the wheel (the lock's packages are the project's own virtualenv's:
    installing them again here would take minutes)."""
    build, runtime = stages()
    context = tmp_path / "src"
    context.mkdir()
    for word, args in build:
        if word == "COPY":
            *sources, dest = shlex.split(args)
            for source in sources:  # Docker's rule: into a directory when dest ends in /
                into_dir = dest.endswith("/") or dest == "."
                target = context / dest / Path(source).name if into_dir else context / dest
                if (ROOT / source).is_dir():
                    ignore = shutil.ignore_patterns("__pycache__")
                    shutil.copytree(ROOT / source, target, ignore=ignore)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / source, target)
    bindir = build_venv / "bin"
    dist = tmp_path / "dist"
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "PIP_NO_CACHE_DIR": "1"}
    env.pop("VIRTUAL_ENV", None)
    for word, args in build:
        if word == "RUN":
            command = args.replace("/dist", str(dist))
            proc = subprocess.run(
                command, shell=True, cwd=context, env=env, capture_output=True, text=True
            )
            assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-2000:])
    (wheel,) = dist.glob("quartier-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "quartier = quartier.cli:app" in zf.read(entry_points).decode()
    for needed in ("quartier/cli/__init__.py", "quartier/resources/mosquitto.conf"):
        assert needed in names, needed
    assert any(n.startswith("quartier/store/migrations/") and n.endswith(".sql") for n in names)
    # the runtime stage's install of the wheel, as written (the lock's packages aside)
    (install,) = [a for w, a in runtime if w == "RUN" and "quartier-*.whl" in a]
    command = install.replace("/tmp/dist/", f"{dist}/").split(" && ")[0]
    proc = subprocess.run(command, shell=True, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (bindir / "quartier").exists()  # the entry point the image's scripts exec
    # ... and that console script starts the CLI where the dependencies are installed
    check = subprocess.run(
        [sys.executable, "-c", "from quartier.cli import app; app(['serve', '--help'])"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0 and "--host" in check.stdout, check.stderr[-2000:]


# --------------------------------------------------------------------------- health checks


def healthcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "deploy/healthcheck.py"), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def api_port(settings: Settings) -> Iterator[int]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)


@pytest.mark.services
def test_the_api_health_check_against_a_real_api(api_port: int) -> None:
    # (a longer timeout than the compose file's: this machine's tests share two cores)
    ok = healthcheck("--timeout", "30", f"http://127.0.0.1:{api_port}/health")
    assert ok.returncode == 0, ok.stderr
    closed = healthcheck(f"http://127.0.0.1:{free_port()}/health")
    assert closed.returncode == 1 and "did not answer" in closed.stderr


def test_the_ingest_health_check_reads_the_connected_metric() -> None:
    body = {"value": b"quartier_ingest_connected 1.0\n"}

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"# HELP x\nquartier_ingest_received_total 5.0\n" + body["value"])

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        assert healthcheck(url, "quartier_ingest_connected").returncode == 0
        body["value"] = b"quartier_ingest_connected 0.0\n"
        down = healthcheck(url, "quartier_ingest_connected")
        assert down.returncode == 1 and "is 0.0" in down.stderr
        assert healthcheck(url, "quartier_ingest_nothing").returncode == 1
    finally:
        server.shutdown()
        server.server_close()
