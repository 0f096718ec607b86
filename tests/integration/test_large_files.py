"""Files read as blocks: large Parquet files as runs of whole row groups (or ranges
of rows, where a row group is too large), large CSV files as ranges of bytes, and
for XGBoost, fewer files than workers as a block for each (daskyard.file_blocks)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from daskyard.data import inspect_file, list_source, plan_columns, read_partition
from daskyard.errors import DataError
from daskyard.file_blocks import in_blocks
from tests.conftest import assert_trains_or_refuses, classification_frame, run_cli, write_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def one_file(tmp_path_factory):
    """One 1.6 MiB Parquet file of 16 row groups; jobs cut it at max_block_mb 1."""
    path = tmp_path_factory.mktemp("large") / "train.parquet"
    classification_frame(40_000, seed=7).to_parquet(path, index=False, row_group_size=2_500)
    return path


@pytest.fixture(scope="module")
def one_group_file(tmp_path_factory):
    """The same rows as one row group (older writers' default): cut by rows, not groups."""
    path = tmp_path_factory.mktemp("large-one-group") / "train.parquet"
    classification_frame(40_000, seed=7).to_parquet(path, index=False, row_group_size=40_000)
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


def test_xgboost_gives_every_worker_a_block_of_a_single_validation_file(tmp_path):
    """Two training files and one small validation file (one row group): one worker
    evaluated every validation row while XGBoost warned of the other's empty DMatrix
    (embedded, its workers are threads of the job: their warnings are its stderr)."""
    train = tmp_path / "train"
    train.mkdir()
    frame = classification_frame(10_000, seed=9)
    for index, half in enumerate((frame.iloc[:5_000], frame.iloc[5_000:])):
        half.to_parquet(train / f"part-{index}.parquet", index=False)
    valid = tmp_path / "valid.parquet"
    classification_frame(3_000, seed=10).to_parquet(valid, index=False)
    out = tmp_path / "out"
    result = run_cli(
        *("train", "xgboost", "--train", str(train), "--validation", str(valid)),
        *("--target", "label", "--rounds", "5", "--param", "objective=binary:logistic"),
        *("--output", str(out), "--local-workers", "2"),
    )
    assert_trains_or_refuses(result, out, 0, "")
    assert "empty DMatrix" not in result.stdout + result.stderr
    assert "Empty dataset" not in result.stderr
    sources = json.loads((out / "manifest.json").read_text())["data"]["sources"]
    assert [(s["files"], s["blocks"]) for s in sources] == [(2, 2), (1, 2)]
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert rows == {"train": 10_000, "validation": 3_000}


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


@pytest.fixture(scope="module")
def one_csv_file(tmp_path_factory):
    """The same rows as one 3.4 MiB CSV file (4 blocks at max_block_mb 1)."""
    path = tmp_path_factory.mktemp("large-csv") / "train.csv"
    classification_frame(40_000, seed=7).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("fmt", "blocks"), [("parquet", 2), ("parquet-one-group", 2), ("csv", 4)])
def test_an_incremental_job_streams_one_file_in_blocks(
    dask_cluster, one_file, one_group_file, one_csv_file, tmp_path, fmt, blocks
):
    """As one block, a file larger than a worker's memory could not be trained on."""
    path = {"parquet": one_file, "parquet-one-group": one_group_file, "csv": one_csv_file}[fmt]
    out = tmp_path / "incremental"
    result = run_cli(
        *("train", "incremental", "--config", small_blocks(tmp_path), "--train", str(path)),
        *("--estimator", "sklearn.linear_model.SGDClassifier", "--target", "label"),
        *("--output", str(out), "--scheduler", dask_cluster.address),
    )
    assert_trains_or_refuses(result, out, 0, "")
    assert "done in" in result.stdout and f": {blocks} blocks\n" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert sum(metrics["rows"].values()) == 40_000  # every row once, whichever the cut


