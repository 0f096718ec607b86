"""``daskyard train incremental`` on real scheduler and worker processes."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from distributed import Client
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from daskyard.train.incremental import block_order
from tests.conftest import (
    DASKYARD,
    classification_frame,
    kill_after_checkpoint,
    run_cli,
    start_process_cluster,
    stop_processes,
    write_config,
    write_files,
)

pytestmark = pytest.mark.integration

SGD = [
    "--estimator",
    "sklearn.linear_model.SGDClassifier",
    "--param",
    "loss=log_loss",
    "--param",
    "random_state=0",
]


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    root = tmp_path_factory.mktemp("inc")
    frame = classification_frame(60_000, seed=2)
    write_files(frame.iloc[:48_000], root / "train", files=8)
    write_files(frame.iloc[48_000:], root / "valid", files=2)
    return root


def load_model(path):
    return sio.load(path, trusted=sio.get_untrusted_types(file=path))


def read_sorted(folder):
    return [pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))]


def test_sgd_matches_a_single_process_partial_fit_loop(dask_cluster, blocks, tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "train",
        "incremental",
        *SGD,
        "--epochs",
        "3",
        "--train",
        str(blocks / "train"),
        "--validation",
        str(blocks / "valid"),
        "--target",
        "label",
        "--output",
        str(out),
        "--scheduler",
        dask_cluster.address,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())

    train, valid = read_sorted(blocks / "train"), pd.concat(read_sorted(blocks / "valid"))
    features = [c for c in valid.columns if c != "label"]
    scaler = StandardScaler().fit(pd.concat(train)[features])
    model = SGDClassifier(loss="log_loss", random_state=0)
    for epoch in range(3):
        for index in block_order(len(train), epoch, seed=42):
            block = train[index]
            model.partial_fit(scaler.transform(block[features]), block["label"], classes=[0, 1])
    expected = accuracy_score(valid["label"], model.predict(scaler.transform(valid[features])))
    assert expected > 0.7
    assert abs(metrics["validation"]["accuracy"] - expected) < 0.01
    assert metrics["blocks_seen"] == 24

    # model.skops is the whole pipeline: raw features in, predictions out.
    pipeline = load_model(out / "model.skops")
    accuracy = accuracy_score(valid["label"], pipeline.predict(valid[features]))
    assert accuracy == pytest.approx(metrics["validation"]["accuracy"], abs=1e-9)
    auc = roc_auc_score(valid["label"], pipeline.predict_proba(valid[features])[:, 1])
    assert metrics["validation"]["roc_auc"] == pytest.approx(auc, abs=1e-3)
    assert metrics["validation"]["log_loss"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["classes"] == [0, 1]
    assert manifest["training"]["scaling"] is True


def test_a_job_without_random_state_makes_the_same_model_every_run(dask_cluster, blocks, tmp_path):
    """The estimator's unset random_state is data.seed: SGD shuffles each block in
    partial_fit, and unseeded two runs of one job differed."""
    models = []
    for run in range(2):
        out = tmp_path / f"run{run}"
        result = run_cli(
            "train", "incremental", "--estimator", "sklearn.linear_model.SGDClassifier",
            "--train", str(blocks / "train"), "--validation", str(blocks / "valid"),
            "--target", "label", "--output", str(out), "--scheduler", dask_cluster.address,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        models.append(load_model(out / "model.skops")[-1])
    np.testing.assert_array_equal(models[0].coef_, models[1].coef_)
    params = json.loads((tmp_path / "run1" / "manifest.json").read_text())["training"]["params"]
    assert params["random_state"] == 42


def test_a_validation_label_unseen_in_training_is_scored_and_reported(
    dask_cluster, blocks, tmp_path
):
    """partial_fit must know every class it is scored on; this once failed after
    training with an IndexError (exit 1)."""
    valid = pd.concat(read_sorted(blocks / "valid"))
    valid.loc[valid.index[:50], "label"] = 2  # a class no training file holds
    folder = write_files(valid, tmp_path / "valid", files=1)
    out = tmp_path / "run"
    result = run_cli(
        "train", "incremental", *SGD, "--train", str(blocks / "train"),
        "--validation", str(folder), "--target", "label", "--output", str(out),
        "--scheduler", dask_cluster.address,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "warning: validation labels [2] of 'label' never occur in the training" in result.stdout
    pipeline = load_model(out / "model.skops")
    assert list(pipeline[-1].classes_) == [0, 1, 2]
    features = [c for c in valid.columns if c != "label"]
    accuracy = accuracy_score(valid["label"], pipeline.predict(valid[features]))
    reported = json.loads((out / "metrics.json").read_text())["validation"]["accuracy"]
    assert reported == pytest.approx(accuracy, abs=1e-9)


def test_regressor_reports_r2_and_rmse(dask_cluster, tmp_path):
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(rng.normal(size=(20_000, 3)), columns=["a", "b", "c"])
    frame["y"] = 2 * frame["a"] - frame["c"] + rng.normal(scale=0.1, size=len(frame))
    data = write_files(frame, tmp_path / "reg", files=4)
    result = run_cli(
        "train",
        "incremental",
        "--estimator",
        "sklearn.linear_model.SGDRegressor",
        "--train",
        str(data),
        "--target",
        "y",
        "--output",
        str(tmp_path / "o"),
        "--epochs",
        "2",
        "--scheduler",
        dask_cluster.address,
    )
    assert result.returncode == 0, result.stderr
    validation = json.loads((tmp_path / "o" / "metrics.json").read_text())["validation"]
    assert set(validation) == {"r2", "rmse"}
    assert validation["r2"] > 0.98 and validation["rmse"] < 0.3


def test_out_of_core_data_three_times_worker_memory_trains_without_pausing(tmp_path):
    """2 workers x 600 MiB (about 300 MiB of that is the imported libraries), 3.6 GiB of
    float32 blocks streamed through partial_fit: no worker paused, restarted or killed."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=25).astype(np.float32)
    rows_per_file, files, distinct = 100_000, 372, 12  # 10.4 MB per block
    train = tmp_path / "train"
    train.mkdir()
    for index in range(distinct):
        x = rng.standard_normal((rows_per_file, 25), dtype=np.float32)
        frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(25)])
        frame["label"] = (x @ weights > 0).astype(np.float32)
        frame.to_parquet(train / f"part-{index:03d}.parquet", index=False)
    # Hard links: the volume the workers read is real, the disk and setup time are not.
    for index in range(distinct, files):
        os.link(train / f"part-{index % distinct:03d}.parquet", train / f"part-{index:03d}.parquet")
    valid = tmp_path / "valid"
    valid.mkdir()
    os.link(train / "part-000.parquet", valid / "part-000.parquet")
    limit = 600 * 2**20
    assert rows_per_file * files * 26 * 4 >= 3 * 2 * limit

    cluster = start_process_cluster(tmp_path / "logs", n_workers=2, memory_limit=str(limit))
    try:
        with Client(cluster.address) as client:
            before = client.run(os.getpid)
            result = run_cli(
                "train",
                "incremental",
                *SGD,
                "--train",
                str(train),
                "--validation",
                str(valid),
                "--target",
                "label",
                "--output",
                str(tmp_path / "o"),
                "--scheduler",
                cluster.address,
                timeout=600,
            )
            after = client.run(os.getpid)
            statuses = [
                e
                for address in before
                for _, e in client.get_events(address)
                if e.get("action") == "worker-status-change"
            ]
    finally:
        stop_processes(cluster.processes)
    assert result.returncode == 0, result.stderr
    assert after == before, "a worker was restarted or killed"
    assert not [e for e in statuses if e["status"] == "paused"], statuses
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["blocks_seen"] == files
    assert metrics["validation"]["accuracy"] > 0.95


