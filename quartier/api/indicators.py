"""Indicators of the strategy evaluation (catalogue, current values, stored history, manual
values, CSV download); the maps are in maps.py."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, TypeAdapter

from quartier.api.auth import require_scope
from quartier.api.csv_cells import safe_row
from quartier.api.deps import Conn, get_settings
from quartier.config import Settings
from quartier.errors import BadRequestError, NotFoundError
from quartier.evaluation import current, sources, storage
from quartier.evaluation.indicators import CATALOGUE, IndicatorDefinition, IndicatorValue
from quartier.evaluation.scopes import CITY

router = APIRouter(tags=["Indicators and maps"])

AppSettings = Annotated[Settings, Depends(get_settings)]
Format = Annotated[Literal["json", "csv"], Query(description="json (default) or csv")]
CSV_COLUMNS = (
    "indicator_id", "name_de", "name_en", "unit", "scope_type", "scope_code", "scope_name",
    "variant", "value", "numerator", "denominator", "period_start", "period_end", "computed_at",
    "origin", "source", "provenance",
)  # fmt: skip
_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with ?format=csv"}
}


class IndicatorList(BaseModel):
    computed_at: datetime
    definitions: list[IndicatorDefinition]
    values: list[IndicatorValue]
    #: per indicator without values: why (e.g. "no data: no pm10 readings")
    notes: dict[str, str] = {}


class IndicatorDetail(BaseModel):
    definition: IndicatorDefinition
    computed_at: datetime
    #: the values as of now: computed from the store, or the newest recorded (manual indicators)
    current: list[IndicatorValue]
    #: stored values (from evaluation runs and manual records), oldest first
    history: list[IndicatorValue]
    note: str | None = None


class ManualValueIn(BaseModel):
    """A value of a manual indicator, with the date it refers to and its source."""

    value: float
    date: dt.datetime | dt.date = Field(
        description="the date the value refers to (end of its period)"
    )
    source: str = Field(min_length=1, description="where the value comes from")
    scope_type: Literal["city", "stadtbezirk"] = "city"
    scope_code: str | None = Field(default=None, description="district code (stadtbezirk only)")
    period_start: dt.datetime | dt.date | None = None
    numerator: float | None = None
    denominator: float | None = None
    note: str | None = None


def _csv(values: Sequence[IndicatorValue], filename: str) -> Response:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for v in values:
        d = v.model_dump(mode="json")
        writer.writerow(
            safe_row(
                json.dumps(d[c], ensure_ascii=False, sort_keys=True)
                if c == "provenance"
                else ("" if d[c] is None else d[c])
                for c in CSV_COLUMNS
            )
        )
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _max_age(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.api.indicators_max_age_seconds)


def _stored(
    request: Request,
    conn: Conn,
    settings: Settings,
    ids: Sequence[str] | None = None,
    scope_type: str | None = None,
    scope_code: str | None = None,
) -> current.CurrentJson:
    """The stored current values: computed first only if there are none yet; older than
    ``api.indicators_max_age_seconds``, served as they are (``computed_at`` says when) while a
    background refresh recomputes them (at a year of 2,000 datastreams that takes minutes, far
    beyond a request's statement timeout)."""
    stored = current.current_json(
        conn, ids, scope_type=scope_type, scope_code=scope_code, stale_ok=True
    )
    if datetime.now(UTC) - stored.computed_at > _max_age(settings):
        current.refresh_in_background(request.app.state.pool, ids)
    return stored


_DEFINITIONS = TypeAdapter(list[IndicatorDefinition])
_TIME = TypeAdapter(datetime)
_NOTES = TypeAdapter(dict[str, str])


def _json_object(**members: bytes | str) -> Response:
    """A JSON object from members already encoded as JSON (the stored values are joined as
    they were stored, not decoded and encoded again per request)."""
    body = b",".join(
        json.dumps(k).encode() + b":" + (v.encode() if isinstance(v, str) else v)
        for k, v in members.items()
    )
    return Response(b"{" + body + b"}", media_type="application/json")


def _array(items: Sequence[str]) -> str:
    return "[" + ",".join(items) + "]"


@router.get(
    "/indicators", response_model=IndicatorList, operation_id="list_indicators", responses=_CSV
)
def list_indicators(
    request: Request,
    conn: Conn,
    settings: AppSettings,
    format: Format = "json",
    scope_type: Annotated[str | None, Query(description="city or stadtbezirk")] = None,
) -> Response:
    """The catalogue and the current value of every indicator per area: computed from the stored
    data, or (manual indicators) the newest recorded value; each value with its provenance.
    Served from the stored current values (``computed_at``: when they were computed; see
    docs/evaluation.md for when they are recomputed)."""
    stored = _stored(request, conn, settings, scope_type=scope_type)
    if format == "csv":
        return _csv(stored.parsed().values, "indicators.csv")
    return _json_object(
        computed_at=_TIME.dump_json(stored.computed_at),
        definitions=_DEFINITIONS.dump_json(list(CATALOGUE.values())),
        values=_array(stored.values),
        notes=_NOTES.dump_json(stored.notes),
    )


@router.get(
    "/indicators.csv",
    response_class=Response,
    operation_id="list_indicators_csv",
    responses={200: {"content": {"text/csv": {}}, "description": "current values as CSV"}},
)
def list_indicators_csv(
    request: Request,
    conn: Conn,
    settings: AppSettings,
    scope_type: Annotated[str | None, Query(description="city or stadtbezirk")] = None,
) -> Response:
    """The current values of every indicator as CSV (one row per indicator, area and variant)."""
    stored = _stored(request, conn, settings, scope_type=scope_type)
    return _csv(stored.parsed().values, "indicators.csv")


def _definition(indicator_id: str) -> IndicatorDefinition:
    definition = CATALOGUE.get(indicator_id)
    if definition is None:
        raise NotFoundError(f"no indicator {indicator_id!r}; known: {', '.join(sorted(CATALOGUE))}")
    return definition


@router.get(
    "/indicators/{indicator_id}",
    response_model=IndicatorDetail,
    operation_id="get_indicator",
    responses={**_CSV, 404: {"description": "unknown indicator"}},
)
def get_indicator(
    indicator_id: str,
    request: Request,
    conn: Conn,
    settings: AppSettings,
    scope_type: Annotated[str | None, Query(description="city or stadtbezirk")] = None,
    scope_code: Annotated[str | None, Query(description="district code")] = None,
    since: Annotated[datetime | None, Query(description="history from (period end)")] = None,
    until: Annotated[datetime | None, Query(description="history until (period end)")] = None,
    format: Format = "json",
) -> Response:
    """One indicator: its definition, its current values and its stored history (values from
    evaluation runs and manual records), optionally for one area and period range. With
    ``?format=csv``, the history as CSV."""
    definition = _definition(indicator_id)
    for t in (since, until):
        if t is not None and t.tzinfo is None:
            raise BadRequestError("since and until need a time zone (e.g. 2026-01-01T00:00Z)")
    hist = storage.history(
        conn, indicator_id, scope_type=scope_type, scope_code=scope_code, variant=None,
        since=since, until=until,
    )  # fmt: skip
    if format == "csv":
        return _csv(hist, f"{indicator_id}.csv")
    stored = _stored(request, conn, settings, [indicator_id], scope_type, scope_code)
    note = stored.notes.get(indicator_id)
    return _json_object(
        definition=definition.model_dump_json(),
        computed_at=_TIME.dump_json(stored.computed_at),
        current=_array(stored.values),
        history=_array([v.model_dump_json() for v in hist]),
        note=json.dumps(note),
    )


def _when(value: dt.datetime | dt.date) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


@router.post(
    "/indicators/{indicator_id}/values",
    response_model=IndicatorValue,
    status_code=201,
    operation_id="record_indicator_value",
    responses={
        400: {"description": "invalid value"},
        401: {"description": "no valid API key"},
        403: {"description": "the key lacks the scope indicators:write"},
        404: {"description": "unknown indicator"},
    },
    dependencies=[require_scope("indicators:write")],
)
def record_indicator_value(indicator_id: str, body: ManualValueIn, conn: Conn) -> IndicatorValue:
    """Record a value of a manual indicator (one no sensor measures, e.g. the share of OZG
    services online) with its date and source. A value for the same indicator, area, date and
    source replaces the stored one."""
    _definition(indicator_id)
    scopes = sources.load_scopes(conn)
    if body.scope_type == CITY:
        code, name = scopes.city_code, scopes.city_name
    else:
        names = dict(scopes.districts)
        if body.scope_code is None or (names and body.scope_code not in names):
            raise BadRequestError(
                f"scope_code must be a {body.scope_type} code"
                + (f" ({', '.join(names)})" if names else "")
            )
        code, name = body.scope_code, names.get(body.scope_code, body.scope_code)
    value = storage.manual_value(
        indicator_id, body.value, _when(body.date), body.source, scope_type=body.scope_type,
        scope_code=code, scope_name=name,
        period_start=_when(body.period_start) if body.period_start is not None else None,
        numerator=body.numerator, denominator=body.denominator, note=body.note,
        recorded_at=datetime.now(UTC),
    )  # fmt: skip
    storage.record_values(conn, [value])
    current.refresh_indicators(conn, ids=[indicator_id], trigger="manual value")
    return value
