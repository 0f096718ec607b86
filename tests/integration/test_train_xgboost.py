"""``daskyard train xgboost`` end to end on real scheduler and worker processes."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost
from sklearn.metrics import roc_auc_score

from tests.conftest import (
    DASKYARD,
    classification_frame,
    free_port,
    kill_after_checkpoint,
    run_cli,
    write_config,
    write_files,
)

pytestmark = pytest.mark.integration

PARAMS = ["--param", "objective=binary:logistic", "--param", "max_depth=5", "--param", "eta=0.2"]


@pytest.fixture(scope="module")
def split_dataset(tmp_path_factory):
    """Explicit train and validation folders, so a single-process run sees the same rows."""
    root = tmp_path_factory.mktemp("split")
    frame = classification_frame(60_000, seed=1)
    write_files(frame.iloc[:45_000], root / "train", files=6)
    write_files(frame.iloc[45_000:], root / "valid", files=2)
    return root


def read_folder(folder) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))])


def test_distributed_auc_matches_single_process_xgboost(dask_cluster, split_dataset, tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "train",
        "xgboost",
        "--train",
        str(split_dataset / "train"),
        "--validation",
        str(split_dataset / "valid"),
        "--target",
        "label",
        "--output",
        str(out),
        "--rounds",
        "60",
        *PARAMS,
        "--scheduler",
        dask_cluster.address,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())

    train, valid = read_folder(split_dataset / "train"), read_folder(split_dataset / "valid")
    features = [c for c in train.columns if c != "label"]
    booster = xgboost.train(
        {
            "objective": "binary:logistic",
            "max_depth": 5,
            "eta": 0.2,
            "tree_method": "hist",
            "nthread": 2,
        },
        xgboost.QuantileDMatrix(train[features], label=train["label"]),
        num_boost_round=60,
    )
    single_auc = roc_auc_score(valid["label"], booster.predict(xgboost.DMatrix(valid[features])))
    assert single_auc > 0.8  # the problem is learnable, so the comparison means something
    assert abs(metrics["validation"]["auc"] - single_auc) < 0.005
    assert metrics["rounds"] == 60

    model = xgboost.Booster(model_file=str(out / "model.ubj"))
    model_auc = roc_auc_score(valid["label"], model.predict(xgboost.DMatrix(valid[features])))
    assert abs(model_auc - metrics["validation"]["auc"]) < 1e-4


def test_artifacts_manifest_and_progress_lines(dask_cluster, small_dataset, tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "xgboost",
        "--train",
        str(small_dataset),
        "--target",
        "label",
        "--output",
        str(out),
        "--rounds",
        "20",
        *PARAMS,
        "--scheduler",
        dask_cluster.address,
    ]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints",
        "manifest.json",
        "metrics.json",
        "model.ubj",
    ]
    progress = [line for line in result.stdout.splitlines() if line.startswith("round ")]
    assert [line.split()[1] for line in progress] == ["10/20", "20/20"]
    assert all("validation-auc=" in line and "eta " in line for line in progress)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run_id"].startswith("xgb-")
    assert manifest["config"]["xgboost"]["rounds"] == 20
    assert manifest["versions"]["xgboost"] == xgboost.__version__
    assert manifest["data"]["rows"]["train"] + manifest["data"]["rows"]["validation"] == 20_000
    assert len(manifest["data"]["fingerprint"]) == 64
    assert manifest["training"]["workers"] == 2
    assert manifest["training"]["tracker"].startswith("127.0.0.1:")
    assert set(manifest["timings"]["seconds"]) >= {"load_and_validate", "train"}
    # The seeded split is the same every time: a second run gets the same run id.
    (out / "manifest.json").unlink()  # else it finds the run finished (test_finished_runs)
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "from checkpoint at round 10" in again.stdout
    assert json.loads((out / "manifest.json").read_text())["run_id"] == manifest["run_id"]


def test_regression_reports_rmse_and_r2(dask_cluster, tmp_path):
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(8_000, 4)).astype("float32"), columns=list("abcd"))
    frame["y"] = 3 * frame["a"] - frame["b"] + rng.normal(scale=0.1, size=len(frame))
    data = write_files(frame, tmp_path / "reg", files=2, fmt="csv")
    result = run_cli(
        "train",
        "xgboost",
        "--train",
        str(data),
        "--target",
        "y",
        "--output",
        str(tmp_path / "o"),
        "--rounds",
        "40",
        "--scheduler",
        dask_cluster.address,
    )
    assert result.returncode == 0, result.stderr
    validation = json.loads((tmp_path / "o" / "metrics.json").read_text())["validation"]
    assert set(validation) == {"rmse", "r2"}
    assert validation["r2"] > 0.95 and validation["rmse"] < 0.5


@pytest.mark.parametrize("validation_files", [1, 3])
def test_regression_r2_on_explicit_validation_files_matches_sklearn(
    dask_cluster, tmp_path, validation_files
):
    """Explicit validation files are read from futures on each worker; R² over them
    once crashed dask's array graph ("pop from an empty set" with one file)."""
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(4)
    frame = pd.DataFrame(rng.normal(size=(9_000, 4)).astype("float32"), columns=list("abcd"))
    frame["y"] = 2 * frame["a"] + frame["c"] * frame["d"] + rng.normal(scale=0.3, size=len(frame))
    train = write_files(frame.iloc[:6_000], tmp_path / "train", files=3)
    valid = write_files(frame.iloc[6_000:], tmp_path / "valid", files=validation_files)
    out = tmp_path / "o"
    result = run_cli(
        "train", "xgboost", "--train", str(train), "--validation", str(valid), "--target", "y",
        "--output", str(out), "--rounds", "30", "--scheduler", dask_cluster.address,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    reported = json.loads((out / "metrics.json").read_text())["validation"]["r2"]
    held_out = read_folder(valid)
    booster = xgboost.Booster(model_file=str(out / "model.ubj"))
    predicted = booster.predict(xgboost.DMatrix(held_out[list("abcd")]))
    assert reported == pytest.approx(r2_score(held_out["y"], predicted), abs=1e-5)
    assert reported > 0.5


def test_early_stopping_stops_before_the_requested_rounds(dask_cluster, small_dataset, tmp_path):
    config = write_config(
        tmp_path / "job.yaml",
        {
            "data": {"train": str(small_dataset), "target": "label"},
            "output": str(tmp_path / "o"),
            "xgboost": {
                "rounds": 500,
                "early_stopping_rounds": 5,
                "params": {"objective": "binary:logistic", "eta": 0.8, "max_depth": 8},
            },
        },
    )
    result = run_cli(
        "train", "xgboost", "--config", str(config), "--scheduler", dask_cluster.address
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["rounds"] < 500
    assert metrics["best_iteration"] == metrics["rounds"] - 6


def test_killed_run_resumes_from_its_checkpoint_and_ends_with_the_requested_rounds(
    small_dataset, tmp_path
):
    """A Job pod killed mid-training: the rerun continues instead of starting over."""
    out = tmp_path / "run"
    config = write_config(
        tmp_path / "job.yaml",
        {
            "data": {"train": str(small_dataset), "target": "label"},
            "output": str(out),
            "cluster": {"local_workers": 2},
            "xgboost": {
                "rounds": 300,
                "checkpoint_every": 10,
                "params": {"objective": "binary:logistic", "max_depth": 6},
            },
        },
    )
    killed_at = kill_after_checkpoint(
        [DASKYARD, "train", "xgboost", "--config", str(config)],
        out / "checkpoints",
        "step-000020.ubj",
    )
    assert not (out / "model.ubj").exists()
    assert killed_at < 300

    result = run_cli("train", "xgboost", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"from checkpoint at round {killed_at}" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["resumed_from_round"] == killed_at
    assert xgboost.Booster(model_file=str(out / "model.ubj")).num_boosted_rounds() == 300
    progress = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("round")]
    assert progress[0] == f"{killed_at + 10}/300" and progress[-1] == "300/300"


# Overfits from the second round on (eta 1, depth 12): the best round comes early, the
# stop PATIENCE rounds later, on a round that is not a multiple of CHECKPOINT_EVERY.
PATIENCE, CHECKPOINT_EVERY, ROUNDS = 20, 4, 60
EARLY_STOPPING = {
    "rounds": ROUNDS,
    "early_stopping_rounds": PATIENCE,
    "checkpoint_every": CHECKPOINT_EVERY,
    "params": {"objective": "binary:logistic", "eta": 1.0, "max_depth": 12},
}


def early_stopping_config(small_dataset: Path, out: Path) -> Path:
    return write_config(
        out.parent / f"{out.name}.yaml",
        {
            "data": {"train": str(small_dataset), "target": "label"},
            "output": str(out),
            "cluster": {"local_workers": 2},
            "xgboost": EARLY_STOPPING,
        },
    )


@dataclass(frozen=True)
class FinishedRun:
    config: Path
    output: Path
    model: bytes  # as the run left them, before any test reruns it
    metrics: dict


@pytest.fixture(scope="module")
def early_stopped_run(small_dataset, tmp_path_factory) -> FinishedRun:
    out = tmp_path_factory.mktemp("early-stopped") / "run"
    config = early_stopping_config(small_dataset, out)
    result = run_cli("train", "xgboost", "--config", str(config))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    # It stopped early, PATIENCE rounds after its best one, between two checkpoints.
    assert metrics["rounds"] == metrics["best_iteration"] + 1 + PATIENCE < ROUNDS
    assert metrics["rounds"] % CHECKPOINT_EVERY != 0
    return FinishedRun(config, out, (out / "model.ubj").read_bytes(), metrics)


def test_rerun_of_an_early_stopped_run_changes_nothing(early_stopped_run):
    """A retried Job pod of a run that stopped early finds it over: no training resumes,
    even when the pod was lost after the stop and before its results were written."""
    run = early_stopped_run
    finished = run_cli("train", "xgboost", "--config", str(run.config))
    assert finished.returncode == 0, finished.stderr
    assert "finished already" in finished.stdout
    (run.output / "manifest.json").unlink()
    result = run_cli("train", "xgboost", "--config", str(run.config))
    assert result.returncode == 0, result.stderr
    assert f"stopped early at round {run.metrics['rounds']}: nothing to resume" in result.stdout
    assert (run.output / "model.ubj").read_bytes() == run.model
    assert json.loads((run.output / "metrics.json").read_text()) == run.metrics


def test_killed_early_stopping_run_resumes_to_the_uninterrupted_result(
    early_stopped_run, small_dataset, tmp_path
):
    """The resumed run remembers the best round before the kill and stops where the
    uninterrupted one did, with the same model and metrics."""
    out = tmp_path / "run"
    config = early_stopping_config(small_dataset, out)
    killed_at = kill_after_checkpoint(
        [DASKYARD, "train", "xgboost", "--config", str(config)],
        out / "checkpoints",
        f"step-{CHECKPOINT_EVERY:06d}.ubj",
    )
    expected = early_stopped_run.metrics
    # Killed after the best round and before the stop: the rerun must know both.
    assert expected["best_iteration"] < killed_at < expected["rounds"]

    result = run_cli("train", "xgboost", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"from checkpoint at round {killed_at}" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert {k: v for k, v in metrics.items() if k != "validation"} == {
        k: v for k, v in expected.items() if k != "validation"
    }
    assert metrics["validation"] == pytest.approx(expected["validation"], rel=1e-9)
    model = (out / "model.ubj").read_bytes()
    if model != early_stopped_run.model:
        assert_same_predictions(model, early_stopped_run.model, read_folder(small_dataset))


def assert_same_predictions(model: bytes, expected: bytes, frame: pd.DataFrame) -> None:
    """Equal up to the order of float sums: the same trees' predictions, to 1e-6.

    XGBoost's histograms are sums over each worker's rows, added across the workers,
    so rows held by another worker than in the first run (a task the scheduler moved
    on a loaded machine, say) change the last bit of a split's gain or a leaf's
    weight. CI once saw one byte of the model differ, with equal metrics; 11 runs
    here did not. A resume that skipped or repeated rounds changes trees, and
    predictions by far more.
    """
    boosters = [xgboost.Booster(model_file=bytearray(raw)) for raw in (model, expected)]
    assert boosters[0].num_boosted_rounds() == boosters[1].num_boosted_rounds()
    matrix = xgboost.DMatrix(frame.drop(columns=["label"]))
    margins = [b.predict(matrix, output_margin=True) for b in boosters]
    assert np.allclose(margins[0], margins[1], rtol=1e-6, atol=1e-6), first_difference(
        model, expected
    )


def first_difference(model: bytes, expected: bytes) -> str:
    """Where two models first differ, as a path into XGBoost's JSON model: a byte offset
    says nothing."""

    def tree(raw: bytes) -> object:
        return json.loads(xgboost.Booster(model_file=bytearray(raw)).save_raw("json"))

    def walk(a: object, b: object, path: str) -> str | None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                found = walk(a.get(key), b.get(key), f"{path}/{key}")
                if found:
                    return found
            return None
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for index, (x, y) in enumerate(zip(a, b, strict=True)):
                found = walk(x, y, f"{path}[{index}]")
                if found:
                    return found
            return None
        return None if a == b else f"{path}: {a!r:.200} != {b!r:.200}"

    return walk(tree(model), tree(expected), "") or "equal as JSON"


def test_max_bin_param_sets_the_histogram_bins(tmp_path):
    """max_bin reaches both quantile matrices (XGBoost refuses a training matrix
    whose bins differ from the booster's); no feature splits at more than its bins."""
    data, out = write_files(classification_frame(8_000), tmp_path / "data"), tmp_path / "o"
    result = run_cli(
        "train", "xgboost", "--train", str(data), "--target", "label",
        "--output", str(out), "--rounds", "20",
        "--param", "objective=binary:logistic", "--param", "max_depth=8",
        "--param", "max_bin=16",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    trees = xgboost.Booster(model_file=str(out / "model.ubj")).trees_to_dataframe()
    thresholds = trees[trees["Feature"] != "Leaf"].groupby("Feature")["Split"].nunique()
    assert thresholds.max() <= 16  # 256 bins by default: well over 100 here


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--local-workers", "1"], "1 worker, 1 thread"),
        # By default XGBoost gets one worker with every core: no collective between processes.
        ([], f"1 worker, {os.cpu_count()} threads"),
    ],
)
def test_embedded_cluster_is_used_without_a_scheduler(small_dataset, tmp_path, flags, expected):
    result = run_cli(
        "train",
        "xgboost",
        "--train",
        str(small_dataset),
        "--target",
        "label",
        "--output",
        str(tmp_path / "o"),
        "--rounds",
        "5",
        *flags,
        *PARAMS,
    )
    assert result.returncode == 0, result.stderr
    assert f"cluster: embedded local cluster, {expected}" in result.stdout


def test_help_explains_every_flag():
    result = run_cli("train", "xgboost", "--help")
    assert result.returncode == 0
    for flag in (
        "--config",
        "--train",
        "--validation",
        "--target",
        "--output",
        "--rounds",
        "--param",
        "--scheduler",
        "--local-workers",
    ):
        assert flag in result.stdout
    assert "75" in result.stdout  # the exit codes are documented


def test_demo_trains_and_prints_where_artifacts_are(tmp_path):
    result = run_cli("demo", "--dir", str(tmp_path / "demo"), "--rows", "20000")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "demo" / "run" / "metrics.json").read_text())
    assert metrics["validation"]["auc"] > 0.85
    assert str(tmp_path / "demo" / "run" / "model.ubj") in result.stdout