def test_killed_run_resumes_and_sees_every_block_once(blocks, tmp_path):
    out = tmp_path / "run"
    config = write_config(
        tmp_path / "job.yaml",
        {
            "data": {"train": str(blocks / "train"), "target": "label"},
            "output": str(out),
            "cluster": {"local_workers": 2},
            "incremental": {
                "estimator": "sklearn.linear_model.SGDClassifier",
                "epochs": 60,
                "checkpoint_every": 8,
                "params": {"loss": "log_loss"},
            },
        },
    )
    killed_at = kill_after_checkpoint(
        [DASKYARD, "train", "incremental", "--config", str(config)],
        out / "checkpoints",
        "step-000016.skops",
    )
    assert 16 <= killed_at < 480

    result = run_cli("train", "incremental", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"from checkpoint at block {killed_at}" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["resumed_from_block"] == killed_at
    assert manifest["training"]["blocks_seen"] == 480
    assert json.loads((out / "metrics.json").read_text())["validation"]["accuracy"] > 0.7


CASES = {
    "estimator without partial_fit": (
        ["--estimator", "sklearn.ensemble.RandomForestClassifier"],
        2,
        "has no partial_fit",
    ),
    "not a dotted path": (["--estimator", "SGDClassifier"], 2, "is not a dotted path"),
    "unknown param": (
        ["--estimator", "sklearn.linear_model.SGDClassifier", "--param", "alpah=0.1"],
        2,
        "did you mean 'alpha'?",
    ),
    "invalid param value": (
        ["--estimator", "sklearn.linear_model.SGDClassifier", "--param", "loss=nope"],
        2,
        "invalid parameter for sklearn.linear_model.SGDClassifier",
    ),
    "replicas of a model that cannot be averaged": (
        ["--estimator", "sklearn.naive_bayes.MultinomialNB", "--replicas", "2"],
        2,
        "incremental.replicas is 2 but sklearn.naive_bayes.MultinomialNB cannot be averaged",
    ),
    "no replicas": (
        ["--estimator", "sklearn.linear_model.SGDClassifier", "--replicas", "0"],
        2,
        "invalid value for 'incremental.replicas' in flag --replicas (got 0)",
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_estimator_input(case, dask_cluster, blocks, tmp_path):
    extra, code, message = CASES[case]
    args = [
        "train",
        "incremental",
        "--train",
        str(blocks / "train"),
        "--target",
        "label",
        "--output",
        str(tmp_path / "o"),
        "--scheduler",
        dask_cluster.address,
        *extra,
    ]
    result = run_cli(*args)
    assert result.returncode == code, result.stderr
    assert message in result.first_error_line, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o" / "model.skops").exists()


def test_the_model_goes_to_each_block_and_no_block_moves(blocks, tmp_path):
    from distributed import get_task_stream

    from daskyard.cluster import embedded_cluster
    from daskyard.config import (
        ClusterConfig,
        DataConfig,
        IncrementalConfig,
        IncrementalJobConfig,
    )
    from daskyard.train.incremental import train_incremental

    config = IncrementalJobConfig(
        data=DataConfig(
            train=str(blocks / "train"), validation=str(blocks / "valid"), target="label"
        ),
        output=str(tmp_path / "run"),
        cluster=ClusterConfig(local_workers=2),
        incremental=IncrementalConfig(
            estimator="sklearn.linear_model.SGDClassifier",
            params={"loss": "log_loss", "random_state": 0},
            epochs=2,
        ),
    )
    with embedded_cluster(2) as cluster, Client(cluster) as client:
        with get_task_stream(client) as stream:
            result = train_incremental(config, client)
        moved = client.run(
            lambda dask_worker: [
                str(k) for t in dask_worker.transfer_incoming_log for k in t["keys"]
            ]
        )
    assert result.metrics["blocks_seen"] == 16
    fits = [t["worker"] for t in stream.data if t["key"].startswith("fit_block")]
    # The 16 steps alternate between the two workers, each reading its own blocks.
    assert len(fits) == 16 and sorted({fits.count(w) for w in set(fits)}) == [8]
    moved_keys = [k for keys in moved.values() for k in keys]
    assert any(k.startswith("fit_block") for k in moved_keys)  # the model travels
    assert not [k for k in moved_keys if k.startswith("load_block")]


def replicas_config(blocks, output, workers: int, **incremental):
    from daskyard.config import ClusterConfig, DataConfig, IncrementalConfig, IncrementalJobConfig

    return IncrementalJobConfig(
        data=DataConfig(
            train=str(blocks / "train"), validation=str(blocks / "valid"), target="label"
        ),
        output=str(output),
        cluster=ClusterConfig(local_workers=workers),
        incremental=IncrementalConfig(
            estimator="sklearn.linear_model.SGDClassifier",
            params={"loss": "log_loss", "random_state": 0},
            **incremental,
        ),
    )


def replicas_by_hand(blocks, replicas: int, epochs: int):
    """Parameter mixing in one process, written out: each round's copies fit from the
    same model, then their coefficients are averaged, weighted by their rows."""
    train = read_sorted(blocks / "train")
    features = [c for c in train[0].columns if c != "label"]
    scaler = StandardScaler().fit(pd.concat(train)[features])
    steps = [train[i] for epoch in range(epochs) for i in block_order(len(train), epoch, seed=42)]
    model = SGDClassifier(loss="log_loss", random_state=0)
    for first in range(0, len(steps), replicas):
        copies, rows = [], []
        for block in steps[first : first + replicas]:
            part = copy.deepcopy(model)
            part.partial_fit(scaler.transform(block[features]), block["label"], classes=[0, 1])
            copies.append(part)
            rows.append(len(block))
        model = copy.deepcopy(copies[0])
        for name in ("coef_", "intercept_"):
            mean = np.average([getattr(c, name) for c in copies], axis=0, weights=rows)
            setattr(model, name, mean.astype(copies[0].coef_.dtype))  # float32 blocks
        model.t_ = copies[0].t_ - rows[0] + sum(rows)
    return model


def test_replicas_make_the_same_model_on_any_cluster_size_and_after_a_resume(blocks, tmp_path):
    """3 replicas, 2 epochs of 8 blocks: rounds of 3 steps from the same model, averaged;
    the same on 1 and 2 workers, and from a checkpoint (which falls on a round's end)."""
    from daskyard.cluster import embedded_cluster
    from daskyard.train.incremental import train_incremental

    settings = {"replicas": 3, "epochs": 2, "checkpoint_every": 4}
    runs = {}
    for workers in (2, 1):
        config = replicas_config(blocks, tmp_path / f"on-{workers}", workers, **settings)
        with embedded_cluster(workers) as cluster, Client(cluster) as client:
            runs[workers] = train_incremental(config, client)
    two, one = runs[2], runs[1]
    expected = replicas_by_hand(blocks, replicas=3, epochs=2)
    np.testing.assert_allclose(two.model[-1].coef_, expected.coef_, rtol=1e-5)
    np.testing.assert_array_equal(one.model[-1].coef_, two.model[-1].coef_)
    assert two.model[-1].t_ == expected.t_ == 1 + 2 * 48_000
    assert two.manifest["training"]["replicas"] == 3 and two.metrics["blocks_seen"] == 16
    # Checkpoints only at the ends of rounds (steps 6, 9 and 12; the last two are kept).
    checkpoints = tmp_path / "on-2" / "checkpoints"
    saved = sorted(p.name for p in checkpoints.rglob("step-*.skops"))
    assert saved == ["step-000009.skops", "step-000012.skops"]

    # The same job run again, on one worker, after losing the step-12 checkpoint: it
    # resumes at step 9 and makes the same rounds.
    first = two.model[-1].coef_.copy()
    for path in checkpoints.rglob("step-000012.skops*"):
        path.unlink()
    config = replicas_config(blocks, tmp_path / "on-2", 1, **settings)
    with embedded_cluster(1) as cluster, Client(cluster) as client:
        resumed = train_incremental(config, client)
    assert resumed.manifest["training"]["resumed_from_block"] == 9
    np.testing.assert_array_equal(resumed.model[-1].coef_, first)
    assert two.metrics["validation"]["accuracy"] > 0.7
