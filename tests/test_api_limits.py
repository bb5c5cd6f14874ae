"""The API's limits (issue #12 item 3): capped request bodies, a statement timeout, a health
check that says ok/degraded without internals, CSV cells that cannot run as formulas."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from quartier.api import models as m
from quartier.api.app import create_app
from quartier.api.deps import Conn
from quartier.config import Settings
from quartier.services import free_port

pytestmark = pytest.mark.services
CAP = 64 * 1024
PATH = "/ingest/sensor-community"


def with_api(settings: Settings, **api: object) -> Settings:
    return settings.model_copy(update={"api": settings.api.model_copy(update=api)})


@pytest.fixture
def port(settings: Settings) -> Iterator[int]:
    """A real HTTP server (uvicorn) for the app with a body cap of ``CAP`` bytes: the test client
    would read a request body whole before the app sees it."""
    port = free_port()
    app = create_app(with_api(settings, max_body_bytes=CAP))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)


def status_line(sock: socket.socket) -> str:
    sock.settimeout(5)
    head = b""
    while b"\r\n" not in head:
        part = sock.recv(4096)
        if not part:
            break
        head += part
    return head.split(b"\r\n", 1)[0].decode()


def test_a_content_length_over_the_cap_is_refused_before_the_body(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {100 * CAP}\r\n\r\n".encode()
        )
        # not a byte of the body sent: the answer comes anyway
        assert status_line(sock) == "HTTP/1.1 413 Request Entity Too Large"


def test_a_chunked_body_is_refused_once_it_passes_the_cap(port: int) -> None:
    """A body without Content-Length is read until it passes the cap, not to its end: the 413
    arrives while the client is still sending (it would send 1000 times the cap)."""
    chunk = b"x" * 8192
    planned = 1000 * CAP
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        answered = False
        try:
            while sent < planned and not answered:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                answered = bool(select.select([sock], [], [], 0.002)[0])
        except (BrokenPipeError, ConnectionResetError):
            answered = True  # the server closed the connection after answering
        assert answered and sent < planned // 10, sent
        assert status_line(sock) == "HTTP/1.1 413 Request Entity Too Large"


def test_a_body_within_the_cap_is_read(settings: Settings) -> None:
    with TestClient(create_app(with_api(settings, max_body_bytes=CAP))) as client:
        big = client.post(PATH, content=b"{" + b" " * CAP + b"}")
        assert big.status_code == 413
        assert big.json()["type"] == "PayloadTooLargeError"
        small = client.post(PATH, content=b"not json")
        assert small.status_code == 400  # read and decoded: the cap did not refuse it


def test_health_is_degraded_without_internals(settings: Settings) -> None:
    broker_port = free_port()
    broken = settings.model_copy(
        update={
            "mqtt": settings.mqtt.model_copy(
                update={"url": f"mqtt://quartier:s3cret@127.0.0.1:{broker_port}"}
            )
        }
    )
    with TestClient(create_app(broken)) as client:
        r = client.get("/health")
    assert r.status_code == 503
    body = m.Health.model_validate(r.json())
    assert body.status == "degraded"
    assert body.database.ok and body.database.detail == "ok"
    assert not body.mqtt.ok and body.mqtt.detail.startswith("degraded")
    for secret in ("s3cret", "quartier:", "127.0.0.1", str(broker_port), "Errno", "refused"):
        assert secret not in r.text, secret


def test_a_query_over_the_statement_timeout_is_a_503_not_a_hang(settings: Settings) -> None:
    app = create_app(with_api(settings, statement_timeout_seconds=0.3))

    def slow(conn: Conn) -> dict[str, str]:
        conn.execute("select pg_sleep(10)")
        return {"done": "yes"}

    assert isinstance(app, FastAPI)
    app.get("/test-slow")(slow)
    with TestClient(app) as client:
        started = time.monotonic()
        r = client.get("/test-slow")
        elapsed = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.json()["type"] == "QueryTimeoutError"
        assert "0.3 s" in r.json()["message"] and "pg_sleep" not in r.text
        assert elapsed < 5
        assert client.get("/health").status_code == 200  # the connection went back usable


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("-3.5", "-3.5"),  # a number stays a number
        ("-1e-05", "-1e-05"),
        ("+7", "+7"),
        ("plain", "plain"),
        (-3.5, -3.5),
        (None, None),
    ],
)
def test_csv_cells_cannot_be_formulas(cell: object, written: object) -> None:
    from quartier.api.csv_cells import safe_cell

    assert safe_cell(cell) == written


def test_aggregate_csv_goes_through_the_neutraliser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The aggregates CSV writes its header and every row through ``safe_row``; its negative
    numbers come out as numbers."""
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    from quartier.api import aggregates

    t = datetime(2026, 1, 1, tzinfo=UTC)
    series = SimpleNamespace(datastream_id=7, rows=lambda fns: [(t, -3.5, None)])
    agg = SimpleNamespace(
        functions=["avg", "min"], series=[series], source="raw",
        width=timedelta(hours=1), start=t, end=t + timedelta(hours=1),
    )  # fmt: skip
    monkeypatch.setattr(
        aggregates, "safe_row", lambda cells: ["=X" if c == "min" else c for c in cells]
    )
    text = aggregates._csv(agg).body.decode()  # type: ignore[arg-type]
    assert text.splitlines()[0] == "datastream_id,time,avg,=X"
    monkeypatch.undo()
    text = aggregates._csv(agg).body.decode()  # type: ignore[arg-type]
    assert text.splitlines()[1] == "7,2026-01-01T00:00:00.000Z,-3.5,"


