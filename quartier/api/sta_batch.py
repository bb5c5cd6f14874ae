"""OGC SensorThings API v1.1 batch requests (OGC 18-088, 11.2): ``POST /v1.1/$batch`` with
an OData 4.01 JSON batch body (``application/json``: ``{"requests": [...]}``, as FROST-Server's
JSON batch extension) or an OData 4.0 multipart batch (``multipart/mixed``, change sets as
nested ``multipart/mixed`` parts; parsed by the standard library's ``email`` package).

Every request of a batch is answered by the route that answers it alone: it is dispatched to
the app's router as an ASGI request with the batch's API key (unless it brings its own), so the
same checks, scopes (``api.auth.require_scope``), audit rows, errors and bodies apply. What a
batch adds:

- requests run in the order sent. Whether a failed request (or change set) stops the batch is
  the ``continue-on-error`` preference (``Prefer: continue-on-error[=true|false]``, OData 4.0's
  ``odata.continue-on-error``), with each format's default from OData 4.01: a JSON batch goes
  on unless it says ``continue-on-error=false`` (JSON Format 4.01, 19.4), a multipart batch
  stops at the first failure unless it says ``continue-on-error`` (Protocol 4.01, 11.7.7.3).
  Stopped, the requests after the failure do not run: a JSON batch answers each ``424`` "not
  executed", a multipart batch ends with the failure's part. The preference sent is echoed in
  ``Preference-Applied``;
- a change set (``atomicityGroup``; a nested multipart) is one database transaction on the
  SensorThings writer (``api.sta_write``: ``Held``, ``BatchWriter.begin``/``end``): all its
  requests are stored or none; the request that failed answers its error, the others
  ``424 Failed Dependency``. Its requests' audit rows (``api.auth.AUDIT_PENDING``) are written
  once it has committed, in one transaction, and dropped when it is rolled back. Change sets
  hold writes only (no GET);
- ``dependsOn`` and ``$<id>`` references: a request that depends on (or refers to) a failed
  one answers 424; ``$<id>`` as the first segment of a URL is the entity that request created
  or returned, ``{"@iot.id": "$<id>"}`` in a body its ``@iot.id``, and ``If-Match: $<id>`` /
  ``If-None-Match: $<id>`` its ETag (OData 4.01 Protocol, 11.7.5: "Referencing an ETag");
- conditional requests: ``If-Match`` / ``If-None-Match`` in a request's ``headers`` work as
  they do alone (``api.sta_etag``: 412, or 304 for a GET); the JSON ``if`` member (a condition
  over earlier responses) is refused with a 400 that says so;
- at most ``api.max_batch_requests`` requests (413 above), the body within ``api.max_body_bytes``.

A batch that is not well formed is a 400 naming what is wrong, and nothing of it runs.

Asynchronous batches (``Prefer: respond-async``, OData 4.01 Protocol 11.7.8): checked as
above, then answered ``202 Accepted`` at once with the ``Location`` of a status monitor
(``/v1.1/$batch/status/<id>``) and run by the API process that took them; the monitor answers
202 while the batch runs and the batch's whole answer (``AsyncResult: 200``) once it has run,
from the database (``store.batch_async``, so any API process answers it), to the API key that
sent it only (one is required; another key, or an expired result, is a 404), for
``api.batch_async_keep_seconds`` after it was sent.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import anyio
import psycopg
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.types import Message

from quartier.api.auth import AUDIT_PENDING, authenticate
from quartier.api.deps import BaseUrl, Conn
from quartier.api.errors import status_of
from quartier.api.sensorthings import PREFIX
from quartier.api.sta_write import CHANGESET, Held, app_writer
from quartier.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    QuartierError,
)
from quartier.ingest.writer import BatchWriter
from quartier.store import audit
from quartier.store import batch_async as stored
from quartier.store.api_keys import ApiKey

log = logging.getLogger(__name__)

router = APIRouter(prefix=PREFIX, tags=["SensorThings API v1.1"])
#: the status monitor of asynchronous batches: a GET the app must route before the SensorThings
#: router's catch-all for deeper paths (``api.app`` includes it first)
status_router = APIRouter(prefix=PREFIX, tags=["SensorThings API v1.1"])

METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")
#: Members of a JSON batch request object Quartier reads (OData JSON 4.01, 19.1); ``if`` is
#: refused rather than ignored.
_MEMBERS = {"id", "method", "url", "atomicityGroup", "dependsOn", "headers", "body"}
#: Headers of the batch request each of its requests inherits unless it sets its own.
_INHERITED = ("authorization", "x-api-key", "host", "x-forwarded-for", "x-forwarded-proto")
_REF = re.compile(r"^\$([^/?]+)")
#: OData's system resources: a first segment ``$batch`` … is not a reference to a request
_SYSTEM = {"batch", "crossjoin", "all", "entity", "root", "id", "metadata"}
_NO_BODY = object()
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_FIELD_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")


@dataclass
class Part:
    """One request of a batch, checked."""

    id: str
    method: str
    url: str
    group: str | None = None
    depends: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = _NO_BODY


@dataclass
class Answer:
    """The response to one request of a batch."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = _NO_BODY  # a JSON value, text, or nothing
    #: not run: the batch stopped at an earlier failure (no continue-on-error)
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.status < 400


