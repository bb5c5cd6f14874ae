"""The maps by name, as the API (``/maps/{name}``) and ``quartier map NAME`` hand them out: each
reads what it shows from the store (through :mod:`quartier.geo`) and renders it with
:mod:`quartier.maps.render`. The one place that knows which map reads what."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
from psycopg import sql
from psycopg.rows import tuple_row

from quartier.errors import BadRequestError, NotFoundError
from quartier.evaluation import current
from quartier.evaluation import storage as evaluation_storage
from quartier.evaluation.indicators import CATALOGUE, IndicatorDefinition
from quartier.geo import features, grid, run_store, speedtest_cells
from quartier.geo import io as geo_io
from quartier.maps import image, layer_store
from quartier.maps.districts import DistrictStatus, Evaluated, choropleth, render_district_map
from quartier.maps.layers import (
    EMPTY,
    MapLayers,
    fine_geojson,
    measured_layers,
    mobile_layers,
    supply_layers,
)
from quartier.maps.measured import render_measured_layers
from quartier.maps.render import (
    CLASS_COLOURS,
    MapOptions,
    render_coverage_map,
    render_gap_layers,
    render_mobile_layers,
    render_sensor_map,
    text,
)
from quartier.store.db import Conn

#: A sensor without a reading for this long is marked stale on the sensor map.
STALE_AFTER_SECONDS = 6 * 3600


def coverage_page(conn: Conn, options: MapOptions) -> str:
    """Broadband: the stored gap analysis (classes by availability, clusters, dead zones; its
    layers as stored with the run) if there is one, else the measured speed per cell; districts
    and sensors."""
    districts = geo_io.load_districts(conn, "stadtbezirk")
    city = geo_io.load_districts(conn, "city")
    sensors = geo_io.load_sensor_locations(conn)
    try:
        run = run_store.get_run(conn)
    except NotFoundError:
        run = None
    if run is not None:
        stored = layer_store.load_layers(conn, run.id, "coverage")
        layers = stored or supply_layers(run_store.load_cells(conn, run), run.class_keys)
        return render_gap_layers(
            layers, run_store.load_gaps(conn, run), districts, run.classes, sensors, city=city,
            options=options,
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


#: the crowdsourced tables whose cells are published only with enough distinct devices
_CROWDSOURCED = ("speedtest", "mobile_measurement")


def contributed_cells(
    conn: Conn, table: str, min_contributors: int, e: npt.ArrayLike, n: npt.ArrayLike
) -> npt.NDArray[np.bool_]:
    """Per cell (``e``, ``n``: lower-left corners): whether the stored rows of ``table``
    (``speedtest`` or ``mobile_measurement``) in it come from at least ``min_contributors``
    distinct devices now (k-anonymity, docs/privacy.md).

    One ``count(distinct device_key)`` per cell over the table (reading the rows as integers
    by binary COPY and counting in numpy, or a hash aggregate over only the shown cells, were
    no faster: bench/maps.py), mapped onto the asked cells without a Python loop."""
    if table not in _CROWDSOURCED:
        raise ValueError(f"not a crowdsourced table: {table}")
    cell_e = np.asarray(e, dtype=np.int64).reshape(-1)
    cell_n = np.asarray(n, dtype=np.int64).reshape(-1)
    if not len(cell_e) or min_contributors <= 1:
        return np.ones(len(cell_e), dtype=np.bool_)
    query = sql.SQL(
        "select cell_e, cell_n from {} where cell_e is not null"
        " group by cell_e, cell_n having count(distinct device_key) >= %s"
    ).format(sql.Identifier(table))
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(query, (min_contributors,)).fetchall()
    if not rows:
        return np.zeros(len(cell_e), dtype=np.bool_)
    public = np.array(rows, dtype=np.int64).reshape(-1, 2)
    index = pd.MultiIndex.from_arrays([public[:, 0], public[:, 1]])
    return np.asarray(pd.MultiIndex.from_arrays([cell_e, cell_n]).isin(index), dtype=np.bool_)


def _published_cells(
    conn: Conn, run: run_store.Run, table: str, min_contributors: int, cells: pd.DataFrame
) -> pd.DataFrame:
    """``cells`` (of ``run``, measured in ``table``) that may be published at
    ``min_contributors``: by the distinct devices stored with the run's layers, or, for a run
    stored without them, counted in ``table`` now."""
    if min_contributors <= 1 or not len(cells):
        return cells
    counts = layer_store.load_device_counts(conn, run.id)
    if counts is None:
        return cells[contributed_cells(conn, table, min_contributors, cells["e"], cells["n"])]
    column = "signal_devices" if table == "mobile_measurement" else "test_devices"
    devices = layer_store.devices_of(counts, cells["e"], cells["n"], column)
    return cells[devices >= min_contributors]


def mobile_page(conn: Conn, options: MapOptions) -> str:
    """Mobile: the stored coverage run's measured 4G/5G coverage per operator, its dead zones
    and measured cells, as stored with the run (layer_store); at a higher
    ``privacy.min_contributors`` than the run was analysed at, only the cells measured by at
    least that many distinct devices (the run applied the threshold in force when it was
    analysed; a lower one then does not publish more now)."""
    districts = geo_io.load_districts(conn, "stadtbezirk")
    city = geo_io.load_districts(conn, "city")
    run = _current_run(conn)
    if run is None:
        return render_mobile_layers(None, districts, city=city, options=options)
    layers = layer_store.load_layers(conn, run.id, "mobile")
    if layers is None or options.min_contributors > layers.min_contributors:
        cells = run_store.load_cells(conn, run)
        cells = cells[cells["n_signal"].to_numpy() > 0]
        cells = _published_cells(conn, run, "mobile_measurement", options.min_contributors, cells)
        layers = (
            mobile_layers(
                cells, run.operators, run.technologies, min_contributors=options.min_contributors
            )
            if len(cells)
            else None
        )
    elif not layers.get("measured") or not layers.get("measured").cells:  # type: ignore[union-attr]
        layers = None  # nothing measured: the note as before an analysis
    return render_mobile_layers(
        layers, districts, city=city, parameters=run.parameters, options=options
    )


def _current_run(conn: Conn) -> run_store.Run | None:
    try:
        return run_store.get_run(conn)
    except NotFoundError:
        return None


def measured_page(conn: Conn, options: MapOptions) -> str:
    """Measured vs advertised: the stored coverage run's cells where the speed tests fall well
    below the best offer, and the other compared cells, as stored with the run (layer_store); at
    a higher ``privacy.min_contributors`` than the run was analysed at, only the cells whose
    speed tests come from at least that many distinct devices."""
    districts = geo_io.load_districts(conn, "stadtbezirk")
    city = geo_io.load_districts(conn, "city")
    run = _current_run(conn)
    if run is None:
        return render_measured_layers(
            MapLayers("measured", ()), districts, city=city, options=options, has_run=False
        )
    # served, the page holds only the overview (the 100 m cells are fetched when zoomed in)
    layers = layer_store.load_layers(
        conn, run.id, "measured", geojson_of=None if options.cells_url is None else ["coarse"]
    )
    if layers is None or options.min_contributors > layers.min_contributors:
        cells = run_store.load_cells(conn, run)
        cells = cells[np.isfinite(cells["measured_ratio"].to_numpy(dtype=np.float64))]
        cells = _published_cells(conn, run, "speedtest", options.min_contributors, cells)
        layers = measured_layers(
            cells, disagree_below=float(run.parameters.get("disagree_below", 0.3)),
            min_contributors=options.min_contributors,
        )  # fmt: skip
    return render_measured_layers(
        layers, districts, city=city, parameters=run.parameters, options=options
    )


#: the most 100 m cells ``/maps/measured/cells`` answers at once (the page asks from zoom 14
#: on, where a screen and its margin hold about 10,000 cells of a dense city)
MAX_FINE_CELLS = 25_000
#: ... and an area at most this many degrees wide and high (a view at zoom 14 is about 0.1)
MAX_FINE_DEGREES = 2.0


def _measured_cells_in(
    conn: Conn, run: run_store.Run, window: tuple[int, int, int, int]
) -> pd.DataFrame:
    """The run's compared cells (a finite measured ratio) with lower-left corners in
    ``window``, in the columns of :func:`quartier.geo.run_store.load_cells` that the measured
    map needs."""
    e0, e1, n0, n1 = window
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "select e, n, n_tests, measured_down_mbps, max_down_mbps, measured_ratio, disagreement"
            " from coverage_cell_data where run_id = %s and n between %s and %s"
            " and e between %s and %s and measured_ratio <> 'NaN'::real order by n, e",
            (run.id, n0, n1, e0, e1),
        ).fetchall()
    data = np.array(rows, dtype=np.float64).reshape(-1, 7)
    return pd.DataFrame({
        "e": data[:, 0].astype(np.int64), "n": data[:, 1].astype(np.int64),
        "n_tests": data[:, 2].astype(np.int64), "measured_down_mbps": data[:, 3],
        "max_down_mbps": data[:, 4], "measured_ratio": data[:, 5],
        "disagreement": pd.Categorical.from_codes(data[:, 6].astype(np.int64),
                                                  ["below", "above"]),
    })  # fmt: skip


def measured_cells(conn: Conn, options: MapOptions, bbox: tuple[float, float, float, float]) -> str:
    """The measured map zoomed in (``/maps/measured/cells?bbox=``): the stored run's compared
    100 m cells overlapping ``bbox`` (WGS84 west, south, east, north) as a GeoJSON
    FeatureCollection (:func:`quartier.maps.layers.fine_geojson`), only cells whose speed tests
    come from at least ``privacy.min_contributors`` distinct devices (as on the page); empty
    before an analysis. BadRequestError for an area of more than :data:`MAX_FINE_CELLS` cells."""
    west, south, east, north = bbox
    if east - west > MAX_FINE_DEGREES or north - south > MAX_FINE_DEGREES:
        raise BadRequestError(
            f"the bbox spans more than {MAX_FINE_DEGREES:g} degrees: ask for a smaller area (the"
            " map asks from zoom 14 on)"
        )
    run = _current_run(conn)
    if run is None:
        return EMPTY
    # the cells that can meet the box, as /coverage and /ogc find them
    cells = _measured_cells_in(conn, run, features._grid_range(bbox))
    if len(cells) > MAX_FINE_CELLS:
        raise BadRequestError(
            f"the bbox holds {len(cells)} compared cells, more than {MAX_FINE_CELLS}: ask for a"
            " smaller area (the map asks from zoom 14 on)"
        )
    stored = layer_store.stored_threshold(conn, run.id)
    if stored is None or options.min_contributors > stored:
        cells = _published_cells(conn, run, "speedtest", options.min_contributors, cells)
    return fine_geojson(cells, disagree_below=float(run.parameters.get("disagree_below", 0.3)))


def district_results(
    conn: Conn, indicator_id: str
) -> tuple[dict[str, DistrictStatus], Evaluated | None]:
    """The newest stored strategy evaluation's results for ``indicator_id`` per Stadtbezirk
    (status, target, deadline, KPI) and when it was made; empty without one."""
    try:
        run = evaluation_storage.get_run(conn)
    except NotFoundError:
        return {}, None
    found: dict[str, DistrictStatus] = {}
    for r in run["results"]:
        if (
            r.get("indicator_id") != indicator_id
            or r.get("scope_type") != "stadtbezirk"
            or r.get("variant", "")
            or str(r.get("scope_code")) in found
        ):
            continue
        found[str(r["scope_code"])] = DistrictStatus(
            status=str(r.get("status", "no_data")), target=float(r["target"]),
            deadline=str(r.get("deadline", "")), kpi=str(r.get("name", r.get("kpi_id", ""))),
        )  # fmt: skip
    if not found:
        return {}, None
    as_of = run["as_of"]
    return found, Evaluated(
        as_of=as_of.date().isoformat() if hasattr(as_of, "date") else str(as_of),
        strategy=str(run["strategy_title"]),
    )


@dataclass(frozen=True)
class DistrictData:
    definition: IndicatorDefinition
    values: dict[str, float | None]
    statuses: dict[str, DistrictStatus]
    evaluated: Evaluated | None
    districts: gpd.GeoDataFrame
    city: gpd.GeoDataFrame


def district_data(conn: Conn, options: MapOptions) -> DistrictData:
    """What the district map of ``options.indicator`` shows: the current value per
    Stadtbezirk and the status in the newest strategy evaluation. NotFoundError for an unknown
    indicator, BadRequestError for none or one without values per Stadtbezirk."""
    indicator = options.indicator
    known = ", ".join(sorted(CATALOGUE))
    if not indicator:
        raise BadRequestError(f"the district map needs an indicator (indicator=ID); known: {known}")
    definition = CATALOGUE.get(indicator)
    if definition is None:
        raise NotFoundError(f"no indicator {indicator!r}; known: {known}")
    if "stadtbezirk" not in definition.scopes:
        raise BadRequestError(f"indicator {indicator!r} has no values per Stadtbezirk")
    stored = current.current_json(
        conn, [indicator], max_age=timedelta(seconds=options.indicators_max_age_seconds),
        scope_type="stadtbezirk",
    ).parsed()  # fmt: skip
    statuses, evaluated = district_results(conn, indicator)
    return DistrictData(
        definition=definition,
        values={v.scope_code: v.value for v in stored.values if not v.variant},
        statuses=statuses,
        evaluated=evaluated,
        districts=geo_io.load_districts(conn, "stadtbezirk"),
        city=geo_io.load_districts(conn, "city"),
    )


def districts_page(conn: Conn, options: MapOptions) -> str:
    """District indicators: the current value of ``options.indicator`` per Stadtbezirk,
    coloured by its status in the newest strategy evaluation (target and status in the
    tooltip)."""
    d = district_data(conn, options)
    return render_district_map(
        d.districts, d.values, indicator_name=d.definition.name(options.lang),
        unit=d.definition.unit, statuses=d.statuses, evaluated=d.evaluated, city=d.city,
        options=options,
    )  # fmt: skip


# --- PNG images (reports, slides) ---------------------------------------------------------------


def coverage_image(conn: Conn, options: MapOptions) -> bytes:
    """The broadband map as a PNG: with a stored gap analysis the populated cells by the
    profile's class and the gap clusters, else the measured speed per cell (k-anonymous)."""
    lang = options.lang
    districts = geo_io.load_districts(conn, "stadtbezirk")
    city = geo_io.load_districts(conn, "city")
    run = _current_run(conn)
    if run is not None:
        cells = run_store.load_cells(conn, run)
        keys = run.class_keys
        populated = (cells["households"].to_numpy() > 0) & cells["class_key"].notna().to_numpy()
        index = cells["class_key"].cat.codes.to_numpy().astype(np.int64)
        index[~populated] = -1
        layer = image.CellLayer(
            e=cells["e"].to_numpy(dtype=np.int64), n=cells["n"].to_numpy(dtype=np.int64),
            colour_index=index,
            colours=[str(c.get("colour", "#999999")) for c in run.classes],
            labels=[str(c.get("label_en", c["label_de"]) if lang == "en" else c["label_de"])
                    for c in run.classes],
        )  # fmt: skip
        assert len(keys) == len(layer.colours)
        gaps = run_store.load_gaps(conn, run)
        return image.broadband_png(
            layer, title=text(lang, "coverage_title"), legend_title=text(lang, "legend_gaps"),
            lang=lang, data_source=options.data_source, districts=districts, city=city,
            outlines=gaps if len(gaps) else None,
            outline_label=text(lang, "gap_row", n=len(gaps)), note=text(lang, "gap_note_all"),
        )  # fmt: skip
    tests = geo_io.load_speedtests(conn)
    measured = speedtest_cells.classify_cells(
        tests, districts if len(districts) else None, min_contributors=options.min_contributors
    )
    e, n, _ok = grid.parse_cell_ids(measured["cell_id"].astype(str).to_numpy())
    order = {c.key: i for i, c in enumerate(speedtest_cells.SPEED_CLASSES)}
    layer = image.CellLayer(
        e=np.asarray(e, dtype=np.int64), n=np.asarray(n, dtype=np.int64),
        colour_index=measured["class_key"].astype(str).map(order).to_numpy(dtype=np.int64),
        colours=[CLASS_COLOURS[c.key] for c in speedtest_cells.SPEED_CLASSES],
        labels=[c.label_en if lang == "en" else c.label_de
                for c in speedtest_cells.SPEED_CLASSES],
    )  # fmt: skip
    return image.broadband_png(
        layer, title=text(lang, "coverage_title"), legend_title=text(lang, "legend_measured"),
        lang=lang, data_source=options.data_source, districts=districts, city=city,
    )  # fmt: skip


