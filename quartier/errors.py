"""Quartier's one error hierarchy. Every part raises these; the API maps them to HTTP in one table
(``quartier.api.errors``) and the CLI prints their message without a stack trace.

QuartierError
├── ConfigError            a setting is missing or invalid
├── ServiceError           a local service (PostgreSQL, Mosquitto) cannot be installed or started
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