def _error(status: int, kind: str, message: str) -> Answer:
    return Answer(status, {}, {"code": status, "type": kind, "message": message})


def _not_executed(p: Part, stopped: str) -> Answer:
    answer = _error(
        424,
        "FailedDependency",
        f"request {p.id!r} was not executed: {stopped} failed and the batch stops at the first"
        " failure (send Prefer: continue-on-error to run every request)",
    )
    answer.skipped = True
    return answer


# --------------------------------------------------------------------------- parsing (pure)
#: the two spellings of the preference (OData 4.01, 4.0); the first wins when both are sent
_CONTINUE = ("continue-on-error", "odata.continue-on-error")


def continue_on_error(prefer: str, media: str) -> tuple[bool, str | None]:
    """(whether a failed request lets the batch go on, the ``Preference-Applied`` value or None)
    from a ``Prefer`` header: ``continue-on-error`` (or ``odata.continue-on-error``) alone or
    ``=true`` goes on, ``=false`` stops; without it a JSON batch goes on (OData JSON 4.01,
    19.4) and a multipart batch stops (OData 4.01 Protocol, 11.7.7.3)."""
    found: dict[str, str | None] = {}
    for item in prefer.split(","):
        pref = item.split(";")[0].strip()
        if not pref:
            continue
        name, eq, value = pref.partition("=")
        name = name.strip().lower()
        if name in _CONTINUE and name not in found:
            found[name] = value.strip().strip('"').lower() if eq else None
    for name in _CONTINUE:
        if name not in found:
            continue
        given = found[name]
        if given not in (None, "true", "false"):
            raise BadRequestError(
                f"Prefer: {name}={given}: the value is true or false (or none, meaning true)"
            )
        go_on = given != "false"
        return go_on, f"{name}={'true' if go_on else 'false'}"
    return media == "application/json", None


def parse_json(raw: Any, max_requests: int) -> list[Part]:
    """The requests of a JSON batch body (already decoded), checked (:func:`check`)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("requests"), list):
        raise BadRequestError('a JSON $batch body is an object with a "requests" array')
    unknown = sorted(k for k in raw if k != "requests" and not k.startswith("@"))
    if unknown:
        raise BadRequestError(f"the $batch body has an unknown member {unknown[0]!r}")
    items = raw["requests"]
    _check_count(len(items), max_requests)
    parts = []
    for i, item in enumerate(items):
        where = f"requests[{i}]"
        if not isinstance(item, dict):
            raise BadRequestError(f"{where} must be an object")
        extra = sorted(set(item) - _MEMBERS)
        if extra:
            raise BadRequestError(
                f"{where}: unknown member {extra[0]!r}"
                + (
                    " (conditions over earlier answers are not supported: use dependsOn, or"
                    " If-Match / If-None-Match in its headers)"
                    if extra[0] == "if"
                    else ""
                )
            )
        rid = item.get("id")
        if not isinstance(rid, str) or not rid:
            raise BadRequestError(f'{where}: "id" is required, a non-empty string')
        method = item.get("method")
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise BadRequestError(
                f'{where} ({rid}): "method" must be one of {", ".join(m.lower() for m in METHODS)}'
            )
        url = item.get("url")
        if not isinstance(url, str) or not url:
            raise BadRequestError(f'{where} ({rid}): "url" is required, a non-empty string')
        group = item.get("atomicityGroup")
        if group is not None and (not isinstance(group, str) or not group):
            raise BadRequestError(f'{where} ({rid}): "atomicityGroup" must be a non-empty string')
        depends = item.get("dependsOn", [])
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise BadRequestError(f'{where} ({rid}): "dependsOn" must be an array of ids')
        headers = item.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise BadRequestError(f'{where} ({rid}): "headers" must be an object of strings')
        parts.append(
            Part(
                rid,
                method.upper(),
                url,
                group,
                list(depends),
                {k.lower(): v for k, v in headers.items()},
                item.get("body", _NO_BODY),
            )
        )
    check(parts)
    return parts


def parse_multipart(content_type: str, raw: bytes, max_requests: int) -> list[Part]:
    """The requests of an OData 4.0 multipart batch (``multipart/mixed``; a change set is a
    nested ``multipart/mixed``, its requests named by ``Content-ID``), checked."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    if not msg.is_multipart() or not msg.get_param("boundary"):
        raise BadRequestError("a multipart $batch needs a boundary in its Content-Type")
    if msg.defects:
        raise BadRequestError(f"the multipart $batch body is malformed: {msg.defects[0]!r}")
    parts: list[Part] = []
    counter = 0
    for k, item in enumerate(msg.iter_parts()):
        if item.get_content_type() == "multipart/mixed":
            group = str(item.get_param("boundary") or f"changeset{k}")
            for sub in item.iter_parts():
                counter += 1
                _check_count(counter, max_requests)
                parts.append(_http_part(sub, f"part {k + 1} of the batch", group, counter))
        else:
            counter += 1
            _check_count(counter, max_requests)
            parts.append(_http_part(item, f"part {k + 1} of the batch", None, counter))
    check(parts)
    return parts


