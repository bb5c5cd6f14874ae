"""Compile ``$filter`` and ``$orderby`` trees to parameterised PostgreSQL.

Values only ever travel as named parameters (``%(f1)s``); identifiers come from the entity model
(``model.ENTITIES``). The result is a :class:`SqlFragment`: a ``psycopg.sql.Composable`` and its
parameters, to be placed in a ``WHERE`` or ``ORDER BY`` by the caller, over the entity's table
under the alias the caller names.

Semantics (the evaluator in ``evaluate`` implements the same, and a property test holds them
equal):

* Every condition is two-valued: a comparison or function with a null operand is false, except
  ``eq``/``ne``, which treat null as a value (``x eq null`` is true when ``x`` is null). So
  ``not (result gt 5)`` is true for an Observation without a numeric result.
* Navigation: a condition that names a navigation property becomes an ``EXISTS`` subquery over
  the joined entities, true when some combination of related entities satisfies it (OData's
  ``any``). ``Datastream/id`` on an Observation is read from its foreign key, without a join.
* Non-nullable columns compared with literals compile to plain comparisons, so an Observation
  filter ``phenomenonTime ge … and phenomenonTime lt …`` (or ``phenomenonTime eq <interval>``,
  ``during(phenomenonTime, <interval>)``) on one Datastream is a range scan of the
  ``(datastream_id, phenomenon_time)`` primary key, and ``id eq '<datastream>:<µs>'`` a lookup.
* An Observation's ``result`` is numeric from ``result`` or a JSON number in ``result_json``;
  a string, boolean or object only from ``result_json``.
* Strings order by code point (``COLLATE "C"``). ``div`` of two integers truncates; division and
  ``mod`` by zero are null. ``round`` rounds half away from zero.
* Date parts are those of the UTC time (independent of the session's TimeZone);
  ``totaloffsetminutes`` is therefore 0. ``now()`` is the ``now`` given to the compiler.
* Time intervals (a Datastream's ``phenomenonTime``, literals ``start/end``) against an instant:
  ``eq`` means the instant lies in the interval (ends included); ``lt`` means the left ends before
  the right starts, ``gt`` that it starts after the right ends (``le``/``ge`` allow touching).
  ``before after meets during overlaps starts finishes`` compare start and end points.
* ``st_*`` and ``geo.intersects`` are PostGIS geometry predicates in WGS 84 longitude/latitude
  (as in the standard's examples); ``geo.distance`` and ``geo.length`` are in metres, on the
  spheroid (PostGIS ``geography``).

Length: one job; one small compiler per operator and function family of the standard.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from psycopg import sql
from psycopg.sql import Composable

from quartier.api.sta import ast
from quartier.api.sta.model import (
    ENTITIES,
    Entity,
    Prop,
    Resolved,
    Step,
    Type,
    resolve,
    type_of,
)
from quartier.errors import BadRequestError

log = logging.getLogger(__name__)

MIN_DATETIME = datetime(1, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The canonical spelling of an Observation's derived @iot.id (no leading zeros, no "+").
# (A MultiDatastream's observations are stored under datastream_id -<its id>: "-3:<µs>".)
_OBSERVATION_KEY = re.compile(r"^(?P<ds>0|-?[1-9][0-9]{0,17}):(?P<us>0|-?[1-9][0-9]{0,17})$")
MAX_DATETIME = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


@dataclass(frozen=True)
class SqlFragment:
    """SQL with named placeholders and the values for them."""

    sql: sql.Composable
    params: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ typed SQL values


@dataclass
class _Val:
    type: Type
    sql: Composable  # an interval's start
    nullable: bool = True
    end: Composable | None = None  # an interval's end
    number: Composable | None = None  # dyn: a column holding the value when it is a number
    is_literal: bool = False

    @property
    def stop(self) -> Composable:
        return self.end if self.end is not None else self.sql


_S = sql.SQL
_FALSE = _S("false")
_TRUE = _S("true")
_SCALAR_NUMBER = "(case when jsonb_typeof({j}) = 'number' then ({j} #>> '{{}}')::float8 end)"
_SCALAR_STRING = "(case when jsonb_typeof({j}) = 'string' then {j} #>> '{{}}' end)"
_SCALAR_BOOL = "(case when jsonb_typeof({j}) = 'boolean' then ({j})::boolean end)"


def _view(v: _Val, kind: str) -> _Val:
    """A dyn value seen as ``kind`` (num/str/bool): that JSON type, else null."""
    if v.type != "dyn":
        return v
    if kind in ("num", "int"):
        s = _S(_SCALAR_NUMBER).format(j=v.sql)
        if v.number is not None:
            s = _S("coalesce({}, {})").format(v.number, s)
        return _Val("num", s)
    if kind == "str":
        return _Val("str", _S(_SCALAR_STRING).format(j=v.sql))
    if kind == "bool":
        return _Val("bool", _S(_SCALAR_BOOL).format(j=v.sql))
    raise AssertionError(kind)  # pragma: no cover


def _is_null(v: _Val) -> sql.Composable:
    if v.type == "null":
        return _TRUE
    if not v.nullable:
        return _FALSE
    if v.type == "dyn":
        s = _S("({j} is null or jsonb_typeof({j}) = 'null')").format(j=v.sql)
        if v.number is not None:
            s = _S("({} is null and {})").format(v.number, s)
        return s
    return _S("({} is null)").format(v.sql)


def _cond(v: _Val) -> sql.Composable:
    """A value used as a condition: two-valued."""
    if v.type == "null":
        return _FALSE
    if v.type == "dyn":
        v = _view(v, "bool")
    if v.nullable:
        return _S("coalesce({}, false)").format(v.sql)
    return v.sql


def _bool(s: sql.Composable) -> _Val:
    return _Val("bool", s, nullable=False)


_OPS = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_ARITH = {"add": "+", "sub": "-", "mul": "*"}
_DATE_PARTS = {
    "year": "year",
    "month": "month",
    "day": "day",
    "hour": "hour",
    "minute": "minute",
}
_ST = {
    "geo.intersects": "ST_Intersects",
    "st_equals": "ST_Equals",
    "st_disjoint": "ST_Disjoint",
    "st_touches": "ST_Touches",
    "st_within": "ST_Within",
    "st_overlaps": "ST_Overlaps",
    "st_crosses": "ST_Crosses",
    "st_intersects": "ST_Intersects",
    "st_contains": "ST_Contains",
}


# ------------------------------------------------------------------------------ scopes


class _Scope:
    """The joins one condition needs: navigation prefix → alias, in order."""

    def __init__(self, compiler: _Compiler) -> None:
        self.compiler = compiler
        self.aliases: dict[tuple[str, ...], str] = {}
        self.sources: list[sql.Composable] = []
        self.conditions: list[sql.Composable] = []
        self.many = False

    def alias_for(self, steps: tuple[Step, ...]) -> str:
        alias = self.compiler.alias
        for step in steps:
            known = self.aliases.get(step.prefix)
            if known is None:
                known = self.compiler.new_alias()
                fmt: dict[str, Composable] = {
                    "a": sql.Identifier(alias),
                    "b": sql.Identifier(known),
                    "x": sql.Identifier(known + "x"),
                }
                self.sources.append(_S(step.nav.source).format(**_only(step.nav.source, fmt)))
                self.conditions.append(_S(step.nav.on).format(**_only(step.nav.on, fmt)))
                self.aliases[step.prefix] = known
                self.many = self.many or step.nav.many
            alias = known
        return alias

    def wrap_condition(self, cond: sql.Composable) -> sql.Composable:
        if not self.sources:
            return cond
        return _S("exists (select 1 from {} where {})").format(
            _S(", ").join(self.sources), _S(" and ").join([*self.conditions, cond])
        )

    def wrap_value(self, value: sql.Composable) -> sql.Composable:
        if not self.sources:
            return value
        return _S("(select {} from {} where {} limit 1)").format(
            value, _S(", ").join(self.sources), _S(" and ").join(self.conditions)
        )


def _only(template: str, fmt: dict[str, sql.Composable]) -> dict[str, sql.Composable]:
    return {k: v for k, v in fmt.items() if "{" + k + "}" in template}


# ------------------------------------------------------------------------------ the compiler


class _Compiler:
    def __init__(self, entity: Entity, alias: str, now: datetime, prefix: str) -> None:
        self.entity = entity
        self.alias = alias
        self.now = now
        self.prefix = prefix
        self.params: dict[str, Any] = {}
        self._names = itertools.count(1)
        self._aliases = itertools.count(1)

    def new_alias(self) -> str:
        return f"{self.alias}_{next(self._aliases)}"

    def param(self, value: Any, cast: str) -> sql.Composable:
        name = f"{self.prefix}{next(self._names)}"
        self.params[name] = value
        return _S("{}::" + cast).format(sql.Placeholder(name))

    # --- conditions (and/or/not at the top; every other node is one condition in its scope)
    def condition(self, e: ast.Expr) -> sql.Composable:
        if isinstance(e, ast.Logical):
            return _S("({} " + e.op + " {})").format(
                self.condition(e.left), self.condition(e.right)
            )
        if isinstance(e, ast.Not):
            return _S("(not {})").format(self.condition(e.operand))
        scope = _Scope(self)
        return scope.wrap_condition(_cond(self.value(e, scope)))

    # --- values
    def value(self, e: ast.Expr, scope: _Scope) -> _Val:
        if isinstance(e, ast.Literal):
            return self.literal(e.value)
        if isinstance(e, ast.Path):
            return self.path(resolve(e, self.entity), scope)
        if isinstance(e, ast.Logical):
            return _bool(
                _S("({} " + e.op + " {})").format(
                    _cond(self.value(e.left, scope)), _cond(self.value(e.right, scope))
                )
            )
        if isinstance(e, ast.Not):
            return _bool(_S("(not {})").format(_cond(self.value(e.operand, scope))))
        if isinstance(e, ast.Compare):
            type_of(e, self.entity)  # checks comparability, with a message naming the operator
            key = self.observation_key(e, scope)
            if key is not None:
                return _bool(key)
            return _bool(self.compare(e.op, self.value(e.left, scope), self.value(e.right, scope)))
        if isinstance(e, ast.Arith):
            t = type_of(e, self.entity)
            return self.arith(e.op, t, self.value(e.left, scope), self.value(e.right, scope))
        if isinstance(e, ast.Negate):
            t = type_of(e, self.entity)
            v = _view(self.value(e.operand, scope), "num")
            return _Val(t, _S("(-{})").format(v.sql), v.nullable)
        t = type_of(e, self.entity)
        return self.call(e, t, [self.value(a, scope) for a in e.args])

    def observation_key(self, e: ast.Compare, scope: _Scope) -> sql.Composable | None:
        """``id eq '<datastream>:<µs>'`` on Observations as a primary-key condition (the same
        rows as comparing the derived id string, which has one spelling per key)."""
        if e.op not in ("eq", "ne"):
            return None
        path, lit = (e.left, e.right) if isinstance(e.left, ast.Path) else (e.right, e.left)
        if not (isinstance(path, ast.Path) and isinstance(lit, ast.Literal)):
            return None
        if not isinstance(lit.value, str):
            return None
        r = resolve(path, self.entity)
        if r.entity.name != "Observation" or r.prop_name != "id" or r.fk_shortcut:
            return None
        m = _OBSERVATION_KEY.match(lit.value)
        if m is None:
            return None
        a = sql.Identifier(scope.alias_for(r.steps))
        at = _EPOCH + timedelta(microseconds=int(m["us"]))
        cond = _S("({}.datastream_id = {} and {}.phenomenon_time = {})").format(
            a, self.param(int(m["ds"]), "bigint"), a, self.param(at, "timestamptz")
        )
        return cond if e.op == "eq" else _S("(not {})").format(cond)

    def literal(self, value: ast.Value) -> _Val:
        if value is None:
            return _Val("null", _S("null"), is_literal=True)
        if isinstance(value, bool):
            return _Val("bool", self.param(value, "boolean"), False, is_literal=True)
        if isinstance(value, int):
            return _Val("int", self.param(value, "bigint"), False, is_literal=True)
        if isinstance(value, float):
            return _Val("num", self.param(value, "float8"), False, is_literal=True)
        if isinstance(value, str):
            return _Val("str", self.param(value, "text"), False, is_literal=True)
        if isinstance(value, datetime):
            return _Val("time", self.param(value, "timestamptz"), False, is_literal=True)
        if isinstance(value, date):
            return _Val("date", self.param(value, "date"), False, is_literal=True)
        if isinstance(value, time):
            return _Val("timeofday", self.param(value, "time"), False, is_literal=True)
        if isinstance(value, timedelta):
            return _Val("duration", self.duration(value), False, is_literal=True)
        if isinstance(value, ast.Geometry):
            geom = _S("ST_GeomFromText({}, 4326)").format(self.param(value.wkt, "text"))
            return _Val("geom", geom, False, is_literal=True)
        start = self.param(value.start, "timestamptz")
        end = self.param(value.end, "timestamptz")
        return _Val("interval", start, False, end=end, is_literal=True)

    def duration(self, value: timedelta) -> sql.Composable:
        # Microseconds, so that adding it never depends on the session's time zone (a "1 day"
        # interval would be a calendar day there).
        micros = value // timedelta(microseconds=1)
        return _S("({} * interval '1 microsecond')").format(self.param(micros, "bigint"))

    def path(self, r: Resolved, scope: _Scope) -> _Val:
        alias = scope.alias_for(r.steps)
        a = sql.Identifier(alias)
        if r.fk_shortcut:
            nav = r.entity.navs[r.prop_name]
            if nav.fk_sql:
                return _Val("int", _S(nav.fk_sql).format(a=a), nav.fk_nullable)
            return _Val("int", sql.Identifier(alias, nav.fk), nav.fk_nullable)
        p = r.prop
        s = _S(p.sql).format(a=a) if "{a}" in p.sql else _S(p.sql)
        if r.json_path:
            if p.type == "geom":  # location/type: the GeoJSON of the geometry
                s = _S("ST_AsGeoJSON({})::jsonb").format(s)
            j = _S("({} #> {})").format(s, self.param(list(r.json_path), "text[]"))
            return _Val("dyn", j)
        number = _S(p.number_sql).format(a=a) if p.number_sql else None
        end = None
        if p.type == "interval":
            end = _S(p.end).format(a=a) if "{a}" in p.end else _S(p.end)
        return _Val(p.type, s, p.nullable, end=end, number=number)

    # --- comparison
    def compare(self, op: str, left: _Val, right: _Val) -> sql.Composable:
        if left.type == "null" or right.type == "null":
            other = right if left.type == "null" else left
            if op == "eq":
                return _is_null(other)
            if op == "ne":
                return _S("(not {})").format(_is_null(other))
            return _FALSE
        if left.type == "dyn" and right.type == "dyn":
            return self.compare_dyn(op, left, right)
        if left.type == "dyn":
            left = _view(left, right.type)
        if right.type == "dyn":
            right = _view(right, left.type)
        if "interval" in (left.type, right.type):
            return self.compare_interval(op, left, right)
        return _compare_plain(op, left, right)

    def compare_dyn(self, op: str, left: _Val, right: _Val) -> sql.Composable:
        same = [
            _S("coalesce({}, false)").format(
                _plain(op if op != "ne" else "eq", _view(left, k), _view(right, k))
            )
            for k in ("num", "str", "bool")
        ]
        if op in ("eq", "ne"):
            same.append(_S("({} and {})").format(_is_null(left), _is_null(right)))
        eq = _S("({})").format(_S(" or ").join(same))
        return _S("(not {})").format(eq) if op == "ne" else eq

    def compare_interval(self, op: str, left: _Val, right: _Val) -> sql.Composable:
        l0, l1, r0, r1 = left.sql, left.stop, right.sql, right.stop
        eq: sql.Composable
        if op in ("eq", "ne"):
            if left.type == right.type == "interval":
                eq = _S("({} = {} and {} = {})").format(l0, r0, l1, r1)
            elif left.type == "interval":
                eq = _S("({} <= {} and {} <= {})").format(l0, r0, r0, l1)
            else:
                eq = _S("({} <= {} and {} <= {})").format(r0, l0, l0, r1)
            eq = _two_valued(eq, left, right)
            return _S("(not {})").format(eq) if op == "ne" else eq
        pair = {
            "lt": (l1, "<", r0),
            "le": (l1, "<=", r0),
            "gt": (l0, ">", r1),
            "ge": (l0, ">=", r1),
        }
        a, o, b = pair[op]
        return _two_valued(_S("({} " + o + " {})").format(a, b), left, right)

    # --- arithmetic
    def arith(self, op: str, t: Type, left: _Val, right: _Val) -> _Val:
        if t == "null":
            return _Val("null", _S("null"))
        nullable = left.nullable or right.nullable or left.type == "dyn" or right.type == "dyn"
        l_, r_ = _view(left, "num"), _view(right, "num")
        a, b = l_.sql, r_.sql
        if op in _ARITH:
            return _Val(t, _S("({} " + _ARITH[op] + " {})").format(a, b), nullable)
        if t == "int":
            if op == "div":
                return _Val(t, _S("({} / nullif({}, 0))").format(a, b), True)
            return _Val(t, _S("mod({}, nullif({}, 0))").format(a, b), True)
        a, b = _S("({})::float8").format(a), _S("({})::float8").format(b)
        if op == "div":
            return _Val(t, _S("({} / nullif({}, 0))").format(a, b), True)
        return _Val(t, _S("({a} - {b} * trunc({a} / nullif({b}, 0)))").format(a=a, b=b), True)

    # --- functions
    def call(self, e: ast.Call, t: Type, args: list[_Val]) -> _Val:
        name = e.name
        nullable = any(a.nullable for a in args) or any(a.type == "dyn" for a in args)
        s = [_view(a, "str").sql for a in args]
        if name in ("substringof", "contains", "startswith", "endswith", "indexof", "length"):
            if name == "substringof":  # substringof(needle, haystack)
                out = _S("(strpos({}, {}) > 0)").format(s[1], s[0])
            elif name == "contains":
                out = _S("(strpos({}, {}) > 0)").format(s[0], s[1])
            elif name == "startswith":
                out = _S("starts_with({}, {})").format(s[0], s[1])
            elif name == "endswith":
                out = _S("(right({a}, length({b})) = {b})").format(a=s[0], b=s[1])
            elif name == "indexof":
                out = _S("(strpos({}, {}) - 1)").format(s[0], s[1])
            else:
                out = _S("length({})").format(s[0])
            return _Val(t, out, nullable)
        if name == "substring":
            n = [_view(a, "num").sql for a in args]
            start = _S("(greatest({}, 0) + 1)::int").format(n[1])
            if len(args) == 2:
                return _Val(t, _S("substr({}, {})").format(s[0], start), nullable)
            length = _S("greatest({}, 0)::int").format(n[2])
            return _Val(t, _S("substr({}, {}, {})").format(s[0], start, length), nullable)
        if name in ("tolower", "toupper", "trim"):
            fn = {"tolower": "lower", "toupper": "upper", "trim": "btrim"}[name]
            return _Val(t, _S(fn + "({})").format(s[0]), nullable)
        if name == "concat":
            return _Val(t, _S("({} || {})").format(s[0], s[1]), nullable)
        if name in _DATE_PARTS:
            out = _S("extract(" + _DATE_PARTS[name] + " from {} at time zone 'UTC')::int").format(
                args[0].sql
            )
            return _Val(t, out, nullable)
        if name == "second":
            out = _S("floor(extract(second from {} at time zone 'UTC'))::int").format(args[0].sql)
            return _Val(t, out, nullable)
        if name == "fractionalseconds":
            x = _S("extract(second from {} at time zone 'UTC')").format(args[0].sql)
            return _Val(t, _S("({x} - floor({x}))::float8").format(x=x), nullable)
        if name == "date":
            return _Val(t, _S("({} at time zone 'UTC')::date").format(args[0].sql), nullable)
        if name == "time":
            return _Val(t, _S("({} at time zone 'UTC')::time").format(args[0].sql), nullable)
        if name == "totaloffsetminutes":
            return _Val(t, _S("(case when {} is null then null else 0 end)").format(args[0].sql))
        if name in ("now", "mindatetime", "maxdatetime"):
            value = {"now": self.now, "mindatetime": MIN_DATETIME, "maxdatetime": MAX_DATETIME}
            return _Val(t, self.param(value[name], "timestamptz"), False)
        if name in ("round", "floor", "ceiling"):
            num = _view(args[0], "num")
            if num.type == "int":
                return _Val(t, num.sql, nullable)
            if name == "round":
                out = _S("(sign({x}) * floor(abs({x}) + 0.5))").format(x=num.sql)
                return _Val(t, out, nullable)
            return _Val(t, _S(name + "({})").format(num.sql), nullable)
        if name in _ST:
            return _Val(t, _S(_ST[name] + "({}, {})").format(args[0].sql, args[1].sql), nullable)
        if name == "st_relate":
            out = _S("ST_Relate({}, {}, {})").format(args[0].sql, args[1].sql, s[2])
            return _Val(t, out, nullable)
        if name == "geo.distance":
            out = _S("ST_Distance(({})::geography, ({})::geography)").format(
                args[0].sql, args[1].sql
            )
            return _Val(t, out, nullable)
        if name == "geo.length":
            return _Val(t, _S("ST_Length(({})::geography)").format(args[0].sql), nullable)
        return _Val(t, _temporal(name, args[0], args[1]), False)


def _plain(op: str, left: _Val, right: _Val) -> sql.Composable:
    o = _OPS[op]
    if left.type == "str" and right.type == "str" and op not in ("eq", "ne"):
        return _S('({} collate "C" ' + o + " {})").format(left.sql, right.sql)
    return _S("({} " + o + " {})").format(left.sql, right.sql)


def _compare_plain(op: str, left: _Val, right: _Val) -> sql.Composable:
    if not left.nullable and not right.nullable:
        return _plain(op, left, right)
    if op == "eq":
        return _S("({} is not distinct from {})").format(left.sql, right.sql)
    if op == "ne":
        return _S("({} is distinct from {})").format(left.sql, right.sql)
    return _S("coalesce({}, false)").format(_plain(op, left, right))


def _temporal(name: str, a: _Val, b: _Val) -> sql.Composable:
    as_, ae, bs, be = a.sql, a.stop, b.sql, b.stop
    both = a.type == b.type == "interval"
    template = {
        "before": "{ae} < {bs}",
        "after": "{as_} > {be}",
        "meets": "({ae} = {bs} or {be} = {as_})",
        "during": "({bs} <= {as_} and {ae} <= {be})",
        "overlaps": (
            "({as_} < {be} and {ae} > {bs})" if both else "({as_} <= {be} and {ae} >= {bs})"
        ),
        "starts": "{as_} = {bs}",
        "finishes": "{ae} = {be}",
    }[name]
    return _two_valued(_S(template).format(as_=as_, ae=ae, bs=bs, be=be), a, b)


def _two_valued(cond: sql.Composable, *operands: _Val) -> sql.Composable:
    """``cond`` made false where it is null; untouched (so indexable) when nothing is null."""
    if any(v.nullable for v in operands):
        return _S("coalesce({}, false)").format(cond)
    return cond


# ------------------------------------------------------------------------------ public API


def entity_of(name: str | Entity) -> Entity:
    """An entity type by its name (``"Thing"``) or entity set (``"Things"``)."""
    if isinstance(name, Entity):
        return name
    from quartier.api.sta.model import ENTITY_SETS

    entity = ENTITIES.get(name) or ENTITIES.get(ENTITY_SETS.get(name, ""))
    if entity is None:
        raise KeyError(name)
    return entity


#: Compiled ``$filter``/``$orderby`` trees kept per (tree, entity, alias, parameter prefix):
#: a page polled with the same query string compiles once per process. A compilation whose
#: parameters hold ``now()``'s value (the request's time) is never kept.
COMPILE_CACHE_SIZE = 1024
#: The ``now`` a kept compilation is made with; found among its parameters, it is not kept.
_NOW_PROBE = datetime(2000, 1, 1, tzinfo=UTC)
_NOT_KEPT = object()


class _Kept:
    """A small thread-safe LRU map. Keys hold the tree's ``repr``, not the tree: trees compare
    literals by value, so ``result eq 1`` equals ``result eq true`` (1 == True), while their
    reprs (and compilations) differ."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> Any:
        with self._lock:
            value = self._items.get(key, _NOT_KEPT)
            if value is not _NOT_KEPT:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, ...], value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_FILTERS = _Kept(COMPILE_CACHE_SIZE)
