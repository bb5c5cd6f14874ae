"""Classification profiles: which supply makes a 100 m cell white, grey, dark grey or gigabit.

A profile is an ordered list of classes, worst first. Each class but the last has *exit
criteria* (``down_mbps``, ``up_mbps`` pairs): a cell leaves the class when at least one offer in
the cell reaches one of its criteria (download ≥ ``down_mbps`` and upload ≥ ``up_mbps``, both
inclusive). A cell belongs to the first class it does not leave; the last class takes the rest.
A cell without any offer is in the first class.

German funding terms (default, :data:`GERMAN_FUNDING`):

* ``white``: no offer with ≥ 30 Mbit/s download (weiße Flecken),
* ``grey``: no offer with ≥ 100 Mbit/s (graue Flecken),
* ``dark_grey``: no offer with ≥ 500 Mbit/s download and none with ≥ 200 Mbit/s symmetric
  (dunkelgraue Flecken, Gigabit-Richtlinie 2.0),
* ``very_high``: ≥ 500 Mbit/s or ≥ 200/200 Mbit/s, but below 1000 Mbit/s,
* ``gigabit``: an offer with ≥ 1000 Mbit/s download.

US BEAD (:data:`US_BEAD`): ``unserved`` (no offer with ≥ 25/3 Mbit/s), ``underserved`` (none with
≥ 100/20 Mbit/s), ``served``. An unknown upload speed counts as 0.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Criterion(BaseModel):
    """An offer meets the criterion with download ≥ ``down_mbps`` and upload ≥ ``up_mbps``."""

    model_config = ConfigDict(frozen=True)

    down_mbps: float = Field(ge=0)
    up_mbps: float = Field(default=0.0, ge=0)


class CoverageClass(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    label_de: str
    label_en: str
    #: eligible for funding / counts as a gap
    gap: bool
    #: 1 the worst supply, 0 no need; used by the gap priority score
    severity: float = Field(ge=0, le=1)
    #: leave this class with any of these; empty for the last class
    exit: tuple[Criterion, ...] = ()
    colour: str = "#999999"


class Profile(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    name: str
    classes: tuple[CoverageClass, ...]
    #: an offer with this download serves a cell with gigabit (distance of gaps to gigabit)
    gigabit_mbps: float = 1000.0

    @model_validator(mode="after")
    def _check(self) -> Profile:
        if len(self.classes) < 2:
            raise ValueError("a profile needs at least two classes")
        keys = [c.key for c in self.classes]
        if len(set(keys)) != len(keys):
            raise ValueError("class keys must be unique")
        if any(not c.exit for c in self.classes[:-1]) or self.classes[-1].exit:
            raise ValueError("every class but the last needs exit criteria; the last has none")
        return self

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.classes]

    def criteria(self) -> list[Criterion]:
        """Every distinct criterion of the profile, in order of first use."""
        seen: list[Criterion] = []
        for c in self.classes:
            seen.extend(x for x in c.exit if x not in seen)
        return seen


GERMAN_FUNDING = Profile(
    key="de",
    name="Förderkulisse Deutschland (Gigabit-Richtlinie 2.0)",
    classes=(
        CoverageClass(
            key="white", label_de="weiß (unter 30 Mbit/s)", label_en="white (below 30 Mbit/s)",
            gap=True, severity=1.0, exit=(Criterion(down_mbps=30),), colour="#d7191c",
        ),
        CoverageClass(
            key="grey", label_de="grau (30 bis unter 100 Mbit/s)",
            label_en="grey (30 to below 100 Mbit/s)", gap=True, severity=0.6,
            exit=(Criterion(down_mbps=100),), colour="#fdae61",
        ),
        CoverageClass(
            key="dark_grey",
            label_de="dunkelgrau (unter 500 Mbit/s und nicht 200 Mbit/s symmetrisch)",
            label_en="dark grey (below 500 Mbit/s and not 200 Mbit/s symmetric)", gap=True,
            severity=0.3, exit=(Criterion(down_mbps=500), Criterion(down_mbps=200, up_mbps=200)),
            colour="#8c8c8c",
        ),
        CoverageClass(
            key="very_high", label_de="ab 500 Mbit/s (unter 1000 Mbit/s)",
            label_en="500 Mbit/s or more (below 1000 Mbit/s)", gap=False, severity=0.0,
            exit=(Criterion(down_mbps=1000),), colour="#abd9e9",
        ),
        CoverageClass(
            key="gigabit", label_de="Gigabit (ab 1000 Mbit/s)",
            label_en="gigabit (1000 Mbit/s or more)", gap=False, severity=0.0, colour="#2c7bb6",
        ),
    ),
)  # fmt: skip

US_BEAD = Profile(
    key="bead",
    name="US BEAD (unserved < 25/3, underserved < 100/20 Mbit/s)",
    classes=(
        CoverageClass(
            key="unserved", label_de="unversorgt (unter 25/3 Mbit/s)",
            label_en="unserved (below 25/3 Mbit/s)", gap=True, severity=1.0,
            exit=(Criterion(down_mbps=25, up_mbps=3),), colour="#d7191c",
        ),
        CoverageClass(
            key="underserved", label_de="unterversorgt (unter 100/20 Mbit/s)",
            label_en="underserved (below 100/20 Mbit/s)", gap=True, severity=0.5,
            exit=(Criterion(down_mbps=100, up_mbps=20),), colour="#fdae61",
        ),
        CoverageClass(
            key="served", label_de="versorgt (ab 100/20 Mbit/s)",
            label_en="served (100/20 Mbit/s or more)", gap=False, severity=0.0,
            colour="#2c7bb6",
        ),
    ),
)  # fmt: skip

PROFILES: dict[str, Profile] = {p.key: p for p in (GERMAN_FUNDING, US_BEAD)}
