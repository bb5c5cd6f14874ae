"""What ``quartier privacy erase`` leaves of a Thing's data in the rollups, and the exact count of
all Observations through inserts, deletes and erasures (issue #13 ``$count``, migration 0047's
per-(datastream, month) counts kept beside the packed daily rollup). Real PostgreSQL, plain path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from quartier.config import Settings
from quartier.ingest.model import Batch, Observation, Position, Reading, Uplink
from quartier.ingest.writer import BatchWriter
from quartier.pseudonym import Pseudonymizer
from quartier.store import privacy, rollups, sensorthings_count, sta_write

pytestmark = pytest.mark.services

SECRET = b"a-test-secret-that-is-long-enough"
T0 = datetime(2026, 1, 3, tzinfo=UTC)
#: every table that holds rows per datastream id besides ``observation``
PER_DATASTREAM = (
    "observation",
    "observation_latest",
    "observation_15m",
    "observation_1h",
    "observation_1d",
    "observation_dirty",
    "observation_1h_packed",
    "observation_1d_packed",
    "observation_1d_count",
)


def _device_with_multidatastream(
    url: str, writer: BatchWriter, device: str, hours: int
) -> tuple[list[int], int]:
    """A citizen device's Thing (made by the ingest writer from an uplink) with one
    MultiDatastream, ``hours`` hours of observations on both, spanning two months. Returns
    its Datastream ids and its MultiDatastream's id."""
    times = [T0 + timedelta(hours=h) for h in range(hours)]
    batch = Batch()
    uplink = Uplink(
        "citizen-air", device, [Reading("pm25", t, 5.0) for t in times], Position(50.9, 6.9)
    )
    batch.uplinks.append((uplink, "t", b"", T0))
    writer.write(batch)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select d.thing_id, s.sensor_id from device d"
            " join datastream s on s.thing_id = d.thing_id where d.device_key = %s",
            (device,),
        ).fetchone()
        assert row is not None
        thing, sensor = row
        streams = [
            int(r[0])
            for r in conn.execute("select id from datastream where thing_id = %s", (thing,))
        ]
        mds = conn.execute(
            "insert into multi_datastream (name, multi_observation_data_types,"
            " unit_of_measurements, thing_id, sensor_id) values"
            " ('wind', '[\"x\", \"y\"]', '[{}, {}]', %s, %s) returning id",
            (thing, sensor),
        ).fetchone()
        assert mds is not None
    batch = Batch(source="http")
    batch.observations = [Observation(-int(mds[0]), t, None, [1.0, 2.0]) for t in times]
    writer.write(batch)
    return streams, int(mds[0])


