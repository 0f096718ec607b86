"""The CLI's surfaces: argument errors, scheduler addresses, output folders it cannot
write or that hold another run's results. Exit codes and first lines of the contract."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import DASKYARD, classification_frame, run_cli, write_files

pytestmark = pytest.mark.integration


def first_line(stderr: str) -> str:
    return stderr.splitlines()[0] if stderr else ""


# ---------------------------------------------------------------- arguments


def test_an_unknown_flag_before_the_command_is_named():
    result = run_cli("--foo", "train", "xgboost")
    assert result.returncode == 2
    assert first_line(result.stderr).startswith("daskyard: error: unrecognized arguments: --foo")


def test_a_command_reports_its_own_mistyped_flag_on_the_first_line():
    result = run_cli("train", "xgboost", "--rouns", "3")
    assert result.returncode == 2
    line = first_line(result.stderr)
    assert line.startswith("daskyard: error: train xgboost: unrecognized arguments: --rouns")
    assert "(did you mean --rounds?)" in line
    assert "see 'daskyard train xgboost --help'" in line


def test_a_flag_of_another_command_is_not_suggested():
    """--epochs is train incremental's: train xgboost has no such flag to suggest."""
    result = run_cli("train", "xgboost", "--epochs", "3")
    assert result.returncode == 2
    assert "did you mean --epochs" not in result.stderr


def test_a_flag_before_its_command_says_where_it_goes():
    result = run_cli("--train", "d/", "train", "xgboost")
    assert result.returncode == 2
    assert "--train goes after the command: 'daskyard train xgboost --train ...'" in (
        first_line(result.stderr)
    )


@pytest.mark.parametrize(
    ("args", "hint"),
    [(["trian"], "did you mean 'train'?"), (["train", "xgb"], "did you mean 'xgboost'?")],
)
def test_a_mistyped_command_gets_a_did_you_mean(args, hint):
    result = run_cli(*args)
    assert result.returncode == 2
    assert first_line(result.stderr).startswith("daskyard: error:")
    assert hint in first_line(result.stderr)


# ---------------------------------------------------------------- scheduler addresses


@pytest.mark.parametrize(
    ("address", "shown", "problem"),
    [
        ("foo bar", "tcp://foo bar", "missing port number"),
        ("tcp://host", "tcp://host", "missing port number"),
        ("tcp://:8786", "tcp://:8786", "host '' is not a host name"),
    ],
)
def test_doctor_refuses_a_scheduler_address_without_host_or_port(address, shown, problem):
    """The client raised ValueError on them: exit 1 and a traceback."""
    result = run_cli("doctor", "--scheduler", address, "--timeout", "2")
    assert result.returncode == 2, result.stderr
    assert first_line(result.stderr).startswith(
        f"daskyard: error: scheduler address '{shown}' is not valid ("
    )
    assert problem in first_line(result.stderr)
    assert "Traceback" not in result.stderr


def test_a_scheduler_address_without_a_port_is_refused_before_training(tmp_path):
    data = write_files(classification_frame(1_000), tmp_path / "d", files=2)
    result = run_cli(
        *("train", "xgboost", "--train", str(data), "--target", "label"),
        *("--output", str(tmp_path / "out")),
        env={"DASK_SCHEDULER_ADDRESS": "nope"},
    )
    assert result.returncode == 2, result.stderr
    assert first_line(result.stderr).startswith(
        "daskyard: error: scheduler address 'tcp://nope' is not valid (missing port number"
    )
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- output folders


def xgb(data: Path | str, out: Path, *extra: str) -> list[str]:
    return [
        *("train", "xgboost", "--train", str(data), "--target", "label"),
        *("--output", str(out), "--param", "objective=binary:logistic", *extra),
    ]


def test_an_output_holding_another_runs_results_is_refused_untouched(tmp_path):
    data = write_files(classification_frame(2_000), tmp_path / "d", files=2)
    out = tmp_path / "out"
    first = run_cli(*xgb(data, out, "--rounds", "4"))
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    other = run_cli(*xgb(data, out, "--rounds", "6"))
    assert other.returncode == 2, other.stderr
    assert first_line(other.stderr).startswith(
        f"daskyard: error: output '{out}' holds the results of another run"
    )
    assert "its xgboost.rounds is 4, this job's 6" in first_line(other.stderr)
    assert "cluster:" not in other.stdout  # refused before any work

    incremental = run_cli(
        *("train", "incremental", "--estimator", "sklearn.linear_model.SGDClassifier"),
        *("--train", str(data), "--target", "label", "--output", str(out)),
    )
    assert incremental.returncode == 2, incremental.stderr
    assert "of kind xgboost; this job's kind is incremental" in first_line(incremental.stderr)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    # The same job, however its data path is spelled: it reruns there.
    same = run_cli(*xgb(f"file://{data}/", out, "--rounds", "4"))
    assert same.returncode == 0, same.stderr
    assert json.loads((out / "manifest.json").read_text())["kind"] == "xgboost"


def unprivileged() -> list[str]:
    """A prefix that makes permission bits bind (root ignores them)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a folder unwritable")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def run_unprivileged(*args: str):
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    return subprocess.run(
        [*unprivileged(), DASKYARD, *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def read_only(tmp_path: Path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_an_output_that_cannot_be_written_is_refused_before_training(tmp_path, read_only):
    """It was three attempts 'lost a worker' and exit 75: retried as transient, forever."""
    data = write_files(classification_frame(2_000), tmp_path / "d", files=2)
    result = run_unprivileged(*xgb(data, read_only / "out", "--rounds", "20"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert first_line(result.stderr).startswith(
        f"daskyard: error: output '{read_only / 'out'}' cannot be written"
    )
    assert "Permission denied" in first_line(result.stderr)
    assert "lost a worker" not in result.stdout


def test_a_checkpoints_folder_that_cannot_be_written_is_refused(tmp_path, read_only):
    data = write_files(classification_frame(2_000), tmp_path / "d", files=2)
    config = tmp_path / "job.yaml"
    config.write_text(f"checkpoints: {read_only / 'ckpt'}\n")
    result = run_unprivileged(
        *xgb(data, tmp_path / "out", "--rounds", "20"), "--config", str(config)
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "checkpoints" in first_line(result.stderr)
    assert "cannot be written" in first_line(result.stderr)


def test_demo_into_a_folder_it_cannot_write_is_refused(read_only):
    result = run_unprivileged("demo", "--dir", str(read_only / "demo"), "--rows", "1000")
    assert result.returncode == 2, result.stdout + result.stderr
    assert first_line(result.stderr).startswith("daskyard: error: --dir")
    assert "Traceback" not in result.stderr
