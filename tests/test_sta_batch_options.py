"""SensorThings ``$batch`` options against the real app and database: ``continue-on-error``
(each format's default from OData 4.01, the preference in both spellings, change sets atomic
either way), conditional requests inside a batch (entity ETags, ``If-Match: $<id>``),
asynchronous batches (``Prefer: respond-async``: 202, the status monitor, its key, its expiry),
and the errors that say what was wrong."""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sta_helpers import key, one_reading, scalar

from quartier.api.app import create_app
from quartier.config import Settings

pytestmark = pytest.mark.services
V = "/v1.1"
BATCH = f"{V}/$batch"
SENSOR = {
    "name": "SDS011",
    "description": "laser",
    "encodingType": "application/pdf",
    "metadata": "https://example.org/sds011.pdf",
}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A Thing ``net/a-1`` (id 1) with one Datastream (id 1) and one reading."""
    one_reading(settings)
    with TestClient(create_app(settings)) as c:
        yield c


def sensors(settings: Settings) -> int:
    return int(scalar(settings, "select count(*) from sensor"))


def answers(r: Any) -> dict[str, dict[str, Any]]:
    assert r.status_code == 200, r.text
    return {a["id"]: a for a in r.json()["responses"]}


def _sensor(rid: str, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "method": "post", "url": "Sensors", "body": SENSOR, **extra}


#: a request that fails (a Thing without its description) between two that succeed
FAILING = {"id": "bad", "method": "post", "url": "Things", "body": {"name": "T"}}


# --------------------------------------------------------------------------- continue-on-error
def test_a_json_batch_goes_on_after_a_failure_by_default(
    client: TestClient, settings: Settings
) -> None:
    """OData JSON 4.01, 19.4: without the preference every request is processed."""
    h = key(settings, "entities:write")
    before = sensors(settings)
    body = {"requests": [_sensor("1"), FAILING, _sensor("2")]}
    r = client.post(BATCH, json=body, headers=h)
    a = answers(r)
    assert [a[i]["status"] for i in ("1", "bad", "2")] == [201, 400, 201]
    assert "description" in a["bad"]["body"]["message"]
    assert "preference-applied" not in r.headers
    assert sensors(settings) == before + 2


@pytest.mark.parametrize(
    "prefer",
    [
        "continue-on-error=false",
        "odata.continue-on-error=false",
        "return=minimal, continue-on-error=FALSE",
    ],
)
def test_a_json_batch_with_continue_on_error_false_stops_at_the_first_failure(
    client: TestClient, settings: Settings, prefer: str
) -> None:
    h = key(settings, "entities:write")
    before = sensors(settings)
    body = {
        "requests": [
            _sensor("1"),
            FAILING,
            _sensor("2"),
            {"id": "read", "method": "get", "url": "Things(1)"},
        ]
    }
    r = client.post(BATCH, json=body, headers={**h, "Prefer": prefer})
    a = answers(r)
    assert [a[i]["status"] for i in ("1", "bad", "2", "read")] == [201, 400, 424, 424]
    for rid in ("2", "read"):
        message = a[rid]["body"]["message"]
        assert f"request {rid!r} was not executed" in message
        assert "request 'bad' failed" in message and "continue-on-error" in message
    assert r.headers["preference-applied"].endswith("continue-on-error=false")
    # the request before the failure is stored, the one after it did not run
    assert sensors(settings) == before + 1


@pytest.mark.parametrize(
    "prefer", ["odata.continue-on-error", "continue-on-error", "continue-on-error=true"]
)
def test_a_multipart_batch_with_continue_on_error_runs_every_request(
    client: TestClient, settings: Settings, prefer: str
) -> None:
    h = key(settings, "entities:write")
    before = sensors(settings)
    ctype, data = _multipart(
        [
            _http("POST", "Sensors", SENSOR),
            _http("POST", "Things", {"name": "T"}),
            _http("GET", "Things(999)"),
            _http("POST", "Sensors", SENSOR),
        ]
    )
    r = client.post(BATCH, content=data, headers={**h, "Prefer": prefer, "Content-Type": ctype})
    assert [_status(p)[0] for p in _parts(r)] == [201, 400, 404, 201]
    assert r.headers["preference-applied"].split("=")[0] == prefer.split("=")[0]
    assert sensors(settings) == before + 2


def test_a_multipart_batch_stops_at_the_first_failure_by_default(
    client: TestClient, settings: Settings
) -> None:
    """OData 4.01 Protocol 11.7.7.3/4: processing stops on the first error, whose response is
    the last part."""
    h = key(settings, "entities:write")
    before = sensors(settings)
    ctype, data = _multipart(
        [
            _http("POST", "Sensors", SENSOR),
            _http("POST", "Things", {"name": "T"}),
            _http("POST", "Sensors", SENSOR),
            _http("GET", "Things(1)"),
        ]
    )
    r = client.post(BATCH, content=data, headers={**h, "Content-Type": ctype})
    parts = _parts(r)
    assert [_status(p)[0] for p in parts] == [201, 400]
    assert "description" in _status(parts[1])[1]["message"]
    assert sensors(settings) == before + 1
    # with continue-on-error=false said explicitly: the same
    r = client.post(
        BATCH,
        content=data,
        headers={**h, "Content-Type": ctype, "Prefer": "continue-on-error=false"},
    )
    assert [_status(p)[0] for p in _parts(r)] == [201, 400]
    assert sensors(settings) == before + 2


def test_change_sets_stay_atomic_with_or_without_continue_on_error(
    client: TestClient, settings: Settings
) -> None:
    h = key(settings, "entities:write")
    before = sensors(settings)
    body = {
        "requests": [
            _sensor("s1", atomicityGroup="g1"),
            {**FAILING, "atomicityGroup": "g1"},
            _sensor("s2", atomicityGroup="g1"),
            _sensor("after"),
            _sensor("g2-a", atomicityGroup="g2"),
            _sensor("g2-b", atomicityGroup="g2"),
        ]
    }
    # continue-on-error: g1 rolled back whole, the rest stored
    a = answers(client.post(BATCH, json=body, headers={**h, "Prefer": "continue-on-error"}))
    assert [a[i]["status"] for i in ("s1", "bad", "s2")] == [424, 400, 424]
    assert "nothing of atomicityGroup 'g1' was stored" in a["s1"]["body"]["message"]
    assert [a[i]["status"] for i in ("after", "g2-a", "g2-b")] == [201, 201, 201]
    assert sensors(settings) == before + 3
    # stop: g1 rolled back whole, nothing after it runs
    a = answers(client.post(BATCH, json=body, headers={**h, "Prefer": "continue-on-error=false"}))
    assert [a[i]["status"] for i in ("s1", "bad", "s2")] == [424, 400, 424]
    for rid in ("after", "g2-a", "g2-b"):
        assert a[rid]["status"] == 424
        assert "atomicityGroup 'g1' failed" in a[rid]["body"]["message"]
    assert sensors(settings) == before + 3
    # a multipart batch stops after a failed change set's one error part
    ctype, data = _multipart(
        [
            [_http("POST", "Sensors", SENSOR, "1"), _http("POST", "Things", {"name": "T"}, "2")],
            _http("POST", "Sensors", SENSOR),
        ]
    )
    parts = _parts(client.post(BATCH, content=data, headers={**h, "Content-Type": ctype}))
    assert [_status(p)[0] for p in parts] == [400]
    assert sensors(settings) == before + 3


def test_an_invalid_continue_on_error_value_is_a_400_naming_it(
    client: TestClient, settings: Settings
) -> None:
    h = key(settings, "entities:write")
    before = sensors(settings)
    body = {"requests": [_sensor("1")]}
    r = client.post(BATCH, json=body, headers={**h, "Prefer": "continue-on-error=maybe"})
    assert r.status_code == 400
    assert "continue-on-error=maybe" in r.json()["message"]
    assert "true or false" in r.json()["message"]
    assert sensors(settings) == before


# --------------------------------------------------------------------------- conditional requests
def test_if_match_inside_a_batch_refers_to_an_earlier_answer_and_guards_the_write(
    client: TestClient, settings: Settings
) -> None:
    """OData 4.01 Protocol 11.7.5 "Referencing an ETag": ``If-Match: $<id>`` is the ETag of
    that request's answer; a write between the GET and the PATCH makes the PATCH 412."""
    h = key(settings, "entities:write")
    body = {
        "requests": [
            {"id": "get", "method": "get", "url": "Things(1)"},
            {
                "id": "same",
                "method": "get",
                "url": "Things(1)",
                "headers": {"if-none-match": "$get"},
            },
            {
                "id": "patch",
                "method": "patch",
                "url": "Things(1)",
                "headers": {"if-match": "$get"},
                "body": {"description": "eins"},
            },
            # stale now: the tag read by "get" is not the Thing's any more
            {
                "id": "stale",
                "method": "patch",
                "url": "Things(1)",
                "headers": {"if-match": "$get"},
                "body": {"description": "zwei"},
            },
            {
                "id": "fresh",
                "method": "patch",
                "url": "Things(1)",
                "headers": {"If-Match": "$patch"},
                "body": {"description": "drei"},
            },
        ]
    }
    a = answers(client.post(BATCH, json=body, headers=h))
    tag = a["get"]["headers"]["etag"]
    assert tag.startswith('W/"')
    assert a["same"]["status"] == 304 and "body" not in a["same"]
    assert a["patch"]["status"] == 200 and a["patch"]["headers"]["etag"] != tag
    assert a["stale"]["status"] == 412
    assert "Thing 1 has changed" in a["stale"]["body"]["message"]
    assert tag in a["stale"]["body"]["message"]
    assert a["fresh"]["status"] == 200
    assert scalar(settings, "select description from thing where id = 1") == "drei"


