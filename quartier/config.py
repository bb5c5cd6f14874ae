"""Typed settings for every part of Quartier.

Settings are read from the environment (prefix ``QUARTIER_``, ``__`` for nesting, e.g.
``QUARTIER_DATABASE__URL``) and from a ``.env`` file, created once in an entry point (the CLI or the
app factory) and passed down. Nothing reads the environment at import time.

When no database or broker URL is configured, the entry points fall back to the project-local
services that ``quartier services up`` started (their URLs are kept in ``.quartier/services.json``).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from quartier.errors import ConfigError

STATE_FILE = "services.json"


def redact_url(url: str) -> str:
    """``url`` with its password (URL or ``password=`` conninfo) replaced by ``***``, for
    anything printed or logged."""
    parts = urlsplit(url)
    if parts.password is not None:
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)


def parse_mqtt_url(url: str) -> tuple[str, int, str | None, str | None, bool]:
    """``mqtt://[user:pass@]host[:port]`` (or ``mqtts://``) → host, port, user, password, tls."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not parts.hostname:
        raise ConfigError(
            f"MQTT URL {redact_url(url)!r} must look like mqtt://[user:pass@]host:port"
        )
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigError(f"MQTT URL {redact_url(url)!r} has an invalid port") from None
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.hostname, port, user, password, tls


class DatabaseSettings(BaseModel):
    """PostgreSQL, and the store policies (``partitions_ahead_months`` … ``chunk_interval``),
    which ``quartier db migrate`` applies and the maintenance round keeps (read as one value by
    :class:`quartier.store.policy.StorePolicy`, which validates them). Durations are ISO 8601
    (``QUARTIER_DATABASE__RETENTION=P400D``) or seconds."""

    url: str | None = Field(
        default=None, description="PostgreSQL URL; default: the project-local cluster"
    )
    pool_min: int = 1
    pool_max: int = 8
    #: "auto" uses TimescaleDB when the server has it, "postgres" never does.
    timescaledb: Literal["auto", "postgres"] = "auto"
    #: Native partitions (plain PostgreSQL path) are created this many months ahead.
    partitions_ahead_months: int = 3
    #: Raw observations older than this are dropped (whole months / chunks; at least 31 days).
    retention: timedelta | None = None
    #: Rollups / continuous aggregates older than this are dropped (at least ``retention``).
    rollup_retention: timedelta | None = None
    #: TimescaleDB compresses chunks, plain PostgreSQL compacts months, older than this.
    compress_after: timedelta = timedelta(days=7)
    #: TimescaleDB chunk interval (whole days).
    chunk_interval: timedelta = timedelta(days=7)
    #: Refused messages (``ingest_reject``) older than this are deleted by the maintenance thread
    #: of ``quartier ingest`` (None: kept for ever).
    reject_retention: timedelta | None = timedelta(days=30)
    #: The logins of the services (docs/security.md, "Database: roles and secrets"): ``url`` is
    #: the owner's (``quartier db migrate``, the maintenance round), ``api_url`` the API's (role
    #: ``quartier_api``), ``ingest_url`` the ingester's (``quartier_ingest``); each falls back to
    #: ``url``. A ``*_password_file`` (Docker secrets) holds the password of the matching URL.
    api_url: str | None = None
    ingest_url: str | None = None
    password_file: Path | None = None
    api_password_file: Path | None = None
    ingest_password_file: Path | None = None
    #: Audit rows (``audit_event``) older than this are deleted by ``quartier db maintain``.
    audit_retention: timedelta | None = timedelta(days=365)
    #: Read-only standbys (PostgreSQL streaming replicas) the API reads open data from
    #: (SensorThings reads, aggregates, coverage, OGC, maps; docs/scaling.md), e.g.
    #: ``QUARTIER_DATABASE__REPLICA_URLS='["postgresql://quartier_api@standby1/quartier"]'``;
    #: writes, and every request with an API key, use ``api_url``. ``replica_password_file``
    #: holds the password of those without one in their URL (the API login's: a standby has the
    #: primary's roles). A replica whose replay is more than ``replica_max_lag_seconds`` behind,
    #: or that does not answer, is skipped until a check (every ``replica_check_seconds``)
    #: finds it fit again.
    replica_urls: list[str] = []
    replica_password_file: Path | None = None
    replica_max_lag_seconds: float = Field(default=5.0, gt=0)
    replica_check_seconds: float = Field(default=1.0, gt=0)

    def service_url(self, service: Literal["owner", "api", "ingest"]) -> str | None:
        """The URL ``service`` logs in with (``url`` where its own is not set), with the password
        of its ``*_password_file`` when one is set (:class:`ConfigError` if it cannot be read)."""
        own, file = {
            "owner": (None, self.password_file),
            "api": (self.api_url, self.api_password_file),
            "ingest": (self.ingest_url, self.ingest_password_file),
        }[service]
        url = own or self.url
        if own is None and file is None:  # the owner's URL, with the owner's password file
            file = self.password_file
        if url is None or file is None:
            return url
        return _with_password(url, _read_secret(file))


