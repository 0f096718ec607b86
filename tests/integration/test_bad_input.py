"""Every bad input: the contract's exit code, one clear first line, no traceback, no output."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import (
    DASKYARD,
    classification_frame,
    free_port,
    run_cli,
    start_process_cluster,
    stop_processes,
    write_config,
    write_files,
)

pytestmark = pytest.mark.integration


def good(tmp: Path) -> Path:
    return write_files(classification_frame(2_000), tmp / "data", files=2)


def missing_target(tmp: Path) -> Path:
    return write_files(classification_frame(2_000).rename(columns={"label": "y"}), tmp / "d")


def text_feature(tmp: Path) -> Path:
    frame = classification_frame(2_000)
    frame["city"] = "paris"
    return write_files(frame, tmp / "d")


def nan_target(tmp: Path) -> Path:
    frame = classification_frame(2_000)
    frame["label"] = frame["label"].astype("float64")
    frame.loc[1500, "label"] = np.nan
    return write_files(frame, tmp / "d", files=2)


def empty_folder(tmp: Path) -> Path:
    (tmp / "d").mkdir()
    return tmp / "d"


def no_rows(tmp: Path) -> Path:
    return write_files(classification_frame(2_000).iloc[:0], tmp / "d", files=2)


def truncated_parquet(tmp: Path) -> Path:
    folder = write_files(classification_frame(2_000), tmp / "d", files=2)
    victim = folder / "part-001.parquet"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return folder


def different_columns(tmp: Path) -> Path:
    folder = write_files(classification_frame(2_000), tmp / "d", files=2)
    frame = pd.read_parquet(folder / "part-001.parquet").drop(columns=["f3"])
    frame.to_parquet(folder / "part-001.parquet", index=False)
    return folder


def different_dtypes(tmp: Path) -> Path:
    folder = write_files(classification_frame(2_000), tmp / "d", files=2)
    frame = pd.read_parquet(folder / "part-001.parquet")
    frame["f2"] = frame["f2"].astype(str)
    frame.to_parquet(folder / "part-001.parquet", index=False)
    return folder


def ragged_csv(tmp: Path) -> Path:
    folder = write_files(classification_frame(2_000), tmp / "d", files=2, fmt="csv")
    with open(folder / "part-001.csv", "a") as handle:
        handle.write("1,2,3,4,5,6,7,8,9,10,11,12\n")
    return folder


def labels_out_of_range(tmp: Path) -> Path:
    frame = classification_frame(2_000)
    frame.loc[10, "label"] = 2
    return write_files(frame, tmp / "d", files=2)


Case = tuple[Callable[[Path], Path], list[str], int, str]

CASES: dict[str, Case] = {
    "missing target column": (missing_target, [], 3, "target column 'label' not found in"),
    "non-numeric feature": (text_feature, [], 3, "feature column 'city' in"),
    "NaN in the target": (nan_target, [], 3, "missing values in '"),
    "no files": (empty_folder, [], 3, "no Parquet or CSV files found at"),
    "no rows": (no_rows, [], 3, "no rows in"),
    "truncated parquet": (truncated_parquet, [], 3, "part-001.parquet' as parquet"),
    "partitions with different columns": (different_columns, [], 3, "missing ['f3']"),
    "partitions with different dtypes": (different_dtypes, [], 3, "column 'f2' is"),
    "ragged csv": (ragged_csv, [], 3, "part-001.csv' as csv"),
    "labels outside [0, 1]": (labels_out_of_range, [], 3, "needs labels in [0, 1]"),
    "negative rounds": (good, ["--rounds", "-3"], 2, "invalid value for 'xgboost.rounds'"),
    "param without value": (good, ["--param", "max_depth"], 2, "is not KEY=VALUE"),
    "param xgboost rejects": (good, ["--param", "max_depth=-2"], 2, "XGBoost rejects"),
    "unknown objective": (good, ["--param", "objective=binary:nope"], 2, "XGBoost rejects"),
    "mistyped flag": (good, ["--roundz", "3"], 2, "did you mean --rounds?"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_exit_code_and_message(case, dask_cluster, tmp_path):
    make_data, extra, code, message = CASES[case]
    data = make_data(tmp_path)
    out = tmp_path / "out"
    result = run_cli(
        "train",
        "xgboost",
        "--train",
        str(data),
        "--target",
        "label",
        "--output",
        str(out),
        "--param",
        "objective=binary:logistic",
        "--scheduler",
        dask_cluster.address,
        *extra,
    )
    assert result.returncode == code, result.stderr
    assert message in result.first_error_line, result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "model.ubj").exists() and not (out / "manifest.json").exists()


def test_config_file_problem_names_key_and_file(dask_cluster, tmp_path):
    config = write_config(
        tmp_path / "job.yaml",
        {
            "data": {"train": str(good(tmp_path)), "target": "label", "validaton": "x"},
            "output": str(tmp_path / "o"),
        },
    )
    result = run_cli("train", "xgboost", "--config", str(config))
    assert result.returncode == 2
    assert result.first_error_line == (
        f"daskyard: error: unknown config key 'data.validaton' in config file '{config}'; "
        "did you mean 'validation'?"
    )


def test_unreachable_scheduler_exits_75_within_the_timeout(tmp_path):
    config = write_config(
        tmp_path / "job.yaml",
        {
            "data": {"train": str(good(tmp_path)), "target": "label"},
            "output": str(tmp_path / "o"),
            "cluster": {"connect_timeout": 2},
        },
    )
    address = f"tcp://127.0.0.1:{free_port()}"
    result = run_cli(
        "train", "xgboost", "--config", str(config), "--scheduler", address, timeout=60
    )
    assert result.returncode == 75, result.stderr
    assert result.first_error_line.startswith(
        f"daskyard: error: scheduler {address} unreachable after 2s"
    )
    assert "Traceback" not in result.stderr


def test_scheduler_from_environment_is_used(dask_cluster, tmp_path):
    result = run_cli(
        "train",
        "xgboost",
        "--train",
        str(good(tmp_path)),
        "--target",
        "label",
        "--output",
        str(tmp_path / "o"),
        "--rounds",
        "2",
        env={"DASK_SCHEDULER_ADDRESS": dask_cluster.address},
    )
    assert result.returncode == 0, result.stderr
    assert f"cluster: {dask_cluster.address}, 2 workers" in result.stdout


def test_scheduler_lost_mid_training_exits_75_and_a_rerun_resumes(small_dataset, tmp_path):
    cluster = start_process_cluster(tmp_path / "logs", n_workers=2)
    config = write_config(
        tmp_path / "job.yaml",
        {
            "data": {"train": str(small_dataset), "target": "label"},
            "output": str(tmp_path / "o"),
            "cluster": {"connect_timeout": 5},
            "xgboost": {"rounds": 600, "params": {"objective": "binary:logistic"}},
        },
    )
    try:
        proc = subprocess.Popen(
            [DASKYARD, "train", "xgboost", "--config", str(config), "--scheduler", cluster.address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not list((tmp_path / "o" / "checkpoints").glob("*/step-000020.ubj")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.05)
        cluster.processes[0].kill()  # the scheduler
        # Bounded by connect_timeout (5 s) plus shutdown: no hang.
        _, stderr = proc.communicate(timeout=60)
    finally:
        stop_processes(cluster.processes)
    assert proc.returncode == 75, stderr
    assert stderr.splitlines()[0].startswith("daskyard: error: training lost contact")
    assert not (tmp_path / "o" / "model.ubj").exists()

    fresh = start_process_cluster(tmp_path / "logs2", n_workers=2)
    try:
        rerun = run_cli(
            "train", "xgboost", "--config", str(config), "--scheduler", fresh.address, timeout=600
        )
    finally:
        stop_processes(fresh.processes)
    assert rerun.returncode == 0, rerun.stderr
    assert "from checkpoint at round" in rerun.stdout
