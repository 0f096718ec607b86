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
from collections.abc import Iterator
from pathlib import Path

import pytest
import skops.io as sio
import xgboost

from daskyard.checkpoints import MANIFEST_SUFFIX
from tests.conftest import (
    DASKYARD,
    ProcessCluster,
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


def worker_pids(address: str) -> dict[str, int]:
    from distributed import Client

    with Client(address, timeout=30) as client:
        return client.run(os.getpid)


class WorkerKiller(threading.Thread):
    """SIGKILLs one worker process once ``pattern`` matches under ``folder``."""

    def __init__(self, address: str, folder: Path, pattern: str, timeout: float = 240) -> None:
        super().__init__(daemon=True)
        self.folder, self.pattern, self.timeout = folder, pattern, timeout
        self.victim = sorted(worker_pids(address).items())[-1]
        self.killed_at: float | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if list(self.folder.glob(self.pattern)):
                os.kill(self.victim[1], signal.SIGKILL)
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


def xgboost_config(path: Path, data: Path, output: Path) -> Path:
    return write_config(
        path,
        {
            "data": {"train": str(data), "target": "label"},
            "output": str(output),
            "xgboost": {
                "rounds": 200,
                "checkpoint_every": 10,
                "tracker_port": free_port(),
                "params": {"objective": "binary:logistic", "max_depth": 6, "eta": 0.05},
            },
        },
    )


def test_xgboost_survives_a_killed_worker_with_all_rounds_and_the_same_auc(
    fault_dataset: Path, cluster: ProcessCluster, tmp_path: Path
) -> None:
    calm = train(
        "train",
        "xgboost",
        config=xgboost_config(tmp_path / "calm.yaml", fault_dataset, tmp_path / "calm"),
        cluster=cluster,
    )
    assert calm.returncode == 0, calm.stderr

    out = tmp_path / "faulty"
    killer = WorkerKiller(
        cluster.address, out / "checkpoints", f"*/step-000030.ubj{MANIFEST_SUFFIX}"
    )
    killer.start()
    faulty = train(
        "train",
        "xgboost",
        config=xgboost_config(tmp_path / "faulty.yaml", fault_dataset, out),
        cluster=cluster,
    )
    killer.join()
    assert killer.killed_at is not None, "training ended before a worker could be killed"
    assert faulty.returncode == 0, faulty.stderr
    assert "lost a worker" in faulty.stdout
    assert "resuming run" in faulty.stdout

    manifest = json.loads((out / "manifest.json").read_text())
    recovery = manifest["training"]["recovery"]
    assert recovery["attempts"] == 2 and len(recovery["faults"]) == 1
    assert manifest["training"]["last_attempt_from_round"] >= 30
    assert xgboost.Booster(model_file=str(out / "model.ubj")).num_boosted_rounds() == 200

    auc = json.loads((out / "metrics.json").read_text())["validation"]["auc"]
    calm_auc = json.loads((tmp_path / "calm" / "metrics.json").read_text())["validation"]["auc"]
    assert abs(auc - calm_auc) <= 0.005, (auc, calm_auc)


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
    assert sio is not None
