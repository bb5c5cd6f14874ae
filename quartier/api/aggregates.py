"""Aggregates and latest values over observations (an extension beside SensorThings v1.1).

* ``GET /v1.1/Datastreams({id})/Observations/aggregate?interval=1h&from=…&to=…&fn=avg,max``
* ``GET /v1.1/Datastreams/Observations/aggregate?ids=1,2,3&interval=…`` (several at once)
* ``GET /v1.1/Datastreams/Observations/latest?ids=1,2,3`` (the newest observation of each)

Aggregates come as JSON (one series per datastream: its buckets and its gaps), as columnar JSON
with ``layout=columns`` (per series one array of bucket times and one per function; made from
numpy arrays, streamed when large: ``api/aggregate_columns.py``), or, with ``format=csv`` or
``Accept: text/csv``, as CSV (one row per datastream and bucket). The JSON
buckets are written by PostgreSQL (``timeseries.aggregate(as_json=True)``): no Python object per
bucket, so a wide answer (100 datastreams × a month of hours) costs what the query costs; the
body is the one ``AggregateResult`` describes (numbers as the shortest text of the same double,
so a whole number may read ``20`` instead of ``20.0``: the same JSON number). Buckets are on
a UTC grid (a day is a UTC day, weeks start on Monday); ``from``/``to`` are widened to whole
buckets. See docs/store.md.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from quartier.api.aggregate_columns import columns_response
from quartier.api.csv_cells import safe_row
from quartier.api.deps import Conn
from quartier.api.sensorthings import iso
from quartier.errors import BadRequestError, NotFoundError
from quartier.store import timeseries as ts

router = APIRouter(prefix="/v1.1", tags=["Aggregates"])
MAX_IDS = ts.MAX_DATASTREAMS


# ------------------------------------------------------------------------------------ models
class Bucket(BaseModel):
    """One bucket; only the functions asked for are present (a value is null when the bucket has
    observations but none with a numeric result)."""

    model_config = ConfigDict(populate_by_name=True)

    time: str = Field(description="start of the bucket (UTC, ISO 8601)")
    count: int | None = None
    sum: float | None = None
    avg: float | None = None
    min: float | None = None
    max: float | None = None


class Gap(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    start: str = Field(alias="from", description="start of the first empty bucket")
    end: str = Field(alias="to", description="end of the last empty bucket (exclusive)")


class Series(BaseModel):
    datastream_id: int = Field(alias="datastreamId")
    buckets: list[Bucket]
    gaps: list[Gap] = Field(description="runs of buckets without any observation")

    model_config = ConfigDict(populate_by_name=True)


class AggregateResult(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    interval: str = Field(description="bucket width, ISO 8601 duration")
    start: str = Field(alias="from", description="start of the first bucket (UTC)")
    end: str = Field(alias="to", description="end of the last bucket (UTC, exclusive)")
    functions: list[str]
    source: str = Field(description="what answered: raw observations or a rollup")
    series: list[Series]


class ColumnSeries(BaseModel):
    """One datastream's buckets as columns (``layout=columns``): the bucket times and one array
    per function asked for, of the same length; only the functions asked for are present."""

    model_config = ConfigDict(populate_by_name=True)

    datastream_id: int = Field(alias="datastreamId")
    time: list[str] = Field(description="start of each bucket with observations (UTC, ISO 8601)")
    count: list[int] | None = None
    sum: list[float | None] | None = None
    avg: list[float | None] | None = None
    min: list[float | None] | None = None
    max: list[float | None] | None = None
    gaps: list[Gap] = Field(description="runs of buckets without any observation")


class ColumnarAggregateResult(BaseModel):
    """The answer with ``layout=columns``: as :class:`AggregateResult`, with column series."""

    model_config = ConfigDict(populate_by_name=True)

    interval: str = Field(description="bucket width, ISO 8601 duration")
    start: str = Field(alias="from", description="start of the first bucket (UTC)")
    end: str = Field(alias="to", description="end of the last bucket (UTC, exclusive)")
    functions: list[str]
    source: str = Field(description="what answered: raw observations or a rollup")
    layout: Literal["columns"]
    series: list[ColumnSeries]


class LatestValue(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    datastream_id: int = Field(alias="datastreamId")
    phenomenon_time: str = Field(alias="phenomenonTime")
    result: float | None


class LatestValues(BaseModel):
    value: list[LatestValue]
    missing: list[int] = Field(description="datastreams asked for that have no observation")


# ------------------------------------------------------------------------------------ helpers
def parse_ids(text: str) -> list[int]:
    ids: list[int] = []
    for part in text.split(","):
        p = part.strip()
        if not p:
            continue
        if not p.isdigit():
            raise BadRequestError(
                f"ids={text!r}: {p!r} is not a datastream id; give a comma-separated list of "
                "integers, e.g. ids=1,2,3"
            )
        ids.append(int(p))
    if not ids:
        raise BadRequestError("ids is empty; give a comma-separated list of datastream ids")
    if len(ids) > MAX_IDS:
        raise BadRequestError(f"ids has {len(ids)} datastreams; at most {MAX_IDS} per request")
    return list(dict.fromkeys(ids))


def _require_datastreams(conn: Conn, ids: list[int]) -> None:
    if not ids:
        return
    found = {
        r["id"]
        for r in conn.execute("select id from datastream where id = any(%s::bigint[])", (ids,))
    }
    missing = [i for i in ids if i not in found]
    if missing:
        shown = ", ".join(str(i) for i in missing[:20]) + (" …" if len(missing) > 20 else "")
        noun = "Datastream" if len(missing) == 1 else "Datastreams"
        raise NotFoundError(f"no {noun} with @iot.id {shown}")


def _wants_csv(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


def _to_model(agg: ts.Aggregate) -> AggregateResult:
    fns = list(agg.functions)
    series = []
    for s in agg.series:
        buckets = [
            Bucket.model_construct(time=iso(t), **{f: v for f, v in zip(fns, values, strict=True)})
            for t, *values in s.rows(fns)
        ]
        gaps = [Gap(start=iso(g.start), end=iso(g.end)) for g in s.gaps]
        series.append(Series(datastream_id=s.datastream_id, buckets=buckets, gaps=gaps))
    return AggregateResult(
        interval=ts.iso_width(agg.width),
        start=iso(agg.start),
        end=iso(agg.end),
        functions=fns,
        source=agg.source,
        series=series,
    )


def _json(agg: ts.Aggregate) -> Response:
    """The body of :class:`AggregateResult` from an ``as_json`` aggregate: the buckets as
    PostgreSQL wrote them, the rest (a few members per series) here."""
    head = (
        f'{{"interval":{json.dumps(ts.iso_width(agg.width))},"from":"{iso(agg.start)}",'
        f'"to":"{iso(agg.end)}","functions":{json.dumps(list(agg.functions))},'
        f'"source":{json.dumps(agg.source)},"series":['
    )
    parts = [head]
    for k, s in enumerate(agg.series):
        gaps = ",".join(f'{{"from":"{iso(g.start)}","to":"{iso(g.end)}"}}' for g in s.gaps)
        parts.append(
            f'{"," if k else ""}{{"datastreamId":{int(s.datastream_id)},"buckets":['
            f'{s.json or ""}],"gaps":[{gaps}]}}'
        )
    parts.append("]}")
    return Response("".join(parts), media_type="application/json")


def _csv(agg: ts.Aggregate) -> Response:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    fns = list(agg.functions)
    w.writerow(safe_row(["datastream_id", "time", *fns]))
    for s in agg.series:
        for t, *values in s.rows(fns):
            cells = [s.datastream_id, iso(t), *("" if v is None else repr(v) for v in values)]
            w.writerow(safe_row(cells))
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "X-Quartier-Source": agg.source,
            "X-Quartier-Interval": ts.iso_width(agg.width),
            "X-Quartier-Range": f"{iso(agg.start)}/{iso(agg.end)}",
        },
    )


def _aggregate(
    conn: Conn,
    request: Request,
    ids: list[int],
    interval: str,
    start: datetime,
    end: datetime,
    fn: str | None,
    source: ts.SourceChoice,
    fmt: Literal["json", "csv"] | None,
    layout: Literal["rows", "columns"],
) -> Response | AggregateResult:
    width = ts.parse_width(interval)
    functions = ts.parse_functions(fn)
    csv_wanted = _wants_csv(request, fmt)
    if csv_wanted and layout == "columns":
        raise BadRequestError(
            "layout=columns is a JSON layout; CSV has one row per datastream and bucket "
            "(leave out layout, or ask for format=json)"
        )
    columns = layout == "columns" and not csv_wanted
    as_json = not csv_wanted and not columns
    agg = ts.aggregate(
        conn, ids, width, start, end, functions=functions, source=source, columns=columns,
        as_json=as_json,
    )  # fmt: skip
    # a datastream with buckets exists: only those without are looked up (one round trip fewer
    # for the usual answer)
    _require_datastreams(conn, [s.datastream_id for s in agg.series if _empty(s)])
    if csv_wanted:
        return _csv(agg)
    if layout == "columns":
        return columns_response(agg)
    return _json(agg)


def _empty(series: ts.Series) -> bool:
    return not series.epoch and series.columns is None and series.json is None


# ------------------------------------------------------------------------------------ routes
Interval = Annotated[
    str,
    Query(
        description="bucket width: " + ", ".join(ts.WIDTHS) + " (or ISO 8601: PT15M, PT1H, P1D)",
        examples=["1h"],
    ),
]
From = Annotated[datetime, Query(alias="from", description="start (ISO 8601 with time zone)")]
To = Annotated[datetime, Query(alias="to", description="end, exclusive (ISO 8601 with zone)")]
Fn = Annotated[
    str | None,
    Query(description="comma-separated: count, sum, avg, min, max (default: all)"),
]
Source = Annotated[
    Literal["auto", "raw", "rollup"],
    Query(description="auto: the cheapest source; raw or rollup to force one"),
]
Format = Annotated[
    Literal["json", "csv"] | None,
    Query(alias="format", description="json or csv (default: from Accept, else json)"),
]
Layout = Annotated[
    Literal["rows", "columns"],
    Query(
        description="JSON layout: rows (one object per bucket) or columns (per series one array "
        "of bucket times and one per function; compact, streamed when large)"
    ),
]
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
}


@router.get(
    "/Datastreams({ds_id})/Observations/aggregate",
    response_model=AggregateResult | ColumnarAggregateResult,
    response_model_by_alias=True,
    response_model_exclude_unset=True,
    operation_id="aggregate_datastream_observations",
    responses=CSV_RESPONSE,
)
def aggregate_one(
    ds_id: int,
    conn: Conn,
    request: Request,
    interval: Interval,
    start: From,
    end: To,
    fn: Fn = None,
    source: Source = "auto",
    fmt: Format = None,
    layout: Layout = "rows",
) -> Response | AggregateResult:
    """Aggregates of one datastream's observations per bucket, with the gaps."""
    return _aggregate(conn, request, [ds_id], interval, start, end, fn, source, fmt, layout)


