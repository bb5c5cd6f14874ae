"""The strategy model: a YAML file (vision, fields of action, goals, measures, KPIs) validated by
pydantic, with every error naming the file, the line and the field.

Loading keeps the line and column of every mapping key and sequence item (ruamel.yaml round-trip
nodes); a pydantic error's location, or a cross-check's path, is mapped to the nearest position
it has. Errors are collected, not stopped at the first: :class:`StrategyError` carries all of
them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError

from quartier.errors import BadRequestError
from quartier.evaluation.indicators import CATALOGUE
from quartier.evaluation.scopes import CITY

Loc = tuple[str | int, ...]
_ID = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based
    column: int  # 1-based
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.field}: {self.message}"


class StrategyError(BadRequestError):
    """A strategy file is invalid; ``problems`` lists every error with file, line and field."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        head = f"invalid strategy ({len(problems)} error{'s' if len(problems) != 1 else ''}):"
        super().__init__("\n".join([head, *(f"  {p}" for p in problems)]))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Baseline(_Model):
    value: float
    date: date
    source: str | None = None


class Scope(_Model):
    """Where a KPI applies: the city, or one district (``level`` and ``code``)."""

    level: Literal["city", "stadtbezirk"] = "city"
    code: str | None = None


class Kpi(_Model):
    id: str = Field(pattern=_ID)
    indicator: str
    name: str | None = None
    baseline: Baseline
    target: float
    deadline: date
    direction: Literal["increase", "decrease"] | None = None
    scope: Scope = Scope()
    #: evaluate each district of this level against the same target, too
    breakdown: Literal["stadtbezirk"] | None = None
    #: a breakdown inside the area, e.g. "operator:Telekom"
    variant: str = ""

    @property
    def resolved_direction(self) -> Literal["increase", "decrease"]:
        if self.direction is not None:
            return self.direction
        if self.target != self.baseline.value:
            return "increase" if self.target > self.baseline.value else "decrease"
        better = CATALOGUE[self.indicator].better if self.indicator in CATALOGUE else None
        return better or "increase"


class Measure(_Model):
    id: str = Field(pattern=_ID)
    title: str
    owner: str
    budget_eur: float | None = Field(default=None, ge=0)
    start: date
    end: date
    status: Literal["planned", "in_progress", "completed", "delayed", "cancelled"]
    partners: list[str] = []
    description: str | None = None


class Goal(_Model):
    id: str = Field(pattern=_ID)
    title: str
    description: str | None = None
    kpis: list[Kpi] = []
    measures: list[Measure] = []


class FieldOfAction(_Model):
    id: str = Field(pattern=_ID)
    name: str
    description: str | None = None
    goals: list[Goal] = Field(min_length=1)


