"""Least privilege in the database (issue #12 item 4), on the real test cluster: the roles that
``migrate()`` creates, what each may and may not do, the services working with their own
logins, and the settings that keep default passwords out of production."""

from __future__ import annotations

import secrets
import threading
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import yaml
from fastapi.testclient import TestClient
from psycopg import sql
from pydantic import ValidationError
from test_ingest import publish, wait_for
from test_writer_fallback import SECRET, result_tuple, sample_batches, stored
from typer.testing import CliRunner

from quartier.api.app import create_app
from quartier.cli import app as cli_app
from quartier.config import Settings
from quartier.geo.io import import_districts
from quartier.ingest.mqtt import Ingester
from quartier.ingest.writer import BatchWriter
from quartier.pseudonym import Pseudonymizer
from quartier.store import api_keys, roles
from quartier.store.migrate import migrate

pytestmark = pytest.mark.services
REPO = Path(__file__).resolve().parents[1]
DENIED = psycopg.errors.InsufficientPrivilege


@pytest.fixture
def passwords(service_urls: Any) -> dict[str, str]:
    """Logins for quartier_api and quartier_ingest on the test cluster (roles are cluster-wide;
    the conftest's template migration created them). Set for each test: other tests (here and
    in other files) give these roles other passwords."""
    chosen = {role: secrets.token_urlsafe(16) for role in (roles.API, roles.INGEST)}
    with psycopg.connect(service_urls.database_url, autocommit=True) as conn:
        for role, password in chosen.items():
            roles.set_login(conn, role, role, password)
    return chosen


def as_role(db_url: str, role: str, passwords: dict[str, str]) -> str:
    return psycopg.conninfo.make_conninfo(db_url, user=role, password=passwords[role])


def test_migrate_creates_the_three_roles_without_superpowers(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "select rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls from pg_roles"
            " where rolname = any(%s) order by 1",
            (list(roles.ROLES),),
        ).fetchall()
        assert [r[0] for r in rows] == sorted(roles.ROLES)
        assert all(r[1:] == (False, False, False, False) for r in rows)
        owners: dict[str, str] = dict(
            conn.execute(
                "select relname, relowner::regrole::text from pg_class where relname = any(%s)",
                (["observation", "api_key", "audit_event", "thing"],),
            ).fetchall()
        )
        assert set(owners.values()) == {roles.OWNER}


