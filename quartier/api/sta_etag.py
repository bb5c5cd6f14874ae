"""Entity ETags of the SensorThings API and the conditional requests they allow (RFC 9110,
13.1; OData 4.01 Protocol, 11.4.1.1).

An entity's ETag is weak, ``W/"<32 hex digits>"``: the first 128 bits of the SHA-256 of the
entity's JSON representation as a plain GET without options gives it, with its links written
relative (no host, so the tag is the same behind every proxy). It changes exactly when the
entity's representation changes: a property, a link to another entity (a Datastream's Thing,
an Observation's FeatureOfInterest), or what the server derives into it (a Datastream's
``phenomenonTime`` span grows with its Observations). A PATCH that sets what is stored keeps
the tag. It is weak because one tag stands for every representation of that state (gzip,
``$select``), not for their bytes. No column or migration holds a version: the tag is computed
from the row the request reads anyway (about 20 µs).

Conditions (``If-Match``, ``If-None-Match``; a list of tags or ``*``) are compared by the tags'
values (weak comparison), as OData services do with their weak ETags:

- GET of an entity, by its own URL or by a to-one navigation (``Datastreams(1)/Thing``,
  ``Observations('…')/FeatureOfInterest``, and the deeper paths the resolver turns into one;
  ``api/sensorthings.py``, ``_add_to_one``), with the same tag: ``If-None-Match`` naming its
  tag (or ``*``) is ``304 Not Modified`` unless the request ``$expand``s (the tag does not
  cover the related entities); ``If-Match`` naming another tag is 412.
- PATCH, PUT, DELETE: ``If-Match`` that names no tag the entity has now, or ``If-None-Match``
  that names its tag (or ``*``), is ``412 Precondition Failed`` and nothing changes. The
  check runs in the write's transaction after locking the entity's row (``FOR UPDATE``), so a
  write that commits between the client's GET and its PATCH makes the PATCH fail, and no write
  can slip in between the check and the change.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel

from quartier.errors import BadRequestError, PreconditionFailedError

#: one entity tag of a header's list: ``"…"`` or ``W/"…"`` (RFC 9110, 8.8.3)
_TAG = re.compile(r'\s*((?:W/)?"[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')


def tag_of(model: BaseModel) -> str:
    """The ETag of an entity from its representation shaped with relative links (base ``""``)."""
    body = model.model_dump_json(by_alias=True).encode()
    return f'W/"{hashlib.sha256(body).hexdigest()[:32]}"'


def _parse(name: str, value: str) -> tuple[str, ...]:
    """The tags of an ``If-Match`` / ``If-None-Match`` value (``("*",)`` for ``*``)."""
    value = value.strip()
    if value == "*":
        return ("*",)
    tags = []
    pos = 0
    while pos < len(value):
        m = _TAG.match(value, pos)
        if m is None:
            raise BadRequestError(
                f"{name}: {value[:80]!r} is not a list of entity tags: give the ETag as the"
                ' ETag header sent it (W/"…", quotes included), or *'
            )
        tags.append(m.group(1))
        pos = m.end()
    if not tags:
        raise BadRequestError(f'{name} is empty: give an ETag (W/"…") or *')
    return tuple(tags)


def _opaque(tag: str) -> str:
    return tag.removeprefix("W/")


@dataclass(frozen=True)
class Conditions:
    """The preconditions of one request; ``None`` for a header it does not carry."""

    if_match: tuple[str, ...] | None
    if_none_match: tuple[str, ...] | None

    def _matches(self, tags: tuple[str, ...], current: str) -> bool:
        return "*" in tags or _opaque(current) in {_opaque(t) for t in tags}

    def check(self, current: str, what: str, method: str) -> bool:
        """Whether the request may go on against ``what`` (e.g. ``Thing 7``) whose ETag is
        ``current``: True; False for a GET to answer 304; 412 otherwise."""
        if self.if_match is not None and not self._matches(self.if_match, current):
            raise PreconditionFailedError(
                f"If-Match: {what} has changed since {', '.join(self.if_match)} was read (its"
                f" ETag is now {current}); nothing was changed: read it again and retry"
            )
        if self.if_none_match is not None and self._matches(self.if_none_match, current):
            if method in ("GET", "HEAD"):
                return False
            named = "*" if "*" in self.if_none_match else current
            raise PreconditionFailedError(
                f"If-None-Match: {what} exists with the ETag {current}, which {named} names;"
                f" the {method} was not applied"
            )
        return True


def conditions(headers: Mapping[str, str]) -> Conditions | None:
    """The request's ``If-Match`` and ``If-None-Match`` (a 400 naming a malformed one); None
    when it carries neither."""
    im, inm = headers.get("if-match"), headers.get("if-none-match")
    if im is None and inm is None:
        return None
    return Conditions(
        None if im is None else _parse("If-Match", im),
        None if inm is None else _parse("If-None-Match", inm),
    )


def conditional_get(
    headers: Mapping[str, str], current: str, what: str, whole: bool
) -> Response | None:
    """The ``304 Not Modified`` a GET of an entity answers (None: answer in full); 412 when its
    ``If-Match`` does not hold. ``whole``: the response holds only this entity (no
    ``$expand``), so a matching ``If-None-Match`` may be answered 304."""
    cond = conditions(headers)
    if cond is None:
        return None
    if not cond.check(current, what, "GET") and whole:
        return Response(status_code=304, headers={"ETag": current})
    return None


def tagged(result: Any, response: Response, tag: str) -> Any:
    """``result`` of a route with the ETag header: on ``result`` when it is a response, else on
    the route's ``response`` (which FastAPI merges into the serialized model)."""
    target = result if isinstance(result, Response) else response
    target.headers["ETag"] = tag
    return result