def _http_part(item: Any, where: str, group: str | None, n: int) -> Part:
    """One ``application/http`` part: a request line, headers, a body."""
    if item.get_content_type() != "application/http":
        raise BadRequestError(
            f"{where}: Content-Type is {item.get_content_type()}, not application/http"
        )
    decoded = item.get_payload(decode=True)
    payload = decoded if isinstance(decoded, bytes) else b""
    line, _, rest = payload.lstrip(b"\r\n").partition(b"\n")
    words = line.decode("utf-8", "replace").strip().split()
    if len(words) not in (2, 3) or words[0].upper() not in METHODS:
        raise BadRequestError(
            f"{where}: the request line {line[:80].decode('utf-8', 'replace')!r} is not"
            " '<METHOD> <URL> HTTP/1.1'"
        )
    inner = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(rest)
    decoded = inner.get_payload(decode=True)
    body_bytes = decoded if isinstance(decoded, bytes) else b""
    body: Any = _NO_BODY
    if body_bytes.strip():
        try:
            body = json.loads(body_bytes)
        except ValueError:
            raise BadRequestError(f"{where}: the body is not JSON") from None
    content_id = item.get("Content-ID") or inner.get("Content-ID")
    rid = str(content_id).strip() if content_id else f"_{n}"
    headers = {k.lower(): str(v) for k, v in inner.items() if k.lower() != "content-id"}
    return Part(rid, words[0].upper(), words[1], group, [], headers, body)


def _check_count(n: int, max_requests: int) -> None:
    if n > max_requests:
        raise PayloadTooLargeError(
            f"a $batch holds at most {max_requests} requests (api.max_batch_requests); this one"
            " has more: split it"
        )


def check(parts: list[Part]) -> None:
    """The rules across requests: unique ids, change sets adjacent and without GET,
    ``dependsOn`` and ``$<id>`` naming preceding requests, URLs within the service."""
    ids: dict[str, int] = {}
    groups: dict[str, int] = {}  # group -> index of its last request
    for i, p in enumerate(parts):
        where = f"request {p.id!r}"
        for name, value in p.headers.items():
            if not _TOKEN.match(name) or not _FIELD_VALUE.match(value):
                raise BadRequestError(f"{where}: the header {name[:40]!r} is not a valid header")
        if p.id in ids or p.id in groups:
            raise BadRequestError(f"{where}: the id is used twice in the batch")
        if p.group is not None:
            if p.group in ids or p.group == p.id:
                raise BadRequestError(f"{where}: atomicityGroup {p.group!r} is a request id too")
            if p.group in groups and groups[p.group] != i - 1:
                raise BadRequestError(
                    f"{where}: the requests of atomicityGroup {p.group!r} must be adjacent"
                )
            if p.method == "GET":
                raise BadRequestError(
                    f"{where}: a change set (atomicityGroup {p.group!r}) holds writes only;"
                    " send the GET outside it"
                )
        for d in p.depends:
            if d not in ids and d not in groups:
                raise BadRequestError(f"{where}: dependsOn {d!r} names no preceding request")
            if d == p.group:
                raise BadRequestError(f"{where}: dependsOn names its own atomicityGroup")
        for ref in _references(p):
            if ref not in ids:
                raise BadRequestError(f"{where}: ${ref} names no preceding request")
        if _url_ref(p.url) is None:
            _service_path(p.url, where)
        ids[p.id] = i
        if p.group is not None:
            groups[p.group] = i


