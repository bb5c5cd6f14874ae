"""SensorThings batch requests (OGC 18-088 11.2; OData 4.01 JSON batch and OData 4.0 multipart)
against the real app and database: creates that refer to entities made earlier in the batch,
change sets stored whole or not at all (checked in the database), GET and writes mixed,
authorisation per request, the request limit, and malformed batches answered 400 naming the
fault, never 500."""

from __future__ import annotations

import email.parser
import email.policy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sta_helpers import one_reading

from quartier.api.app import create_app
from quartier.config import Settings
from quartier.store import api_keys

pytestmark = pytest.mark.services
T0 = datetime(2026, 11, 1, tzinfo=UTC)
V = "/v1.1"
BATCH = f"{V}/$batch"
#: the tables a SensorThings write may touch
TABLES = (
    "thing",
    "location",
    "thing_location",
    "historical_location",
    "sensor",
    "observed_property",
    "datastream",
    "feature_of_interest",
    "observation",
)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A Thing ``net/a-1`` at (6.9, 50.9) with one Datastream (pm25, id 1) and one reading at
    T0."""
    one_reading(settings)
    with TestClient(create_app(settings)) as c:
        yield c


def key(settings: Settings, *scopes: str) -> str:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        _, token = api_keys.create(conn, "batch", scopes, created_by="test")
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rows(settings: Settings) -> dict[str, int]:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        out = {}
        for t in TABLES:
            row = conn.execute(f"select count(*) from {t}").fetchone()
            assert row is not None
            out[t] = int(row[0])
        return out


def scalar(settings: Settings, query: str, *params: Any) -> Any:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def answers(r: Any) -> dict[str, dict[str, Any]]:
    assert r.status_code == 200, r.text
    return {a["id"]: a for a in r.json()["responses"]}


SENSOR = {
    "name": "SDS011",
    "description": "laser",
    "encodingType": "application/pdf",
    "metadata": "https://example.org/sds011.pdf",
}


def observed_property(definition: str = "https://example.org/no2") -> dict[str, Any]:
    return {"name": "NO2", "definition": definition, "description": "nitrogen dioxide"}


def datastream(**links: Any) -> dict[str, Any]:
    return {
        "name": "NO2 Neumarkt",
        "description": "d",
        "observationType": "OM_Measurement",
        "unitOfMeasurement": {"name": "µg/m³", "symbol": "µg/m³"},
        **links,
    }


# --------------------------------------------------------------------------- JSON batch
def test_a_change_set_creates_entities_that_refer_to_each_other(
    client: TestClient, settings: Settings
) -> None:
    h = bearer(key(settings, "entities:write", "observations:write"))
    g = "station"
    body = {
        "requests": [
            {
                "id": "thing",
                "atomicityGroup": g,
                "method": "post",
                "url": "Things",
                "body": {"name": "Station Neumarkt", "description": "Luftmessstation"},
            },
            {
                "id": "loc",
                "atomicityGroup": g,
                "method": "post",
                "url": "$thing/Locations",
                "body": {
                    "name": "Neumarkt",
                    "description": "Neumarkt 1",
                    "encodingType": "application/geo+json",
                    "location": {"type": "Point", "coordinates": [6.946, 50.936]},
                },
            },
            {
                "id": "sensor",
                "atomicityGroup": g,
                "method": "post",
                "url": "Sensors",
                "body": SENSOR,
            },
            {
                "id": "op",
                "atomicityGroup": g,
                "method": "POST",
                "url": f"{V}/ObservedProperties",
                "body": observed_property(),
            },
            {
                "id": "ds",
                "atomicityGroup": g,
                "method": "post",
                "url": "$thing/Datastreams",
                "body": datastream(
                    Sensor={"@iot.id": "$sensor"}, ObservedProperty={"@iot.id": "$op"}
                ),
            },
            {
                "id": "obs",
                "atomicityGroup": g,
                "method": "post",
                "url": "$ds/Observations",
                "body": {"phenomenonTime": "2026-11-01T10:00:00Z", "result": 21.5},
            },
            # outside the change set, after it: reads what it stored
            {"id": "read", "method": "get", "url": "$ds/Observations", "dependsOn": [g]},
            {"id": "thing-again", "method": "get", "url": "$thing?$expand=Locations"},
        ]
    }
    a = answers(client.post(BATCH, json=body, headers=h))
    for rid in ("thing", "loc", "sensor", "op", "ds", "obs"):
        assert a[rid]["status"] == 201, a[rid]
        assert a[rid]["atomicityGroup"] == g
        assert a[rid]["headers"]["location"] == a[rid]["body"]["@iot.selfLink"]
    tid = a["thing"]["body"]["@iot.id"]
    ds = a["ds"]["body"]
    # stored, with the links the references made (checked in the database)
    assert scalar(settings, "select thing_id from datastream where id = %s", ds["@iot.id"]) == tid
    assert (
        scalar(settings, "select sensor_id from datastream where id = %s", ds["@iot.id"])
        == a["sensor"]["body"]["@iot.id"]
    )
    assert (
        scalar(settings, "select observed_property_id from datastream where id = %s", ds["@iot.id"])
        == a["op"]["body"]["@iot.id"]
    )
    assert (
        scalar(settings, "select location_id from thing_location where thing_id = %s", tid)
        == (a["loc"]["body"]["@iot.id"])
    )
    # the Observation got the automatic FeatureOfInterest of the Location made in the change set
    assert a["obs"]["body"]["result"] == 21.5
    assert "FeatureOfInterest@iot.navigationLink" in a["obs"]["body"]
    assert a["read"]["status"] == 200
    assert [o["result"] for o in a["read"]["body"]["value"]] == [21.5]
    assert a["thing-again"]["body"]["Locations"][0]["name"] == "Neumarkt"
    # each write audited as the route alone audits it
    n = scalar(settings, "select count(*) from audit_event where action like 'POST /v1.1/%%'")
    assert n == 6


def test_a_failed_request_rolls_its_whole_change_set_back(
    client: TestClient, settings: Settings
) -> None:
    h = bearer(key(settings, "entities:write", "observations:write"))
    before = rows(settings)
    body = {
        "requests": [
            {"id": "1", "atomicityGroup": "g", "method": "post", "url": "Sensors", "body": SENSOR},
            {
                "id": "2",
                "atomicityGroup": "g",
                "method": "post",
                "url": "Datastreams(1)/Observations",
                "body": {"phenomenonTime": "2026-11-01T11:00:00Z", "result": 1},
            },
            {
                "id": "3",
                "atomicityGroup": "g",
                "method": "post",
                "url": "Datastreams",
                "body": datastream(
                    Thing={"@iot.id": 1},
                    Sensor={"@iot.id": "$1"},
                    ObservedProperty={"@iot.id": 999},
                ),
            },
            {"id": "4", "atomicityGroup": "g", "method": "post", "url": "Sensors", "body": SENSOR},
            # independent of the change set: stored
            {
                "id": "5",
                "method": "post",
                "url": "ObservedProperties",
                "body": observed_property("https://example.org/o3"),
            },
            {"id": "6", "method": "get", "url": "$1", "dependsOn": ["g"]},
        ]
    }
    a = answers(client.post(BATCH, json=body, headers=h))
    assert a["3"]["status"] == 400
    assert "ObservedProperty" in a["3"]["body"]["message"] and "999" in a["3"]["body"]["message"]
    for rid in ("1", "2", "4"):
        assert a[rid]["status"] == 424, a[rid]
        assert "request '3' failed" in a[rid]["body"]["message"]
    assert a["5"]["status"] == 201
    assert a["6"]["status"] == 424
    after = rows(settings)
    assert after == {**before, "observed_property": before["observed_property"] + 1}
    assert scalar(settings, "select count(*) from sensor") == before["sensor"]
    at = datetime(2026, 11, 1, 11, tzinfo=UTC)
    assert scalar(settings, "select 1 from observation where phenomenon_time = %s", at) is None
    # the writer goes on after a rolled-back change set
    r = client.post(f"{V}/Sensors", json=SENSOR, headers=h)
    assert r.status_code == 201


def test_an_observation_conflict_in_a_change_set_rolls_it_back(
    client: TestClient, settings: Settings
) -> None:
    h = bearer(key(settings, "observations:write"))
    before = rows(settings)
    new = {"phenomenonTime": "2026-11-01T12:00:00Z", "result": 3}
    stored = {"phenomenonTime": T0.isoformat(), "result": 9}  # the fixture's reading is there
    body = {
        "requests": [
            {
                "id": "a",
                "atomicityGroup": "g",
                "method": "post",
                "url": "Datastreams(1)/Observations",
                "body": new,
            },
            {
                "id": "b",
                "atomicityGroup": "g",
                "method": "post",
                "url": "Datastreams(1)/Observations",
                "body": stored,
            },
        ]
    }
    a = answers(client.post(BATCH, json=body, headers=h))
    assert a["b"]["status"] == 409 and "already" in a["b"]["body"]["message"]
    assert a["a"]["status"] == 424
    assert rows(settings) == before
    assert scalar(settings, "select result from observation_latest where datastream_id = 1") == 5.0


def test_audit_rows_of_a_change_set_are_kept_only_when_it_commits(
    client: TestClient, settings: Settings
) -> None:
    """A rolled-back change set leaves no audit row of the requests that succeeded in it
    before the failure; a committed one leaves one per request; a request outside change
    sets is audited on its own."""
    h = bearer(key(settings, "entities:write"))

    def audited() -> list[tuple[str, str]]:
        with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
            got = conn.execute("select action, target from audit_event order by id").fetchall()
        return [(r[0], r[1]) for r in got]

    before = audited()
    bad = datastream(
        Thing={"@iot.id": 1}, Sensor={"@iot.id": "$s"}, ObservedProperty={"@iot.id": 9}
    )
    body = {
        "requests": [
            {"id": "s", "atomicityGroup": "g", "method": "post", "url": "Sensors", "body": SENSOR},
            {"id": "p", "atomicityGroup": "g", "method": "patch", "url": "Things(1)",
             "body": {"description": "neu"}},
            {"id": "d", "atomicityGroup": "g", "method": "post", "url": "Datastreams", "body": bad},
            {"id": "alone", "method": "post", "url": "Sensors", "body": SENSOR},
        ]
    }  # fmt: skip
    a = answers(client.post(BATCH, json=body, headers=h))
    assert [a[i]["status"] for i in ("s", "p", "d", "alone")] == [424, 424, 400, 201]
    # the failed change set's Sensor and PATCH are gone, and so are their audit rows
    assert audited() == [*before, ("POST /v1.1/Sensors", "/v1.1/Sensors")]
    assert scalar(settings, "select description from thing where id = 1") != "neu"
    # the same change set without the fault: one row per request, in order
    body["requests"] = body["requests"][:2]
    a = answers(client.post(BATCH, json=body, headers=h))
    assert [a[i]["status"] for i in ("s", "p")] == [201, 200]
    assert audited()[-2:] == [
        ("POST /v1.1/Sensors", "/v1.1/Sensors"),
        ("PATCH /v1.1/Things({entity_id})", "/v1.1/Things(1)"),
    ]
    assert len(audited()) == len(before) + 3
    n = scalar(settings, "select count(distinct api_key_id) from audit_event")
    assert n == 1


def test_a_committed_change_set_stands_when_its_audit_rows_cannot_be_written(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """The rows are written after the commit: if that fails, the stored change set is still
    answered as stored, and the lost rows are logged (never a 5xx for data that was stored)."""
    from quartier.api import sta_batch

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise psycopg.OperationalError("the server closed the connection")

    monkeypatch.setattr(sta_batch.audit, "record", refuse)
    h = bearer(key(settings, "entities:write"))
    before = rows(settings)["sensor"]
    body = {"requests": [
        {"id": "s", "atomicityGroup": "g", "method": "post", "url": "Sensors", "body": SENSOR},
    ]}  # fmt: skip
    a = answers(client.post(BATCH, json=body, headers=h))
    assert a["s"]["status"] == 201
    assert rows(settings)["sensor"] == before + 1
    assert "1 audit row(s) could not be written" in caplog.text
    assert "POST /v1.1/Sensors" in caplog.text


def test_get_and_writes_mixed_each_standing_alone(client: TestClient, settings: Settings) -> None:
    h = bearer(key(settings, "entities:write", "observations:write"))
    sensors = rows(settings)["sensor"]
    body = {
        "requests": [
            {"id": "root", "method": "get", "url": f"{V}/Things(1)"},
            {"id": "missing", "method": "get", "url": "Things(999)"},
            {"id": "bad", "method": "post", "url": "Things", "body": {"name": 5}},
            {
                "id": "after-bad",
                "method": "post",
                "url": "Things",
                "body": {"name": "T", "description": "d"},
            },
            {
                "id": "needs-bad",
                "method": "post",
                "url": "Sensors",
                "body": SENSOR,
                "dependsOn": ["bad"],
            },
            {"id": "patch", "method": "patch", "url": "$after-bad", "body": {"description": "neu"}},
            {"id": "read", "method": "get", "url": "$after-bad"},
            {"id": "csv", "method": "get", "url": "Datastreams(1)/Observations?$resultFormat=CSV"},
            {"id": "delete", "method": "delete", "url": "$after-bad"},
            {"id": "gone", "method": "get", "url": "Things?$filter=name eq 'T'&$count=true"},
        ]
    }
    a = answers(client.post(BATCH, json=body, headers=h))
    assert a["root"]["status"] == 200 and a["root"]["body"]["@iot.id"] == 1
    assert a["missing"]["status"] == 404
    assert a["bad"]["status"] == 400 and "name" in a["bad"]["body"]["message"]
    assert a["after-bad"]["status"] == 201
    assert a["needs-bad"]["status"] == 424
    assert a["patch"]["status"] == 200 and a["patch"]["body"]["description"] == "neu"
    assert a["read"]["body"]["description"] == "neu"
    assert a["csv"]["status"] == 200 and a["csv"]["headers"]["content-type"].startswith("text/csv")
    assert isinstance(a["csv"]["body"], str) and "5" in a["csv"]["body"]
    assert a["delete"]["status"] == 200
    assert a["gone"]["body"]["@iot.count"] == 0
    assert rows(settings)["sensor"] == sensors


def test_each_write_needs_its_own_scope(client: TestClient, settings: Settings) -> None:
    obs_key = key(settings, "observations:write")
    entities_key = key(settings, "entities:write")
    before = rows(settings)
    body = {
        "requests": [
            {
                "id": "thing",
                "method": "post",
                "url": "Things",
                "body": {"name": "T", "description": "d"},
            },
            {
                "id": "obs",
                "method": "post",
                "url": "Datastreams(1)/Observations",
                "body": {"phenomenonTime": "2026-11-01T13:00:00Z", "result": 4},
            },
            {
                "id": "own-key",
                "method": "post",
                "url": "Sensors",
                "headers": {"X-API-Key": entities_key},
                "body": SENSOR,
            },
            {"id": "read", "method": "get", "url": "Things(1)"},
        ]
    }
    a = answers(client.post(BATCH, json=body, headers=bearer(obs_key)))
    assert a["thing"]["status"] == 403
    assert "entities:write" in a["thing"]["body"]["message"]
    assert a["obs"]["status"] == 201
    assert a["own-key"]["status"] == 201
    assert a["read"]["status"] == 200
    assert rows(settings)["thing"] == before["thing"]
    # no key: every write 401, reads answered
    a = answers(client.post(BATCH, json=body))
    assert [a[i]["status"] for i in ("thing", "obs", "own-key", "read")] == [401, 401, 201, 200]
    # a change set with one write the key may not do stores nothing
    body = {
        "requests": [
            {
                "id": "o",
                "atomicityGroup": "g",
                "method": "post",
                "url": "Datastreams(1)/Observations",
                "body": {"phenomenonTime": "2026-11-01T14:00:00Z", "result": 4},
            },
            {
                "id": "t",
                "atomicityGroup": "g",
                "method": "post",
                "url": "Things",
                "body": {"name": "T", "description": "d"},
            },
        ]
    }
    n = rows(settings)["observation"]
    a = answers(client.post(BATCH, json=body, headers=bearer(obs_key)))
    assert (a["o"]["status"], a["t"]["status"]) == (424, 403)
    assert rows(settings)["observation"] == n


def test_more_requests_than_the_limit_is_413(settings: Settings) -> None:
    settings.api.max_batch_requests = 3
    with TestClient(create_app(settings)) as c:
        token = key(settings, "entities:write")
        req = {"method": "post", "url": "Sensors", "body": SENSOR}
        body = {"requests": [{**req, "id": str(i)} for i in range(4)]}
        r = c.post(BATCH, json=body, headers=bearer(token))
        assert r.status_code == 413
        assert "at most 3 requests" in r.json()["message"]
        assert rows(settings)["sensor"] == 0
        body = {"requests": [{**req, "id": str(i)} for i in range(3)]}
        a = answers(c.post(BATCH, json=body, headers=bearer(token)))
        assert [x["status"] for x in a.values()] == [201] * 3


GET = {"method": "get", "url": "Things(1)"}
POST = {"method": "post", "url": "Sensors", "body": SENSOR}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("{not json", "not JSON"),
        ([1, 2], '"requests" array'),
        ({"requests": {}}, '"requests" array'),
        ({"requests": [], "extra": 1}, "'extra'"),
        ({"requests": [7]}, "requests[0] must be an object"),
        ({"requests": [{"method": "get", "url": "Things"}]}, '"id" is required'),
        ({"requests": [{"id": "1", "method": "head", "url": "Things"}]}, '"method" must be one of'),
        ({"requests": [{"id": "1", "method": "get"}]}, '"url" is required'),
        ({"requests": [{**GET, "id": "1", "if": "$0"}]}, "'if'"),
        ({"requests": [{**GET, "id": "1"}, {**GET, "id": "1"}]}, "used twice"),
        (
            {"requests": [{**GET, "id": "1", "dependsOn": ["2"]}, {**GET, "id": "2"}]},
            "dependsOn '2'",
        ),
        ({"requests": [{**GET, "id": "1", "dependsOn": "x"}]}, "array of ids"),
        ({"requests": [{**GET, "id": "1", "headers": {"a": 1}}]}, "object of strings"),
        ({"requests": [{**GET, "id": "1", "headers": {"a": "x\r\nb: y"}}]}, "header 'a'"),
        ({"requests": [{**GET, "id": "1", "headers": {"Prüfung": "x"}}]}, "not a valid header"),
        ({"requests": [{**GET, "id": "1", "headers": {"a": "€"}}]}, "not a valid header"),
        ('{"requests": ' + "[" * 50_000 + "]" * 50_000 + "}", "nested too deeply"),
        ({"requests": [{**GET, "id": "1", "atomicityGroup": "g"}]}, "writes only"),
        (
            {
                "requests": [
                    {**POST, "id": "1", "atomicityGroup": "g"},
                    {**GET, "id": "2"},
                    {**POST, "id": "3", "atomicityGroup": "g"},
                ]
            },
            "adjacent",
        ),
        (
            {"requests": [{**GET, "id": "1", "url": "$2/Datastreams"}, {**POST, "id": "2"}]},
            "$2 names",
        ),
        (
            {"requests": [{**POST, "id": "1", "body": {"Thing": {"@iot.id": "$1"}}}]},
            "$1 names",
        ),
        ({"requests": [{**GET, "id": "1", "url": "/health"}]}, "not within the service"),
        ({"requests": [{**POST, "id": "1", "url": "$batch"}]}, "another $batch"),
        ({"requests": [{**POST, "id": "g", "atomicityGroup": "g"}]}, "is a request id too"),
    ],
)
def test_a_malformed_batch_is_a_400_naming_the_fault(
    client: TestClient, settings: Settings, body: Any, named: str
) -> None:
    before = rows(settings)
    token = key(settings, "entities:write")
    data = body if isinstance(body, str) else json.dumps(body)
    r = client.post(
        BATCH,
        content=data,
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert named in r.json()["message"]
    assert rows(settings) == before


def test_a_batch_of_another_media_type_is_a_400(client: TestClient) -> None:
    r = client.post(BATCH, content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 400
    assert "application/json" in r.json()["message"] and "multipart/mixed" in r.json()["message"]


# --------------------------------------------------------------------------- multipart
def _http(method: str, url: str, body: Any = None, content_id: str | None = None) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id:
        head += f"Content-ID: {content_id}\r\n"
    inner = f"{method} {url} HTTP/1.1\r\n"
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
    text = "".join(out) + "--batch_1--\r\n"
    return "multipart/mixed; boundary=batch_1", text.encode()


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


def test_multipart_batch_with_a_change_set_and_references(
    client: TestClient, settings: Settings
) -> None:
    h = bearer(key(settings, "entities:write", "observations:write"))
    ctype, data = _multipart(
        [
            _http("GET", "Things(1)"),
            [
                _http("POST", "Sensors", SENSOR, "s1"),
                _http("POST", "ObservedProperties", observed_property(), "p1"),
                _http(
                    "POST",
                    "Datastreams",
                    datastream(
                        Thing={"@iot.id": 1},
                        Sensor={"@iot.id": "$s1"},
                        ObservedProperty={"@iot.id": "$p1"},
                    ),
                    "d1",
                ),
                _http(
                    "POST",
                    "$d1/Observations",
                    {"phenomenonTime": "2026-11-01T10:00:00Z", "result": 2},
                    "o1",
                ),
            ],
            _http("GET", "Things(1)/Datastreams?$count=true"),
        ]
    )
    parts = _parts(client.post(BATCH, content=data, headers={**h, "Content-Type": ctype}))
    assert len(parts) == 3
    assert _status(parts[0])[0] == 200
    assert parts[1].get_content_type() == "multipart/mixed"
    inner = list(parts[1].iter_parts())
    assert [p["Content-ID"] for p in inner] == ["s1", "p1", "d1", "o1"]
    assert [_status(p)[0] for p in inner] == [201] * 4
    ds = _status(inner[2])[1]
    assert (
        scalar(settings, "select sensor_id from datastream where id = %s", ds["@iot.id"])
        == (_status(inner[0])[1]["@iot.id"])
    )
    status, listing = _status(parts[2])
    assert status == 200 and listing["@iot.count"] == 2


def test_a_failed_multipart_change_set_is_one_error_and_stores_nothing(
    client: TestClient, settings: Settings
) -> None:
    h = bearer(key(settings, "entities:write"))
    before = rows(settings)
    ctype, data = _multipart(
        [
            [
                _http("POST", "Sensors", SENSOR, "1"),
                _http("POST", "Things", {"name": "T"}, "2"),
            ],
            _http("POST", "Sensors", SENSOR),
        ]
    )
    # a multipart batch stops at its first failure unless it prefers continue-on-error
    # (tests/test_sta_batch_options.py)
    prefer = {"Prefer": "odata.continue-on-error"}
    parts = _parts(client.post(BATCH, content=data, headers={**h, **prefer, "Content-Type": ctype}))
    assert len(parts) == 2
    status, err = _status(parts[0])
    assert status == 400 and "description" in err["message"]
    assert _status(parts[1])[0] == 201
    assert rows(settings) == {**before, "sensor": before["sensor"] + 1}


@pytest.mark.parametrize(
    ("ctype", "data", "named"),
    [
        ("multipart/mixed", b"--x\r\n\r\n--x--", "boundary"),
        (
            "multipart/mixed; boundary=b",
            b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n",
            "not application/http",
        ),
        (
            "multipart/mixed; boundary=b",
            b"--b\r\nContent-Type: application/http\r\n\r\nFETCH x\r\n--b--\r\n",
            "request line",
        ),
        (
            "multipart/mixed; boundary=b",
            b"--b\r\nContent-Type: application/http\r\n\r\n"
            b"POST Things HTTP/1.1\r\n\r\n{no\r\n--b--\r\n",
            "not JSON",
        ),
    ],
)
def test_a_malformed_multipart_batch_is_a_400(
    client: TestClient, ctype: str, data: bytes, named: str
) -> None:
    r = client.post(BATCH, content=data, headers={"Content-Type": ctype})
    assert r.status_code == 400, r.text
    assert named in r.json()["message"]


def test_the_service_root_lists_the_batch_class(client: TestClient) -> None:
    root = client.get(V).json()
    spec = "http://www.opengis.net/spec/iot_sensing/1.1/req/"
    assert spec + "batch-request/batch-request" in root["serverSettings"]["conformance"]


def test_a_change_set_transaction_is_bounded_and_its_writer_reusable(settings: Settings) -> None:
    """The spare writer of a batch: a held transaction times out when left idle (its locks
    cannot hold up other writes for long), rolls back, and the writer serves the next one."""
    from quartier.api.sta_write import Held, _Writer

    wr = _Writer(settings).spare()
    try:
        held = Held(wr)
        row = held.reads().execute("show idle_in_transaction_session_timeout").fetchone()
        assert row is not None and row["idle_in_transaction_session_timeout"] == "30s"
        held.reads().execute(
            "insert into sensor (name, description, encoding_type, metadata)"
            " values ('x', 'y', 'application/pdf', 'z')"
        )
        held.end(False)
        assert scalar(settings, "select count(*) from sensor where name = 'x'") == 0
        held = Held(wr)
        held.reads().execute(
            "insert into sensor (name, description, encoding_type, metadata)"
            " values ('x', 'y', 'application/pdf', 'z')"
        )
        held.end(True)
        held.end(False)  # once ended, a no-op
        assert scalar(settings, "select count(*) from sensor where name = 'x'") == 1
        # outside a held transaction the setting is gone again
        row = held.reads().execute("show idle_in_transaction_session_timeout").fetchone()
        assert row is not None and row["idle_in_transaction_session_timeout"] == "0"
    finally:
        wr.close()
