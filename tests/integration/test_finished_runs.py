"""A rerun of a finished job trains nothing (daskyard.finished): a retried Job pod,
or the same command again, finds its results in the output and says so."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import classification_frame, run_cli, write_files

pytestmark = pytest.mark.integration

SGD = ("--estimator", "sklearn.linear_model.SGDClassifier")
JOBS = {
    "xgboost": ("train", "xgboost", "--rounds", "10"),
    "incremental": ("train", "incremental", *SGD),
    "search": ("search", "incremental", *SGD, "--space", "alpha=loguniform:1e-5:1e-2"),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_files(classification_frame(8_000), tmp_path_factory.mktemp("finished") / "d")


def job(kind: str, data: Path, out: Path, *extra: str) -> list[str]:
    args = [*JOBS[kind], "--train", str(data), "--target", "label", "--output", str(out)]
    return [*args, "--local-workers", "1", *extra]


def outputs(out: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.is_file()}


@pytest.mark.parametrize("kind", sorted(JOBS))
def test_rerun_of_a_finished_job_trains_nothing_and_keeps_its_files(kind, data, tmp_path):
    out = tmp_path / "out"
    first = run_cli(*job(kind, data, out))
    assert first.returncode == 0, first.stderr
    before = outputs(out)
    manifest = json.loads(before["manifest.json"][0])

    again = run_cli(*job(kind, data, out))
    assert again.returncode == 0, again.stderr
    assert f"run {manifest['run_id']} finished already, with this config and data" in again.stdout
    assert "cluster:" not in again.stdout  # nor a cluster started, nor data read
    assert f"delete {out}/manifest.json" in again.stdout
    # The results table, from the run's own metrics.json.
    metrics = json.loads(before["metrics.json"][0])["validation"]
    name, value = next(iter(metrics.items()))
    assert f"validation {name}" in again.stdout and f"{value:.4f}" in again.stdout
    assert outputs(out) == before  # not written again, not even the same bytes
    if kind == "search":  # results.json is listed, and checked, with the others
        assert set(manifest["files"]) >= {"results.json", "model.skops", "metrics.json"}


def test_changed_data_or_a_damaged_output_file_trains_again(data, tmp_path):
    out = tmp_path / "out"
    assert run_cli(*job("xgboost", data, out)).returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())

    (out / "model.ubj").write_bytes(b"not the model")
    damaged = run_cli(*job("xgboost", data, out))
    assert damaged.returncode == 0, damaged.stderr
    assert "finished already" not in damaged.stdout and "cluster:" in damaged.stdout
    model = (out / "model.ubj").read_bytes()
    assert hashlib.sha256(model).hexdigest() == manifest["files"]["model.ubj"]["sha256"]

    grown = write_files(classification_frame(8_000), tmp_path / "grown")
    other = tmp_path / "other"
    assert run_cli(*job("xgboost", grown, other)).returncode == 0
    classification_frame(2_000, seed=1).to_parquet(grown / "part-004.parquet", index=False)
    changed = run_cli(*job("xgboost", grown, other))
    assert changed.returncode == 0, changed.stderr
    assert "finished already" not in changed.stdout and "cluster:" in changed.stdout
    rows = json.loads((other / "metrics.json").read_text())["rows"]
    assert rows["train"] + rows["validation"] == 10_000