def districts_image(conn: Conn, options: MapOptions) -> bytes:
    """The district map of ``options.indicator`` as a PNG."""
    d = district_data(conn, options)
    codes = [str(c) for c in d.districts["code"]] if len(d.districts) else []
    chart = choropleth(codes, d.values, d.statuses, d.evaluated, d.definition.unit, options.lang)
    return image.district_png(
        d.districts, chart, title=d.definition.name(options.lang), unit=d.definition.unit,
        lang=options.lang, data_source=options.data_source, city=d.city,
    )  # fmt: skip


#: name -> the page (``/maps/{name}``, ``quartier map NAME``)
MAPS: dict[str, Callable[[Conn, MapOptions], str]] = {
    "coverage": coverage_page,
    "sensors": sensor_page,
    "mobile": mobile_page,
    "measured": measured_page,
    "districts": districts_page,
}
#: other names of the maps (``quartier map broadband``)
ALIASES: dict[str, str] = {"broadband": "coverage"}
#: name -> the map as a PNG (``quartier map NAME --png``)
IMAGES: dict[str, Callable[[Conn, MapOptions], bytes]] = {
    "coverage": coverage_image,
    "districts": districts_image,
}


def render_page(conn: Conn, name: str, options: MapOptions) -> str:
    page = MAPS.get(ALIASES.get(name, name))
    if page is None:
        raise NotFoundError(f"no map {name!r}; known: {', '.join(MAPS)}")
    return page(conn, options)


def render_image(conn: Conn, name: str, options: MapOptions) -> bytes:
    """The map ``name`` as a PNG (broadband and district maps)."""
    draw = IMAGES.get(ALIASES.get(name, name))
    if draw is None:
        raise NotFoundError(f"no PNG of map {name!r}; known: broadband (coverage), districts")
    return draw(conn, options)