#: the headers whose value ``$<id>`` stands for the ETag of request ``<id>``'s answer
_ETAG_HEADERS = ("if-match", "if-none-match")


def _references(p: Part) -> list[str]:
    """The request ids ``p`` refers to: ``$<id>`` heading its URL, ``"@iot.id": "$<id>"`` in
    its body, ``$<id>`` as its ``If-Match`` or ``If-None-Match``."""
    refs = []
    ref = _url_ref(p.url)
    if ref is not None:
        refs.append(ref)
    if p.body is not _NO_BODY:
        refs.extend(_body_refs(p.body))
    for name in _ETAG_HEADERS:
        value = p.headers.get(name, "").strip()
        if value.startswith("$"):
            refs.append(value[1:])
    return refs


def _url_ref(url: str) -> str | None:
    """The request id of a URL that starts with ``$<id>``."""
    m = _REF.match(url)
    return m.group(1) if m and m.group(1) not in _SYSTEM else None


def _body_refs(value: Any) -> list[str]:
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "@iot.id" and isinstance(v, str) and v.startswith("$"):
                out.append(v[1:])
            else:
                out.extend(_body_refs(v))
    elif isinstance(value, list):
        for v in value:
            out.extend(_body_refs(v))
    return out


def _service_path(url: str, where: str) -> tuple[str, str]:
    """(path, query) of a request URL: absolute, an absolute path, or relative to the service
    root; it must address the SensorThings service (and not ``$batch`` again)."""
    split = urlsplit(url)
    path = split.path
    if not split.scheme and not path.startswith("/"):
        path = f"{PREFIX}/{path}"
    if not path.startswith(f"{PREFIX}/") and path != PREFIX:
        raise BadRequestError(f"{where}: the URL {url!r} is not within the service at {PREFIX}")
    if path.rstrip("/") == f"{PREFIX}/$batch":
        raise BadRequestError(f"{where}: a batch cannot hold another $batch")
    return path, split.query


