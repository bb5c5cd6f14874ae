"""Parse SensorThings API v1.1 system query options into the typed tree of ``ast``.

One Lark LALR grammar covers ``$filter``, ``$orderby``, ``$select`` and ``$expand`` (whose nested
options use the same rules, so a ``$filter`` inside ``$expand=Datastreams(...)`` is parsed exactly
like a top-level one). Operator precedence follows OData 4 URL conventions §5.1.1: grouping, then
unary ``-`` and ``not``, then ``mul div mod``, then ``add sub``, then comparisons, then ``and``,
then ``or``.

Syntax errors are :class:`BadRequestError` naming the option, the 1-based position and the token;
constructs of OData that SensorThings does not need (lambda operators, ``cast``, ``isof``, ``in``,
``has``, ``$search``, ``$levels``…) are :class:`NotImplementedQueryError`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, VisitError

from quartier.api.sta import ast
from quartier.errors import BadRequestError, NotImplementedQueryError

log = logging.getLogger(__name__)

GRAMMAR = r"""
// ----------------------------------------------------------------- $filter expressions
?expr: or_expr
?or_expr: and_expr | or_expr _OR and_expr -> or_
?and_expr: cmp_expr | and_expr _AND cmp_expr -> and_
?cmp_expr: add_expr | add_expr CMP add_expr -> compare
         | add_expr UNSUPPORTED_OP add_expr -> unsupported_op
         | add_expr IN "(" [expr ("," expr)*] ")" -> unsupported_op
?add_expr: mul_expr | add_expr ADDOP mul_expr -> arith
?mul_expr: unary | mul_expr MULOP unary -> arith
?unary: primary | MINUS unary -> neg | _NOT unary -> not_
?primary: literal | path | call | "(" expr ")"

call: funcname "(" [expr ("," expr)*] ")"
funcname: NAME | NAME "." NAME
path: segment ("/" segment)*
segment: NAME | IOTID
MINUS: "-"

?literal: STRING -> string
        | NUMBER -> number
        | DATETIME -> datetime
        | DATE -> date
        | TIMEOFDAY -> timeofday
        | INTERVAL -> interval
        | DURATION -> duration
        | GEO -> geo
        | "true" -> true
        | "false" -> false
        | "null" -> null

CMP: "eq" | "ne" | "gt" | "ge" | "lt" | "le"
UNSUPPORTED_OP: "has"
IN: "in"
ADDOP: "add" | "sub"
MULOP: "mul" | "div" | "mod"
_AND: "and"
_OR: "or"
_NOT: "not"

NAME: /[A-Za-z_][A-Za-z0-9_]*/
IOTID: "@iot.id"
STRING.2: /'(?:[^']|'')*'/
_DT: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})/
DATETIME.3: _DT
INTERVAL.4: _DT "/" _DT
DATE.2: /\d{4}-\d{2}-\d{2}/
TIMEOFDAY.2: /\d{2}:\d{2}:\d{2}(\.\d+)?/
NUMBER: /\d+(\.\d+)?([eE][+-]?\d+)?/
DURATION.3: /duration'[^']*'/
GEO.3: /geo(graphy|metry)'[^']*'/

// ----------------------------------------------------------------- the other options
orderby: order_item ("," order_item)*
order_item: expr [ORDER_DIR]
ORDER_DIR: "asc" | "desc"

select: path ("," path)*

expand: expand_item ("," expand_item)*
expand_item: path ["(" option (";" option)* ")"]
?option: "$filter" "=" expr -> opt_filter
       | "$orderby" "=" orderby -> opt_orderby
       | "$select" "=" select -> opt_select
       | "$expand" "=" expand -> opt_expand
       | "$top" "=" NUMBER -> opt_top
       | "$skip" "=" NUMBER -> opt_skip
       | "$count" "=" BOOL -> opt_count
       | OTHER_OPTION "=" /[^;)]+/ -> opt_unsupported
BOOL: "true" | "false"
OTHER_OPTION: /\$[A-Za-z]+/

