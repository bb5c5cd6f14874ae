"""The simulator loop behind ``quartier simulate``.

Live mode (``start`` is None): every ``interval_s`` seconds of wall time, publish the readings of
every sensor at the current time (whole seconds) and ``speedtests_per_tick`` speed tests.
Replay mode (``start`` given): a virtual clock starts at ``start`` and steps ``interval_s`` per
tick; messages go out as fast as the broker acknowledges them (or at ``rate`` messages/s).

The loop stops after ``count`` ticks, when the simulated time reaches ``start + duration_s`` (in
live mode: after ``duration_s`` seconds), or when ``stop_event`` is set. A replay without
``count`` or ``duration_s`` stops when its clock reaches the present.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from quartier.config import Settings
from quartier.sensors_sim.fleet import Fleet
from quartier.sensors_sim.publisher import Publisher

logger = logging.getLogger(__name__)

#: The ingester rejects readings more than this far in the future (``docs/mqtt.md``).
FUTURE_LIMIT = timedelta(minutes=10)


@dataclass(slots=True)
class SimStats:
    ticks: int = 0
    #: MQTT messages acknowledged by the broker (sensor batches and speed tests)
    messages: int = 0
    #: sensor readings in those messages (a batch carries several)
    readings: int = 0
    speedtests: int = 0
    first_time: datetime | None = None
    last_time: datetime | None = None


def simulate(
    settings: Settings,
    *,
    seed: int,
    sensors: int,
    interval_s: float,
    start: datetime | None,
    count: int | None,
    duration_s: float | None,
    speedtests_per_tick: int,
    stop_event: threading.Event | None,
    progress: Callable[[int], None] | None = None,
    network: str = "sim",
    rate: float | None = None,
    client_id: str | None = None,
) -> SimStats:
    """Run the simulated fleet against the configured broker; see the module docstring.
    ``progress`` is called with the total number of messages published so far."""
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    if start is not None and start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    fleet = Fleet(seed, sensors, network)
    stop = stop_event or threading.Event()
    stats = SimStats()
    client_id = client_id or f"quartier-sim-{network}-{uuid.uuid4().hex[:8]}"
    logger.info(
        "simulating %d sensors (seed %d, network %s), %s mode, a tick every %g s",
        len(fleet.sensors),
        seed,
        network,
        "live" if start is None else "replay",
        interval_s,
    )

    with Publisher(
        settings.mqtt.publish_url or settings.require_mqtt_url(),
        client_id=client_id,
        keepalive=settings.mqtt.keepalive,
        ca_file=settings.mqtt.ca_file,
    ) as publisher:

        def tick(t: datetime) -> None:
            sent_before = stats.messages

            def report(n: int) -> None:
                if progress is not None:
                    progress(sent_before + n)

            batch = fleet.readings_at(t) + fleet.speedtests(t, speedtests_per_tick)
            stats.messages += publisher.send(
                batch, rate=rate, progress=report if progress else None
            )
            stats.readings += fleet.readings_per_tick
            stats.speedtests += speedtests_per_tick
            stats.ticks += 1
            stats.first_time = stats.first_time or t
            stats.last_time = t

        if start is None:
            _live(tick, stop, interval_s, count, duration_s)
        else:
            _replay(tick, stop, start, interval_s, count, duration_s)
    logger.info(
        "published %d messages (%d readings, %d speed tests) in %d ticks",
        stats.messages,
        stats.readings,
        stats.speedtests,
        stats.ticks,
    )
    return stats


def _live(
    tick: Callable[[datetime], None],
    stop: threading.Event,
    interval_s: float,
    count: int | None,
    duration_s: float | None,
) -> None:
    began = time.monotonic()
    slot = 0  # tick slots of the wall-clock schedule
    n = 0  # ticks published
    while not stop.is_set() and (count is None or n < count):
        due = began + slot * interval_s
        if duration_s is not None and due - began >= duration_s:
            break
        if stop.wait(max(0.0, due - time.monotonic())):
            break
        now = datetime.now(UTC)
        tick(now.replace(microsecond=0) + timedelta(seconds=round(now.microsecond / 1e6)))
        n += 1
        slot += 1
        behind = math.floor((time.monotonic() - began) / interval_s) - slot
        if behind > 0:  # publishing took longer than an interval: skip slots, don't burst
            logger.warning("publishing is slower than the interval; skipping %d ticks", behind)
            slot += behind


def _replay(
    tick: Callable[[datetime], None],
    stop: threading.Event,
    start: datetime,
    interval_s: float,
    count: int | None,
    duration_s: float | None,
) -> None:
    start = start.astimezone(UTC)
    until_now = count is None and duration_s is None
    warned = False
    n = 0
    while not stop.is_set() and (count is None or n < count):
        offset = n * interval_s
        if duration_s is not None and offset >= duration_s:
            break
        t = start + timedelta(seconds=offset)
        now = datetime.now(UTC)
        if until_now and t > now:
            logger.info("the replay clock reached the present; stopping")
            break
        if not warned and t > now + FUTURE_LIMIT:
            logger.warning("replaying into the future (%s): the ingester will reject it", t)
            warned = True
        tick(t)
        n += 1
