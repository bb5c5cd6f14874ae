"""The strategy model: the example file validates; every error names the file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from quartier.errors import BadRequestError
from quartier.evaluation.strategy import Problem, StrategyError, load_strategy, parse_strategy
from quartier.resources import resource

EXAMPLE = Path(str(resource("strategy-koeln.yaml")))

VALID = """\
id: s
title: Strategie
city: Köln
vision: Digital.
fields_of_action:
  - id: foa
    name: E-Government
    goals:
      - id: g1
        title: Online
        kpis:
          - id: k1
            indicator: ozg_services_online_share
            baseline: {value: 30, date: 2024-01-01}
            target: 100
            deadline: 2027-01-01
        measures:
          - id: m1
            title: Portal
            owner: Amt 12
            budget_eur: 1000
            start: 2024-01-01
            end: 2025-01-01
            status: planned
"""


def _problems(text: str, file: str = "s.yaml") -> list[Problem]:
    with pytest.raises(StrategyError) as err:
        parse_strategy(text, file)
    return err.value.problems


def test_the_example_strategy_is_valid_and_uses_every_field_of_action() -> None:
    s = load_strategy(EXAMPLE)
    names = {f.name for f in s.fields_of_action}
    assert names == {
        "E-Government", "Smart City", "Digitale Infrastruktur", "Digitale Bildung",
        "Digitale Wirtschaft",
    }  # fmt: skip
    kpis = list(s.kpis())
    assert len(kpis) >= 15
    assert any(k.breakdown for _, _, k in kpis)
    assert any(k.scope.level == "stadtbezirk" for _, _, k in kpis)
    for _, goal in s.goals():
        assert goal.measures and all(m.owner for m in goal.measures)


def test_valid_minimal_strategy_and_direction() -> None:
    s = parse_strategy(VALID)
    (_, _, kpi) = next(s.kpis())
    assert kpi.resolved_direction == "increase"
    assert s.digest() == parse_strategy(VALID).digest()


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        ("target: 100", "target: hundert", 15, "fields_of_action[0].goals[0].kpis[0].target",
         "valid number"),
        ("target: 100", "tagret: 100", 15, "fields_of_action[0].goals[0].kpis[0].tagret",
         "Extra inputs"),
        ("            owner: Amt 12\n", "", 18, "fields_of_action[0].goals[0].measures[0].owner",
         "Field required"),
        ("status: planned", "status: geplant", 24,
         "fields_of_action[0].goals[0].measures[0].status", "'planned'"),
        ("date: 2024-01-01}", "date: 2024-02-30}", 14,
         "fields_of_action[0].goals[0].kpis[0].baseline.date", "date"),
        ("indicator: ozg_services_online_share", "indicator: ozg_share", 13,
         "fields_of_action[0].goals[0].kpis[0].indicator", "unknown indicator 'ozg_share'"),
        ("deadline: 2027-01-01", "deadline: 2023-01-01", 16,
         "fields_of_action[0].goals[0].kpis[0].deadline", "not after the baseline date"),
        ("end: 2025-01-01", "end: 2023-01-01", 23, "fields_of_action[0].goals[0].measures[0].end",
         "before start"),
        ("id: m1", "id: k1", 18, "fields_of_action[0].goals[0].measures[0].id",
         "duplicate id 'k1'"),
        ("target: 100", "target: 100\n            direction: decrease", 16,
         "fields_of_action[0].goals[0].kpis[0].direction", "contradicts"),
        ("target: 100", "target: 100\n            scope: {level: stadtbezirk, code: '1'}", 16,
         "fields_of_action[0].goals[0].kpis[0].scope.level", "no values for 'stadtbezirk'"),
        ("vision: Digital.\n", "", 1, "vision", "Field required"),  # top level: line 1
        ("id: s\n", "id: S P A C E\n", 1, "id", "pattern"),
    ],
)  # fmt: skip
def test_each_error_names_file_line_and_field(old, new, line, field, message) -> None:
    assert old in VALID
    problems = _problems(VALID.replace(old, new, 1))
    assert len(problems) == (2 if field.endswith("tagret") else 1), problems  # + target missing
    p = next(p for p in problems if p.field == field)
    assert (p.file, p.line, p.field) == ("s.yaml", line, field), p
    assert message in p.message
    assert str(p).startswith(f"s.yaml:{line}:")


def test_all_errors_are_reported_together() -> None:
    text = VALID.replace("target: 100", "target: x").replace("status: planned", "status: y")
    problems = _problems(text)
    assert [p.line for p in problems] == [15, 24]
    with pytest.raises(StrategyError) as err:
        parse_strategy(text, "s.yaml")
    assert "invalid strategy (2 errors):" in str(err.value)
    assert isinstance(err.value, BadRequestError)


def test_yaml_syntax_and_shape_errors() -> None:
    (p,) = _problems("id: s\ntitle: [a,\n")
    assert p.field == "(syntax)" and p.line == 3
    (p,) = _problems("id: s\nid: t\n")
    assert p.field == "(syntax)" and p.line == 2 and "duplicate" in p.message
    (p,) = _problems("- a\n- b\n")
    assert p.message == "expected a mapping at the top"


def test_missing_file() -> None:
    with pytest.raises(BadRequestError, match="cannot read strategy file"):
        load_strategy(Path("/nonexistent/strategy.yaml"))
