"""Pseudonyms for the device keys of crowdsourced sources (DSGVO Art. 25 and Art. 4(5)).

A device key (a phone app's installation id, a citizen sensor's id) is replaced by
``p{key_id}-{hmac}`` before anything is stored: HMAC-SHA256 of the key under a secret only the
operator holds, its first 128 bits in hex. The same device gets the same pseudonym as long as
the secret stays, so distinct contributors can be counted (k-anonymity) and an access or erasure
request can be answered; without the secret nobody can go back from the pseudonym to the key, or
test a guessed key against it.

Rotation: a new secret with a new ``key_id`` (``QUARTIER_PRIVACY__PSEUDONYM_KEY_ID``) gives every
device a new, unrelated pseudonym; rows stored before keep the old one and are not linked to the
new ones (they expire with the raw-data retention). See docs/privacy.md.

A leaf module (settings and errors only), used by the ingest writer, the coverage input writer
and ``quartier privacy``.
"""

from __future__ import annotations

import fnmatch
import hmac
import logging
import os
import re
import secrets
from collections.abc import Sequence
from hashlib import sha256
from pathlib import Path

from quartier.config import Settings
from quartier.errors import ConfigError

log = logging.getLogger(__name__)

#: where development, the demo and the tests keep a generated secret (under the state directory)
SECRET_FILE = "pseudonym-secret"
_MIN_SECRET_BYTES = 16
_PSEUDONYM = re.compile(r"^p([0-9]{1,4})-([0-9a-f]{32})$")
_CACHE_MAX = 100_000


def is_pseudonym(key: str) -> bool:
    """Whether ``key`` has the form of a pseudonym (``p{key_id}-`` and 32 hex digits)."""
    return _PSEUDONYM.match(key) is not None


class Pseudonymizer:
    """Device key → pseudonym under one secret and key id; cheap enough for the ingest hot path
    (one HMAC over a short string per new key, then a dict lookup)."""

    def __init__(self, secret: bytes, key_id: int = 1) -> None:
        if len(secret) < _MIN_SECRET_BYTES:
            raise ConfigError(
                f"the pseudonym secret must be at least {_MIN_SECRET_BYTES} bytes long"
            )
        self.key_id = key_id
        self._prefix = f"p{key_id}-"
        self._mac = hmac.new(secret, digestmod=sha256)
        self._cache: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        found = self._cache.get(key)
        if found is not None:
            return found
        mac = self._mac.copy()
        mac.update(key.encode("utf-8", "surrogatepass"))
        pseudonym = self._prefix + mac.hexdigest()[:32]
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = pseudonym
        return pseudonym


def _read_secret_file(path: Path) -> bytes:
    try:
        raw = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the pseudonym secret file {path} ({exc.strerror or exc})"
        ) from None
    if not raw:
        raise ConfigError(f"the pseudonym secret file {path} is empty")
    return raw


def _generated_secret(state_dir: Path) -> bytes:
    """The development secret under ``state_dir``, created (mode 0600) the first time."""
    path = state_dir / SECRET_FILE
    if path.exists():
        return _read_secret_file(path)
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it just now
        return _read_secret_file(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    log.info("generated a development pseudonym secret in %s", path)
    return _read_secret_file(path)


def secret_from_settings(settings: Settings) -> bytes:
    """The pseudonym secret: ``privacy.pseudonym_secret``, else the file
    ``privacy.pseudonym_secret_file``; in development, else one generated into the state
    directory. Outside development without either: :class:`ConfigError` (ingest of personal
    data refuses to start)."""
    p = settings.privacy
    if p.pseudonym_secret is not None and p.pseudonym_secret.get_secret_value():
        return p.pseudonym_secret.get_secret_value().encode()
    if p.pseudonym_secret_file is not None:
        return _read_secret_file(p.pseudonym_secret_file)
    if settings.environment == "development":
        return _generated_secret(settings.services.state_dir)
    raise ConfigError(
        "no pseudonym secret: set QUARTIER_PRIVACY__PSEUDONYM_SECRET or "
        "QUARTIER_PRIVACY__PSEUDONYM_SECRET_FILE (e.g. `openssl rand -hex 32`) before "
        "ingesting speed tests or signal measurements (docs/privacy.md)"
    )


def pseudonymizer(settings: Settings) -> Pseudonymizer:
    """The :class:`Pseudonymizer` of ``settings`` (see :func:`secret_from_settings`)."""
    return Pseudonymizer(secret_from_settings(settings), settings.privacy.pseudonym_key_id)


def is_personal_network(network: str, patterns: Sequence[str]) -> bool:
    """Whether ``network`` is one whose devices are people's (``privacy.personal_networks``)."""
    return any(fnmatch.fnmatchcase(network, p) for p in patterns)
