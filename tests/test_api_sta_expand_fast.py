"""The fast ``$expand`` of Things → Datastreams → Observations (``api/sta_expand_latest.py``)
against the general path (``sensorthings._expand``) on random data: the same bodies for every
shape it handles (``$top`` of several sizes, both ``phenomenonTime`` directions, ``$select``
inside expansions, nested expansions, paging of the expanded Datastreams, Things without
Datastreams, Datastreams without Observations, a polygon ``$filter``, one entity by id), the
general path for every shape it does not handle, and Datastream spans that stay exact when the
hints they start from (``observation_latest``, the daily rollups) are stale. Real PostgreSQL;
observations in monthly partitions and in the default partition."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from quartier.api import sta_expand_latest
from quartier.api.app import create_app
from quartier.api.sta import parse_query_options
from quartier.config import Settings
from quartier.store import rollups, timeseries
from quartier.store import sensorthings_expand as qx

pytestmark = pytest.mark.services

START = datetime(2026, 1, 1, tzinfo=UTC)
#: partitions exist for January–April; May and June land in the default partition
PARTITIONED_UNTIL = datetime(2026, 5, 1, tzinfo=UTC)
END = datetime(2026, 7, 1, tzinfo=UTC)
POLYGON = "POLYGON((6.8 50.85, 6.975 50.85, 6.975 50.95, 6.8 50.95, 6.8 50.85))"
LATEST = "Datastreams/Observations($top=1;$orderby=phenomenonTime desc)"


def _random_time(rng: random.Random) -> datetime:
    return START + timedelta(minutes=rng.randrange(int((END - START).total_seconds() // 60)))


def _fill(url: str, seed: int) -> dict[str, list[int]]:
    """Random Things (some without Datastreams), each at one Location; Datastreams with 0, 1, 2
    or up to 60 observations spread over six months; latest values and rollups computed as a
    bulk load leaves them. Returns the ids made."""
    rng = random.Random(seed)
    made: dict[str, list[int]] = {"things": [], "datastreams": [], "with_obs": [], "many": []}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "select quartier_ensure_observation_partitions(%s, %s)", (START, PARTITIONED_UNTIL)
        )
        sensor = conn.execute(
            "insert into sensor (name, encoding_type, metadata) values ('s', 'text/html', '')"
            " returning id"
        ).fetchone()
        prop = conn.execute(
            "insert into observed_property (name, definition) values ('pm25', 'x:pm25')"
            " returning id"
        ).fetchone()
        foi = conn.execute(
            "insert into feature_of_interest (name, feature)"
            " values ('site', ST_SetSRID(ST_MakePoint(7.0, 50.9), 4326)) returning id"
        ).fetchone()
        assert sensor and prop and foi
        for k in range(14):
            props = None if rng.random() < 0.4 else {"k": k, "tags": ["a", "b"][: rng.randrange(3)]}
            thing = conn.execute(
                "insert into thing (name, description, properties) values (%s, %s, %s)"
                " returning id",
                (f"thing {k}", f"d{k}", None if props is None else Jsonb(props)),
            ).fetchone()
            loc = conn.execute(
                "insert into location (name, location) values (%s,"
                " ST_SetSRID(ST_MakePoint(%s, %s), 4326)) returning id",
                # every third Thing inside the polygon of the geo $filter
                (f"loc {k}", *((6.9, 50.9) if k % 3 == 0 else (7.1, 51.0))),
            ).fetchone()
            assert thing and loc
            made["things"].append(thing[0])
            conn.execute("insert into thing_location values (%s, %s)", (thing[0], loc[0]))
            for j in range(0 if k % 5 == 0 else rng.randrange(1, 5)):
                unit = rng.choice(
                    [
                        {"name": "µg/m³", "symbol": "µg/m³", "definition": "ucum:ug/m3"},
                        {"name": "x"},
                    ]
                )
                area = (
                    "ST_GeomFromText('POLYGON((6.9 50.9, 7 50.9, 7 51, 6.9 50.9))', 4326)"
                    if rng.random() < 0.3
                    else "null"
                )
                ds = conn.execute(
                    "insert into datastream (name, unit_of_measurement, thing_id, sensor_id,"
                    f" observed_property_id, properties, observed_area) values (%s, %s, %s, %s,"
                    f" %s, %s, {area}) returning id",
                    (
                        f"thing {k} ds {j}",
                        Jsonb(unit),
                        thing[0],
                        sensor[0],
                        prop[0],
                        None if rng.random() < 0.5 else Jsonb({"j": j}),
                    ),
                ).fetchone()
                assert ds
                made["datastreams"].append(ds[0])
                n = rng.choice([0, 1, 2, rng.randrange(3, 60)])
                times = {_random_time(rng) for _ in range(n)}
                if times:
                    made["with_obs"].append(ds[0])
                if len(times) >= 3:
                    made["many"].append(ds[0])
                for t in sorted(times):
                    structured = rng.random() < 0.2
                    conn.execute(
                        "insert into observation (datastream_id, phenomenon_time, result,"
                        " result_json, result_time, parameters, foi_id)"
                        " values (%s, %s, %s, %s, %s, %s, %s)",
                        (
                            ds[0],
                            t,
                            None if structured else round(rng.uniform(-5, 80), 3),
                            Jsonb({"v": [1, 2]}) if structured else None,
                            t + timedelta(seconds=5) if rng.random() < 0.3 else None,
                            Jsonb({"q": "ok"}) if rng.random() < 0.2 else None,
                            foi[0] if rng.random() < 0.3 else None,
                        ),
                    )
        timeseries.rebuild_latest(conn)
        rollups.rebuild(conn, START, END)
    return made


def _staleness(url: str, many: list[int]) -> dict[str, int]:
    """Make the span hints of four Datastreams wrong the ways they can be, past the ingest
    writer: the newest observation deleted (observation_latest names a gone row), a newer one
    added (it names an old row), an older one added before the first rollup day, and the
    whole first rollup day's observations deleted. Returns which Datastream got which."""
    a, b, c, d = many[:4]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "delete from observation where (datastream_id, phenomenon_time) ="
            " (select datastream_id, phenomenon_time from observation_latest"
            "  where datastream_id = %s)",
            (a,),
        )
        conn.execute(
            "insert into observation (datastream_id, phenomenon_time, result) values (%s, %s, 1.5)",
            (b, END + timedelta(days=3)),  # beyond every partition: the default one
        )
        conn.execute(
            "insert into observation (datastream_id, phenomenon_time, result) values (%s, %s, 2.5)",
            (c, START - timedelta(days=20)),
        )
        conn.execute(
            "delete from observation o using (select min(bucket) as b from observation_1d"
            "  where datastream_id = %s) f where o.datastream_id = %s"
            " and o.phenomenon_time >= f.b and o.phenomenon_time < f.b + interval '1 day'",
            (d, d),
        )
    return {"latest_gone": a, "latest_behind": b, "older_than_rollups": c, "first_day_gone": d}


