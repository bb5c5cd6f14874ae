"""What SensorThings over MQTT costs the ingester: drain throughput with publishing off and on,
alternating in the same run.

    .venv/bin/python bench/sta_mqtt.py [--messages 100000] [--runs 3]

Starts its own PostgreSQL and Mosquitto (as the tests do: fsync off, the broker saving every
30 s; with the durable settings publishing the backlog alone takes minutes) unless
QUARTIER_TEST_DATABASE_URL / QUARTIER_TEST_MQTT_URL are set. Each run publishes a backlog of
single-reading messages from 1,000 devices into the ingester's persistent session
(bench/ingest.py's machinery), then times the ingester draining it. "on": the commit notices
installed in the ingester's process (the ``after_commit`` hook and its thread, what
``sta.mqtt_publish`` turns on), ``quartier sta-mqtt``'s service in a child process and a paho
subscriber to ``v1.1/Observations`` in another, so every observation is read back, shaped and
published; it also reports how long after the drain the subscriber had them all. Each run is a
fresh interpreter (a child process) on a fresh database. Prints the median and the spread per
mode and the ratio on/off.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quartier.ingest.mqtt import Ingester
from quartier.services import LocalServices
from quartier.sta_mqtt import notice as nt

_spec = importlib.util.spec_from_file_location(
    "bench_ingest", Path(__file__).with_name("ingest.py")
)
assert _spec is not None and _spec.loader is not None
bi = importlib.util.module_from_spec(_spec)
sys.modules["bench_ingest"] = bi
_spec.loader.exec_module(bi)


def service_child(db: str, mqtt_url: str, ready_file: str) -> None:
    """``quartier sta-mqtt``'s service until stdin closes."""
    from quartier.sta_mqtt.service import StaMqtt

    s = bi.settings_for(db, mqtt_url, "unused")
    service = StaMqtt(s, client_id=f"bench-sta-{uuid.uuid4().hex[:6]}", entity_interval=5)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    service.ready.wait(30)
    Path(ready_file).write_text(service.client_id)
    sys.stdin.read()
    service.stop_event.set()
    thread.join(30)