@pytest.mark.parametrize(
    "path", ["/coverage/cells", "/coverage/gaps", "/ogc/collections/cells/items"]
)
def test_an_offset_above_the_maximum_is_a_400(settings: Settings, path: str) -> None:
    with TestClient(create_app(with_api(settings, max_skip=10))) as client:
        r = client.get(path, params={"offset": 11})
        assert r.status_code == 400, r.text
        assert r.json()["type"] == "BadRequestError"
        assert "above the maximum of 10" in r.json()["message"]
        assert client.get(path, params={"offset": 10}).status_code != 400


def test_a_sensorthings_skip_above_the_maximum_is_a_400(settings: Settings) -> None:
    with TestClient(create_app(with_api(settings, max_skip=10))) as client:
        r = client.get("/v1.1/Things", params={"$skip": 11})
        assert r.status_code == 400, r.text
        assert "$skip 11 is above the maximum of 10" in r.json()["message"]
        assert client.get("/v1.1/Things", params={"$skip": 10}).status_code == 200


def test_token_buckets_are_per_address() -> None:
    from quartier.api.app import TokenBuckets

    b = TokenBuckets(rate=2.0, burst=3)
    assert [b.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("a", 0.0) == pytest.approx(0.5)  # one token comes back in 1/rate s
    assert b.take("b", 0.0) == 0.0  # another address has its own bucket
    assert b.take("a", 0.5) == 0.0  # refilled
    assert b.take("a", 0.5) > 0


def test_each_api_key_has_its_own_limit_besides_the_address(settings: Settings) -> None:
    """A key that has spent its tokens gets 429 naming the key, from any address; another key
    and requests without a key go on (the address's own budget is large here)."""
    limited = with_api(
        settings, rate_per_second=100.0, rate_burst=1000, key_rate_per_second=0.01, key_rate_burst=2
    )
    a = {"Authorization": "Bearer qk_made-up-key-a"}
    b = {"X-API-Key": "qk_made-up-key-b"}
    with TestClient(create_app(limited)) as client:
        assert [client.get("/v1.1/Things", headers=a).status_code for _ in range(2)] == [200, 200]
        r = client.get("/v1.1/Things", headers=a)
        assert r.status_code == 429
        assert "API key" in r.json()["message"] and 90 <= int(r.headers["Retry-After"]) <= 100
        # the same key in the other header is the same bucket
        assert (
            client.get("/v1.1/Things", headers={"X-API-Key": "qk_made-up-key-a"}).status_code == 429
        )
        assert client.get("/v1.1/Things", headers=b).status_code == 200
        assert client.get("/v1.1/Things").status_code == 200


def test_too_many_requests_are_a_429_with_retry_after(settings: Settings) -> None:
    # one token per 100 s: the bucket does not refill noticeably while a loaded machine answers
    limited = with_api(settings, rate_per_second=0.01, rate_burst=3)
    with TestClient(create_app(limited)) as client:
        codes = [client.get("/v1.1/Things").status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        r = client.get("/v1.1/Things")
        assert r.status_code == 429
        # the next token is 100 s minus the (few) seconds the four requests took
        assert 90 <= int(r.headers["Retry-After"]) <= 100
        assert r.json()["type"] == "RateLimitedError"
        assert client.get("/health").status_code == 200  # monitors are not limited
