"""The current value of every indicator, computed when its inputs change and stored
(``indicator_current``, ``indicator_refresh``, migration 0030), so ``GET /indicators`` reads
rows instead of recomputing a year of data per request.

When values are refreshed:

* after a coverage run is stored (``quartier.geo.service.analyse_and_store``),
* after a manual value is recorded (API ``POST /indicators/{id}/values``, CSV import),
* on a schedule by ``quartier indicators refresh --every SECONDS`` (:func:`refresh_every`), a
  process of its own beside ``quartier ingest`` and ``quartier serve``: a refresh of the
  catalogue takes seconds of CPU (a year of 2,000 datastreams: see docs/benchmarks.md), which
  in the ingester's maintenance thread competed with ingest for the GIL and a core, so the
  ingester no longer runs it (``quartier demo`` still does, in its one process),
* once by ``quartier indicators refresh``,
* lazily on a read when an indicator was never refreshed or its values are older than the
  configured age (``QUARTIER_API__INDICATORS_MAX_AGE_SECONDS``).

A refresh computes the computed indicators with :func:`quartier.evaluation.compute.compute`
reading air quality from the 1 h rollup (equal to the raw path, proven by
``tests/test_indicators_current.py``) and takes the newest recorded value of each manual
indicator. :func:`recompute` is the old per-request path, kept as the reference and the
benchmark's baseline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from quartier.config import Settings
from quartier.evaluation import compute, storage
from quartier.evaluation.compute import HourlySource
from quartier.evaluation.indicators import CATALOGUE, IndicatorValue
from quartier.store.db import Conn

log = logging.getLogger(__name__)

#: Default age after which a read recomputes stored values (the maintenance round's interval).
MAX_AGE = timedelta(minutes=5)
#: pg_advisory_xact_lock key: one refresh writes at a time.
_LOCK = 0x1D1C_A702
#: Provenance keys copied into a refresh's ``inputs``.
_INPUT_KEYS = ("source", "coverage_run", "coverage_run_at", "rollup_range", "data_from", "data_to")


@dataclass(frozen=True)
class Current:
    """Current values of some indicators; ``computed_at`` is the oldest refresh among them."""

    computed_at: datetime
    values: list[IndicatorValue]
    #: per indicator without values: why
    notes: dict[str, str]


@dataclass(frozen=True)
class CurrentJson:
    """The same as :class:`Current` with each value as its stored JSON (an ``IndicatorValue``),
    for responses that join them without decoding."""

    computed_at: datetime
    values: list[str]
    notes: dict[str, str]

    def parsed(self) -> Current:
        values = [IndicatorValue.model_validate_json(v) for v in self.values]
        return Current(computed_at=self.computed_at, values=values, notes=self.notes)


def recompute(
    conn: Conn, now: datetime, ids: Sequence[str], *, hourly_from: HourlySource = "raw"
) -> tuple[list[IndicatorValue], dict[str, str]]:
    """The values of ``ids`` as of ``now``, computed from the store (manual indicators: the
    newest recorded value), and for indicators without values, why."""
    computed = [i for i in ids if CATALOGUE[i].origin == "computed"]
    manual = [i for i in ids if CATALOGUE[i].origin == "manual"]
    result = compute.compute(conn, now, computed, hourly_from=hourly_from) if computed else None
    values = list(result.values) if result else []
    notes = dict(result.notes) if result else {}
    recorded = storage.latest_values(conn, manual, until=now) if manual else []
    values += recorded
    for i in set(manual) - {v.indicator_id for v in recorded}:
        notes[i] = "no data: no value recorded yet"
    return values, notes


def _inputs(values: Sequence[IndicatorValue], trigger: str) -> dict[str, Any]:
    prov = values[0].provenance if values else {}
    return {"trigger": trigger, **{k: prov[k] for k in _INPUT_KEYS if k in prov}}


def refresh_indicators(
    conn: Conn,
    now: datetime | None = None,
    ids: Collection[str] | None = None,
    *,
    trigger: str = "manual",
) -> Current:
    """Compute the current values of ``ids`` (default: the whole catalogue) for the city and
    every Stadtbezirk as of ``now`` and store them, replacing the stored values of those
    indicators; ``trigger`` says why (kept in ``indicator_refresh.inputs``)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    wanted = [i for i in CATALOGUE if ids is None or i in ids]
    values, notes = recompute(conn, now, wanted, hourly_from="rollup")
    by_id: dict[str, list[IndicatorValue]] = {i: [] for i in wanted}
    for v in values:
        by_id[v.indicator_id].append(v)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(%s)", (_LOCK,))
        cur.execute("delete from indicator_current where indicator_id = any(%s)", (wanted,))
        cur.executemany(
            f"insert into indicator_current ({storage.VALUE_COLUMNS}, body) values"
            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " on conflict do nothing",
            [(*storage.value_row(v), _served(v).model_dump_json()) for v in values],
        )
        cur.executemany(
            "insert into indicator_refresh (indicator_id, refreshed_at, note, inputs)"
            " values (%s, %s, %s, %s) on conflict (indicator_id) do update set"
            " refreshed_at = excluded.refreshed_at, note = excluded.note,"
            " inputs = excluded.inputs",
            [(i, now, notes.get(i), Jsonb(_inputs(by_id[i], trigger))) for i in wanted],
        )
    log.info("refreshed %d indicators (%d values, %s)", len(wanted), len(values), trigger)
    stored = read_current_json(conn, wanted)
    assert stored is not None  # just written
    return stored.parsed()


