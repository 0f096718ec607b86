"""A GPU job's rows go to the workers that declare a GPU, where XGBoost then trains:
real scheduler and worker processes, two CPU workers beside one started with
``--resources GPU=1`` (as the chart's GPU worker group is).

No GPU here: XGBoost on that worker falls back to the CPU, which is what this
machine can show; the H200 check (README) trained on the GPU.
"""

from __future__ import annotations

import json

import pytest
from distributed import Client, wait

from daskyard.config import DataConfig
from daskyard.data import load_training_data
from tests.conftest import (
    add_gpu_worker,
    classification_frame,
    run_cli,
    start_process_cluster,
    stop_processes,
    write_files,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mixed_cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("mixed-cluster")
    cluster = start_process_cluster(logs, n_workers=2)
    try:
        add_gpu_worker(cluster, nthreads=2)
        yield cluster
    finally:
        stop_processes(cluster.processes)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_files(classification_frame(12_000), tmp_path_factory.mktemp("gpu") / "d", files=6)


def test_the_rows_of_a_gpu_job_are_held_by_the_gpu_worker_only(mixed_cluster, data):
    with Client(mixed_cluster.address, timeout=30) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        (gpu,) = [a for a, w in workers.items() if w["name"] == "gpu-0"]
        config = DataConfig(train=str(data), target="label")
        for resource, expected in (("GPU", {gpu}), (None, set(workers))):
            loaded = load_training_data(client, config, {}, resource=resource)
            parts = [*loaded.train.to_delayed(), *loaded.validation.to_delayed()]
            futures = client.compute(parts)
            wait(futures)
            holders = {a for owners in client.who_has(futures).values() for a in owners}
            assert holders == expected, resource
            if resource:  # restricted, not loosely placed: no idle CPU worker steals a read
                restrictions = client.run_on_scheduler(_read_restrictions())
                assert restrictions and set(restrictions) == {("GPU", False)}


def _read_restrictions():
    """A function for the scheduler (a closure: pickled by value, as the scheduler process
    cannot import the tests): each read task's resource restriction, and whether loose."""

    def on_scheduler(dask_scheduler) -> list[tuple[str, bool]]:
        return [
            (*ts.resource_restrictions, ts.loose_restrictions)
            for key, ts in dask_scheduler.tasks.items()
            if str(key).startswith("daskyard-read-") and ts.resource_restrictions
        ]

    return on_scheduler


def test_a_gpu_job_trains_on_the_gpu_worker_and_a_cpu_job_on_all(mixed_cluster, data, tmp_path):
    args = ["train", "xgboost", "--train", str(data), "--target", "label", "--rounds", "5"]
    args += ["--param", "objective=binary:logistic", "--scheduler", mixed_cluster.address]
    gpu = run_cli(*args, "--output", str(tmp_path / "gpu"), "--param", "device=cuda")
    assert gpu.returncode == 0, gpu.stderr
    assert "partitions, on 1 GPU worker\n" in gpu.stdout
    manifest = json.loads((tmp_path / "gpu" / "manifest.json").read_text())
    assert manifest["training"]["gpu_workers"] == 1
    cpu = run_cli(*args, "--output", str(tmp_path / "cpu"))
    assert cpu.returncode == 0, cpu.stderr
    assert "GPU worker" not in cpu.stdout
    assert (
        json.loads((tmp_path / "cpu" / "manifest.json").read_text())["training"]["gpu_workers"]
        is None
    )


@pytest.mark.parametrize("where", ["cluster", "embedded"])
def test_a_gpu_job_where_no_worker_sees_a_gpu_is_refused(where, dask_cluster, data, tmp_path):
    """Workers that declare no GPU are asked whether XGBoost sees one: none do here, and
    XGBoost would have trained on the CPU, warning only in the workers' logs."""
    out = tmp_path / "out"
    args = ["train", "xgboost", "--train", str(data), "--target", "label", "--output", str(out)]
    args += ["--param", "device=cuda"]
    if where == "cluster":
        args += ["--scheduler", dask_cluster.address]
    result = run_cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        "daskyard: error: device cuda, and no worker sees a GPU (XGBoost would train on the "
        "CPU): drop --param device=cuda, or run the job on GPU workers\n"
    )
    assert "data:" not in result.stdout  # before any data was read
    assert not out.exists() or not list(out.iterdir())
