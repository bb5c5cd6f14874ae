"""Environment indicators from the rollups, computed in PostgreSQL (issue #14 item 1): the same
values as the clear path (raw rows, pandas), including partial hours and days at the window's
edges and buckets still waiting for the rollup refresh; the evaluation reads the stored values;
the scheduled refresh (``quartier indicators refresh --every``)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from store_fixtures import station

from quartier.evaluation import compute, current, environment, sources, storage
from quartier.evaluation.evaluate import evaluate
from quartier.evaluation.indicators import CATALOGUE
from quartier.evaluation.strategy import parse_strategy
from quartier.geo.io import import_districts
from quartier.store import rollups
from quartier.store.migrate import storage_path

pytestmark = pytest.mark.services

AS_OF = datetime(2026, 1, 4, 9, 47, tzinfo=UTC)  # 10:47 local: a partial hour and day at the end
DATA_FROM = datetime(2025, 12, 30, 21, 13, tzinfo=UTC)
INNENSTADT = (6.9583, 50.9413)  # Stadtbezirk 1
MUELHEIM = (7.0064, 50.9626)  # Stadtbezirk 9
TZ = environment.LOCAL_TZ
ENVIRONMENT = [d.id for d in CATALOGUE.values() if d.family == "environment"]


@pytest.fixture
def conn(db_url: str):
    with psycopg.connect(db_url, autocommit=True) as c:
        if storage_path(c) == "timescaledb":
            pytest.skip("the plain path's rollup tables and dirty marks are tested here")
        import_districts(c)
        yield c


def _observe(conn, ds: int, base: float, *, skip_hours: range = range(0)) -> None:
    """Readings every 7 minutes from DATA_FROM to AS_OF (+ 1 h after it), with the hours
    ``skip_hours`` (counted from DATA_FROM) left out: days with fewer than 18 hours."""
    step = timedelta(minutes=7)
    n = int((AS_OF + timedelta(hours=1) - DATA_FROM) / step)
    rows = []
    for i in range(n):
        t = DATA_FROM + i * step
        if int((t - DATA_FROM) / timedelta(hours=1)) in skip_hours:
            continue
        rows.append((ds, t, base + (i * 7919 % 23) * 0.37 + (i % 11) * 0.013))
    with conn.cursor() as cur:
        cur.executemany(
            "insert into observation (datastream_id, phenomenon_time, result) values (%s, %s, %s)",
            rows,
        )


def _fleet(conn) -> dict[str, int]:
    ids = {
        "a": station(conn, "a", INNENSTADT, "pm10"),
        "b": station(conn, "b", MUELHEIM, "pm10"),
        "c": station(conn, "c", INNENSTADT, "pm25"),
        "d": station(conn, "d", MUELHEIM, "no2"),
        "n1": station(conn, "n1", INNENSTADT, "noise_laeq"),
        "n2": station(conn, "n2", MUELHEIM, "noise_laeq"),
    }
    _observe(conn, ids["a"], 38.0)
    _observe(conn, ids["b"], 47.0, skip_hours=range(30, 38))  # 31 Dec: 16 hours, not valid
    _observe(conn, ids["c"], 11.0, skip_hours=range(60, 61))
    _observe(conn, ids["d"], 30.0)
    _observe(conn, ids["n1"], 52.0)
    _observe(conn, ids["n2"], 61.0, skip_hours=range(5, 9))
    # rollups up to 3 Jan; from then on the buckets wait (dirty), as after ingest
    split = datetime(2026, 1, 3, tzinfo=UTC)
    rollups.rebuild(conn, DATA_FROM - timedelta(days=1), split)
    conn.execute(
        "insert into observation_dirty (datastream_id, bucket)"
        " select distinct datastream_id, date_bin('15 minutes', phenomenon_time,"
        " timestamptz '2000-01-03') from observation where phenomenon_time >= %s"
        " on conflict do nothing",
        (split,),
    )
    return ids


def _days(frame) -> dict[tuple[int, object], tuple[float, int]]:
    return {
        (int(r.datastream_id), r.day): (float(r.mean), int(r.hours))
        for r in frame.itertuples(index=False)
    }


@pytest.mark.parametrize(
    ("start", "end"),
    [
        # both edges inside an hour and inside a local day
        (datetime(2025, 12, 31, 3, 22, tzinfo=UTC), AS_OF),
        # edges on the hour; the first local day starts at 23:00 UTC
        (datetime(2025, 12, 31, 23, tzinfo=UTC), datetime(2026, 1, 4, 6, tzinfo=UTC)),
        # the whole data and more: the first day is partial because the data starts late
        (datetime(2025, 12, 1, tzinfo=UTC), AS_OF + timedelta(days=2)),
    ],
)
def test_daily_means_in_sql_equal_the_raw_path(conn, start: datetime, end: datetime) -> None:
    _fleet(conn)
    for q in ("pm10", "pm25", "no2"):
        hourly, stations_raw, _ = sources.load_hourly(conn, q, start, end)
        expected = environment.daily_means(hourly, start, end)
        daily, stations, prov = sources.load_daily_rollup(conn, q, start, end, tz=TZ)
        got = environment.valid_days(daily)
        assert prov["source"] == "observation_1h"
        assert stations.equals(stations_raw)
        want, have = _days(expected), _days(got)
        assert set(have) == set(want) and want, q
        for k, (mean, hours) in want.items():
            assert have[k][1] == hours
            assert have[k][0] == pytest.approx(mean, rel=1e-12), k
        # the invalid days are there too (with their hours), only filtered out by the rule
        assert len(daily) >= len(got)


def test_edge_days_count_only_their_hours_in_the_window(conn) -> None:
    ids = _fleet(conn)
    # from 10:22 local on 31 Dec: the hour 10-11 started before the window (left out), 13
    # hours start in it
    start = datetime(2025, 12, 31, 9, 22, tzinfo=UTC)
    daily, _, _ = sources.load_daily_rollup(conn, "pm10", start, AS_OF, tz=TZ)
    first = daily[(daily["datastream_id"] == ids["a"])].iloc[0]
    assert str(first["day"]) == "2025-12-31" and int(first["hours"]) == 13
    assert first["day"] not in set(environment.valid_days(daily)["day"])  # 13 < 18 hours
    # 4 Jan until 10:47 local: 10 whole hours and the hour 10-11 with its readings so far
    last = daily[(daily["datastream_id"] == ids["a"])].iloc[-1]
    assert str(last["day"]) == "2026-01-04" and int(last["hours"]) == 11
    # the same counts on the clear path
    hourly, _, _ = sources.load_hourly(conn, "pm10", start, AS_OF)
    raw = environment.daily_means(hourly, start, AS_OF, min_hours=0)
    raw_a = raw[raw["datastream_id"] == ids["a"]]
    assert [int(raw_a.iloc[0]["hours"]), int(raw_a.iloc[-1]["hours"])] == [13, 11]


def test_noise_levels_in_sql_equal_the_raw_path(conn) -> None:
    _fleet(conn)
    start = datetime(2025, 12, 31, 3, 22, tzinfo=UTC)
    hourly, _, _ = sources.load_hourly(conn, "noise_laeq", start, AS_OF, energetic=True)
    expected = environment.lden(hourly, start, AS_OF)
    periods, _, _ = sources.load_noise_periods(conn, "noise_laeq", start, AS_OF, tz=TZ)
    got = environment.lden_of_periods(periods)
    assert len(expected) == 2
    assert list(got.index) == list(expected.index)
    assert got.to_numpy() == pytest.approx(expected.to_numpy(), rel=1e-12)


def test_every_environment_indicator_equal_on_both_paths(conn) -> None:
    _fleet(conn)
    raw = compute.compute(conn, AS_OF, ENVIRONMENT, hourly_from="raw")
    sql = compute.compute(conn, AS_OF, ENVIRONMENT, hourly_from="rollup")
    assert raw.notes == sql.notes
    key = lambda v: (v.indicator_id, v.scope_type, v.scope_code, v.variant)  # noqa: E731
    a, b = {key(v): v for v in raw.values}, {key(v): v for v in sql.values}
    assert set(a) == set(b)
    assert {k[0] for k in a} == set(ENVIRONMENT)
    for k, v in a.items():
        for f in ("value", "numerator", "denominator"):
            x, y = getattr(v, f), getattr(b[k], f)
            assert (x is None and y is None) or x == pytest.approx(y, rel=1e-12), (k, f)
        assert (v.period_start, v.period_end) == (b[k].period_start, b[k].period_end)
    # station b's invalid day and the dirty days changed nothing; the rollups brought up to
    # date change nothing either
    rollups.refresh_all(conn)
    again = compute.compute(conn, AS_OF, ENVIRONMENT, hourly_from="rollup")
    for v in again.values:
        x = a[key(v)].value
        assert (v.value is None and x is None) or v.value == pytest.approx(x, rel=1e-12)


STRATEGY = """
id: test
title: Test
city: Köln
vision: Saubere Luft.
fields_of_action:
  - id: env
    name: Umwelt
    goals:
      - id: air
        title: Saubere Luft
        kpis:
          - id: pm10
            indicator: pm10_annual_mean
            baseline: {value: 40, date: 2025-01-01}
            target: 20
            deadline: 2030-12-31
        measures:
          - id: m1
            title: Sensoren
            owner: Umweltamt
            start: 2024-01-01
            end: 2025-01-01
            status: completed