%import common.WS
%ignore WS
"""

# OData functions that are valid but that SensorThings v1.1 does not require: 501, not 400.
UNSUPPORTED_FUNCTIONS = frozenset(
    {"any", "all", "cast", "isof", "matchespattern", "hassubset", "hassubsequence", "case"}
    | {"geo.within", "geo.contains", "geo.overlaps", "geo.touches"}
)

_READABLE = {
    "CMP": "a comparison (eq ne gt ge lt le)",
    "ADDOP": "add or sub",
    "MULOP": "mul, div or mod",
    "_AND": "and",
    "_OR": "or",
    "_NOT": "not",
    "NAME": "a property or function name",
    "IOTID": "@iot.id",
    "STRING": "a string",
    "NUMBER": "a number",
    "DATETIME": "a date-time",
    "LPAR": "(",
    "RPAR": ")",
    "COMMA": ",",
    "SLASH": "/",
    "SEMICOLON": ";",
    "$END": "the end",
    "ORDER_DIR": "asc or desc",
    "MINUS": "-",
}


@cache
def _parser() -> Lark:
    return Lark(
        GRAMMAR,
        start=["expr", "orderby", "select", "expand"],
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def _unquote(text: str) -> str:
    """The body of a quoted literal, with ``''`` meaning one quote."""
    return text[text.index("'") + 1 : -1].replace("''", "'")


def parse_datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise BadRequestError(f"{text!r} is not a valid date-time: {e}") from None
    return value.astimezone(UTC)


_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """An OData duration (``P1DT2H30M``; days, hours, minutes, seconds: no months or years, as
    their length varies)."""
    m = _DURATION.match(text)
    if m is None or text in ("P", "-P") or text.endswith("T"):
        raise BadRequestError(
            f"duration {text!r} is not an ISO 8601 duration of days, hours, minutes and seconds"
            " (e.g. 'P1DT2H')"
        )
    value = timedelta(
        days=int(m["d"] or 0),
        hours=int(m["h"] or 0),
        minutes=int(m["m"] or 0),
        seconds=float(m["s"] or 0),
    )
    return -value if m["sign"] else value


_GEOMETRY_TYPES = (
    "POINT",
    "LINESTRING",
    "POLYGON",
    "MULTIPOINT",
    "MULTILINESTRING",
    "MULTIPOLYGON",
    "GEOMETRYCOLLECTION",
)


def _geometry(text: str) -> ast.Geometry:
    body = _unquote(text).strip()
    wkt = body.split(";", 1)[1].strip() if body.upper().startswith("SRID=") else body
    if body.upper().startswith("SRID=") and body.split(";", 1)[0].strip().upper() != "SRID=4326":
        raise NotImplementedQueryError(f"{text}: only SRID=4326 (WGS 84) is supported")
    if not wkt.upper().startswith(_GEOMETRY_TYPES):
        raise BadRequestError(f"{text}: not well-known text (WKT) of a geometry")
    try:
        import shapely

        shapely.from_wkt(wkt)
    except Exception as e:  # shapely raises its own GEOSException
        raise BadRequestError(f"{text}: not valid well-known text: {e}") from None
    return ast.Geometry(wkt=wkt, geography=text.startswith("geography"))


def _pos(meta: Any) -> int:
    return int(getattr(meta, "column", 0) or 0)


def _tpos(token: Token) -> int:
    return int(token.column or 0)


@v_args(meta=True)
class _ToAst(Transformer[Token, Any]):
    def __init__(self, text: str = "") -> None:
        super().__init__()
        self._text = text

    def _raw(self, meta: Any) -> str:
        """The value of an ``$expand`` item's option as written (``$top=1`` → ``1``)."""
        start, end = getattr(meta, "start_pos", None), getattr(meta, "end_pos", None)
        if start is None or end is None:
            return ""
        return self._text[start:end].split("=", 1)[1].strip()

    # --- literals
    def string(self, meta: Any, c: list[Token]) -> ast.Literal:
        return ast.Literal(_unquote(c[0]), _pos(meta))

    def number(self, meta: Any, c: list[Token]) -> ast.Literal:
        text = str(c[0])
        value: int | float = float(text) if any(ch in text for ch in ".eE") else int(text)
        return ast.Literal(value, _pos(meta))

    def datetime(self, meta: Any, c: list[Token]) -> ast.Literal:
        return ast.Literal(parse_datetime(c[0]), _pos(meta))

    def date(self, meta: Any, c: list[Token]) -> ast.Literal:
        try:
            return ast.Literal(date.fromisoformat(c[0]), _pos(meta))
        except ValueError as e:
            raise BadRequestError(f"{str(c[0])!r} is not a valid date: {e}") from None

    def timeofday(self, meta: Any, c: list[Token]) -> ast.Literal:
        try:
            return ast.Literal(time.fromisoformat(c[0]), _pos(meta))
        except ValueError as e:
            raise BadRequestError(f"{str(c[0])!r} is not a valid time of day: {e}") from None

    def interval(self, meta: Any, c: list[Token]) -> ast.Literal:
        start, end = (parse_datetime(p) for p in str(c[0]).split("/"))
        if end < start:
            raise BadRequestError(f"interval {c[0]!r} ends before it starts")
        return ast.Literal(ast.Interval(start, end), _pos(meta))

    def duration(self, meta: Any, c: list[Token]) -> ast.Literal:
        return ast.Literal(parse_duration(_unquote(c[0])), _pos(meta))

    def geo(self, meta: Any, c: list[Token]) -> ast.Literal:
        return ast.Literal(_geometry(c[0]), _pos(meta))

    def true(self, meta: Any, c: list[Token]) -> ast.Literal:
        return ast.Literal(True, _pos(meta))

    def false(self, meta: Any, c: list[Token]) -> ast.Literal:
        return ast.Literal(False, _pos(meta))

    def null(self, meta: Any, c: list[Token]) -> ast.Literal:
        return ast.Literal(None, _pos(meta))

    # --- expressions
    def segment(self, meta: Any, c: list[Token]) -> str:
        return "id" if c[0] == "@iot.id" else str(c[0])

    def path(self, meta: Any, c: list[str]) -> ast.Path:
        return ast.Path(tuple(c), _pos(meta))

    def funcname(self, meta: Any, c: list[Token]) -> str:
        return ".".join(str(t) for t in c if t is not None)

    def call(self, meta: Any, c: list[Any]) -> ast.Call:
        name, *args = c
        if name in UNSUPPORTED_FUNCTIONS:
            raise NotImplementedQueryError(
                f"function {name}() at position {_pos(meta)} is not supported"
            )
        return ast.Call(name, tuple(a for a in args if a is not None), _pos(meta))

    def compare(self, meta: Any, c: list[Any]) -> ast.Compare:
        return ast.Compare(str(c[1]), c[0], c[2], _tpos(c[1]))  # type: ignore[arg-type]

    def unsupported_op(self, meta: Any, c: list[Any]) -> ast.Expr:
        raise NotImplementedQueryError(
            f"operator {c[1]!s} at position {_tpos(c[1])} is not supported"
        )

    def arith(self, meta: Any, c: list[Any]) -> ast.Arith:
        return ast.Arith(str(c[1]), c[0], c[2], _tpos(c[1]))  # type: ignore[arg-type]

    def neg(self, meta: Any, c: list[Any]) -> ast.Expr:
        operand = c[1]
        if isinstance(operand, ast.Literal) and type(operand.value) in (int, float):
            return ast.Literal(-operand.value, _pos(meta))  # type: ignore[operator]
        return ast.Negate(operand, _pos(meta))

    def not_(self, meta: Any, c: list[Any]) -> ast.Not:
        return ast.Not(c[0], _pos(meta))

    def and_(self, meta: Any, c: list[Any]) -> ast.Logical:
        return ast.Logical("and", c[0], c[1], _pos(meta))

    def or_(self, meta: Any, c: list[Any]) -> ast.Logical:
        return ast.Logical("or", c[0], c[1], _pos(meta))

    # --- the other options
    def order_item(self, meta: Any, c: list[Any]) -> ast.OrderItem:
        return ast.OrderItem(c[0], descending=c[1] == "desc")

    def orderby(self, meta: Any, c: list[ast.OrderItem]) -> tuple[ast.OrderItem, ...]:
        return tuple(c)

    def select(self, meta: Any, c: list[ast.Path]) -> tuple[ast.Path, ...]:
        return tuple(c)

    def expand(self, meta: Any, c: list[ast.Expand]) -> tuple[ast.Expand, ...]:
        return tuple(c)

    def expand_item(self, meta: Any, c: list[Any]) -> ast.Expand:
        path, *opts = c
        given: dict[str, Any] = {}
        raw: list[tuple[str, str]] = []
        for name, value, text in (o for o in opts if o is not None):
            if name in given:
                raise BadRequestError(f"$expand={path}: option ${name} given twice")
            given[name] = value
            raw.append((f"${name}", text))
        return ast.Expand(path.segments, ast.QueryOptions(**given), tuple(raw))

    def opt_filter(self, meta: Any, c: list[Any]) -> tuple[str, Any, str]:
        return ("filter", c[0], self._raw(meta))

    def opt_orderby(self, meta: Any, c: list[Any]) -> tuple[str, Any, str]:
        return ("orderby", c[0], self._raw(meta))

    def opt_select(self, meta: Any, c: list[Any]) -> tuple[str, Any, str]:
        return ("select", c[0], self._raw(meta))

    def opt_expand(self, meta: Any, c: list[Any]) -> tuple[str, Any, str]:
        return ("expand", c[0], self._raw(meta))

    def opt_top(self, meta: Any, c: list[Token]) -> tuple[str, Any, str]:
        return ("top", _nonnegative("$top", c[0]), self._raw(meta))

    def opt_skip(self, meta: Any, c: list[Token]) -> tuple[str, Any, str]:
        return ("skip", _nonnegative("$skip", c[0]), self._raw(meta))

    def opt_count(self, meta: Any, c: list[Token]) -> tuple[str, Any, str]:
        return ("count", c[0] == "true", self._raw(meta))

    def opt_unsupported(self, meta: Any, c: list[Token]) -> tuple[str, Any, str]:
        raise _unknown_option(str(c[0]), inside_expand=True)


