"""API keys: made, looked up, listed and revoked (table ``api_key``, migration 0033).

A key is ``qk_`` followed by 32 random bytes (URL-safe base64, 43 characters). It is returned
once, by :func:`create`, and stored only as its SHA-256: with 256 bits of randomness a stored
hash cannot be reversed by trying tokens, so a slow password hash would add cost to every
request and no safety (docs/security.md). The first characters (``prefix``) name the key in
lists and the audit trail without revealing it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from quartier.errors import BadRequestError, NotFoundError
from quartier.store.db import Conn

TOKEN_PREFIX = "qk_"
#: characters of the token (after ``qk_``) kept in clear as its name in lists
SHOWN = 8
ADMIN = "admin"
#: every scope, with what it allows; ``admin`` implies all the others
SCOPES: dict[str, str] = {
    "indicators:write": "record indicator values (POST /indicators/{id}/values)",
    "observations:write": "write observations",
    "entities:write": "create or change SensorThings entities (Things, Datastreams, …)",
    "coverage:import": "import coverage inputs (households, offers, measurements)",
    "personal:read": "read raw speed tests and signal measurements (personal data)",
    ADMIN: "everything above",
}


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes

    def state(self, now: datetime) -> str:
        """``active``, ``revoked`` or ``expired``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


_COLUMNS = "id, name, prefix, scopes, created_at, created_by, expires_at, revoked_at, last_used_at"


def _key(row: Any) -> ApiKey:
    values = list(row.values()) if isinstance(row, dict) else list(row)
    values[3] = tuple(values[3])
    return ApiKey(*values)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token() -> str:
    """A fresh key: ``qk_`` and 32 random bytes."""
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes, deduplicated in order; :class:`BadRequestError` naming unknown ones."""
    chosen = tuple(dict.fromkeys(s.strip() for s in scopes if s.strip()))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown or not chosen:
        raise BadRequestError(
            (f"unknown scope(s) {', '.join(unknown)}" if unknown else "no scope given")
            + f"; valid scopes: {', '.join(SCOPES)}"
        )
    return chosen


def create(
    conn: Conn,
    name: str,
    scopes: Iterable[str],
    *,
    created_by: str,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its token (the only time the token exists outside the client)."""
    chosen = check_scopes(scopes)
    if not name.strip():
        raise BadRequestError("an API key needs a name (who or what uses it)")
    if expires_at is not None and expires_at.tzinfo is None:
        raise BadRequestError("the expiry needs a time zone (e.g. 2027-01-01T00:00Z)")
    token = new_token()
    row = conn.execute(
        f"""insert into api_key (name, prefix, token_sha256, scopes, created_by, expires_at)
            values (%s, %s, %s, %s, %s, %s) returning {_COLUMNS}""",
        (name.strip(), token[: len(TOKEN_PREFIX) + SHOWN], token_hash(token), list(chosen),
         created_by, expires_at),
    ).fetchone()  # fmt: skip
    assert row is not None
    return _key(row), token


def lookup(conn: Conn, token: str) -> ApiKey | None:
    """The key whose token this is, whatever its state (None: no such key)."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = conn.execute(
        f"select {_COLUMNS} from api_key where token_sha256 = %s", (token_hash(token),)
    ).fetchone()
    return None if row is None else _key(row)


def touch(conn: Conn, key_id: int) -> None:
    """Note that the key was used (at most once a minute, to keep reads cheap)."""
    conn.execute(
        """update api_key set last_used_at = now()
           where id = %s
             and (last_used_at is null or last_used_at < now() - interval '1 minute')""",
        (key_id,),
    )


def list_keys(conn: Conn) -> list[ApiKey]:
    return [_key(r) for r in conn.execute(f"select {_COLUMNS} from api_key order by id")]


def find(conn: Conn, ref: str) -> ApiKey:
    """A key by id, prefix (``qk_…``) or name; :class:`NotFoundError` or, for a name several
    keys share, :class:`BadRequestError`."""
    if ref.isdigit():
        rows = conn.execute(f"select {_COLUMNS} from api_key where id = %s", (int(ref),))
    elif ref.startswith(TOKEN_PREFIX):
        rows = conn.execute(f"select {_COLUMNS} from api_key where prefix = %s", (ref,))
    else:
        rows = conn.execute(f"select {_COLUMNS} from api_key where name = %s", (ref,))
    found = [_key(r) for r in rows]
    if not found:
        raise NotFoundError(f"no API key {ref!r}; `quartier keys list` shows them")
    if len(found) > 1:
        ids = ", ".join(str(k.id) for k in found)
        raise BadRequestError(f"{len(found)} API keys are named {ref!r} (ids {ids}); give the id")
    return found[0]


def revoke(conn: Conn, ref: str, *, revoked_by: str) -> ApiKey:
    """Revoke a key (kept, for the audit trail); revoking a revoked key changes nothing."""
    key = find(conn, ref)
    row = conn.execute(
        f"""update api_key set revoked_at = coalesce(revoked_at, %s),
                               revoked_by = coalesce(revoked_by, %s)
            where id = %s returning {_COLUMNS}""",
        (datetime.now(UTC), revoked_by, key.id),
    ).fetchone()
    assert row is not None
    return _key(row)