"""


def test_evaluation_reads_the_stored_values(conn) -> None:
    ids = _fleet(conn)
    now = datetime.now(UTC)
    stored = current.refresh_indicators(conn, now, ["pm10_annual_mean"], trigger="test")
    city = next(v for v in stored.values if v.scope_type == "city")
    # a reading after the refresh: a recompute would see it, the stored value does not
    conn.execute(
        "insert into observation (datastream_id, phenomenon_time, result) values (%s, %s, 999)",
        (ids["a"], datetime(2026, 1, 2, 12, 0, 30, tzinfo=UTC)),  # into a valid day of 2026
    )
    conn.execute(  # marked as the ingest writer marks it
        "insert into observation_dirty (datastream_id, bucket) values (%s, '2026-01-02 12:00Z')",
        (ids["a"],),
    )
    strategy = parse_strategy(STRATEGY)
    ev = evaluate(conn, strategy, now + timedelta(seconds=5))
    result = next(r for r in ev.results if r.scope_type == "city")
    assert result.current == pytest.approx(city.value)
    assert result.provenance["computed_at"] == stored.computed_at
    hist = storage.history(conn, "pm10_annual_mean", scope_type="city")
    assert [v.value for v in hist] == [pytest.approx(city.value)]

    # an evaluation of a past date computes as of that date and leaves the current values alone
    past = now - timedelta(days=2)
    values, _, how = current.values_as_of(conn, ["pm10_annual_mean"], past)
    assert how == "computed"
    assert all(v.period_end == past for v in values)
    assert current.read_current(conn, ["pm10_annual_mean"]) == stored

    # stored values older than max_age are refreshed first (and serve /indicators then)
    time.sleep(max(0.0, 1.1 - (datetime.now(UTC) - now).total_seconds()))
    _, _, how = current.values_as_of(
        conn, ["pm10_annual_mean"], datetime.now(UTC), max_age=timedelta(seconds=1)
    )
    assert how == "refreshed"
    fresh = current.read_current(conn, ["pm10_annual_mean"])
    assert fresh is not None and fresh.computed_at > stored.computed_at
    city_fresh = next(v for v in fresh.values if v.scope_type == "city")
    assert city_fresh.value != pytest.approx(city.value)  # the 999 reading counts now


def test_scheduled_refresh_runs_its_rounds_and_survives_a_failing_one(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as c:
        import_districts(c)
    calls: list[str] = []

    def connect():
        calls.append("connect")
        if len(calls) == 2:  # the second round cannot reach the database
            return psycopg.connect("postgresql://nobody@127.0.0.1:1/none", connect_timeout=1)
        return psycopg.connect(db_url, autocommit=True)

    stop = threading.Event()
    done = current.refresh_every(connect, 0.01, stop, rounds=3)
    assert (done, len(calls)) == (2, 3)
    with psycopg.connect(db_url) as c:
        triggers = {r[0] for r in c.execute("select inputs->>'trigger' from indicator_refresh")}
        n = c.execute("select count(*) from indicator_refresh").fetchone()[0]
    assert triggers == {"schedule"} and n == len(CATALOGUE)
    stop.set()
    assert current.refresh_every(connect, 0.01, stop) == 0  # stopped: no round


def test_scheduled_refresh_command_says_in_one_line_when_the_database_is_down(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from typer.testing import CliRunner

    from quartier.cli import app
    from quartier.services import free_port

    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    port = free_port()
    monkeypatch.setenv("QUARTIER_DATABASE__URL", f"postgresql://q:pw-x@127.0.0.1:{port}/q")
    r = CliRunner().invoke(app, ["indicators", "refresh", "--every", "300"])
    assert r.exit_code == 2, (r.output, r.exception)
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the database"), r.output
    assert f"127.0.0.1:{port}" in lines[0] and "pw-x" not in r.output
    both = ["indicators", "refresh", "--every", "300", "--as-of", "2026-01-01"]
    r = CliRunner().invoke(app, both)
    assert r.exit_code == 2 and "exclude each other" in r.output
