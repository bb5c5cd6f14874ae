"""``quartier.geo.distributed.local_cluster`` runs its scheduler and workers with
``QUIET_DASK``: Dask's monitors polled less often, no statistical profiler (its fixed CPU cost
per second of wall time: docs/benchmarks.md, Coverage, session 9)."""

from __future__ import annotations

from typing import Any

from quartier.geo.distributed import QUIET_DASK, local_cluster


def test_local_cluster_workers_and_scheduler_run_with_the_quiet_settings() -> None:
    import dask
    from distributed import Client

    keys = list(QUIET_DASK)
    before = {k: dask.config.get(k) for k in keys}
    assert before != QUIET_DASK  # Dask's defaults differ, so the test can fail

    def worker_side(dask_worker: Any) -> dict[str, Any]:
        return {
            "config": {k: dask.config.get(k) for k in keys},
            "disk": dask_worker.monitor.monitor_disk_io,
            "profile": "profile" in dask_worker.periodic_callbacks,
            "monitor_ms": dask_worker.periodic_callbacks["monitor"].callback_time,
        }

    def scheduler_side(dask_scheduler: Any) -> dict[str, Any]:
        return {
            "disk": dask_scheduler.monitor.monitor_disk_io,
            "monitor_ms": dask_scheduler.periodic_callbacks["monitor"].callback_time,
        }

    with local_cluster(1, memory_limit="1GB") as cluster, Client(cluster) as client:
        [w] = client.run(worker_side).values()
        s = client.run_on_scheduler(scheduler_side)
        nanny_interval = [n.memory_manager.memory_monitor_interval
                          for n in cluster.workers.values()]  # fmt: skip
    assert w["config"] == QUIET_DASK
    assert w["disk"] is False and w["profile"] is False and w["monitor_ms"] == 2000
    assert s["disk"] is False and s["monitor_ms"] == 2000
    assert nanny_interval == [0.5]
    # the settings are the cluster's, not left behind in the caller's configuration
    assert {k: dask.config.get(k) for k in keys} == before
