"""Evaluate a ``$filter`` tree over plain rows: the clear path the SQL compiler (``compile``) is
tested against, with the same semantics (see that module's docstring).

Rows are mappings from SensorThings property names to Python values: ``datetime`` (aware) for
times, ``(start, end)`` for intervals, GeoJSON mappings or shapely geometries for geometries, and
decoded JSON for ``properties``, ``parameters`` and ``result``. Navigation goes through a
:class:`Graph`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from quartier.api.sta import ast
from quartier.api.sta.compile import MAX_DATETIME, MIN_DATETIME, entity_of
from quartier.api.sta.model import Entity, Type, literal_type, resolve, type_of

Row = Mapping[str, Any]


class Graph(Protocol):
    def related(self, entity: str, row: Row, nav: str) -> Sequence[Row]:
        """The rows ``nav`` of ``row`` (an ``entity``) leads to (zero or one for to-one)."""
        ...


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "eq": operator.eq,
}


class _Eval:
    def __init__(self, entity: Entity, graph: Graph, now: datetime) -> None:
        self.entity = entity
        self.graph = graph
        self.now = now

    # --- conditions
    def condition(self, e: ast.Expr, row: Row) -> bool:
        if isinstance(e, ast.Logical):
            left = self.condition(e.left, row)
            right = self.condition(e.right, row)
            return (left and right) if e.op == "and" else (left or right)
        if isinstance(e, ast.Not):
            return not self.condition(e.operand, row)
        prefixes = sorted(_nav_prefixes(e, self.entity), key=len)
        return any(_cond(*self.value(e, env)) for env in self._bindings(prefixes, {(): row}))

    def _bindings(self, prefixes: list[tuple[str, ...]], env: dict[tuple[str, ...], Row]) -> Any:
        if not prefixes:
            yield env
            return
        first, rest = prefixes[0], prefixes[1:]
        parent = env[first[:-1]]
        parent_entity = self._entity_at(first[:-1])
        for target in self.graph.related(parent_entity.name, parent, first[-1]):
            yield from self._bindings(rest, {**env, first: target})

    def _entity_at(self, prefix: tuple[str, ...]) -> Entity:
        from quartier.api.sta.model import ENTITIES

        e = self.entity
        for seg in prefix:
            e = ENTITIES[e.navs[seg].target]
        return e

    # --- values: (type, value)
    def value(self, e: ast.Expr, env: dict[tuple[str, ...], Row]) -> tuple[Type, Any]:
        if isinstance(e, ast.Literal):
            return self.literal(e.value)
        if isinstance(e, ast.Path):
            return self.path(e, env)
        if isinstance(e, ast.Logical):
            a = _cond(*self.value(e.left, env))
            b = _cond(*self.value(e.right, env))
            return "bool", (a and b) if e.op == "and" else (a or b)
        if isinstance(e, ast.Not):
            return "bool", not _cond(*self.value(e.operand, env))
        if isinstance(e, ast.Compare):
            type_of(e, self.entity)
            return "bool", _compare(e.op, self.value(e.left, env), self.value(e.right, env))
        if isinstance(e, ast.Arith):
            t = type_of(e, self.entity)
            return t, _arith(e.op, t, self.value(e.left, env), self.value(e.right, env))
        if isinstance(e, ast.Negate):
            t = type_of(e, self.entity)
            v = _view(*self.value(e.operand, env), "num")
            return t, None if v is None else -v
        t = type_of(e, self.entity)
        return t, self.call(e, [self.value(a, env) for a in e.args])

    def literal(self, value: ast.Value) -> tuple[Type, Any]:
        t = literal_type(value)
        if isinstance(value, ast.Geometry):
            import shapely

            return t, shapely.from_wkt(value.wkt)
        if isinstance(value, ast.Interval):
            return t, (value.start, value.end)
        return t, value

    def path(self, p: ast.Path, env: dict[tuple[str, ...], Row]) -> tuple[Type, Any]:
        r = resolve(p, self.entity)
        prefix = r.steps[-1].prefix if r.steps else ()
        row = env[prefix]
        if r.fk_shortcut:
            entity = self._entity_at(prefix)
            targets = self.graph.related(entity.name, row, r.prop_name)
            return "int", targets[0]["id"] if targets else None
        value = row.get(r.prop_name)
        if r.prop.type == "geom" and value is not None:
            value = _geometry(value)
            if r.json_path:  # location/type: the GeoJSON of the geometry
                import shapely.geometry

                value = shapely.geometry.mapping(value)
        if r.json_path:
            for key in r.json_path:
                value = _json_step(value, key)
            return "dyn", value
        return r.type, value

    # --- functions
    def call(self, e: ast.Call, args: list[tuple[Type, Any]]) -> Any:
        name = e.name
        s = [_view(t, v, "str") for t, v in args]
        n = [_view(t, v, "num") for t, v in args]
        raw = [v for _, v in args]
        if name in ("now", "mindatetime", "maxdatetime"):
            return {"now": self.now, "mindatetime": MIN_DATETIME, "maxdatetime": MAX_DATETIME}[name]
        if name in _TEMPORAL:
            a, b = (_span(t, v) for t, v in args)
            if a is None or b is None or None in (*a, *b):
                return False
            both = args[0][0] == args[1][0] == "interval"
            return _TEMPORAL[name](a, b, both)
        if name in _STRING:
            want = _STRING_ARGS.get(name, len(args))
            values = s[:want] + n[want:]
            if any(v is None for v in values):
                return None
            return _STRING[name](*values)
        if name in _TIME:
            return None if raw[0] is None else _TIME[name](raw[0].astimezone(UTC))
        if name in ("round", "floor", "ceiling"):
            x = n[0]
            if x is None or args[0][0] == "int":
                return x
            if name == "round":
                return ((x > 0) - (x < 0)) * math.floor(abs(x) + 0.5)
            return math.floor(x) if name == "floor" else math.ceil(x)
        if any(v is None for v in raw):
            return None
        if name == "geo.distance":
            return _geodesic_distance(raw[0], raw[1])
        if name == "geo.length":
            from pyproj import Geod

            return Geod(ellps="WGS84").geometry_length(raw[0])
        if name == "st_relate":
            return bool(raw[0].relate_pattern(raw[1], s[2]))
        method = _SHAPELY[name]
        return bool(getattr(raw[0], method)(raw[1]))


# ------------------------------------------------------------------------------ helpers


def _nav_prefixes(e: ast.Expr, entity: Entity) -> set[tuple[str, ...]]:
    """The navigation prefixes a condition joins (as the compiler's scope does)."""
    found: set[tuple[str, ...]] = set()
    stack: list[ast.Expr] = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, ast.Path):
            found.update(step.prefix for step in resolve(x, entity).steps)
        elif isinstance(x, ast.Compare | ast.Logical | ast.Arith):
            stack += [x.left, x.right]
        elif isinstance(x, ast.Not | ast.Negate):
            stack.append(x.operand)
        elif isinstance(x, ast.Call):
            stack += list(x.args)
    return found


