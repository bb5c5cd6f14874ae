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

#: The readings published (5 % malformed), half before and half after the kill, and their rate:
#: about 6 s of traffic, longer on a busy machine (the waits allow for a load average of 20). The
#: kill comes after a twelfth is stored and the survivors must each take 1,000 more while w2 is
#: away: the second half (3 s at RATE) is still being published then. 24,000 messages proved
#: nothing more and cost 6 s of CI (session 9).
MESSAGES = 12_000
RATE = 2000


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
    world.wait(lambda: all(_connected(p) for p in ports.values()), timeout=120)
    time.sleep(0.5)  # their SUBSCRIBEs follow the CONNACKs
    first, bad1 = world.readings(MESSAGES // 2, bad_every=20)
    second, bad2 = world.readings(MESSAGES // 2, start=MESSAGES // 2, bad_every=20)
    good, bad = MESSAGES - bad1 - bad2, bad1 + bad2
    publisher = _publish_async(world, first, rate=RATE)
    world.wait(lambda: stored(world) > MESSAGES // 12, timeout=180)
    before_kill = {name: received(port) for name, port in ports.items()}
    assert all(n > 0 for n in before_kill.values()), before_kill  # all three share the load

    procs["w2"].send_signal(signal.SIGKILL)  # as a host that dies
    assert procs["w2"].wait(10) == -signal.SIGKILL
    # devices go on publishing while w2 is away; the two others go on storing
    publisher_2 = _publish_async(world, second, rate=RATE)
    world.wait(
        lambda: all(received(ports[n]) >= before_kill[n] + 1000 for n in ("w1", "w3")),
        timeout=180,
    )

    # its supervisor (systemd, Docker's restart policy, Kubernetes) starts it again: the same
    # client id takes over its persistent session and gets what the broker held for it
    ports["w2"] = free_port()
    world.start_ingester("w2", "--metrics-port", str(ports["w2"]))
    world.wait(lambda: _connected(ports["w2"]), timeout=120)
    for thread in (publisher, publisher_2):
        thread.join(300)
        assert not thread.is_alive()
    world.wait(lambda: stored(world) >= good, timeout=300)
    world.assert_exactly(good, bad)  # nothing lost, nothing stored twice
    logs = world.stop_all()
    # the two survivors and the restarted w2 ended cleanly, each with its counters
    assert sum("IngestStats(received=" in " ".join(log.split()) for log in logs) == 3, logs