def refresh_after_coverage_run(conn: Conn, run_id: int) -> Current:
    """Refresh the indicators computed from the current coverage run (broadband, mobile)."""
    ids = [d.id for d in CATALOGUE.values() if d.family in ("broadband", "mobile")]
    return refresh_indicators(conn, ids=ids, trigger=f"coverage run {run_id}")


def _served(v: IndicatorValue) -> IndicatorValue:
    """``v`` as it reads back from the store (a period end is always stored)."""
    return v if v.period_end is not None else v.model_copy(update={"period_end": v.computed_at})


def read_current_json(
    conn: Conn,
    ids: Collection[str] | None = None,
    *,
    scope_type: str | None = None,
    scope_code: str | None = None,
) -> CurrentJson | None:
    """The stored current values of ``ids`` (default: all; optionally of one area type or code)
    in catalogue order, as JSON; None if one of them was never refreshed."""
    wanted = [i for i in CATALOGUE if ids is None or i in ids]
    with conn.cursor(row_factory=tuple_row) as cur:
        refreshes = cur.execute(
            "select indicator_id, refreshed_at, note from indicator_refresh"
            " where indicator_id = any(%s)",
            (wanted,),
        ).fetchall()
        if len(refreshes) < len(wanted):
            return None
        rows = cur.execute(
            "select body from indicator_current where indicator_id = any(%(ids)s)"
            " and (%(st)s::text is null or scope_type = %(st)s)"
            " and (%(sc)s::text is null or scope_code = %(sc)s)"
            " order by array_position(%(ids)s, indicator_id), scope_type, length(scope_code),"
            " scope_code, variant",
            {"ids": wanted, "st": scope_type, "sc": scope_code},
        ).fetchall()
    return CurrentJson(
        computed_at=min(r[1] for r in refreshes),
        values=[r[0] for r in rows],
        notes={r[0]: r[2] for r in refreshes if r[2] is not None},
    )


def read_current(conn: Conn, ids: Collection[str] | None = None) -> Current | None:
    """The stored current values of ``ids`` (default: all), in catalogue order; None if one of
    them was never refreshed."""
    stored = read_current_json(conn, ids)
    return None if stored is None else stored.parsed()


def current_json(
    conn: Conn,
    ids: Collection[str] | None = None,
    *,
    max_age: timedelta = MAX_AGE,
    now: datetime | None = None,
    scope_type: str | None = None,
    scope_code: str | None = None,
    stale_ok: bool = False,
) -> CurrentJson:
    """The stored current values of ``ids`` as JSON; refreshed first when one was never
    refreshed or (unless ``stale_ok``: the caller refreshes them elsewhere) its values are older
    than ``max_age``."""
    now = now or datetime.now(UTC)
    stored = read_current_json(conn, ids, scope_type=scope_type, scope_code=scope_code)
    if stored is not None and (stale_ok or now - stored.computed_at <= max_age):
        return stored
    refresh_indicators(conn, now, ids, trigger="read" if stored is None else "stale")
    fresh = read_current_json(conn, ids, scope_type=scope_type, scope_code=scope_code)
    assert fresh is not None  # just written
    return fresh


#: held (session advisory lock) while a background refresh of stale values runs, so that of all
#: API processes only one recomputes
_BACKGROUND_LOCK = _LOCK + 1