def _nonnegative(option: str, text: str) -> int:
    if not text.isdigit():
        raise BadRequestError(f"{option}={text!r}: expected a non-negative integer")
    return int(text)


_OPTIONS = ("$filter", "$orderby", "$select", "$expand", "$top", "$skip", "$count")
_UNSUPPORTED_OPTIONS = ("$search", "$apply", "$levels", "$format", "$compute", "$index")


def _unknown_option(name: str, inside_expand: bool = False) -> QueryError:
    if name in _UNSUPPORTED_OPTIONS:
        return NotImplementedQueryError(f"query option {name} is not supported")
    allowed = _OPTIONS if inside_expand else (*_OPTIONS, "$resultFormat")
    return BadRequestError(f"unknown query option {name}; known: {', '.join(allowed)}")


QueryError = BadRequestError | NotImplementedQueryError


def _describe(option: str, text: str, e: UnexpectedInput) -> BadRequestError:
    col = int(getattr(e, "column", 0) or 0)
    if isinstance(e, UnexpectedCharacters):
        char = text[e.pos_in_stream] if e.pos_in_stream is not None else "?"
        what = f"unexpected character {char!r}"
    elif isinstance(e, UnexpectedEOF) or getattr(e, "token", None) is None:
        what, col = "unexpected end", len(text) + 1
    else:
        token = e.token  # type: ignore[attr-defined]
        if token.type == "$END":
            what, col = "unexpected end", len(text) + 1
        else:
            what = f"unexpected {str(token)!r}"
    expected = sorted(
        {_READABLE.get(t, t.strip('"').lower()) for t in getattr(e, "expected", ()) or ()}
        | {_READABLE.get(t, t.strip('"').lower()) for t in getattr(e, "allowed", ()) or ()}
    )
    hint = f"; expected {', '.join(expected[:8])}" if expected else ""
    return BadRequestError(f"{option}: {what} at position {col}{hint}")


