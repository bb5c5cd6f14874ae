"""Observation ids and FeatureOfInterest navigation: what the choices cost (issue #13 item 7,
docs/sensorthings.md "Observation ids").

    .venv/bin/python bench/sta_ids.py [--datastreams 100] [--instants 3000] [--foi-share 0.05]

Loads ``datastreams × instants`` observations (one a minute, as bench/store.py does) into the
migrated schema, gives ``--foi-share`` of them a FeatureOfInterest (as observations created over
REST have; ingested ones have none) and then measures, in one run:

- bytes per observation of the schema as it is (derived ids, primary key
  ``(datastream_id, phenomenon_time)``), and of the two layouts a stored id would need: a bigint
  ``id`` column with its own index (ids that survive a change of phenomenonTime), and a smallint
  discriminator in the primary key (two observations of one datastream at one instant);
- ``FeaturesOfInterest(id)/Observations`` through the API (p50 of 20 requests) and the plan of its
  query, without and with migration 0041's partial index on ``observation (foi_id, ...)``, and
  that index's size;
- COPY speed of ingest-shaped rows (no FeatureOfInterest) without and with that index.

Starts its own PostgreSQL in a temp dir unless QUARTIER_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store import fresh_db, make_datastreams, rows_for

from quartier.services import LocalServices
from quartier.store.pgcopy import write_copy_fixed

T0 = datetime(2025, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=1)
INDEX = "observation_foi_idx"
MIGRATION = (
    Path(__file__).resolve().parents[1] / "quartier/store/migrations/0041_observation_foi_index.sql"
)


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


def one(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def per_row(conn: psycopg.Connection[Any], table: str) -> float:
    """Bytes on disk (heap, indexes, TOAST, every partition) per row of ``table``."""
    conn.execute(f"vacuum (analyze) {table}")
    size = conn.execute(
        "select coalesce(sum(pg_total_relation_size(c.oid)), 0) from pg_class c"
        " where c.oid = %s::regclass or c.oid in"
        " (select inhrelid from pg_inherits where inhparent = %s::regclass)",
        (table, table),
    ).fetchone()
    rows = conn.execute(f"select count(*) from {table}").fetchone()
    assert size is not None and rows is not None
    return float(size[0]) / max(1, int(rows[0]))


def load(url: str, ds_ids: np.ndarray, t0: datetime, instants: int) -> float:
    """COPY ``instants`` minutes of every datastream; seconds taken."""
    t = time.perf_counter()
    with psycopg.connect(url) as conn:
        done = 0
        chunk = max(1, 200_000 // len(ds_ids))
        while done < instants:
            steps = min(chunk, instants - done)
            write_copy_fixed(conn, "observation", rows_for(ds_ids, t0 + done * STEP, steps, STEP))
            done += steps
        conn.commit()
    return time.perf_counter() - t


def api_p50(url: str, foi: int) -> tuple[float, str]:
    """p50 of ``FeaturesOfInterest(foi)/Observations?$top=100`` through the app, and the plan
    of the query the app sent for it (caught on its way to PostgreSQL)."""
    from fastapi.testclient import TestClient
    from psycopg import sql

    from quartier.api.app import create_app
    from quartier.config import Settings

    caught: list[tuple[Any, Any]] = []
    real = psycopg.Cursor.execute

    def spy(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        text = query.as_string(self.connection) if hasattr(query, "as_string") else str(query)
        if "foi_id = _p.id" in text.replace('"', "") and "limit" in text.lower():
            caught.append((query, params))
        return real(self, query, params, **kw)

    psycopg.Cursor.execute = spy  # type: ignore[method-assign]

    s = Settings(_env_file=None, database={"url": url}, api={"rate_per_second": 1e6})
    times = []
    with TestClient(create_app(s)) as c:
        for _ in range(23):
            t = time.perf_counter()
            r = c.get(f"/v1.1/FeaturesOfInterest({foi})/Observations", params={"$top": 100})
            times.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
            assert len(r.json()["value"]) == 100
    psycopg.Cursor.execute = real  # type: ignore[method-assign]
    query, params = caught[-1]
    if not isinstance(query, sql.Composable):
        query = sql.SQL(query)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            sql.SQL("explain (analyze, costs off, timing off, summary on) ") + query, params
        ).fetchall()
    shown = "\n".join("    " + r[0] for r in rows)
    return statistics.median(times[3:]) * 1000, f"    {query.as_string(None)}\n{shown}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datastreams", type=int, default=100)
    ap.add_argument("--instants", type=int, default=3000)
    ap.add_argument("--foi-share", type=float, default=0.05)
    args = ap.parse_args()

    admin = os.environ.get("QUARTIER_TEST_DATABASE_URL")
    local = None
    state_dir = None
    if not admin:
        state_dir = Path(tempfile.mkdtemp(prefix="bench-ids-"))
        os.chmod(state_dir, 0o755)
        local = LocalServices(state_dir, fast_unsafe=True, allow_anonymous=True)
        admin = local.up().database_url
    try:
        url = fresh_db(admin)
        ds_ids = make_datastreams(url, args.datastreams)
        end = T0 + args.instants * STEP
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "select quartier_ensure_observation_partitions(%s, %s)",
                (T0, end + timedelta(days=40)),
            )
        load(url, ds_ids, T0, args.instants)
        n_foi = max(1, round(len(ds_ids) * args.foi_share))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "insert into feature_of_interest (name, description, encoding_type, feature)"
                " select 'f' || g, '', 'application/geo+json',"
                " st_setsrid(st_makepoint(6.9, 50.9), 4326)"
                " from generate_series(1, %s) g",
                (n_foi,),
            )
            fois = [r[0] for r in conn.execute("select id from feature_of_interest order by id")]
            # the last n_foi datastreams' observations, one FeatureOfInterest each (REST-made);
            # last in the collection's order (datastream_id, phenomenon_time), which without an
            # index on foi_id is the worst case
            conn.execute(f"drop index if exists {INDEX}")  # made by migration 0041
            for ds, foi in zip(ds_ids[-n_foi:], fois, strict=True):
                conn.execute(
                    "update observation set foi_id = %s where datastream_id = %s",
                    (foi, int(ds)),
                )
            conn.execute("vacuum full observation_p202501")
            rows = one(conn, "select count(*) from observation")
            with_foi = one(conn, "select count(*) from observation where foi_id is not null")
            log(f"{rows:,} observations, {with_foi:,} with a FeatureOfInterest")

            base = per_row(conn, "observation")
            # the layouts a stored id would need, on the same rows: one plain table holds them
            # as one monthly partition would; with the column 0022 dropped (a dropped column
            # keeps its place in every row's null bitmap)
            for t in ("obs_with_id", "obs_with_seq"):
                conn.execute(f"create table {t} (like observation)")
                conn.execute(f"alter table {t} add column gone bigint")
                conn.execute(f"alter table {t} drop column gone")
            conn.execute("alter table obs_with_id add column id bigint not null")
            conn.execute(
                "insert into obs_with_id select o.*, row_number() over () from observation o"
            )
            conn.execute("alter table obs_with_id add primary key (datastream_id, phenomenon_time)")
            conn.execute("create index on obs_with_id (id)")
            with_id = per_row(conn, "obs_with_id")
            conn.execute("alter table obs_with_seq add column seq smallint not null default 0")
            conn.execute("insert into obs_with_seq select o.*, 0 from observation o")
            conn.execute(
                "alter table obs_with_seq add primary key (datastream_id, phenomenon_time, seq)"
            )
            with_seq = per_row(conn, "obs_with_seq")
            conn.execute("drop table obs_with_id, obs_with_seq")

            print(f"\nbytes per observation ({rows:,} rows, {args.datastreams} datastreams):")
            print(f"  as stored (derived ids):                         {base:6.1f}")
            print(f"  + bigint id column and its index (stable ids):   {with_id:6.1f}")
            print(f"  + smallint discriminator in the primary key:     {with_seq:6.1f}")

            foi = fois[0]
        before_ms, before_plan = api_p50(url, foi)
        print("\nFeaturesOfInterest(id)/Observations?$top=100, no index on foi_id:")
        print(before_plan)
        print(f"  API p50: {before_ms:.1f} ms")

        with psycopg.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            conn.execute(MIGRATION.read_text())
            built = time.perf_counter() - started
            conn.execute("analyze observation")
            idx = one(
                conn,
                "select coalesce(sum(pg_relation_size(i.indexrelid)), 0) from pg_index i"
                " join pg_class c on c.oid = i.indexrelid"
                " where i.indrelid in (select inhrelid from pg_inherits"
                " where inhparent = 'observation'::regclass)"
                " and pg_get_indexdef(i.indexrelid) like '%foi_id%'",
            )
        after_ms, after_plan = api_p50(url, foi)
        print(f"\nwith the partial index (built in {built:.2f} s):")
        print(after_plan)
        print(f"  API p50: {after_ms:.1f} ms")
        print(
            f"  index size: {idx:,} bytes = {idx / with_foi:.1f} B per observation with a"
            f" FeatureOfInterest, {idx / rows:.2f} B per observation overall"
        )

        # ingest-shaped COPY (no FeatureOfInterest) after the last instant: with the index, then
        # without it, the same number of rows each
        later = end + timedelta(days=1)
        with_index_s = load(url, ds_ids, later, args.instants)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"drop index {INDEX}")
        without_s = load(url, ds_ids, later + args.instants * STEP, args.instants)
        n = len(ds_ids) * args.instants
        print(
            f"\nCOPY of {n:,} ingest rows: {n / without_s:,.0f} rows/s without the index,"
            f" {n / with_index_s:,.0f} rows/s with it"
        )
    finally:
        if local is not None:
            local.down()
            shutil.rmtree(state_dir or "", ignore_errors=True)


if __name__ == "__main__":
    main()
