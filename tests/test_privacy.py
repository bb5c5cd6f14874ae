"""Privacy by design (issue #12 item 5, docs/privacy.md): pseudonymised device keys, retention of
raw crowdsourced data, k-anonymous cell aggregates, coarsened positions of personal devices, and
the answers to access and erasure requests. Against real PostgreSQL and Mosquitto."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from quartier.api.app import create_app
from quartier.cli.main import app as cli_app
from quartier.config import PrivacySettings, Settings
from quartier.errors import ConfigError
from quartier.geo import grid
from quartier.geo.input_store import load_inputs, write_speedtests
from quartier.geo.io import load_speedtests
from quartier.geo.speedtest_cells import classify_cells, contributed_cells
from quartier.ingest.model import Batch, Position, Reading, Uplink
from quartier.ingest.mqtt import Ingester
from quartier.ingest.mqtt_client import mqtt_client
from quartier.ingest.ttn import decode_ttn
from quartier.ingest.writer import BatchWriter
from quartier.pseudonym import Pseudonymizer, is_pseudonym, pseudonymizer
from quartier.store.policy import StorePolicy
from quartier.store.rollups import run_maintenance

SECRET = "a-test-secret-that-is-long-enough"
NOW = datetime.now(UTC).replace(microsecond=0)
DOM = (6.9583, 50.9413)  # Kölner Dom, lon/lat
TTN_SAMPLES = Path(__file__).parent / "data" / "ttn_uplinks" / "thingsboard_data_converters"


def wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met within timeout")


def rows(url: str, query: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def with_privacy(s: Settings, **privacy: object) -> Settings:
    merged = PrivacySettings.model_validate({**s.privacy.model_dump(), **privacy})
    return s.model_copy(update={"privacy": merged})


# --- pseudonyms ----------------------------------------------------------------------------------


def test_pseudonym_is_keyed_stable_and_rotates() -> None:
    p1 = Pseudonymizer(SECRET.encode(), 1)
    a = p1("phone-4711")
    assert a == p1("phone-4711") == Pseudonymizer(SECRET.encode(), 1)("phone-4711")
    assert is_pseudonym(a) and a.startswith("p1-") and "4711" not in a
    assert p1("phone-4712") != a
    rotated = Pseudonymizer(b"another-secret-0123456789", 2)("phone-4711")
    assert rotated.startswith("p2-") and rotated[3:] != a[3:]  # unlinked after rotation
    assert Pseudonymizer(b"another-secret-0123456789", 1)("phone-4711")[3:] != a[3:]
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        Pseudonymizer(b"short")


def test_secret_is_required_outside_development_and_generated_in_it(tmp_path: Path) -> None:
    # production (copied past the other production checks, which are not this test's concern)
    prod = Settings(_env_file=None).model_copy(update={"environment": "production"})
    with pytest.raises(ConfigError, match="QUARTIER_PRIVACY__PSEUDONYM_SECRET"):
        pseudonymizer(prod)
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    from_file = with_privacy(prod, pseudonym_secret_file=secret_file)
    assert pseudonymizer(from_file)("d") == Pseudonymizer(SECRET.encode())("d")

    dev = Settings(_env_file=None, services={"state_dir": tmp_path / "state"})
    first = pseudonymizer(dev)("d")
    made = tmp_path / "state" / "pseudonym-secret"
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert pseudonymizer(dev)("d") == first  # the generated secret is kept


# --- ingest over MQTT ----------------------------------------------------------------------------


@contextmanager
def running(s: Settings) -> Iterator[Ingester]:
    ing = Ingester(s)
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    assert ing.connected.wait(10)
    time.sleep(0.2)  # SUBACK
    try:
        yield ing
    finally:
        ing.stop_event.set()
        thread.join(15)
        assert not thread.is_alive()


def publish(s: Settings, msgs: list[tuple[str, bytes]]) -> None:
    client, host, port = mqtt_client(s.require_mqtt_url(), f"{s.ingest.client_id}-pub")
    client.connect(host, port)
    client.loop_start()
    for info in [client.publish(t, p, qos=1) for t, p in msgs]:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def speedtest(when: datetime, down: float = 80.0) -> bytes:
    return orjson.dumps(
        {"time": when.isoformat(), "lat": DOM[1], "lon": DOM[0], "download_mbps": down}
    )


@pytest.mark.services
def test_speedtest_over_mqtt_is_stored_under_a_pseudonym_that_rotates(
    settings: Settings, network: str, db_url: str
) -> None:
    raw = f"phone-{network}"
    topic = f"quartier/v1/{network}/{raw}/speedtest"
    s1 = with_privacy(settings, pseudonym_secret=SECRET, pseudonym_key_id=1)
    with running(s1):
        publish(s1, [(topic, speedtest(NOW - timedelta(minutes=2)))])
        wait_for(lambda: rows(db_url, "select count(*) from speedtest")[0][0] == 1)
    s2 = with_privacy(settings, pseudonym_secret="rotated-secret-0123456789", pseudonym_key_id=2)
    with running(s2):
        publish(s2, [(topic, speedtest(NOW - timedelta(minutes=1)))])
        wait_for(lambda: rows(db_url, "select count(*) from speedtest")[0][0] == 2)
    keys = [r[0] for r in rows(db_url, "select device_key from speedtest order by measured_at")]
    assert keys == [
        Pseudonymizer(SECRET.encode(), 1)(raw),
        Pseudonymizer(b"rotated-secret-0123456789", 2)(raw),
    ]
    assert keys[0] != keys[1] and keys[1].startswith("p2-")
    # the raw key is nowhere in the stored speed tests
    assert (
        rows(db_url, "select count(*) from speedtest where device_key like %s", (f"%{raw}%",))[0][0]
        == 0
    )


# --- retention -----------------------------------------------------------------------------------


@pytest.mark.services
def test_retention_deletes_old_raw_rows_in_a_maintenance_round(
    settings: Settings, db_url: str
) -> None:
    old, new = NOW - timedelta(days=91), NOW - timedelta(days=89)
    with psycopg.connect(db_url) as conn:
        for when, key in ((old, "p1-old"), (new, "p1-new")):
            conn.execute(
                "insert into speedtest (measured_at, source, device_key, geom, download_mbps)"
                " values (%s, 'app', %s, ST_SetSRID(ST_MakePoint(6.95, 50.94), 4326), 50)",
                (when, key),
            )
            conn.execute(
                "insert into mobile_measurement (measured_at, source, device_key, geom,"
                " technology, operator, rsrp_dbm) values"
                " (%s, 'app', %s, ST_SetSRID(ST_MakePoint(6.95, 50.94), 4326), '4G', 'T', -90)",
                (when, key),
            )
            conn.execute(
                "insert into ingest_reject (received_at, topic, payload, reason, detail)"
                " values (%s, %s, %s, 'invalid_speedtest', 'x')",
                (when, f"quartier/v1/app/{key}/speedtest", key.encode()),
            )
        conn.execute(  # a sensor's refused reading: not personal, kept by this step
            "insert into ingest_reject (received_at, topic, payload, reason, detail)"
            " values (%s, 'quartier/v1/city/air-1/up', 'x', 'invalid_format', 'x')",
            (old,),
        )
    stop = threading.Event()
    run_maintenance(
        db_url,
        StorePolicy.from_settings(settings.database),
        stop,
        every_s=0.1,
        raw_retention=timedelta(days=90),
        after_round=lambda _c: stop.set(),  # exactly one round
    )
    assert rows(db_url, "select device_key from speedtest") == [("p1-new",)]
    assert rows(db_url, "select device_key from mobile_measurement") == [("p1-new",)]
    assert sorted(r[0] for r in rows(db_url, "select topic from ingest_reject")) == [
        "quartier/v1/app/p1-new/speedtest",
        "quartier/v1/city/air-1/up",
    ]


# --- k-anonymity ---------------------------------------------------------------------------------

K = 5
#: lower-left corners (EPSG:3035) of a few neighbouring cells in Köln
CELLS = [(4107200 + 100 * i, 3096600 + 100 * j) for i in range(3) for j in range(2)]


def world(draw_cells: list[int], draw_devices: list[int], speeds: list[float]) -> pd.DataFrame:
    """Tests at random points inside the given cells, by the given devices."""
    rng = np.random.default_rng(len(draw_cells))
    e = np.array([CELLS[c][0] for c in draw_cells], dtype=np.float64) + rng.uniform(
        1, 99, len(draw_cells)
    )
    n = np.array([CELLS[c][1] for c in draw_cells], dtype=np.float64) + rng.uniform(
        1, 99, len(draw_cells)
    )
    lon, lat = grid.from_grid_crs(e, n)
    return pd.DataFrame(
        {
            "lon": lon,
            "lat": lat,
            "download_mbps": speeds,
            "device_key": [f"d{d}" for d in draw_devices],
        }
    )


def published_ok(tests: pd.DataFrame, k: int) -> None:
    cells = classify_cells(tests, min_contributors=k)
    if tests.empty:
        assert cells.empty
        return
    ids = grid.cell_index(tests["lon"].to_numpy(), tests["lat"].to_numpy())[0]
    devices = tests.assign(cell_id=ids).groupby("cell_id")["device_key"].nunique()
    counts = tests.assign(cell_id=ids).groupby("cell_id").size()
    for cell_id, n_tests in zip(cells["cell_id"], cells["n_tests"], strict=True):
        assert devices[cell_id] >= k  # never fewer than k contributors
        assert n_tests == counts[cell_id] >= k  # counts are whole, never below k
    # and every cell with k contributors is published (no needless suppression)
    assert set(cells["cell_id"]) == set(devices[devices >= k].index)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(
        st.tuples(st.integers(0, len(CELLS) - 1), st.integers(0, 12), st.floats(0, 2000)),
        max_size=120,
    ),
    k=st.integers(1, 8),
)
def test_published_cells_never_have_fewer_than_k_contributors(
    data: list[tuple[int, int, float]], k: int
) -> None:
    tests = world([c for c, _, _ in data], [d for _, d, _ in data], [v for _, _, v in data])
    published_ok(tests, k)


def test_one_device_with_a_hundred_tests_in_a_cell_publishes_nothing() -> None:
    tests = world([0] * 100, [7] * 100, [100.0] * 100)
    assert classify_cells(tests, min_contributors=K).empty
    # four more devices make it five: then the cell is published, with all its tests
    more = world([0] * 4, [1, 2, 3, 4], [50.0] * 4)
    cells = classify_cells(pd.concat([tests, more], ignore_index=True), min_contributors=K)
    assert cells["n_tests"].tolist() == [104]


def test_contributed_cells_counts_devices_not_rows() -> None:
    e = [0, 0, 0, 100, 100]
    n = [0, 0, 0, 0, 0]
    assert contributed_cells(e, n, ["a", "a", "a", "b", "c"], 2).tolist() == [
        False, False, False, True, True,
    ]  # fmt: skip


@pytest.mark.services
def test_analysis_inputs_hold_only_cells_with_k_devices(db_url: str) -> None:
    """A seeded random-world loop through the store: what the coverage analysis reads (and so
    publishes under /coverage, /ogc and the exports) never stems from fewer than k devices."""
    pseudonyms = Pseudonymizer(SECRET.encode())
    rng = np.random.default_rng(12)
    for round_ in range(4):
        n = int(rng.integers(20, 200))
        cells = rng.integers(0, len(CELLS), n).tolist()
        devices = rng.integers(0, int(rng.integers(1, 15)), n).tolist()
        tests = world(cells, devices, rng.uniform(1, 1000, n).tolist())
        tests["measured_at"] = [NOW - timedelta(seconds=i + 1000 * round_) for i in range(n)]
        with psycopg.connect(db_url) as conn:
            conn.execute("delete from speedtest")
            write_speedtests(conn, tests, f"r{round_}", pseudonyms)
            inputs = load_inputs(conn, min_contributors=K)
        ids = grid.cell_index(tests["lon"].to_numpy(), tests["lat"].to_numpy())[0]
        per_cell = tests.assign(cell_id=ids).groupby("cell_id")["device_key"].nunique()
        expected = tests.assign(cell_id=ids)["cell_id"].map(per_cell).ge(K).sum()
        assert len(inputs.speedtests) == expected
        got = grid.cell_ids(
            inputs.speedtests["cell_e"].to_numpy(), inputs.speedtests["cell_n"].to_numpy()
        )
        assert set(got) <= set(per_cell[per_cell >= K].index)


# --- positions of personal devices, via /v1.1 ----------------------------------------------------


def _write(url: str, *uplinks: Uplink) -> None:
    w = BatchWriter(url, auto_register=True)
    try:
        batch = Batch()
        for u in uplinks:
            batch.uplinks.append((u, "t", b"", NOW))
        w.write(batch)
    finally:
        w.close()


@pytest.mark.services
def test_citizen_device_is_published_at_its_cell_centre_without_history_or_gateway(
    settings: Settings, db_url: str
) -> None:
    t0 = NOW - timedelta(hours=2)
    here, there = Position(50.93712, 6.95873), Position(50.94321, 6.96532)
    _write(db_url, Uplink("citizen-air", "balcony-1", [Reading("pm25", t0, 5.0)], here))
    _write(
        db_url,
        Uplink(
            "citizen-air", "balcony-1", [Reading("pm25", t0 + timedelta(minutes=5), 6.0)], there
        ),
    )
    # a citizen device heard only through a gateway with a position: placed nowhere
    _write(
        db_url,
        Uplink(
            "citizen-air",
            "window-2",
            [Reading("pm25", t0, 7.0)],
            Position(50.95, 6.97),
            location_from_gateway=True,
        ),
    )
    # a LoRaWAN uplink whose gateway has a position and an id: neither reaches the store
    doc = orjson.loads(
        (TTN_SAMPLES / "Ezurio_RS26x__uplink_with_decoded_payload.json").read_bytes()
    )
    gateway = doc["uplink_message"]["rx_metadata"][0]
    gateway["location"] = {"latitude": 50.951, "longitude": 6.971, "source": "SOURCE_REGISTRY"}
    gateway_id = gateway["gateway_ids"]["gateway_id"]
    ttn = decode_ttn("ttn-citizens", orjson.dumps(doc), max_bytes=1 << 20)
    ttn.readings = [r._replace(time=t0) for r in ttn.readings]
    _write(db_url, ttn)
    # a city sensor keeps its exact position and its history
    _write(db_url, Uplink("city", "air-1", [Reading("pm25", t0, 9.0)], here))

    with TestClient(create_app(settings)) as client:
        things = {t["name"]: t for t in client.get("/v1.1/Things").json()["value"]}
        balcony = things["citizen-air/balcony-1"]["@iot.id"]
        locs = client.get(f"/v1.1/Things({balcony})/Locations").json()["value"]
        assert len(locs) == 1
        lon, lat = locs[0]["location"]["coordinates"]
        _, e, n = grid.cell_index([there.lon], [there.lat])
        centre = grid.cell_centres(e, n)
        assert lon == pytest.approx(centre[0][0], abs=1e-6)
        assert lat == pytest.approx(centre[1][0], abs=1e-6)
        assert client.get(f"/v1.1/Things({balcony})/HistoricalLocations").json()["value"] == []
        window = things["citizen-air/window-2"]["@iot.id"]
        assert client.get(f"/v1.1/Things({window})/Locations").json()["value"] == []
        # no Location anywhere at the exact reported points of the citizen device
        every = client.get("/v1.1/Locations").json()["value"]
        points = [tuple(loc["location"]["coordinates"]) for loc in every]
        assert (here.lon, here.lat) in points  # the city sensor's, exact
        assert (there.lon, there.lat) not in points
        assert len(every) == 2  # balcony (cell centre) and the city sensor
        city = things["city/air-1"]["@iot.id"]
        assert len(client.get(f"/v1.1/Things({city})/HistoricalLocations").json()["value"]) == 1
        ttn_thing = things[f"ttn-citizens/{ttn.device}"]["@iot.id"]
        assert client.get(f"/v1.1/Things({ttn_thing})/Locations").json()["value"] == []
        streams = client.get(f"/v1.1/Things({ttn_thing})/Datastreams").json()["value"]
        obs = client.get(f"/v1.1/Datastreams({streams[0]['@iot.id']})/Observations").json()
        assert obs["value"]
        text = json.dumps(obs)
        assert "gateway_id" not in text and gateway_id not in text
        assert all("rssi" in o["parameters"] for o in obs["value"])  # radio quality kept


# --- access and erasure --------------------------------------------------------------------------


@pytest.mark.services
def test_export_and_erase_answer_requests_and_erase_changes_the_aggregate(
    settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s = with_privacy(settings, pseudonym_secret=SECRET)
    pseudonyms = pseudonymizer(s)
    # five phones in the same cell, the first with three tests: the cell is published (k = 5)
    tests = world([0] * 7, [0, 0, 0, 1, 2, 3, 4], [10.0, 20.0, 30.0, 100.0, 100.0, 100.0, 100.0])
    tests["device_key"] = [f"phone-{d}" for d in [0, 0, 0, 1, 2, 3, 4]]
    tests["measured_at"] = [NOW - timedelta(minutes=i) for i in range(7)]
    with psycopg.connect(db_url) as conn:
        write_speedtests(conn, tests, "app", pseudonyms)
        conn.execute(
            "insert into ingest_reject (topic, payload, reason, detail) values"
            " ('quartier/v1/app/phone-0/speedtest', '{\"lat\": 50.9}', 'invalid_speedtest', 'x')"
        )
        before = classify_cells(load_speedtests(conn), min_contributors=K)
    assert before["n_tests"].tolist() == [7]

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUARTIER_DATABASE__URL", db_url)
    monkeypatch.setenv("QUARTIER_MQTT__URL", settings.require_mqtt_url())
    monkeypatch.setenv("QUARTIER_PRIVACY__PSEUDONYM_SECRET", SECRET)
    out = tmp_path / "export.json"
    r = CliRunner().invoke(cli_app, ["privacy", "export", "--device", "phone-0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["device"] == {"pseudonym": pseudonyms("phone-0"), "key": "phone-0"}
    assert len(data["speedtests"]) == 3
    assert {t["device_key"] for t in data["speedtests"]} == {pseudonyms("phone-0")}
    assert sorted(t["download_mbps"] for t in data["speedtests"]) == [10.0, 20.0, 30.0]
    assert [x["topic"] for x in data["rejects"]] == ["quartier/v1/app/phone-0/speedtest"]
    # by pseudonym, to standard output: the same speed tests
    r = CliRunner().invoke(cli_app, ["privacy", "export", "--device", pseudonyms("phone-1")])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["speedtests"]) == 1

    r = CliRunner().invoke(
        cli_app, ["privacy", "erase", "--device", "phone-0", "--reference", "DS-2026-17", "--yes"]
    )
    assert r.exit_code == 0, r.output
    assert rows(db_url, "select count(*) from speedtest where device_key = %s",
                (pseudonyms("phone-0"),))[0][0] == 0  # fmt: skip
    assert rows(db_url, "select count(*) from ingest_reject")[0][0] == 0
    assert rows(db_url, "select count(*) from speedtest")[0][0] == 4  # the others stay
    erasures = rows(db_url, "select reference, deleted::text from privacy_erasure")
    assert len(erasures) == 1 and erasures[0][0] == "DS-2026-17"
    assert "phone-0" not in erasures[0][1] and pseudonyms("phone-0") not in erasures[0][1]
    assert json.loads(str(erasures[0][1]))["speedtest"] == 3
    with psycopg.connect(db_url) as conn:
        after = classify_cells(load_speedtests(conn), min_contributors=K)
    assert after.empty  # four devices are left: below k, the cell is no longer published
    r = CliRunner().invoke(cli_app, ["privacy", "export", "--device", "phone-0"])
    data = json.loads(r.stdout)
    assert data["speedtests"] == [] and data["rejects"] == []


@pytest.mark.services
def test_erase_removes_a_citizen_devices_thing_and_observations(
    settings: Settings, db_url: str
) -> None:
    from quartier.store.privacy import erase_device, export_device

    t0 = NOW - timedelta(hours=1)
    _write(
        db_url, Uplink("citizen-air", "balcony-9", [Reading("pm25", t0, 5.0)], Position(50.9, 6.9))
    )
    _write(db_url, Uplink("city", "air-9", [Reading("pm25", t0, 5.0)], Position(50.9, 6.9)))
    p = Pseudonymizer(SECRET.encode())("balcony-9")
    with psycopg.connect(db_url) as conn:
        exported = export_device(conn, p, "balcony-9")
        assert [t["name"] for t in exported["things"]] == ["citizen-air/balcony-9"]
        assert exported["things"][0]["datastreams"][0]["observations"][0]["result"] == 5.0
        deleted = erase_device(conn, p, "balcony-9")
        conn.commit()
    assert deleted["thing"] == 1 and deleted["observation"] == 1
    assert [r[0] for r in rows(db_url, "select name from thing")] == ["city/air-9"]
    assert rows(db_url, "select count(*) from observation")[0][0] == 1
    assert rows(db_url, "select count(*) from location")[0][0] == 1
    assert rows(db_url, "select count(*) from device where device_key = 'balcony-9'")[0][0] == 0


def test_erasing_a_registered_device_says_to_revoke_it_and_restart_ingesters(
    settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running ingester keeps a registered device's ids: the command says what to do."""
    _write(
        db_url,
        Uplink(
            "citizen-air",
            "balcony-7",
            [Reading("pm25", NOW - timedelta(hours=1), 5.0)],
            Position(50.9, 6.9),
        ),
    )
    monkeypatch.setenv("QUARTIER_DATABASE__URL", db_url)
    monkeypatch.setenv("QUARTIER_MQTT__URL", settings.require_mqtt_url())
    monkeypatch.setenv("QUARTIER_PRIVACY__PSEUDONYM_SECRET", SECRET)
    r = CliRunner().invoke(cli_app, ["privacy", "erase", "--device", "balcony-7", "--yes"])
    assert r.exit_code == 0, r.output
    assert "1 thing" in " ".join(r.output.split())
    assert "quartier devices revoke" in " ".join(r.output.split())
    assert "restart running ingesters" in " ".join(r.output.split())