def test_the_api_role_reads_but_cannot_write_observations_or_drop_tables(
    db_url: str, passwords: dict[str, str]
) -> None:
    with psycopg.connect(as_role(db_url, roles.API, passwords), autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone() == (roles.API,)
        conn.execute("select count(*) from thing, datastream, observation")  # open data
        for statement in (
            "insert into observation (datastream_id, phenomenon_time, result)"
            " values (1, now(), 1.0)",
            "delete from thing",
            "update datastream set name = 'x'",
            "drop table thing",
            "drop table observation",
            "truncate indicator_value",
            "select * from audit_event",  # may add audit rows, not read them
            "create table intruder (x int)",
            "select quartier_ensure_observation_partitions(now(), now() + interval '40 days')",
        ):
            with pytest.raises(DENIED):
                conn.execute(statement)
        # the few writes it makes
        conn.execute(
            "insert into audit_event (actor, action) values ('test', 'api role may audit')"
        )
    with psycopg.connect(db_url, autocommit=True) as conn:  # nothing else changed
        assert conn.execute("select to_regclass('intruder')").fetchone() == (None,)
        assert conn.execute("select count(*) from audit_event").fetchone() == (1,)
        assert conn.execute("select to_regclass('thing')").fetchone() is not None


def test_the_ingest_role_cannot_read_api_keys_or_the_audit_trail(
    db_url: str, passwords: dict[str, str]
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        api_keys.create(conn, "secret holder", ["admin"], created_by="test")
    with psycopg.connect(as_role(db_url, roles.INGEST, passwords), autocommit=True) as conn:
        for statement in (
            "select * from api_key",
            "select count(*) from api_key",
            "select * from audit_event",
            "insert into audit_event (actor, action) values ('ingest', 'forged')",
            "select * from indicator_value",
            # (it may delete observations: the SensorThings API's DELETE runs as this login)
            "delete from api_key",
            "drop table observation",
            "select quartier_drop_observation_partitions(now())",
        ):
            with pytest.raises(DENIED):
                conn.execute(statement)


def test_the_ingest_writer_stores_with_its_role_what_the_owner_stores(
    db_url: str, service_urls: Any, template_db: str, passwords: dict[str, str]
) -> None:
    """Every path of the writer (COPY, the staging fallback on a redelivery, registering
    devices, speed tests, rejects, month partitions it has to create) works as quartier_ingest,
    and stores exactly what it stores as the owner."""
    other = f"quartier_t_{uuid.uuid4().hex[:10]}"
    admin = service_urls.database_url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create database {} template {}").format(
                sql.Identifier(other), sql.Identifier(template_db)
            )
        )
    owner_url = psycopg.conninfo.make_conninfo(admin, dbname=other)
    try:
        results = {}
        for url in (owner_url, as_role(db_url, roles.INGEST, passwords)):
            w = BatchWriter(url, auto_register=True, pseudonyms=Pseudonymizer(SECRET))
            try:
                results[url] = [result_tuple(w.write(b)) for b in sample_batches()]
            finally:
                w.close()
        assert len(set(map(tuple, results.values()))) == 1
        as_owner, as_ingest = stored(owner_url), stored(db_url)
        assert as_ingest == as_owner and as_ingest["observation"] and as_ingest["rejects"]
        with psycopg.connect(db_url, autocommit=True) as conn:  # the month's partition was made
            made = conn.execute(
                "select relowner::regrole::text from pg_class where relname = 'observation_p202611'"
            ).fetchone()
            assert made == (roles.OWNER,)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(other))
            )


def test_quartier_ingest_runs_with_its_role(
    settings: Settings, db_url: str, network: str, passwords: dict[str, str]
) -> None:
    """The whole ingester (MQTT in, writer threads, acknowledgements), as ``quartier ingest``
    starts it: settings.for_service("ingest") with the ingest role's URL."""
    own = settings.model_copy(
        update={
            "database": settings.database.model_copy(
                update={"ingest_url": as_role(db_url, roles.INGEST, passwords)}
            )
        }
    ).for_service("ingest")
    assert psycopg.conninfo.conninfo_to_dict(own.require_database_url())["user"] == roles.INGEST
    ing = Ingester(own)
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    try:
        assert ing.connected.wait(10)
        reading = {"time": "2026-10-01T10:00:00Z", "quantity": "pm25", "value": 12.0}
        topic = f"quartier/v1/{network}/air-1/up"
        publish(own, [(topic, orjson.dumps(reading)), (topic, b"{not json")])

        def landed() -> bool:
            with psycopg.connect(db_url) as conn:
                row = conn.execute(
                    "select (select count(*) from observation),"
                    " (select count(*) from ingest_reject)"
                ).fetchone()
            return row == (1, 1)

        wait_for(landed)
    finally:
        ing.stop_event.set()
        thread.join(15)
    assert ing.failed is None and not thread.is_alive()


