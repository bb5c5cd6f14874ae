"""The writer resolves each (device, quantity) of a batch's fast-path messages once: the same rows
in the same datastreams as one lookup per message, and every message of an unknown device still
kept as its own reject."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from quartier.config import IngestSettings
from quartier.ingest.pipeline import Message, build_batch
from quartier.ingest.writer import BatchWriter

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CFG = IngestSettings(max_future_seconds=600)


def reading(device: str, quantity: str, i: int) -> Message:
    doc = {
        "quantity": quantity,
        "value": float(i % 50),
        "time": (NOW - timedelta(hours=1) + timedelta(seconds=i)).isoformat(),
    }
    return Message(f"quartier/v1/net/{device}/up", orjson.dumps(doc), NOW)


@pytest.mark.services
def test_repeated_devices_in_one_batch_store_the_same_rows_and_reject_each_unknown(
    db_url: str,
) -> None:
    known = ["a", "b", "c"]
    setup = BatchWriter(db_url, auto_register=True)
    setup.write(build_batch([reading(d, "pm25", 0) for d in known], CFG, NOW))
    setup.close()

    # interleaved: known devices with two quantities (one of them new), and an unknown device
    msgs = []
    for i in range(1, 301):
        device = ["a", "b", "c", "ghost"][i % 4]
        msgs.append(reading(device, "pm25" if i % 3 else "pm10", i))
    w = BatchWriter(db_url, auto_register=False)  # no registration of "ghost"
    res = w.write(build_batch(msgs, CFG, NOW))
    w.close()
    ghosts = [m for m in msgs if "/ghost/" in m.topic]
    assert res.reasons == {"unknown_device": len(ghosts)}
    assert res.observations == len(msgs) - len(ghosts)
    with psycopg.connect(db_url) as conn:
        stored = conn.execute(
            "select d.device_key, dd.quantity, o.phenomenon_time, o.result from observation o"
            " join device_datastream dd on dd.datastream_id = o.datastream_id"
            " join device d on d.id = dd.device_id where o.phenomenon_time > %s",
            (NOW - timedelta(hours=1),),
        ).fetchall()
        kept = conn.execute("select payload from ingest_reject order by id").fetchall()
    want = sorted(
        (
            m.topic.split("/")[3],
            orjson.loads(m.payload)["quantity"],
            datetime.fromisoformat(orjson.loads(m.payload)["time"]),
            orjson.loads(m.payload)["value"],
        )
        for m in msgs
        if m not in ghosts
    )
    assert sorted(stored) == want
    assert [bytes(p) for (p,) in kept] == [m.payload for m in ghosts]