def test_a_stale_if_match_rolls_its_change_set_back(client: TestClient, settings: Settings) -> None:
    h = key(settings, "entities:write")
    before = sensors(settings)
    stale = client.get(f"{V}/Things(1)").headers["etag"]
    r = client.patch(f"{V}/Things(1)", json={"description": "theirs"}, headers=h)
    assert r.status_code == 200
    body = {
        "requests": [
            _sensor("s", atomicityGroup="g"),
            {
                "id": "p",
                "atomicityGroup": "g",
                "method": "patch",
                "url": "Things(1)",
                "headers": {"if-match": stale},
                "body": {"description": "ours"},
            },
        ]
    }
    a = answers(client.post(BATCH, json=body, headers=h))
    assert (a["s"]["status"], a["p"]["status"]) == (424, 412)
    assert "request 'p' failed (412)" in a["s"]["body"]["message"]
    assert scalar(settings, "select description from thing where id = 1") == "theirs"
    assert sensors(settings) == before
    # multipart, with the tag referred to by Content-ID
    ctype, data = _multipart(
        [
            _http("GET", "Things(1)", content_id="g1"),
            [
                _http("PATCH", "Things(1)", {"description": "ours"}, "p1", {"If-Match": "$g1"}),
                _http("POST", "Sensors", SENSOR, "s1"),
            ],
        ]
    )
    parts = _parts(client.post(BATCH, content=data, headers={**h, "Content-Type": ctype}))
    assert [_status(p)[0] for p in parts[:1]] == [200]
    assert [_status(p)[0] for p in parts[1].iter_parts()] == [200, 201]
    assert scalar(settings, "select description from thing where id = 1") == "ours"


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        (
            {"id": "p", "method": "patch", "url": "Things(1)", "headers": {"if-match": "$x"}},
            "$x names no preceding request",
        ),
        (
            {"id": "p", "method": "patch", "url": "Things(1)", "headers": {"if-match": "$list"}},
            "answer has no ETag",
        ),
        (
            {"id": "p", "method": "patch", "url": "Things(1)", "headers": {"if-match": "v1"}},
            "If-Match: 'v1' is not a list of entity tags",
        ),
    ],
)
def test_a_condition_that_cannot_be_used_says_why(
    client: TestClient, settings: Settings, request_: dict[str, Any], named: str
) -> None:
    h = key(settings, "entities:write")
    request_ = {**request_, "body": {"description": "nie"}}
    body = {"requests": [{"id": "list", "method": "get", "url": "Things"}, request_]}
    r = client.post(BATCH, json=body, headers=h)
    if r.status_code == 400:  # a reference to no request: the batch is malformed
        message = r.json()["message"]
    else:
        a = answers(r)
        assert a["p"]["status"] == 400
        message = a["p"]["body"]["message"]
    assert named in message
    assert scalar(settings, "select description from thing where id = 1") != "nie"