def test_the_api_serves_and_records_with_its_role(
    db_url: str, service_urls: Any, passwords: dict[str, str]
) -> None:
    """``quartier serve``'s settings (for_service("api")): reads, the lazy indicator refresh
    (writes indicator_current), a keyed write with its audit row, all as quartier_api."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        import_districts(conn)
        key, token = api_keys.create(conn, "kpi", ["indicators:write"], created_by="test")
    settings = Settings(
        _env_file=None,
        database={"url": db_url, "api_url": as_role(db_url, roles.API, passwords)},
        mqtt={"url": service_urls.mqtt_url},
    ).for_service("api")
    assert psycopg.conninfo.conninfo_to_dict(settings.require_database_url())["user"] == roles.API
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1.1/Things").status_code == 200
        assert client.get("/indicators").status_code == 200
        r = client.post(
            "/indicators/ozg_services_online_share/values",
            json={"value": 64.0, "date": "2025-12-31", "source": "OZG-Dashboard"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text
    with psycopg.connect(db_url, autocommit=True) as conn:
        recorded = conn.execute(
            "select count(*) from indicator_value where source = 'OZG-Dashboard'"
        ).fetchone()
        assert recorded == (1,)
        audit = conn.execute("select actor, action from audit_event").fetchall()
        assert audit == [(f"key:{key.id} (kpi)", "POST /indicators/{indicator_id}/values")]
        assert conn.execute("select last_used_at is not null from api_key").fetchone() == (True,)


def _fresh_db(admin: str) -> str:
    name = f"quartier_r_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return name


def test_two_databases_of_one_cluster_migrate_at_once(
    service_urls: Any, passwords: dict[str, str]
) -> None:
    """Roles are the cluster's, grants each database's: two databases migrated at the same time
    both end up with their grants."""
    admin = service_urls.database_url
    names = [_fresh_db(admin), _fresh_db(admin)]
    urls = [psycopg.conninfo.make_conninfo(admin, dbname=n) for n in names]
    errors: list[BaseException] = []

    def run(url: str) -> None:
        try:
            migrate(url)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(u,)) for u in urls]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert errors == []
        for url in urls:
            with psycopg.connect(as_role(url, roles.API, passwords)) as conn:
                assert conn.execute("select count(*) from thing").fetchone() == (0,)
                with pytest.raises(DENIED):
                    conn.execute("select * from audit_event")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for n in names:
                conn.execute(sql.SQL("drop database if exists {} with (force)").format(
                    sql.Identifier(n)
                ))  # fmt: skip


def test_a_role_created_meanwhile_by_another_migration_is_not_an_error(
    service_urls: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ensure_roles runs into a role another database's migration is creating right now (its
    CREATE ROLE waits for the other transaction, then finds the role there): no error."""
    role = f"quartier_t_{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(roles, "ROLES", (role,))
    admin = service_urls.database_url
    found: list[Any] = []
    with psycopg.connect(admin) as first:
        first.execute(sql.SQL("create role {} nologin").format(sql.Identifier(role)))
        with psycopg.connect(db_url, autocommit=True) as second:

            def racing() -> None:
                try:
                    with second.transaction():
                        found.append(roles.ensure_roles(second))
                except BaseException as exc:  # reported below
                    found.append(exc)

            t = threading.Thread(target=racing)
            t.start()
            t.join(1.0)
            assert t.is_alive()  # waiting for the first transaction
            first.commit()
            t.join(30)
    try:
        assert found == [[]]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))


