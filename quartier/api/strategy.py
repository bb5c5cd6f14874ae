"""The digitalisation strategy and its stored evaluations (``quartier evaluate`` stores a run)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from quartier.api.csv_cells import safe_row
from quartier.api.deps import Conn
from quartier.evaluation import storage
from quartier.evaluation.evaluate import Evaluation, KpiResult
from quartier.evaluation.strategy import Strategy

router = APIRouter(tags=["Strategy"])

RESULT_CSV_COLUMNS = (
    "kpi_id", "name", "field_id", "goal_id", "indicator_id", "unit", "scope_type", "scope_code",
    "scope_name", "variant", "baseline", "baseline_date", "target", "deadline", "direction",
    "current", "current_at", "progress", "expected_progress", "projected", "projected_low",
    "projected_high", "status", "previous_status", "reason", "note",
)  # fmt: skip


class StrategyDocument(BaseModel):
    """The strategy as evaluated by the newest run."""

    run_id: int
    as_of: datetime
    strategy_hash: str
    strategy: Strategy


class EvaluationRun(BaseModel):
    id: int
    strategy_id: str
    strategy_title: str
    strategy_hash: str
    as_of: datetime
    started_at: datetime
    summary: dict[str, int]


def _counts(summary: dict[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in summary.items() if isinstance(v, int)}


def _evaluation(run: dict[str, Any]) -> Evaluation:
    summary = run["summary"] or {}
    return Evaluation(
        run_id=run["id"],
        previous_run_id=summary.get("previous_run_id"),
        strategy_id=run["strategy_id"],
        strategy_title=run["strategy_title"],
        strategy_hash=run["strategy_hash"],
        as_of=run["as_of"],
        summary=_counts(summary),
        results=[KpiResult.model_validate(r) for r in run["results"]],
        notes=summary.get("notes") or {},
    )


def _respond(evaluation: Evaluation, format: str) -> Evaluation | Response:
    if format != "csv":
        return evaluation
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(RESULT_CSV_COLUMNS)
    for r in evaluation.results:
        d = r.model_dump(mode="json")
        writer.writerow(safe_row("" if d[c] is None else d[c] for c in RESULT_CSV_COLUMNS))
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="evaluation-{evaluation.run_id}.csv"'
        },
    )


Format = Annotated[Literal["json", "csv"], Query(description="json (default) or csv")]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with ?format=csv"},
    404: {"description": "no such evaluation"},
}


@router.get(
    "/strategy",
    response_model=StrategyDocument,
    operation_id="get_strategy",
    responses={404: {"description": "no evaluation stored yet"}},
)
def get_strategy(conn: Conn) -> StrategyDocument:
    """The strategy (vision, fields of action, goals, measures, KPIs) of the newest evaluation."""
    run = storage.get_run(conn)
    return StrategyDocument(
        run_id=run["id"],
        as_of=run["as_of"],
        strategy_hash=run["strategy_hash"],
        strategy=Strategy.model_validate(run["strategy"]),
    )


@router.get(
    "/strategy/evaluations",
    response_model=list[EvaluationRun],
    operation_id="list_evaluations",
)
def list_evaluations(
    conn: Conn,
    strategy_id: Annotated[str | None, Query(description="only runs of this strategy")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EvaluationRun]:
    """Stored evaluation runs, newest first, with the number of KPIs per status."""
    return [
        EvaluationRun(**{**r, "summary": _counts(r["summary"] or {})})
        for r in storage.list_runs(conn, strategy_id, limit)
    ]


@router.get(
    "/strategy/evaluations/latest",
    response_model=Evaluation,
    operation_id="get_latest_evaluation",
    responses=_RESPONSES,
)
def get_latest_evaluation(conn: Conn, format: Format = "json") -> Evaluation | Response:
    """The newest evaluation: per KPI and area the current value, progress, trend, projection
    and status, and the status of the run before (``previous_status``)."""
    return _respond(_evaluation(storage.get_run(conn)), format)


@router.get(
    "/strategy/evaluations/{run_id}",
    response_model=Evaluation,
    operation_id="get_evaluation",
    responses=_RESPONSES,
)
def get_evaluation(run_id: int, conn: Conn, format: Format = "json") -> Evaluation | Response:
    """One stored evaluation run."""
    return _respond(_evaluation(storage.get_run(conn, run_id)), format)
