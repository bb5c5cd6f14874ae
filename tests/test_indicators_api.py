"""/indicators: catalogue, current values, history, CSV, manual values; /strategy: runs."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from quartier.api.app import create_app
from quartier.api.indicators import IndicatorDetail, IndicatorList
from quartier.api.strategy import EvaluationRun, StrategyDocument
from quartier.config import Settings
from quartier.evaluation.evaluate import Evaluation, evaluate
from quartier.evaluation.indicators import IndicatorValue
from quartier.evaluation.strategy import parse_strategy
from quartier.geo.io import import_districts
from quartier.store import api_keys

pytestmark = pytest.mark.services


def _app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A client whose requests carry an API key with the scope indicators:write (writes need
    one; tests/test_api_auth.py tests what happens without)."""
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        import_districts(conn)
        _, token = api_keys.create(conn, "indicator tests", ["indicators:write"], created_by="test")
    with TestClient(_app(settings), headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def test_list_indicators_and_csv(client: TestClient) -> None:
    body = IndicatorList.model_validate(client.get("/indicators").json())
    ids = {d.id for d in body.definitions}
    assert {"bb_households_1000", "pm10_days_over_50", "ozg_services_online_share"} <= ids
    assert body.notes["ozg_services_online_share"].startswith("no data")
    assert body.notes["pm10_annual_mean"].startswith("no data")
    stale = [v for v in body.values if v.indicator_id == "sensor_stale_count"]
    assert stale == []  # no sensors registered: a note, not zeros
    assert "sensor_stale_count" in body.notes

    assert (
        client.post(
            "/indicators/ozg_services_online_share/values",
            json={"value": 61.5, "date": "2025-12-31", "source": "OZG-Dashboard"},
        ).status_code
        == 201
    )
    for url in ("/indicators?format=csv", "/indicators.csv"):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        ozg = [row for row in rows if row["indicator_id"] == "ozg_services_online_share"]
        assert ozg[0]["value"] == "61.5" and ozg[0]["source"] == "OZG-Dashboard"
        assert ozg[0]["scope_code"] == "05315000" and ozg[0]["origin"] == "manual"


def test_manual_values_and_history(client: TestClient) -> None:
    url = "/indicators/digital_skills_participants/values"
    r = client.post(url, json={"value": 800, "date": "2024-12-31", "source": "VHS Köln",
                               "scope_type": "stadtbezirk", "scope_code": "9"})  # fmt: skip
    assert r.status_code == 201, r.text
    value = IndicatorValue.model_validate(r.json())
    assert value.scope_name == "Mülheim" and value.origin == "manual"
    assert value.period_end == datetime(2024, 12, 31, tzinfo=UTC)
    client.post(url, json={"value": 1200, "date": "2025-12-31T00:00:00Z", "source": "VHS Köln",
                           "scope_type": "stadtbezirk", "scope_code": "9"})  # fmt: skip
    client.post(url, json={"value": 5000, "date": "2025-12-31", "source": "VHS Köln"})

    detail = IndicatorDetail.model_validate(
        client.get("/indicators/digital_skills_participants").json()
    )
    assert detail.definition.unit == "Personen"
    assert [(v.scope_code, v.value) for v in detail.history] == [
        ("9", 800.0), ("05315000", 5000.0), ("9", 1200.0)
    ]  # fmt: skip
    assert sorted(v.value for v in detail.current) == [1200.0, 5000.0]
    one = IndicatorDetail.model_validate(
        client.get("/indicators/digital_skills_participants",
                   params={"scope_code": "9", "since": "2025-01-01T00:00:00Z"}).json()
    )  # fmt: skip
    assert [v.value for v in one.history] == [1200.0]
    r = client.get("/indicators/digital_skills_participants?format=csv&scope_code=9")
    assert [row["value"] for row in csv.DictReader(io.StringIO(r.text))] == ["800.0", "1200.0"]


@pytest.mark.parametrize(
    ("url", "body", "status", "message"),
    [
        ("/indicators/nope/values", {"value": 1, "date": "2025-01-01", "source": "x"}, 404,
         "no indicator 'nope'"),
        ("/indicators/pm10_annual_mean/values", {"value": 1, "date": "2025-01-01", "source": "x"},
         400, "computed from the store"),
        ("/indicators/ozg_services_online_share/values", {"value": 1, "date": "2025-01-01"}, 400,
         "source"),
        ("/indicators/ozg_services_online_share/values",
         {"value": 1, "date": "2025-01-01", "source": "x", "scope_type": "stadtbezirk",
          "scope_code": "1"}, 400, "no 'stadtbezirk' values"),
        ("/indicators/digital_skills_participants/values",
         {"value": 1, "date": "2025-01-01", "source": "x", "scope_type": "stadtbezirk",
          "scope_code": "99"}, 400, "scope_code must be a stadtbezirk code"),
    ],
)  # fmt: skip
def test_manual_value_errors(client: TestClient, url, body, status, message) -> None:
    r = client.post(url, json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["message"]


def test_unknown_indicator_and_bad_dates(client: TestClient) -> None:
    r = client.get("/indicators/nope")
    assert r.status_code == 404 and r.json()["type"] == "NotFoundError"
    r = client.get("/indicators/pm10_annual_mean", params={"since": "2025-01-01T00:00:00"})
    assert r.status_code == 400 and "time zone" in r.json()["message"]


def test_operation_ids_are_stable(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ops = {
        (path, method): op["operationId"]
        for path, item in spec["paths"].items()
        for method, op in item.items()
    }
    assert ops[("/indicators", "get")] == "list_indicators"
    assert ops[("/indicators.csv", "get")] == "list_indicators_csv"
    assert ops[("/indicators/{indicator_id}", "get")] == "get_indicator"
    assert ops[("/indicators/{indicator_id}/values", "post")] == "record_indicator_value"
    assert ops[("/maps/coverage", "get")] == "coverage_map"
    assert ops[("/strategy", "get")] == "get_strategy"
    assert ops[("/strategy/evaluations", "get")] == "list_evaluations"
    assert ops[("/strategy/evaluations/latest", "get")] == "get_latest_evaluation"
    assert ops[("/strategy/evaluations/{run_id}", "get")] == "get_evaluation"


STRATEGY = """
id: api-test
title: API-Test
city: Köln
vision: Alles online.
fields_of_action:
  - id: egov
    name: E-Government
    goals:
      - id: online
        title: Online
        kpis:
          - id: ozg
            indicator: ozg_services_online_share
            baseline: {value: 30, date: 2024-01-01}
            target: 100
            deadline: 2027-01-01
"""


def test_strategy_endpoints(client: TestClient, settings: Settings) -> None:
    assert client.get("/strategy").status_code == 404
    assert client.get("/strategy/evaluations/latest").status_code == 404
    assert client.get("/strategy/evaluations").json() == []
    strategy = parse_strategy(STRATEGY)
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        first = evaluate(conn, strategy, datetime(2025, 6, 1, tzinfo=UTC))
        client.post(
            "/indicators/ozg_services_online_share/values",
            json={"value": 70, "date": "2025-06-30", "source": "OZG-Dashboard"},
        )
        second = evaluate(conn, strategy, datetime(2025, 7, 1, tzinfo=UTC))

    doc = StrategyDocument.model_validate(client.get("/strategy").json())
    assert doc.strategy.id == "api-test" and doc.run_id == second.run_id
    runs = [EvaluationRun.model_validate(r) for r in client.get("/strategy/evaluations").json()]
    assert [r.id for r in runs] == [second.run_id, first.run_id]
    assert runs[1].summary["no_data"] == 1 and runs[0].summary["on_track"] == 1
    latest = Evaluation.model_validate(client.get("/strategy/evaluations/latest").json())
    assert latest.run_id == second.run_id and latest.previous_run_id == first.run_id
    (ozg,) = latest.results
    # 30 -> 70 in 1.5 years: the line reaches 100 before 2027
    assert ozg.status == "on_track" and ozg.previous_status == "no_data"
    assert ozg.provenance["source"] == "OZG-Dashboard"
    older = Evaluation.model_validate(client.get(f"/strategy/evaluations/{first.run_id}").json())
    assert older.results[0].status == "no_data"
    r = client.get("/strategy/evaluations/latest?format=csv")
    row = next(csv.DictReader(io.StringIO(r.text)))
    assert row["kpi_id"] == "ozg" and row["status"] == "on_track"
    assert row["previous_status"] == "no_data"
    assert client.get("/strategy/evaluations/999999").status_code == 404
