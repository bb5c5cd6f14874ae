"""Entity ETags and conditional requests of the SensorThings API against the real app and
database (``quartier/api/sta_etag.py``): every single-entity answer carries a weak ETag that
changes exactly when the entity does; ``If-None-Match`` makes a GET 304; ``If-Match`` /
``If-None-Match`` make a PATCH, PUT or DELETE 412 with nothing changed when they do not hold,
including when another write commits between the client's GET and its PATCH, or while the
PATCH is waiting for the entity's row."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sta_helpers import T0, key, one_reading, scalar

from quartier.api.app import create_app
from quartier.api.sensorthings import observation_id
from quartier.config import Settings

pytestmark = pytest.mark.services
V = "/v1.1"
TAG = re.compile(r'^W/"[0-9a-f]{32}"$')
OBS = f"{V}/Observations('{observation_id(1, T0)}')"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """Thing 1 (``net/a-1``) with Datastream 1 and one Observation at T0."""
    one_reading(settings)
    with TestClient(create_app(settings)) as c:
        yield c


def description(settings: Settings) -> Any:
    return scalar(settings, "select description from thing where id = 1")


def etag(r: Any) -> str:
    assert r.status_code in (200, 201), r.text
    tag = r.headers["etag"]
    assert TAG.match(tag), tag
    return str(tag)


def test_an_entity_carries_a_weak_etag_that_changes_exactly_when_it_does(
    client: TestClient, settings: Settings
) -> None:
    h = key(settings, "entities:write", "observations:write")
    first = etag(client.get(f"{V}/Things(1)"))
    # the same state: the same tag, whatever the host, $select or gzip
    assert etag(client.get(f"{V}/Things(1)")) == first
    assert etag(client.get(f"{V}/Things(1)", headers={"Host": "example.org"})) == first
    assert etag(client.get(f"{V}/Things(1)?$select=name")) == first
    assert etag(client.get(f"{V}/Things(1)", headers={"Accept-Encoding": "gzip"})) == first
    # another entity's change leaves it
    r = client.post(
        f"{V}/Sensors",
        json={"name": "s", "description": "d", "encodingType": "text/html", "metadata": "m"},
        headers=h,
    )
    sensor_tag = etag(r)
    assert etag(client.get(r.headers["location"])) == sensor_tag  # a 201's tag is the GET's
    assert etag(client.get(f"{V}/Things(1)")) == first
    # a PATCH that sets what is stored changes nothing, so neither does the tag
    same = client.get(f"{V}/Things(1)").json()["description"]
    assert etag(client.patch(f"{V}/Things(1)", json={"description": same}, headers=h)) == first
    # a change: a new tag, which the PATCH answer and the next GET both carry
    changed = etag(client.patch(f"{V}/Things(1)", json={"description": "neu"}, headers=h))
    assert changed != first
    assert etag(client.get(f"{V}/Things(1)")) == changed
    # and changed back: the first tag again (the tag is of the content, not a counter)
    back = client.patch(f"{V}/Things(1)", json={"description": same}, headers=h)
    assert etag(back) == first
    # an Observation: its tag follows its result
    obs = etag(client.get(OBS))
    after = etag(client.patch(OBS, json={"result": 6.5}, headers=h))
    assert after != obs and etag(client.get(OBS)) == after


def test_if_none_match_makes_a_get_304_unless_it_expands(client: TestClient) -> None:
    tag = etag(client.get(f"{V}/Things(1)"))
    for asked in (tag, f'W/"{"0" * 32}", {tag}', "*", tag.removeprefix("W/")):
        r = client.get(f"{V}/Things(1)", headers={"If-None-Match": asked})
        assert r.status_code == 304, asked
        assert r.content == b"" and r.headers["etag"] == tag
    r = client.get(f"{V}/Things(1)", headers={"If-None-Match": f'W/"{"0" * 32}"'})
    assert r.status_code == 200 and r.json()["@iot.id"] == 1
    # $expand: the tag does not cover the Datastreams, so the answer is given in full
    r = client.get(f"{V}/Things(1)?$expand=Datastreams", headers={"If-None-Match": tag})
    assert r.status_code == 200 and r.json()["Datastreams"][0]["@iot.id"] == 1
    assert r.headers["etag"] == tag
    obs = etag(client.get(OBS))
    assert client.get(OBS, headers={"If-None-Match": obs}).status_code == 304


def test_a_patch_with_if_match_after_a_concurrent_update_is_412_and_changes_nothing(
    client: TestClient, settings: Settings
) -> None:
    h = key(settings, "entities:write")
    read = etag(client.get(f"{V}/Things(1)"))
    # another client changes the Thing between our GET and our PATCH
    theirs = client.patch(f"{V}/Things(1)", json={"description": "theirs"}, headers=h)
    assert theirs.status_code == 200
    r = client.patch(
        f"{V}/Things(1)", json={"description": "ours"}, headers={**h, "If-Match": read}
    )
    assert r.status_code == 412, r.text
    err = r.json()
    assert err["code"] == 412 and err["type"] == "PreconditionFailedError"
    assert "Thing 1 has changed" in err["message"] and read in err["message"]
    assert theirs.headers["etag"] in err["message"]  # names the current tag
    assert "nothing was changed" in err["message"]
    assert description(settings) == "theirs"
    # PUT and DELETE the same
    put = {"name": "net/a-1", "description": "ours"}
    r = client.put(f"{V}/Things(1)", json=put, headers={**h, "If-Match": read})
    assert r.status_code == 412 and description(settings) == "theirs"
    r = client.delete(f"{V}/Things(1)", headers={**h, "If-Match": read})
    assert r.status_code == 412
    assert scalar(settings, "select count(*) from thing where id = 1") == 1
    # read again, retry: done
    current = etag(client.get(f"{V}/Things(1)"))
    r = client.patch(
        f"{V}/Things(1)", json={"description": "ours"}, headers={**h, "If-Match": current}
    )
    assert r.status_code == 200 and description(settings) == "ours"
    assert r.headers["etag"] != current
    # If-Match: * holds for any existing entity; If-None-Match: * never does for a write
    r = client.patch(f"{V}/Things(1)", json={"description": "x"}, headers={**h, "If-Match": "*"})
    assert r.status_code == 200
    r = client.patch(
        f"{V}/Things(1)", json={"description": "y"}, headers={**h, "If-None-Match": "*"}
    )
    assert r.status_code == 412 and "If-None-Match" in r.json()["message"]
    assert description(settings) == "x"
    # a GET whose If-Match does not hold is a 412 too
    r = client.get(f"{V}/Things(1)", headers={"If-Match": read})
    assert r.status_code == 412


def test_the_if_match_check_sees_a_write_that_commits_while_it_waits_for_the_row(
    client: TestClient, settings: Settings
) -> None:
    """The check runs on the locked row in the PATCH's transaction: a transaction that holds
    the row when the PATCH comes and commits a change makes it 412 (a check before the lock
    would pass on the old state and then overwrite the change)."""
    h = key(settings, "entities:write")
    read = etag(client.get(f"{V}/Things(1)"))
    result: dict[str, Any] = {}

    def patch() -> None:
        result["r"] = client.patch(
            f"{V}/Things(1)", json={"description": "ours"}, headers={**h, "If-Match": read}
        )

    with psycopg.connect(settings.require_database_url()) as other:
        other.execute("update thing set description = 'theirs' where id = 1")
        t = threading.Thread(target=patch)
        t.start()
        deadline = time.monotonic() + 30
        waiting = 0
        while time.monotonic() < deadline and not waiting:  # the PATCH waits for the row
            waiting = int(
                scalar(
                    settings,
                    "select count(*) from pg_locks"
                    " where not granted and locktype = 'transactionid'",
                )
            )
            time.sleep(0.05)
        assert waiting, "the PATCH never waited for the row lock"
        assert "r" not in result
        other.commit()
    t.join(30)
    r = result["r"]
    assert r.status_code == 412, r.text
    assert description(settings) == "theirs"


def test_observations_honour_if_match(client: TestClient, settings: Settings) -> None:
    h = key(settings, "observations:write")
    read = etag(client.get(OBS))
    assert client.patch(OBS, json={"result": 7}, headers=h).status_code == 200
    r = client.patch(OBS, json={"result": 8}, headers={**h, "If-Match": read})
    assert r.status_code == 412 and f"Observation '{observation_id(1, T0)}'" in r.json()["message"]
    r = client.delete(OBS, headers={**h, "If-Match": read})
    assert r.status_code == 412
    assert scalar(settings, "select result from observation where datastream_id = 1") == 7
    current = etag(client.get(OBS))
    assert client.delete(OBS, headers={**h, "If-Match": current}).status_code == 200
    assert scalar(settings, "select count(*) from observation where datastream_id = 1") == 0


@pytest.mark.parametrize(
    ("header", "value"),
    [("If-Match", "abc"), ("If-Match", 'W/"x", y'), ("If-None-Match", ""), ("If-Match", ",")],
)
def test_a_malformed_condition_is_a_400_naming_it(
    client: TestClient, settings: Settings, header: str, value: str
) -> None:
    h = key(settings, "entities:write")
    before = description(settings)
    r = client.patch(f"{V}/Things(1)", json={"description": "z"}, headers={**h, header: value})
    assert r.status_code == 400, r.text
    assert header in r.json()["message"]
    assert description(settings) == before
    r = client.get(f"{V}/Things(1)", headers={header: value})
    assert r.status_code == 400 and header in r.json()["message"]
