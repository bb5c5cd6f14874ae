"""A page of Observations written from plain dicts by orjson (``_observation_page``, the fast
path of ``/Observations`` without ``$select``/``$expand``) is the page the response models
write: the same members, in the same order, with the same values, on random rows."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from quartier.api import models as m
from quartier.api.sensorthings import _observation, _observation_page

BASE = "http://example.org"
T0 = datetime(2020, 1, 1, tzinfo=UTC)


def _row(rng: random.Random) -> dict[str, Any]:
    multi = rng.random() < 0.2
    result: Any = rng.choice(
        [rng.uniform(-1e6, 1e6), rng.random() * 1e-9, float(rng.randint(0, 99)), 1e300, math.nan,
         None, -0.0]
    )  # fmt: skip
    result_json: Any = None
    if multi:
        result, result_json = None, [rng.random(), rng.randint(0, 9), "SW", None]
    elif rng.random() < 0.1:
        result, result_json = None, rng.choice(["text", {"a": [1, 2.5]}, True])
    return {
        "datastream_id": -rng.randint(1, 50) if multi else rng.randint(1, 10**6),
        "phenomenon_time": T0 + timedelta(microseconds=rng.randint(-(10**16), 10**15)),
        "result": result,
        "result_json": result_json,
        "result_time": rng.choice([None, T0 + timedelta(seconds=rng.randint(0, 10**8))]),
        "parameters": rng.choice([None, {"fcnt": rng.randint(0, 10**6), "rssi": -101.5}]),
        "foi_id": rng.choice([None, rng.randint(1, 100)]),
        "multi_datastream_id": None,
    }


def _ordered(text: bytes | str) -> str:
    """The JSON re-written with its members in their order (dict equality ignores order)."""
    return json.dumps(json.loads(text), allow_nan=True)


def test_the_fast_page_equals_the_models_page_on_random_rows() -> None:
    rng = random.Random(7)
    for _ in range(200):
        rows = [_row(rng) for _ in range(rng.randint(0, 30))]
        count = rng.choice([None, len(rows), 10**9])
        nxt = rng.choice([None, f"{BASE}/v1.1/Observations?$top=3&$skip=3"])
        estimate = count == 10**9
        fast = _observation_page(rows, BASE, nxt, count, estimate)
        assert fast is not None
        model = m.ObservationCollection.model_validate(
            {
                "value": [_observation(r, BASE) for r in rows],
                "@iot.nextLink": nxt,
                "@iot.count": count,
                "@quartier.countIsEstimate": True if estimate else None,
            }
        ).model_dump_json(by_alias=True)
        assert _ordered(bytes(fast.body)) == _ordered(model)


def test_a_value_orjson_cannot_write_falls_back_to_the_models() -> None:
    row = _row(random.Random(1))
    row["result"], row["result_json"] = None, {"big": 2**70}
    assert _observation_page([row], BASE, None, None, False) is None
