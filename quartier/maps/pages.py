"""The maps by name, as the API (``/maps/{name}``) and ``quartier map NAME`` hand them out: each
reads what it shows from the store (through :mod:`quartier.geo`) and renders it with
:mod:`quartier.maps.render`. The one place that knows which map reads what."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from psycopg.rows import tuple_row

from quartier.errors import NotFoundError
from quartier.geo import io as geo_io
from quartier.geo import run_store, speedtest_cells
from quartier.maps.render import (
    MapOptions,
    render_coverage_map,
    render_gap_map,
    render_mobile_map,
    render_sensor_map,
)
from quartier.store.db import Conn

#: A sensor without a reading for this long is marked stale on the sensor map.
STALE_AFTER_SECONDS = 6 * 3600


def coverage_page(conn: Conn, options: MapOptions) -> str:
    """Broadband: the stored gap analysis (classes by availability, clusters, dead zones) if
    there is one, else the measured speed per cell; districts and sensors."""
    districts = geo_io.load_districts(conn, "stadtbezirk")
    city = geo_io.load_districts(conn, "city")
    sensors = geo_io.load_sensor_locations(conn)
    try:
        run = run_store.get_run(conn)
    except NotFoundError:
        run = None
    if run is not None:
        return render_gap_map(
            run_store.load_cells(conn, run), run_store.load_gaps(conn, run), districts,
            run.classes, sensors, city=city, options=options,
        )  # fmt: skip
    tests = geo_io.load_speedtests(conn)
    cells = speedtest_cells.classify_cells(
        tests, districts if len(districts) else None, min_contributors=options.min_contributors
    )
    return render_coverage_map(cells, sensors, districts, city=city, options=options)


def latest_readings(conn: Conn) -> pd.DataFrame:
    """The newest reading of every datastream (not later than now): ``thing_id``, ``name`` (the
    observed property), ``unit`` (symbol), ``value``, ``time``; None for a datastream without
    one. One index lookup per datastream."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            """
            select ds.thing_id, op.name,
                   coalesce(ds.unit_of_measurement->>'symbol', ''), o.result, o.phenomenon_time
            from datastream ds
            join observed_property op on op.id = ds.observed_property_id
            left join lateral (
                select result, phenomenon_time from observation
                where datastream_id = ds.id and phenomenon_time <= now()
                order by phenomenon_time desc limit 1
            ) o on true
            order by ds.thing_id, op.name
            """
        ).fetchall()
    return pd.DataFrame(rows, columns=["thing_id", "name", "unit", "value", "time"])


def sensor_page(conn: Conn, options: MapOptions, now: datetime | None = None) -> str:
    """Sensors: every sensor (clustered), its latest values with unit and age, stale ones grey."""
    return render_sensor_map(
        geo_io.load_sensor_locations(conn),
        latest_readings(conn),
        geo_io.load_districts(conn, "stadtbezirk"),
        now=now or datetime.now(UTC),
        stale_after_seconds=STALE_AFTER_SECONDS,
        city=geo_io.load_districts(conn, "city"),
        options=options,
    )


def mobile_contributed_cells(conn: Conn, min_contributors: int) -> set[tuple[int, int]]:
    """The cells (``cell_e``, ``cell_n``) of the stored signal measurements with at least
    ``min_contributors`` distinct devices (k-anonymity, docs/privacy.md)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "select cell_e, cell_n from mobile_measurement where cell_e is not null"
            " group by cell_e, cell_n having count(distinct device_key) >= %s",
            (min_contributors,),
        ).fetchall()
    return {(int(e), int(n)) for e, n in rows}


def mobile_page(conn: Conn, options: MapOptions) -> str:
    """Mobile: the stored coverage run's measured 4G/5G coverage per operator, its dead zones
    and measured cells; only cells that also now have signal measurements of at least
    ``privacy.min_contributors`` distinct devices (the run applied the threshold in force when
    it was analysed; a lower one then does not publish more now)."""
    districts = geo_io.load_districts(conn, "stadtbezirk")
    city = geo_io.load_districts(conn, "city")
    try:
        run = run_store.get_run(conn)
    except NotFoundError:
        run = None
    if run is None:
        return render_mobile_map(
            pd.DataFrame(), [], [], districts, city=city, options=options
        )  # fmt: skip
    cells = run_store.load_cells(conn, run)
    cells = cells[cells["n_signal"].to_numpy() > 0]
    if options.min_contributors > 1 and len(cells):
        public = mobile_contributed_cells(conn, options.min_contributors)
        keep = np.fromiter(
            ((e, n) in public for e, n in zip(cells["e"], cells["n"], strict=True)),
            dtype=bool, count=len(cells),
        )  # fmt: skip
        cells = cells[keep]
    return render_mobile_map(
        cells, run.operators, run.technologies, districts, city=city,
        parameters=run.parameters, options=options,
    )  # fmt: skip


#: name -> the page (``/maps/{name}``, ``quartier map NAME``)
MAPS: dict[str, Callable[[Conn, MapOptions], str]] = {
    "coverage": coverage_page,
    "sensors": sensor_page,
    "mobile": mobile_page,
}


def render_page(conn: Conn, name: str, options: MapOptions) -> str:
    page = MAPS.get(name)
    if page is None:
        raise NotFoundError(f"no map {name!r}; known: {', '.join(MAPS)}")
    return page(conn, options)