# --------------------------------------------------------------------------- asynchronous
STATUS = re.compile(r"^http://testserver/v1\.1/\$batch/status/[0-9a-f-]{36}$")


def _poll(client: TestClient, url: str, h: dict[str, str]) -> Any:
    """The status monitor's answer once the batch has run (202 until then)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = client.get(url, headers=h)
        if r.status_code != 202:
            return r
        assert r.headers["retry-after"] == "1"
        time.sleep(0.1)
    raise AssertionError("the asynchronous batch did not finish within 60 s")


def test_an_async_batch_answers_202_and_its_status_monitor_the_answer_when_done(
    client: TestClient, settings: Settings
) -> None:
    h = key(settings, "entities:write")
    before = sensors(settings)
    body = {
        "requests": [
            {
                "id": "p",
                "method": "patch",
                "url": "Things(1)",
                "body": {"description": "async"},
            },
            _sensor("s"),
        ]
    }
    # the Thing's row is held by another transaction: the batch cannot finish until it ends
    with psycopg.connect(settings.require_database_url()) as other:
        other.execute("update thing set description = 'first' where id = 1")
        r = client.post(BATCH, json=body, headers={**h, "Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        assert r.content == b""
        assert r.headers["preference-applied"] == "respond-async"
        monitor = r.headers["location"]
        assert STATUS.match(monitor), monitor
        running = client.get(monitor, headers=h)
        assert running.status_code == 202 and running.headers["location"] == monitor
        # only the key that sent it may read it; without a key: 401
        r = client.get(monitor, headers=key(settings, "entities:write"))
        assert r.status_code == 404
        assert "readable only with the key that sent it" in r.json()["message"]
        r = client.get(monitor)
        assert r.status_code == 401 and "API key" in r.json()["message"]
        other.commit()
    done = _poll(client, monitor, h)
    assert done.status_code == 200 and done.headers["asyncresult"] == "200"
    a = answers(done)
    assert (a["p"]["status"], a["s"]["status"]) == (200, 201)
    assert scalar(settings, "select description from thing where id = 1") == "async"
    assert sensors(settings) == before + 1
    # kept: asked again, the same answer
    assert client.get(monitor, headers=h).json() == done.json()
    # an id that is not one
    r = client.get(f"{V}/$batch/status/nope", headers=h)
    assert r.status_code == 404 and "'nope'" in r.json()["message"]


def test_an_async_multipart_batch_keeps_its_format_and_preferences(
    client: TestClient, settings: Settings
) -> None:
    h = key(settings, "entities:write")
    ctype, data = _multipart(
        [_http("POST", "Things", {"name": "T"}), _http("POST", "Sensors", SENSOR)]
    )
    prefer = "respond-async, odata.continue-on-error"
    r = client.post(BATCH, content=data, headers={**h, "Content-Type": ctype, "Prefer": prefer})
    assert r.status_code == 202
    done = _poll(client, r.headers["location"], h)
    assert done.headers["content-type"].startswith("multipart/mixed; boundary=")
    assert done.headers["preference-applied"] == "odata.continue-on-error=true"
    assert [_status(p)[0] for p in _parts(done)] == [400, 201]


def test_an_async_batch_needs_a_key_is_checked_first_and_expires(settings: Settings) -> None:
    one_reading(settings)
    settings.api.batch_async_keep_seconds = 1
    with TestClient(create_app(settings)) as c:
        before = sensors(settings)
        body = {"requests": [_sensor("s")]}
        r = c.post(BATCH, json=body, headers={"Prefer": "respond-async"})
        assert r.status_code == 401
        assert "asynchronous $batch" in r.json()["message"]
        # a malformed batch is refused at once, not accepted
        h = key(settings, "entities:write")
        r = c.post(
            BATCH, json={"requests": [{"id": "1"}]}, headers={**h, "Prefer": "respond-async"}
        )
        assert r.status_code == 400 and '"method"' in r.json()["message"]
        r = c.post(BATCH, json=body, headers={**h, "Prefer": "respond-async"})
        assert r.status_code == 202
        monitor = r.headers["location"]
        assert answers(_poll(c, monitor, h))["s"]["status"] == 201
        assert sensors(settings) == before + 1
        time.sleep(1.5)  # api.batch_async_keep_seconds
        r = c.get(monitor, headers=h)
        assert r.status_code == 404 and "kept 1 s" in r.json()["message"]
        assert scalar(settings, "select count(*) from batch_async") == 0


# --------------------------------------------------------------------------- multipart helpers
def _http(
    method: str,
    url: str,
    body: Any = None,
    content_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id:
        head += f"Content-ID: {content_id}\r\n"
    inner = f"{method} {url} HTTP/1.1\r\n"
    inner += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    if body is not None:
        return f"{head}\r\n{inner}Content-Type: application/json\r\n\r\n{json.dumps(body)}\r\n"
    return f"{head}\r\n{inner}\r\n"


def _multipart(items: list[str | list[str]]) -> tuple[str, bytes]:
    out = []
    for k, item in enumerate(items):
        if isinstance(item, list):
            cs = f"changeset_{k}"
            inner = "".join(f"--{cs}\r\n{x}" for x in item) + f"--{cs}--\r\n"
            out.append(f"--batch_1\r\nContent-Type: multipart/mixed; boundary={cs}\r\n\r\n{inner}")
        else:
            out.append(f"--batch_1\r\n{item}")
    return "multipart/mixed; boundary=batch_1", ("".join(out) + "--batch_1--\r\n").encode()


def _parts(r: Any) -> list[Any]:
    assert r.status_code == 200, r.text
    head = f"Content-Type: {r.headers['content-type']}\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + r.content)
    return list(msg.iter_parts())


def _status(part: Any) -> tuple[int, Any]:
    payload = part.get_payload(decode=True)
    line, _, rest = payload.partition(b"\r\n")
    body = rest.split(b"\r\n\r\n", 1)[1].strip() if b"\r\n\r\n" in rest else b""
    return int(line.split()[1]), json.loads(body) if body else None
