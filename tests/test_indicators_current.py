"""Stored current indicator values (quartier.evaluation.current): equal to the per-request
recompute from raw rows, refreshed by their triggers, and one rule for the current coverage run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from store_fixtures import insert_filled, station

from quartier.evaluation import current
from quartier.evaluation.indicators import CATALOGUE, IndicatorValue
from quartier.evaluation.sources import load_broadband_cells
from quartier.geo import run_store
from quartier.geo.io import import_districts
from quartier.store import rollups
from quartier.store.migrate import storage_path

pytestmark = pytest.mark.services

AS_OF = datetime(2026, 3, 10, 12, 17, tzinfo=UTC)  # not on an hour: partial edge hours
INNENSTADT = (6.9583, 50.9413)  # Stadtbezirk 1
MUELHEIM = (7.0064, 50.9626)  # Stadtbezirk 9


@pytest.fixture
def conn(db_url: str):
    with psycopg.connect(db_url, autocommit=True) as c:
        import_districts(c)
        yield c


def _observe(conn, ds: int, start: datetime, n: int, step: timedelta, base: float) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "insert into observation (datastream_id, phenomenon_time, result) values (%s, %s, %s)",
            [(ds, start + i * step, base + (i * 7919 % 23) * 0.37) for i in range(n)],
        )


def _coverage_run(conn, profile: str) -> int:
    run: int = conn.execute(
        "insert into coverage_run (profile, parameters, inputs, classes, operators, technologies)"
        " values (%s, '{}', '{}', '{}', '{A,B}', '{2G,3G,4G,5G}') returning id",
        (profile,),
    ).fetchone()[0]
    keys = ("e", "n", "district_code", "households", "best_technology", "max_down_mbps",
            "class_key", "mobile_mask", "dead_zone", "n_signal")  # fmt: skip
    cells = [
        (0, 0, "1", 30, "ftth", 1000, "gigabit", 76, False, 5),
        (100, 0, "1", 10, "vdsl", 50, "grey", 64, False, 5),
        (200, 0, "9", 60, "hfc", 1000, "gigabit", 0, True, 5),
    ]
    insert_filled(
        conn, "coverage_cell", [{"run_id": run, **dict(zip(keys, c, strict=True))} for c in cells]
    )
    return run


def _key(v: IndicatorValue) -> tuple[str, str, str, str]:
    return (v.indicator_id, v.scope_type, v.scope_code, v.variant)


def _same(fresh: list[IndicatorValue], stored: list[IndicatorValue]) -> None:
    a, b = {_key(v): v for v in fresh}, {_key(v): v for v in stored}
    assert len(a) == len(fresh) and set(a) == set(b)
    for k, v in a.items():
        w = b[k]
        for f in ("value", "numerator", "denominator"):
            x, y = getattr(v, f), getattr(w, f)
            assert (x is None and y is None) or x == pytest.approx(y, rel=1e-12, abs=1e-12), (k, f)
        assert (v.period_start, v.period_end or v.computed_at) == (w.period_start, w.period_end)
        assert (v.scope_name, v.unit, v.origin, v.source) == (
            w.scope_name, w.unit, w.origin, w.source,
        )  # fmt: skip


def test_stored_values_equal_the_recompute_from_raw_rows(conn) -> None:
    if storage_path(conn) == "timescaledb":
        pytest.skip("the plain path's rollup tables and dirty marks are tested here")
    step = timedelta(minutes=10)
    start = AS_OF - timedelta(days=3, minutes=3)
    for name, where, q, base in (
        ("a", INNENSTADT, "pm10", 20.0), ("b", MUELHEIM, "pm10", 45.0),
        ("c", INNENSTADT, "pm25", 12.0), ("d", MUELHEIM, "no2", 30.0),
        ("n", INNENSTADT, "noise_laeq", 52.0),
    ):  # fmt: skip
        _observe(conn, station(conn, name, where, q), start, 3 * 144 + 5, step, base)
    _coverage_run(conn, "de")
    conn.execute(
        "insert into indicator_value (indicator_id, scope_type, scope_code, period_end, value,"
        " unit, origin, source, computed_at) values ('ozg_services_online_share', 'city',"
        " '05315000', '2026-01-01', 61.5, '%', 'manual', 'OZG', now())"
    )
    # rollups for all but the newest day; the newest day's buckets wait (dirty) as after ingest
    rollups.rebuild(conn, AS_OF - timedelta(days=5), AS_OF - timedelta(days=1))
    conn.execute(
        "insert into observation_dirty (datastream_id, bucket)"
        " select distinct datastream_id, date_bin('15 minutes', phenomenon_time,"
        " timestamptz '2000-01-03') from observation where phenomenon_time >= %s"
        " on conflict do nothing",
        (AS_OF - timedelta(days=1),),
    )

    fresh, fresh_notes = current.recompute(conn, AS_OF, list(CATALOGUE))
    stored = current.refresh_indicators(conn, AS_OF, trigger="test")
    assert {v.indicator_id for v in fresh} >= {"pm10_rolling_mean", "bb_households_1000"}
    _same(fresh, stored.values)
    assert stored.notes == fresh_notes
    assert current.read_current(conn) == stored
    pm10 = next(v for v in stored.values if _key(v) == ("pm10_annual_mean", "city", "05315000", ""))
    assert pm10.provenance["source"] == "observation_1h"

    # the rollups brought up to date: still equal
    rollups.refresh_all(conn)
    _same(fresh, current.refresh_indicators(conn, AS_OF).values)


def test_refreshed_on_read_when_missing_or_old_and_after_a_coverage_run(conn) -> None:
    assert current.read_current(conn) is None
    first = current.current(conn, now=AS_OF)
    assert first.computed_at == AS_OF
    assert first.notes["bb_households_1000"].startswith("no data")
    inputs = conn.execute(
        "select inputs from indicator_refresh where indicator_id = 'bb_households_1000'"
    ).fetchone()[0]
    assert inputs["trigger"] == "read"
    # fresh enough: served as stored
    assert current.current(conn, now=AS_OF + timedelta(minutes=1)).computed_at == AS_OF
    # a coverage run stored: its indicators refreshed at once
    run = _coverage_run(conn, "de")
    current.refresh_after_coverage_run(conn, run)
    stored = current.read_current(conn, ["bb_households_1000"])
    assert stored is not None and stored.values and not stored.notes
    inputs = conn.execute(
        "select inputs from indicator_refresh where indicator_id = 'bb_households_1000'"
    ).fetchone()[0]
    assert inputs["coverage_run"] == run and inputs["trigger"] == f"coverage run {run}"
    # too old: recomputed on the read
    later = AS_OF + current.MAX_AGE + timedelta(seconds=1)
    assert current.current(conn, now=later).computed_at == later


def test_one_rule_for_the_current_coverage_run(conn) -> None:
    assert run_store.current_run_id(conn) is None
    de = _coverage_run(conn, "de")
    _coverage_run(conn, "eu")  # newer, another profile
    assert run_store.current_run_id(conn) == de
    assert run_store.get_run(conn).id == de
    _, prov, _ = load_broadband_cells(conn)
    assert prov["coverage_run"] == de
    newer = _coverage_run(conn, "de")
    assert run_store.current_run_id(conn) == newer == run_store.get_run(conn).id


def test_api_serves_the_stored_values(settings) -> None:
    from fastapi.testclient import TestClient

    from quartier.api.app import create_app
    from quartier.api.indicators import IndicatorDetail, IndicatorList

    with psycopg.connect(settings.require_database_url(), autocommit=True) as c:
        import_districts(c)
        run = _coverage_run(c, "de")
    with TestClient(create_app(settings)) as client:
        first = IndicatorList.model_validate(client.get("/indicators").json())  # refreshed
        again = IndicatorList.model_validate(client.get("/indicators").json())  # stored
        assert again == first
        with psycopg.connect(settings.require_database_url(), autocommit=True) as c:
            stored = current.read_current(c)
            assert stored is not None and stored.values == first.values
            assert stored.computed_at == first.computed_at
            # a new coverage run without a trigger: the stored values are served until refreshed
            _coverage_run(c, "de")
        bb = IndicatorDetail.model_validate(client.get("/indicators/bb_households_1000").json())
        assert {v.provenance["coverage_run"] for v in bb.current} == {run}
        city = client.get("/indicators/bb_households_1000?scope_type=city").json()
        assert [v["scope_type"] for v in city["current"]] == ["city"]


def test_stale_values_are_served_at_once_and_refreshed_in_the_background(settings) -> None:
    """A read of values older than api.indicators_max_age_seconds does not wait for the
    recompute (minutes at scale, beyond the statement timeout): it gets the stored values and
    a background refresh replaces them."""
    import time

    from fastapi.testclient import TestClient

    from quartier.api.app import create_app

    settings.api.indicators_max_age_seconds = 60.0
    old = datetime.now(UTC) - timedelta(hours=2)
    with psycopg.connect(settings.require_database_url(), autocommit=True) as c:
        import_districts(c)
        current.refresh_indicators(c, old, trigger="test")  # stored two hours ago
    with TestClient(create_app(settings)) as client:
        r = client.get("/indicators")
        assert r.status_code == 200
        served = datetime.fromisoformat(r.json()["computed_at"])
        assert served == old  # the stale values, not a recompute inside the request
        deadline = time.monotonic() + 60
        with psycopg.connect(settings.require_database_url(), autocommit=True) as c:
            while True:
                stored = current.read_current(c)
                assert stored is not None
                if stored.computed_at > old or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert stored.computed_at > datetime.now(UTC) - timedelta(minutes=5)
            trigger = c.execute(
                "select inputs->>'trigger' from indicator_refresh limit 1"
            ).fetchone()
            assert trigger is not None and trigger[0] == "stale"
        fresh = client.get("/indicators").json()
        assert datetime.fromisoformat(fresh["computed_at"]) == stored.computed_at