_ORDERS = _Kept(COMPILE_CACHE_SIZE)


def _cache_key(tree: object, entity: str | Entity, alias: str, prefix: str) -> tuple[str, ...]:
    """The key a compilation is kept under; () for an entity not in the model (not kept)."""
    e = entity_of(entity)
    if ENTITIES.get(e.name) is not e:
        return ()
    return (repr(tree), e.name, alias, prefix)


def _uses_probe(params: dict[str, Any]) -> bool:
    return any(v is _NOW_PROBE for v in params.values())


def compile_filter(
    expr: ast.Expr,
    entity: str | Entity,
    alias: str,
    *,
    now: datetime | None = None,
    param_prefix: str = "f",
) -> SqlFragment:
    """``$filter`` → a condition over ``entity``'s table aliased ``alias`` (the caller's FROM).
    Without ``now``, a tree compiled before is not compiled again (``COMPILE_CACHE_SIZE``);
    the caller gets its own copy of the parameters."""
    key = _cache_key(expr, entity, alias, param_prefix) if now is None else ()
    if key:
        kept = _FILTERS.get(key)
        if kept is _NOT_KEPT:
            kept = _compile_filter(expr, entity, alias, _NOW_PROBE, param_prefix)
            kept = None if _uses_probe(kept.params) else kept
            _FILTERS.put(key, kept)
        if kept is not None:
            return SqlFragment(kept.sql, dict(kept.params))
    return _compile_filter(expr, entity, alias, now or datetime.now(UTC), param_prefix)


