"""The one way commands reach PostgreSQL and the MQTT broker: a server that does not answer is
a :class:`~quartier.errors.UnreachableError` naming it (host:port, never a password) and the fix,
instead of a driver's traceback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from quartier.config import Settings, parse_mqtt_url
from quartier.errors import BrokerUnreachableError, DatabaseUnreachableError
from quartier.store.db import Conn

#: seconds to wait for a server that does not answer at all (a closed port answers at once)
CONNECT_TIMEOUT_S = 5
DATABASE_FIX = (
    "start the local servers with `quartier services up`, or check QUARTIER_DATABASE__URL"
)
BROKER_FIX = "start the local servers with `quartier services up`, or check QUARTIER_MQTT__URL"


def database_address(url: str) -> str:
    """``host:port`` of a PostgreSQL URL or conninfo (the libpq defaults where not given)."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the configured server"
    host = str(info.get("host") or info.get("hostaddr") or "localhost")
    return f"{host}:{info.get('port') or 5432}"


def _reason(exc: BaseException) -> str:
    """The driver's reason in a few words: the end of the first line of its message."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first.rsplit(": ", 1)[-1].strip() or type(exc).__name__


def _database_unreachable(url: str, exc: BaseException) -> DatabaseUnreachableError:
    address = database_address(url)
    return DatabaseUnreachableError(
        f"cannot reach the database at {address} ({_reason(exc)}): {DATABASE_FIX}", address
    )


def database_error(
    exc: BaseException, settings: Settings | None
) -> DatabaseUnreachableError | None:
    """The unreachable-database error an exception from the driver means, or None if it means
    something else (a connection failure has no SQLSTATE or one of class 08)."""
    if settings is None or not settings.database.url:
        return None
    from psycopg_pool import PoolTimeout

    if isinstance(exc, PoolTimeout) or (
        isinstance(exc, psycopg.OperationalError)
        and (exc.sqlstate is None or exc.sqlstate.startswith("08"))
    ):
        return _database_unreachable(settings.database.url, exc)
    return None


@contextmanager
def connect(
    settings: Settings, *, autocommit: bool = False, application_name: str | None = None
) -> Iterator[Conn]:
    """A connection to the configured database, closed (and committed unless an error left
    it) at the end of the block; ``application_name`` names it in ``pg_stat_activity``."""
    url = settings.require_database_url()
    named: dict[str, Any] = (
        {} if application_name is None else {"application_name": application_name}
    )
    try:
        conn = psycopg.connect(
            url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S, **named
        )
    except psycopg.OperationalError as exc:
        raise _database_unreachable(url, exc) from None
    with conn:
        yield conn


def database_url(settings: Settings) -> str:
    """The database URL, once the server has answered; for parts that connect by themselves."""
    with connect(settings, autocommit=True):
        pass
    return settings.require_database_url()


def broker_url(settings: Settings) -> str:
    """The MQTT URL, once the broker has accepted a TCP connection."""
    url = settings.require_mqtt_url()
    host, port, *_ = parse_mqtt_url(url)
    address = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise BrokerUnreachableError(
            f"cannot reach the MQTT broker at {address} ({reason}): {BROKER_FIX}", address
        ) from None
    return url
