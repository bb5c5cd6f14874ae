"""The SensorThings entity model against Quartier's schema, and the static typing of ``$filter``
expressions shared by the SQL compiler and the Python evaluator (so both agree on which view of
a JSON value a comparison uses, and on integer versus real division).

Types:

``int`` ``num`` ``str`` ``bool`` ``time`` (an instant) ``interval`` (a time interval)
``duration`` ``date`` ``timeofday`` ``geom`` ``null`` (the literal) and ``dyn``: a JSON value
(``properties/owner``, ``parameters/rssi``, an Observation's ``result``) whose type is known only
per row. A ``dyn`` takes the type the other operand or the function argument asks for: as a
number it is the JSON number (else null), as a string the JSON string (else null), as a boolean
the JSON boolean (else null). Two ``dyn`` compare when both are numbers, both strings or both
booleans.

SQL fragments here are constants of this module (the whitelist); ``{a}`` is the entity's table
alias, ``{b}`` a navigation target's alias, ``{x}`` the alias of a link table.

Length: one job; most of it is the table of the entity types (the standard's eight and the
MultiDatastream extension's) and their properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Literal as Lit

from quartier.api.sta import ast
from quartier.errors import BadRequestError

Type = Lit[
    "int",
    "num",
    "str",
    "bool",
    "time",
    "interval",
    "duration",
    "date",
    "timeofday",
    "geom",
    "null",
    "dyn",
]

# ----------------------------------------------------------------------------- the entity model


@dataclass(frozen=True)
class Prop:
    """A property: ``sql`` (an expression over ``{a}``) of ``type``. For ``interval``, ``sql`` is
    the start and ``end`` the end. For ``dyn`` the SQL is the ``jsonb`` value; ``number_sql`` may
    give a column that holds the value when it is a number (Observation ``result``)."""

    sql: str
    type: Type
    nullable: bool = True
    end: str = ""
    number_sql: str = ""


@dataclass(frozen=True)
class Nav:
    """A navigation property to ``target``. ``source`` is the target's FROM item (alias ``{b}``,
    link table ``{x}``), ``on`` ties it to the source row ``{a}``. ``fk`` is a column of the source
    holding the target's id (a to-one navigation), so ``Datastream/id`` needs no join."""

    target: str
    many: bool
    source: str
    on: str
    fk: str = ""
    fk_nullable: bool = False
    #: the foreign key as SQL over ``{a}`` when it is not a column of the source (``fk`` is then
    #: the name of the row's key that carries it)
    fk_sql: str = ""
    #: SQL over ``{b}`` / ``{x}``: the navigation's own order when ``$orderby`` names none (a
    #: MultiDatastream's ObservedProperties in the order of its results)
    order: str = ""


@dataclass(frozen=True)
class Entity:
    name: str  # the entity type (singular): "Thing"
    table: str
    props: dict[str, Prop]
    navs: dict[str, Nav] = field(default_factory=dict)


def _common(geom: str | None = None, encoding: bool = False) -> dict[str, Prop]:
    props = {
        "id": Prop("{a}.id", "int", nullable=False),
        "name": Prop("{a}.name", "str", nullable=False),
        "description": Prop("{a}.description", "str", nullable=False),
        "properties": Prop("{a}.properties", "dyn"),
    }
    if encoding:
        props["encodingType"] = Prop("{a}.encoding_type", "str", nullable=False)
    if geom:
        props[geom] = Prop(f"{{a}}.{geom}", "geom", nullable=False)
    return props


_PT_START = "(select min(_o.phenomenon_time) from observation _o where _o.datastream_id = {a}.id)"
_PT_END = "(select max(_o.phenomenon_time) from observation _o where _o.datastream_id = {a}.id)"
_RT_START = "(select min(_o.result_time) from observation _o where _o.datastream_id = {a}.id)"
_RT_END = "(select max(_o.result_time) from observation _o where _o.datastream_id = {a}.id)"
_MULTI = "from observation _o where _o.datastream_id = (-{a}.id))"
_MPT_START = f"(select min(_o.phenomenon_time) {_MULTI}"
_MPT_END = f"(select max(_o.phenomenon_time) {_MULTI}"
_MRT_START = f"(select min(_o.result_time) {_MULTI}"
_MRT_END = f"(select max(_o.result_time) {_MULTI}"
# The derived @iot.id of an Observation (see quartier/api/sensorthings.py observation_id).
_OBSERVATION_ID = (
    "({a}.datastream_id::text || ':' ||"
    " (extract(epoch from {a}.phenomenon_time) * 1000000)::bigint::text)"
)

