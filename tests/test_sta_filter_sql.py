"""The ``$filter`` compiler against a real PostgreSQL: for hundreds of random expressions over a
small random table of Things, Datastreams and Observations, the rows the SQL selects are exactly
the rows the Python evaluator (``quartier.api.sta.evaluate``) accepts. Also: navigation, geometry,
time intervals and a phenomenonTime range on one Datastream using the primary key index.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from quartier.api.sta.compile import compile_filter, compile_navigation, compile_orderby
from quartier.api.sta.evaluate import evaluate_filter
from quartier.api.sta.grammar import parse_filter, parse_orderby
from quartier.errors import BadRequestError

pytestmark = pytest.mark.services

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = datetime(2024, 3, 30, 22, 0, tzinfo=UTC)
ALPHABET = "aAb '%_"


# ------------------------------------------------------------------------------ random data


@dataclass
class World:
    """The same rows in Python (for the evaluator) and in the database."""

    things: dict[int, dict[str, Any]] = field(default_factory=dict)
    datastreams: dict[int, dict[str, Any]] = field(default_factory=dict)
    observations: list[dict[str, Any]] = field(default_factory=list)
    observed_properties: dict[int, dict[str, Any]] = field(default_factory=dict)

    def related(self, entity: str, row: Any, nav: str) -> Sequence[Any]:
        if entity == "Observation" and nav == "Datastream":
            return [self.datastreams[row["_ds"]]]
        if entity == "Observation" and nav == "FeatureOfInterest":
            return []
        if entity == "Datastream" and nav == "Thing":
            return [self.things[row["_thing"]]]
        if entity == "Datastream" and nav == "ObservedProperty":
            return [self.observed_properties[row["_op"]]]
        if entity == "Datastream" and nav == "Observations":
            return [o for o in self.observations if o["_ds"] == row["id"]]
        if entity == "Thing" and nav == "Datastreams":
            return [d for d in self.datastreams.values() if d["_thing"] == row["id"]]
        raise AssertionError((entity, nav))


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.choice(["int", "float", "str", "bool", "null", "obj"] if depth == 0 else ["int"])
    if kind == "int":
        return rng.randint(-5, 5)
    if kind == "float":
        return rng.choice([-2.5, -0.5, 0.0, 0.25, 1.5, 3.75, 7.0])
    if kind == "str":
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 4)))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return {"k": _json_value(rng, depth + 1)}


def _params(rng: random.Random) -> dict[str, Any] | None:
    if rng.random() < 0.1:
        return None
    out: dict[str, Any] = {}
    for key in ("a", "c", "b", "s"):
        if rng.random() < 0.8:
            value = _json_value(rng)
            if key == "b":
                value = rng.choice([True, False, None, 1])
            if key == "s":
                value = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 5)))
            out[key] = value
    if rng.random() < 0.5:
        out["n"] = {"k": rng.randint(-3, 3)}
    return out


def make_world(seed: int) -> World:
    rng = random.Random(seed)
    w = World()
    for i in (1, 2):
        w.observed_properties[i] = {"id": i, "name": ["PM2.5", "NO2"][i - 1]}
    for i in (1, 2, 3):
        w.things[i] = {
            "id": i,
            "name": "".join(rng.choice(ALPHABET) for _ in range(3)),
            "description": "",
            "properties": _params(rng),
        }
    for i in (1, 2, 3, 4):
        w.datastreams[i] = {
            "id": i,
            "name": "".join(rng.choice(ALPHABET) for _ in range(3)),
            "description": "",
            "properties": _params(rng),
            "_thing": rng.randint(1, 3),
            "_op": rng.randint(1, 2),
        }
    seen = set()
    for _ in range(80):
        ds = rng.randint(1, 4)
        t = T0 + timedelta(
            hours=rng.randint(0, 30), seconds=rng.randint(0, 59), microseconds=rng.randint(0, 9)
        )
        if (ds, t) in seen:
            continue
        seen.add((ds, t))
        result = rng.choice(
            [
                rng.randint(-10, 10),
                rng.choice([-2.5, 0.0, 0.5, 1.25, 3.0, 9.75]),
                "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 3))),
                rng.random() < 0.5,
                None,
                {"k": 1},
            ]
        )
        if isinstance(result, int) and not isinstance(result, bool):
            result = float(result)
        w.observations.append(
            {
                "id": f"{ds}:{(t - EPOCH) // timedelta(microseconds=1)}",
                "_ds": ds,
                "phenomenonTime": t,
                "resultTime": None if rng.random() < 0.3 else t + timedelta(minutes=5),
                "result": result,
                "parameters": _params(rng),
            }
        )
    for d in w.datastreams.values():  # the intervals the database derives from observations
        for prop in ("phenomenonTime", "resultTime"):
            times = [o[prop] for o in w.observations if o["_ds"] == d["id"] and o[prop]]
            d[prop] = (min(times), max(times)) if times else None
    return w


def store_world(conn: psycopg.Connection[Any], w: World) -> None:
    for op in w.observed_properties.values():
        conn.execute(
            "insert into observed_property (id, name, definition) values (%s, %s, %s)",
            (op["id"], op["name"], f"urn:{op['id']}"),
        )
    for t in w.things.values():
        conn.execute(
            "insert into thing (id, name, properties) values (%s, %s, %s)",
            (t["id"], t["name"], None if t["properties"] is None else Jsonb(t["properties"])),
        )
    conn.execute("insert into sensor (id, name) values (1, 's')")
    for d in w.datastreams.values():
        conn.execute(
            "insert into datastream (id, name, unit_of_measurement, thing_id, sensor_id,"
            " observed_property_id, properties) values (%s, %s, '{}', %s, 1, %s, %s)",
            (
                d["id"],
                d["name"],
                d["_thing"],
                d["_op"],
                None if d["properties"] is None else Jsonb(d["properties"]),
            ),
        )
    for i, o in enumerate(w.observations):
        r = o["result"]
        as_json = r is not None and (not isinstance(r, float) or i % 4 == 0)
        number = r if isinstance(r, float) and not as_json else None
        other = Jsonb(r) if as_json else None
        conn.execute(
            "insert into observation (datastream_id, phenomenon_time, result, result_json,"
            " result_time, parameters) values (%s, %s, %s, %s, %s, %s)",
            (
                o["_ds"],
                o["phenomenonTime"],
                number,
                other,
                o["resultTime"],
                None if o["parameters"] is None else Jsonb(o["parameters"]),
            ),
        )


@pytest.fixture
def world(db_url: str) -> Any:
    w = make_world(13)
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        store_world(conn, w)
        # Names in a natural-language collation, so ordering that forgets COLLATE "C" differs.
        natural = conn.execute(
            "select collname from pg_collation where collname in ('en-x-icu', 'en_US.utf8')"
            " order by collname limit 1"
        ).fetchone()
        for table in ("thing", "datastream") if natural else ():
            conn.execute(
                sql.SQL("alter table {} alter column name type text collate {}").format(
                    sql.Identifier(table), sql.Identifier(natural["collname"])
                )
            )
        conn.commit()
        conn.execute("set timezone = 'Europe/Berlin'")  # the compiler must not depend on it
        yield w, conn


def sql_observations(conn: Any, text: str) -> set[tuple[int, datetime]]:
    f = compile_filter(parse_filter(text), "Observations", "o", now=NOW)
    q = sql.SQL("select datastream_id, phenomenon_time from observation o where {}").format(f.sql)
    return {(r["datastream_id"], r["phenomenon_time"]) for r in conn.execute(q, f.params)}


def py_observations(w: World, text: str) -> set[tuple[int, datetime]]:
    expr = parse_filter(text)
    return {
        (o["_ds"], o["phenomenonTime"])
        for o in w.observations
        if evaluate_filter(expr, "Observation", o, w, now=NOW)
    }


def sql_things(conn: Any, text: str) -> set[int]:
    f = compile_filter(parse_filter(text), "Things", "t", now=NOW)
    q = sql.SQL("select id from thing t where {}").format(f.sql)
    return {r["id"] for r in conn.execute(q, f.params)}


def py_things(w: World, text: str) -> set[int]:
    expr = parse_filter(text)
    return {t["id"] for t in w.things.values() if evaluate_filter(expr, "Thing", t, w, now=NOW)}


# ------------------------------------------------------------------------------ random filters


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _expressions(
    num_leaves: list[str],
    str_leaves: list[str],
    time_leaves: list[str],
    bool_leaves: list[str],
    interval_leaves: list[str],
) -> st.SearchStrategy[str]:
    num_lit = st.sampled_from(["0", "1", "2", "3", "-1", "-2.5", "0.5", "1.25", "7", "-10"])
    str_lit = st.text(ALPHABET, max_size=3).map(_quote)
    time_lit = st.sampled_from(
        [
            "2024-03-31T01:30:00Z",
            "2024-03-31T03:00:00+02:00",
            "2024-03-31T12:00:00.000005Z",
            "2024-03-30T22:00:00Z",
        ]
    )
    num = st.recursive(
        st.one_of(st.sampled_from(num_leaves), num_lit),
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["add", "sub", "mul", "div", "mod"]), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            st.tuples(st.sampled_from(["round", "floor", "ceiling"]), inner).map(
                lambda t: f"{t[0]}({t[1]})"
            ),
            inner.map(lambda x: f"-({x})"),
        ),
        max_leaves=4,
    )
    text = st.recursive(
        st.one_of(st.sampled_from(str_leaves), str_lit),
        lambda inner: st.one_of(
            st.tuples(st.sampled_from(["tolower", "toupper", "trim"]), inner).map(
                lambda t: f"{t[0]}({t[1]})"
            ),
            st.tuples(inner, inner).map(lambda t: f"concat({t[0]}, {t[1]})"),
            st.tuples(inner, st.integers(-1, 4)).map(lambda t: f"substring({t[0]}, {t[1]})"),
            st.tuples(inner, st.integers(0, 3), st.integers(-1, 3)).map(
                lambda t: f"substring({t[0]}, {t[1]}, {t[2]})"
            ),
        ),
        max_leaves=3,
    )
    time = st.one_of(
        st.sampled_from(time_leaves),
        time_lit,
        st.tuples(st.sampled_from(time_leaves), st.sampled_from(["add", "sub"])).map(
            lambda t: f"({t[0]} {t[1]} duration'PT1H30M')"
        ),
    )
    op = st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"])
    span = st.one_of(
        time,
        st.sampled_from(interval_leaves),
        st.sampled_from(
            [
                "2024-03-30T22:00:00Z/2024-03-31T02:00:00Z",
                "2024-03-31T01:00:00Z/2024-03-31T01:00:00Z",
                "2024-03-31T06:00:00Z/2024-04-02T00:00:00Z",
            ]
        ),
    )
    atom = st.one_of(
        st.tuples(num, op, num).map(" ".join),
        st.tuples(text, op, text).map(" ".join),
        st.tuples(time, op, time).map(" ".join),
        st.tuples(
            st.sampled_from(num_leaves + str_leaves + time_leaves), st.sampled_from(["eq", "ne"])
        ).map(lambda t: f"{t[0]} {t[1]} null"),
        st.tuples(
            st.sampled_from(["startswith", "endswith", "substringof", "contains"]), text, text
        ).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        st.tuples(text, text, op, num).map(lambda t: f"indexof({t[0]}, {t[1]}) {t[2]} {t[3]}"),
        st.tuples(text, op, num).map(lambda t: f"length({t[0]}) {t[1]} {t[2]}"),
        st.tuples(
            st.sampled_from(["year", "month", "day", "hour", "minute", "second"]),
            st.sampled_from(time_leaves),
            op,
            st.integers(0, 60),
        ).map(lambda t: f"{t[0]}({t[1]}) {t[2]} {t[3]}"),
        st.sampled_from(bool_leaves),
        st.tuples(span, op, span).map(" ".join),
        st.tuples(
            st.sampled_from(
                ["before", "after", "meets", "during", "overlaps", "starts", "finishes"]
            ),
            span,
            span,
        ).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
    )
    return st.recursive(
        atom,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            inner.map(lambda x: f"not ({x})"),
        ),
        max_leaves=3,
    )


OBSERVATION_FILTERS = _expressions(
    num_leaves=[
        "result",
        "parameters/a",
        "parameters/c",
        "parameters/n/k",
        "Datastream/id",
        "length(parameters/s)",
        "Datastream/properties/a",
    ],
    str_leaves=[
        "result",
        "parameters/s",
        "parameters/a",
        "Datastream/name",
        "Datastream/Thing/name",
    ],
    time_leaves=["phenomenonTime", "resultTime"],
    interval_leaves=["Datastream/phenomenonTime", "Datastream/resultTime", "validTime"],
    bool_leaves=[
        "parameters/b",
        "result",
        "parameters/a eq parameters/c",
        "parameters/a gt result",
        "Datastream/ObservedProperty/name eq 'PM2.5'",
        "FeatureOfInterest/id eq null",
        "parameters eq null",
        "fractionalseconds(phenomenonTime) gt 0.000004",
        "date(phenomenonTime) eq 2024-03-31",
        "time(phenomenonTime) lt 01:00:00",
        "phenomenonTime lt now() sub duration'P62D'",
    ],
)

THING_FILTERS = _expressions(
    num_leaves=["id", "properties/a", "Datastreams/Observations/result", "Datastreams/id"],
    str_leaves=["name", "properties/s", "Datastreams/name", "Datastreams/Observations/result"],
    time_leaves=["Datastreams/Observations/phenomenonTime"],
    interval_leaves=["Datastreams/phenomenonTime"],
    bool_leaves=[
        "properties/b",
        "Datastreams/properties/a eq properties/a",
        "Datastreams/ObservedProperty/name eq 'NO2'",
        "Datastreams/Observations/parameters/b",
    ],
)

PROPERTY = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)


def test_random_observation_filters_sql_equals_python(world: Any) -> None:
    w, conn = world
    nonempty = 0

    @PROPERTY
    @given(OBSERVATION_FILTERS)
    def check(text: str) -> None:
        nonlocal nonempty
        expected = py_observations(w, text)
        assert sql_observations(conn, text) == expected, text
        nonempty += 0 < len(expected) < len(w.observations)

    check()
    assert nonempty > 50  # the expressions discriminate, not all-or-nothing


def test_random_thing_filters_sql_equals_python(world: Any) -> None:
    w, conn = world

    @PROPERTY
    @given(THING_FILTERS)
    def check(text: str) -> None:
        assert sql_things(conn, text) == py_things(w, text), text

    check()


# ------------------------------------------------------------------------------ fixed cases


FIXED_OBSERVATION_FILTERS = [
    "result gt 3",
    "result ge 3",
    "result eq 3",
    "result ne 3",
    "result lt 0 or result eq 'a'",
    "not (result gt 3)",
    "result eq null",
    "result ne null",
    "result eq true",
    "result mod 2 eq 1",
    "result div 2 gt 1",
    "round(result) eq 2",
    "parameters/a gt -100",
    "parameters/n/k ge 1",
    "parameters/s eq 'a''b' or startswith(parameters/s, '''')",
    "Datastream/Thing/properties/a eq 1",
    "phenomenonTime ge 2024-03-31T00:00:00Z and phenomenonTime lt 2024-03-31T03:00:00+02:00",
    "phenomenonTime eq 2024-03-30T00:00:00Z/2024-03-31T00:00:00Z",
    "phenomenonTime gt 2024-03-30T00:00:00Z/2024-03-31T00:00:00Z",
    "during(phenomenonTime, 2024-03-31T00:00:00Z/2024-03-31T06:00:00Z)",
    "before(phenomenonTime, 2024-03-31T00:00:00Z) or after(phenomenonTime, 2024-03-31T05:00:00Z)",
    "overlaps(phenomenonTime, 2024-03-31T00:00:00Z/2024-03-31T06:00:00Z)",
    "starts(2024-03-31T00:00:00Z/2024-03-31T06:00:00Z, phenomenonTime)",
    "finishes(Datastream/phenomenonTime, phenomenonTime)",
    "meets(phenomenonTime, Datastream/phenomenonTime)",
    "Datastream/phenomenonTime eq 2024-03-31T02:00:00Z",
    "resultTime sub phenomenonTime eq duration'PT5M'",
    "hour(phenomenonTime) eq 1 and day(phenomenonTime) eq 31",
    "mindatetime() lt phenomenonTime and phenomenonTime lt maxdatetime()",
    "totaloffsetminutes(phenomenonTime) eq 0",
    "phenomenonTime eq Datastream/phenomenonTime",
    "Datastream/phenomenonTime ne phenomenonTime",
    "round(result) eq -3 or round(result) eq 1 or round(parameters/a) eq 1",
    "round(result) eq -2 or round(result) eq 0 or round(parameters/a) eq -1",
    "Datastream/name lt 'a' or Datastream/Thing/name ge 'b'",
    "id eq '2:1711836000000000' or id eq '1:0' or id eq 'x'",
    "id ne '3:1711836000000000' and id ne '03:1711836000000000'",
    "result add 1 gt 1 and result gt 0",
]


def test_fixed_observation_filters(world: Any) -> None:
    w, conn = world
    some = [o["id"] for o in w.observations[:3]]
    by_id = [f"id eq '{some[0]}' or '{some[1]}' eq id", f"id ne '{some[2]}'"]
    for text in [*FIXED_OBSERVATION_FILTERS, *by_id]:
        assert sql_observations(conn, text) == py_observations(w, text), text


def test_to_many_navigation_is_any(world: Any) -> None:
    w, conn = world
    text = "Datastreams/Observations/result gt 5"
    expected = {
        d["_thing"]
        for d in w.datastreams.values()
        for o in w.observations
        if o["_ds"] == d["id"] and isinstance(o["result"], float) and o["result"] > 5
    }
    assert expected  # the data has some
    assert sql_things(conn, text) == expected == py_things(w, text)
    f = compile_filter(parse_filter(text), "Things", "t")
    assert "exists" in f.sql.as_string(None)


def test_navigation_joins(world: Any) -> None:
    w, conn = world
    for entity, nav, table in [
        ("Thing", "Datastreams", "thing"),
        ("Datastream", "Thing", "datastream"),
        ("Datastream", "ObservedProperty", "datastream"),
    ]:
        source, on = compile_navigation(entity, nav, "p", "c")
        rows = {1: w.things, 2: w.datastreams}[1 if entity == "Thing" else 2]
        for parent in rows.values():
            q = sql.SQL("select c.id from {} p, {} where p.id = %(id)s and {}").format(
                sql.Identifier(table), source, on
            )
            got = {r["id"] for r in conn.execute(q, {"id": parent["id"]})}
            assert got == {r["id"] for r in w.related(entity, parent, nav)}, (entity, nav)
    source, on = compile_navigation("Things", "Locations", "p", "c")
    assert "thing_location" in source.as_string(None) and '"cx".thing_id' in on.as_string(None)
    with pytest.raises(BadRequestError, match="Thing has no navigation property 'Sensors'"):
        compile_navigation("Things", "Sensors", "p", "c")


def test_values_are_parameters(world: Any) -> None:
    text = "name eq 'x'' or 1 eq 1 --' and properties/a gt 3.5 and Datastreams/name ne 'y'"
    f = compile_filter(parse_filter(text), "Things", "t")
    rendered = f.sql.as_string(None)
    assert "3.5" not in rendered and "--" not in rendered and "'y'" not in rendered
    values = [v for v in f.params.values() if not isinstance(v, list)]
    assert set(values) >= {"x' or 1 eq 1 --", 3.5, "y"}


def test_orderby_sql(world: Any) -> None:
    w, conn = world
    o = compile_orderby(
        parse_orderby("Datastream/name desc, phenomenonTime asc"), "Observations", "o"
    )
    q = sql.SQL("select datastream_id, phenomenon_time from observation o order by {}").format(
        o.sql
    )
    got = [(r["datastream_id"], r["phenomenon_time"]) for r in conn.execute(q, o.params)]
    names = {d["id"]: d["name"].encode() for d in w.datastreams.values()}
    expected = sorted(
        ((ob["_ds"], ob["phenomenonTime"]) for ob in w.observations),
        key=lambda k: k[1],
    )
    expected.sort(key=lambda k: names[k[0]], reverse=True)
    assert [names[d] for d, _ in got] == [names[d] for d, _ in expected]
    assert sorted(got) == sorted(expected)


def test_geometry_functions(db_url: str) -> None:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        conn.execute("insert into thing (id, name) values (1, 'in'), (2, 'out')")
        for i, (x, y) in ((1, (7.0, 51.0)), (2, (9.0, 53.0))):
            conn.execute(
                "insert into location (id, name, location) values"
                " (%s, 'l', ST_SetSRID(ST_MakePoint(%s, %s), 4326))",
                (i, x, y),
            )
            conn.execute("insert into thing_location values (%s, %s)", (i, i))
        locs = {
            1: {"id": 1, "location": {"type": "Point", "coordinates": [7.0, 51.0]}},
            2: {"id": 2, "location": {"type": "Point", "coordinates": [9.0, 53.0]}},
        }

        class G:
            def related(self, entity: str, row: Any, nav: str) -> Any:
                assert (entity, nav) == ("Thing", "Locations")
                return [locs[row["id"]]]

        poly = "geography'POLYGON((6.5 50.5, 7.5 50.5, 7.5 51.5, 6.5 51.5, 6.5 50.5))'"
        poly2 = "geography'POLYGON((7 51, 8 51, 8 52, 7 52, 7 51))'"
        cases = {
            f"st_within(Locations/location, {poly})": {1},
            f"st_intersects(Locations/location, {poly})": {1},
            f"geo.intersects(Locations/location, {poly})": {1},
            f"st_contains({poly}, Locations/location)": {1},
            f"st_disjoint(Locations/location, {poly})": {2},
            "st_equals(Locations/location, geometry'POINT(9 53)')": {2},
            f"st_relate(Locations/location, {poly}, 'T*F**F***')": {1},
            "geo.distance(Locations/location, geography'POINT(7 51.1)') lt 11200": {1},
            "geo.distance(Locations/location, geography'POINT(7 51.1)') gt 11100": {1, 2},
            f"st_touches(Locations/location, {poly})": set(),
            "st_crosses(geography'LINESTRING(6 51, 8 51)', "
            f"{poly}) and st_overlaps({poly}, {poly2})": {
                1,
                2,
            },
        }
        for text, expected in cases.items():
            f = compile_filter(parse_filter(text), "Things", "t")
            q = sql.SQL("select id from thing t where {}").format(f.sql)
            assert {r["id"] for r in conn.execute(q, f.params)} == expected, text
            py = {t for t in (1, 2) if evaluate_filter(parse_filter(text), "Thing", {"id": t}, G())}
            assert py == expected, text
        # geo.distance is metres on the spheroid, the same as the evaluator's (pyproj) to 1 mm
        f = compile_filter(
            parse_filter("geo.distance(Locations/location, geography'POINT(7 51.1)') lt 0"),
            "Things",
            "t",
        )
        q = sql.SQL(
            "select ST_Distance(l.location::geography, 'SRID=4326;POINT(7 51.1)'::geography) d"
            " from location l where id = 1"
        )
        d = conn.execute(q).fetchone()["d"]
        assert d == pytest.approx(11131.9, abs=50)
        assert f.params


def test_phenomenon_time_range_on_one_datastream_uses_the_primary_key(db_url: str) -> None:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        conn.execute(
            "insert into thing (id, name) values (1, 't');"
            "insert into sensor (id, name) values (1, 's');"
            "insert into observed_property (id, name, definition) values (1, 'p', 'urn:p');"
            "insert into datastream (id, name, unit_of_measurement, thing_id, sensor_id,"
            " observed_property_id) select g, 'd', '{}', 1, 1, 1 from generate_series(1, 20) g;"
            "insert into observation (datastream_id, phenomenon_time, result)"
            " select d, timestamptz '2024-01-01' + g * interval '1 minute', g"
            " from generate_series(1, 20) d, generate_series(1, 3000) g;"
            "analyze observation;"
        )
        ranged = (
            "Datastream/id eq 7 and phenomenonTime ge 2024-01-02T00:00:00Z"
            " and phenomenonTime lt 2024-01-02T01:00:00Z"
        )
        hour = "2024-01-02T00:00:00Z/2024-01-02T00:59:00Z"
        for text in (
            ranged,
            f"Datastream/id eq 7 and phenomenonTime eq {hour}",
            f"Datastream/id eq 7 and during(phenomenonTime, {hour})",
        ):
            f = compile_filter(parse_filter(text), "Observations", "o")
            q = sql.SQL("select result from observation o where {}").format(f.sql)
            plan = "\n".join(
                r["QUERY PLAN"] for r in conn.execute(sql.SQL("explain ") + q, f.params).fetchall()
            )
            assert "Index" in plan and "Seq Scan" not in plan, (text, plan)
            assert "phenomenon_time >=" in plan and "datastream_id =" in plan, (text, plan)
            assert len(conn.execute(q, f.params).fetchall()) == 60, text
        # an Observation by its @iot.id is a primary-key lookup
        f = compile_filter(parse_filter("id eq '7:1704157200000000'"), "Observations", "o")
        q = sql.SQL("select result from observation o where {}").format(f.sql)
        plan = "\n".join(
            r["QUERY PLAN"] for r in conn.execute(sql.SQL("explain ") + q, f.params).fetchall()
        )
        assert "Index" in plan and "phenomenon_time =" in plan, plan
        assert [r["result"] for r in conn.execute(q, f.params)] == [1500.0]
