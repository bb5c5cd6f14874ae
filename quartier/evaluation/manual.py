"""Manual indicator values (those no sensor measures: OZG services online, course participants,
…) from a CSV file: parsing and validation are pure, ``import_csv`` stores them.

CSV format (UTF-8, comma separated, header row; see docs/evaluation.md):

    indicator,date,value,source[,scope_type,scope_code,period_start,numerator,denominator,note]

``date`` is the date the value refers to (the end of its period), ``period_start`` optional;
both ISO 8601 dates (midnight UTC) or date-times (UTC unless a zone is given). ``scope_type``
"city" (default) or "stadtbezirk" with ``scope_code``. Every error names the file and line;
nothing is stored unless every row is valid.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from pathlib import Path

from quartier.errors import BadRequestError, QuartierError
from quartier.evaluation import sources, storage
from quartier.evaluation.indicators import IndicatorValue
from quartier.evaluation.scopes import CITY
from quartier.store.db import Conn

REQUIRED = ("indicator", "date", "value", "source")
OPTIONAL = ("scope_type", "scope_code", "period_start", "numerator", "denominator", "note")


def parse_when(text: str) -> datetime:
    """An ISO date (midnight UTC) or date-time (UTC if it names no zone)."""
    text = text.strip()
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date: {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _number(text: str, column: str) -> float | None:
    if not text.strip():
        return None
    try:
        return float(text.replace(",", ".") if text.count(",") == 1 and "." not in text else text)
    except ValueError:
        raise ValueError(f"{column}: not a number: {text!r}") from None


def parse_csv(
    text: str,
    *,
    file: str = "<csv>",
    city_code: str = CITY,
    district_names: dict[str, str] | None = None,
    recorded_at: datetime,
) -> list[IndicatorValue]:
    """Manual values from CSV text; raises ``BadRequestError`` listing every bad line."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if missing or unknown:
        parts = ([f"missing columns {', '.join(missing)}"] if missing else []) + (
            [f"unknown columns {', '.join(unknown)}"] if unknown else []
        )
        raise BadRequestError(f"{file}:1: " + "; ".join(parts))
    reader.fieldnames = header
    values: list[IndicatorValue] = []
    errors: list[str] = []
    for row in reader:
        line = reader.line_num
        cells: dict[str, str] = {k: (v or "").strip() for k, v in row.items() if k is not None}
        try:
            value = _number(cells["value"], "value")
            if value is None:
                raise ValueError("value: empty")
            scope_type = cells.get("scope_type") or CITY
            code = cells.get("scope_code") or ""
            if scope_type == CITY:
                code = city_code
            elif not code:
                raise ValueError("scope_code: needed for a district value")
            period_start = cells.get("period_start") or ""
            values.append(
                storage.manual_value(
                    cells["indicator"],
                    value,
                    parse_when(cells["date"]),
                    cells["source"],
                    scope_type=scope_type,
                    scope_code=code,
                    scope_name=(district_names or {}).get(code, ""),
                    period_start=parse_when(period_start) if period_start else None,
                    numerator=_number(cells.get("numerator", ""), "numerator"),
                    denominator=_number(cells.get("denominator", ""), "denominator"),
                    note=cells.get("note") or None,
                    recorded_at=recorded_at,
                )
            )
        except (ValueError, QuartierError) as exc:
            errors.append(f"{file}:{line}: {exc}")
    if errors:
        raise BadRequestError(f"{len(errors)} invalid row(s):\n" + "\n".join(errors))
    return values


def import_csv(conn: Conn, path: Path, *, now: datetime | None = None) -> int:
    """Validate every row of ``path``, then store all of them (or none). Returns the count."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise BadRequestError(f"cannot read {path}: {exc.strerror}") from None
    scopes = sources.load_scopes(conn)
    values = parse_csv(
        text,
        file=str(path),
        city_code=scopes.city_code,
        district_names=dict(scopes.districts) | {scopes.city_code: scopes.city_name},
        recorded_at=now or datetime.now(UTC),
    )
    return storage.record_values(conn, values)