def _json_step(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(key)
    if isinstance(value, list):
        try:
            i = int(key)
        except ValueError:
            return None
        return value[i] if -len(value) <= i < len(value) else None
    return None


def _geometry(value: Any) -> Any:
    if isinstance(value, Mapping):
        import shapely.geometry

        return shapely.geometry.shape(value)
    return value


def _view(t: Type, v: Any, kind: str) -> Any:
    if t != "dyn":
        return v
    if kind in ("num", "int"):
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
    if kind == "str":
        return v if isinstance(v, str) else None
    if kind == "bool":
        return v if isinstance(v, bool) else None
    raise AssertionError(kind)  # pragma: no cover


def _cond(t: Type, v: Any) -> bool:
    if t == "null":
        return False
    if t == "dyn":
        v = _view(t, v, "bool")
    return v is True


def _span(t: Type, v: Any) -> tuple[Any, Any] | None:
    if v is None:
        return None
    if t == "interval":
        start, end = v
        return start, end
    return v, v


def _compare(op: str, left: tuple[Type, Any], right: tuple[Type, Any]) -> bool:
    (lt, lv), (rt, rv) = left, right
    if lt == "null" or rt == "null":
        other_t, other_v = (rt, rv) if lt == "null" else (lt, lv)
        is_null = other_t == "null" or other_v is None
        return is_null if op == "eq" else (not is_null) if op == "ne" else False
    if lt == "dyn" and rt == "dyn":
        eq_op = "eq" if op == "ne" else op
        same = False
        for kind in ("num", "str", "bool"):
            a, b = _view(lt, lv, kind), _view(rt, rv, kind)
            if a is not None and b is not None and _ORDER[eq_op](a, b):
                same = True
        if op in ("eq", "ne") and lv is None and rv is None:
            same = True
        return (not same) if op == "ne" else same
    if lt == "dyn":
        lv, lt = _view(lt, lv, rt), rt
    if rt == "dyn":
        rv, rt = _view(rt, rv, lt), lt
    if "interval" in (lt, rt):
        a, b = _span(lt, lv), _span(rt, rv)
        if op in ("eq", "ne"):
            if a is None or b is None or None in (*a, *b):
                eq = False
            elif lt == rt == "interval":
                eq = a == b
            elif lt == "interval":
                eq = a[0] <= b[0] <= a[1]
            else:
                eq = b[0] <= a[0] <= b[1]
            return eq if op == "eq" else not eq
        if a is None or b is None or None in (*a, *b):
            return False
        return bool(
            {
                "lt": a[1] < b[0],
                "le": a[1] <= b[0],
                "gt": a[0] > b[1],
                "ge": a[0] >= b[1],
            }[op]
        )
    if op == "eq":
        return bool(lv == rv)
    if op == "ne":
        return bool(lv != rv)
    if lv is None or rv is None:
        return False
    return bool(_ORDER[op](lv, rv))


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _arith(op: str, t: Type, left: tuple[Type, Any], right: tuple[Type, Any]) -> Any:
    if t == "null":
        return None
    a, b = _view(*left, "num"), _view(*right, "num")
    if a is None or b is None:
        return None
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if t == "int":
        if b == 0:
            return None
        q = _trunc_div(a, b)
        return q if op == "div" else a - b * q
    a, b = float(a), float(b)
    if b == 0:
        return None
    return a / b if op == "div" else a - b * math.trunc(a / b)


def _substring(s: str, start: float, length: float | None = None) -> str:
    st = max(round(start), 0)
    if length is None:
        return s[st:]
    return s[st : st + max(round(length), 0)]


_STRING: dict[str, Callable[..., Any]] = {
    "substringof": lambda needle, hay: needle in hay,
    "contains": lambda hay, needle: needle in hay,
    "startswith": lambda s, p: s.startswith(p),
    "endswith": lambda s, p: s.endswith(p),
    "length": len,
    "indexof": lambda s, sub: s.find(sub),
    "substring": _substring,
    "tolower": str.lower,
    "toupper": str.upper,
    "trim": lambda s: s.strip(" "),
    "concat": lambda a, b: a + b,
}
_STRING_ARGS = {"substring": 1}  # arguments after the first are numbers

_TIME: dict[str, Callable[[datetime], Any]] = {
    "year": lambda t: t.year,
    "month": lambda t: t.month,
    "day": lambda t: t.day,
    "hour": lambda t: t.hour,
    "minute": lambda t: t.minute,
    "second": lambda t: t.second,
    "fractionalseconds": lambda t: t.microsecond / 1e6,
    "date": lambda t: t.date(),
    "time": lambda t: t.time().replace(tzinfo=None),
    "totaloffsetminutes": lambda t: 0,
}

Span = tuple[Any, Any]
_TEMPORAL: dict[str, Callable[[Span, Span, bool], bool]] = {
    "before": lambda a, b, both: a[1] < b[0],
    "after": lambda a, b, both: a[0] > b[1],
    "meets": lambda a, b, both: a[1] == b[0] or b[1] == a[0],
    "during": lambda a, b, both: b[0] <= a[0] and a[1] <= b[1],
    "overlaps": lambda a, b, both: (
        a[0] < b[1] and a[1] > b[0] if both else a[0] <= b[1] and a[1] >= b[0]
    ),
    "starts": lambda a, b, both: a[0] == b[0],
    "finishes": lambda a, b, both: a[1] == b[1],
}

_SHAPELY = {
    "geo.intersects": "intersects",
    "st_equals": "equals",
    "st_disjoint": "disjoint",
    "st_touches": "touches",
    "st_within": "within",
    "st_overlaps": "overlaps",
    "st_crosses": "crosses",
    "st_intersects": "intersects",
    "st_contains": "contains",
}


def _geodesic_distance(a: Any, b: Any) -> float:
    """Metres between two points on the WGS 84 spheroid (the evaluator does points only)."""
    from pyproj import Geod

    if a.geom_type != "Point" or b.geom_type != "Point":
        from quartier.errors import NotImplementedQueryError

        raise NotImplementedQueryError("the evaluator computes geo.distance between points only")
    _, _, metres = Geod(ellps="WGS84").inv(a.x, a.y, b.x, b.y)
    return float(metres)


def evaluate_filter(
    expr: ast.Expr,
    entity: str | Entity,
    row: Row,
    graph: Graph,
    *,
    now: datetime | None = None,
) -> bool:
    """Whether ``row`` (an ``entity``) satisfies ``$filter`` ``expr``."""
    e = entity_of(entity)
    return _Eval(e, graph, now or datetime.now(UTC)).condition(expr, row)


__all__ = ["Graph", "Row", "evaluate_filter"]