# --------------------------------------------------------------------------- running
class Runner:
    """Runs the checked requests of one batch through the app's router, in order."""

    def __init__(self, request: Request, parts: list[Part], go_on: bool = True) -> None:
        self.request = request
        self.parts = parts
        #: whether a failed request or change set lets the rest run (continue-on-error)
        self.go_on = go_on
        self.answers: dict[str, Answer] = {}
        self.failed: set[str] = set()  # ids and groups that failed
        #: the writer of this batch's change sets (a connection of its own), made when needed
        self.spare: BatchWriter | None = None

    async def run(self) -> list[Answer]:
        try:
            i = 0
            stopped: str | None = None  # the request or change set the batch stopped at
            while i < len(self.parts):
                p = self.parts[i]
                if stopped is not None:
                    self.answers[p.id] = _not_executed(p, stopped)
                    i += 1
                    continue
                if p.group is None:
                    self._done(p, await self._one(p, None))
                    i += 1
                    if not self.go_on and p.id in self.failed:
                        stopped = f"request {p.id!r}"
                    continue
                j = i
                while j < len(self.parts) and self.parts[j].group == p.group:
                    j += 1
                await self._changeset(self.parts[i:j])
                i = j
                if not self.go_on and p.group in self.failed:
                    stopped = f"atomicityGroup {p.group!r}"
        finally:
            if self.spare is not None:
                with anyio.CancelScope(shield=True):
                    await run_in_threadpool(self.spare.close)
        return [self.answers[p.id] for p in self.parts]

    def _done(self, p: Part, answer: Answer) -> None:
        self.answers[p.id] = answer
        if not answer.ok:
            self.failed.add(p.id)

    async def _changeset(self, members: list[Part]) -> None:
        group = members[0].group
        assert group is not None
        if self.spare is None:
            self.spare = app_writer(self.request).spare()
        held = await run_in_threadpool(Held, self.spare)
        results: list[Answer] = []
        commit_error: Answer | None = None
        # the audit rows of its requests: written once it has committed, dropped otherwise
        audits: list[dict[str, Any]] = []
        try:
            for p in members:
                answer = await self._one(p, held, audits)
                results.append(answer)
                self.answers[p.id] = answer  # later members may refer to it
                if not answer.ok:
                    break
            if all(a.ok for a in results):
                try:
                    await run_in_threadpool(held.end, True)
                except QuartierError as exc:
                    commit_error = _error(status_of(exc), type(exc).__name__, str(exc))
        finally:
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(held.end, False)  # no-op once committed
        if commit_error is None and len(results) == len(members) and all(a.ok for a in results):
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(self._audit, audits)
            return
        self.failed.add(group)
        culprit = next((k for k, a in enumerate(results) if not a.ok), len(results) - 1)
        if commit_error is not None:
            results[culprit] = commit_error
        bad = members[culprit]
        reason = (
            f"nothing of atomicityGroup {group!r} was stored: request {bad.id!r} failed"
            f" ({results[culprit].status})"
        )
        for k, p in enumerate(members):
            if k == culprit:
                self._done(p, results[k])
            else:
                self._done(p, _error(424, "FailedDependency", reason))

    def _audit(self, rows: list[dict[str, Any]]) -> None:
        """The audit rows of a change set that committed, in one transaction on the API's
        connection (the login allowed to add them)."""
        if not rows:
            return
        try:
            with self.request.app.state.pool.connection() as conn, conn.transaction():
                for row in rows:
                    audit.record(conn, **row)
        except psycopg.Error:
            # the change set is stored: its answers stand; the lost rows are logged, once
            log.exception(
                "$batch: a change set was stored, but its %d audit row(s) could not be written: %s",
                len(rows),
                "; ".join(f"{r['actor']} {r['action']} {r['target']}" for r in rows)[:2000],
            )

    async def _one(
        self, p: Part, held: Held | None, audits: list[dict[str, Any]] | None = None
    ) -> Answer:
        for d in [*p.depends, *_references(p)]:
            if d in self.failed:
                return _error(
                    424, "FailedDependency", f"request {p.id!r} depends on {d!r}, which failed"
                )
        try:
            url = self._resolved_url(p)
            body = p.body if p.body is _NO_BODY else self._resolved_body(p.body)
            path, query = _service_path(url, f"request {p.id!r}")
            headers = self._resolved_headers(p)
        except BadRequestError as exc:
            return _error(400, "BadRequestError", str(exc))
        return await self._dispatch(p, path, query, body, held, audits, headers)

    def _resolved_headers(self, p: Part) -> dict[str, str]:
        """``p``'s headers with ``If-Match: $<id>`` (``If-None-Match``) as that answer's ETag."""
        headers = dict(p.headers)
        for name in _ETAG_HEADERS:
            value = headers.get(name, "").strip()
            if not value.startswith("$"):
                continue
            tag = self.answers[value[1:]].headers.get("etag")
            if tag is None:
                raise BadRequestError(
                    f"request {p.id!r}: {name} {value} names request {value[1:]!r}, whose answer"
                    " has no ETag (only answers with one entity have one)"
                )
            headers[name] = tag
        return headers

    def _entity(self, ref: str) -> tuple[str, Any]:
        """(URL, @iot.id) of the entity request ``ref`` created or returned."""
        answer = self.answers[ref]
        body = answer.body if isinstance(answer.body, dict) else {}
        link = answer.headers.get("location") or body.get("@iot.selfLink")
        if not link or "@iot.id" not in body:
            raise BadRequestError(f"${ref}: request {ref!r} created or returned no entity")
        return str(link), body["@iot.id"]

    def _resolved_url(self, p: Part) -> str:
        ref = _url_ref(p.url)
        if ref is None:
            return p.url
        link, _ = self._entity(ref)
        return link + p.url[len(ref) + 1 :]

    def _resolved_body(self, value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k == "@iot.id" and isinstance(v, str) and v.startswith("$"):
                    out[k] = self._entity(v[1:])[1] if v[1:] in self.answers else v
                else:
                    out[k] = self._resolved_body(v)
            return out
        if isinstance(value, list):
            return [self._resolved_body(v) for v in value]
        return value

    async def _dispatch(
        self,
        p: Part,
        path: str,
        query: str,
        body: Any,
        held: Held | None,
        audits: list[dict[str, Any]] | None = None,
        sent_headers: dict[str, str] | None = None,
    ) -> Answer:
        outer = self.request
        own = p.headers if sent_headers is None else sent_headers
        headers = {k: v for k, v in own.items() if k not in ("content-length", "host")}
        own_key = "authorization" in headers or "x-api-key" in headers
        for name in _INHERITED:
            if own_key and name in ("authorization", "x-api-key"):
                continue  # a request with its own key is sent with that key only
            if name in outer.headers and name not in headers:
                headers[name] = outer.headers[name]
        data = b""
        if body is not _NO_BODY:
            data = json.dumps(body).encode() if not isinstance(body, bytes) else body
            headers.setdefault("content-type", "application/json")
        headers["content-length"] = str(len(data))
        scope = dict(outer.scope)
        scope.update(
            method=p.method,
            path=path,
            raw_path=path.encode(),
            query_string=query.encode(),
            headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        )
        scope.pop(CHANGESET, None)
        scope.pop(AUDIT_PENDING, None)
        if held is not None:
            scope[CHANGESET] = held
        if audits is not None:
            scope[AUDIT_PENDING] = audits
        for key in ("route", "endpoint", "path_params"):
            scope.pop(key, None)
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return {"type": "http.disconnect"}

        status, raw_headers, chunks = 500, [], []

        async def send(message: Message) -> None:
            nonlocal status, raw_headers
            if message["type"] == "http.response.start":
                status, raw_headers = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await outer.app.router(scope, receive, send)
        except Exception:
            log.exception("$batch: %s %s failed", p.method, path)
            return _error(500, "InternalError", "internal error; the server log has the details")
        return _answer(status, raw_headers, b"".join(chunks))


def _answer(status: int, raw_headers: list[tuple[bytes, bytes]], content: bytes) -> Answer:
    headers = {}
    for k, v in raw_headers:
        name = k.decode("latin-1").lower()
        if name != "content-length":
            headers[name] = v.decode("latin-1")
    ctype = headers.get("content-type", "")
    body: Any = _NO_BODY
    if content:
        if ctype.split(";")[0].strip() == "application/json":
            try:
                body = json.loads(content)
            except ValueError:
                body = content.decode("utf-8", "replace")
        else:
            body = content.decode("utf-8", "replace")
    if ctype == "application/json":
        del headers["content-type"]
    return Answer(status, headers, body)


# --------------------------------------------------------------------------- answering
def json_response(parts: list[Part], answers: list[Answer]) -> JSONResponse:
    out = []
    for p, a in zip(parts, answers, strict=True):
        item: dict[str, Any] = {"id": p.id, "status": a.status}
        if p.group is not None:
            item["atomicityGroup"] = p.group
        if a.headers:
            item["headers"] = a.headers
        if a.body is not _NO_BODY:
            item["body"] = a.body
        out.append(item)
    return JSONResponse({"responses": out})


def _http_block(a: Answer, content_id: str | None) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    try:
        phrase = HTTPStatus(a.status).phrase
    except ValueError:
        phrase = ""
    inner = [f"HTTP/1.1 {a.status} {phrase}".rstrip()]
    headers = dict(a.headers)
    payload = ""
    if a.body is not _NO_BODY:
        if isinstance(a.body, str) and "content-type" in headers:
            payload = a.body
        else:
            payload = json.dumps(a.body)
            headers.setdefault("content-type", "application/json")
    inner.extend(f"{k}: {v}" for k, v in headers.items())
    return "\r\n".join(lines) + "\r\n\r\n" + "\r\n".join(inner) + "\r\n\r\n" + payload + "\r\n"


def multipart_response(parts: list[Part], answers: list[Answer]) -> Response:
    """OData 4.0 multipart answer: one ``application/http`` part per request; a change set
    that was stored as a nested ``multipart/mixed``, one that failed as the one answer of the
    request that failed."""
    boundary = f"batchresponse_{uuid.uuid4()}"
    chunks = []
    i = 0
    while i < len(parts):
        p = parts[i]
        if answers[i].skipped:  # the batch stopped: the failure's part is the last (11.7.7.4)
            break
        if p.group is None:
            chunks.append(f"--{boundary}\r\n" + _http_block(answers[i], None))
            i += 1
            continue
        j = i
        while j < len(parts) and parts[j].group == p.group:
            j += 1
        group = list(zip(parts[i:j], answers[i:j], strict=True))
        failed = [a for _, a in group if not a.ok]
        if failed:
            culprit = next((a for a in failed if a.status != 424), failed[0])
            chunks.append(f"--{boundary}\r\n" + _http_block(culprit, None))
        else:
            cs = f"changesetresponse_{uuid.uuid4()}"
            inner = "".join(f"--{cs}\r\n" + _http_block(a, q.id) for q, a in group)
            chunks.append(
                f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={cs}\r\n\r\n"
                f"{inner}--{cs}--\r\n"
            )
        i = j
    text = "".join(chunks) + f"--{boundary}--\r\n"
    return Response(text.encode(), media_type=f"multipart/mixed; boundary={boundary}")


_REQUEST_SCHEMA = {
    "type": "object",
    "required": ["requests"],
    "properties": {
        "requests": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "method", "url"],
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "method": {"type": "string", "enum": [m.lower() for m in METHODS]},
                    "url": {"type": "string", "minLength": 1},
                    "atomicityGroup": {"type": "string", "minLength": 1},
                    "dependsOn": {"type": "array", "items": {"type": "string"}},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "body": {},
                },
            },
        }
    },
}
_RESPONSE_SCHEMA = {
    "type": "object",
    "required": ["responses"],
    "properties": {
        "responses": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "status"],
                "properties": {
                    "id": {"type": "string"},
                    "status": {"type": "integer"},
                    "atomicityGroup": {"type": "string"},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "body": {},
                },
            },
        }
    },
}
_MULTIPART = {"schema": {"type": "string", "format": "binary"}}


