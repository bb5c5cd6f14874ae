"""What Mosquitto's persistence settings cost: QoS 1 publish → deliver throughput per config.

    .venv/bin/python bench/broker_durability.py [--runs 5] [--seconds 2] [--connections 1 50]
                                                [--queued] [--variant NAME='opt value; opt value']

Compares the broker config of `quartier/resources/mosquitto.conf` ("chosen") with the same config
saving every 30 s as before issue #10 ("today": `autosave_interval 30`), in the same run,
interleaved so that noise from the shared machine hits both alike. Each run starts a fresh
Mosquitto (persistence on, loopback, its own directory), a subscriber process on a persistent
QoS 1 session that keeps up (the ingester's role), then publishes QoS 1 for `--seconds` through
`--connections` client connections (1000 messages in flight in total) and times publish → the
last message delivered. Mosquitto saves once per loop turn at most, and a loop turn reads at most
one packet per connection, so the number of connections matters: one connection is a gateway or
bridge, many are devices. With `--queued` the subscriber is away (an ingester restarting): its
session queues everything, every save writes the whole queue, and the bench times publish →
PUBACK instead. Prints min / median / max per case and the ratio of medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quartier.services import MOSQUITTO_CONF, find_mosquitto, free_port, port_open

#: lines of the deploy config the bench sets itself
_OWN = ("listener", "persistence_location", "log_dest", "pid_file", "user", "port", "autosave")

SUBSCRIBER = r"""
import sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
port = int(sys.argv[1])
n = 0
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub", protocol=mqtt.MQTTv5)
def on_message(cl, u, m):
    global n
    n += 1
def on_subscribe(*a):
    print("ready", flush=True)
c.on_message = on_message
c.on_subscribe = on_subscribe
props = Properties(PacketTypes.CONNECT)
props.SessionExpiryInterval = 3600
props.ReceiveMaximum = 65535
c.connect("127.0.0.1", port, clean_start=False, properties=props)
c.subscribe("$share/bench/bench/#", 1)
c.loop_start()
line = sys.stdin.readline().strip()
if line == "away":  # leave; the session stays and queues everything
    c.disconnect()
    c.loop_stop()
    print("gone", flush=True)
    sys.exit(0)
want = int(line)
while n < want:
    time.sleep(0.0005)
print(time.time(), flush=True)
c.disconnect()
c.loop_stop()
"""


def config_text(autosave: list[str], root: Path, port: int) -> str:
    shared = [
        line
        for line in MOSQUITTO_CONF.read_text().splitlines()
        if not line.strip().startswith(_OWN)
    ]
    own = [
        f"listener {port} 127.0.0.1",
        f"persistence_location {root}/",
        f"log_dest file {root / 'mosquitto.log'}",
        "user root" if os.geteuid() == 0 else "",
    ]
    return "\n".join(own + shared + autosave) + "\n"


def autosave_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip().startswith("autosave")]


def one_run(
    autosave: list[str], seconds: float, connections: int, queued: bool = False
) -> tuple[float, int]:
    binary = find_mosquitto()
    assert binary is not None, "mosquitto is not installed"
    root = Path(tempfile.mkdtemp(prefix="bench-durability-"))
    port = free_port()
    (root / "mosquitto.conf").write_text(config_text(autosave, root, port))
    broker = subprocess.Popen(
        [str(binary), "-c", str(root / "mosquitto.conf")], stderr=subprocess.DEVNULL
    )
    sub: subprocess.Popen[str] | None = None
    pubs: list[mqtt.Client] = []
    try:
        deadline = time.monotonic() + 10
        while not port_open(port):
            if time.monotonic() > deadline:
                raise SystemExit("mosquitto did not start")
            time.sleep(0.02)
        sub = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sub.stdout is not None and sub.stdin is not None
        assert sub.stdout.readline().strip() == "ready"
        if queued:
            sub.stdin.write("away\n")
            sub.stdin.flush()
            assert sub.stdout.readline().strip() == "gone"
        window = max(1, 1000 // connections)
        acked = [0]

        def on_publish(*_: object) -> None:
            acked[0] += 1  # paho's threads; a lost increment only delays the publisher a little

        for k in range(connections):
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{k}")
            c.max_inflight_messages_set(window)
            c.max_queued_messages_set(0)
            c.on_publish = on_publish
            c.connect("127.0.0.1", port)
            c.loop_start()
            pubs.append(c)
        sent = 0
        t0 = time.time()
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            if sent - acked[0] > 2000:  # at most one window queued in paho beyond the in-flight
                time.sleep(0.0005)
                continue
            pubs[sent % connections].publish(f"bench/dev-{sent % 997}/up", b"x" * 80, qos=1)
            sent += 1
        if queued:  # nothing is delivered: publish → PUBACK while the queue grows
            return acked[0] / seconds, acked[0]
        sub.stdin.write(f"{sent}\n")
        sub.stdin.flush()
        line = sub.stdout.readline().strip()
        if not line:
            raise SystemExit("subscriber died")
        return sent / (float(line) - t0), sent
    finally:
        for c in pubs:
            c.disconnect()
            c.loop_stop()
        if sub is not None:
            sub.kill()
            sub.wait()
        broker.send_signal(signal.SIGTERM)
        broker.wait(30)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 50])
    ap.add_argument(
        "--queued",
        action="store_true",
        help="the subscriber is away: time publish → PUBACK while its queue grows",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        help="extra case NAME='autosave_on_changes true; autosave_interval 100'",
    )
    args = ap.parse_args()
    cases = {
        "today (autosave_interval 30)": ["autosave_interval 30"],
        "chosen (mosquitto.conf)": autosave_lines(MOSQUITTO_CONF.read_text()),
    }
    for v in args.variant:
        name, _, lines = v.partition("=")
        cases[name] = [ln.strip() for ln in lines.split(";") if ln.strip()]
    print(f"chosen = {cases['chosen (mosquitto.conf)']}")
    for conns in args.connections:
        results: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, lines in cases.items():
                rate, _sent = one_run(lines, args.seconds, conns, args.queued)
                results[name].append(rate)
        what = "publish → PUBACK, subscriber away" if args.queued else "publish → deliver"
        print(
            f"\n{what}, {conns} publisher connection(s), {args.runs} runs of"
            f" {args.seconds:g} s each:"
        )
        print(f"{'case':40} {'min':>9} {'median':>9} {'max':>9}  msgs/s")
        for name, rates in results.items():
            print(f"{name:40} {min(rates):9.0f} {statistics.median(rates):9.0f} {max(rates):9.0f}")
        base = statistics.median(results["today (autosave_interval 30)"])
        for name, rates in results.items():
            print(f"ratio {name} / today: {statistics.median(rates) / base:.3f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
