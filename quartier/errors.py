"""Quartier's one error hierarchy. Every part raises these; the API maps them to HTTP in one table
(``quartier.api.errors``) and the CLI prints their message as one line, without a stack trace,
with the exit status of its table (``quartier.cli.common.EXIT_CODES``; 1 unless it says otherwise).

QuartierError
├── ConfigError            a setting is missing or invalid
├── ServiceError           a local service (PostgreSQL, Mosquitto) cannot be installed or started
├── UnreachableError       a server Quartier needs does not answer           → CLI exit 2, 503
│   ├── DatabaseUnreachableError   PostgreSQL
│   └── BrokerUnreachableError     the MQTT broker
├── MigrationError         a schema migration failed
│   └── UnsupportedVersionError  the server's TimescaleDB is older than the features used
├── DecodeError            a payload cannot be decoded or validated (ingest; kept as a reject)
├── NotFoundError          a requested entity does not exist            → 404
└── BadRequestError        a request parameter is invalid               → 400
"""

from __future__ import annotations


class QuartierError(Exception):
    """Base of every error Quartier raises on purpose; its message is meant for the user."""


class ConfigError(QuartierError):
    """A setting is missing or invalid; the message says which and how to fix it."""


class ServiceError(QuartierError):
    """A local service cannot be installed, started or stopped."""


class UnreachableError(QuartierError):
    """A server Quartier needs does not answer. The message names it by ``host:port`` (never
    with a password) and says how to fix it; ``address`` is that ``host:port``."""

    def __init__(self, message: str, address: str) -> None:
        super().__init__(message)
        self.address = address


class DatabaseUnreachableError(UnreachableError):
    """PostgreSQL does not answer (not running, wrong address, refused the login)."""


class BrokerUnreachableError(UnreachableError):
    """The MQTT broker does not answer."""


class MigrationError(QuartierError):
    """A schema migration failed; the message names the file."""


class UnsupportedVersionError(MigrationError):
    """The database server (e.g. its TimescaleDB) is older than the features Quartier uses; the
    message names the version found, the version needed and what to do."""


class DecodeError(QuartierError):
    """A payload cannot be decoded or fails validation. ``reason`` is a short machine key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class NotFoundError(QuartierError):
    """The requested entity does not exist."""


class BadRequestError(QuartierError):
    """A request parameter is invalid; the message says which and why."""


class NotImplementedQueryError(QuartierError):
    """A query uses a valid construct of the standard that Quartier does not implement (yet); the
    message names it. Meant to map to 501 Not Implemented."""