@router.post(
    "/$batch",
    operation_id="sta_batch",
    summary="Several requests in one (OData JSON or multipart batch) with change sets",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _REQUEST_SCHEMA},
                "multipart/mixed": _MULTIPART,
            },
        }
    },
    responses={
        200: {
            "description": "one answer per request, in the order sent",
            "content": {
                "application/json": {"schema": _RESPONSE_SCHEMA},
                "multipart/mixed": _MULTIPART,
            },
        },
        400: {"description": "the batch is not well formed; the message says why; nothing ran"},
        413: {"description": "more requests than api.max_batch_requests, or a body too large"},
    },
)
async def batch(request: Request) -> Response:
    """Runs the requests of a batch in order, each as the route that answers it alone (with
    the batch's API key unless it brings its own); a change set (``atomicityGroup``) is one
    transaction: all its requests stored, or none. ``$<id>`` refers to the entity an earlier
    request created. ``application/json`` (OData 4.01 JSON batch) or ``multipart/mixed``
    (OData 4.0)."""
    settings = request.app.state.settings
    limit = settings.api.max_batch_requests
    ctype = request.headers.get("content-type", "")
    media = ctype.split(";")[0].strip().lower()
    raw = await request.body()
    if media not in ("application/json", "multipart/mixed"):
        raise BadRequestError(
            f"a $batch body is application/json (OData JSON batch) or multipart/mixed, not"
            f" {media or 'without a Content-Type'}"
        )
    prefer = request.headers.get("prefer", "")
    go_on, applied = continue_on_error(prefer, media)
    if media == "application/json":
        try:
            decoded = json.loads(raw)
            parts = parse_json(decoded, limit)
        except ValueError as exc:
            raise BadRequestError(f"the $batch body is not JSON: {exc}") from None
        except RecursionError:
            raise BadRequestError("the $batch body is nested too deeply") from None
    else:
        parts = parse_multipart(ctype, raw, limit)
    if respond_async(prefer):
        return await _start_async(request, parts, media, go_on, applied)
    return await _answer_batch(request, parts, media, go_on, applied)