ENTITIES: dict[str, Entity] = {
    "Thing": Entity(
        "Thing",
        "thing",
        _common(),
        {
            "Locations": Nav(
                "Location",
                True,
                "location {b} join thing_location {x} on {x}.location_id = {b}.id",
                "{x}.thing_id = {a}.id",
            ),
            "HistoricalLocations": Nav(
                "HistoricalLocation", True, "historical_location {b}", "{b}.thing_id = {a}.id"
            ),
            "Datastreams": Nav("Datastream", True, "datastream {b}", "{b}.thing_id = {a}.id"),
            "MultiDatastreams": Nav(
                "MultiDatastream", True, "multi_datastream {b}", "{b}.thing_id = {a}.id"
            ),
        },
    ),
    "Location": Entity(
        "Location",
        "location",
        _common("location", encoding=True),
        {
            "Things": Nav(
                "Thing",
                True,
                "thing {b} join thing_location {x} on {x}.thing_id = {b}.id",
                "{x}.location_id = {a}.id",
            ),
            "HistoricalLocations": Nav(
                "HistoricalLocation",
                True,
                "historical_location {b} join historical_location_location {x}"
                " on {x}.historical_location_id = {b}.id",
                "{x}.location_id = {a}.id",
            ),
        },
    ),
    "HistoricalLocation": Entity(
        "HistoricalLocation",
        "historical_location",
        {
            "id": Prop("{a}.id", "int", nullable=False),
            "time": Prop("{a}.time", "time", nullable=False),
        },
        {
            "Thing": Nav("Thing", False, "thing {b}", "{b}.id = {a}.thing_id", fk="thing_id"),
            "Locations": Nav(
                "Location",
                True,
                "location {b} join historical_location_location {x} on {x}.location_id = {b}.id",
                "{x}.historical_location_id = {a}.id",
            ),
        },
    ),
    "Datastream": Entity(
        "Datastream",
        "datastream",
        {
            **_common(),
            "observationType": Prop("{a}.observation_type", "str", nullable=False),
            "unitOfMeasurement": Prop("{a}.unit_of_measurement", "dyn", nullable=False),
            "observedArea": Prop("{a}.observed_area", "geom"),
            "phenomenonTime": Prop(_PT_START, "interval", end=_PT_END),
            "resultTime": Prop(_RT_START, "interval", end=_RT_END),
        },
        {
            "Thing": Nav("Thing", False, "thing {b}", "{b}.id = {a}.thing_id", fk="thing_id"),
            "Sensor": Nav("Sensor", False, "sensor {b}", "{b}.id = {a}.sensor_id", fk="sensor_id"),
            "ObservedProperty": Nav(
                "ObservedProperty",
                False,
                "observed_property {b}",
                "{b}.id = {a}.observed_property_id",
                fk="observed_property_id",
            ),
            "Observations": Nav(
                "Observation", True, "observation {b}", "{b}.datastream_id = {a}.id"
            ),
        },
    ),
    "Sensor": Entity(
        "Sensor",
        "sensor",
        {
            **_common(encoding=True),
            "metadata": Prop("{a}.metadata", "str", nullable=False),
        },
        {
            "Datastreams": Nav("Datastream", True, "datastream {b}", "{b}.sensor_id = {a}.id"),
            "MultiDatastreams": Nav(
                "MultiDatastream", True, "multi_datastream {b}", "{b}.sensor_id = {a}.id"
            ),
        },
    ),
    "ObservedProperty": Entity(
        "ObservedProperty",
        "observed_property",
        {
            **_common(),
            "definition": Prop("{a}.definition", "str", nullable=False),
        },
        {
            "Datastreams": Nav(
                "Datastream", True, "datastream {b}", "{b}.observed_property_id = {a}.id"
            ),
            "MultiDatastreams": Nav(
                "MultiDatastream",
                True,
                "multi_datastream {b}",
                "exists (select 1 from multi_datastream_observed_property {x}"
                " where {x}.multi_datastream_id = {b}.id and {x}.observed_property_id = {a}.id)",
            ),
        },
    ),
    "Observation": Entity(
        "Observation",
        "observation",
        {
            "id": Prop(_OBSERVATION_ID, "str", nullable=False),
            "phenomenonTime": Prop("{a}.phenomenon_time", "time", nullable=False),
            "resultTime": Prop("{a}.result_time", "time"),
            "result": Prop("{a}.result_json", "dyn", number_sql="{a}.result"),
            "parameters": Prop("{a}.parameters", "dyn"),
            # Not stored by Quartier: always null.
            "validTime": Prop("null::timestamptz", "interval", end="null::timestamptz"),
            "resultQuality": Prop("null::jsonb", "dyn"),
        },
        {
            "Datastream": Nav(
                "Datastream",
                False,
                "datastream {b}",
                "{b}.id = {a}.datastream_id",
                fk="datastream_id",
            ),
            "FeatureOfInterest": Nav(
                "FeatureOfInterest",
                False,
                "feature_of_interest {b}",
                "{b}.id = {a}.foi_id",
                fk="foi_id",
                fk_nullable=True,
            ),
            # a MultiDatastream's observations are stored under datastream_id -<its id>
            "MultiDatastream": Nav(
                "MultiDatastream",
                False,
                "multi_datastream {b}",
                "{b}.id = (-{a}.datastream_id)",
                fk="multi_datastream_id",
                fk_nullable=True,
                fk_sql="(case when {a}.datastream_id < 0 then -{a}.datastream_id end)",
            ),
        },
    ),
    "FeatureOfInterest": Entity(
        "FeatureOfInterest",
        "feature_of_interest",
        _common("feature", encoding=True),
        {"Observations": Nav("Observation", True, "observation {b}", "{b}.foi_id = {a}.id")},
    ),
    # The MultiDatastream extension (A.5): its Observations are stored under datastream_id -id.
    "MultiDatastream": Entity(
        "MultiDatastream",
        "multi_datastream",
        {
            **_common(),
            "observationType": Prop("{a}.observation_type", "str", nullable=False),
            "multiObservationDataTypes": Prop(
                "{a}.multi_observation_data_types", "dyn", nullable=False
            ),
            "unitOfMeasurements": Prop("{a}.unit_of_measurements", "dyn", nullable=False),
            "observedArea": Prop("{a}.observed_area", "geom"),
            "phenomenonTime": Prop(_MPT_START, "interval", end=_MPT_END),
            "resultTime": Prop(_MRT_START, "interval", end=_MRT_END),
        },
        {
            "Thing": Nav("Thing", False, "thing {b}", "{b}.id = {a}.thing_id", fk="thing_id"),
            "Sensor": Nav("Sensor", False, "sensor {b}", "{b}.id = {a}.sensor_id", fk="sensor_id"),
            "ObservedProperties": Nav(
                "ObservedProperty",
                True,
                "observed_property {b} join multi_datastream_observed_property {x}"
                " on {x}.observed_property_id = {b}.id",
                "{x}.multi_datastream_id = {a}.id",
                order="{x}.position",
            ),
            "Observations": Nav(
                "Observation", True, "observation {b}", "{b}.datastream_id = (-{a}.id)"
            ),
        },
    ),
}

