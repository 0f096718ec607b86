"""What an embedded cluster's worker processes run with (daskyard.cluster)."""

from __future__ import annotations

import pytest
from distributed import Client
from distributed.system import MEMORY_LIMIT

from daskyard.cluster import embedded_cluster, worker_malloc_environ

pytestmark = pytest.mark.integration


def _settings() -> dict:
    import os

    import dask

    return {
        "environ": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "OMP_"))},
        "profile": dask.config.get("distributed.worker.profile.enabled"),
        "tick": dask.config.get("distributed.admin.tick.interval"),
    }


def test_embedded_workers_run_without_profiling_and_with_the_malloc_settings():
    with embedded_cluster(2) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        settings = client.run(_settings)
        profiling = client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
    assert len(settings) == 2
    for found in settings.values():
        assert found["environ"] == {
            **{k: str(v) for k, v in worker_malloc_environ(MEMORY_LIMIT // 2).items()},
            "OMP_NUM_THREADS": "1",  # distributed's own pre-spawn settings stay
        }
        assert found["profile"] is False
        assert found["tick"] == "1s"
    assert not any(profiling.values())


def test_the_in_process_worker_of_a_threaded_job_does_not_profile_either():
    with embedded_cluster(1, threads=2, processes=False) as cluster, Client(cluster) as client:
        profiling = client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
    assert profiling and not any(profiling.values())
