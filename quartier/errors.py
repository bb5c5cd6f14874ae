"""Quartier's one error hierarchy. Every part raises these (or subclasses of them); the API maps
them to an HTTP status in one table (``quartier.api.errors.STATUS``) and the CLI prints their
message as one line, without a stack trace, with the exit status of its one table
(``quartier.cli.common.EXIT_CODES``). The most specific class in either table wins.

QuartierError                                                            HTTP  CLI exit
├── ConfigError            a setting is missing or invalid                  500  1
├── ServiceError           a local service (PostgreSQL, Mosquitto) cannot   500  1
│                          be installed or started
├── UnreachableError       a server Quartier needs does not answer          503  2
│   ├── DatabaseUnreachableError   PostgreSQL
│   └── BrokerUnreachableError     the MQTT broker
├── NotMigratedError       the database has no Quartier schema yet          503  3
├── MigrationError         a schema migration failed                        500  1
│   └── UnsupportedVersionError  the server's TimescaleDB is older than
│                                the features used
├── DecodeError            a payload cannot be decoded or validated         400  1
│                          (ingest: kept as a reject; HTTP ingest: 400)
├── NotFoundError          a requested entity does not exist                404  1
│   └── UnknownDevice      a device is not registered and may not register
│                          itself (ingest: kept as a reject)
├── BadRequestError        a request parameter is invalid                   400  1
│   └── StrategyError      a strategy file is invalid, every problem listed
│                          (``quartier.evaluation.strategy``, with its ``Problem`` list)
├── ConflictError          a write conflicts with what is stored (an        409  1
│                          Observation of that Datastream at that time)
├── PreconditionFailedError  an If-Match / If-None-Match does not hold     412  1
│                            (the entity changed since its ETag was read)
├── NotImplementedQueryError  a valid query construct Quartier does not     501  1
│                             implement (yet)
├── PdfUnavailableError    PDF output lacks WeasyPrint or its libraries     501  1
├── PayloadTooLargeError   a request body is above the configured cap      413  1
├── QueryTimeoutError      a query ran longer than the statement timeout   503  1
├── RateLimitedError       a client sent more requests than its rate       429  1
├── AuthenticationError    no valid credentials (missing, unknown,         401  1
│                          revoked or expired key)
└── PermissionDeniedError  valid credentials without the scope needed      403  1
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


class NotMigratedError(QuartierError):
    """The database has no Quartier schema (``quartier db migrate`` has not run on it): the
    store's own error, not a missing entity."""

    def __init__(self, message: str = "database not migrated: run `quartier db migrate`") -> None:
        super().__init__(message)


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


class UnknownDevice(NotFoundError):
    """A device is not in the registry and may not register itself (``auto_register`` off). The
    ingest keeps its message as a reject (``unknown_device``)."""


class BadRequestError(QuartierError):
    """A request parameter is invalid; the message says which and why."""


class ConflictError(QuartierError):
    """A write conflicts with what is stored (SensorThings: an Observation of the Datastream at
    that phenomenonTime exists; the store keeps the first). The message names what exists."""


class PreconditionFailedError(QuartierError):
    """A conditional request's ``If-Match`` or ``If-None-Match`` does not hold for the entity
    as stored (it changed since the client read its ETag); nothing was changed. The message
    names the entity and its current ETag."""


class NotImplementedQueryError(QuartierError):
    """A query uses a valid construct of the standard that Quartier does not implement (yet); the
    message names it. Meant to map to 501 Not Implemented."""


class PdfUnavailableError(QuartierError):
    """PDF output needs WeasyPrint and its system libraries, which are missing; the message says
    what to install."""


class PayloadTooLargeError(QuartierError):
    """A request body is larger than ``api.max_body_bytes``; it was not read further."""


class QueryTimeoutError(QuartierError):
    """A query ran longer than the API's ``statement_timeout`` and was cancelled; the message says
    so (never the SQL)."""


class RateLimitedError(QuartierError):
    """A client address sent more requests than ``api.rate_per_second`` (with ``api.rate_burst``
    in reserve) allows; ``retry_after`` is the whole seconds until its next request is accepted."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthenticationError(QuartierError):
    """A request needs credentials and has none that are valid (missing, unknown, revoked or
    expired). ``challenge`` is the ``WWW-Authenticate`` value the API answers with."""

    def __init__(self, message: str, challenge: str = 'Bearer realm="quartier"') -> None:
        super().__init__(message)
        self.challenge = challenge


class PermissionDeniedError(QuartierError):
    """Valid credentials that lack the scope (permission) an action needs; the message names it."""
