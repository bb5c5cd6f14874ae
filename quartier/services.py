"""Project-local PostgreSQL (with PostGIS, and TimescaleDB when the server has it) and Mosquitto.

``LocalServices(state_dir).up()`` checks that the servers are installed (``scripts/install-deps.sh``
installs them; this module only names what is missing), creates a PostgreSQL cluster and a
Mosquitto config under the state directory, starts both on free loopback ports and records their
URLs in ``<state_dir>/services.json``. It is idempotent; ``down()`` stops both and leaves no
process behind. Tests use the same code with a temporary state directory.

PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` user, and
Mosquitto drops to the ``mosquitto`` user: their directories are owned by those users. When such a
user cannot reach the state directory (e.g. a checkout under ``/root``), the service's files go to
``/var/tmp/quartier-<hash>/`` instead.

The broker refuses anonymous clients: it loads Mosquitto's dynamic-security plugin with two
accounts, Quartier's admin (manages device accounts, ``quartier devices``) and the ingester; their
passwords are kept in ``<state_dir>/mqtt-accounts.json`` (0600) and the recorded ``mqtt_url``
carries the ingest account. ``allow_anonymous=True`` (development, tests, the demo) runs it open
instead, as Mosquitto does without accounts, and says so. ``tls=True`` adds a TLS listener with
a CA generated under the state directory (:func:`make_tls_files`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

from quartier import mqtt_accounts
from quartier.config import STATE_FILE, ServicesSettings, Settings
from quartier.errors import ServiceError
from quartier.resources import resource

log = logging.getLogger(__name__)

#: Quartier's Mosquitto config, shipped in the package (docker-compose.yml mounts the same file)
MOSQUITTO_CONF = resource("mosquitto.conf")
PG_USER = "quartier"
PG_DATABASE = "quartier"
#: Lines of the deploy config that describe the container; the local config sets its own.
_LOCAL_OVERRIDES = (
    "listener",
    "persistence_location",
    "log_dest",
    "pid_file",
    "user",
    "port",
    "allow_anonymous",
    "use_username_as_clientid",
    "plugin",
    "cafile",
    "certfile",
    "keyfile",
    "tls_version",
    "require_certificate",
)
#: Where Debian and Ubuntu put Mosquitto's dynamic-security plugin.
DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)
ACCOUNTS_FILE = "mqtt-accounts.json"
ANONYMOUS_WARNING = (
    "the local MQTT broker lets anyone publish and subscribe without an account "
    "(development setting QUARTIER_SERVICES__MQTT_ALLOW_ANONYMOUS / allow_anonymous=True); "
    "never expose it beyond this machine"
)


def is_root() -> bool:
    return os.geteuid() == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(port: int) -> bool:
    """True when a server could listen on the port now (servers set SO_REUSEADDR, so a port
    with connections in TIME_WAIT from a previous run is free for them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _run(cmd: list[str], *, user: str | None = None, check: bool = True) -> str:
    if user and is_root():
        cmd = ["runuser", "-u", user, "--", *cmd]
    log.debug("run %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise ServiceError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}"
        )
    return proc.stdout


# --------------------------------------------------------------------------- discovery / install


@dataclass(frozen=True)
class PgInstall:
    version: int
    bindir: Path
    sharedir: Path

    @property
    def has_postgis(self) -> bool:
        return any((self.sharedir / "extension").glob("postgis.control"))

    @property
    def has_timescaledb(self) -> bool:
        return any((self.sharedir / "extension").glob("timescaledb.control"))


def find_postgres() -> PgInstall | None:
    """The newest PostgreSQL server ≥ 15 on this machine (Debian layout first, then pg_config)."""
    found: list[PgInstall] = []
    for initdb in Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        with contextlib.suppress(ValueError):
            version = int(initdb.parent.parent.name)
            found.append(
                PgInstall(version, initdb.parent, Path(f"/usr/share/postgresql/{version}"))
            )
    pg_config = shutil.which("pg_config")
    if not found and pg_config:
        bindir = Path(_run([pg_config, "--bindir"]).strip())
        sharedir = Path(_run([pg_config, "--sharedir"]).strip())
        m = re.search(r"(\d+)", _run([pg_config, "--version"]))
        if m and (bindir / "initdb").exists():
            found.append(PgInstall(int(m.group(1)), bindir, sharedir))
    found = [p for p in found if p.version >= 15]
    return max(found, key=lambda p: (p.has_postgis, p.version)) if found else None


def find_mosquitto() -> Path | None:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if cand and Path(cand).exists():
            return Path(cand)
    return None


def missing_packages() -> list[str]:
    """Debian package names still needed (empty when everything is there)."""
    missing: list[str] = []
    pg = find_postgres()
    if pg is None:
        missing += ["postgresql", "postgresql-postgis"]
    elif not pg.has_postgis:
        missing.append(f"postgresql-{pg.version}-postgis-3")
    if find_mosquitto() is None:
        missing.append("mosquitto")
    return missing


INSTALL_SCRIPT = "scripts/install-deps.sh"


def check_installed() -> None:
    """Raise :class:`ServiceError` (one line: which packages, how to install them) when PostgreSQL,
    PostGIS or Mosquitto is missing. Installing is set-up, not Quartier's job: ``make test`` and
    ``make demo`` run ``scripts/install-deps.sh`` first."""
    missing = missing_packages()
    if missing:
        raise ServiceError(
            f"missing Debian packages: {', '.join(missing)}. Install them with "
            f"`sudo {INSTALL_SCRIPT}` (from the Quartier checkout) or "
            f"`sudo apt-get install {' '.join(missing)}`; or run the stack with Docker "
            "(`docker compose up -d`, then set QUARTIER_DATABASE__URL and QUARTIER_MQTT__URL)."
        )


def find_dynsec_plugin() -> str:
    """The path of Mosquitto's dynamic-security plugin (part of Debian's mosquitto package)."""
    for cand in DYNSEC_PLUGIN_PATHS:
        if Path(cand).exists():
            return cand
    raise ServiceError(
        "Mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so) was not found in "
        f"{', '.join(DYNSEC_PLUGIN_PATHS)}: install Mosquitto 2.0 or newer (`sudo "
        f"{INSTALL_SCRIPT}`), or set QUARTIER_SERVICES__MQTT_ALLOW_ANONYMOUS=true for a "
        "development broker without accounts"
    )


def make_tls_files(directory: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Path:
    """A self-signed CA (``ca.crt``, ``ca.key``) and a server certificate for ``hosts``
    (``server.crt``, ``server.key``) in ``directory``, made with the ``openssl`` command; for
    tests and local brokers only. Returns the CA certificate's path."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServiceError(
            "the `openssl` command is needed for a TLS listener: apt-get install openssl"
        )
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    _run(
        [
            openssl,
            "req",
            "-x509",
            *ec,
            "-keyout",
            str(ca_key),
            "-out",
            str(ca),
            "-days",
            "3650",
            "-subj",
            "/CN=Quartier local test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]
    )
    _run([openssl, "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={hosts[0]}"])
    alt = ",".join(
        f"IP:{h}" if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+:[0-9a-fA-F:]*", h) else f"DNS:{h}"
        for h in hosts
    )
    ext = directory / "server.ext"
    ext.write_text(
        f"subjectAltName={alt}\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    _run(
        [
            openssl,
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(crt),
            "-days",
            "825",
            "-extfile",
            str(ext),
        ]
    )
    for path in (ca_key, key):
        os.chmod(path, 0o600)
    for path in (ca, crt):
        os.chmod(path, 0o644)
    return ca


# --------------------------------------------------------------------------- directories


def _owned_dir(path: Path, user: str | None) -> Path:
    """Create ``path`` for a service running as ``user`` (root only); fall back to /var/tmp
    when that user cannot reach it."""
    path.mkdir(parents=True, exist_ok=True)
    if not (user and is_root()):
        return path
    probe = subprocess.run(
        ["runuser", "-u", user, "--", "test", "-x", str(path.parent)], check=False
    )
    if probe.returncode != 0:
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        path = Path("/var/tmp") / f"quartier-{digest}" / path.name
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o755)
    shutil.chown(path, user, user)
    return path


# --------------------------------------------------------------------------- state


@dataclass
class ServiceState:
    database_url: str
    mqtt_url: str
    pg_port: int
    mqtt_port: int
    pg_datadir: str
    mqtt_dir: str
    timescaledb_available: bool
    #: anonymous clients refused, accounts and ACLs on (False: the development override)
    mqtt_auth: bool = False
    #: the admin account's URL, for ``quartier devices`` (None when ``mqtt_auth`` is off)
    mqtt_admin_url: str | None = None
    #: the local simulator's account (``quartier simulate``: any device's topics)
    mqtt_sim_url: str | None = None
    #: the TLS listener (``tls=True``): its URL with the ingest account, and the CA to trust
    mqtts_url: str | None = None
    mqtts_port: int | None = None
    mqtt_ca_file: str | None = None

    def write(self, state_dir: Path) -> None:
        path = state_dir / STATE_FILE
        path.touch(mode=0o600)
        os.chmod(path, 0o600)  # holds the database password
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, state_dir: Path) -> ServiceState | None:
        path = state_dir / STATE_FILE
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (TypeError, ValueError):
            return None


@dataclass
class ServiceStatus:
    name: str
    running: bool
    url: str | None
    detail: str


class LocalServices:
    """The project-local PostgreSQL cluster and Mosquitto broker under ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        *,
        pg_port: int | None = None,
        mqtt_port: int | None = None,
        fast_unsafe: bool = False,
        durable_broker: bool | None = None,
        allow_anonymous: bool | None = None,
        tls: bool = False,
        tls_port: int | None = None,
    ) -> None:
        self.state_dir = state_dir.resolve()
        #: Development override: no accounts, anyone may publish and subscribe. None: as the
        #: settings say (QUARTIER_SERVICES__MQTT_ALLOW_ANONYMOUS, default off).
        self.allow_anonymous = (
            Settings().services.mqtt_allow_anonymous if allow_anonymous is None else allow_anonymous
        )
        #: A TLS listener as well (on ``tls_port``, or a free one), with a generated CA.
        self.tls = tls
        self.tls_port = tls_port
        self.pg_port = pg_port
        self.mqtt_port = mqtt_port
        #: fsync off: for throwaway test clusters only.
        self.fast_unsafe = fast_unsafe
        #: Mosquitto saves after every change as quartier/resources/mosquitto.conf says (True), or
        #: every 30 s (False: a crash loses up to 30 s of acknowledged messages, but one
        #: connection is not limited by a save per message). Default: durable unless fast_unsafe.
        self.durable_broker = (not fast_unsafe) if durable_broker is None else durable_broker

    @classmethod
    def from_settings(
        cls,
        services: ServicesSettings,
        *,
        durable_broker: bool | None = None,
        allow_anonymous: bool | None = None,
    ) -> LocalServices:
        """``allow_anonymous`` True turns the development override on whatever the settings say
        (the demo); None follows ``services.mqtt_allow_anonymous``."""
        return cls(
            services.state_dir,
            pg_port=services.pg_port,
            mqtt_port=services.mqtt_port,
            durable_broker=durable_broker,
            allow_anonymous=services.mqtt_allow_anonymous or bool(allow_anonymous),
            tls=services.mqtt_tls,
            tls_port=services.mqtt_tls_port,
        )

    # ---------------------------------------------------------------- public
    def up(self) -> ServiceState:
        check_installed()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        old = ServiceState.read(self.state_dir)
        pg = find_postgres()
        assert pg is not None  # check_installed guarantees it
        pg_port, datadir = self._start_postgres(pg, old)
        mqtt_port, tls_port, mqtt_dir = self._start_mosquitto(old)
        password = (Path(datadir).parent / "password").read_text().strip()
        if self.allow_anonymous:
            login = admin_url = sim_url = None
        else:
            accounts, _ = self._accounts()
            login = f"{mqtt_accounts.INGEST_USER}:{quote(accounts['ingest'], safe='')}@"
            admin = f"{mqtt_accounts.ADMIN_USER}:{quote(accounts['admin'], safe='')}@"
            sim = f"{mqtt_accounts.SIM_USER}:{quote(accounts['sim'], safe='')}@"
            admin_url = f"mqtt://{admin}127.0.0.1:{mqtt_port}"
            sim_url = f"mqtt://{sim}127.0.0.1:{mqtt_port}"
        state = ServiceState(
            database_url=f"postgresql://{PG_USER}:{quote(password)}@127.0.0.1:{pg_port}/{PG_DATABASE}",
            mqtt_url=f"mqtt://{login or ''}127.0.0.1:{mqtt_port}",
            pg_port=pg_port,
            mqtt_port=mqtt_port,
            pg_datadir=str(datadir),
            mqtt_dir=str(mqtt_dir),
            timescaledb_available=pg.has_timescaledb,
            mqtt_auth=not self.allow_anonymous,
            mqtt_admin_url=admin_url,
            mqtt_sim_url=sim_url,
            mqtts_url=f"mqtts://{login or ''}127.0.0.1:{tls_port}" if tls_port else None,
            mqtts_port=tls_port,
            mqtt_ca_file=str(Path(mqtt_dir) / "tls" / "ca.crt") if tls_port else None,
        )
        state.write(self.state_dir)
        return state

    def down(self) -> None:
        self.stop_postgres()
        self.stop_mosquitto()

    def stop_postgres(self) -> None:
        """Stop only PostgreSQL (``up()`` starts it again on the same port)."""
        state = ServiceState.read(self.state_dir)
        pg = find_postgres()
        if state is None or pg is None:
            return
        datadir = Path(state.pg_datadir)
        if (datadir / "postmaster.pid").exists():
            _run(
                [str(pg.bindir / "pg_ctl"), "stop", "-D", str(datadir), "-m", "fast", "-w"],
                user="postgres",
                check=False,
            )

    def stop_mosquitto(self) -> None:
        """Stop only Mosquitto, gracefully: it saves its persistent sessions and queues."""
        state = ServiceState.read(self.state_dir)
        if state is not None:
            self._stop_mosquitto(Path(state.mqtt_dir))

    def status(self) -> list[ServiceStatus]:
        state = ServiceState.read(self.state_dir)
        if state is None:
            return [
                ServiceStatus("postgresql", False, None, "not set up"),
                ServiceStatus("mosquitto", False, None, "not set up"),
            ]
        pg_up = port_open(state.pg_port)
        mq_pid = self._mosquitto_pid(Path(state.mqtt_dir))
        return [
            ServiceStatus(
                "postgresql",
                pg_up,
                state.database_url,
                f"data {state.pg_datadir}"
                + (", TimescaleDB available" if state.timescaledb_available else ""),
            ),
            ServiceStatus(
                "mosquitto",
                mq_pid is not None and port_open(state.mqtt_port),
                state.mqtt_url,
                f"dir {state.mqtt_dir}" + (f", pid {mq_pid}" if mq_pid else ""),
            ),
        ]

    # ---------------------------------------------------------------- PostgreSQL
    def _start_postgres(self, pg: PgInstall, old: ServiceState | None) -> tuple[int, Path]:
        root = _owned_dir(self.state_dir / "pg", "postgres")
        datadir = root / "data"
        pwfile = root / "password"
        if not (datadir / "PG_VERSION").exists():
            password = secrets.token_urlsafe(18)
            pwfile.write_text(password + "\n")
            os.chmod(pwfile, 0o600)
            if is_root():
                shutil.chown(pwfile, "postgres", "postgres")
            log.info("initdb %s (PostgreSQL %s)", datadir, pg.version)
            _run(
                [
                    str(pg.bindir / "initdb"),
                    "-D",
                    str(datadir),
                    "-U",
                    PG_USER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ],
                user="postgres",
            )
            conf = [
                "# written by quartier services",
                "listen_addresses = '127.0.0.1'",
                "unix_socket_directories = ''",
                "max_connections = 100",
                "shared_buffers = 256MB",
                "max_wal_size = 2GB",
            ]
            if pg.has_timescaledb:
                conf.append("shared_preload_libraries = 'timescaledb'")
            if self.fast_unsafe:
                conf += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
            with (datadir / "postgresql.conf").open("a") as fh:
                fh.write("\n".join(conf) + "\n")
        port = self._choose_port(self.pg_port, old.pg_port if old else None)
        running = (
            (datadir / "postmaster.pid").exists() and old is not None and port_open(old.pg_port)
        )
        if running and old is not None:
            return old.pg_port, datadir
        logfile = root / "postgresql.log"
        if is_root():
            logfile.touch()
            shutil.chown(logfile, "postgres", "postgres")
        _run(
            [
                str(pg.bindir / "pg_ctl"),
                "start",
                "-D",
                str(datadir),
                "-l",
                str(logfile),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {port}",
            ],
            user="postgres",
        )
        self._wait_port(port, "PostgreSQL", logfile)
        self._create_database(port, pwfile.read_text().strip())
        return port, datadir

    @staticmethod
    def _create_database(port: int, password: str) -> None:
        import psycopg

        url = f"postgresql://{PG_USER}:{quote(password)}@127.0.0.1:{port}/postgres"
        with psycopg.connect(url, autocommit=True) as conn:
            exists = conn.execute(
                "select 1 from pg_database where datname = %s", (PG_DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f"create database {PG_DATABASE}")

    # ---------------------------------------------------------------- Mosquitto
    def _start_mosquitto(self, old: ServiceState | None) -> tuple[int, int | None, Path]:
        binary = find_mosquitto()
        assert binary is not None
        run_as = "mosquitto" if is_root() else None
        root = _owned_dir(self.state_dir / "mqtt", run_as)
        auth = not self.allow_anonymous
        if not auth:
            log.warning(ANONYMOUS_WARNING)
        if old is not None and self._mosquitto_pid(root) and port_open(old.mqtt_port):
            if old.mqtt_auth == auth and (old.mqtts_port is not None) == self.tls:
                return old.mqtt_port, old.mqtts_port, root
            log.info("restarting the local Mosquitto with the requested access settings")
            self._stop_mosquitto(root)
        port = self._choose_port(self.mqtt_port, old.mqtt_port if old else None)
        tls_port = (
            self._choose_port(self.tls_port, old.mqtts_port if old else None) if self.tls else None
        )
        data = root / "data"
        data.mkdir(exist_ok=True)
        if run_as:
            shutil.chown(data, run_as, run_as)
        plugin = None
        if auth:
            plugin = find_dynsec_plugin()
            dynsec = root / "dynamic-security.json"
            accounts, fresh = self._accounts()
            if fresh or not dynsec.exists():  # new passwords need a new broker config
                mqtt_accounts.write_initial_config(
                    dynsec, accounts["admin"], accounts["ingest"], accounts["sim"]
                )
                if run_as:
                    shutil.chown(dynsec, run_as, run_as)
        if tls_port:
            tls_dir = root / "tls"
            if not (tls_dir / "server.crt").exists():
                make_tls_files(tls_dir)
            if run_as:
                shutil.chown(tls_dir / "server.key", run_as, run_as)
        conf = root / "mosquitto.conf"
        conf.write_text(
            self._mosquitto_config(
                root,
                port,
                run_as or "root",
                durable=self.durable_broker,
                plugin=plugin,
                tls_port=tls_port,
            )
        )
        _run([str(binary), "-c", str(conf), "-d"])
        self._wait_port(port, "Mosquitto", root / "mosquitto.log")
        if tls_port:
            self._wait_port(tls_port, "Mosquitto (TLS)", root / "mosquitto.log")
        return port, tls_port, root

    def _accounts(self) -> tuple[dict[str, str], bool]:
        """The admin, ingest and simulator passwords, made once and kept in the state directory
        (0600); and whether they were made now."""
        path = self.state_dir / ACCOUNTS_FILE
        names = ("admin", "ingest", "sim")
        try:
            accounts = json.loads(path.read_text())
            if set(names) <= accounts.keys():
                return {k: str(accounts[k]) for k in names}, False
        except (OSError, ValueError):
            pass
        accounts = {k: mqtt_accounts.new_password() for k in names}
        path.touch(mode=0o600)
        os.chmod(path, 0o600)
        path.write_text(json.dumps(accounts))
        return accounts, True

    @staticmethod
    def _mosquitto_config(
        root: Path,
        port: int,
        user: str,
        *,
        durable: bool = True,
        plugin: str | None = None,
        tls_port: int | None = None,
    ) -> str:
        """The local broker's config: the shared lines of ``quartier/resources/mosquitto.conf``
        and the local ones; ``plugin`` (the dynamic-security plugin) turns accounts on, without
        it anyone may connect (the development override)."""
        if not MOSQUITTO_CONF.is_file():
            raise ServiceError(f"Mosquitto config not found at {MOSQUITTO_CONF}")
        shared = [
            line
            for line in MOSQUITTO_CONF.read_text().splitlines()
            if not line.strip().startswith(_LOCAL_OVERRIDES)
            and (durable or not line.strip().startswith("autosave"))
        ]
        if not durable:
            shared += ["# not durable (tests): a crash loses up to 30 s", "autosave_interval 30"]
        local = [
            f"# generated by quartier services from {MOSQUITTO_CONF}",
            f"pid_file {root / 'mosquitto.pid'}",
            f"persistence_location {root / 'data'}/",
            f"log_dest file {root / 'mosquitto.log'}",
            "log_dest topic",  # $SYS/broker/log/…: quartier sta-mqtt learns subscriptions there
            f"user {user}",
        ]
        if plugin:
            local += [
                "allow_anonymous false",
                f"plugin {plugin}",
                f"plugin_opt_config_file {root / 'dynamic-security.json'}",
            ]
        else:
            local += [
                "# development override: no accounts, no access control",
                "allow_anonymous true",
            ]
        # the client id is the username: nobody takes over another account's session
        same_id = ["use_username_as_clientid true"] if plugin else []
        local += [f"listener {port} 127.0.0.1", *same_id]
        if tls_port:
            tls = root / "tls"
            local += [
                f"listener {tls_port} 127.0.0.1",
                *same_id,
                f"cafile {tls / 'ca.crt'}",
                f"certfile {tls / 'server.crt'}",
                f"keyfile {tls / 'server.key'}",
                "tls_version tlsv1.2",
            ]
        return "\n".join(local + shared) + "\n"

    @staticmethod
    def _mosquitto_pid(root: Path) -> int | None:
        pidfile = root / "mosquitto.pid"
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def _stop_mosquitto(self, root: Path) -> None:
        pid = self._mosquitto_pid(root)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            (root / "mosquitto.pid").unlink()

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _choose_port(wanted: int | None, previous: int | None) -> int:
        if wanted:
            if not port_free(wanted):
                raise ServiceError(f"port {wanted} is already in use")
            return wanted
        if previous and port_free(previous):
            return previous
        return free_port()

    @staticmethod
    def _wait_port(port: int, name: str, logfile: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_open(port):
                return
            time.sleep(0.05)
        tail = logfile.read_text()[-1500:] if logfile.exists() else "(no log)"
        raise ServiceError(f"{name} did not open port {port} within {timeout:.0f} s; log:\n{tail}")
