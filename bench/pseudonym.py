"""What pseudonymising a speed test's device key costs on the ingest path, against decoding the
speed test itself (the baseline, measured in the same process): ``python bench/pseudonym.py``.
See docs/privacy.md."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import orjson

from quartier.ingest.native import decode_speedtest
from quartier.pseudonym import Pseudonymizer

N = 50_000
KEYS = [f"crowd-{i}" for i in range(N)]
PAYLOAD = orjson.dumps(
    {"time": "2026-11-27T10:00:00Z", "lat": 50.94, "lon": 6.95, "download_mbps": 88.5,
     "upload_mbps": 20.1, "latency_ms": 14}
)  # fmt: skip


def per_item_ns(run: Callable[[], object], repeat: int = 5) -> float:
    best = min(_timed(run) for _ in range(repeat))
    return best / N * 1e9


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    def decode() -> None:
        for k in KEYS:
            decode_speedtest("app", k, PAYLOAD, max_bytes=256 * 1024)

    def new_keys() -> None:
        p = Pseudonymizer(os.urandom(32))
        for k in KEYS:
            p(k)

    warm = Pseudonymizer(os.urandom(32))
    for k in KEYS:
        warm(k)

    def known_keys() -> None:
        for k in KEYS:
            warm(k)

    base = per_item_ns(decode)
    fresh = per_item_ns(new_keys)
    known = per_item_ns(known_keys)
    sys.stdout.write(
        f"decode_speedtest {base:,.0f} ns/message; pseudonym of a new key {fresh:,.0f} ns "
        f"({fresh / base:.0%} of the decode), of a known key {known:,.0f} ns "
        f"({known / base:.0%})\n"
    )


if __name__ == "__main__":
    main()