@pytest.mark.parametrize(
    ("fmt", "row_group_size"), [("parquet", 1_000), ("parquet", None), ("csv", None)]
)
def test_blocks_of_a_file_in_object_storage_read_back_its_rows(
    s3_server, tmp_path, fmt, row_group_size
):
    """Through fsspec (S3 on moto), a block reads its row groups' or its lines' byte
    ranges; inside a single row group, its pages as a stream."""
    frame = classification_frame(12_000, seed=8)
    local = tmp_path / f"one.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(local, index=False, row_group_size=row_group_size or len(frame))
    else:
        frame.to_csv(local, index=False)
    url = f"s3://{s3_server.bucket}/large/one.{fmt}"
    s3_server.filesystem().put(str(local), url)
    options = s3_server.storage_options
    source = list_source(url, fmt, options)
    dtypes, row_groups = inspect_file(url, fmt, options)
    total = sum(size for _, size in row_groups) or local.stat().st_size
    blocks = in_blocks(source, [row_groups], max_bytes=total // 3, multiple=2)
    # Parquet: rounded up to the 2 workers; CSV by its size alone.
    assert len(blocks.files) == (4 if fmt == "parquet" else 3)
    assert blocks.fingerprint == source.fingerprint
    plan = plan_columns([(url, dtypes)], "label", None, [], True, True)
    parts = [
        read_partition(block, index, fmt, options, plan, None)
        for index, block in enumerate(blocks.files)
    ]
    assert sum(len(part) for part in parts) == 12_000
    back = pd.concat(parts, ignore_index=True)
    pd.testing.assert_series_equal(back["f0"], frame["f0"].astype(back["f0"].dtype))


def notes_frame(rows: int) -> pd.DataFrame:
    """Features and a free-text note whose first line is most of its row: a CSV
    file of these, cut into blocks, is cut inside quoted fields."""
    frame = classification_frame(rows, seed=11)
    frame["note"] = "z" * 300 + "\nseen, twice"
    return frame


QUOTED_CUT_COMMANDS = {
    "xgboost": ("train", "xgboost", "--param", "objective=binary:logistic"),
    "incremental": ("train", "incremental", "--estimator", "sklearn.linear_model.SGDClassifier"),
    "search": (
        *("search", "incremental", "--estimator", "sklearn.linear_model.SGDClassifier"),
        *("--space", "alpha=loguniform:1e-5:1e-1", "--candidates", "2"),
    ),
}


@pytest.mark.parametrize("job", list(QUOTED_CUT_COMMANDS))
def test_a_csv_cut_inside_quoted_fields_is_refused_before_training(dask_cluster, tmp_path, job):
    """pandas quotes a note with a line break; a cut there would start a block in
    the middle of a row. Every job refuses it with what to do and writes nothing."""
    path = tmp_path / "notes.csv"
    notes_frame(6_000).to_csv(path, index=False)
    assert path.stat().st_size > 2**21  # 3 blocks at max_block_mb 1
    features = [f"f{i}" for i in range(8)]
    config = write_config(
        tmp_path / "job.yaml", {"data": {"max_block_mb": 1, "features": features}}
    )
    out = tmp_path / "out"
    result = run_cli(
        *QUOTED_CUT_COMMANDS[job][:2],
        "--config",
        str(config),
        *QUOTED_CUT_COMMANDS[job][2:],
        *("--train", str(path), "--target", "label"),
        *("--output", str(out), "--scheduler", dask_cluster.address),
    )
    assert_trains_or_refuses(
        result, out, 3, "notes.csv' has a line break inside a quoted field where daskyard cut it"
    )
    assert "set data.max_block_mb to 3 or more" in result.first_error_line


def test_a_csv_in_object_storage_cut_inside_quoted_fields_is_refused(s3_server, tmp_path):
    """Through fsspec (S3 on moto): the block that ends inside a field, and the last
    block, which starts inside one and whose end is the file's."""
    local = tmp_path / "notes.csv"
    notes_frame(3_000).to_csv(local, index=False)
    url = f"s3://{s3_server.bucket}/notes/notes.csv"
    s3_server.filesystem().put(str(local), url)
    options = s3_server.storage_options
    dtypes, _ = inspect_file(url, "csv", options)
    plan = plan_columns([(url, dtypes)], "label", [f"f{i}" for i in range(8)], [], True, True)
    blocks = in_blocks(list_source(url, "csv", options), [()], max_bytes=local.stat().st_size // 2)
    assert len(blocks.files) == 2
    for index, block in enumerate(blocks.files):
        with pytest.raises(DataError, match="has a line break inside a quoted field"):
            read_partition(block, index, "csv", options, plan, None)
