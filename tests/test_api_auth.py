"""API keys, scopes and the audit trail (issue #12 item 2), against a real database: a write
without a key or with the wrong scope is refused and changes nothing; the right scope writes
and leaves an audit row; revoked and expired keys are refused; keys are stored only hashed;
``quartier keys`` makes, lists and revokes them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from quartier.api.app import create_app
from quartier.cli import app as cli_app
from quartier.cli.keys import parse_expiry
from quartier.config import Settings
from quartier.errors import BadRequestError
from quartier.geo.io import import_districts
from quartier.store import api_keys, audit

pytestmark = pytest.mark.services

WRITE = "/indicators/ozg_services_online_share/values"
BODY = {"value": 61.5, "date": "2025-12-31", "source": "OZG-Dashboard"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        import_districts(conn)
    with TestClient(create_app(settings)) as c:
        yield c


def make_key(settings: Settings, *scopes: str, **kw: Any) -> tuple[api_keys.ApiKey, str]:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        return api_keys.create(conn, kw.pop("name", "tester"), scopes, created_by="test", **kw)


def counts(settings: Settings) -> tuple[int, int]:
    """Rows of the written table and of the audit trail."""
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        row = conn.execute(
            "select (select count(*) from indicator_value), (select count(*) from audit_event)"
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_a_write_without_a_key_is_401_and_changes_nothing(
    client: TestClient, settings: Settings
) -> None:
    before = counts(settings)
    for headers in (
        {},
        {"Authorization": "Bearer qk_not-a-key"},
        {"X-API-Key": "qk_" + "A" * 43},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": ""},
    ):
        r = client.post(WRITE, json=BODY, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="quartier"'
        body = r.json()
        assert body["code"] == 401 and body["type"] == "AuthenticationError"
        assert "API key" in body["message"]
    assert counts(settings) == before


def test_the_wrong_scope_is_403_and_changes_nothing(client: TestClient, settings: Settings) -> None:
    _, token = make_key(settings, "observations:write", "personal:read")
    before = counts(settings)
    r = client.post(WRITE, json=BODY, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert r.json()["type"] == "PermissionDeniedError"
    assert "indicators:write" in r.json()["message"] and token not in r.text
    assert counts(settings) == before


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
@pytest.mark.parametrize("scope", ["indicators:write", "admin"])
def test_the_right_scope_writes_and_is_audited(
    client: TestClient, settings: Settings, header: str, scope: str
) -> None:
    key, token = make_key(settings, scope, name="Statistikstelle")
    value = f"Bearer {token}" if header == "Authorization" else token
    before = counts(settings)
    t0 = datetime.now(UTC)
    r = client.post(WRITE, json=BODY, headers={header: value})
    assert r.status_code == 201, r.text
    assert counts(settings) == (before[0] + 1, before[1] + 1)
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        (event,) = audit.recent(conn)
        used = api_keys.find(conn, str(key.id)).last_used_at
    assert event.actor == f"key:{key.id} (Statistikstelle)" and event.api_key_id == key.id
    assert event.action == "POST /indicators/{indicator_id}/values"
    assert event.target == WRITE
    assert event.origin == "testclient"  # the client address Starlette's test client reports
    assert t0 - timedelta(seconds=1) <= event.at <= datetime.now(UTC) + timedelta(seconds=1)
    assert event.detail == {"scope": "indicators:write"}
    assert used is not None


def test_a_failed_write_leaves_no_audit_row(client: TestClient, settings: Settings) -> None:
    _, token = make_key(settings, "indicators:write")
    before = counts(settings)
    r = client.post("/indicators/no_such_indicator/values", json=BODY, headers={"X-API-Key": token})
    assert r.status_code == 404
    assert counts(settings) == before


def test_revoked_and_expired_keys_are_401(client: TestClient, settings: Settings) -> None:
    revoked, revoked_token = make_key(settings, "admin", name="old laptop")
    _, expired_token = make_key(
        settings, "admin", expires_at=datetime.now(UTC) - timedelta(minutes=1)
    )
    _, valid_token = make_key(settings, "admin", expires_at=datetime.now(UTC) + timedelta(days=1))
    assert client.post(WRITE, json=BODY, headers={"X-API-Key": revoked_token}).status_code == 201
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        api_keys.revoke(conn, revoked.prefix, revoked_by="test")
    before = counts(settings)
    for token, state in ((revoked_token, "revoked"), (expired_token, "expired")):
        r = client.post(WRITE, json=BODY, headers={"X-API-Key": token})
        assert r.status_code == 401 and state in r.json()["message"], r.text
    assert counts(settings) == before
    assert client.post(WRITE, json=BODY, headers={"X-API-Key": valid_token}).status_code == 201


def test_reads_of_open_data_need_no_key(client: TestClient) -> None:
    for path in ("/indicators", "/v1.1/Things", "/strategy/evaluations", "/health"):
        assert client.get(path).status_code in (200, 503), path  # 503: /health without broker


def test_keys_are_stored_hashed_only(settings: Settings) -> None:
    key, token = make_key(settings, "admin", name="hash check")
    assert token.startswith("qk_") and len(token) == 3 + 43
    assert len({api_keys.new_token() for _ in range(100)}) == 100
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        rows = [r[0] for r in conn.execute("select t::text from api_key t")]
        stored = conn.execute("select token_sha256 from api_key where id = %s", (key.id,))
        digest = stored.fetchone()
    secret_part = token[len(key.prefix) :]
    assert rows and all(token not in r and secret_part not in r for r in rows)
    assert digest is not None and bytes(digest[0]) == hashlib.sha256(token.encode()).digest()
    assert key.prefix == token[:11]  # the shown part: qk_ and 8 characters


def test_the_openapi_document_shows_the_security_schemes(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["ApiKey"]["description"],
    }
    assert schemes["Bearer"]["type"] == "http" and schemes["Bearer"]["scheme"] == "bearer"
    post = doc["paths"]["/indicators/{indicator_id}/values"]["post"]
    # either scheme (two requirement objects: OR), not both at once
    assert sorted(post["security"], key=str) == [{"ApiKey": []}, {"Bearer": []}]
    assert {"401", "403"} <= set(post["responses"])
    assert "security" not in doc["paths"]["/indicators"]["get"]


def test_unknown_scopes_are_refused(settings: Settings) -> None:
    with pytest.raises(BadRequestError, match="valid scopes: indicators:write"):
        make_key(settings, "indicators:writ")
    with pytest.raises(BadRequestError):
        make_key(settings)


def test_parse_expiry() -> None:
    now = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2027-01-31", now) == datetime(2027, 2, 1, tzinfo=UTC)
    assert parse_expiry("2027-01-31T12:00Z", now) == datetime(2027, 1, 31, 12, tzinfo=UTC)
    for bad in ("soon", "2027-01-31T12:00", "2020-01-01T00:00Z"):
        with pytest.raises(BadRequestError):
            parse_expiry(bad, now)


def test_keys_cli_add_list_revoke_and_audit(
    client: TestClient, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    monkeypatch.setenv("QUARTIER_DATABASE__URL", settings.require_database_url())
    monkeypatch.setenv("COLUMNS", "200")  # rich tables unwrapped
    cli = CliRunner()
    r = cli.invoke(
        cli_app,
        ["keys", "add", "--name", "Amt 12", "--scope", "indicators:write,personal:read",
         "--expires", "30d"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("qk_")
    assert client.post(WRITE, json=BODY, headers={"X-API-Key": token}).status_code == 201

    listed = cli.invoke(cli_app, ["keys", "list"])
    assert listed.exit_code == 0 and "Amt 12" in listed.output and "active" in listed.output
    assert token[:11] in listed.output and token not in listed.output

    r = cli.invoke(cli_app, ["keys", "revoke", token[:11]])
    assert r.exit_code == 0, r.output
    assert client.post(WRITE, json=BODY, headers={"X-API-Key": token}).status_code == 401
    again = cli.invoke(cli_app, ["keys", "list"])
    assert "revoked" in again.output

    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        events = audit.recent(conn)
    assert [e.action for e in events] == [
        "keys revoke", "POST /indicators/{indicator_id}/values", "keys add",
    ]  # fmt: skip
    assert events[0].actor == audit.cli_actor() and events[0].origin == audit.cli_origin()
    assert token not in str(events)

    shown = cli.invoke(cli_app, ["keys", "audit"])
    assert shown.exit_code == 0 and "keys revoke" in shown.output

    bad = cli.invoke(cli_app, ["keys", "add", "--name", "x", "--scope", "everything"])
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines() == [
        "error: unknown scope(s) everything; valid scopes: indicators:write, "
        "observations:write, entities:write, coverage:import, personal:read, admin"
    ]
    missing = cli.invoke(cli_app, ["keys", "revoke", "nobody"])
    assert missing.exit_code == 1 and "no API key 'nobody'" in missing.output


def test_db_maintain_expires_old_audit_rows(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = settings.require_database_url()
    with psycopg.connect(url, autocommit=True) as conn:
        for action in ("old", "recent"):
            audit.record(conn, actor="os:test", action=action, origin="cli@test")
        conn.execute("update audit_event set at = now() - interval '400 days' where action = 'old'")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUARTIER_DATABASE__URL", url)
    monkeypatch.setenv("COLUMNS", "200")
    r = CliRunner().invoke(cli_app, ["db", "maintain"])
    assert r.exit_code == 0, r.output
    assert "'audit_rows_expired': 1" in r.output
    with psycopg.connect(url, autocommit=True) as conn:
        assert [e.action for e in audit.recent(conn)] == ["recent"]
        assert audit.expire(conn, timedelta(days=365)) == 0