def _refresh_rollups(url: str) -> None:
    """The months of the test data partitioned, and every rollup refreshed."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "select quartier_ensure_observation_partitions(%s, %s)", (T0, T0 + timedelta(days=62))
        )
        rollups.refresh_all(conn)


def _left(url: str, ids: list[int]) -> dict[str, int]:
    """The rows each per-datastream table still holds under ``ids``, where it holds any."""
    out = {}
    with psycopg.connect(url) as conn:
        for table in PER_DATASTREAM:
            row = conn.execute(
                sql.SQL("select count(*) from {} where datastream_id = any(%s)").format(
                    sql.Identifier(table)
                ),
                (ids,),
            ).fetchone()
            assert row is not None
            if row[0]:
                out[table] = int(row[0])
    return out


def test_erasing_a_thing_with_a_multidatastream_leaves_no_rollup_rows(settings: Settings) -> None:
    url = settings.require_database_url()
    writer = BatchWriter(url, auto_register=True)
    try:
        streams, mds = _device_with_multidatastream(url, writer, "balcony-12", 24 * 40)
        kept, _ = _device_with_multidatastream(url, writer, "balcony-13", 24 * 3)
    finally:
        writer.close()
    _refresh_rollups(url)
    ids = [*streams, -mds]
    before = _left(url, ids)
    # the data the erasure must take: raw rows, latest values and every rollup of both kinds
    assert set(before) == set(PER_DATASTREAM) - {"observation_dirty"}, before
    assert _left(url, [-mds]).keys() == before.keys()
    pseudonym = Pseudonymizer(SECRET)("balcony-12")
    with psycopg.connect(url) as conn:
        deleted = privacy.erase_device(conn, pseudonym, "balcony-12")
        conn.commit()
    assert _left(url, ids) == {}
    assert deleted["observation"] == 2 * 24 * 40  # the MultiDatastream's count too
    assert _left(url, kept)  # the other device's data stays
    with psycopg.connect(url) as conn:
        assert sensorthings_count.count(conn) == _count_star(conn)


def _count_star(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select count(*) from observation").fetchone()
    assert row is not None
    return int(row[0])


def _counts_match_packed(conn: psycopg.Connection[Any]) -> None:
    """Every row of ``observation_1d_count`` is the sum of its packed row's ``n_all``, and
    there is one for every packed row and no other."""
    packed = {
        (r[0], r[1]): int(np.frombuffer(bytes(r[2]), dtype=">i4").sum(dtype=np.int64))
        for r in conn.execute("select datastream_id, start, n_all from observation_1d_packed")
    }
    counted = {
        (r[0], r[1]): int(r[2])
        for r in conn.execute("select datastream_id, start, n_all from observation_1d_count")
    }
    assert counted == packed


def test_count_of_all_observations_stays_exact_through_inserts_deletes_and_erasure(
    settings: Settings,
) -> None:
    url = settings.require_database_url()
    writer = BatchWriter(url, auto_register=True)
    try:
        gone, gone_mds = _device_with_multidatastream(url, writer, "balcony-21", 24 * 45)
        stays, stays_mds = _device_with_multidatastream(url, writer, "balcony-22", 24 * 50)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "select quartier_ensure_observation_partitions(%s, %s)",
                (T0, T0 + timedelta(days=62)),
            )
            rollups.refresh_all(conn)
            _counts_match_packed(conn)
            assert conn.execute("select count(*) from observation_1d_count").fetchone() != (0,)
            assert sensorthings_count.count(conn) == _count_star(conn) == 2 * 24 * (45 + 50)
            # late data into a counted month, then the refresh that repacks it
            batch = Batch(source="http")
            batch.observations = [
                Observation(stays[0], T0 + timedelta(hours=h, minutes=30), 1.0) for h in range(30)
            ]
            writer.write(batch)
            assert sensorthings_count.count(conn) == _count_star(conn)  # dirty days, raw
            rollups.refresh_all(conn)
            _counts_match_packed(conn)
            assert sensorthings_count.count(conn) == _count_star(conn)
            # deletes through the SensorThings delete path (they mark their days dirty)
            with psycopg.connect(url, row_factory=dict_row) as dconn:
                sta_write.delete_observations(
                    dconn,
                    sql.SQL("o.datastream_id = any(%(d)s) and o.phenomenon_time < %(b)s"),
                    {"d": [stays[0], -stays_mds], "b": T0 + timedelta(days=33)},
                )
            assert sensorthings_count.count(conn) == _count_star(conn)
            rollups.refresh_all(conn)
            _counts_match_packed(conn)
            assert sensorthings_count.count(conn) == _count_star(conn)
            # a whole month rebuilt (delete and insert of its packed rows)
            rollups.rebuild(conn, T0, T0 + timedelta(days=40))
            _counts_match_packed(conn)
            assert sensorthings_count.count(conn) == _count_star(conn)
    finally:
        writer.close()
    with psycopg.connect(url) as conn:
        privacy.erase_device(conn, Pseudonymizer(SECRET)("balcony-21"), "balcony-21")
        conn.commit()
        assert _left(url, [*gone, -gone_mds]) == {}
        _counts_match_packed(conn)
        assert sensorthings_count.count(conn) == _count_star(conn) > 0
        # a TRUNCATE of the packed rollup takes the counts with it
        conn.execute("truncate observation_1d_packed")
        assert conn.execute("select count(*) from observation_1d_count").fetchone() == (0,)
        conn.rollback()


def test_deleting_a_multidatastream_through_the_api_takes_its_rollup_rows(
    settings: Settings,
) -> None:
    """A DELETE of a MultiDatastream (the SensorThings write path) leaves no row under its
    observation id (-id) in any per-datastream table, rollups included (migration 0049), and
    its Thing's Datastreams keep theirs."""
    url = settings.require_database_url()
    writer = BatchWriter(url, auto_register=True)
    try:
        streams, mds = _device_with_multidatastream(url, writer, "balcony-31", 24 * 35)
    finally:
        writer.close()
    _refresh_rollups(url)
    assert set(_left(url, [-mds])) == set(PER_DATASTREAM) - {"observation_dirty"}
    kept = _left(url, streams)
    with psycopg.connect(url, row_factory=dict_row) as conn:
        sta_write.delete(conn, "MultiDatastreams", mds)
        conn.commit()
    assert _left(url, [-mds]) == {}
    assert _left(url, streams) == kept
    with psycopg.connect(url) as conn:
        _counts_match_packed(conn)
        assert sensorthings_count.count(conn) == _count_star(conn) == kept["observation"]
