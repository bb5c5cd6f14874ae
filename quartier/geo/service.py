"""The coverage analysis as one service: assemble the parameters, read the inputs, analyse,
store the run."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from quartier.errors import BadRequestError
from quartier.geo.analysis import AnalysisParams, CoverageResult, analyse
from quartier.geo.input_store import load_inputs
from quartier.geo.profiles import PROFILES
from quartier.geo.run_store import save_result
from quartier.geo.speedtest_cells import MIN_CONTRIBUTORS
from quartier.store.db import Conn


def analysis_params(
    profile: str = "de", params_file: Path | None = None, *, min_tests: int | None = None
) -> AnalysisParams:
    """The parameters of a run: those of ``params_file`` (JSON, any field of
    :class:`AnalysisParams`), the classes of ``profile`` unless the file names them, and
    ``min_tests`` over both. BadRequestError for an unknown profile or invalid values."""
    if profile not in PROFILES:
        raise BadRequestError(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
    values = json.loads(params_file.read_text(encoding="utf-8")) if params_file else {}
    values.setdefault("profile", PROFILES[profile].model_dump())
    if min_tests is not None:
        values["min_tests"] = min_tests
    try:
        return AnalysisParams.model_validate(values)
    except ValueError as exc:
        raise BadRequestError(f"invalid analysis parameters: {exc}") from None


ANALYSIS_STEPS = ("reading inputs", "analysing", "storing results")


def analyse_and_store(
    conn: Conn,
    params: AnalysisParams | None = None,
    *,
    district_level: str = "stadtbezirk",
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Callable[[str], None] | None = None,
    conninfo: str | None = None,
    on_stored: Callable[[Conn, int], object] | None = None,
    min_contributors: int = MIN_CONTRIBUTORS,
) -> tuple[int, CoverageResult]:
    """Load the inputs, analyse, store; returns the run id and the result. The caller commits.
    ``progress`` is called with each of :data:`ANALYSIS_STEPS` before it starts; ``conninfo``
    (the database URL) lets the inputs be read over two connections at once; ``on_stored(conn,
    run_id)`` runs after the run is stored, in the same transaction (the composition roots pass
    the evaluation's refresh of the indicators that read the current run)."""
    step = progress or (lambda _s: None)
    step(ANALYSIS_STEPS[0])
    inputs = load_inputs(
        conn,
        district_level=district_level,
        since=since,
        until=until,
        conninfo=conninfo,
        min_contributors=min_contributors,  # k-anonymity (privacy.min_contributors)
    )
    step(ANALYSIS_STEPS[1])
    result = analyse(inputs, params)
    step(ANALYSIS_STEPS[2])
    run_id = save_result(conn, result, inputs.districts)
    if on_stored is not None:
        on_stored(conn, run_id)
    return run_id, result
