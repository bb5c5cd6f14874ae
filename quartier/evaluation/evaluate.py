"""Evaluate a strategy: compute and store the indicators its KPIs use, assess every KPI (and its
district breakdown) against the stored history, and store the run so changes between runs stay
visible. The assessment itself is :func:`quartier.evaluation.progress.assess` (pure).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from quartier.evaluation import compute, current, sources, storage
from quartier.evaluation.indicators import CATALOGUE
from quartier.evaluation.progress import STATUSES, Assessment, Point, Status, assess
from quartier.evaluation.scopes import CITY, Scopes
from quartier.evaluation.strategy import Kpi, Strategy
from quartier.store.db import Conn

log = logging.getLogger(__name__)


class HistoryPoint(BaseModel):
    at: datetime
    value: float
    origin: str
    source: str | None = None


class KpiResult(Assessment):
    """One KPI in one area on the evaluation date: its assessment (status, current value,
    progress, projection; see ``progress``) and what it is about."""

    kpi_id: str
    name: str
    field_id: str
    goal_id: str
    indicator_id: str
    unit: str
    scope_type: str
    scope_code: str
    scope_name: str
    variant: str = ""
    breakdown: bool = False
    baseline: float
    baseline_date: date
    target: float
    deadline: date
    direction: str
    history: list[HistoryPoint] = Field(default_factory=list)
    provenance: dict[str, Any] = Field(default_factory=dict)
    note: str | None = None
    previous_status: Status | None = None


class Evaluation(BaseModel):
    run_id: int | None = None
    previous_run_id: int | None = None
    strategy_id: str
    strategy_title: str
    strategy_hash: str
    as_of: datetime
    summary: dict[str, int]
    results: list[KpiResult]
    notes: dict[str, str] = {}


def _scopes_of(
    kpi: Kpi, districts: tuple[tuple[str, str], ...]
) -> list[tuple[str, str | None, bool]]:
    """(scope_type, scope_code or None for "the city", is_breakdown) for one KPI."""
    main: list[tuple[str, str | None, bool]] = [
        (kpi.scope.level, kpi.scope.code if kpi.scope.level != CITY else None, False)
    ]
    if kpi.breakdown is not None and kpi.scope.level == CITY:
        main += [(kpi.breakdown, code, True) for code, _ in districts]
    return main


def assess_kpi(
    conn: Conn,
    strategy: Strategy,
    field_id: str,
    goal_id: str,
    kpi: Kpi,
    as_of: datetime,
    scope: tuple[str, str | None, bool],
    scopes: Scopes,
    note: str | None,
    lang: str,
) -> KpiResult:
    """Assess one KPI in one area from the stored history (values up to ``as_of``)."""
    scope_type, code, is_breakdown = scope
    stored = storage.history(
        conn, kpi.indicator, scope_type=scope_type, scope_code=code, variant=kpi.variant,
        until=as_of,
    )  # fmt: skip
    stored = [v for v in stored if v.value is not None and v.period_end is not None]
    points = [Point(v.period_end, float(v.value)) for v in stored]  # type: ignore[arg-type]
    a: Assessment = assess(
        points, baseline=kpi.baseline.value, baseline_at=kpi.baseline.date, target=kpi.target,
        deadline=kpi.deadline, direction=kpi.resolved_direction, as_of=as_of,
        bounds=CATALOGUE[kpi.indicator].bounds,
    )  # fmt: skip
    definition = CATALOGUE[kpi.indicator]
    latest = stored[-1] if stored else None
    scope_code = code or scopes.city_code
    return KpiResult(
        kpi_id=kpi.id,
        name=kpi.name or definition.name(lang),
        field_id=field_id,
        goal_id=goal_id,
        indicator_id=kpi.indicator,
        unit=definition.unit,
        scope_type=scope_type,
        scope_code=scope_code,
        scope_name=scopes.name(scope_type, scope_code),
        variant=kpi.variant,
        breakdown=is_breakdown,
        baseline=kpi.baseline.value,
        baseline_date=kpi.baseline.date,
        target=kpi.target,
        deadline=kpi.deadline,
        direction=kpi.resolved_direction,
        history=[
            HistoryPoint(at=v.period_end, value=float(v.value), origin=v.origin, source=v.source)  # type: ignore[arg-type]
            for v in stored
        ],
        provenance=(
            {
                **latest.provenance,
                "period_start": latest.period_start,
                "period_end": latest.period_end,
                "computed_at": latest.computed_at,
                "origin": latest.origin,
            }
            if latest
            else {}
        ),
        note=note if a.status == "no_data" else None,
        **a.model_dump(),
    )


def months_before(at: datetime, months: int) -> datetime:
    stamp: datetime = (pd.Timestamp(at) - pd.DateOffset(months=months)).to_pydatetime()
    return stamp


def evaluate(
    conn: Conn,
    strategy: Strategy,
    as_of: datetime,
    *,
    history_months: int = 0,
    store: bool = True,
    lang: str | None = None,
    max_age: timedelta = current.MAX_AGE,
) -> Evaluation:
    """Record the indicator values the KPIs need as of ``as_of`` in their history (the stored
    current values when refreshed at most ``max_age`` before ``as_of``, else refreshed or
    computed: :func:`current.values_as_of`; and, with ``history_months``, computed as of the same
    day of each of that many months before, to build a history from stored observations),
    assess every KPI, and store the run (``store``)."""
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    lang = lang or strategy.lang
    ids = sorted({kpi.indicator for _, _, kpi in strategy.kpis()})
    computed = [i for i in ids if CATALOGUE[i].origin == "computed"]
    for m in range(history_months, 0, -1):
        past = compute.compute(conn, months_before(as_of, m), computed, hourly_from="rollup")
        storage.record_values(conn, past.values)
    values, notes, how = current.values_as_of(conn, computed, as_of, max_age=max_age)
    notes = dict(notes)
    storage.record_values(conn, values)
    log.info("indicator values as of %s: %s (%d values)", as_of.isoformat(), how, len(values))
    for i in ids:
        if CATALOGUE[i].origin == "manual" and not storage.latest_values(conn, [i], until=as_of):
            notes[i] = "no data: no value recorded (POST /indicators/{id}/values or CSV import)"
    scopes = sources.load_scopes(conn)
    results = [
        assess_kpi(
            conn,
            strategy,
            foa.id,
            goal.id,
            kpi,
            as_of,
            scope,
            scopes,
            notes.get(kpi.indicator),
            lang,
        )
        for foa, goal, kpi in strategy.kpis()
        for scope in _scopes_of(kpi, scopes.districts)
    ]
    counts = Counter(r.status for r in results if not r.breakdown)
    summary = {s: counts.get(s, 0) for s in STATUSES} | {"kpis": sum(counts.values())}
    previous_id, previous = storage.previous_statuses(conn, strategy.id)
    for r in results:
        r.previous_status = previous.get((r.kpi_id, r.scope_type, r.scope_code))  # type: ignore[assignment]
    evaluation = Evaluation(
        previous_run_id=previous_id,
        strategy_id=strategy.id,
        strategy_title=strategy.title,
        strategy_hash=strategy.digest(),
        as_of=as_of,
        summary=summary,
        results=results,
        notes={k: v for k, v in notes.items() if k in ids},
    )
    if store:
        evaluation.run_id = storage.save_run(
            conn,
            strategy_id=strategy.id,
            strategy_title=strategy.title,
            strategy_hash=evaluation.strategy_hash,
            strategy=strategy.model_dump(mode="json"),
            as_of=as_of,
            summary={**summary, "previous_run_id": previous_id, "notes": evaluation.notes},
            results=[r.model_dump(mode="json") for r in results],
        )
    log.info("evaluated %s as of %s: %s", strategy.id, as_of.isoformat(), summary)
    return evaluation
