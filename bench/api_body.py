"""CPU cost of writing a page of Observations, in one process: the response models (the way
every page was written before session 6) against the orjson fast path the API uses now, and the
gzip levels for that body. No server: this is the per-request Python work bench/api.py's profile
found dominant (55 % of a weekly page).

    .venv/bin/python bench/api_body.py [--rows 1000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quartier.api import models as m
from quartier.api.sensorthings import _observation, _observation_page

BASE = "https://quartier.example"


def rows(n: int) -> list[dict[str, Any]]:
    """A week of one datastream's readings, a minute apart, as the store returns them."""
    rng = random.Random(1)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    return [
        {"datastream_id": 42, "phenomenon_time": t0 + timedelta(minutes=i),
         "result": round(rng.uniform(0, 80), 1), "result_json": None, "result_time": None,
         "parameters": None, "foi_id": None, "multi_datastream_id": None}
        for i in range(n)
    ]  # fmt: skip


def timed(f: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=15)
    a = ap.parse_args()
    page = rows(a.rows)

    def models() -> bytes:
        body = m.ObservationCollection.model_validate(
            {"value": [_observation(r, BASE) for r in page], "@iot.nextLink": f"{BASE}/next"}
        )
        return body.model_dump_json(by_alias=True).encode()

    def fast() -> bytes:
        resp = _observation_page(page, BASE, f"{BASE}/next", None, False)
        assert resp is not None
        return bytes(resp.body)

    print(f"load average {os.getloadavg()[0]:.1f}; {a.rows} observations a page, "
          f"{a.repeat} runs each, in turns")  # fmt: skip
    results: dict[str, list[float]] = {"models": [], "orjson": []}
    for _ in range(3):  # in turns, so that load changes hit both
        results["models"] += timed(models, a.repeat)
        results["orjson"] += timed(fast, a.repeat)
    for name, ts in results.items():
        print(f"  {name:8} median {statistics.median(ts):6.2f} ms  min {min(ts):6.2f}  "
              f"max {max(ts):6.2f}")  # fmt: skip
    ratio = statistics.median(results["models"]) / statistics.median(results["orjson"])
    print(f"  orjson page {ratio:.1f}x faster than the models (medians)")
    body = fast()
    print(f"gzip of that body ({len(body) / 1024:.0f} KiB):")
    for level in (1, 4, 6, 9):
        ts = timed(lambda level=level: gzip.compress(body, compresslevel=level), a.repeat)
        size = len(gzip.compress(body, compresslevel=level))
        print(f"  level {level}: median {statistics.median(ts):6.2f} ms  min {min(ts):6.2f}  "
              f"max {max(ts):6.2f}  -> {size / 1024:.0f} KiB")  # fmt: skip


if __name__ == "__main__":
    main()