def test_generated_secret_file_is_not_world_readable(tmp_path: Path) -> None:
    dev = Settings(_env_file=None, services={"state_dir": tmp_path})
    pseudonymizer(dev)
    mode = os.stat(tmp_path / "pseudonym-secret").st_mode
    assert not mode & (stat.S_IRGRP | stat.S_IROTH)


@pytest.mark.services
def test_a_device_stored_before_its_network_counted_as_personal_is_coarsened(
    db_url: str,
) -> None:
    t0 = NOW - timedelta(hours=3)
    here, there = Position(50.93712, 6.95873), Position(50.94321, 6.96532)
    before = BatchWriter(db_url, auto_register=True, personal_networks=[])
    try:
        for i, where in enumerate((here, there)):
            batch = Batch()
            reading = Reading("pm25", t0 + timedelta(minutes=i), 5.0)
            batch.uplinks.append((Uplink("citizen-old", "b-1", [reading], where), "t", b"", NOW))
            before.write(batch)
    finally:
        before.close()
    assert rows(db_url, "select count(*) from historical_location")[0][0] == 2
    # the same position again, now with the default personal networks: coarsened, history gone
    _write(db_url, Uplink("citizen-old", "b-1", [Reading("pm25", t0 + timedelta(hours=1), 6.0)],
                          there))  # fmt: skip
    assert rows(db_url, "select count(*) from historical_location")[0][0] == 0
    locs = rows(db_url, "select ST_X(location), ST_Y(location) from location")
    _, e, n = grid.cell_index([there.lon], [there.lat])
    centre = grid.cell_centres(e, n)
    assert len(locs) == 1
    assert locs[0] == (pytest.approx(centre[0][0], abs=1e-6), pytest.approx(centre[1][0], abs=1e-6))