@router.get(
    "/Datastreams/Observations/aggregate",
    response_model=AggregateResult | ColumnarAggregateResult,
    response_model_by_alias=True,
    response_model_exclude_unset=True,
    operation_id="aggregate_observations_of_datastreams",
    responses=CSV_RESPONSE,
)
def aggregate_many(
    conn: Conn,
    request: Request,
    ids: Annotated[str, Query(description="comma-separated datastream ids, e.g. 1,2,3")],
    interval: Interval,
    start: From,
    end: To,
    fn: Fn = None,
    source: Source = "auto",
    fmt: Format = None,
    layout: Layout = "rows",
) -> Response | AggregateResult:
    """Aggregates of several datastreams at once (one series each)."""
    return _aggregate(conn, request, parse_ids(ids), interval, start, end, fn, source, fmt, layout)


@router.get(
    "/Datastreams/Observations/latest",
    response_model=LatestValues,
    response_model_by_alias=True,
    operation_id="latest_observations_of_datastreams",
)
def latest_values(
    conn: Conn,
    ids: Annotated[str, Query(description="comma-separated datastream ids, e.g. 1,2,3")],
) -> LatestValues:
    """The newest observation of each datastream (for maps)."""
    wanted = parse_ids(ids)
    rows = ts.latest(conn, wanted)
    have = {r.datastream_id for r in rows}
    return LatestValues(
        value=[
            LatestValue(
                datastream_id=r.datastream_id,
                phenomenon_time=iso(r.phenomenon_time),
                result=r.result,
            )
            for r in rows
        ],
        missing=[i for i in wanted if i not in have],
    )
