"""``daskyard search incremental`` on real scheduler and worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.metrics import accuracy_score

from tests.conftest import DASKYARD, run_cli, write_files

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def noisy_problem(tmp_path_factory):
    """200 features, 5 informative, label noise: SGDClassifier's defaults do poorly here."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 200)).astype(np.float32)
    weights = np.zeros(200)
    weights[:5] = [1.0, -1.0, 0.8, -0.6, 0.5]
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(200)])
    frame["label"] = (x @ weights + rng.normal(scale=1.5, size=len(x)) > 0).astype(np.int64)
    root = tmp_path_factory.mktemp("search")
    write_files(frame.iloc[:16_000], root / "train", files=8)
    write_files(frame.iloc[16_000:], root / "valid", files=2)
    return root


def search_args(problem, *extra: str) -> list[str]:
    return [
        "search",
        "incremental",
        "--estimator",
        "sklearn.linear_model.SGDClassifier",
        "--train",
        str(problem / "train"),
        "--validation",
        str(problem / "valid"),
        "--target",
        "label",
        *extra,
    ]


def test_search_beats_the_default_parameters(dask_cluster, noisy_problem, tmp_path):
    data = [
        "--train",
        str(noisy_problem / "train"),
        "--validation",
        str(noisy_problem / "valid"),
        "--target",
        "label",
        "--scheduler",
        dask_cluster.address,
    ]
    default = run_cli(
        "train",
        "incremental",
        "--estimator",
        "sklearn.linear_model.SGDClassifier",
        "--param",
        "random_state=0",
        "--output",
        str(tmp_path / "default"),
        *data,
    )
    assert default.returncode == 0, default.stderr
    space = ["--space", "alpha=loguniform:1e-6:1", "--space", "penalty=choice:l2,l1"]
    search = run_cli(
        *search_args(noisy_problem, "--param", "random_state=0", *space, "--candidates", "16"),
        *("--output", str(tmp_path / "search"), "--scheduler", dask_cluster.address),
    )
    assert search.returncode == 0, search.stderr
    baseline = json.loads((tmp_path / "default" / "metrics.json").read_text())["validation"]
    metrics = json.loads((tmp_path / "search" / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] > baseline["accuracy"] + 0.02

    results = json.loads((tmp_path / "search" / "results.json").read_text())["candidates"]
    assert len(results) == 16
    budgets = sorted(r["budget_blocks"] for r in results)
    assert budgets[0] < budgets[-1] == 8  # finalists saw one pass over the 8 files
    finalists = [r for r in results if r["stopped_at_rung"] is None]
    best = max(finalists, key=lambda r: r["scores"][-1]["validation"]["accuracy"])
    assert best["id"] == metrics["best_candidate"]
    assert metrics["best_params"] == {**best["params"], "random_state": 0}
    assert all(len(r["scores"]) == r["stopped_at_rung"] + 1 for r in results if r not in finalists)

    valid = pd.concat(pd.read_parquet(p) for p in sorted((noisy_problem / "valid").iterdir()))
    path = tmp_path / "search" / "model.skops"
    model = sio.load(path, trusted=sio.get_untrusted_types(file=path))
    predicted = model.predict(valid.drop(columns=["label"]))
    assert accuracy_score(valid["label"], predicted) == pytest.approx(
        metrics["validation"]["accuracy"], abs=1e-9
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--space", "alpha=gauss:0:1"], "unknown kind 'gauss'"),
        (["--space", "alpah=uniform:0:1"], "'alpah' is not a parameter of"),
        (["--space", "alpha"], "is not KEY=SPEC"),
        (["--space", "alpha=uniform:0:1", "--candidates", "1"], "'search.candidates'"),
        ([], "search.space"),
    ],
)
def test_bad_search_input_exits_2(extra, message, dask_cluster, noisy_problem, tmp_path):
    result = run_cli(
        "search",
        "incremental",
        "--estimator",
        "sklearn.linear_model.SGDClassifier",
        "--train",
        str(noisy_problem / "train"),
        "--target",
        "label",
        "--output",
        str(tmp_path / "o"),
        "--scheduler",
        dask_cluster.address,
        *extra,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.first_error_line
    assert "Traceback" not in result.stderr


def test_a_candidate_that_fails_is_dropped_and_the_search_goes_on(
    dask_cluster, noisy_problem, tmp_path
):
    """SGD refuses alpha=0 with its default 'optimal' learning rate only once it trains:
    the candidates that drew it leave the search, the others finish it (it ended the
    whole search with exit 2)."""
    out = tmp_path / "out"
    space = ["--space", "alpha=choice:0,0.0001", "--space", "penalty=choice:l2,l1"]
    result = run_cli(
        *search_args(noisy_problem, *space, "--candidates", "8", "--output", str(out)),
        "--scheduler",
        dask_cluster.address,
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())["candidates"]
    failed = [r for r in results if r["params"]["alpha"] == 0]
    assert 0 < len(failed) < len(results)
    for record in failed:
        assert record["scores"] == [] and record["stopped_at_rung"] == 0
        assert record["error"].startswith("SGDClassifier.partial_fit failed: alpha must be > 0")
        line = f"candidate {record['id']}: dropped in rung 1: SGDClassifier.partial_fit failed"
        assert line in result.stdout
    assert all(r["error"] is None and r["scores"] for r in results if r not in failed)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_params"]["alpha"] == 0.0001
    assert metrics["failed_candidates"] == len(failed)
    assert metrics["validation"]["accuracy"] > 0.6


def test_a_search_whose_every_candidate_fails_exits_2(dask_cluster, noisy_problem, tmp_path):
    out = tmp_path / "out"
    result = run_cli(
        *search_args(noisy_problem, "--space", "alpha=choice:0", "--output", str(out)),
        "--scheduler",
        dask_cluster.address,
    )
    assert result.returncode == 2, result.stderr
    assert result.first_error_line.startswith(
        "daskyard: error: all 16 candidates of rung 1 failed; the first: "
        "SGDClassifier.partial_fit failed: alpha must be > 0"
    )
    assert "Traceback" not in result.stderr
    assert not (out / "metrics.json").exists() and not (out / "model.skops").exists()


def test_every_rung_spreads_its_candidates_evenly_over_the_workers(noisy_problem, tmp_path):
    # A task runs next to its model: left where the previous rung trained them, the
    # survivors of a rung could all sit on one worker while the other idled. Work
    # stealing sometimes evens that out afterwards; without it, placement alone shows.
    import dask
    from dask.utils import key_split
    from distributed import Client, get_task_stream

    from daskyard.cluster import embedded_cluster
    from daskyard.config import DataConfig, SearchConfig, SearchJobConfig
    from daskyard.search import search_incremental

    config = SearchJobConfig(
        data=DataConfig(
            train=str(noisy_problem / "train"),
            validation=str(noisy_problem / "valid"),
            target="label",
        ),
        output=str(tmp_path / "search"),
        search=SearchConfig(
            estimator="sklearn.linear_model.SGDClassifier",
            params={"random_state": 0},
            space={"alpha": "loguniform:1e-6:1", "penalty": "choice:l2,l1"},
            candidates=16,
        ),
    )
    with (
        dask.config.set({"distributed.scheduler.work-stealing": False}),
        embedded_cluster(2) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(2)
        with get_task_stream(client) as stream:
            result = search_incremental(config, client)
    schedule = [rung["candidates"] for rung in result.manifest["search"]["schedule"]]
    assert schedule == [16, 6, 2]
    # In the order the scheduler saw them finish: a rung is submitted only once every
    # training of the one before has finished, so that order groups the rungs. Start
    # times do not: each worker shifts them by its own estimate of the scheduler's
    # clock, which a loaded machine's heartbeats can put off by more than the gap
    # between two rungs (the likely reason this test once read a rung as 2 and 4).
    trainings = [task["worker"] for task in stream.data if key_split(task["key"]) == "train_rung"]
    assert len(trainings) == sum(schedule)
    first = 0
    for size in schedule:
        workers = trainings[first : first + size]
        first += size
        counts = sorted(workers.count(w) for w in set(workers))
        assert len(counts) == 2 and counts[-1] - counts[0] <= 1, (size, counts)


def test_a_killed_search_resumes_and_ends_as_an_uninterrupted_one(noisy_problem, tmp_path):
    """A retried Job pod: the rerun takes each candidate's models and scores from its
    checkpoints and trains only what is left (it retrained every rung from scratch)."""
    args = search_args(
        noisy_problem,
        *("--space", "alpha=loguniform:1e-6:1", "--candidates", "8", "--local-workers", "2"),
    )
    whole = run_cli(*args, "--output", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    assert "resuming" not in whole.stdout

    out = tmp_path / "killed"
    # Killed, with its embedded workers, once the last rung (8 blocks) has begun.
    proc = subprocess.Popen(
        [DASKYARD, *args, "--output", str(out)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("checkpoints/*/candidate-*/step-000008.skops.manifest.json")):
            assert proc.poll() is None, "the search ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "metrics.json").exists()

    rerun = run_cli(*args, "--output", str(out))
    assert rerun.returncode == 0, rerun.stderr
    assert "of 8 candidates from their checkpoints" in rerun.stdout
    (out / "manifest.json").unlink()  # else the search is finished (test_finished_runs)
    again = run_cli(*args, "--output", str(out))  # every candidate at its end: none trains
    assert again.returncode == 0, again.stderr
    assert "8 of 8 candidates from their checkpoints" in again.stdout

    def outcome(folder):
        results = json.loads((folder / "results.json").read_text())["candidates"]
        metrics = json.loads((folder / "metrics.json").read_text())
        path = folder / "model.skops"
        model = sio.load(path, trusted=sio.get_untrusted_types(file=path))
        return results, metrics["validation"], model[-1].coef_.tolist()

    assert outcome(out) == outcome(tmp_path / "whole")
