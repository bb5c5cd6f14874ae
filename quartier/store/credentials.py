"""Device credentials (``device_credential``, migration 0032): a salted hash per account, made
and checked here; the password itself is never stored. ``quartier devices`` writes them, the HTTP
ingest checks them (HTTP Basic)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from quartier.errors import BadRequestError, NotFoundError
from quartier.store.db import Conn

#: PBKDF2-HMAC-SHA256 iterations: about 30 ms a check here; a push every few minutes per
#: device costs little, a guess costs the same.
ITERATIONS = 100_000
_SCHEME = "pbkdf2_sha256"


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    """``pbkdf2_sha256$iterations$salt$hash`` (base64)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"{_SCHEME}${iterations}${b64(salt).decode()}${b64(digest).decode()}"


@lru_cache(maxsize=4096)
def _derive(password_sha256: bytes, password: str, salt: bytes, iterations: int) -> bytes:
    del password_sha256  # part of the cache key only
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time compare). A device's repeated
    pushes with the same password and stored hash are derived once (in-process cache keyed by
    both, so a rotated password is checked afresh)."""
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return False
        derived = _derive(
            hashlib.sha256(password.encode()).digest(),
            password,
            base64.b64decode(salt),
            int(iterations),
        )
        return hmac.compare_digest(derived, base64.b64decode(digest))
    except ValueError:
        return False


@dataclass(frozen=True)
class Credential:
    username: str
    network: str
    device: str
    kind: str
    password_hash: str
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


_COLUMNS = "username, network, device, kind, password_hash, created_at, rotated_at, revoked_at"


def _credential(row: object) -> Credential:
    values = list(row.values()) if isinstance(row, dict) else list(row)  # type: ignore[call-overload]
    return Credential(*values)


def add(conn: Conn, username: str, network: str, device: str, kind: str, password: str) -> None:
    """A new credential (in the caller's transaction); one that exists is a BadRequestError."""
    row = conn.execute(
        "insert into device_credential (username, network, device, kind, password_hash)"
        " values (%s, %s, %s, %s, %s) on conflict do nothing returning username",
        (username, network, device, kind, hash_password(password)),
    ).fetchone()
    if row is None:
        raise BadRequestError(
            f"{username} has credentials already: `quartier devices rotate {network} {device}` "
            "issues a new password"
        )


def get(conn: Conn, username: str) -> Credential | None:
    row = conn.execute(
        f"select {_COLUMNS} from device_credential where username = %s", (username,)
    ).fetchone()
    return None if row is None else _credential(row)


def find(conn: Conn, network: str, device: str) -> Credential | None:
    row = conn.execute(
        f"select {_COLUMNS} from device_credential where network = %s and device = %s",
        (network, device),
    ).fetchone()
    return None if row is None else _credential(row)


def list_all(conn: Conn, network: str | None = None) -> list[Credential]:
    rows = conn.execute(
        f"select {_COLUMNS} from device_credential"
        " where %(network)s::text is null or network = %(network)s order by network, device",
        {"network": network},
    ).fetchall()
    return [_credential(r) for r in rows]


def set_password(conn: Conn, username: str, password: str) -> None:
    """A new password (and active again if it was revoked)."""
    row = conn.execute(
        "update device_credential set password_hash = %s, rotated_at = now(), revoked_at = null"
        " where username = %s returning username",
        (hash_password(password), username),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"{username} has no credentials: `quartier devices add` first")


def revoke(conn: Conn, username: str) -> None:
    row = conn.execute(
        "update device_credential set revoked_at = coalesce(revoked_at, now())"
        " where username = %s returning username",
        (username,),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"{username} has no credentials")
