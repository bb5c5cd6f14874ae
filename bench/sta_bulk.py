"""CreateObservations (dataArray) for a MultiDatastream against the same for a Datastream, in one
run (issue #13, docs/sensorthings.md "MultiDatastream"): both go through the ingest writer's
COPY, but a MultiDatastream's rows (array results) are parsed by the full Observation parser and
stored as JSON, a Datastream's plain rows by the fast row parser as numbers. The Datastream is
the baseline; the verdict is the MultiDatastream's rows/s as a share of it.

    .venv/bin/python bench/sta_bulk.py [--rows 5000] [--rounds 3]

Starts its own PostgreSQL (durable: fsync and synchronous_commit on) in a temp dir unless
QUARTIER_TEST_DATABASE_URL names a server; the app runs in process (FastAPI's TestClient), so the
times are the server's work without a network. Rounds alternate Datastream and MultiDatastream,
each round on new instants.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient

from quartier.api.app import create_app
from quartier.config import DatabaseSettings, Settings
from quartier.services import LocalServices
from quartier.store import api_keys
from quartier.store.migrate import migrate

T0 = datetime(2025, 1, 1, tzinfo=UTC)
MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
ND = {"name": "bench", "description": "d"}


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


def setup(client: TestClient, headers: dict[str, str]) -> tuple[int, int]:
    """A Thing with one Datastream and one MultiDatastream of two values; their ids."""
    sensor = {**ND, "encodingType": "e", "metadata": "m"}
    body = {
        **ND,
        "Datastreams": [
            {
                **ND,
                "observationType": MEASUREMENT,
                "unitOfMeasurement": {"name": "degree Celsius"},
                "Sensor": sensor,
                "ObservedProperty": {**ND, "definition": "bench:t"},
            }
        ],
    }
    r = client.post("/v1.1/Things", json=body, headers=headers)
    assert r.status_code == 201, r.text
    thing = r.json()["@iot.id"]
    ds = client.get(f"/v1.1/Things({thing})/Datastreams").json()["value"][0]["@iot.id"]
    mds_body = {
        **ND,
        "multiObservationDataTypes": [MEASUREMENT, MEASUREMENT],
        "unitOfMeasurements": [{"name": "degree Celsius"}, {"name": "percent"}],
        "Thing": {"@iot.id": thing},
        "Sensor": sensor,
        "ObservedProperties": [{**ND, "definition": "bench:t2"}, {**ND, "definition": "bench:h"}],
    }
    r = client.post("/v1.1/MultiDatastreams", json=mds_body, headers=headers)
    assert r.status_code == 201, r.text
    return int(ds), int(r.json()["@iot.id"])


def body(owner: str, entity_id: int, start: datetime, rows: int) -> list[dict[str, Any]]:
    multi = owner == "MultiDatastream"
    data = [
        [
            (start + timedelta(seconds=i)).isoformat(),
            [20 + i % 10 / 10, 50 + i % 7] if multi else 20 + i % 10 / 10,
        ]
        for i in range(rows)
    ]
    return [
        {
            owner: {"@iot.id": entity_id},
            "components": ["phenomenonTime", "result"],
            "dataArray": data,
        }
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    state_dir = None
    local = None
    admin = os.environ.get("QUARTIER_TEST_DATABASE_URL")
    if admin is None:
        state_dir = Path(tempfile.mkdtemp(prefix="bench-sta-bulk-"))
        local = LocalServices(state_dir, allow_anonymous=True)
        admin = local.up().database_url
    try:
        name = f"bench_sta_bulk_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"create database {name}")
        url = psycopg.conninfo.make_conninfo(admin, dbname=name)
        migrate(url, timescaledb="postgres")
        with psycopg.connect(url, autocommit=True) as conn:
            _, token = api_keys.create(
                conn, "bench", ["entities:write", "observations:write"], created_by="bench"
            )
        headers = {"Authorization": f"Bearer {token}"}
        settings = Settings(database=DatabaseSettings(url=url))
        settings.api.max_body_bytes = 64 * 1024 * 1024
        settings.api.rate_per_second = 1e6
        settings.api.rate_burst = 1e6
        with TestClient(create_app(settings)) as client:
            ds, mds = setup(client, headers)
            rates: dict[str, list[float]] = {"Datastream": [], "MultiDatastream": []}
            start = T0
            for k in range(args.rounds + 1):  # round 0 warms up
                for owner, eid in (("Datastream", ds), ("MultiDatastream", mds)):
                    payload = body(owner, eid, start, args.rows)
                    t = time.perf_counter()
                    r = client.post("/v1.1/CreateObservations", json=payload, headers=headers)
                    took = time.perf_counter() - t
                    assert r.status_code == 201, r.text
                    links = r.json()
                    assert len(links) == args.rows and "error" not in links, links[:3]
                    if k > 0:
                        rates[owner].append(args.rows / took)
                        log(f"round {k} {owner}: {args.rows} rows in {took:.2f} s")
                start += timedelta(seconds=args.rows)
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "select count(*) filter (where datastream_id = %s),"
                " count(*) filter (where datastream_id = %s) from observation",
                (ds, -mds),
            ).fetchone()
        assert row is not None
        expected = args.rows * (args.rounds + 1)
        assert tuple(row) == (expected, expected), row
        med = {o: statistics.median(v) for o, v in rates.items()}
        share = med["MultiDatastream"] / med["Datastream"]
        print(f"load average: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f}")
        for owner, values in rates.items():
            each = ", ".join(f"{v:,.0f}" for v in values)
            print(f"{owner}: median {med[owner]:,.0f} rows/s ({each})")
        print(f"verdict: a MultiDatastream's rows at {share:.2f} of a Datastream's rate")
    finally:
        if local is not None:
            local.down()
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
