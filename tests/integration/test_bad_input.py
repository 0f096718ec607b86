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
    assert_trains_or_refuses,
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


def one_value(column: str, row: int, value: float) -> Callable[[Path], Path]:
    """Good data, in 2 files, with ``column`` as float64 and one cell set to ``value``."""

    def build(tmp: Path) -> Path:
        frame = classification_frame(2_000)
        frame[column] = frame[column].astype("float64")
        frame.loc[row, column] = value
        return write_files(frame, tmp / "d", files=2)

    return build


nan_target = one_value("label", 1500, np.nan)
infinite_target = one_value("label", 1300, np.inf)
target_too_large_for_float32 = one_value("label", 3, 1e300)


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


def constant_target(tmp: Path) -> Path:
    frame = classification_frame(2_000)
    frame["label"] = 1
    return write_files(frame, tmp / "d", files=2)


def infinite_feature(tmp: Path) -> Path:
    frame = classification_frame(2_000)
    frame.loc[1200, "f4"] = np.inf
    return write_files(frame, tmp / "d", files=2)


too_large_for_float32 = one_value("f5", 7, 1e300)


def nan_feature(tmp: Path) -> Path:
    frame = classification_frame(2_000)
    frame.loc[3, "f1"] = np.nan
    return write_files(frame, tmp / "d", files=2)


def unicode_columns(tmp: Path) -> Path:
    frame = classification_frame(2_000).rename(columns={"f0": "température", "f1": "列"})
    return write_files(frame, tmp / "d", files=2)


def one_empty_file(tmp: Path) -> Path:
    folder = write_files(classification_frame(2_000), tmp / "d", files=2)
    classification_frame(10).iloc[:0].to_parquet(folder / "part-009.parquet", index=False)
    return folder


def header_only_csv(tmp: Path) -> Path:
    """Spark and Dask write a header-only CSV file for an empty partition."""
    folder = write_files(classification_frame(2_000), tmp / "d", files=2, fmt="csv")
    classification_frame(10).iloc[:0].to_csv(folder / "part-002.csv", index=False)
    return folder


def only_headers_csv(tmp: Path) -> Path:
    folder = tmp / "d"
    folder.mkdir()
    for index in range(2):
        classification_frame(10).iloc[:0].to_csv(folder / f"part-{index}.csv", index=False)
    return folder


def garbage_csv(tmp: Path) -> Path:
    folder = write_files(classification_frame(2_000), tmp / "d", files=2, fmt="csv")
    (folder / "part-001.csv").write_bytes(bytes(range(256)) * 40)
    return folder


def repeated_csv_column(tmp: Path) -> Path:
    folder = write_files(classification_frame(2_000), tmp / "d", files=2, fmt="csv")
    text = (folder / "part-001.csv").read_text()
    # pandas reads a repeated name as 'f1.1': the check must see the header as written.
    (folder / "part-001.csv").write_text(text.replace("f0,f1,f2", "f0,f1,f1", 1))
    return folder


