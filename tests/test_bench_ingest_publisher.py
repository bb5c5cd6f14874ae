"""bench/ingest.py's live publishers: the lean C publisher (bench/mqtt_pub.c, libmosquitto) is
built and publishes N readings that the ingester stores exactly, with the payload the Python
publisher writes; the benchmark's live run works with either publisher and loses nothing.

``libmosquitto-dev`` is installed here if it is missing, as the suite installs its other Debian
packages (as root, apt-get; ``make deps`` runs ``bench/mqtt_pub.py --install`` too). Without
root the build test fails with the command to run, it does not skip."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import orjson
import psycopg
import pytest
from conftest import ServiceUrls

from quartier.config import Settings
from quartier.ingest.mqtt import Ingester

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


mqtt_pub = _load("mqtt_pub")
bench = _load("ingest")


@pytest.fixture(scope="module")
def binary() -> Path:
    """The C publisher, built (and its package installed, as root) if needed."""
    return mqtt_pub.build(install=True)  # raises BuildError naming the command: no skip


@pytest.fixture
def ingester(settings: Settings) -> Iterator[tuple[Ingester, list[tuple[float, list[bytes]]]]]:
    ing = Ingester(settings)
    commits: list[tuple[float, list[bytes]]] = []
    ing.on_committed = lambda msgs: commits.append((time.time(), [m.payload for m in msgs]))
    thread = threading.Thread(target=ing.run, daemon=True)
    thread.start()
    assert ing.connected.wait(10)
    yield ing, commits
    ing.stop_event.set()
    thread.join(15)
    assert not thread.is_alive()
    assert ing.failed is None


def _wait_committed(ing: Ingester, n: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while ing.committed() < n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ing.committed() == n, (ing.stats, ing.failed, ing.buffered())


def test_a_missing_package_is_named_with_the_command_that_installs_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(mqtt_pub, "BINARY", tmp_path / "mqtt_pub")  # not built yet
    monkeypatch.setattr(mqtt_pub, "missing_packages", lambda: ["libmosquitto-dev"])
    with pytest.raises(mqtt_pub.BuildError) as info:
        mqtt_pub.build()
    assert "apt-get install libmosquitto-dev" in str(info.value)
    assert "--publisher python" in str(info.value)
    assert not mqtt_pub.available()
    with pytest.raises(mqtt_pub.BuildError, match="plain mqtt://"):
        mqtt_pub.command("mqtts://127.0.0.1:8883", rate=1, count=1)


def test_the_publisher_line_is_parsed() -> None:
    p = mqtt_pub.parse_result(
        "sent=10 acked=10 failed=0 seconds=1.250 send_seconds=1.001 lag_max_ms=3.5"
    )
    assert (p.sent, p.acked, p.failed, p.send_seconds, p.lag_max_ms) == (10, 10, 0, 1.001, 3.5)


@pytest.mark.services
def test_the_c_publisher_publishes_n_readings_that_are_stored_exactly(
    binary: Path,
    ingester: tuple[Ingester, list[tuple[float, list[bytes]]]],
    settings: Settings,
    db_url: str,
    network: str,
) -> None:
    ing, commits = ingester
    n, devices, rate = 3000, 30, 3000.0
    assert binary.exists() and binary.stat().st_mtime >= mqtt_pub.SOURCE.stat().st_mtime
    before = datetime.now(UTC)
    pub = mqtt_pub.publish(
        settings.require_mqtt_url(), rate=rate, count=n, network=network, devices=devices
    )
    after = datetime.now(UTC)
    assert (pub.sent, pub.acked, pub.failed) == (n, n, 0)
    assert pub.send_seconds >= (n - 1) / rate * 0.95  # paced, not a burst
    _wait_committed(ing, n)
    # each payload is what the Python publisher writes (orjson, isoformat UTC time; C always
    # prints the microseconds, Python drops ".000000", which parses alike)
    payloads = [p for _, ps in commits for p in ps]
    assert len(payloads) == n
    for p in payloads:
        d = orjson.loads(p)
        t = datetime.fromisoformat(d["time"])
        python = {"time": t.isoformat(timespec="microseconds"), "quantity": "pm25"}
        assert p == orjson.dumps({**python, "value": d["value"]}), p
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select d.device_key, dd.quantity, o.phenomenon_time, o.result from observation o"
            " join device_datastream dd on dd.datastream_id = o.datastream_id"
            " join device d on d.id = dd.device_id where d.network = %s",
            (network,),
        ).fetchall()
        rejects = conn.execute("select count(*) from ingest_reject").fetchone()
    assert rejects == (0,)
    assert len(rows) == n  # every message once: nothing lost, nothing twice
    got: dict[str, list[float]] = defaultdict(list)
    for device, quantity, t, value in rows:
        assert quantity == "pm25"
        assert before <= t <= after  # stamped with its publish time
        got[device].append(value)
    want: dict[str, list[float]] = defaultdict(list)
    for i in range(n):  # message i comes from dev-(i % devices) with value (i % 500) / 10
        want[f"dev-{i % devices}"].append((i % 500) / 10)
    assert {d: sorted(v) for d, v in got.items()} == {d: sorted(v) for d, v in want.items()}


@pytest.fixture(scope="module")
def bench_template(service_urls: ServiceUrls) -> Iterator[str]:
    name = bench.prepared_db(service_urls.database_url)
    yield name
    with psycopg.connect(service_urls.database_url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")


@pytest.mark.services
@pytest.mark.parametrize("publisher", ["c", "python"])
def test_a_live_run_of_the_benchmark_stores_everything(
    publisher: str, binary: Path, service_urls: ServiceUrls, bench_template: str
) -> None:
    admin = service_urls.database_url
    cpu = bench.CpuSplit(None, bench.postmaster_of(admin))
    lv = bench.live(
        admin,
        bench_template,
        service_urls.mqtt_url,
        rate=1000,
        seconds=2,
        adaptive=True,
        publishers=2 if publisher == "python" else 1,
        publisher=publisher,
        cpu=cpu,
    )
    assert lv["sent"] == 2000 and lv["acked_by_broker"] == 2000
    assert lv["stored"] == 2000 and lv["lost"] == 0
    assert 0 < lv["p50_ms"] <= lv["p99_ms"] <= lv["max_ms"]
    assert lv["in_p50_ms"] <= lv["p50_ms"] + 1  # the ingester's share is part of the whole
    assert 0 <= lv["to_p50_ms"] <= lv["p50_ms"] + 1  # and so is the way to the ingester
    assert lv["rate"] > 0 and lv["pub_lag_max_ms"] >= 0
    assert 0 < lv["held_max"] <= 2000  # the ingester's unacknowledged messages were sampled
    share = lv["cpu"]
    stages = {"ingester:mqtt", "ingester:decode", "ingester:writers"}
    assert set(share) == {"publishers", "broker", "ingester", "postgres", "rest"} | stages
    assert share["ingester"] > 0 and share["postgres"] > 0  # the meter sees the work
    assert share["ingester:mqtt"] > 0 and share["ingester:writers"] > 0
    assert sum(share[k] for k in stages) <= share["ingester"] + 1  # threads of that process
    assert "loss met" in bench.verdict_line(5000.0, lv)
    assert "rate not reached" in bench.verdict_line(5000.0, lv)  # 1,000/s is not 5,000