def subscriber_child(mqtt_url: str, count_file: str) -> None:
    """Count the messages on v1.1/Observations into ``count_file`` until stdin closes."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from quartier.config import parse_mqtt_url

    host, port, *_ = parse_mqtt_url(mqtt_url)
    n = [0]
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{uuid.uuid4().hex[:6]}")
    c.on_message = lambda *a: n.__setitem__(0, n[0] + 1)
    c.connect(host, port)
    c.subscribe("v1.1/Observations", qos=1)
    c.loop_start()
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(0.1):
            Path(count_file).write_text(str(n[0]))

    threading.Thread(target=report, daemon=True).start()
    sys.stdin.read()
    stop.set()
    Path(count_file).write_text(str(n[0]))
    c.disconnect()
    c.loop_stop()


def wait_file(path: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise RuntimeError(f"{path} not written within {timeout} s")


def one_run(
    admin: str, mqtt_url: str, msgs: list[tuple[str, bytes]], on: bool, subscribe: bool = True
) -> dict[str, float]:
    # a migrated template per run (bench/ingest.py's fresh_db copies one since session 6)
    db = bi.fresh_db(admin, bi.prepared_db(admin))
    cid = f"bench-{uuid.uuid4().hex[:6]}"
    s = bi.settings_for(db, mqtt_url, cid)
    seed = bi.register_devices(db, {topic.split("/")[3] for topic, _ in msgs})
    bi.open_session(mqtt_url, cid)
    bi.publish_all(mqtt_url, msgs)
    children: list[subprocess.Popen[str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-sta-"))
    notifier = None
    try:
        if on:
            me = [sys.executable, __file__]
            ready, counted = tmp / "ready", tmp / "count"
            children.append(
                subprocess.Popen(
                    [*me, "--service-child", db, mqtt_url, str(ready)],
                    stdin=subprocess.PIPE,
                    text=True,
                )
            )
            wait_file(ready)
        if on and subscribe:
            children.append(
                subprocess.Popen(
                    [*me, "--subscriber-child", mqtt_url, str(counted)],
                    stdin=subprocess.PIPE,
                    text=True,
                )
            )
            wait_file(counted)
            time.sleep(1.0)  # the service learns the subscription from the broker's log
        if on:
            notifier = nt.install()
        ing = Ingester(s)
        t0 = time.perf_counter()
        thread = threading.Thread(target=ing.run, daemon=True)
        thread.start()
        t1 = bi.wait_stored(ing.committed, len(msgs))
        out = {"msgs_per_s": len(msgs) / (t1 - t0)}
        ing.stop_event.set()
        thread.join(30)
        if on and not subscribe:
            assert notifier is not None
            out["dropped_notices"] = float(notifier.dropped)
        if on and subscribe:
            assert notifier is not None
            deadline = time.monotonic() + float(os.environ.get("BENCH_STA_WAIT", "300"))
            while int(wait_file(tmp / "count") or 0) < len(msgs) and time.monotonic() < deadline:
                time.sleep(0.05)
            out["published"] = float(wait_file(tmp / "count"))
            if out["published"] < len(msgs):
                print(f"  only {out['published']:.0f} of {len(msgs)} published", file=sys.stderr)
            out["lag_s"] = time.perf_counter() - t1
            out["dropped_notices"] = float(notifier.dropped)
        stored = bi.count_rows(db)
        if stored != len(msgs) + seed:
            raise RuntimeError(f"{stored} rows stored, {len(msgs) + seed} expected")
        return out
    finally:
        nt.uninstall()
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(60)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--service-child":
        service_child(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--subscriber-child":
        subscriber_child(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--run-child":  # one run in a fresh interpreter
        mode, db, mq, n = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
        r = one_run(db, mq, bi.single_messages(n), mode != "off", mode == "on")
        print("RESULT " + json.dumps(r), flush=True)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--modes",
        default="off,on",
        help="off, on (with a subscriber to v1.1/Observations), notices (no subscriber)",
    )
    args = ap.parse_args()
    db = os.environ.get("QUARTIER_TEST_DATABASE_URL")
    mq = os.environ.get("QUARTIER_TEST_MQTT_URL")
    local = None
    state_dir = None
    if not (db and mq):
        state_dir = Path(tempfile.mkdtemp(prefix="quartier-bench-sta-"))
        os.chmod(state_dir, 0o755)
        local = LocalServices(state_dir, fast_unsafe=True, allow_anonymous=True)
        state = local.up()
        db, mq = state.database_url, state.mqtt_url
    try:
        modes = args.modes.split(",")
        results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for i in range(args.runs):
            for mode in modes if i % 2 == 0 else modes[::-1]:
                child = subprocess.run(
                    [sys.executable, __file__, "--run-child", mode, db, mq, str(args.messages)],
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
                lines = [x for x in child.stdout.splitlines() if x.startswith("RESULT ")]
                if not lines:
                    raise RuntimeError(f"run {i + 1} {mode} failed: {child.stderr[-2000:]}")
                r = json.loads(lines[-1].removeprefix("RESULT "))
                results[mode].append(r)
                extra = ""
                if "lag_s" in r:
                    extra = (
                        f", subscriber got {r['published']:.0f} {r['lag_s']:.1f} s after the"
                        f" drain, notices dropped {r['dropped_notices']:.0f}"
                    )
                print(f"run {i + 1} {mode:3}: {r['msgs_per_s']:8.0f} msgs/s{extra}", flush=True)
        print(f"\n{args.messages} single-reading messages, {args.runs} runs per mode")
        med = {}
        for mode, rs in results.items():
            rates = [r["msgs_per_s"] for r in rs]
            med[mode] = statistics.median(rates)
            print(
                f"{mode:8}: median {med[mode]:8.0f} msgs/s"
                f" (min {min(rates):.0f}, max {max(rates):.0f})"
            )
        if results.get("on"):
            lags = [r["lag_s"] for r in results["on"]]
            print(f"on: all published {statistics.median(lags):.1f} s after the drain (median)")
        for mode in modes:
            if mode != "off" and "off" in med:
                print(f"{mode}/off: {med[mode] / med['off']:.2f}")
    finally:
        if local is not None:
            local.down()
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