async def _answer_batch(
    request: Request, parts: list[Part], media: str, go_on: bool, applied: str | None
) -> Response:
    answers = await Runner(request, parts, go_on).run()
    response: Response
    if media == "application/json":
        response = json_response(parts, answers)
    else:
        response = multipart_response(parts, answers)
    if applied is not None:
        response.headers["Preference-Applied"] = applied
    return response


# --------------------------------------------------------------------------- asynchronous
def respond_async(prefer: str) -> bool:
    """Whether a ``Prefer`` header asks for ``respond-async`` (RFC 7240)."""
    return any(
        item.split(";")[0].split("=")[0].strip().lower() == "respond-async"
        for item in prefer.split(",")
    )


def _token(headers: Any) -> str | None:
    """The API key of a request (``X-API-Key``, or ``Authorization: Bearer``)."""
    token = headers.get("x-api-key")
    if token:
        return str(token)
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def _caller(conn: psycopg.Connection[Any], headers: Any, why: str) -> ApiKey:
    token = _token(headers)
    if not token:
        raise AuthenticationError(
            f"{why} needs an API key (any valid one): send it as `Authorization: Bearer <key>`"
            " or `X-API-Key: <key>`"
        )
    return authenticate(conn, token, datetime.now(UTC))


async def _start_async(
    request: Request, parts: list[Part], media: str, go_on: bool, applied: str | None
) -> Response:
    """202 with the status monitor's Location; the batch runs on in this process."""
    settings = request.app.state.settings
    keep = timedelta(seconds=settings.api.batch_async_keep_seconds)
    batch_id = uuid.uuid4()

    def accept() -> None:
        with request.app.state.pool.connection() as conn:
            key = _caller(
                conn,
                request.headers,
                "an asynchronous $batch (Prefer: respond-async; its answer is readable only"
                " by the key that sent it)",
            )
            stored.expire(conn)
            stored.start(conn, batch_id, key.id, keep)

    await run_in_threadpool(accept)
    task = asyncio.create_task(_run_async(request, parts, media, go_on, applied, batch_id))
    # the app's running asynchronous batches: a reference until each is done
    state = request.app.state
    if not hasattr(state, "batch_tasks"):
        state.batch_tasks = set()
    running: set[asyncio.Task[None]] = state.batch_tasks
    running.add(task)
    task.add_done_callback(running.discard)
    base = (settings.api.base_url or str(request.base_url)).rstrip("/")
    return Response(
        status_code=202,
        headers={
            "Location": f"{base}{PREFIX}/$batch/status/{batch_id}",
            "Retry-After": "1",
            "Preference-Applied": "respond-async",
        },
    )