def config_with(text: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        good(tmp)
        (tmp / "job.yaml").write_text(text.format(data=tmp / "data", out=tmp / "out"))
        return tmp / "data"

    return build


XGB = ["train", "xgboost", "--param", "objective=binary:logistic"]
INC = ["train", "incremental", "--estimator", "sklearn.linear_model.SGDClassifier"]
CONFIG = ["train", "xgboost", "--config", "{tmp}/job.yaml"]

# name: (data, command, exit code, text of the first error line; "" for success)
Case = tuple[Callable[[Path], Path], list[str], int, str]
CASES: dict[str, Case] = {
    "missing target column": (missing_target, XGB, 3, "target column 'label' not found in"),
    "non-numeric feature": (text_feature, XGB, 3, "feature column 'city' in"),
    "NaN in the target": (nan_target, XGB, 3, "missing values in '"),
    "no files": (empty_folder, XGB, 3, "no Parquet or CSV files found at"),
    "no rows": (no_rows, XGB, 3, "no rows in"),
    "truncated parquet": (truncated_parquet, XGB, 3, "part-001.parquet' as parquet"),
    "partitions with different columns": (different_columns, XGB, 3, "missing ['f3']"),
    "partitions with different dtypes": (different_dtypes, XGB, 3, "column 'f2' is"),
    "ragged csv": (ragged_csv, XGB, 3, "part-001.csv' as csv"),
    "binary garbage named .csv": (garbage_csv, XGB, 3, "part-001.csv' as csv"),
    "labels outside [0, 1]": (labels_out_of_range, XGB, 3, "needs labels in [0, 1]"),
    "constant target": (constant_target, XGB, 3, "holds the single value 1 in every row"),
    "infinite feature": (infinite_feature, XGB, 3, "'f4' in"),
    "value too large for float32": (too_large_for_float32, XGB, 3, "'f5' in"),
    "unicode column names train": (unicode_columns, XGB, 0, ""),
    "an empty file among others trains": (one_empty_file, XGB, 0, ""),
    "a header-only csv among others trains": (header_only_csv, XGB, 0, ""),
    "header-only csv files only": (only_headers_csv, XGB, 3, "every file holds a CSV header only"),
    "negative rounds": (good, [*XGB, "--rounds", "-3"], 2, "invalid value for 'xgboost.rounds'"),
    "zero local workers": (good, [*XGB, "--local-workers", "0"], 2, "'cluster.local_workers'"),
    "param without value": (good, [*XGB, "--param", "max_depth"], 2, "is not KEY=VALUE"),
    "param xgboost rejects": (good, [*XGB, "--param", "max_depth=-2"], 2, "XGBoost rejects"),
    "param xgboost would not use": (
        good,
        [*XGB, "--param", "max_dpeth=4"],
        2,
        "XGBoost does not use the parameter 'max_dpeth' in xgboost.params / --param; "
        "did you mean 'max_depth'?",
    ),
    "unknown objective": (good, [*XGB, "--param", "objective=binary:nope"], 2, "XGBoost rejects"),
    "mistyped flag": (good, [*XGB, "--roundz", "3"], 2, "did you mean --rounds?"),
    # Once found only at the first checkpoint, as if storage were lost (exit 75).
    "output is a file": (
        good,
        [*XGB, "--output", "{tmp}/data/part-000.parquet"],
        2,
        "part-000.parquet' is a file, not a folder",
    ),
    "output under a file": (
        good,
        [*INC, "--output", "{tmp}/data/part-001.parquet/run"],
        2,
        "is under the file '",
    ),
    "config: misspelt key": (
        config_with("data: {{train: {data}, target: label, traget: x}}\noutput: {out}\n"),
        CONFIG,
        2,
        "unknown config key 'data.traget'",
    ),
    "config: YAML syntax error": (config_with("data: [unclosed\n"), CONFIG, 2, "not valid YAML"),
    "config: a list, not a mapping": (config_with("- train\n"), CONFIG, 2, "must hold a mapping"),
    "config: wrong type": (
        config_with("train: {data}\ntarget: label\noutput: {out}\nrounds: many\n"),
        CONFIG,
        2,
        "invalid value for 'xgboost.rounds'",
    ),
    "config: missing file": (
        good,
        ["train", "xgboost", "--config", "{tmp}/nope.yaml"],
        2,
        "nope.yaml' not found",
    ),
    "estimator: arbitrary callable": (
        good,
        [*INC[:2], "--estimator", "sklearn.utils.shuffle"],
        2,
        "not a scikit-learn estimator",
    ),
    "estimator: a module": (
        good,
        [*INC[:2], "--estimator", "sklearn.linear_model"],
        2,
        "not a scikit-learn estimator",
    ),
    "estimator: outside the allow-list": (
        good,
        [*INC[:2], "--estimator", "subprocess.Popen"],
        2,
        "is not allowed",
    ),
    "estimator: builtins": (good, [*INC[:2], "--estimator", "builtins.eval"], 2, "is not allowed"),
    "estimator: NaN feature": (nan_feature, INC, 3, "'f1' in"),
    "estimator: infinite target": (
        infinite_target,
        [*INC[:2], "--estimator", "sklearn.linear_model.SGDRegressor"],
        3,
        "target column 'label' in",
    ),
    "target too large for float32": (target_too_large_for_float32, XGB, 3, "(first at row 3"),
    "estimator: continuous target": (good, [*INC, "--target", "f0"], 3, "continuous values"),
    "estimator: a label incremental.classes leaves out": (
        config_with(
            "train: {data}\ntarget: label\noutput: {out}\n"
            "incremental: {{estimator: sklearn.linear_model.SGDClassifier, classes: [0]}}\n"
        ),
        ["train", "incremental", "--config", "{tmp}/job.yaml"],
        3,
        "holds [1], which incremental.classes [0] leaves out",
    ),
    # YAML 1.1 read 1e-4 as text, so the README's own example was refused.
    "a float without a dot trains": (good, [*INC, "--param", "alpha=1e-4"], 0, ""),
    "empty output": (good, [*XGB, "--output", ""], 2, "'output' in flag --output (got '')"),
    "unknown output protocol": (
        good,
        [*XGB, "--output", "nosuchproto://x/y"],
        2,
        "output 'nosuchproto://x/y' cannot be opened",
    ),
    "a CSV column named twice": (repeated_csv_column, XGB, 3, "column 'f1' appears twice"),
    "config: a feature named twice": (
        config_with("train: {data}\ntarget: label\noutput: {out}\nfeatures: [f0, f1, f0]\n"),
        CONFIG,
        2,
        "'data.features' in config file",
    ),
    "config: a key set twice": (
        config_with("train: {data}\ntarget: label\noutput: {out}\nrounds: 3\nrounds: 4\n"),
        CONFIG,
        2,
        "key 'rounds' is given twice",
    ),
    "estimator: params partial_fit refuses": (
        good,
        [*INC, "--param", "early_stopping=true"],
        2,
        "SGDClassifier.partial_fit failed: early_stopping should be False",
    ),
    "estimator: data the estimator refuses": (
        good,
        [*INC[:2], "--estimator", "sklearn.naive_bayes.MultinomialNB"],
        2,
        "MultinomialNB.partial_fit failed: Negative values",
    ),
    "search: unknown spec kind": (
        good,
        [
            "search",
            "incremental",
            "--estimator",
            "sklearn.linear_model.SGDClassifier",
            "--space",
            "alpha=normal:0:1",
        ],
        2,
        "unknown kind 'normal'",
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_exit_code_and_message(case, dask_cluster, tmp_path):
    make_data, command, code, message = CASES[case]
    data = make_data(tmp_path)
    out = tmp_path / "out"
    args = [arg.format(tmp=tmp_path) for arg in command]
    if "--config" not in args:
        # The case's own flags come last, so they win over these defaults.
        defaults = ["--train", str(data), "--target", "label", "--output", str(out)]
        args = [*args[:2], *defaults, *args[2:]]
    result = run_cli(*args, "--scheduler", dask_cluster.address)
    assert_trains_or_refuses(result, out, code, message)


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


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("alpha=normal:0:1", "unknown kind 'normal'"),
        ("alpha=int:0.5:3", "int bounds must be whole numbers"),
    ],
)
def test_a_bad_search_space_is_refused_before_the_scheduler_is_reached(tmp_path, spec, problem):
    """Exit 2 at once: not 75 (which a Job retries) for want of a scheduler it never needed."""
    address = f"tcp://127.0.0.1:{free_port()}"
    args = ["--train", str(good(tmp_path)), "--target", "label", "--output", str(tmp_path / "o")]
    search = ["search", "incremental", "--estimator", "sklearn.linear_model.SGDClassifier"]
    result = run_cli(*search, *args, "--space", spec, "--scheduler", address, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.first_error_line.startswith(f"daskyard: error: --space {spec}: {problem}")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("http://127.0.0.1:8786", "unknown address scheme 'http'"),
        ("tcp://127.0.0.1:99999", "port 99999 is not between 1 and 65535"),
        ("tcp://[::1", "invalid address"),
    ],
)
def test_a_malformed_scheduler_address_is_refused_not_retried(tmp_path, address, problem):
    args = ["--train", str(good(tmp_path)), "--target", "label", "--output", str(tmp_path / "o")]
    result = run_cli("train", "xgboost", *args, env={"DASK_SCHEDULER_ADDRESS": address})
    assert result.returncode == 2, result.stderr
    assert result.first_error_line.startswith(
        f"daskyard: error: scheduler address '{address}' is not valid ("
    )
    assert problem in result.first_error_line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [XGB, INC], ids=["xgboost", "incremental"])