def test_db_migrate_gives_the_configured_logins_their_roles(
    db_url: str, service_urls: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The passwords come from files (Docker secrets); afterwards the roles log in with them."""
    api_pw, ingest_pw = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    (tmp_path / "api").write_text(api_pw + "\n")
    (tmp_path / "ingest").write_text(ingest_pw + "\n")
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    base = f"postgresql://{{}}@{info['host']}:{info['port']}/{info['dbname']}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUARTIER_DATABASE__URL", db_url)
    monkeypatch.setenv("QUARTIER_DATABASE__API_URL", base.format(roles.API))
    monkeypatch.setenv("QUARTIER_DATABASE__API_PASSWORD_FILE", str(tmp_path / "api"))
    monkeypatch.setenv("QUARTIER_DATABASE__INGEST_URL", base.format(roles.INGEST))
    monkeypatch.setenv("QUARTIER_DATABASE__INGEST_PASSWORD_FILE", str(tmp_path / "ingest"))
    r = CliRunner().invoke(cli_app, ["db", "migrate"])
    assert r.exit_code == 0, r.output
    assert f"{roles.API}: login with the configured password" in r.output
    s = Settings()
    for service, role in (("api", roles.API), ("ingest", roles.INGEST)):
        url = s.for_service(service).require_database_url()  # type: ignore[arg-type]
        with psycopg.connect(url) as conn:
            assert conn.execute("select current_user").fetchone() == (role,)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(psycopg.conninfo.make_conninfo(db_url, user=roles.API, password="wrong"))


def test_the_role_password_is_sent_as_a_scram_verifier(service_urls: Any) -> None:
    verifier = roles.scram_verifier("correct horse")
    assert verifier.startswith("SCRAM-SHA-256$4096:") and "correct" not in verifier
    role = f"quartier_t_{uuid.uuid4().hex[:8]}"
    admin = service_urls.database_url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create role {} login password {}").format(
                sql.Identifier(role), sql.Literal(verifier)
            )
        )
    try:
        url = psycopg.conninfo.make_conninfo(admin, user=role, password="correct horse")
        with psycopg.connect(url) as conn:
            assert conn.execute("select current_user").fetchone() == (role,)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


# ------------------------------------------------------------------ settings and secrets
PROD = {"environment": "production", "mqtt": {"url": "mqtt://broker:1883"}}


@pytest.mark.parametrize(
    "database",
    [
        {"url": "postgresql://quartier_owner@db/quartier"},
        {"url": "postgresql://quartier:quartier@db/quartier"},
        {"url": "postgresql://o:Strong-1@db/q", "api_url": "postgresql://quartier_api:@db/q"},
        {"url": "postgresql://o:Strong-1@db/q", "ingest_url": "host=db user=x password=postgres"},
    ],
    ids=["no password", "the old compose default", "empty api password", "ingest default"],
)
def test_production_refuses_empty_and_default_passwords(database: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="password"):
        Settings(_env_file=None, database=database, **PROD)  # type: ignore[arg-type]


def test_production_takes_passwords_from_files(tmp_path: Path) -> None:
    (tmp_path / "owner").write_text("own-Secret-1\n")
    (tmp_path / "api").write_text("api/Secret:2@x\n")
    s = Settings(
        _env_file=None,
        database={
            "url": "postgresql://quartier_owner@db:5432/quartier",
            "password_file": tmp_path / "owner",
            "api_url": "postgresql://quartier_api@db:5432/quartier",
            "api_password_file": tmp_path / "api",
        },
        **PROD,  # type: ignore[arg-type]
    )
    owner = psycopg.conninfo.conninfo_to_dict(s.require_database_url())
    assert (owner["user"], owner["password"]) == ("quartier_owner", "own-Secret-1")
    api = psycopg.conninfo.conninfo_to_dict(s.for_service("api").require_database_url())
    assert (api["user"], api["password"]) == ("quartier_api", "api/Secret:2@x")
    # no ingest URL: the ingester falls back to the owner's login
    ingest = psycopg.conninfo.conninfo_to_dict(s.for_service("ingest").require_database_url())
    assert (ingest["user"], ingest["password"]) == ("quartier_owner", "own-Secret-1")
    (tmp_path / "api").write_text("")
    with pytest.raises(ValidationError, match="api needs its own password"):
        Settings(_env_file=None, database=s.database.model_dump(), **PROD)  # type: ignore[arg-type]


def test_the_cli_says_in_one_line_what_is_wrong_with_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUARTIER_ENVIRONMENT", "production")
    monkeypatch.setenv("QUARTIER_MQTT__URL", "mqtt://broker:1883")
    monkeypatch.setenv("QUARTIER_DATABASE__URL", "postgresql://quartier:quartier@db/quartier")
    r = CliRunner().invoke(cli_app, ["db", "status"])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid settings:"), r.output
    assert "password" in lines[0] and "Traceback" not in r.output
    monkeypatch.setenv("QUARTIER_DATABASE__URL", "postgresql://quartier_owner@db/quartier")
    monkeypatch.setenv("QUARTIER_DATABASE__PASSWORD_FILE", str(tmp_path / "missing"))
    r = CliRunner().invoke(cli_app, ["db", "status"])
    assert r.exit_code == 1
    assert r.output.strip() == (
        f"error: cannot read the password file {tmp_path / 'missing'} (No such file or directory)"
    )


def test_docker_compose_uses_secrets_and_no_default_password() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    db = compose["services"]["db"]
    assert "POSTGRES_PASSWORD" not in db["environment"]
    assert db["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_owner_password"
    assert db["secrets"] == ["db_owner_password"]
    assert compose["secrets"]["db_owner_password"]["file"].startswith("./.quartier/")
    # the API and the ingester log in with their own roles, passwords from their own secrets
    for service, role in (("api", roles.API), ("ingest", roles.INGEST)):
        spec = compose["services"][service]
        env = spec["environment"]
        assert env["QUARTIER_DATABASE__URL"].startswith(f"postgresql://{role}@")
        secret = env["QUARTIER_DATABASE__PASSWORD_FILE"].removeprefix("/run/secrets/")
        assert secret in spec["secrets"] and secret != "db_owner_password"
        assert compose["secrets"][secret]["file"].startswith("./.quartier/secrets/")
    assert ":quartier@" not in text and "PASSWORD: quartier" not in text


def test_serve_and_ingest_refuse_a_wrong_own_login_in_one_line(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before anything starts: the service's own login is tried, and a wrong password or an
    unreadable password file is one line, not a traceback."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUARTIER_DATABASE__URL", db_url)
    monkeypatch.setenv("QUARTIER_MQTT__URL", "mqtt://127.0.0.1:1")
    for command, service in ((["serve"], "API"), (["ingest"], "INGEST")):
        role = roles.API if service == "API" else roles.INGEST
        wrong = psycopg.conninfo.make_conninfo(db_url, user=role, password="wrong")
        monkeypatch.setenv(f"QUARTIER_DATABASE__{service}_URL", wrong)
        r = CliRunner().invoke(cli_app, command)
        assert r.exit_code == 2, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and "password authentication failed" in lines[0], r.output
        assert "wrong" not in r.output
        monkeypatch.setenv(f"QUARTIER_DATABASE__{service}_PASSWORD_FILE", str(tmp_path / "nope"))
        r = CliRunner().invoke(cli_app, command)
        assert r.exit_code == 1 and r.output.strip() == (
            f"error: cannot read the password file {tmp_path / 'nope'} (No such file or directory)"
        )
        monkeypatch.delenv(f"QUARTIER_DATABASE__{service}_URL")
        monkeypatch.delenv(f"QUARTIER_DATABASE__{service}_PASSWORD_FILE")


def test_the_http_push_under_serve_writes_with_the_ingest_login(
    db_url: str, service_urls: Any, passwords: dict[str, str]
) -> None:
    """A Sensor.Community push through ``quartier serve`` (the API's login, which may not insert
    observations) is stored with the ingester's login (database.ingest_url)."""
    from quartier.store import credentials

    with psycopg.connect(db_url, autocommit=True) as conn:
        credentials.add(
            conn, "sensor.community/esp8266-42", "sensor.community", "esp8266-42", "device", "pw"
        )
    settings = Settings(
        _env_file=None,
        database={
            "url": db_url,
            "api_url": as_role(db_url, roles.API, passwords),
            "ingest_url": as_role(db_url, roles.INGEST, passwords),
        },
        mqtt={"url": service_urls.mqtt_url},
        ingest={"http_allow_unknown_devices": False},
    ).for_service("api")
    push = {
        "esp8266id": "42",
        "sensordatavalues": [{"value_type": "SDS_P1", "value": "11.37"}],
    }
    with TestClient(create_app(settings)) as client:
        r = client.post(
            "/ingest/sensor-community",
            content=orjson.dumps(push),
            headers={"X-Sensor": "esp8266-42"},
            auth=("esp8266-42", "pw"),
        )
        assert r.status_code == 201, r.text
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select count(*) from observation").fetchone() == (1,)
        assert conn.execute("select count(*) from ingest_reject").fetchone() == (0,)
