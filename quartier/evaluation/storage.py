"""Stored indicator values (``indicator_value``) and evaluation runs (``evaluation_run``,
``evaluation_result``): thin I/O, parameterised SQL. Functions take an open psycopg 3 connection
(any row factory); writes happen in a transaction of their own (``conn.transaction()``), so they
work on autocommit connections and nest inside a caller's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from quartier.errors import BadRequestError, NotFoundError
from quartier.evaluation.indicators import CATALOGUE, IndicatorValue, get_definition
from quartier.store.db import Conn

log = logging.getLogger(__name__)

VALUE_COLUMNS = (
    "indicator_id, scope_type, scope_code, scope_name, variant, period_start, period_end, value,"
    " numerator, denominator, unit, origin, source, computed_at, provenance"
)


def value_row(v: IndicatorValue) -> tuple[Any, ...]:
    return (
        v.indicator_id, v.scope_type, v.scope_code, v.scope_name, v.variant, v.period_start,
        v.period_end or v.computed_at, v.value, v.numerator, v.denominator, v.unit, v.origin,
        v.source or "", v.computed_at, Jsonb(v.provenance),
    )  # fmt: skip


def record_values(conn: Conn, values: Iterable[IndicatorValue]) -> int:
    """Store values; a value for the same indicator, area, variant, period, origin and source
    replaces the stored one. Returns the number written."""
    rows = [value_row(v) for v in values]
    if not rows:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            f"""
            insert into indicator_value ({VALUE_COLUMNS})
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            on conflict (indicator_id, scope_type, scope_code, variant, period_start, period_end,
                         origin, source)
            do update set value = excluded.value, numerator = excluded.numerator,
                denominator = excluded.denominator, scope_name = excluded.scope_name,
                unit = excluded.unit, computed_at = excluded.computed_at,
                provenance = excluded.provenance, recorded_at = now()
            """,
            rows,
        )
    return len(rows)


def value_from_row(row: dict[str, Any]) -> IndicatorValue:
    d = CATALOGUE.get(row["indicator_id"])
    return IndicatorValue(
        indicator_id=row["indicator_id"],
        name_de=d.name_de if d else row["indicator_id"],
        name_en=d.name_en if d else row["indicator_id"],
        unit=row["unit"],
        scope_type=row["scope_type"],
        scope_code=row["scope_code"],
        scope_name=row["scope_name"],
        variant=row["variant"],
        value=row["value"],
        numerator=row["numerator"],
        denominator=row["denominator"],
        period_start=row["period_start"],
        period_end=row["period_end"],
        computed_at=row["computed_at"],
        origin=row["origin"],
        source=row["source"] or None,
        provenance=row["provenance"] or {},
    )


def history(
    conn: Conn,
    indicator_id: str,
    *,
    scope_type: str | None = None,
    scope_code: str | None = None,
    variant: str | None = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[IndicatorValue]:
    """Stored values of one indicator, oldest first (by period end), optionally of one area,
    variant and period range (``since <= period_end <= until``)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"""
            select {VALUE_COLUMNS} from indicator_value
            where indicator_id = %(id)s
              and (%(st)s::text is null or scope_type = %(st)s)
              and (%(sc)s::text is null or scope_code = %(sc)s)
              and (%(var)s::text is null or variant = %(var)s)
              and (%(since)s::timestamptz is null or period_end >= %(since)s)
              and (%(until)s::timestamptz is null or period_end <= %(until)s)
            order by period_end, scope_type, length(scope_code), scope_code, variant, computed_at
            """,
            {
                "id": indicator_id,
                "st": scope_type,
                "sc": scope_code,
                "var": variant,
                "since": since,
                "until": until,
            },
        ).fetchall()
    return [value_from_row(r) for r in rows]


