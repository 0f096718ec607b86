"""What an embedded cluster's worker processes run with (daskyard.cluster)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

import pytest
from distributed import Client
from distributed.system import MEMORY_LIMIT

from daskyard.cluster import connect, embedded_cluster, worker_malloc_environ
from daskyard.config import ClusterConfig
from tests.conftest import DASKYARD, classification_frame, write_files

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


def test_a_threaded_job_asking_for_workers_gets_them_in_its_process_with_its_memory():
    """XGBoost with --local-workers: one-thread workers in this process. Each watches
    the whole process's memory, so each gets the whole limit, not a share of it."""
    with connect(ClusterConfig(local_workers=2), threaded=True) as client:
        found = client.run(
            lambda dask_worker: (
                os.getpid(),
                dask_worker.state.nthreads,
                dask_worker.memory_manager.memory_limit,
            )
        )
    assert sorted(found.values()) == [(os.getpid(), 1, MEMORY_LIMIT)] * 2


def _import_state(module: str) -> tuple[bool, bool, int]:
    import gc
    import sys

    return module in sys.modules, gc.isenabled(), gc.get_freeze_count()


def test_warm_imports_on_fresh_workers_leave_their_objects_frozen():
    # A module no worker imports on its own; the warm-up runs without waiting.
    module = "xml.dom.minidom"
    with connect(ClusterConfig(local_workers=2), warm=[module, "no_such_module"]) as client:
        deadline = time.monotonic() + 60
        while True:
            states = client.run(_import_state, module)
            if all(imported for imported, _, _ in states.values()):
                break
            assert time.monotonic() < deadline, f"workers never imported {module}: {states}"
            time.sleep(0.1)
    assert len(states) == 2
    for _, collecting, frozen in states.values():
        assert collecting  # the collector is back on after the imports
        assert frozen > 10_000  # what distributed and the module had created


def test_ctrl_c_on_an_embedded_job_prints_one_line_and_leaves_no_process(tmp_path):
    """A terminal's Ctrl-C reaches the whole process group, the embedded worker
    processes too: each printed a KeyboardInterrupt traceback before the job's line."""
    data = write_files(classification_frame(40_000), tmp_path / "data", files=8)
    args = ["train", "incremental", "--estimator", "sklearn.linear_model.SGDClassifier"]
    args += ["--train", str(data), "--target", "label", "--output", str(tmp_path / "out")]
    proc = subprocess.Popen(
        [DASKYARD, *args, "--epochs", "1000", "--local-workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # As a shell's background job, this test may have been started ignoring SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for line in proc.stdout:  # training has begun: the workers are busy
            if line.startswith("block "):
                break
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert stderr == "daskyard: interrupted\n"
        assert _group_ends(proc.pid, within=10), "the interrupted job's workers are still running"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _group_ends(group: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_an_xgboost_job_from_the_console_script_never_imports_scikit_learn(tmp_path):
    """XGBoost imports scikit-learn (and scipy.stats) only for its scikit-learn
    classes; the console script's job skips that import (imports.ScikitLearnHiddenFromXGBoost)."""
    data = write_files(classification_frame(4_000), tmp_path / "data", files=2)
    out = tmp_path / "out"
    args = ["train", "xgboost", "--train", str(data), "--target", "label", "--rounds", "3"]
    result = subprocess.run(
        [DASKYARD, *args, "--output", str(out), "--local-workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},  # each import, on stderr
    )
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "xgboost.dask" in imported  # the profile is there: the job imported XGBoost
    # (A refused import is profiled too: "sklearn" alone is xgboost.compat's attempt.)
    assert not [m for m in imported if m.startswith(("sklearn.", "scipy.stats"))]
    assert json.loads((out / "metrics.json").read_text())["rounds"] == 3
