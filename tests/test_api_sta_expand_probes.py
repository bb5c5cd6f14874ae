"""How much of ``observation`` the fast ``$expand``'s span statement reads
(``store/sensorthings_expand.py``): with current hints, each Datastream's bounds are one probe
into the partition that holds the oldest observation and one into the partition that holds the
newest (the monthly partitions between them, those made ahead of time and the empty default
partition are never descended), the newest observation's row
comes from the same probe, and with a stale hint the plain probe answers, exactly. Real
PostgreSQL, plain path, ``EXPLAIN (ANALYZE)`` of the statement as the API runs it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from quartier.config import Settings
from quartier.store import rollups
from quartier.store import sensorthings_expand as qx
from quartier.store.pgcopy import Int8Array

pytestmark = pytest.mark.services

START = datetime(2026, 1, 1, tzinfo=UTC)
MONTHS = 6


def _fill(conn: psycopg.Connection[dict[str, Any]]) -> list[int]:
    """Four Datastreams with an observation every 6 hours from January to June."""
    conn.execute(
        "select quartier_ensure_observation_partitions(%s, %s)",
        (START, datetime(2026, 6, 15, tzinfo=UTC)),
    )
    thing = conn.execute("insert into thing (name) values ('t') returning id").fetchone()
    sensor = conn.execute(
        "insert into sensor (name, encoding_type, metadata) values ('s', 'text/html', '')"
        " returning id"
    ).fetchone()
    prop = conn.execute(
        "insert into observed_property (name, definition) values ('p', 'x') returning id"
    ).fetchone()
    assert thing and sensor and prop
    ids = []
    for k in range(4):
        row = conn.execute(
            "insert into datastream (name, unit_of_measurement, thing_id, sensor_id,"
            " observed_property_id) values (%s, %s, %s, %s, %s) returning id",
            (f"d{k}", Jsonb({"name": "x"}), thing["id"], sensor["id"], prop["id"]),
        ).fetchone()
        assert row
        ids.append(int(row["id"]))
    end = datetime(2026, 6, 30, tzinfo=UTC)
    conn.execute(
        "insert into observation (datastream_id, phenomenon_time, result)"
        " select d, t, 1.0 from unnest(%s::bigint[]) d,"
        " generate_series(%s::timestamptz, %s::timestamptz, interval '6 hours') t",
        (ids, START + timedelta(hours=3), end),
    )
    conn.execute(
        "insert into observation_latest (datastream_id, phenomenon_time, result)"
        " select distinct on (datastream_id) datastream_id, phenomenon_time, result"
        " from observation order by datastream_id, phenomenon_time desc"
        " on conflict (datastream_id) do update set phenomenon_time = excluded.phenomenon_time"
    )
    rollups.rebuild(conn, START, START + timedelta(days=31 * MONTHS))
    return ids


def _executed(plan: dict[str, Any]) -> list[str]:
    """The observation partitions whose primary key the plan descended, once per descent
    (actual loops; not the one look at the partitions after the newest hint, a scan each)."""
    out = []
    index_scan = plan["Node Type"] in ("Index Scan", "Index Only Scan")
    name = str(plan.get("Relation Name", ""))
    if index_scan and (name.startswith("observation_p") or name == "observation_default"):
        out += [name] * int(plan.get("Actual Loops", 0))
    for child in plan.get("Plans", []):
        out += _executed(child)
    return out


def _plan(conn: psycopg.Connection[dict[str, Any]], ids: list[int]) -> list[str]:
    query = qx._QUERIES[False, "last"]
    row = conn.execute(
        "explain (analyze, format json) " + query, {"_ids": Int8Array(np.array(ids, np.int64))}
    ).fetchone()
    assert row is not None
    return _executed(row["QUERY PLAN"][0]["Plan"])


def test_each_bound_is_one_probe_into_the_partition_that_holds_it(settings: Settings) -> None:
    url = settings.require_database_url()
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        ids = _fill(conn)
        executed = _plan(conn, ids)
        # the oldest in January's partition, the newest in June's, one descent each per
        # Datastream; none into the four months between, none into the default partition
        assert sorted(executed) == ["observation_p202601"] * 4 + ["observation_p202606"] * 4
        # partitions made ahead of time (as `quartier db migrate` and the ingester do) are not
        # descended either, while they are empty
        conn.execute(
            "select quartier_ensure_observation_partitions(%s, %s)",
            (datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 10, 15, tzinfo=UTC)),
        )
        executed = _plan(conn, ids)
        assert sorted(executed) == ["observation_p202601"] * 4 + ["observation_p202606"] * 4
        # ... and are, once one holds an observation (of any Datastream), with the exact answer
        conn.execute(
            "insert into observation (datastream_id, phenomenon_time, result) values (%s, %s, 2)",
            (ids[3], datetime(2026, 9, 2, tzinfo=UTC)),
        )
        assert "observation_p202609" in _plan(conn, ids)
        assert qx.spans(conn, ids)[ids[3]]["t_max"] == datetime(2026, 9, 2, tzinfo=UTC)
        conn.execute(
            "delete from observation where datastream_id = %s and phenomenon_time = %s",
            (ids[3], datetime(2026, 9, 2, tzinfo=UTC)),
        )
        spans = qx.spans(conn, ids, end="last")
        for ds in ids:
            assert spans[ds]["t_min"] == START + timedelta(hours=3)
            assert spans[ds]["t_max"] == datetime(2026, 6, 29, 21, tzinfo=UTC)
            assert spans[ds]["phenomenon_time"] == spans[ds]["t_max"]
        # a stale hint (the newest observation deleted behind the writer's back): the plain
        # probe over every partition answers, exactly
        conn.execute(
            "delete from observation where datastream_id = %s and phenomenon_time >= %s",
            (ids[0], datetime(2026, 3, 10, tzinfo=UTC)),
        )
        executed = _plan(conn, ids)
        assert {"observation_p202603", "observation_p202604"} <= set(executed)
        spans = qx.spans(conn, ids, end="last")
        assert spans[ids[0]]["t_max"] == datetime(2026, 3, 9, 21, tzinfo=UTC)
        assert spans[ids[1]]["t_max"] == datetime(2026, 6, 29, 21, tzinfo=UTC)