def latest_values(
    conn: Conn, indicator_ids: Sequence[str], until: datetime | None = None
) -> list[IndicatorValue]:
    """The newest stored value (by period end, then computation time) of each indicator, area
    and variant among ``indicator_ids``, up to ``until``."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"""
            select distinct on (indicator_id, scope_type, scope_code, variant) {VALUE_COLUMNS}
            from indicator_value
            where indicator_id = any(%(ids)s)
              and (%(until)s::timestamptz is null or period_end <= %(until)s)
            order by indicator_id, scope_type, scope_code, variant, period_end desc,
                     computed_at desc
            """,
            {"ids": list(indicator_ids), "until": until},
        ).fetchall()
    return [value_from_row(r) for r in rows]


def manual_indicators() -> list[str]:
    return [k for k, v in CATALOGUE.items() if v.origin == "manual"]


def manual_value(
    indicator_id: str,
    value: float,
    at: datetime,
    source: str,
    *,
    scope_type: str = "city",
    scope_code: str = "city",
    scope_name: str = "",
    period_start: datetime | None = None,
    numerator: float | None = None,
    denominator: float | None = None,
    note: str | None = None,
    recorded_at: datetime,
) -> IndicatorValue:
    """A validated manual value (pure): the indicator must be a manual one of the catalogue, the
    scope one it has, the source named and the date timezone-aware."""
    try:
        d = get_definition(indicator_id)
    except KeyError as exc:
        raise NotFoundError(str(exc.args[0])) from None
    if d.origin != "manual":
        raise BadRequestError(
            f"indicator {indicator_id} is computed from the store; only manual indicators take "
            f"recorded values ({', '.join(manual_indicators())})"
        )
    if scope_type not in d.scopes:
        raise BadRequestError(
            f"indicator {indicator_id} has no {scope_type!r} values; scopes: {', '.join(d.scopes)}"
        )
    if not source.strip():
        raise BadRequestError("a manual value needs its source")
    if at.tzinfo is None or (period_start is not None and period_start.tzinfo is None):
        raise BadRequestError("dates must carry a time zone")
    if period_start is not None and period_start > at:
        raise BadRequestError("period start is after the date of the value")
    extra = {"note": note} if note else {}
    return IndicatorValue(
        indicator_id=d.id, name_de=d.name_de, name_en=d.name_en, unit=d.unit,
        scope_type=scope_type, scope_code=scope_code, scope_name=scope_name, value=value,
        numerator=numerator, denominator=denominator, period_start=period_start, period_end=at,
        computed_at=recorded_at, origin="manual", source=source.strip(),
        provenance={"origin": "manual", "source": source.strip()} | extra,
    )  # fmt: skip


# ------------------------------------------------------------------------------ evaluation runs


def save_run(
    conn: Conn,
    *,
    strategy_id: str,
    strategy_title: str,
    strategy_hash: str,
    strategy: dict[str, Any],
    as_of: datetime,
    summary: dict[str, Any],
    results: Sequence[dict[str, Any]],
) -> int:
    """Store one evaluation run and its per-KPI results (each a JSON-ready dict with ``kpi_id``,
    ``scope_type``, ``scope_code``, ``goal_id``, ``indicator_id``, ``status``, ``current``,
    ``progress``, ``projected``). Returns the run id."""
    with conn.transaction(), conn.cursor() as cur:
        row = cur.execute(
            "insert into evaluation_run (strategy_id, strategy_title, strategy_hash, strategy,"
            " as_of, summary) values (%s, %s, %s, %s, %s, %s) returning id",
            (strategy_id, strategy_title, strategy_hash, Jsonb(strategy), as_of, Jsonb(summary)),
        ).fetchone()
        assert row is not None
        run_id = int(row[0] if not isinstance(row, dict) else row["id"])
        cur.executemany(
            "insert into evaluation_result (run_id, kpi_id, scope_type, scope_code, goal_id,"
            " indicator_id, status, current_value, progress, projected, result)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    run_id,
                    r["kpi_id"],
                    r["scope_type"],
                    r["scope_code"],
                    r["goal_id"],
                    r["indicator_id"],
                    r["status"],
                    r.get("current"),
                    r.get("progress"),
                    r.get("projected"),
                    Jsonb(r),
                )
                for r in results
            ],
        )
    log.info("stored evaluation run %d of %s (%d results)", run_id, strategy_id, len(results))
    return run_id


_RUN_COLUMNS = "id, strategy_id, strategy_title, strategy_hash, as_of, started_at, summary"


def list_runs(conn: Conn, strategy_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Evaluation runs, newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"select {_RUN_COLUMNS} from evaluation_run"
            " where %(sid)s::text is null or strategy_id = %(sid)s"
            " order by started_at desc, id desc limit %(limit)s",
            {"sid": strategy_id, "limit": limit},
        ).fetchall()


def get_run(conn: Conn, run_id: int | None = None) -> dict[str, Any]:
    """One run (the newest if ``run_id`` is None) with ``strategy`` and ``results``; raises
    :class:`NotFoundError`."""
    with conn.cursor(row_factory=dict_row) as cur:
        run = cur.execute(
            f"select {_RUN_COLUMNS}, strategy from evaluation_run"
            " where %(id)s::bigint is null or id = %(id)s"
            " order by started_at desc, id desc limit 1",
            {"id": run_id},
        ).fetchone()
        if run is None:
            raise NotFoundError(
                "no strategy evaluation stored yet; run `quartier evaluate --strategy …`"
                if run_id is None
                else f"no evaluation run {run_id}"
            )
        results = cur.execute(
            "select result from evaluation_result where run_id = %s"
            " order by goal_id, kpi_id, scope_type, length(scope_code), scope_code",
            (run["id"],),
        ).fetchall()
    run["results"] = [r["result"] for r in results]
    return run


def previous_statuses(
    conn: Conn, strategy_id: str, before: int | None = None
) -> tuple[int | None, dict[tuple[str, str, str], str]]:
    """The newest run of ``strategy_id`` (before run ``before``, if given) and its status per
    (kpi_id, scope_type, scope_code)."""
    with conn.cursor(row_factory=dict_row) as cur:
        run = cur.execute(
            "select id from evaluation_run where strategy_id = %(sid)s"
            " and (%(before)s::bigint is null or id < %(before)s)"
            " order by id desc limit 1",
            {"sid": strategy_id, "before": before},
        ).fetchone()
        if run is None:
            return None, {}
        rows = cur.execute(
            "select kpi_id, scope_type, scope_code, status from evaluation_result"
            " where run_id = %s",
            (run["id"],),
        ).fetchall()
    return int(run["id"]), {
        (r["kpi_id"], r["scope_type"], r["scope_code"]): r["status"] for r in rows
    }
