"""API keys and scopes for the routes that write (docs/security.md, "HTTP API: keys, scopes,
audit"). Reads of open data need no key.

A route that writes declares ``dependencies=[require_scope("indicators:write")]``. The key comes
as ``Authorization: Bearer qk_…`` or ``X-API-Key: qk_…`` (both are in the OpenAPI document as
security schemes). No key, or an unknown, revoked or expired one: 401 with ``WWW-Authenticate``
(:class:`~quartier.errors.AuthenticationError`); a valid key without the scope: 403
(:class:`~quartier.errors.PermissionDeniedError`); both in the API's one error format, before the
route runs, so nothing changes. When the route has succeeded, one audit row records the key,
the route, the path, the client address and the scope (``quartier.store.audit``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from quartier.api.deps import Conn
from quartier.errors import AuthenticationError, PermissionDeniedError
from quartier.store import api_keys, audit
from quartier.store.api_keys import ApiKey

log = logging.getLogger(__name__)

_key_header = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKey",
    description="An API key (`qk_…`) made with `quartier keys add`.",
    auto_error=False,
)
_bearer = HTTPBearer(
    scheme_name="Bearer",
    bearerFormat="qk_… API key",
    description="The same API key as `Authorization: Bearer qk_…`.",
    auto_error=False,
)
_HOW = "send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`"
#: ASGI scope key: when a request's scope holds a list here (a request of a ``$batch`` change
#: set, ``quartier.api.sta_batch``), its audit row is appended to it instead of written: the
#: change set writes the rows once it has committed, and drops them when it is rolled back.
AUDIT_PENDING = "quartier.audit_pending"


@dataclass(frozen=True)
class Caller:
    """Who is writing: the key and the client address."""

    key: ApiKey
    origin: str | None

    @property
    def actor(self) -> str:
        return f"key:{self.key.id} ({self.key.name})"


def authenticate(conn: Conn, token: str | None, now: datetime) -> ApiKey:
    """The active key of ``token``; :class:`AuthenticationError` otherwise."""
    if not token:
        raise AuthenticationError(f"this request needs an API key; {_HOW}")
    key = api_keys.lookup(conn, token)
    if key is None:
        raise AuthenticationError("the API key is not valid")
    state = key.state(now)
    if state != "active":
        raise AuthenticationError(f"the API key {key.prefix}… is {state}")
    return key


def require_scope(scope: str) -> Any:
    """The dependency of a route that needs ``scope`` (``admin`` implies every scope)."""
    if scope not in api_keys.SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def caller(
        request: Request,
        conn: Conn,
        x_api_key: Annotated[str | None, Security(_key_header)] = None,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    ) -> Iterator[Caller]:
        origin = request.client.host if request.client else None
        token = x_api_key or (bearer.credentials if bearer is not None else None)
        try:
            key = authenticate(conn, token, datetime.now(UTC))
            if not key.allows(scope):
                raise PermissionDeniedError(
                    f"the API key {key.prefix}… ({key.name}) lacks the scope {scope!r}"
                    f" (it has {', '.join(key.scopes)})"
                )
        except (AuthenticationError, PermissionDeniedError) as exc:
            log.warning("%s %s from %s refused: %s", request.method, request.url.path, origin, exc)
            raise
        api_keys.touch(conn, key.id)
        who = Caller(key, origin)
        yield who
        # reached only when the route succeeded (an error in it is raised at the yield)
        route = request.scope.get("route")
        row: dict[str, Any] = {
            "actor": who.actor,
            "api_key_id": key.id,
            "action": f"{request.method} {getattr(route, 'path', request.url.path)}",
            "target": request.url.path,
            "origin": origin,
            "detail": {"scope": scope},
        }
        pending: list[dict[str, Any]] | None = request.scope.get(AUDIT_PENDING)
        if pending is not None:
            pending.append(row)
        else:
            audit.record(conn, **row)

    # "function": the audit row is written before the response goes out
    return Depends(caller, scope="function")
