"""What follows a stored coverage run, for the composition roots (``quartier coverage analyse``,
the demo): the maps' layers of the run (``maps.layer_store``, made once so that a map page reads
them) and the indicators that read the current run (``evaluation.current``). ``geo`` knows
neither: it calls the hook it is given (``geo.service.analyse_and_store(on_stored=…)``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from quartier.store.db import Conn


def after_coverage_run(
    min_contributors: int, *, since: datetime | None = None, until: datetime | None = None
) -> Callable[[Conn, int], None]:
    """The ``on_stored`` hook of a run analysed at privacy threshold ``min_contributors`` over
    the measurements of ``[since, until]``: store its map layers, then refresh the indicators,
    in the run's transaction."""
    from quartier.evaluation.current import refresh_after_coverage_run
    from quartier.maps.layer_store import store_run_layers

    def hook(conn: Conn, run_id: int) -> None:
        store_run_layers(conn, run_id, min_contributors=min_contributors, since=since, until=until)
        refresh_after_coverage_run(conn, run_id)

    return hook