def test_a_data_error_on_an_embedded_cluster_is_the_first_line(tmp_path, command):
    """Its workers' 'Compute Failed' log, with a traceback, came before the job's line."""
    out = tmp_path / "out"
    args = ["--train", str(nan_target(tmp_path)), "--target", "label", "--output", str(out)]
    result = run_cli(*command[:2], *args, *command[2:], "--local-workers", "2")
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("daskyard: error: target column 'label' has 1 missing")
    assert "Traceback" not in result.stderr
    assert "Compute Failed" not in result.stderr


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["doctor", "--timeout", "0"], "'connect_timeout' in flag --timeout (got 0.0)"),
        (["doctor", "--scheduler", "http://127.0.0.1:1"], "unknown address scheme 'http'"),
        (["demo", "--dir", "{tmp}/d", "--local-workers", "0"], "in flag --local-workers (got 0)"),
        (["demo", "--dir", "{tmp}/a-file"], "a-file' is a file, not a folder"),
    ],
)
def test_bad_doctor_and_demo_flags_are_one_line_before_any_work(tmp_path, args, message):
    """They were exit 1 with a pydantic dump or a NotADirectoryError, the demo only
    after generating its data."""
    (tmp_path / "a-file").write_text("not a folder")
    result = run_cli(*[arg.format(tmp=tmp_path) for arg in args])
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("daskyard: error:")
    assert message in result.first_error_line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()  # no data generated
