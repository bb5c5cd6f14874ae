"""Ingest across hosts (issue #16 item 4): three `quartier ingest` processes on one MQTT 5 shared
subscription, with the database and the broker elsewhere (reached over TCP, as from other hosts),
one of them killed with SIGKILL under load and started again by its supervisor: every valid reading
is stored exactly once, every invalid one is a reject, and the other two went on storing while it
was away. Reuses the fault tests' module servers and helpers (``tests/test_faults.py``).
"""

from __future__ import annotations

import signal
import time

import pytest
from test_faults import World, _connected, _metric, _publish_async, own_services, world

from quartier.services import free_port

pytestmark = pytest.mark.services
__all__ = ["own_services", "world"]  # the fault tests' fixtures, used here

#: The readings published (5 % malformed) and their rate: about 12 s of traffic.
MESSAGES = 36_000
RATE = 3000


def received(port: int) -> int:
    return int(_metric(port, "quartier_ingest_received_total"))


def stored(w: World) -> int:
    return w.count("select count(*) from observation")


def test_three_ingesters_one_killed_under_load_lose_nothing(world: World) -> None:
    ports = {name: free_port() for name in ("w1", "w2", "w3")}
    procs = {
        name: world.start_ingester(name, "--metrics-port", str(port))
        for name, port in ports.items()
    }
    world.wait(lambda: all(_connected(p) for p in ports.values()), timeout=30)
    time.sleep(0.5)  # their SUBSCRIBEs follow the CONNACKs
    msgs, bad = world.readings(MESSAGES, bad_every=20)
    publisher = _publish_async(world, msgs, rate=RATE)
    world.wait(lambda: stored(world) > MESSAGES // 6)
    before_kill = {name: received(port) for name, port in ports.items()}
    assert all(n > 0 for n in before_kill.values()), before_kill  # all three share the load

    procs["w2"].send_signal(signal.SIGKILL)  # as a host that dies
    assert procs["w2"].wait(10) == -signal.SIGKILL
    at_kill = stored(world)
    # the two others go on storing while w2 is away
    world.wait(lambda: stored(world) > at_kill + MESSAGES // 6)
    others = {name: received(ports[name]) for name in ("w1", "w3")}
    assert all(others[n] > before_kill[n] for n in others), (before_kill, others)

    # its supervisor (systemd, Docker's restart policy, Kubernetes) starts it again: the same
    # client id takes over its persistent session and gets what the broker held for it
    ports["w2"] = free_port()
    world.start_ingester("w2", "--metrics-port", str(ports["w2"]))
    world.wait(lambda: _connected(ports["w2"]), timeout=30)
    publisher.join(120)
    assert not publisher.is_alive()
    world.assert_exactly(len(msgs) - bad, bad)  # nothing lost, nothing stored twice
    logs = world.stop_all()
    # the two survivors and the restarted w2 ended cleanly, each with its counters
    assert sum("IngestStats(received=" in " ".join(log.split()) for log in logs) == 3, logs
