"""Faults injected into real Dask processes: workers SIGKILLed mid-training.

Each test kills a worker *process* (its nanny starts a new one, as the operator
replaces a pod) once training has checkpointed, and checks that the job finishes
in the same process with everything the config asked for, and a model as good
as an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
import xgboost
import yaml

from daskyard.checkpoints import MANIFEST_SUFFIX
from tests.conftest import (
    DASKYARD,
    ProcessCluster,
    add_gpu_worker,
    classification_frame,
    free_port,
    run_cli,
    start_process_cluster,
    stop_processes,
    write_config,
    write_files,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fault_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60k rows in 12 files: enough blocks and rounds to kill a worker in the middle."""
    return write_files(
        classification_frame(60_000, seed=3), tmp_path_factory.mktemp("faults") / "train", 12
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    """Two workers under nannies: a killed worker process is replaced, like a pod."""
    cluster = start_process_cluster(tmp_path / "logs", n_workers=2)
    yield cluster
    stop_processes(cluster.processes)


def worker_pids(address: str, name: str | None = None) -> dict[str, int]:
    """Each worker's process id by address; with ``name``, that worker's alone."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        pids = client.run(os.getpid)
        names = {a: w["name"] for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
    return {a: pid for a, pid in pids.items() if name is None or names[a] == name}


class WorkerKiller(threading.Thread):
    """SIGKILLs a worker process once ``pattern`` matches under ``folder``: the last
    one, the one ``named``, or with ``every`` all of them (their nannies start new ones)."""

    def __init__(
        self,
        address: str,
        folder: Path,
        pattern: str,
        every: bool = False,
        timeout: float = 240,
        named: str | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.folder, self.pattern = folder, pattern
        self.every, self.timeout = every, timeout
        self.pids = worker_pids(address, named)
        assert self.pids, f"no worker named {named}"
        self.killed_at: float | None = None

    def victims(self) -> list[int]:
        return list(self.pids.values()) if self.every else [sorted(self.pids.items())[-1][1]]

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if list(self.folder.glob(self.pattern)):
                for pid in self.victims():
                    os.kill(pid, signal.SIGKILL)
                self.killed_at = time.monotonic()
                return
            time.sleep(0.02)


def train(*args: str, config: Path, cluster: ProcessCluster) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DASKYARD, *args, "--config", str(config), "--scheduler", cluster.address],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"},
    )


def calm_and_faulty(
    command: tuple[str, str],
    make_config: Callable[[Path, Path, Path], Path],
    data: Path,
    cluster: ProcessCluster,
    tmp_path: Path,
    pattern: str,
    every: bool = False,
    named: str | None = None,
) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """An uninterrupted run, then the same job with workers SIGKILLed once ``pattern``
    appears under its checkpoints (see ``WorkerKiller``); both must succeed. Returns
    both outputs and the faulty run."""
    calm = train(
        *command,
        config=make_config(tmp_path / "calm.yaml", data, tmp_path / "calm"),
        cluster=cluster,
    )
    assert calm.returncode == 0, calm.stderr
    out = tmp_path / "faulty"
    killer = WorkerKiller(cluster.address, out / "checkpoints", pattern, every, named=named)
    killer.start()
    faulty = train(
        *command, config=make_config(tmp_path / "faulty.yaml", data, out), cluster=cluster
    )
    killer.join()
    assert killer.killed_at is not None, "training ended before a worker could be killed"
    assert faulty.returncode == 0, faulty.stderr
    return tmp_path / "calm", out, faulty


XGBOOST_PARAMS = {"objective": "binary:logistic", "max_depth": 6, "eta": 0.05}


def xgboost_config(
    path: Path, data: Path, output: Path, params: dict[str, Any] = XGBOOST_PARAMS
) -> Path:
    return write_config(
        path,
        {
            "data": {"train": str(data), "target": "label"},
            "output": str(output),
            "xgboost": {
                "rounds": 200,
                "checkpoint_every": 10,
                "tracker_port": free_port(),
                "params": params,
            },
        },
    )


def test_xgboost_survives_a_killed_worker_with_all_rounds_and_the_same_auc(
    fault_dataset: Path, cluster: ProcessCluster, tmp_path: Path
) -> None:
    calm_out, out, faulty = calm_and_faulty(
        ("train", "xgboost"),
        xgboost_config,
        fault_dataset,
        cluster,
        tmp_path,
        f"*/step-000030.ubj{MANIFEST_SUFFIX}",
    )
    assert "lost a worker" in faulty.stdout
    assert "resuming run" in faulty.stdout

    manifest = json.loads((out / "manifest.json").read_text())
    recovery = manifest["training"]["recovery"]
    assert recovery["attempts"] == 2 and len(recovery["faults"]) == 1
    assert manifest["training"]["last_attempt_from_round"] >= 30
    assert xgboost.Booster(model_file=str(out / "model.ubj")).num_boosted_rounds() == 200

    auc = json.loads((out / "metrics.json").read_text())["validation"]["auc"]
    calm_auc = json.loads((calm_out / "metrics.json").read_text())["validation"]["auc"]
    assert abs(auc - calm_auc) <= 0.005, (auc, calm_auc)


@pytest.fixture
def gpu_cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    """A CPU worker that sees no GPU beside one declaring ``GPU=1`` (the chart's GPU
    worker group), both under nannies. Without a GPU XGBoost trains on the CPU there;
    on a GPU machine (the H200 check, README) this is the real mix."""
    cluster = start_process_cluster(
        tmp_path / "logs", n_workers=1, worker_env={"CUDA_VISIBLE_DEVICES": ""}
    )
    try:
        add_gpu_worker(cluster)
        yield cluster
    finally:
        stop_processes(cluster.processes)


def test_a_gpu_job_survives_losing_its_gpu_worker_and_resumes_on_its_replacement(
    fault_dataset: Path, gpu_cluster: ProcessCluster, tmp_path: Path
) -> None:
    """The rows are restricted to GPU workers: after the GPU worker is lost they wait for
    its replacement, never moving to the CPU worker (on a GPU, XGBoost fails on such a
    mix), and the job ends with all its rounds."""
    calm_out, out, faulty = calm_and_faulty(
        ("train", "xgboost"),
        lambda path, data, output: xgboost_config(
            path, data, output, {**XGBOOST_PARAMS, "device": "cuda"}
        ),
        fault_dataset,
        gpu_cluster,
        tmp_path,
        f"*/step-000030.ubj{MANIFEST_SUFFIX}",
        named="gpu-0",
    )
    assert "on 1 GPU worker\n" in faulty.stdout
    assert "lost a worker" in faulty.stdout and "resuming run" in faulty.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["gpu_workers"] == 1
    assert manifest["training"]["recovery"]["attempts"] == 2
    assert manifest["training"]["last_attempt_from_round"] >= 30
    assert xgboost.Booster(model_file=str(out / "model.ubj")).num_boosted_rounds() == 200
    auc = json.loads((out / "metrics.json").read_text())["validation"]["auc"]
    calm_auc = json.loads((calm_out / "metrics.json").read_text())["validation"]["auc"]
    assert abs(auc - calm_auc) <= 0.005, (auc, calm_auc)
    from distributed import Client

    def tasks_seen(dask_worker) -> list[str]:
        """The tasks in this worker's transition log, run or fetched (nested: sent by
        value, as the workers cannot import the tests)."""
        return sorted({str(entry[0]) for entry in dask_worker.state.log})

    with Client(gpu_cluster.address, timeout=30) as client:
        seen = client.run(tasks_seen)
        names = {a: w["name"] for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
    by_name = {names[a]: tasks for a, tasks in seen.items()}
    # The replacement declaring the GPU read the rows again; the CPU worker ran and
    # fetched nothing (it held no partition XGBoost could have given it to train).
    assert any("daskyard-read-" in key for key in by_name["gpu-0"]), by_name
    assert by_name["worker-0"] == [], by_name["worker-0"][:10]


def test_a_killed_jobs_training_stops_on_the_cluster(
    fault_dataset: Path, cluster: ProcessCluster, tmp_path: Path
) -> None:
    """A Job pod killed with the scheduler still up: its training ran on for all its
    rounds (the scheduler cancels a running task, which runs on), writing checkpoints
    and holding the workers the next pod's training waited for."""
    from distributed import Client

    out = tmp_path / "out"
    config = xgboost_config(tmp_path / "job.yaml", fault_dataset, out)
    payload = yaml.safe_load(config.read_text())
    payload["xgboost"].update(rounds=5000, checkpoint_every=1)  # minutes of rounds
    write_config(config, payload)
    proc = subprocess.Popen(
        [DASKYARD, "train", "xgboost", "--config", str(config), "--scheduler", cluster.address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"},
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(f"checkpoints/*/step-000005.ubj{MANIFEST_SUFFIX}")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()

    def running_tasks(dask_worker) -> int:
        """Tasks its threads still run, those cancelled under them included (nested:
        sent by value, as the workers cannot import the tests)."""
        states = ("executing", "long-running", "cancelled")
        return sum(task.state in states for task in dask_worker.state.tasks.values())

    with Client(cluster.address, timeout=30) as client:
        deadline = time.monotonic() + 30
        # The scheduler forgets the cancelled tasks at once; the workers know what runs.
        while any(client.run(running_tasks).values()):
            assert time.monotonic() < deadline, "the killed job's training still runs"
            time.sleep(0.1)
    steps = [int(p.name[5:11]) for p in out.glob(f"checkpoints/*/step-*.ubj{MANIFEST_SUFFIX}")]
    assert max(steps) < 1000  # it stopped soon after the kill, not at round 4999


def test_worker_loss_beyond_max_attempts_exits_75(
    fault_dataset: Path, cluster: ProcessCluster, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    config = xgboost_config(tmp_path / "job.yaml", fault_dataset, out)
    payload = {**__import__("yaml").safe_load(config.read_text()), "cluster": {"max_attempts": 1}}
    write_config(config, payload)
    killer = WorkerKiller(
        cluster.address, out / "checkpoints", f"*/step-000020.ubj{MANIFEST_SUFFIX}"
    )
    killer.start()
    result = train("train", "xgboost", config=config, cluster=cluster)
    killer.join()
    assert killer.killed_at is not None
    assert result.returncode == 75, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("daskyard: error: training lost workers in 1 of 1 attempts"), first
    assert "raise cluster.max_attempts" in first
    assert not (out / "model.ubj").exists()

    # The checkpoints it left are what the Job's next pod resumes from.
    rerun = run_cli("train", "xgboost", "--config", str(config), "--scheduler", cluster.address)
    assert rerun.returncode == 0, rerun.stderr
    assert "from checkpoint at round" in rerun.stdout


def load_pipeline(path: Path) -> Any:
    return sio.load(path, trusted=sio.get_untrusted_types(file=path))


SGD = {
    "estimator": "sklearn.linear_model.SGDClassifier",
    "params": {"loss": "log_loss", "alpha": 1e-4, "random_state": 0},
}


def incremental_config(replicas: int) -> Callable[[Path, Path, Path], Path]:
    def make(path: Path, data: Path, output: Path) -> Path:
        settings = {"epochs": 10, "checkpoint_every": 10, "progress_every": 40}
        return write_config(
            path,
            {
                "data": {"train": str(data), "target": "label"},
                "output": str(output),
                "incremental": {**SGD, **settings, "replicas": replicas},
            },
        )

    return make


# With 3 replicas, checkpoints fall at the first round end past each 10 blocks: 12, 21, ...
@pytest.mark.parametrize("replicas, second_checkpoint", [(1, 20), (3, 21)], ids=["chain", "3"])
def test_incremental_survives_losing_its_workers_and_sees_every_block(
    replicas: int,
    second_checkpoint: int,
    fault_dataset: Path,
    cluster: ProcessCluster,
    tmp_path: Path,
) -> None:
    calm_out, out, faulty = calm_and_faulty(
        ("train", "incremental"),
        incremental_config(replicas),
        fault_dataset,
        cluster,
        tmp_path,
        f"*/step-{second_checkpoint:06d}.skops{MANIFEST_SUFFIX}",
        # Every worker: the models in flight are lost for sure. With one killed, dask may
        # recompute what it held from what the other one holds, without a new attempt
        # (which also ends with every block seen once, but not through a checkpoint).
        every=True,
    )
    assert "lost a worker" in faulty.stdout and "from checkpoint at block" in faulty.stdout

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["recovery"]["attempts"] == 2
    assert manifest["training"]["last_attempt_from_block"] >= second_checkpoint
    assert manifest["training"]["last_attempt_from_block"] % replicas == 0
    assert json.loads((out / "metrics.json").read_text())["blocks_seen"] == 120
    # Same blocks in the same order from the same checkpointed state: the very same model.
    model = load_pipeline(out / "model.skops")[-1]
    calm_model = load_pipeline(calm_out / "model.skops")[-1]
    rows = json.loads((out / "metrics.json").read_text())["rows"]["train"]
    assert model.t_ == calm_model.t_ == 1 + 10 * rows  # every row of every epoch, once
    np.testing.assert_allclose(model.coef_, calm_model.coef_, rtol=1e-9)


def search_config(path: Path, data: Path, output: Path) -> Path:
    return write_config(
        path,
        {
            "data": {"train": str(data), "target": "label"},
            "output": str(output),
            "search": {
                **SGD,
                "space": {"alpha": "loguniform:1e-6:1e-1", "penalty": "choice:l2,l1"},
                "candidates": 9,
                "max_blocks": 30,
            },
        },
    )


def test_search_restarts_lost_candidates_from_their_checkpoints(
    fault_dataset: Path, cluster: ProcessCluster, tmp_path: Path
) -> None:
    # Once the first rung's models are checkpointed, and live on both workers.
    calm_out, out, faulty = calm_and_faulty(
        ("search", "incremental"),
        search_config,
        fault_dataset,
        cluster,
        tmp_path,
        f"*/candidate-*/step-000004.skops{MANIFEST_SUFFIX}",
    )
    assert "restarting from block" in faulty.stdout

    results = json.loads((out / "results.json").read_text())["candidates"]
    calm_results = json.loads((calm_out / "results.json").read_text())["candidates"]
    assert sum(c["restarts"] for c in results) >= 1
    # Every candidate got the budget of every rung it reached, with the same scores.
    for candidate, twin in zip(results, calm_results, strict=True):
        assert candidate["budget_blocks"] == twin["budget_blocks"]
        assert candidate["scores"] == twin["scores"]
    metrics = json.loads((out / "metrics.json").read_text())
    calm_metrics = json.loads((calm_out / "metrics.json").read_text())
    assert metrics["best_params"] == calm_metrics["best_params"]


class WorkerCounter(threading.Thread):
    """Samples the number of workers every 50 ms until stopped."""

    def __init__(self, cluster: Any) -> None:
        super().__init__(daemon=True)
        self.cluster, self.counts = cluster, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.counts.append(len(self.cluster.scheduler_info["workers"]))
            time.sleep(0.05)


@pytest.mark.parametrize("kind", ["xgboost", "search"])
def test_training_completes_while_an_adaptive_cluster_scales_up_and_down(
    kind: str, fault_dataset: Path, tmp_path: Path
) -> None:
    """distributed's Adaptive asks the scheduler's ``adaptive_target``, as the operator's
    DaskAutoscaler does through /api/v1/adaptive_target, and retires workers the same way."""
    from daskyard.cluster import embedded_cluster

    make = {"xgboost": xgboost_config, "search": search_config}[kind]
    config = make(tmp_path / "job.yaml", fault_dataset, tmp_path / "o")
    with embedded_cluster(1) as cluster:
        cluster.adapt(minimum=1, maximum=4, interval="100ms", wait_count=3, target_duration="0.1s")
        counter = WorkerCounter(cluster)
        counter.start()
        args = ("train", "xgboost") if kind == "xgboost" else ("search", "incremental")
        result = subprocess.run(
            [DASKYARD, *args, "--config", str(config), "--scheduler", cluster.scheduler_address],
            capture_output=True,
            text=True,
            timeout=600,
        )
        counter.done.set()
        counter.join()
    assert result.returncode == 0, result.stderr
    counts = counter.counts
    peak = counts.index(max(counts))
    assert max(counts) >= 2, f"the cluster never scaled up: {sorted(set(counts))}"
    assert min(counts[peak:]) < max(counts), f"the cluster never scaled down: {counts[peak:]}"
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    section = manifest.get("training") or manifest["search"]
    assert section["recovery"]["attempts"] <= 3