# The entity sets of the URL (``/v1.1/Things``) and their entity types.
ENTITY_SETS: dict[str, str] = {
    "Things": "Thing",
    "Locations": "Location",
    "HistoricalLocations": "HistoricalLocation",
    "Datastreams": "Datastream",
    "Sensors": "Sensor",
    "ObservedProperties": "ObservedProperty",
    "Observations": "Observation",
    "FeaturesOfInterest": "FeatureOfInterest",
    "MultiDatastreams": "MultiDatastream",
}


# ----------------------------------------------------------------------------- path resolution


@dataclass(frozen=True)
class Step:
    """One navigation of a resolved path: from ``prefix[:-1]`` over ``nav`` to ``prefix``."""

    prefix: tuple[str, ...]
    nav: Nav


@dataclass(frozen=True)
class Resolved:
    """A property path resolved against an entity: the navigations taken, the entity and
    property reached and the JSON path below it (``properties/a/b`` → ``("a", "b")``).
    ``fk_shortcut``: the path is ``<to-one nav>/id`` and is read from the source's foreign key.
    Below a geometry the path reads its GeoJSON (``location/type`` is ``'Point'``, as QGIS asks)."""

    steps: tuple[Step, ...]
    entity: Entity
    prop_name: str
    prop: Prop
    json_path: tuple[str, ...]
    fk_shortcut: bool = False

    @property
    def type(self) -> Type:
        if self.fk_shortcut:
            return "int"
        return "dyn" if self.json_path else self.prop.type