def refresh_in_background(pool: ConnectionPool, ids: Collection[str] | None = None) -> bool:
    """Start refreshing ``ids`` in a thread with a connection of ``pool`` (no statement timeout:
    at a year of 2,000 datastreams one refresh takes minutes) unless one runs already in this
    process or another; True if started. A read that finds stale values serves them and calls
    this, instead of making the reader wait for the refresh."""
    if not _refreshing.acquire(blocking=False):
        return False
    wanted = None if ids is None else list(ids)

    def run() -> None:
        try:
            with pool.connection() as conn:
                with conn.cursor(row_factory=tuple_row) as cur:
                    row = cur.execute(
                        "select pg_try_advisory_lock(%s)", (_BACKGROUND_LOCK,)
                    ).fetchone()
                if not (row and row[0]):
                    return  # another process refreshes them
                try:
                    conn.execute("set statement_timeout = 0")
                    refresh_indicators(conn, ids=wanted, trigger="stale")
                finally:
                    conn.execute("reset statement_timeout")
                    conn.execute("select pg_advisory_unlock(%s)", (_BACKGROUND_LOCK,))
        except Exception as exc:  # logged; the next stale read tries again
            log.warning("background refresh of the indicators failed: %s", exc)
        finally:
            _refreshing.release()

    threading.Thread(target=run, name="indicator-refresh", daemon=True).start()
    return True


_refreshing = threading.Lock()


def current(
    conn: Conn,
    ids: Collection[str] | None = None,
    *,
    max_age: timedelta = MAX_AGE,
    now: datetime | None = None,
) -> Current:
    """The stored current values of ``ids``; refreshed first when one was never refreshed or
    its values are older than ``max_age``."""
    return current_json(conn, ids, max_age=max_age, now=now).parsed()


def values_as_of(
    conn: Conn, ids: Sequence[str], as_of: datetime, *, max_age: timedelta = MAX_AGE
) -> tuple[list[IndicatorValue], dict[str, str], str]:
    """The values of the computed indicators ``ids`` as of ``as_of`` for the evaluation and its
    report, and how they were had (``"stored"``, ``"refreshed"``, ``"computed"``):

    * the stored current values, when they were refreshed at most ``max_age`` before ``as_of``
      (not after it: their period ends at the refresh);
    * else, when ``as_of`` is within ``max_age`` of the clock (an evaluation "now"), a refresh as
      of ``as_of``, which also serves ``GET /indicators``;
    * else (an evaluation of a past date) computed as of ``as_of``, not stored as current.

    Every path computes the same way (:func:`compute.compute` with ``hourly_from="rollup"``)."""
    as_of = as_of.astimezone(UTC)
    if not ids:
        return [], {}, "stored"
    stored = read_current(conn, ids)
    if stored is not None and timedelta(0) <= as_of - stored.computed_at <= max_age:
        return stored.values, stored.notes, "stored"
    if abs(datetime.now(UTC) - as_of) <= max_age:
        fresh = refresh_indicators(conn, as_of, ids, trigger="evaluation")
        return fresh.values, fresh.notes, "refreshed"
    result = compute.compute(conn, as_of, ids, hourly_from="rollup")
    return [_served(v) for v in result.values], result.notes, "computed"


def refresh_if_stale(conn: Conn, max_age_s: float) -> None:
    """Recompute the stored values when they are older than ``max_age_s`` (the store's
    maintenance round calls this after the rollups are up to date: ``after_round``)."""
    current_json(conn, max_age=timedelta(seconds=max_age_s))


def refresh_every(
    connect: Callable[[], Any],
    every_s: float,
    stop: threading.Event,
    *,
    rounds: int | None = None,
) -> int:
    """Refresh the whole catalogue every ``every_s`` seconds (on a connection from
    ``connect()``, a context manager) until ``stop`` is set or ``rounds`` are done; a failed
    round is logged and retried at the next. Returns the rounds that succeeded."""
    done = attempted = 0
    while not stop.is_set() and (rounds is None or attempted < rounds):
        attempted += 1
        try:
            with connect() as conn:
                stored = refresh_indicators(conn, trigger="schedule")
            done += 1
            log.info("scheduled refresh: %d values", len(stored.values))
        except Exception:  # the schedule must survive a failing round (database restart, …)
            log.exception("scheduled indicator refresh failed (retrying in %.0f s)", every_s)
        if rounds is None or attempted < rounds:
            stop.wait(every_s)
    return done


def indicator_refresh(settings: Settings) -> Callable[[Conn], None]:
    """The store maintenance round's hook (``rollups.start_maintenance(after_round=…)``):
    stored values refreshed once older than ``api.indicators_max_age_seconds``."""
    max_age_s = settings.api.indicators_max_age_seconds
    return lambda conn: refresh_if_stale(conn, max_age_s)
