"""``quartier serve`` runs uvicorn with httptools and uvloop (C parser and loop, docs/benchmarks.md,
API) and falls back to h11 and asyncio's loop where they cannot be imported.
The answers must not depend on it: the same requests, over real sockets, to the same app under
both give the same status, headers (but ``date``) and bytes; this also covers what the
middlewares add (CORS, gzip, ETag/304, the body cap, the error bodies)."""

from __future__ import annotations

import gzip
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import uvicorn

from quartier.api.app import create_app
from quartier.cli import runtime
from quartier.config import Settings
from tests.sta_helpers import one_reading

pytestmark = pytest.mark.services


def test_serve_takes_httptools_and_uvloop_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    assert runtime.server_protocols() == {"http": "httptools", "loop": "uvloop"}
    monkeypatch.setitem(sys.modules, "httptools", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert runtime.server_protocols() == {"http": "h11", "loop": "asyncio"}


@contextmanager
def _serving(settings: Settings, http: str, loop: str) -> Iterator[int]:
    """The API under uvicorn with ``http`` and ``loop`` in a thread; yields its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(settings), http=http, loop=loop, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def _read(f: socket.SocketIO | object) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """One response from the buffered socket file ``f``: status line, headers, body."""
    status = f.readline()  # type: ignore[attr-defined]
    headers = []
    while (line := f.readline()) not in (b"\r\n", b""):  # type: ignore[attr-defined]
        name, _, value = line.rstrip(b"\r\n").partition(b":")
        headers.append((name.lower(), value.strip()))
    fields = dict(headers)
    if b"content-length" in fields:
        body = f.read(int(fields[b"content-length"]))  # type: ignore[attr-defined]
    elif fields.get(b"transfer-encoding") == b"chunked":
        body = b""
        while size := int(f.readline().split(b";")[0], 16):  # type: ignore[attr-defined]
            body += f.read(size + 2)[:-2]  # type: ignore[attr-defined]
        f.readline()  # type: ignore[attr-defined]
    else:
        body = b""
    return status, headers, body


def _answers(port: int, requests: list[bytes]) -> list[tuple[bytes, list[tuple[bytes, bytes]]]]:
    """The requests one after another on one kept-alive connection; each answer's status line
    and headers (without ``date``), the body last among them (gzip bodies decompressed: their
    header carries the time)."""
    out = []
    with socket.create_connection(("127.0.0.1", port)) as s, s.makefile("rb") as f:
        for request in requests:
            s.sendall(request)
            status, headers, body = _read(f)
            if (b"content-encoding", b"gzip") in headers:
                body = gzip.decompress(body)
            kept = [(n, v) for n, v in headers if n != b"date"]
            out.append((status, [*kept, (b"(body)", body)]))
    return out


def test_answers_are_the_same_bytes_under_h11_and_httptools(settings: Settings) -> None:
    one_reading(settings)
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        conn.execute(  # a page above the gzip threshold (1 KiB)
            "insert into observation (datastream_id, phenomenon_time, result) select 1,"
            " timestamptz '2026-01-01' + n * interval '1 min', n / 7.0"
            " from generate_series(1, 300) n"
        )
    flt = "phenomenonTime%20ge%202020-01-01T00:00:00Z"
    page = f"/v1.1/Datastreams(1)/Observations?$top=100&$filter={flt}"
    host = b"Host: 127.0.0.1\r\n"

    def get(target: str, *headers: str) -> bytes:
        extra = "".join(f"{h}\r\n" for h in headers)
        return f"GET {target} HTTP/1.1\r\n".encode() + host + extra.encode() + b"\r\n"

    with _serving(settings, "h11", "asyncio") as port:
        first = _answers(port, [get(page)])
    etag = dict(first[0][1])[b"etag"].decode()
    requests = [
        get(page),
        get(page, "Accept-Encoding: gzip"),
        get(page, "Origin: https://example.org"),
        get(page, f"If-None-Match: {etag}"),
        b"OPTIONS /v1.1/Datastreams HTTP/1.1\r\n" + host + b"Origin: https://example.org\r\n"
        b"Access-Control-Request-Method: GET\r\n\r\n",
        get("/v1.1/Datastreams(999)/Observations"),
        get("/v1.1/Datastreams(1)/Observations?$filter=nonsense%20eq"),
        b"POST /v1.1/Observations HTTP/1.1\r\n" + host + b"Content-Length: 999999999\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n\r\n",
    ]
    answers = {}
    for http, loop in (("h11", "asyncio"), ("httptools", "uvloop")):
        with _serving(settings, http, loop) as port:
            answers[http] = _answers(port, requests)
    assert answers["h11"] == answers["httptools"]
    statuses = [a[0].split()[1] for a in answers["h11"]]
    assert statuses == [b"200", b"200", b"200", b"304", b"200", b"404", b"400", b"413"]
    page_answer = dict(answers["h11"][0][1])
    assert page_answer[b"etag"].decode() == etag and b'"value":[{' in page_answer[b"(body)"]
    assert (b"content-encoding", b"gzip") in answers["h11"][1][1]
    assert (b"access-control-allow-origin", b"*") in answers["h11"][2][1]


def test_serve_app_builds_the_route_tables_before_the_first_request(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI (0.16x) builds each included router's route tables on first use: seconds of CPU
    under load for the first request a worker gets, unless ``serve_app`` made them at start."""
    from fastapi.routing import _IncludedRouter
    from fastapi.testclient import TestClient

    app = runtime.serve_app(settings)
    assert app.openapi_schema is not None
    built: list[object] = []
    build = _IncludedRouter._build_effective_context

    def counted(self: _IncludedRouter, route: object) -> object:
        built.append(route)
        return build(self, route)  # type: ignore[arg-type]

    monkeypatch.setattr(_IncludedRouter, "_build_effective_context", counted)
    with TestClient(app) as client:
        assert client.get("/v1.1/Datastreams").status_code == 200
        assert client.get("/v1.1/Datastreams(1)/Observations").status_code == 404
    assert built == []
    # the check can fail: a bare create_app builds them on its first request
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1.1/Datastreams").status_code == 200
    assert len(built) > 100