def resolve(path: ast.Path, entity: Entity) -> Resolved:
    """Resolve ``path`` from ``entity``; a :class:`BadRequestError` names an unknown segment."""
    steps: list[Step] = []
    current = entity
    segs = path.segments
    for i, seg in enumerate(segs):
        nav = current.navs.get(seg)
        if nav is not None:
            rest = segs[i + 1 :]
            if not rest:
                raise BadRequestError(
                    f"{path} at position {path.pos}: {seg} is an entity, not a value; name one of"
                    f" its properties ({', '.join(ENTITIES[nav.target].props)})"
                )
            if nav.fk and rest == ("id",):
                target = ENTITIES[nav.target]
                return Resolved(
                    tuple(steps), current, seg, target.props["id"], (), fk_shortcut=True
                )
            steps.append(Step(segs[: i + 1], nav))
            current = ENTITIES[nav.target]
            continue
        prop = current.props.get(seg)
        if prop is None:
            known = sorted([*current.props, *current.navs])
            raise BadRequestError(
                f"{path} at position {path.pos}: {current.name} has no property {seg!r};"
                f" known: {', '.join(known)}"
            )
        rest = segs[i + 1 :]
        if rest and prop.type not in ("dyn", "geom"):
            raise BadRequestError(
                f"{path} at position {path.pos}: {seg} is not a JSON object, it has no {rest[0]!r}"
            )
        return Resolved(tuple(steps), current, seg, prop, rest)
    raise AssertionError("unreachable: a path has at least one segment")  # pragma: no cover


# ----------------------------------------------------------------------------- functions

# name → (argument types, result type). "num" accepts int; "timeish" a time or an interval;
# the result "arg0" is the type of the first argument (round(int) is an int).
ArgType = Lit["num", "str", "time", "timeish", "geom"]
FUNCTIONS: dict[str, tuple[tuple[ArgType, ...], Type | Lit["arg0"]]] = {
    # strings
    "substringof": (("str", "str"), "bool"),
    "contains": (("str", "str"), "bool"),
    "startswith": (("str", "str"), "bool"),
    "endswith": (("str", "str"), "bool"),
    "length": (("str",), "int"),
    "indexof": (("str", "str"), "int"),
    "substring": (("str", "num", "num"), "str"),  # the length is optional
    "tolower": (("str",), "str"),
    "toupper": (("str",), "str"),
    "trim": (("str",), "str"),
    "concat": (("str", "str"), "str"),
    # date and time (of the UTC representation)
    "year": (("time",), "int"),
    "month": (("time",), "int"),
    "day": (("time",), "int"),
    "hour": (("time",), "int"),
    "minute": (("time",), "int"),
    "second": (("time",), "int"),
    "fractionalseconds": (("time",), "num"),
    "date": (("time",), "date"),
    "time": (("time",), "timeofday"),
    "totaloffsetminutes": (("time",), "int"),
    "now": ((), "time"),
    "mindatetime": ((), "time"),
    "maxdatetime": ((), "time"),
    # math
    "round": (("num",), "arg0"),
    "floor": (("num",), "arg0"),
    "ceiling": (("num",), "arg0"),
    # geometry
    "geo.distance": (("geom", "geom"), "num"),
    "geo.length": (("geom",), "num"),
    "geo.intersects": (("geom", "geom"), "bool"),
    "st_equals": (("geom", "geom"), "bool"),
    "st_disjoint": (("geom", "geom"), "bool"),
    "st_touches": (("geom", "geom"), "bool"),
    "st_within": (("geom", "geom"), "bool"),
    "st_overlaps": (("geom", "geom"), "bool"),
    "st_crosses": (("geom", "geom"), "bool"),
    "st_intersects": (("geom", "geom"), "bool"),
    "st_contains": (("geom", "geom"), "bool"),
    "st_relate": (("geom", "geom", "str"), "bool"),
    # time intervals (the operators of FROST-Server's extension; instants are zero-length)
    "before": (("timeish", "timeish"), "bool"),
    "after": (("timeish", "timeish"), "bool"),
    "meets": (("timeish", "timeish"), "bool"),
    "during": (("timeish", "timeish"), "bool"),
    "overlaps": (("timeish", "timeish"), "bool"),
    "starts": (("timeish", "timeish"), "bool"),
    "finishes": (("timeish", "timeish"), "bool"),
}
OPTIONAL_ARGS = {"substring": 1}

_ACCEPTS: dict[ArgType, frozenset[Type]] = {
    "num": frozenset({"int", "num", "dyn", "null"}),
    "str": frozenset({"str", "dyn", "null"}),
    "time": frozenset({"time", "null"}),
    "timeish": frozenset({"time", "interval", "null"}),
    "geom": frozenset({"geom", "null"}),
}