#: Passwords refused outside development (the examples' and the images' defaults).
WEAK_PASSWORDS = frozenset({"", "quartier", "postgres", "password", "changeme", "secret"})


def _read_secret(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read the password file {path} ({exc.strerror})") from None


def _with_password(url: str, password: str) -> str:
    """``url`` (a postgresql:// URL or a conninfo string) with ``password``."""
    if "://" in url:
        parts = urlsplit(url)
        userinfo = quote(unquote(parts.username or ""), safe="") + ":" + quote(password, safe="")
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc.rpartition('@')[2]}"))
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    return f"{url} password='{escaped}'"


def database_password(url: str) -> str | None:
    """The password in a PostgreSQL URL or conninfo string (None: none given)."""
    if "://" in url:
        password = urlsplit(url).password
        return None if password is None else unquote(password)
    m = re.search(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", url)
    if m is None:
        return None
    value = m.group(1)
    return re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith("'") else value


class MqttSettings(BaseModel):
    url: str | None = Field(default=None, description="mqtt://[user:pass@]host:port")
    keepalive: int = 30
    #: CA certificate(s) (PEM) that sign the broker's certificate, for ``mqtts://`` URLs
    #: (None: the system's CAs). Used by the ingester, the simulator and the health check.
    ca_file: Path | None = None
    #: The broker account Quartier manages device accounts with (``quartier devices``), e.g.
    #: ``mqtts://quartier-admin:…@broker:8883``; default: the local broker's (``services up``).
    admin_url: str | None = None
    #: The account the simulator publishes with (None: ``url``); the local broker's
    #: ``quartier-sim`` account by default (``services up``), see docs/security.md.
    publish_url: str | None = None


class IngestSettings(BaseModel):
    client_id: str = "quartier-ingest"
    #: MQTT 5 shared subscription group, for several ingesters sharing the load. Off by default:
    #: Mosquitto 2.0 does not save shared subscriptions, so after a broker restart messages that
    #: arrive before the ingesters have subscribed again are dropped; a plain subscription is part
    #: of the ingester's saved session (docs/mqtt.md, docs/reliability.md).
    share_group: str | None = None
    batch_max: int = 5000
    #: A batch also ends at this much payload (large batched messages).
    batch_max_bytes: int = 4 * 1024 * 1024
    #: Under light load, wait at most this long after a message arrived for more to batch with it.
    batch_ms: int = 200
    #: Adaptive batching: a batch is cut as soon as a writer is free to take it (after at least
    #: ``batch_min_ms``), so a light trickle is committed at once; while every writer is busy,
    #: messages gather into a larger batch (up to ``batch_max`` / ``batch_ms``). Off: every batch
    #: waits for ``batch_ms`` or ``batch_max`` (the former fixed policy).
    batch_adaptive: bool = True
    #: Adaptive batching: the shortest a batch gathers before it is cut (ms).
    batch_min_ms: float = Field(default=2.0, ge=0)
    #: Messages held in memory before the ingester stops reading from the broker (the
    #: messages of the socket read under way still go in: at most 256 KiB more).
    buffer_max: int = 50_000
    #: ... and at most this many payload bytes (memory stays bounded whatever the messages are).
    buffer_max_bytes: int = 128 * 1024 * 1024
    max_payload_bytes: int = 256 * 1024
    max_future_seconds: int = 600
    #: Register unknown devices (with their Thing, Sensor, Datastreams) instead of rejecting them.
    auto_register: bool = True
    session_expiry_seconds: int = 7 * 24 * 3600
    #: Port for Prometheus metrics of ``quartier ingest`` (None: off unless --metrics-port).
    metrics_port: int | None = None
    #: The Things Stack: device id -> codec name (see docs/decoders.md), for devices whose uplinks
    #: carry neither a decoded_payload nor version_ids of a known model.
    ttn_codecs: dict[str, str] = {}
    #: Writer threads, each with its own PostgreSQL connection: one commits while the next
    #: batch is copied (acknowledgements still go out in order).
    writers: int = 2
    #: Python's thread switch interval in ``quartier ingest`` (ms; None keeps Python's 5 ms).
    #: A shorter one lets the writer threads, which mostly wait on PostgreSQL, take the
    #: interpreter back sooner from the decoding thread; measured here it did not pay off once
    #: there were two writers (docs/benchmarks.md), so it is off by default.
    switch_interval_ms: float | None = None
    #: A refused payload longer than this is kept in ``ingest_reject`` as its first this many
    #: bytes (``payload_truncated``); its ``payload_sha256`` is that of the whole payload.
    reject_payload_max_bytes: int = 64 * 1024
    #: Topic filters the ingester subscribes to (None: all of Quartier's, see docs/mqtt.md), e.g.
    #: ``["v3/app@tenant/devices/+/up"]`` on The Things Stack's own MQTT server.
    topics: list[str] | None = None
    #: ``POST /ingest/sensor-community`` from a device without credentials (``quartier devices
    #: add``) is refused (401) unless this is on (open registration: anyone can push).
    http_allow_unknown_devices: bool = False


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    #: Public base URL used in @iot.selfLink / @iot.nextLink; default: from the request.
    base_url: str | None = None
    default_top: int = 100
    max_top: int = 10_000
    #: Request bodies above this many bytes are refused with 413 (a Content-Length above it at
    #: once; a body without one while it is read, never read whole).
    max_body_bytes: int = 1024 * 1024
    #: PostgreSQL ``statement_timeout`` of the API's pooled connections (seconds; 0: none). A
    #: query that runs longer is cancelled and answered 503 (``QueryTimeoutError``).
    statement_timeout_seconds: float = 10.0
    #: Largest ``$skip`` / offset accepted (400 above it): deep offsets cost a scan each.
    max_skip: int = 1_000_000
    #: Most requests one SensorThings ``$batch`` may hold (413 above it).
    max_batch_requests: int = Field(default=1000, ge=1)
    #: How long the answer of an asynchronous ``$batch`` (``Prefer: respond-async``) is kept for
    #: its status monitor, in seconds from when it was sent (then it is deleted: 404).
    batch_async_keep_seconds: int = Field(default=3600, ge=1)
    #: Requests per second each client address may make on average (0: no limit), and how many
    #: it may make at once above that; more are answered 429 with ``Retry-After``. Behind a
    #: reverse proxy, run uvicorn with ``--forwarded-allow-ips`` so the address is the client's.
    rate_per_second: float = 20.0
    rate_burst: int = 200
    #: The same per API key (``Authorization: Bearer …`` / ``X-API-Key``), counted besides the
    #: address's: a leaked key used from many addresses is limited too (0: no limit per key).
    key_rate_per_second: float = 20.0
    key_rate_burst: int = 200
    #: ``GET /indicators`` serves stored values; older than this (seconds), a read still serves
    #: them and starts a refresh in the background (``quartier indicators refresh --every S``
    #: keeps them fresh: run it with S below this).
    indicators_max_age_seconds: float = Field(default=300.0, gt=0)
    #: Licence of the open data and the attribution it asks for, stated in the SensorThings
    #: service root (``serverSettings``).
    data_licence: str = "dl-de/by-2-0"
    data_licence_url: str = "https://www.govdata.de/dl-de/by-2-0"
    data_attribution: str = "Quartier – offene Daten der Kommune"


class PrivacySettings(BaseModel):
    """Privacy by design (DSGVO Art. 25; docs/privacy.md): pseudonyms, retention, k-anonymity."""

    #: HMAC-SHA256 key for the pseudonyms of crowdsourced device keys (or ``…_FILE``: a file
    #: holding it). Outside development, ingest of personal data refuses to start without one; in
    #: development one is generated into the state directory.
    pseudonym_secret: SecretStr | None = None
    pseudonym_secret_file: Path | None = None
    #: Epoch of the secret, part of every pseudonym (``p{key_id}-…``): raise it with a new secret
    #: to rotate; old and new pseudonyms of a device are then unlinked.
    pseudonym_key_id: int = Field(default=1, ge=1, le=9999)
    #: Raw speed tests, signal measurements and their refused messages older than this are
    #: deleted by the maintenance round (None: kept for ever).
    raw_retention: timedelta | None = timedelta(days=90)
    #: Published cell aggregates only for cells with at least this many distinct devices.
    min_contributors: int = Field(default=5, ge=1)
    #: Networks whose devices are people's (citizen sensors, phones): fnmatch patterns. Their
    #: Things get the 100 m cell centre as Location and no location history.
    personal_networks: list[str] = ["sensor.community", "citizen*", "mobile*", "crowd*"]


class MapSettings(BaseModel):
    """The maps' basemap and source line (``QUARTIER_MAPS__…``). Without ``tile_url`` the maps
    have no basemap and the browser requests nothing from any other server (docs/maps.md)."""

    #: Tile URL template with ``{z}``, ``{x}``, ``{y}`` (https), e.g. basemap.de's WMTS or the
    #: city's own tile server; None: no basemap (a plain background, no third-party request).
    tile_url: str | None = None
    #: Shown with the basemap (plain text, e.g. "© GeoBasis-DE / BKG (2026) CC BY 4.0").
    tile_attribution: str = ""
    tile_max_zoom: int = Field(default=19, ge=1, le=24)
    #: The source and licence line on every map (plain text).
    data_source: str = (
        "Quartier; Bezirke: Stadt Köln (CC BY 4.0); Stadtgrenze: © OpenStreetMap-Mitwirkende (ODbL)"
    )

    @model_validator(mode="after")
    def _check_tile_url(self) -> MapSettings:
        url = self.tile_url
        if url is not None and (
            urlsplit(url).scheme not in ("https", "http")
            or not urlsplit(url).hostname
            or not all(p in url for p in ("{z}", "{x}", "{y}"))
        ):
            raise ValueError("maps.tile_url must be an http(s) URL template with {z}, {x} and {y}")
        return self


class StaSettings(BaseModel):
    """SensorThings over MQTT (OGC 18-088 A.7, A.8; ``quartier sta-mqtt``, docs/mqtt.md)."""

    #: Every process that stores data announces its commits, and ``quartier sta-mqtt`` publishes
    #: the new entities on the broker's ``v1.1/…`` topics and stores Observations published
    #: there. Off: nothing is announced (the writers skip one check per batch).
    mqtt_publish: bool = False
    #: The broker account ``quartier sta-mqtt`` uses (None: ``mqtt.url``), e.g. a
    #: ``quartier devices add-sta publisher NAME`` account (docs/security.md).
    mqtt_url: str | None = None


class ServicesSettings(BaseModel):
    state_dir: Path = Path(".quartier")
    pg_port: int | None = None
    mqtt_port: int | None = None
    #: Development only: the local broker lets anyone in, with no access control (the test
    #: fixtures and the demo use it; a warning says so). Off: accounts, ACLs (docs/security.md).
    mqtt_allow_anonymous: bool = False
    #: Also a TLS listener (``mqtts://``) with a CA generated under the state directory.
    mqtt_tls: bool = False
    mqtt_tls_port: int | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QUARTIER_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    environment: Literal["development", "production"] = "development"
    database: DatabaseSettings = DatabaseSettings()
    mqtt: MqttSettings = MqttSettings()
    ingest: IngestSettings = IngestSettings()
    api: ApiSettings = ApiSettings()
    maps: MapSettings = MapSettings()
    services: ServicesSettings = ServicesSettings()
    privacy: PrivacySettings = PrivacySettings()
    sta: StaSettings = StaSettings()

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production" and (
            self.database.url is None or self.mqtt.url is None
        ):
            raise ValueError(
                "in production QUARTIER_DATABASE__URL and QUARTIER_MQTT__URL must be set explicitly"
            )
        if self.environment == "production":
            for service in ("owner", "api", "ingest"):
                url = self.database.service_url(service)
                if url is not None and (database_password(url) or "") in WEAK_PASSWORDS:
                    raise ValueError(
                        f"in production the database login of the {service} needs its own "
                        "password (empty and default passwords are refused): put it into the "
                        "file named by QUARTIER_DATABASE__"
                        + {"owner": "", "api": "API_", "ingest": "INGEST_"}[service]
                        + "PASSWORD_FILE (a Docker secret) or into its URL"
                    )
        return self

    def for_service(self, service: Literal["api", "ingest"]) -> Settings:
        """These settings with ``database.url`` the login of ``service`` (its own URL and
        password file, else ``url``) and every service's URL resolved, for an entry point that
        runs that service (``quartier serve``: ``api``; ``quartier ingest``: ``ingest``)."""
        db = self.database
        resolved = {k: db.service_url(k) for k in ("owner", "api", "ingest")}
        update = {"url": resolved[service], "api_url": resolved["api"]}
        update |= {"ingest_url": resolved["ingest"], "password_file": None}
        update |= {"api_password_file": None, "ingest_password_file": None}
        return self.model_copy(update={"database": db.model_copy(update=update)})

    def with_local_services(self) -> Settings:
        """Fill missing URLs from the project-local services, if they were started."""
        state_path = self.services.state_dir / STATE_FILE
        if (self.database.url and self.mqtt.url) or not state_path.exists():
            return self
        state = json.loads(state_path.read_text())
        db = self.database.model_copy(
            update={"url": self.database.url or state.get("database_url")}
        )
        mqtt = self.mqtt
        if mqtt.url is None:  # the local broker: its ingest account, and its admin account
            mqtt = mqtt.model_copy(
                update={
                    "url": state.get("mqtt_url"),
                    "admin_url": mqtt.admin_url or state.get("mqtt_admin_url"),
                    "publish_url": mqtt.publish_url or state.get("mqtt_sim_url"),
                }
            )
        return self.model_copy(update={"database": db, "mqtt": mqtt})

    def require_database_url(self) -> str:
        """``database.url``, with the password of ``database.password_file`` if one is set."""
        url = self.database.service_url("owner")
        if not url:
            raise ConfigError(
                "no database configured: run `quartier services up` or set QUARTIER_DATABASE__URL"
            )
        return url

    def require_mqtt_url(self) -> str:
        if not self.mqtt.url:
            raise ConfigError(
                "no MQTT broker configured: run `quartier services up` or set QUARTIER_MQTT__URL"
            )
        return self.mqtt.url
