"""Indicators computed from a real store, manual values, the geo adapter and stored evaluations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from store_fixtures import insert_filled, station

from quartier.errors import BadRequestError, NotFoundError
from quartier.evaluation import compute, manual, storage
from quartier.evaluation.evaluate import evaluate
from quartier.evaluation.strategy import parse_strategy
from quartier.geo.io import import_districts

pytestmark = pytest.mark.services

AS_OF = datetime(2026, 3, 10, 12, tzinfo=UTC)
INNENSTADT = (6.9583, 50.9413)  # Stadtbezirk 1
MUELHEIM = (7.0064, 50.9626)  # Stadtbezirk 9


# the 15-minute buckets the rows touch, marked as the ingest writer marks them (the rollups read
# them from raw rows until they are refreshed)
_MARK = (
    "insert into observation_dirty (datastream_id, bucket)"
    " select distinct datastream_id, date_bin('15 minutes', phenomenon_time,"
    " timestamptz '2000-01-03') from observation on conflict do nothing"
)


def observe(conn, ds: int, start: datetime, values: list[float], step=timedelta(hours=1)) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "insert into observation (datastream_id, phenomenon_time, result) values (%s, %s, %s)",
            [(ds, start + i * step, v) for i, v in enumerate(values)],
        )
    conn.execute(_MARK)


def local_day(day: int) -> datetime:
    return datetime(2026, 3, day, tzinfo=UTC) - timedelta(hours=1)  # local midnight (CET)


@pytest.fixture
def conn(db_url: str):
    with psycopg.connect(db_url, autocommit=True) as c:
        import_districts(c)
        yield c


def _values(comp, indicator: str) -> dict[str, float | None]:
    return {
        v.scope_code: v.value for v in comp.values if v.indicator_id == indicator and not v.variant
    }


def test_environment_indicators_from_the_store(conn) -> None:
    a = station(conn, "a", INNENSTADT, "pm10")
    b = station(conn, "b", MUELHEIM, "pm10")
    noise = station(conn, "n", INNENSTADT, "noise_laeq")
    observe(conn, a, local_day(2), [60.0] * 24)  # over 50
    observe(conn, a, local_day(3), [20.0] * 24)  # station a: (60 + 20) / 2 = 40
    observe(conn, b, local_day(2), [30.0] * 24)  # station b: 30
    # every 30 minutes 50 dB: hourly energetic mean 50, Lden 56.39 > 55
    observe(conn, noise, local_day(4), [50.0] * 48, step=timedelta(minutes=30))

    wanted = ["pm10_annual_mean", "pm10_days_over_50", "noise_lden_over_55_share"]
    wanted.append("no2_annual_mean")
    comp = compute.compute(conn, AS_OF, wanted)
    annual = _values(comp, "pm10_annual_mean")
    assert annual["05315000"] == pytest.approx(35.0)
    assert annual["1"] == pytest.approx(40.0) and annual["9"] == pytest.approx(30.0)
    assert annual["2"] is None
    days = _values(comp, "pm10_days_over_50")
    assert days["05315000"] == 1.0 and days["9"] == 0.0
    assert _values(comp, "noise_lden_over_55_share")["1"] == 100.0
    assert comp.notes["no2_annual_mean"].startswith("no data")
    v = next(
        v for v in comp.values if v.indicator_id == "pm10_annual_mean" and v.scope_type == "city"
    )
    assert v.scope_name == "Köln"
    assert v.period_start == datetime(2025, 12, 31, 23, tzinfo=UTC)  # 1 Jan, local midnight
    assert v.period_end == AS_OF
    assert v.provenance["readings_used"] == 72
    assert v.provenance["data_from"] == "2026-03-01T23:00:00+00:00"
    assert v.provenance["data_to"] == "2026-03-03T22:00:00+00:00"
    assert v.provenance["station_days"] == 3


def test_sensor_network_indicators_from_the_store(conn) -> None:
    # t1: every 10 min over the last 24 h with 12 gaps -> 132 of 144; t2: hourly, silent for 3 h
    t1 = station(conn, "t1", INNENSTADT, "temperature")
    t2 = station(conn, "t2", MUELHEIM, "temperature", interval_s=3600)
    start = AS_OF - timedelta(hours=24)
    observe(conn, t1, start - timedelta(days=1), [1.0] * 144, step=timedelta(minutes=10))
    observe(conn, t1, start + timedelta(hours=2), [1.0] * 132, step=timedelta(minutes=10))
    observe(conn, t2, start, [1.0] * 21)  # 21 of 24, last at AS_OF - 4 h
    station(conn, "silent", MUELHEIM, "humidity")  # never reported
    comp = compute.compute(conn, AS_OF, ["sensor_availability", "sensor_stale_count",
                                         "sensor_data_freshness"])  # fmt: skip
    avail = {v.scope_code: v for v in comp.values if v.indicator_id == "sensor_availability"}
    assert (avail["05315000"].numerator, avail["05315000"].denominator) == (153, 168)
    assert avail["1"].value == pytest.approx(100 * 132 / 144)
    stale = _values(comp, "sensor_stale_count")
    assert stale["05315000"] == 2 and stale["1"] == 0 and stale["9"] == 2
    fresh = _values(comp, "sensor_data_freshness")
    # t1 last reading: start + 2 h + 131 * 10 min = AS_OF - 10 min; t2: AS_OF - 4 h
    assert fresh["1"] == pytest.approx(10.0)
    assert fresh["05315000"] == pytest.approx((10 + 240) / 2)


def test_manual_values_via_csv(conn, tmp_path: Path) -> None:
    good = tmp_path / "ozg.csv"
    good.write_text(
        "indicator,date,value,source,scope_type,scope_code,note\n"
        "ozg_services_online_share,2024-12-31,45,OZG-Dashboard,,,\n"
        "ozg_services_online_share,2025-12-31,61.5,OZG-Dashboard,,,Stand Q4\n"
        "digital_skills_participants,2025-12-31,800,VHS Köln,stadtbezirk,9,\n"
    )
    assert manual.import_csv(conn, good) == 3
    assert manual.import_csv(conn, good) == 3  # the same rows again replace, not duplicate
    hist = storage.history(conn, "ozg_services_online_share")
    assert [(v.value, v.scope_code, v.source) for v in hist] == [
        (45.0, "05315000", "OZG-Dashboard"), (61.5, "05315000", "OZG-Dashboard")
    ]  # fmt: skip
    assert hist[1].provenance == {"origin": "manual", "source": "OZG-Dashboard", "note": "Stand Q4"}
    skills = storage.history(conn, "digital_skills_participants", scope_code="9")
    assert skills[0].scope_name == "Mülheim"

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "indicator,date,value,source\n"
        "ozg_services_online_share,2025-13-01,5,x\n"
        "pm10_annual_mean,2025-12-31,20,x\n"
        "ozg_services_online_share,2025-12-31,zwölf,x\n"
        "ozg_services_online_share,2025-12-31,12,\n"
    )
    with pytest.raises(BadRequestError) as err:
        manual.import_csv(conn, bad)
    text = str(err.value)
    assert f"{bad}:2: not an ISO 8601 date" in text
    assert f"{bad}:3: indicator pm10_annual_mean is computed" in text
    assert f"{bad}:4: value: not a number" in text
    assert f"{bad}:5: a manual value needs its source" in text
    with pytest.raises(BadRequestError, match="missing columns source"):
        manual.parse_csv("indicator,date,value\n", recorded_at=AS_OF)
    with pytest.raises(NotFoundError):
        storage.manual_value("nope", 1, AS_OF, "x", recorded_at=AS_OF)


def test_broadband_and_mobile_from_the_coverage_tables(conn) -> None:
    comp = compute.compute(conn, AS_OF, ["bb_households_1000", "mobile_5g_area_share"])
    assert comp.values == []
    assert comp.notes["bb_households_1000"].startswith("no data:")
    if conn.execute("select to_regclass('coverage_cell')").fetchone() == (None,):
        pytest.skip("the geo part's coverage tables are not migrated here")
    run = conn.execute(
        "insert into coverage_run (profile, parameters, inputs, classes, operators, technologies)"
        " values ('de', '{}', '{}', '{}', '{A,B}', '{2G,3G,4G,5G}') returning id"
    ).fetchone()[0]
    # mobile_mask bit i * 4 + j: operator i, technology j; A 4G + 5G, B 4G = 4 + 8 + 64
    cells = [  # e, n, district, households, best technology, max down, class, mask, dead
        (0, 0, "1", 30, "ftth", 1000, "gigabit", 76, False),
        (100, 0, "1", 10, "vdsl", 50, "grey", 64, False),  # B 4G
        (200, 0, "9", 60, "hfc", 1000, "gigabit", 0, True),
        (300, 0, "9", 0, None, None, None, 0, False),  # no households, no measurements
    ]
    keys = ("e", "n", "district_code", "households", "best_technology", "max_down_mbps",
            "class_key", "mobile_mask", "dead_zone")  # fmt: skip
    insert_filled(
        conn,
        "coverage_cell",
        [
            {"run_id": run, **dict(zip(keys, c, strict=True)), "n_signal": 0 if c[0] == 300 else 5}
            for c in cells
        ],
    )
    comp = compute.compute(
        conn, AS_OF, ["bb_households_1000", "bb_households_fibre", "bb_households_grey",
                      "mobile_5g_area_share", "mobile_dead_zone_area"],
    )  # fmt: skip
    assert _values(comp, "bb_households_1000")["05315000"] == pytest.approx(90.0)  # 90 of 100
    assert _values(comp, "bb_households_fibre")["1"] == pytest.approx(75.0)  # 30 of 40
    assert _values(comp, "bb_households_grey")["1"] == pytest.approx(25.0)
    assert _values(comp, "mobile_5g_area_share")["05315000"] == pytest.approx(100 / 3)
    five = {(v.scope_code, v.variant): v.value for v in comp.values
            if v.indicator_id == "mobile_5g_area_share"}  # fmt: skip
    assert five[("05315000", "operator:A")] == pytest.approx(100 / 3)
    assert five[("05315000", "operator:B")] == 0.0
    assert _values(comp, "mobile_dead_zone_area")["9"] == pytest.approx(0.01)  # km²
    v = next(v for v in comp.values if v.indicator_id == "bb_households_1000")
    assert v.provenance["coverage_run"] == run


STRATEGY = """
id: test-strategy
title: Test
city: Köln
vision: Besser werden.
fields_of_action:
  - id: foa
    name: Smart City
    goals:
      - id: air
        title: Saubere Luft
        kpis:
          - id: pm10
            indicator: pm10_annual_mean
            baseline: {value: 50, date: 2025-01-01}
            target: 20
            deadline: 2030-01-01
            breakdown: stadtbezirk
          - id: ozg
            indicator: ozg_services_online_share
            baseline: {value: 30, date: 2024-01-01}
            target: 95
            deadline: 2027-01-01
          - id: skills
            indicator: digital_skills_participants
            baseline: {value: 100, date: 2024-01-01}
            target: 1000
            deadline: 2027-01-01
        measures:
          - id: m1
            title: Sensoren
            owner: Umweltamt
            start: 2024-01-01
            end: 2025-01-01
            status: completed