def literal_type(value: ast.Value) -> Type:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "num"
    if isinstance(value, str):
        return "str"
    if isinstance(value, datetime):
        return "time"
    if isinstance(value, date):
        return "date"
    if isinstance(value, time):
        return "timeofday"
    if isinstance(value, timedelta):
        return "duration"
    if isinstance(value, ast.Geometry):
        return "geom"
    return "interval"


_NUMERIC = frozenset({"int", "num"})


def arith_type(op: ast.ArithOp, left: Type, right: Type, pos: int) -> Type:
    """The type of ``left op right``; numbers, and time ± duration, time − time."""
    if "null" in (left, right):
        return "null"
    lt = "num" if left == "dyn" else left
    rt = "num" if right == "dyn" else right
    if lt in _NUMERIC and rt in _NUMERIC:
        return "int" if lt == rt == "int" else "num"
    if op in ("add", "sub") and lt == "time" and rt == "duration":
        return "time"
    if op == "add" and lt == "duration" and rt == "time":
        return "time"
    if op == "sub" and lt == rt == "time":
        return "duration"
    if op in ("add", "sub") and lt == rt == "duration":
        return "duration"
    raise BadRequestError(f"operator {op} at position {pos} cannot combine {left} and {right}")


def comparable(left: Type, right: Type) -> bool:
    if "null" in (left, right):
        return True
    if left == "dyn" or right == "dyn":
        return {left, right} <= {"dyn", "int", "num", "str", "bool"}
    if left in _NUMERIC and right in _NUMERIC:
        return True
    if {left, right} <= {"time", "interval"}:
        return True
    return left == right and left not in ("geom",)


def type_of(expr: ast.Expr, entity: Entity) -> Type:
    """The static type of ``expr`` evaluated on ``entity``; a :class:`BadRequestError` for an
    unknown property or function, a wrong argument or operands that cannot be compared."""
    if isinstance(expr, ast.Literal):
        return literal_type(expr.value)
    if isinstance(expr, ast.Path):
        return resolve(expr, entity).type
    if isinstance(expr, ast.Logical):
        for side in (expr.left, expr.right):
            _expect_bool(side, entity, expr.op)
        return "bool"
    if isinstance(expr, ast.Not):
        _expect_bool(expr.operand, entity, "not")
        return "bool"
    if isinstance(expr, ast.Compare):
        lt, rt = type_of(expr.left, entity), type_of(expr.right, entity)
        if not comparable(lt, rt):
            raise BadRequestError(
                f"{expr.op} at position {expr.pos} cannot compare {lt} with {rt}"
                + ("; use st_equals() for geometries" if "geom" in (lt, rt) else "")
            )
        return "bool"
    if isinstance(expr, ast.Arith):
        return arith_type(
            expr.op, type_of(expr.left, entity), type_of(expr.right, entity), expr.pos
        )
    if isinstance(expr, ast.Negate):
        t = type_of(expr.operand, entity)
        if t not in ("int", "num", "dyn", "duration", "null"):
            raise BadRequestError(f"'-' at position {expr.pos} cannot negate {t}")
        return "num" if t == "dyn" else t
    return _call_type(expr, entity)


def _expect_bool(expr: ast.Expr, entity: Entity, op: str) -> None:
    t = type_of(expr, entity)
    if t not in ("bool", "dyn", "null"):
        raise BadRequestError(
            f"{op} at position {getattr(expr, 'pos', 0)} needs a boolean, not {t}"
        )


def _call_type(call: ast.Call, entity: Entity) -> Type:
    sig = FUNCTIONS.get(call.name)
    if sig is None:
        raise BadRequestError(
            f"unknown function {call.name}() at position {call.pos}; known: "
            + ", ".join(sorted(FUNCTIONS))
        )
    params, result = sig
    optional = OPTIONAL_ARGS.get(call.name, 0)
    if not len(params) - optional <= len(call.args) <= len(params):
        want = str(len(params)) if not optional else f"{len(params) - optional} to {len(params)}"
        raise BadRequestError(
            f"{call.name}() at position {call.pos} takes {want} argument(s), not {len(call.args)}"
        )
    types = [type_of(a, entity) for a in call.args]
    for i, (want_t, got) in enumerate(zip(params, types, strict=False)):
        if got not in _ACCEPTS[want_t]:
            raise BadRequestError(
                f"{call.name}() at position {call.pos}: argument {i + 1} must be {want_t},"
                f" not {got}"
            )
    if result == "arg0":
        return "int" if types[0] == "int" else "num"
    return result