def _compile_filter(
    expr: ast.Expr, entity: str | Entity, alias: str, now: datetime, param_prefix: str
) -> SqlFragment:
    e = entity_of(entity)
    t = type_of(expr, e)
    if t not in ("bool", "dyn", "null"):
        raise BadRequestError(f"$filter must be a condition; this one is a {t} value")
    c = _Compiler(e, alias, now, param_prefix)
    return SqlFragment(c.condition(expr), c.params)


@dataclass(frozen=True)
class OrderKey:
    """One compiled ``$orderby`` key: ``sql`` (without direction) of ``type``; ``column`` names the
    entity's own column when the key is just that (so a caller can drop a repeated tie-breaker).
    A keyset cursor compares values of ``sql`` (PostgreSQL sorts nulls last ascending, first
    descending)."""

    sql: sql.Composable
    descending: bool
    nullable: bool
    type: Type
    column: str | None = None


_CASTS: dict[str, str] = {
    "time": "timestamptz",
    "int": "bigint",
    "num": "float8",
    "str": "text",
    "bool": "boolean",
    "dyn": "jsonb",
    "date": "date",
    "timeofday": "time",
    "interval": "timestamptz",
}


def order_keys(
    items: tuple[ast.OrderItem, ...],
    entity: str | Entity,
    alias: str,
    *,
    now: datetime | None = None,
    param_prefix: str = "o",
) -> tuple[list[OrderKey], dict[str, Any]]:
    """``$orderby`` → its keys and their parameters. Properties of to-one navigations are allowed
    (``Datastream/name``), to-many ones are not. Kept per tree as ``compile_filter`` keeps
    conditions."""
    key = _cache_key(items, entity, alias, param_prefix) if now is None else ()
    if key:
        kept = _ORDERS.get(key)
        if kept is _NOT_KEPT:
            keys, params = _order_keys(items, entity, alias, _NOW_PROBE, param_prefix)
            kept = None if _uses_probe(params) else (tuple(keys), params)
            _ORDERS.put(key, kept)
        if kept is not None:
            return list(kept[0]), dict(kept[1])
    return _order_keys(items, entity, alias, now or datetime.now(UTC), param_prefix)