@pytest.fixture
def world(settings: Settings) -> dict[str, Any]:
    made = _fill(settings.require_database_url(), seed=13)
    made["stale"] = _staleness(settings.require_database_url(), made["many"])
    return made


@pytest.fixture
def client(settings: Settings, world: dict[str, Any]) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


class _Spy:
    """Counts the fast path's renderings (the calls of ``_Renderer.bodies``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = sta_expand_latest._Renderer.bodies

        def bodies(renderer: Any, *args: Any) -> Any:
            self.calls += 1
            return original(renderer, *args)

        monkeypatch.setattr(sta_expand_latest._Renderer, "bodies", bodies)


def _both(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, path: str, params: dict[str, str]
) -> tuple[Any, Any]:
    """The body of ``path`` answered as shipped, and by the general path alone."""
    fast = client.get(path, params=params)
    with monkeypatch.context() as m:
        m.setattr(sta_expand_latest, "render", lambda *a, **k: None)
        general = client.get(path, params=params)
    assert fast.status_code == general.status_code == 200, (fast.text[:300], general.text[:300])
    return fast.json(), general.json()


def _shapes(world: dict[str, Any], rng: random.Random) -> list[tuple[str, dict[str, str]]]:
    thing, ds = world["things"][1], world["with_obs"][0]
    polygon = f"st_within(Locations/location, geography'{POLYGON}')"
    shapes: list[tuple[str, dict[str, str]]] = [
        ("/v1.1/Things", {"$expand": LATEST}),
        ("/v1.1/Things", {"$expand": LATEST, "$filter": polygon}),
        ("/v1.1/Things", {"$expand": LATEST, "$top": "5"}),
        ("/v1.1/Things", {"$expand": "Datastreams/Observations($top=1;$orderby=phenomenonTime)"}),
        ("/v1.1/Things", {"$expand": "Datastreams/Observations($top=1)"}),
        ("/v1.1/Things", {"$expand": "Datastreams/Observations($top=0)"}),
        ("/v1.1/Things", {"$expand": "Datastreams/Observations"}),
        ("/v1.1/Things", {"$expand": "Datastreams"}),
        ("/v1.1/Things", {"$expand": "Datastreams($top=1)"}),
        (
            "/v1.1/Things",
            {
                "$expand": "Datastreams($top=2;$skip=1;"
                "$expand=Observations($top=1;$orderby=phenomenonTime desc))"
            },
        ),
        (
            "/v1.1/Things",
            {
                "$expand": "Datastreams($select=name,phenomenonTime,unitOfMeasurement;"
                "$expand=Observations($select=result,phenomenonTime;$top=2))"
            },
        ),
        (
            "/v1.1/Things",
            {"$select": "id,name,properties/k", "$expand": LATEST + ",Datastreams($select=id)"},
        ),
        ("/v1.1/Datastreams", {"$expand": "Observations($top=1;$orderby=phenomenonTime desc)"}),
        ("/v1.1/Datastreams", {"$expand": "Observations($top=4;$orderby=phenomenonTime asc)"}),
        (
            "/v1.1/Datastreams",
            {"$expand": "Observations($top=1)", "$select": "name,phenomenonTime"},
        ),
        (f"/v1.1/Things({thing})", {"$expand": LATEST}),
        (
            f"/v1.1/Datastreams({ds})",
            {"$expand": "Observations($top=1;$orderby=phenomenonTime desc)"},
        ),
        ("/v1.1/Things", {"$expand": LATEST, "$resultFormat": "CSV"}),
    ]
    for _ in range(10):  # random sizes and directions
        top = rng.choice([1, 1, 2, 3, 7, 100])
        order = rng.choice(["", ";$orderby=phenomenonTime asc", ";$orderby=phenomenonTime desc"])
        select = rng.choice(["", ";$select=id,result", ";$select=phenomenonTime,parameters"])
        inner = f"Observations($top={top}{order}{select})"
        outer = rng.choice([f"Datastreams/{inner}", f"Datastreams($top=2;$expand={inner})"])
        shapes.append(("/v1.1/Things", {"$expand": outer, "$top": str(rng.choice([3, 20]))}))
    return shapes


def test_fast_path_answers_as_the_general_path(
    client: TestClient, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(monkeypatch)
    for path, params in _shapes(world, random.Random(5)):
        entity_set = path.split("/")[2].split("(")[0]
        assert sta_expand_latest.handles(entity_set, parse_query_options(params)), params
        before = spy.calls
        if params.get("$resultFormat") == "CSV":
            fast = client.get(path, params=params)
            with monkeypatch.context() as m:
                m.setattr(sta_expand_latest, "render", lambda *a, **k: None)
                general = client.get(path, params=params)
            assert fast.status_code == 200 and fast.text == general.text
        else:
            fast_body, general_body = _both(client, monkeypatch, path, params)
            assert fast_body == general_body, params
            # member order too (the JSON the clients see), not only equal dicts
            assert repr(fast_body) == repr(general_body), params
        assert spy.calls > before, f"the fast path did not answer {params}"


def test_the_data_has_what_the_fast_path_must_get_right(
    client: TestClient, world: dict[str, Any]
) -> None:
    """The comparison above is only worth its data: Things without Datastreams, Datastreams
    without Observations and with exactly one, next links inside expansions, and a polygon that
    selects some Things but not all."""
    things = client.get("/v1.1/Things", params={"$expand": LATEST}).json()["value"]
    assert any(t["Datastreams"] == [] for t in things)
    datastreams = [d for t in things for d in t["Datastreams"]]
    assert any(d["Observations"] == [] and d["phenomenonTime"] is None for d in datastreams)
    assert any(
        len(d["Observations"]) == 1 and "Observations@iot.nextLink" not in d for d in datastreams
    )
    assert any("Observations@iot.nextLink" in d for d in datastreams)
    polygon = f"st_within(Locations/location, geography'{POLYGON}')"
    inside = client.get("/v1.1/Things", params={"$expand": LATEST, "$filter": polygon}).json()
    assert 0 < len(inside["value"]) < len(things)


#: (path, options, whether a deeper level is one the fast path handles: the general path
#: renders Things with their Locations, then hands the Datastreams' level to ``render``)
FALLBACK = [
    ("/v1.1/Things", {"$expand": "Datastreams($filter=name eq 'thing 1 ds 0')"}, False),
    ("/v1.1/Things", {"$expand": "Datastreams($count=true)"}, False),
    ("/v1.1/Things", {"$expand": "Datastreams($orderby=name desc)"}, False),
    ("/v1.1/Things", {"$expand": "Datastreams/Observations($filter=result gt 3;$top=1)"}, False),
    ("/v1.1/Things", {"$expand": "Datastreams/Observations($orderby=result desc;$top=1)"}, False),
    ("/v1.1/Things", {"$expand": "Datastreams/Observations($count=true;$top=1)"}, False),
    ("/v1.1/Things", {"$expand": "Datastreams/Observations($skip=1;$top=1)"}, False),
    ("/v1.1/Things", {"$expand": "Datastreams/Observations/FeatureOfInterest"}, False),
    ("/v1.1/Things", {"$expand": "Locations"}, False),
    ("/v1.1/Things", {"$expand": "Datastreams/Sensor"}, False),
    ("/v1.1/Sensors", {"$expand": "Datastreams/Observations($top=1)"}, True),
    ("/v1.1/Things", {"$select": "name"}, False),
    ("/v1.1/Things", {"$expand": LATEST + ",Locations"}, True),
    ("/v1.1/Things", {"$expand": LATEST, "$resultFormat": "GeoJSON"}, True),
]


def test_other_shapes_take_the_general_path(
    client: TestClient, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(monkeypatch)
    for path, params, deeper in FALLBACK:
        entity_set = path.split("/")[2].split("(")[0]
        if params.get("$resultFormat") != "GeoJSON":  # GeoJSON adds the Locations expand
            assert not sta_expand_latest.handles(entity_set, parse_query_options(params)), params
        before = spy.calls
        fast = client.get(path, params=params)
        assert (spy.calls > before) == deeper, params
        with monkeypatch.context() as m:
            m.setattr(sta_expand_latest, "render", lambda *a, **k: None)
            general = client.get(path, params=params)
        assert fast.status_code == general.status_code == 200, (params, fast.text[:300])
        assert fast.content == general.content, params


def test_spans_are_exact_when_their_hints_are_stale(
    settings: Settings, world: dict[str, Any]
) -> None:
    url = settings.require_database_url()
    stale = world["stale"]
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        truth = {
            r["id"]: (r["t_min"], r["t_max"])
            for r in conn.execute(
                "select d.id, min(o.phenomenon_time) as t_min, max(o.phenomenon_time) as t_max"
                " from datastream d left join observation o on o.datastream_id = d.id"
                " group by d.id"
            ).fetchall()
        }
        hints = {
            r["id"]: (r["lo_day"], r["hi"])
            for r in conn.execute(
                "select d.id, (select min(bucket) from observation_1d r"
                "  where r.datastream_id = d.id) as lo_day,"
                " (select phenomenon_time from observation_latest l"
                "  where l.datastream_id = d.id) as hi from datastream d"
            ).fetchall()
        }
        # the faults happened: each of the four hints is wrong
        assert hints[stale["latest_gone"]][1] > truth[stale["latest_gone"]][1]
        assert hints[stale["latest_behind"]][1] < truth[stale["latest_behind"]][1]
        assert hints[stale["older_than_rollups"]][0] > truth[stale["older_than_rollups"]][0]
        first_day_gone = stale["first_day_gone"]
        assert truth[first_day_gone][0] is None or (
            hints[first_day_gone][0] + timedelta(days=1) <= truth[first_day_gone][0]
        )
        for timescaledb in (False, True):
            got = qx.spans(conn, list(truth), timescaledb)
            assert {k: (v["t_min"], v["t_max"]) for k, v in got.items()} == truth
        assert qx.spans(conn, []) == {}
        # with the observation at either end: the one the general path's LATERAL finds
        for end, order in (("last", "desc"), ("first", "asc")):
            got = qx.spans(conn, list(truth), end=end)
            for ds, span in got.items():
                row = conn.execute(
                    "select * from observation where datastream_id = %s"
                    f" order by phenomenon_time {order} limit 1",
                    (ds,),
                ).fetchone()
                if row is None:
                    assert span["phenomenon_time"] is None and span["result"] is None
                else:
                    assert {k: span[k] for k in row} == row
