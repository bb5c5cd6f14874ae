"""The SensorThings query-option parser (``quartier.api.sta.grammar``) and the checks against the
entity model: every operator, function and literal, and the messages of what is refused."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from quartier.api.sta import ast
from quartier.api.sta.compile import check_options, compile_filter, compile_orderby
from quartier.api.sta.grammar import (
    parse_expand,
    parse_filter,
    parse_orderby,
    parse_query_options,
    parse_select,
)
from quartier.api.sta.model import FUNCTIONS
from quartier.errors import BadRequestError, NotImplementedQueryError

P = ast.Path
L = ast.Literal


def p(text: str) -> ast.Path:
    return ast.Path(tuple(text.split("/")))


# ------------------------------------------------------------------------------ operators


@pytest.mark.parametrize("op", ["eq", "ne", "gt", "ge", "lt", "le"])
def test_comparison_operators(op: str) -> None:
    assert parse_filter(f"result {op} 5") == ast.Compare(op, p("result"), L(5))  # type: ignore[arg-type]


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "mod"])
def test_arithmetic_operators(op: str) -> None:
    assert parse_filter(f"result {op} 2 eq 1") == ast.Compare(
        "eq",
        ast.Arith(op, p("result"), L(2)),  # type: ignore[arg-type]
        L(1),
    )


def test_precedence_follows_odata() -> None:
    # mul before add, add before comparison, comparison before and, and before or
    got = parse_filter("a add b mul c eq d or e lt 1 and not f")
    left = ast.Compare("eq", ast.Arith("add", p("a"), ast.Arith("mul", p("b"), p("c"))), p("d"))
    right = ast.Logical("and", ast.Compare("lt", p("e"), L(1)), ast.Not(p("f")))
    assert got == ast.Logical("or", left, right)
    # left-associative
    assert parse_filter("a sub b sub c eq 0").left == ast.Arith(  # type: ignore[union-attr]
        "sub", ast.Arith("sub", p("a"), p("b")), p("c")
    )
    # parentheses group
    assert parse_filter("(a add b) mul c eq 0").left == ast.Arith(  # type: ignore[union-attr]
        "mul", ast.Arith("add", p("a"), p("b")), p("c")
    )
    # not binds tighter than a comparison, as in OData
    assert parse_filter("not a eq true") == ast.Compare("eq", ast.Not(p("a")), L(True))


def test_negation() -> None:
    assert parse_filter("parameters/rssi gt -100") == ast.Compare(
        "gt", p("parameters/rssi"), L(-100)
    )
    assert parse_filter("-result lt 0") == ast.Compare("lt", ast.Negate(p("result")), L(0))


# ------------------------------------------------------------------------------ literals


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("'PM2.5'", "PM2.5"),
        ("'it''s'", "it's"),
        ("''", ""),
        ("'a;b)c'", "a;b)c"),
        ("42", 42),
        ("4.5", 4.5),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        ("-7", -7),
        ("true", True),
        ("false", False),
        ("null", None),
        ("2024-03-31T01:30:00Z", datetime(2024, 3, 31, 1, 30, tzinfo=UTC)),
        ("2024-03-31T03:30:00.250+02:00", datetime(2024, 3, 31, 1, 30, 0, 250000, tzinfo=UTC)),
        ("2024-03-31T01:30Z", datetime(2024, 3, 31, 1, 30, tzinfo=UTC)),
        ("2024-03-31", date(2024, 3, 31)),
        ("13:45:00", time(13, 45)),
        ("duration'P1DT2H30M'", timedelta(days=1, hours=2, minutes=30)),
        ("duration'PT0.5S'", timedelta(milliseconds=500)),
        ("duration'-P2D'", timedelta(days=-2)),
        ("geography'POINT(7.1 51.2)'", ast.Geometry("POINT(7.1 51.2)", geography=True)),
        ("geometry'SRID=4326;LINESTRING(0 0, 1 1)'", ast.Geometry("LINESTRING(0 0, 1 1)", False)),
        (
            "2024-01-01T00:00:00Z/2024-02-01T00:00:00Z",
            ast.Interval(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)),
        ),
    ],
)
def test_literals(text: str, value: object) -> None:
    got = parse_filter(f"x eq {text}")
    assert isinstance(got, ast.Compare) and got.right == L(value)  # type: ignore[arg-type]
    assert type(got.right.value) is type(value)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x eq duration'P1Y'", "duration 'P1Y'"),
        ("x eq duration'P'", "duration 'P'"),
        ("x eq geography'POINT(1)'", "not valid well-known text"),
        ("x eq geography'CIRCLE(1 2)'", "not well-known text"),
        ("x eq 2024-13-01", "not a valid date"),
        ("x eq 2024-02-30T00:00:00Z", "not a valid date-time"),
        ("x eq 2024-02-02T00:00:00Z/2024-02-01T00:00:00Z", "ends before it starts"),
    ],
)
def test_bad_literals(text: str, message: str) -> None:
    with pytest.raises(BadRequestError, match=message) as e:
        parse_filter(text)
    assert str(e.value).startswith("$filter: ")


def test_other_srid_is_not_implemented() -> None:
    with pytest.raises(NotImplementedQueryError, match="SRID=4326"):
        parse_filter("st_within(location, geography'SRID=25832;POINT(1 2)')")


# ------------------------------------------------------------------------------ paths and calls


def test_paths() -> None:
    assert parse_filter("Datastream/ObservedProperty/name eq 'PM2.5'").left == p(  # type: ignore[union-attr]
        "Datastream/ObservedProperty/name"
    )
    assert parse_filter("@iot.id eq 3").left == p("id")  # type: ignore[union-attr]
    assert parse_filter("Thing/@iot.id eq 3").left == p("Thing/id")  # type: ignore[union-attr]
    assert parse_filter("properties/owner eq 'city'").left == p("properties/owner")  # type: ignore[union-attr]


ARGS = {
    "str": "name",
    "num": "3",
    "time": "phenomenonTime",
    "timeish": "phenomenonTime",
    "geom": "geography'POINT(1 2)'",
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_function_parses(name: str) -> None:
    params, _ = FUNCTIONS[name]
    args = ", ".join(ARGS[t] for t in params)
    got = parse_filter(f"{name}({args}) eq x")
    assert isinstance(got, ast.Compare) and isinstance(got.left, ast.Call)
    assert got.left.name == name and len(got.left.args) == len(params)


# One filter per function, checked against the entity model and compiled to SQL.
TYPED = {
    "Observation": [
        "substringof('a', result)",
        "contains(result, 'a')",
        "startswith(parameters/s, 'a')",
        "endswith(result, 'a')",
        "length(result) gt 2",
        "indexof(result, 'a') eq 0",
        "substring(result, 1) eq 'a'",
        "substring(result, 1, 2) eq 'a'",
        "tolower(result) eq 'a'",
        "toupper(result) eq 'A'",
        "trim(result) eq 'a'",
        "concat(result, 'x') eq 'ax'",
        "year(phenomenonTime) eq 2024",
        "month(phenomenonTime) eq 3",
        "day(phenomenonTime) eq 31",
        "hour(phenomenonTime) eq 1",
        "minute(phenomenonTime) eq 30",
        "second(phenomenonTime) eq 0",
        "fractionalseconds(phenomenonTime) lt 0.5",
        "date(phenomenonTime) eq 2024-03-31",
        "time(phenomenonTime) lt 12:00:00",
        "totaloffsetminutes(phenomenonTime) eq 0",
        "phenomenonTime lt now()",
        "phenomenonTime gt mindatetime() and phenomenonTime lt maxdatetime()",
        "round(result) eq 2",
        "floor(result) eq 2",
        "ceiling(result) eq 2",
        "geo.distance(FeatureOfInterest/feature, geography'POINT(7 51)') lt 1000",
        "geo.length(FeatureOfInterest/feature) gt 10",
        "geo.intersects(FeatureOfInterest/feature, geography'POINT(7 51)')",
        "st_relate(FeatureOfInterest/feature, geography'POINT(7 51)', 'T********')",
        "before(phenomenonTime, Datastream/phenomenonTime)",
        "after(phenomenonTime, 2024-01-01T00:00:00Z)",
        "meets(Datastream/phenomenonTime, phenomenonTime)",
        "during(phenomenonTime, 2024-01-01T00:00:00Z/2024-02-01T00:00:00Z)",
        "overlaps(Datastream/phenomenonTime, 2024-01-01T00:00:00Z/2024-02-01T00:00:00Z)",
        "starts(phenomenonTime, Datastream/phenomenonTime)",
        "finishes(phenomenonTime, Datastream/phenomenonTime)",
        "resultTime sub phenomenonTime gt duration'PT1M'",
        "phenomenonTime add duration'P1D' gt now()",
        "parameters/rssi gt -100 and parameters/ok",
        "result eq parameters/expected",
        "Datastream/id eq 3 and Datastream/Thing/properties/owner eq 'city'",
        "validTime eq null and resultQuality eq null",
    ],
    "Thing": [
        "properties/owner eq 'city'",
        "Locations/location eq null or st_within(Locations/location, geography'POINT(1 2)')",
        "st_equals(Locations/location, geometry'POINT(1 2)')",
        "st_disjoint(Locations/location, geometry'POINT(1 2)')",
        "st_touches(Locations/location, geometry'POINT(1 2)')",
        "st_overlaps(Locations/location, geometry'POINT(1 2)')",
        "st_crosses(Locations/location, geometry'POINT(1 2)')",
        "st_intersects(Locations/location, geometry'POINT(1 2)')",
        "st_contains(Locations/location, geometry'POINT(1 2)')",
        "HistoricalLocations/time gt 2024-01-01T00:00:00Z",
        "Datastreams/Observations/result gt 3",
    ],
    "Datastream": [
        "phenomenonTime eq 2024-01-01T00:00:00Z",
        "unitOfMeasurement/symbol eq 'µg/m³'",
        "Sensor/metadata ne '' and ObservedProperty/definition eq 'urn:x'",
        "st_within(observedArea, geography'POLYGON((0 0, 1 0, 1 1, 0 0))')",
    ],
    "Location": ["Things/name eq 'a' and HistoricalLocations/Thing/id eq 1"],
    "HistoricalLocation": ["Thing/name eq 'a' and Locations/encodingType eq 'x'"],
    "Sensor": ["encodingType eq 'x' and Datastreams/name eq 'a'"],
    "ObservedProperty": ["Datastreams/Thing/name eq 'a'"],
    "FeatureOfInterest": ["Observations/result gt 1 and encodingType eq 'x'"],
}


@pytest.mark.parametrize(("entity", "text"), [(e, t) for e, texts in TYPED.items() for t in texts])
def test_typed_filters_compile(entity: str, text: str) -> None:
    f = compile_filter(parse_filter(text), entity, "e")
    rendered = f.sql.as_string(None)
    assert all(f"%({name})s" in rendered for name in f.params)
    assert "'a'" not in rendered and "2024" not in rendered  # values are parameters


def test_every_function_is_covered_by_a_typed_filter() -> None:
    used = {c for texts in TYPED.values() for t in texts for c in FUNCTIONS if f"{c}(" in t}
    assert used == set(FUNCTIONS)


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name eq", r"\$filter: unexpected end at position 8"),
        ("name eq 'x' and", r"unexpected end at position 16"),
        ("name eq 'x' an 3", r"unexpected 'an' at position 13"),
        ("name eq 'x", r"position 9"),
        ("name # 3", r"unexpected .*#.* at position 6"),
        ("(name eq 'x'", r"unexpected end at position 13"),
        ("name eq 'x')", r"unexpected '\)' at position 12"),
        ("length(name,) eq 1", r"unexpected '\)' at position 13"),
    ],
)
def test_syntax_errors_name_position_and_token(text: str, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        parse_filter(text)


def test_syntax_error_says_what_was_expected() -> None:
    with pytest.raises(BadRequestError, match=r"expected .*a comparison"):
        parse_filter("name 'x'")


@pytest.mark.parametrize(
    ("entity", "text", "message"),
    [
        ("Thing", "nome eq 'x'", "nome at position 1: Thing has no property 'nome'; known: "),
        ("Observation", "Datastream/nam eq 'x'", "Datastream has no property 'nam'"),
        ("Thing", "Datastreams eq 1", "Datastreams is an entity, not a value"),
        ("Thing", "name/x eq 1", "name is not a JSON object"),
        ("Thing", "name eq 1", "eq at position 6 cannot compare str with int"),
        ("Thing", "length(name, 'x') eq 1", r"length\(\) at position 1 takes 1 argument"),
        ("Thing", "substring(name) eq 'x'", r"takes 2 to 3 argument"),
        ("Thing", "foo(name)", r"unknown function foo\(\) at position 1"),
        ("Thing", "year(name) eq 1", "argument 1 must be time, not str"),
        ("Thing", "name add 1 eq 1", "operator add at position 6 cannot combine str and int"),
        ("Thing", "name", r"\$filter must be a condition"),
        ("Thing", "id and true", "and at position 1 needs a boolean, not int"),
        ("Location", "location eq location", "use st_equals"),
    ],
)
def test_semantic_errors(entity: str, text: str, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        compile_filter(parse_filter(text), entity, "e")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("any(Datastreams)", r"function any\(\) at position 1"),
        ("cast(name, 'Edm.String') eq 'x'", r"function cast\(\)"),
        ("isof(name, 'Edm.String')", r"function isof\(\)"),
        ("name in ('a', 'b')", "operator in at position 6"),
        ("name has 'a'", "operator has at position 6"),
    ],
)
def test_unsupported_constructs_are_not_implemented(text: str, message: str) -> None:
    with pytest.raises(NotImplementedQueryError, match=message):
        parse_filter(text)


# ------------------------------------------------------------------------------ other options


def test_orderby() -> None:
    assert parse_orderby("phenomenonTime desc, result, name asc") == (
        ast.OrderItem(p("phenomenonTime"), descending=True),
        ast.OrderItem(p("result")),
        ast.OrderItem(p("name")),
    )
    assert parse_orderby("year(phenomenonTime) desc")[0].expr == ast.Call(
        "year", (p("phenomenonTime"),)
    )
    with pytest.raises(BadRequestError, match=r"\$orderby: unexpected 'up' at position 6"):
        parse_orderby("name up")


def test_orderby_compiles_to_one_navigation_and_refuses_to_many() -> None:
    o = compile_orderby(parse_orderby("Datastream/name desc, result"), "Observations", "o")
    assert o.sql.as_string(None).endswith("asc") and "desc" in o.sql.as_string(None)
    with pytest.raises(BadRequestError, match="to-many"):
        compile_orderby(parse_orderby("Datastreams/name"), "Things", "t")
    with pytest.raises(BadRequestError, match="geometry"):
        compile_orderby(parse_orderby("location"), "Locations", "l")


def test_select() -> None:
    assert parse_select("id, name,@iot.id, Datastreams") == (
        p("id"),
        p("name"),
        p("id"),
        p("Datastreams"),
    )
    with pytest.raises(BadRequestError, match=r"\$select: unexpected"):
        parse_select("name,")


def test_expand_nested_with_options() -> None:
    got = parse_expand(
        "Datastreams($select=name;$expand=Observations($top=3;$orderby=phenomenonTime desc;"
        "$filter=result gt 1 and substringof('a;b)', parameters/s));$count=true),"
        "Locations,Datastreams/Sensor($skip=2)"
    )
    ds, loc, sensor = got
    assert ds.path == ("Datastreams",) and ds.options.select == (p("name"),)
    assert ds.options.count is True
    obs = ds.options.expand[0]
    assert obs.path == ("Observations",) and obs.options.top == 3
    assert obs.options.orderby == (ast.OrderItem(p("phenomenonTime"), descending=True),)
    assert obs.options.filter == ast.Logical(
        "and",
        ast.Compare("gt", p("result"), L(1)),
        ast.Call("substringof", (L("a;b)"), p("parameters/s"))),
    )
    assert loc == ast.Expand(("Locations",), ast.QueryOptions())
    assert sensor.path == ("Datastreams", "Sensor") and sensor.options.skip == 2


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("Datastreams($top=3;$top=4)", BadRequestError, "option \\$top given twice"),
        ("Datastreams($levels=2)", NotImplementedQueryError, r"\$levels is not supported"),
        ("Datastreams($bogus=2)", BadRequestError, r"unknown query option \$bogus"),
        ("Datastreams($top=x)", BadRequestError, r"\$expand: unexpected 'x'"),
        ("Datastreams($filter=)", BadRequestError, r"unexpected '\)'"),
        ("Datastreams(", BadRequestError, "unexpected end"),
    ],
)
def test_expand_errors(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_expand(text)


def test_check_options_against_the_model() -> None:
    ok = parse_query_options(
        {
            "$select": "name,Datastreams",
            "$expand": "Datastreams($select=name;$filter=Observations/result gt 1;"
            "$expand=Observations($orderby=phenomenonTime desc;$filter=result gt 2))",
            "$filter": "Locations/name eq 'x'",
            "$orderby": "name desc",
        }
    )
    check_options(ok, "Things")
    for options, message in [
        ({"$select": "nme"}, "nme at position 1 is not a property of Thing"),
        ({"$expand": "Datastreams/Sensorz"}, "Datastream has no navigation property 'Sensorz'"),
        ({"$expand": "Datastreams($filter=nme eq 1)"}, "Datastream has no property 'nme'"),
        ({"$expand": "Datastreams($select=result)"}, "result at position 21 is not a property"),
        ({"$expand": "Locations($orderby=Things/name)"}, "to-many"),
    ]:
        with pytest.raises(BadRequestError, match=message):
            check_options(parse_query_options(options), "Things")
    # a member of a JSON property may be selected (properties/owner); of another type, not
    check_options(parse_query_options({"$select": "properties/owner,name"}), "Things")
    with pytest.raises((BadRequestError, NotImplementedQueryError)):
        check_options(parse_query_options({"$select": "name/first"}), "Things")


def test_query_options() -> None:
    got = parse_query_options(
        {
            "$top": "10",
            "$skip": "5",
            "$count": "true",
            "$resultFormat": "dataArray",
            "$filter": "result gt 1",
            "$orderby": "phenomenonTime",
            "other": "ignored",
        }
    )
    assert (got.top, got.skip, got.count, got.result_format) == (10, 5, True, "dataArray")
    assert got.filter == ast.Compare("gt", p("result"), L(1))
    assert parse_query_options({}) == ast.QueryOptions()
    for options, error, message in [
        ({"$top": "-1"}, BadRequestError, r"\$top='-1': expected a non-negative integer"),
        ({"$count": "yes"}, BadRequestError, r"\$count='yes': expected true or false"),
        ({"$resultFormat": "xml"}, BadRequestError, r"\$resultFormat='xml'"),
        ({"$bogus": "1"}, BadRequestError, r"unknown query option \$bogus"),
        ({"$search": "x"}, NotImplementedQueryError, r"\$search is not supported"),
        ({"$apply": "x"}, NotImplementedQueryError, r"\$apply"),
        ({"$filter": " "}, BadRequestError, r"\$filter is empty"),
    ]:
        with pytest.raises(error, match=message):
            parse_query_options(options)
