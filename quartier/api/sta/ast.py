"""The typed syntax tree of SensorThings (OData) system query options.

Pure data: the parser (``grammar``) builds it, the compiler (``compile``) turns it into SQL and the
evaluator (``evaluate``) runs it over plain rows. ``pos`` is the 1-based character position of a
node in the option's text, for error messages; it takes no part in equality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Literal as Lit

CompareOp = Lit["eq", "ne", "gt", "ge", "lt", "le"]
ArithOp = Lit["add", "sub", "mul", "div", "mod"]
BoolOp = Lit["and", "or"]
ResultFormat = Lit["default", "dataArray", "GeoJSON", "CSV"]


@dataclass(frozen=True)
class Geometry:
    """A ``geography'…'`` or ``geometry'…'`` literal: WKT, optionally with ``SRID=n;``."""

    wkt: str
    geography: bool = True


@dataclass(frozen=True)
class Interval:
    """A time interval literal ``<start>/<end>`` (ISO 8601, both ends included)."""

    start: datetime
    end: datetime


Value = None | bool | int | float | str | datetime | date | time | timedelta | Geometry | Interval


@dataclass(frozen=True)
class Literal:
    value: Value
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Path:
    """A property path: ``name``, ``Datastream/ObservedProperty/name``, ``properties/owner``."""

    segments: tuple[str, ...]
    pos: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return "/".join(self.segments)


@dataclass(frozen=True)
class Compare:
    op: CompareOp
    left: Expr
    right: Expr
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Logical:
    op: BoolOp
    left: Expr
    right: Expr
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Not:
    operand: Expr
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Arith:
    op: ArithOp
    left: Expr
    right: Expr
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Negate:
    operand: Expr
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Call:
    """A built-in function; ``name`` as written (``geo.intersects``, ``st_within``)."""

    name: str
    args: tuple[Expr, ...]
    pos: int = field(default=0, compare=False)


Expr = Literal | Path | Compare | Logical | Not | Arith | Negate | Call


@dataclass(frozen=True)
class OrderItem:
    expr: Expr
    descending: bool = False


@dataclass(frozen=True)
class Expand:
    """One ``$expand`` item: a navigation path (``Datastreams`` or ``Datastreams/Sensor``) and
    the options applied to the expanded entities (to the last segment of the path)."""

    path: tuple[str, ...]
    options: QueryOptions
    #: the options as written, ``(("$top", "1"), ("$orderby", "phenomenonTime desc"))``: what an
    #: expanded collection's ``@iot.nextLink`` repeats
    raw: tuple[tuple[str, str], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class QueryOptions:
    """The system query options of one request, or of one level of ``$expand``. ``None`` means
    the option was not given (the route applies its default)."""

    filter: Expr | None = None
    orderby: tuple[OrderItem, ...] = ()
    select: tuple[Path, ...] = ()
    expand: tuple[Expand, ...] = ()
    top: int | None = None
    skip: int | None = None
    count: bool | None = None
    result_format: ResultFormat | None = None
    #: the keyset cursor of a server-driven next page (``$skiptoken``, opaque to clients)
    skiptoken: str | None = None