async def _run_async(
    request: Request,
    parts: list[Part],
    media: str,
    go_on: bool,
    applied: str | None,
    batch_id: uuid.UUID,
) -> None:
    """Run the batch and store its whole answer (an error answer when it could not run)."""
    try:
        response = await _answer_batch(request, parts, media, go_on, applied)
        status, body = response.status_code, bytes(response.body)
        content_type = response.headers.get("content-type", "application/json")
    except Exception:
        log.exception("asynchronous $batch %s failed", batch_id)
        status, content_type = 500, "application/json"
        message = "internal error; the server log has the details"
        body = json.dumps({"code": 500, "type": "InternalError", "message": message}).encode()

    def save() -> None:
        with request.app.state.pool.connection() as conn:
            stored.finish(conn, batch_id, status, content_type, body, applied)

    with anyio.CancelScope(shield=True):
        try:
            await run_in_threadpool(save)
        except (psycopg.Error, QuartierError):
            log.exception(
                "asynchronous $batch %s ran, but its answer could not be stored", batch_id
            )


@status_router.get(
    "/$batch/status/{batch_id}",
    operation_id="sta_batch_status",
    summary="The status monitor of an asynchronous $batch",
    response_class=Response,
    responses={
        200: {"description": "the batch has run: its whole answer (AsyncResult: its status)"},
        202: {"description": "the batch is still running; ask again after Retry-After"},
        401: {"description": "no valid API key"},
        404: {"description": "no such batch for this key, or its result has expired"},
    },
)
def batch_status(batch_id: str, request: Request, conn: Conn, base: BaseUrl) -> Response:
    """202 while the asynchronous batch runs, then its answer as the batch would have given it;
    only for the API key that sent it, for ``api.batch_async_keep_seconds``."""
    key = _caller(conn, request.headers, "the status of an asynchronous $batch")
    keep = request.app.state.settings.api.batch_async_keep_seconds
    missing = NotFoundError(
        f"no asynchronous $batch {batch_id[:40]!r} for this API key: an answer is kept"
        f" {keep} s after the batch was sent (api.batch_async_keep_seconds) and is readable"
        " only with the key that sent it"
    )
    try:
        wanted = uuid.UUID(batch_id)
    except ValueError:
        raise missing from None
    stored.expire(conn)
    found = stored.read(conn, wanted, key.id)
    if found is None:
        raise missing
    if found.finished_at is None or found.status is None:
        return Response(
            status_code=202,
            headers={"Location": f"{base}{PREFIX}/$batch/status/{wanted}", "Retry-After": "1"},
        )
    headers = {"AsyncResult": str(found.status)}
    if found.preference_applied:
        headers["Preference-Applied"] = found.preference_applied
    return Response(
        found.body or b"",
        status_code=200,
        media_type=found.content_type or "application/json",
        headers=headers,
    )
