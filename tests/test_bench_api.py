"""bench/api.py's query shapes, quickly, against a real ``quartier serve --workers 2`` process on
a small data set: every shape answers 200 with the expected items, so the benchmark cannot rot;
and ``serve --workers N`` runs N worker processes that all serve."""

from __future__ import annotations

import importlib.util
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_api", ROOT / "bench" / "api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_api"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


api = _bench()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"resource_tracker" not in cmdline:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.services
def test_every_shape_answers_with_the_expected_items(db_url: str) -> None:
    things, per_thing, steps, step = 9, 2, 700, timedelta(minutes=20)
    ds_ids, _ = api.load_world(db_url, things, per_thing, steps, step)
    assert len(ds_ids) == things * per_thing
    in_polygon = sum(api.in_polygon(p) for p in api.grid_points(things))
    assert 0 < in_polygon < things  # the geo filter has something to leave out
    with api.quartier_server(db_url, workers=2) as server:
        workers = _children(server.pid)
        assert len(workers) == 2, f"serve --workers 2 runs {len(workers)} worker processes"
        w = api.World(
            base=server.base,
            datastreams=[int(x) for x in ds_ids],
            start=api.T0,
            step=step,
            per_datastream=steps,
            things_in_polygon=in_polygon,
            datastreams_per_thing=per_thing,
            things=things,
        )
        assert w.total >= 100 * 100  # page 100 exists
        cpu = api.CpuMeter(server.pid, api.postmaster_of(db_url))
        cpu_ms = 0.0
        with httpx.Client(timeout=120) as client:
            for shape in api.SHAPES:
                result = api.run_shape(client, w, shape, repeat=2, warmup=1, cpu=cpu)
                assert result["ok"], f"{shape.name}: {result['error']}"
                assert result["runs"] == 2
                cpu_ms += result["cpu_ms"]
            assert cpu_ms > 0  # the server's and the database's CPU is seen
            # the checks can fail: a wrong expectation is reported, not measured
            wrong = api.World(**{**w.__dict__, "things_in_polygon": in_polygon + 1})
            polygon = next(s for s in api.SHAPES if s.name == "polygon_latest")
            bad = api.run_shape(client, wrong, polygon, repeat=1, warmup=0)
            assert not bad["ok"] and "Things, expected" in bad["error"]
        load = api.throughput(w, api.SHAPES[0], clients=8, duration=1.0)
        assert load["requests"] >= 8 and load["non_200"] == {}
        # both workers are still there after the load (none was killed and restarted)
        assert sorted(_children(server.pid)) == sorted(workers)
    deadline = time.monotonic() + 30
    while _children(server.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _children(server.pid) == []