def _order_keys(
    items: tuple[ast.OrderItem, ...],
    entity: str | Entity,
    alias: str,
    now: datetime,
    param_prefix: str,
) -> tuple[list[OrderKey], dict[str, Any]]:
    e = entity_of(entity)
    c = _Compiler(e, alias, now, param_prefix)
    keys: list[OrderKey] = []
    for item in items:
        t = type_of(item.expr, e)
        if t == "geom":
            raise BadRequestError(f"$orderby: cannot order by a geometry ({_describe(item.expr)})")
        scope = _Scope(c)
        v = c.value(item.expr, scope)
        if scope.many:
            raise BadRequestError(
                f"$orderby: {_describe(item.expr)} goes through a to-many navigation"
            )
        key = v.sql
        if v.type == "dyn":
            key = _S("coalesce(to_jsonb({}), {})").format(v.number, v.sql) if v.number else v.sql
        elif v.type == "str":
            key = _S('({} collate "C")').format(key)
        elif v.type == "bool" and not v.nullable:
            key = _cond(v)
        column = None
        if isinstance(item.expr, ast.Path) and not scope.sources and v.type != "dyn":
            m = re.fullmatch(r"\{a\}\.(\w+)", e.props.get(item.expr.segments[0], _NO_PROP).sql)
            column = m[1] if m and len(item.expr.segments) == 1 else None
        nullable = v.nullable or bool(scope.sources) or v.type == "dyn"
        keys.append(OrderKey(scope.wrap_value(key), item.descending, nullable, v.type, column))
    return keys, c.params


