"""One mapping from Quartier's errors to HTTP. Handlers log once; routes don't reshape errors.

Every error body has the same shape: ``{"code": <status>, "type": <kind>, "message": <text>}``,
the message saying what was wrong. No stack trace ever reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from quartier.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
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
    UnreachableError,
)

log = logging.getLogger(__name__)

#: HTTP status per error type (the tree in ``quartier.errors``); the most specific class wins
STATUS: dict[type[QuartierError], int] = {
    QuartierError: 500,
    ConfigError: 500,
    ServiceError: 500,
    UnreachableError: 503,
    NotMigratedError: 503,
    MigrationError: 500,
    DecodeError: 400,
    NotFoundError: 404,
    BadRequestError: 400,
    ConflictError: 409,
    PreconditionFailedError: 412,
    NotImplementedQueryError: 501,
    PdfUnavailableError: 501,
    PayloadTooLargeError: 413,
    QueryTimeoutError: 503,
    RateLimitedError: 429,
    AuthenticationError: 401,
    PermissionDeniedError: 403,
}


def status_of(exc: QuartierError) -> int:
    """The HTTP status of ``exc``: that of the nearest class in :data:`STATUS`."""
    return next(STATUS[t] for t in type(exc).__mro__ if t in STATUS)


#: an error message is cut here: messages quote what was wrong, and a request may carry 60 kB
MESSAGE_MAX = 1000


def _body(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    if len(message) > MESSAGE_MAX:
        message = message[: MESSAGE_MAX - 12] + " … (cut)"
    return JSONResponse(
        {"code": status, "type": kind, "message": message}, status_code=status, headers=headers
    )


#: the error body in the OpenAPI document
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["code", "type", "message"],
    "properties": {
        "code": {"type": "integer", "description": "the HTTP status"},
        "type": {"type": "string", "description": "the kind of error"},
        "message": {"type": "string", "description": "what was wrong"},
    },
    "additionalProperties": False,
}


def document_errors(doc: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document (in place) as the API answers errors: every operation's errors have
    the one body above (a ``default`` response), and FastAPI's 422 ``HTTPValidationError``,
    which is never sent, becomes the 400 that request validation answers."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if responses.pop("422", None) is not None:
                responses.setdefault("400", {"description": "invalid request"})
            for code, response in responses.items():
                if code[:1] in ("4", "5") and not response.get("content"):
                    response["content"] = error
            responses["default"] = {"description": "an error", "content": error}
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return doc


def install(app: FastAPI) -> None:
    make_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_errors(make_openapi())  # FastAPI keeps the document in app.openapi_schema
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(QuartierError)
    async def quartier_error(request: Request, exc: QuartierError) -> JSONResponse:
        status = status_of(exc)
        if status == 501:  # a client asked for what is not implemented: not a server fault
            log.info("%s %s: %s", request.method, request.url.path, exc)
        elif status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        headers = (
            {"WWW-Authenticate": exc.challenge} if isinstance(exc, AuthenticationError) else None
        )
        return _body(status, type(exc).__name__, str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path"))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return _body(400, "BadRequestError", "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no resource at {request.url.path}"
        return _body(exc.status_code, "HTTPError", message)

    @app.exception_handler(psycopg.errors.DataError)
    @app.exception_handler(psycopg.errors.ProgramLimitExceeded)  # class 54: each one by name
    @app.exception_handler(psycopg.errors.StatementTooComplex)
    @app.exception_handler(psycopg.errors.TooManyColumns)
    @app.exception_handler(psycopg.errors.TooManyArguments)
    async def data_error(request: Request, exc: psycopg.Error) -> JSONResponse:
        # PostgreSQL refused a value of the request (a NUL in text, a number out of range …) or
        # its size (5,000 properties in $select): the client's mistake, whichever parameter
        # carried it (tests/test_hostile_api.py)
        log.info("%s %s: a value was refused: %s", request.method, request.url.path, exc)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return _body(400, "BadRequestError", f"a value of the request cannot be used: {reason}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return _body(500, "InternalError", "internal error; the server log has the details")
