"""Large Parquet files, read as blocks of whole row groups (daskyard.row_groups)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import assert_trains_or_refuses, classification_frame, run_cli, write_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def one_file(tmp_path_factory):
    """One 1.6 MiB Parquet file of 16 row groups; jobs cut it at max_block_mb 1."""
    path = tmp_path_factory.mktemp("large") / "train.parquet"
    classification_frame(40_000, seed=7).to_parquet(path, index=False, row_group_size=2_500)
    return path


def small_blocks(tmp_path) -> str:
    return str(write_config(tmp_path / "blocks.yaml", {"data": {"max_block_mb": 1}}))


def test_xgboost_trains_one_file_on_both_workers(dask_cluster, one_file, tmp_path):
    """As one partition, one worker trained on every row while XGBoost warned that the
    other had an empty DMatrix."""
    out = tmp_path / "out"
    result = run_cli(
        *("train", "xgboost", "--config", small_blocks(tmp_path), "--train", str(one_file)),
        *("--target", "label", "--rounds", "10", "--param", "objective=binary:logistic"),
        *("--output", str(out), "--scheduler", dask_cluster.address),
    )
    assert_trains_or_refuses(result, out, 0, "")
    assert ", 2 partitions\n" in result.stdout
    assert "empty DMatrix" not in result.stdout + result.stderr
    (train,) = json.loads((out / "manifest.json").read_text())["data"]["sources"]
    assert (train["files"], train["blocks"]) == (1, 2)


def test_a_search_holds_out_blocks_of_a_single_file(dask_cluster, one_file, tmp_path):
    """A single file was refused: a search without --validation holds out whole files."""
    out = tmp_path / "search"
    result = run_cli(
        *("search", "incremental", "--config", small_blocks(tmp_path)),
        *("--estimator", "sklearn.linear_model.SGDClassifier", "--train", str(one_file)),
        *("--target", "label", "--space", "alpha=loguniform:1e-5:1e-1", "--candidates", "4"),
        *("--output", str(out), "--scheduler", dask_cluster.address),
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert len(results["candidates"]) == 4
    manifest = json.loads((out / "manifest.json").read_text())
    blocks = sum(source["blocks"] for source in manifest["data"]["sources"])
    assert blocks == 2


def test_an_incremental_job_streams_one_file_in_blocks(dask_cluster, one_file, tmp_path):
    out = tmp_path / "incremental"
    result = run_cli(
        *("train", "incremental", "--config", small_blocks(tmp_path), "--train", str(one_file)),
        *("--estimator", "sklearn.linear_model.SGDClassifier", "--target", "label"),
        *("--output", str(out), "--scheduler", dask_cluster.address),
    )
    assert_trains_or_refuses(result, out, 0, "")
    assert "done in" in result.stdout and ": 2 blocks\n" in result.stdout