class Strategy(_Model):
    id: str = Field(pattern=_ID)
    title: str
    city: str
    adopted: date | None = None
    lang: Literal["de", "en"] = "de"
    vision: str
    fields_of_action: list[FieldOfAction] = Field(min_length=1)

    def goals(self) -> Iterator[tuple[FieldOfAction, Goal]]:
        for foa in self.fields_of_action:
            for goal in foa.goals:
                yield foa, goal

    def kpis(self) -> Iterator[tuple[FieldOfAction, Goal, Kpi]]:
        for foa, goal in self.goals():
            for kpi in goal.kpis:
                yield foa, goal, kpi

    def digest(self) -> str:
        """A hash of the strategy's content (changes when the strategy does)."""
        doc = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(doc.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ loading


class _Constructor(RoundTripConstructor):
    """Leaves dates as text, so pydantic parses them and reports a bad one with its line."""


_Constructor.add_constructor("tag:yaml.org,2002:timestamp", RoundTripConstructor.construct_yaml_str)


def _plain(node: Any, loc: Loc, marks: dict[Loc, tuple[int, int]]) -> Any:
    """Plain Python data from ruamel nodes; ``marks`` gets the 0-based (line, col) of every key
    and item."""
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            line, col = node.lc.key(key)
            here = (*loc, str(key))
            marks[here] = (line, col)
            out[str(key)] = _plain(value, here, marks)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            line, col = node.lc.item(i)
            marks[(*loc, i)] = (line, col)
            items.append(_plain(value, (*loc, i), marks))
        return items
    if isinstance(node, str):
        return str(node)
    return node


def _field(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(document)"


def _problem(file: str, loc: Loc, message: str, marks: dict[Loc, tuple[int, int]]) -> Problem:
    probe = loc
    while probe and probe not in marks:
        probe = probe[:-1]
    line, col = marks.get(probe, (0, 0))
    return Problem(file, line + 1, col + 1, _field(loc), message)


def _cross_checks(strategy: Strategy) -> Iterator[tuple[Loc, str]]:
    seen: dict[str, Loc] = {}
    for i, foa in enumerate(strategy.fields_of_action):
        floc: Loc = ("fields_of_action", i)
        items: list[tuple[Loc, str]] = [((*floc, "id"), foa.id)]
        for j, goal in enumerate(foa.goals):
            gloc: Loc = (*floc, "goals", j)
            items.append(((*gloc, "id"), goal.id))
            for k, kpi in enumerate(goal.kpis):
                kloc: Loc = (*gloc, "kpis", k)
                items.append(((*kloc, "id"), kpi.id))
                yield from _check_kpi(kpi, kloc)
            for k, m in enumerate(goal.measures):
                mloc: Loc = (*gloc, "measures", k)
                items.append(((*mloc, "id"), m.id))
                if m.end < m.start:
                    yield (*mloc, "end"), f"end {m.end} is before start {m.start}"
        for where, ident in items:
            if ident in seen:
                yield where, f"duplicate id {ident!r} (first used at {_field(seen[ident])})"
            else:
                seen[ident] = where


def _check_kpi(kpi: Kpi, loc: Loc) -> Iterator[tuple[Loc, str]]:
    definition = CATALOGUE.get(kpi.indicator)
    if definition is None:
        yield (
            (*loc, "indicator"),
            (f"unknown indicator {kpi.indicator!r}; known: {', '.join(sorted(CATALOGUE))}"),
        )
        return
    if kpi.scope.level not in definition.scopes:
        yield (
            (*loc, "scope", "level"),
            (
                f"indicator {kpi.indicator} has no values for {kpi.scope.level!r}; "
                f"scopes: {', '.join(definition.scopes)}"
            ),
        )
    if kpi.scope.level != CITY and not kpi.scope.code:
        yield (*loc, "scope", "code"), f"a {kpi.scope.level} scope needs the district code"
    if kpi.breakdown is not None and kpi.breakdown not in definition.scopes:
        yield (*loc, "breakdown"), f"indicator {kpi.indicator} has no {kpi.breakdown} values"
    if kpi.deadline <= kpi.baseline.date:
        yield (
            (*loc, "deadline"),
            (f"deadline {kpi.deadline} is not after the baseline date {kpi.baseline.date}"),
        )
    if kpi.direction is not None and kpi.target != kpi.baseline.value:
        rising = kpi.target > kpi.baseline.value
        if rising != (kpi.direction == "increase"):
            yield (
                (*loc, "direction"),
                (
                    f"direction {kpi.direction} contradicts baseline {kpi.baseline.value:g} → "
                    f"target {kpi.target:g}"
                ),
            )


def parse_strategy(text: str, file: str = "<strategy>") -> Strategy:
    """Parse and validate a strategy document; raises :class:`StrategyError` with every problem."""
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        raise StrategyError(
            [Problem(file, line, col, "(syntax)", str(exc.problem or exc.context or exc))]
        ) from None
    marks: dict[Loc, tuple[int, int]] = {}
    data = _plain(doc, (), marks)
    if not isinstance(data, dict):
        raise StrategyError([Problem(file, 1, 1, "(document)", "expected a mapping at the top")])
    try:
        strategy = Strategy.model_validate(data)
    except ValidationError as exc:
        problems = [
            _problem(file, tuple(err["loc"]), err["msg"], marks)
            for err in exc.errors(include_url=False)
        ]
        raise StrategyError(problems) from None
    problems = [_problem(file, loc, msg, marks) for loc, msg in _cross_checks(strategy)]
    if problems:
        raise StrategyError(problems)
    return strategy


def load_strategy(path: Path) -> Strategy:
    """Read and validate a strategy file (see :func:`parse_strategy`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadRequestError(f"cannot read strategy file {path}: {exc.strerror}") from None
    return parse_strategy(text, str(path))