def test_declared_categorical_feature_trains_with_one_category_set(dask_cluster, tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "cat"
    folder.mkdir()
    for index, cities in enumerate([["paris", "rome", "oslo"], ["paris", "rome"], ["lima"]]):
        frame = pd.DataFrame({"a": rng.normal(size=3_000), "city": rng.choice(cities, 3_000)})
        frame["label"] = ((frame["a"] > 1) | (frame["city"] == "rome")).astype(int)
        frame.to_parquet(folder / f"p{index}.parquet", index=False)
    config = write_config(
        tmp_path / "job.yaml",
        {
            "data": {"train": str(folder), "target": "label", "categorical": ["city"]},
            "output": str(tmp_path / "o"),
            "xgboost": {"rounds": 10, "params": {"objective": "binary:logistic"}},
        },
    )
    result = run_cli(
        "train", "xgboost", "--config", str(config), "--scheduler", dask_cluster.address
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["validation"]["auc"] > 0.99


def bound_ports(count: int, span: int) -> tuple[int, list[socket.socket]]:
    """``span`` consecutive free loopback ports, the first ``count`` of them bound (as
    a stale tracker holds its port). The others are checked free: one held by
    anything else would change where the tracker goes."""
    for _ in range(50):
        first = free_port()
        held: list[socket.socket] = []
        try:
            for port in range(first, first + span):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            for sock in held:
                sock.close()
            continue
        for sock in held[count:]:
            sock.close()
        return first, held[:count]
    raise RuntimeError(f"no {span} consecutive free ports")


@pytest.mark.parametrize("taken", [1, 2])
def test_tracker_takes_the_next_declared_port_or_says_why_it_cannot(
    taken, dask_cluster, small_dataset, tmp_path
):
    """Ports held by stale trackers (dmlc/xgboost#7959) are skipped; when the whole
    range is held, the job says so and lets XGBoost take any port."""
    first, held = bound_ports(taken, span=2)
    try:
        config = write_config(
            tmp_path / "job.yaml",
            {
                "data": {"train": str(small_dataset), "target": "label"},
                "output": str(tmp_path / "o"),
                "xgboost": {
                    "rounds": 5,
                    "tracker_port": first,
                    "tracker_ports": 2,
                    "params": {"objective": "binary:logistic"},
                },
            },
        )
        result = run_cli(
            "train", "xgboost", "--config", str(config), "--scheduler", dask_cluster.address
        )
    finally:
        for sock in held:
            sock.close()
    assert result.returncode == 0, result.stderr
    tracker = json.loads((tmp_path / "o" / "manifest.json").read_text())["training"]["tracker"]
    warning = f"warning: every XGBoost tracker port {first}-{first + 1} on the scheduler"
    if taken == 1:
        assert tracker == f"127.0.0.1:{first + 1}"
        assert warning not in result.stdout
    else:
        assert tracker == "127.0.0.1:0"  # XGBoost's choice
        assert warning in result.stdout
