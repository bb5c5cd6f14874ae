"""The coverage analysis as one service: assemble the parameters, read the inputs, analyse,
store the run."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quartier.errors import BadRequestError
from quartier.geo.analysis import AnalysisParams, CoverageResult, analyse
from quartier.geo.input_store import load_inputs
from quartier.geo.profiles import PROFILES
from quartier.geo.run_store import (
    CellTableWriter,
    attach_cells,
    create_cell_table,
    district_rows,
    drop_cell_table,
    insert_run,
    reserve_run_id,
    save_result,
    write_districts,
    write_gaps,
)
from quartier.geo.speedtest_cells import MIN_CONTRIBUTORS
from quartier.store.db import Conn

if TYPE_CHECKING:  # pragma: no cover
    from quartier.geo.distributed import TiledResult


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
    the maps' stored layers and the evaluation's refresh of the indicators that read the current
    run: ``quartier.cli.coverage_gaps.after_coverage_run``)."""
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


def analyse_and_store_on_dask(
    conn: Conn,
    client: Any,
    conninfo: str,
    params: AnalysisParams | None = None,
    *,
    tile_cells: int | None = None,
    district_level: str = "stadtbezirk",
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Callable[[str], None] | None = None,
    on_stored: Callable[[Conn, int], object] | None = None,
    min_contributors: int = MIN_CONTRIBUTORS,
) -> tuple[int, TiledResult]:
    """:func:`analyse_and_store` with the analysis on ``client``'s Dask cluster, tile by tile
    (:mod:`quartier.geo.distributed`): the workers read the tiles' inputs from PostgreSQL
    themselves, a band of tiles at a time (``conninfo``; the client reads only the districts,
    :func:`quartier.geo.distributed.analyse_store`); each tile writes its cells with its
    own COPY over its own connection into the run's new table, which is attached, with the
    gaps and districts, in the caller's transaction. The same result as the single process. A
    failed run leaves no table behind."""
    from quartier.geo import distributed
    from quartier.geo.io import load_districts

    p = params or AnalysisParams()
    step = progress or (lambda _s: None)
    step(ANALYSIS_STEPS[0])
    size = tile_cells or distributed.TILE_CELLS
    found = load_districts(conn, district_level)
    districts = found if len(found) else None
    source = distributed.StoreInputs(conninfo, since, until, min_contributors)
    step(ANALYSIS_STEPS[1])  # the workers read each band of tiles as they analyse it
    return store_tiled(
        conn, client, conninfo, source, None, districts, p,
        tile_cells=size, progress=step, on_stored=on_stored,
    )  # fmt: skip


def store_tiled(
    conn: Conn,
    client: Any,
    conninfo: str,
    tiles: Any,
    operators: list[str] | None,
    districts: Any,
    params: AnalysisParams,
    *,
    tile_cells: int,
    source: Any = None,
    progress: Callable[[str], None] | None = None,
    on_stored: Callable[[Conn, int], object] | None = None,
) -> tuple[int, TiledResult]:
    """Analyse ``tiles`` (see :func:`quartier.geo.distributed.analyse_tiled`) and store the run:
    a new cell table (committed at once over a connection of its own, not yet attached), filled
    by each tile's COPY; then, in the caller's transaction, the run row, the table attached, the
    gaps and districts. A failed run drops its table."""
    import psycopg

    from quartier.geo import distributed

    step = progress or (lambda _s: None)
    with psycopg.connect(conninfo, autocommit=True) as own:
        run_id = reserve_run_id(own)
        create_cell_table(own, run_id)
    codes = tuple(str(c) for c in districts["code"]) if districts is not None else ()
    try:
        writer = CellTableWriter(conninfo, run_id, codes, tuple(params.profile.keys))
        if isinstance(tiles, distributed.StoreInputs):  # read band by band in the workers
            result = distributed.analyse_store(
                client, tiles, districts, params, tile_cells=tile_cells, sink=writer
            )
        else:
            result = distributed.analyse_tiled(
                client, tiles, operators, districts, params, tile_cells=tile_cells,
                source=source, sink=writer,
            )  # fmt: skip
        step(ANALYSIS_STEPS[2])
        insert_run(conn, params, result.inputs, result.operators, list(codes), run_id=run_id)
        attach_cells(conn, run_id)
        write_gaps(conn, run_id, result.gaps)
        write_districts(conn, run_id, district_rows(result), districts)
        if on_stored is not None:
            on_stored(conn, run_id)
    except BaseException:
        conn.rollback()
        with psycopg.connect(conninfo, autocommit=True) as own:
            drop_cell_table(own, run_id)
        raise
    return run_id, result
    return run_id, result
