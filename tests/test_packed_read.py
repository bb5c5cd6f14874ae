"""The decoder of the packed read (``timeseries._packed_series``), without a server: rows in any
order (the read has no ORDER BY: a bitmap scan hands them over in table order), cut at the range's
edges, with dirty buckets that replace packed ones, add new ones or remove emptied ones; checked
against a plain Python computation over the same buckets, with and without numpy columns."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from quartier.store import timeseries as ts

HOUR = 3600
DAY0 = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp())
FUNCTIONS: tuple[ts.Function, ...] = ("count", "sum", "avg", "min", "max")
Bucket = tuple[int, int, float, float, float]  # n_all, n, s, lo, hi (NaN when n is 0)


def _bucket(rnd: random.Random) -> Bucket:
    n_all = rnd.randrange(1, 4)
    n = rnd.randrange(0, n_all + 1)
    if n == 0:
        return n_all, 0, float("nan"), float("nan"), float("nan")
    values = [rnd.randrange(-40, 40) / 4 for _ in range(n)]
    return n_all, n, sum(values), min(values), max(values)


def _row(ds: int, kind: int, buckets: dict[int, Bucket]) -> tuple[Any, ...]:
    """One row of the read: datastream, kind, then ``t`` and the packed columns the functions
    need, in the read's order, as their wire bytes."""
    times = sorted(buckets)
    cols = dict(
        zip(
            ("n_all", "n", "s", "lo", "hi"),
            zip(*(buckets[t] for t in times), strict=True),
            strict=True,
        )
    )
    wire = {"n_all": ">i4", "n": ">i4", "s": ">f8", "lo": ">f8", "hi": ">f8"}
    return (
        ds,
        kind,
        np.array(times, dtype=">i8").tobytes(),
        *(np.array(cols[c], dtype=wire[c]).tobytes() for c in ts._packed_columns(FUNCTIONS)[1:]),
    )


def _expected(
    packed: dict[int, dict[int, Bucket]],
    dirty: dict[int, dict[int, Bucket | None]],
    first: int,
    stop: int,
) -> dict[int, list[tuple[Any, ...]]]:
    out: dict[int, list[tuple[Any, ...]]] = {}
    for ds in sorted(set(packed) | set(dirty)):
        merged: dict[int, Bucket | None] = {**packed.get(ds, {}), **dirty.get(ds, {})}
        rows = []
        for t in sorted(merged):
            b = merged[t]
            if b is None or not first <= t < stop:
                continue
            n_all, n, s, lo, hi = b
            avg = s / n if n else None
            rows.append(
                (t, n_all, None if n == 0 else s, avg, *(None if n == 0 else x for x in (lo, hi)))
            )
        out[ds] = rows
    return out


@pytest.mark.parametrize("seed", range(12))
def test_rows_in_any_order_with_dirty_buckets(seed: int) -> None:
    rnd = random.Random(seed)
    ids = sorted(rnd.sample(range(1, 60), 6))
    packed: dict[int, dict[int, Bucket]] = {}
    rows: list[tuple[Any, ...]] = []
    for ds in ids[:-1]:  # the last datastream has no packed row
        for day in range(5):
            hours = sorted(rnd.sample(range(24), rnd.randrange(1, 25)))
            buckets = {DAY0 + day * 86_400 + h * HOUR: _bucket(rnd) for h in hours}
            packed.setdefault(ds, {}).update(buckets)
            rows.append(_row(ds, 0, buckets))
    dirty: dict[int, dict[int, Bucket | None]] = {}
    if seed % 3:  # some runs without dirty buckets (the usual case)
        for ds in rnd.sample(ids, 3):
            for _ in range(rnd.randrange(1, 6)):
                t = DAY0 + rnd.randrange(5 * 24) * HOUR  # often one a packed row holds
                if rnd.random() < 0.3:
                    dirty.setdefault(ds, {})[t] = None  # no observation left in it
                    rows.append(_row(ds, 2, {t: (0, 0, float("nan"), float("nan"), float("nan"))}))
                else:
                    b = _bucket(rnd)
                    dirty.setdefault(ds, {})[t] = b
                    rows.append(_row(ds, 1, {t: b}))
    if seed % 2:
        rnd.shuffle(rows)  # as a bitmap scan may give them
    start = datetime.fromtimestamp(DAY0 + 5 * HOUR, UTC)  # cuts the first and last day
    end = datetime.fromtimestamp(DAY0 + 4 * 86_400 + 7 * HOUR, UTC)
    want = _expected(packed, dirty, int(start.timestamp()), int(end.timestamp()))
    for columns in (True, False):
        series = ts._packed_series(rows, ids, FUNCTIONS, start, end, columns=columns)
        assert [s.datastream_id for s in series] == ids
        for s in series:
            if columns:
                if s.columns is None:
                    got = []
                else:
                    c = s.columns
                    got = [
                        (
                            int(t),
                            *(
                                None if isinstance(v, float) and v != v else v
                                for v in (c.values[f][k].item() for f in FUNCTIONS)
                            ),
                        )
                        for k, t in enumerate(c.epoch.tolist())
                    ]
            else:
                got = [(t, *(s.values[f][k] for f in FUNCTIONS)) for k, t in enumerate(s.epoch)]
            assert got == want.get(s.datastream_id, []), (seed, columns, s.datastream_id)


def test_no_rows() -> None:
    start = datetime(2025, 3, 1, tzinfo=UTC)
    series = ts._packed_series([], [3, 4], ("avg",), start, start + timedelta(days=1), columns=True)
    assert [(s.datastream_id, s.columns) for s in series] == [(3, None), (4, None)]