"""


def test_evaluate_stores_runs_and_shows_changes(conn) -> None:
    strategy = parse_strategy(STRATEGY)
    a = station(conn, "a", INNENSTADT, "pm10")
    observe(conn, a, local_day(2), [35.0] * 24)
    conn.execute(
        "insert into indicator_value (indicator_id, scope_type, scope_code, period_end, value,"
        " unit, origin, source, computed_at) values"
        " ('ozg_services_online_share', 'city', '05315000', '2025-01-01', 50, '%', 'manual',"
        " 'OZG-Dashboard', now())"
    )
    first = evaluate(conn, strategy, AS_OF)
    by = {(r.kpi_id, r.scope_code): r for r in first.results}
    pm10 = by[("pm10", "05315000")]
    # baseline 50 (2025-01-01), now 35 (2026-03-10): half of the way in 23 % of the time;
    # the line through both reaches 20 µg/m³ well before 2030
    assert pm10.current == pytest.approx(35.0) and pm10.status == "on_track"
    assert pm10.progress == pytest.approx(0.5)
    assert pm10.points_used == 2 and pm10.projected is not None and pm10.projected < 20
    assert by[("pm10", "1")].status == "on_track" and by[("pm10", "1")].breakdown
    assert by[("pm10", "2")].status == "no_data"
    ozg = by[("ozg", "05315000")]
    # 30 -> 50 in 2024 (366 days): 19.96 a year, 89.9 on 2027-01-01 (1096 days after the
    # baseline), 59.9 / 65 = 92 % of the way: missed narrowly, at risk
    assert ozg.status == "at_risk" and ozg.current == 50.0
    assert ozg.history[0].origin == "manual" and ozg.history[0].source == "OZG-Dashboard"
    skills = next(r for r in first.results if r.kpi_id == "skills")
    assert skills.status == "no_data" and "no value recorded" in (skills.note or "")
    assert first.summary == {"on_track": 1, "at_risk": 1, "off_track": 0, "no_data": 1, "kpis": 3}
    assert first.run_id is not None and first.previous_run_id is None

    # more data arrives: station a's year mean rises to (35 + 95) / 2 = 65, above the baseline;
    # the trend through 50, 35, 65 is flat (no progress projected), but three points leave a wide
    # band (t = 6.314 with one degree of freedom) whose lower edge reaches 20: at risk
    observe(conn, a, local_day(3), [95.0] * 24)
    second = evaluate(conn, strategy, AS_OF + timedelta(days=1))
    pm10 = next(r for r in second.results if r.kpi_id == "pm10" and r.scope_type == "city")
    assert pm10.current == pytest.approx(65.0) and pm10.points_used == 3
    assert pm10.projected_low is not None and pm10.projected_low <= 20
    assert pm10.status == "at_risk" and pm10.previous_status == "on_track"
    assert second.previous_run_id == first.run_id
    runs = storage.list_runs(conn)
    assert [r["id"] for r in runs] == [second.run_id, first.run_id]
    stored = storage.get_run(conn)
    assert stored["id"] == second.run_id and stored["strategy"]["id"] == "test-strategy"
    assert len(stored["results"]) == len(second.results)
    # stored indicator history: one computed city value per evaluation date
    hist = storage.history(conn, "pm10_annual_mean", scope_type="city")
    assert [v.value for v in hist] == [pytest.approx(35.0), pytest.approx(65.0)]
