"""Every error Quartier raises derives from the tree in ``quartier/errors.py`` and has the HTTP
status of the API's one table and the exit status of the CLI's one table. A database that is not
migrated is the store's own error: 503 through the API, exit status 3 in the CLI, one line."""

from __future__ import annotations

import ast
import builtins
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg import sql
from typer.testing import CliRunner

from quartier.api import errors as api_errors
from quartier.api.app import create_app
from quartier.cli import app as cli_app
from quartier.cli.common import exit_code, user_errors
from quartier.config import Settings
from quartier.errors import (
    AuthenticationError,
    BadRequestError,
    BrokerUnreachableError,
    ConfigError,
    ConflictError,
    DatabaseUnreachableError,
    DecodeError,
    MigrationError,
    NotFoundError,
    NotImplementedQueryError,
    NotMigratedError,
    PayloadTooLargeError,
    PdfUnavailableError,
    PermissionDeniedError,
    PreconditionFailedError,
    QuartierError,
    QueryTimeoutError,
    RateLimitedError,
    ServiceError,
    UnknownDevice,
    UnreachableError,
    UnsupportedVersionError,
)
from quartier.evaluation.strategy import Problem, StrategyError

PACKAGE = Path(__file__).resolve().parents[1] / "quartier"
NOT_MIGRATED = "database not migrated: run `quartier db migrate`"

#: the intended (HTTP status, CLI exit status) of every class of the tree
INTENDED: dict[type[QuartierError], tuple[int, int]] = {
    QuartierError: (500, 1),
    ConfigError: (500, 1),
    ServiceError: (500, 1),
    UnreachableError: (503, 2),
    DatabaseUnreachableError: (503, 2),
    BrokerUnreachableError: (503, 2),
    NotMigratedError: (503, 3),
    MigrationError: (500, 1),
    UnsupportedVersionError: (500, 1),
    DecodeError: (400, 1),
    NotFoundError: (404, 1),
    UnknownDevice: (404, 1),
    BadRequestError: (400, 1),
    StrategyError: (400, 1),
    ConflictError: (409, 1),
    PreconditionFailedError: (412, 1),
    NotImplementedQueryError: (501, 1),
    PdfUnavailableError: (501, 1),
    PayloadTooLargeError: (413, 1),
    QueryTimeoutError: (503, 1),
    RateLimitedError: (429, 1),
    AuthenticationError: (401, 1),
    PermissionDeniedError: (403, 1),
}
BY_NAME = {cls.__name__: cls for cls in INTENDED}


def make(cls: type[QuartierError]) -> QuartierError:
    """An instance of ``cls`` as the code raises it."""
    if issubclass(cls, UnreachableError):
        return cls("cannot reach the server at h:1 (refused): start it", "h:1")
    if issubclass(cls, DecodeError):
        return cls("invalid_json", "not JSON")
    if issubclass(cls, StrategyError):
        return cls([Problem("s.yaml", 3, 5, "kpis", "expected a list")])
    if issubclass(cls, NotMigratedError):
        return cls()
    if issubclass(cls, RateLimitedError):
        return cls("RateLimitedError: too many requests", 3)
    return cls(f"{cls.__name__}: what went wrong")


def _subclasses(cls: type[QuartierError]) -> set[type[QuartierError]]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= _subclasses(sub)
    return found


def test_every_class_of_the_tree_has_an_intended_mapping() -> None:
    assert _subclasses(QuartierError) <= set(INTENDED)


def test_every_exception_class_of_quartier_derives_from_the_tree() -> None:
    """No module defines a public exception outside the tree: a class whose base is a built-in
    exception is QuartierError itself."""
    builtin = {
        n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)
    }
    outside = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            # a private class (``_Invalid``) is control flow caught inside its module
            if (
                isinstance(node, ast.ClassDef)
                and node.name not in ("QuartierError",)
                and not (node.name.startswith("_"))
            ):
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                if bases & builtin:
                    outside.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert outside == []


def test_the_tree_docstring_names_every_class() -> None:
    import quartier.errors

    doc = quartier.errors.__doc__ or ""
    missing = [cls.__name__ for cls in INTENDED if cls.__name__ not in doc]
    assert missing == []
    # where a line of the tree gives the HTTP status and exit status, they are the intended ones
    for m in re.finditer(r"(\w+Error|UnknownDevice)\b.*?\s(\d{3})\s+(\d)\s*$", doc, re.M):
        assert INTENDED[BY_NAME[m.group(1)]] == (int(m.group(2)), int(m.group(3))), m.group(0)


@pytest.mark.parametrize("cls", INTENDED, ids=lambda c: c.__name__)
def test_status_and_exit_code_of_each_error(cls: type[QuartierError]) -> None:
    status, code = INTENDED[cls]
    assert api_errors.status_of(make(cls)) == status
    assert exit_code(make(cls)) == code


@pytest.fixture(scope="module")
def error_client() -> Iterator[TestClient]:
    app = FastAPI()
    api_errors.install(app)

    @app.get("/raise/{name}")
    def raise_it(name: str) -> None:
        raise make(BY_NAME[name])

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("cls", INTENDED, ids=lambda c: c.__name__)
def test_the_api_answers_each_error_with_its_status(
    cls: type[QuartierError], error_client: TestClient
) -> None:
    r = error_client.get(f"/raise/{cls.__name__}")
    status = INTENDED[cls][0]
    assert r.status_code == status
    assert r.json() == {"code": status, "type": cls.__name__, "message": str(make(cls))}


_cli = typer.Typer()


@_cli.command()
def _raise(name: str) -> None:
    with user_errors():
        raise make(BY_NAME[name])


@pytest.mark.parametrize("cls", INTENDED, ids=lambda c: c.__name__)
def test_the_cli_prints_each_error_in_one_line_with_its_exit_code(
    cls: type[QuartierError],
) -> None:
    r = CliRunner().invoke(_cli, [cls.__name__])
    assert r.exit_code == INTENDED[cls][1], (r.output, r.exception)
    assert isinstance(r.exception, SystemExit)
    lines = r.output.strip().splitlines()
    assert lines[0] == "error: " + str(make(cls)).splitlines()[0]
    # a strategy error lists its problems, one per line; everything else is one line
    assert len(lines) == (2 if cls is StrategyError else 1), r.output
    assert "Traceback" not in r.output


# ------------------------------------------------------------------ a database not migrated
@pytest.fixture
def empty_db_url(service_urls: Any) -> Iterator[str]:
    """A database on the test server that ``quartier db migrate`` never ran on."""
    base: str = service_urls.database_url
    name = f"quartier_e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(base, dbname=name)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


@pytest.mark.services
def test_a_database_not_migrated_through_the_api(empty_db_url: str) -> None:
    settings = Settings(_env_file=None, database={"url": empty_db_url})  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as client:
        for path in ("/v1.1/Things", "/v1.1/Datastreams/Observations/latest?ids=1"):
            r = client.get(path)
            assert r.status_code == 503, (path, r.text)
            assert r.json() == {"code": 503, "type": "NotMigratedError", "message": NOT_MIGRATED}
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["database"] == {"ok": False, "detail": NOT_MIGRATED}


@pytest.mark.services
@pytest.mark.parametrize("command", [["db", "status"], ["db", "maintain"]], ids=" ".join)
def test_a_database_not_migrated_through_the_cli(
    command: list[str], empty_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    monkeypatch.setenv("QUARTIER_DATABASE__URL", empty_db_url)
    r = CliRunner().invoke(cli_app, command)
    assert r.exit_code == 3, (r.output, r.exception)
    assert r.output.strip().splitlines() == ["error: " + NOT_MIGRATED]