_LAMBDA = re.compile(r"/\s*(?P<op>any|all)\s*\(")


#: The deepest expression tree a query option may make. The parser itself keeps its own stack,
#: but turning the tree into the AST, compiling and evaluating it recurse: 5,000 ``not`` or
#: 3,000 ``and`` would pass Python's recursion limit. Real queries are a few levels deep.
MAX_DEPTH = 200


def _depth(tree: Tree[Any]) -> int:
    """The tree's depth, without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))
    return deepest


def _parse(option: str, text: str, start: str) -> Any:
    if not text.strip():
        raise BadRequestError(f"{option} is empty")
    try:
        tree = _parser().parse(text, start=start)
        if _depth(tree) > MAX_DEPTH:
            raise BadRequestError(
                f"{option} is nested too deeply (more than {MAX_DEPTH} levels of operators, "
                "functions or parentheses)"
            )
        return _ToAst(text).transform(tree)
    except UnexpectedInput as e:
        lambda_ = _LAMBDA.search(text)
        if lambda_ is not None:  # OData's lambda operators are not in the grammar: 501, not 400
            raise NotImplementedQueryError(
                f"{option}: lambda operator {lambda_['op']} at position {lambda_.start('op') + 1}"
                " is not supported"
            ) from None
        raise _describe(option, text, e) from None
    except VisitError as e:
        if isinstance(e.orig_exc, BadRequestError | NotImplementedQueryError):
            raise type(e.orig_exc)(f"{option}: {e.orig_exc}") from None
        raise


def parse_filter(text: str) -> ast.Expr:
    """``$filter`` → expression tree."""
    result: ast.Expr = _parse("$filter", text, "expr")
    return result


def parse_orderby(text: str) -> tuple[ast.OrderItem, ...]:
    """``$orderby=a desc, b`` → order items (ascending unless ``desc``)."""
    result: tuple[ast.OrderItem, ...] = _parse("$orderby", text, "orderby")
    return result


def parse_select(text: str) -> tuple[ast.Path, ...]:
    result: tuple[ast.Path, ...] = _parse("$select", text, "select")
    return result


def parse_expand(text: str) -> tuple[ast.Expand, ...]:
    result: tuple[ast.Expand, ...] = _parse("$expand", text, "expand")
    return result


def _int_option(name: str, text: str) -> int:
    return _nonnegative(name, text.strip())


def _bool_option(name: str, text: str) -> bool:
    if text.strip() not in ("true", "false"):
        raise BadRequestError(f"{name}={text!r}: expected true or false")
    return text.strip() == "true"


_RESULT_FORMATS: Mapping[str, ast.ResultFormat] = {
    "default": "default",
    "dataarray": "dataArray",
    "geojson": "GeoJSON",
    "csv": "CSV",
}


def parse_query_options(params: Mapping[str, str]) -> ast.QueryOptions:
    """All system query options of a request (the query parameters starting with ``$``; others are
    ignored here). Unknown options are a 400, known but unsupported ones a 501."""
    given: dict[str, Any] = {}
    for name, text in params.items():
        if not name.startswith("$"):
            continue
        if name == "$filter":
            given["filter"] = parse_filter(text)
        elif name == "$orderby":
            given["orderby"] = parse_orderby(text)
        elif name == "$select":
            given["select"] = parse_select(text)
        elif name == "$expand":
            given["expand"] = parse_expand(text)
        elif name == "$top":
            given["top"] = _int_option(name, text)
        elif name == "$skip":
            given["skip"] = _int_option(name, text)
        elif name == "$count":
            given["count"] = _bool_option(name, text)
        elif name == "$resultFormat":
            fmt = _RESULT_FORMATS.get(text.strip().lower())
            if fmt is None:
                raise BadRequestError(
                    f"$resultFormat={text!r}: expected one of {', '.join(_RESULT_FORMATS.values())}"
                )
            given["result_format"] = fmt
        elif name == "$skiptoken":
            given["skiptoken"] = text
        else:
            raise _unknown_option(name)
    return ast.QueryOptions(**given)