_NO_PROP = Prop("", "null")


def cast_of(t: Type) -> str | None:
    """The PostgreSQL type a keyset cursor value of an order key of type ``t`` is cast to (None:
    a key a cursor cannot carry, such as a duration; paging falls back to ``$skip``)."""
    return _CASTS.get(t)


def compile_orderby(
    items: tuple[ast.OrderItem, ...],
    entity: str | Entity,
    alias: str,
    *,
    now: datetime | None = None,
    param_prefix: str = "o",
) -> SqlFragment:
    """``$orderby`` → the list after ``ORDER BY`` (empty SQL when there are no items).
    Properties of to-one navigations are allowed (``Datastream/name``), to-many ones are not."""
    keys, params = order_keys(items, entity, alias, now=now, param_prefix=param_prefix)
    parts = [_S("{} " + ("desc" if k.descending else "asc")).format(k.sql) for k in keys]
    return SqlFragment(_S(", ").join(parts), params)


def _describe(e: ast.Expr) -> str:
    return str(e) if isinstance(e, ast.Path) else f"the expression at position {e.pos}"


def check_options(options: ast.QueryOptions, entity: str | Entity) -> None:
    """Check ``$select``, ``$expand`` (recursively, each level against its entity), ``$filter`` and
    ``$orderby`` against the model: a :class:`BadRequestError` names what is unknown."""
    e = entity_of(entity)
    if options.filter is not None:
        compile_filter(options.filter, e, "x")
    if options.orderby:
        compile_orderby(options.orderby, e, "x")
    for p in options.select:
        head = e.props.get(p.segments[0])
        if len(p.segments) > 1 and head is not None and head.type == "dyn":
            continue  # a member of a JSON property: properties/owner, result/temperature
        if len(p.segments) != 1 or (p.segments[0] not in e.props and p.segments[0] not in e.navs):
            raise BadRequestError(
                f"$select: {p} at position {p.pos} is not a property of {e.name}; known: "
                + ", ".join([*e.props, *e.navs])
            )
    for x in options.expand:
        target = e
        for seg in x.path:
            nav = target.navs.get(seg)
            if nav is None:
                raise BadRequestError(
                    f"$expand: {'/'.join(x.path)}: {target.name} has no navigation property"
                    f" {seg!r}; known: {', '.join(target.navs)}"
                )
            target = ENTITIES[nav.target]
        check_options(x.options, target)


def compile_navigation(
    entity: str | Entity, nav: str, parent_alias: str, alias: str
) -> tuple[sql.Composable, sql.Composable]:
    """The FROM item (the target's table aliased ``alias``, with its link table where there is
    one) and the condition tying it to the parent row ``parent_alias`` for navigating ``nav`` of
    ``entity``: ``/Things(1)/Datastreams`` or one level of ``$expand``. A ``$filter`` of that
    level compiles with ``compile_filter(expr, target, alias)``."""
    e = entity_of(entity)
    n = e.navs.get(nav)
    if n is None:
        raise BadRequestError(
            f"{e.name} has no navigation property {nav!r}; known: {', '.join(e.navs)}"
        )
    fmt: dict[str, Composable] = {
        "a": sql.Identifier(parent_alias),
        "b": sql.Identifier(alias),
        "x": sql.Identifier(alias + "x"),
    }
    return _S(n.source).format(**_only(n.source, fmt)), _S(n.on).format(**_only(n.on, fmt))
