"""Large Parquet files as blocks of whole row groups (daskyard.row_groups)."""

from __future__ import annotations

import pandas as pd
import pytest

from daskyard.config import DataConfig, IncrementalConfig, IncrementalJobConfig
from daskyard.data import DataPlan, DataSource, inspect_file, plan_columns, read_partition
from daskyard.row_groups import block_url, file_count, in_blocks, runs, split_block_url
from daskyard.train.incremental import run_identity
from tests.conftest import classification_frame


@pytest.mark.parametrize(
    ("sizes", "max_bytes", "multiple", "expected"),
    [
        ([16] * 20, 1000, 1, [(0, 19)]),  # within the limit: one run, whatever the multiple
        ([16] * 20, 1000, 2, [(0, 19)]),
        ([16] * 20, 128, 1, [(0, 6), (7, 12), (13, 19)]),  # 3 near-equal runs, not 8+8+4
        ([16] * 20, 128, 2, [(0, 4), (5, 9), (10, 14), (15, 19)]),  # a multiple of 2
        ([500], 10, 1, [(0, 0)]),  # one row group is read whole, however large
        ([1, 1, 1], 1, 2, [(0, 0), (1, 1), (2, 2)]),  # never more runs than row groups
        ([10, 1, 1, 1, 10], 12, 1, [(0, 1), (2, 4)]),  # cut where the shares are nearest
        ([50, 50, 10, 10], 70, 1, [(0, 0), (1, 3)]),  # the boundary before the half, 50 + 70
        ([], 10, 1, []),
    ],
)
def test_runs_cover_every_row_group_once_in_order(sizes, max_bytes, multiple, expected):
    found = runs(sizes, max_bytes, multiple)
    assert found == expected
    assert [i for first, last in found for i in range(first, last + 1)] == list(range(len(sizes)))


def test_block_urls_name_their_row_groups_and_plain_urls_name_none():
    url = "s3://bucket/data/part #1.parquet"
    assert split_block_url(block_url(url, 3, 5)) == (url, [3, 4, 5])
    assert split_block_url(url) == (url, None)


def test_only_large_files_are_cut_and_sizes_are_shared_out():
    source = DataSource(
        url="data/",
        files=("data/a.parquet", "data/b.parquet", "data/c.csv"),
        format="parquet",
        fingerprint="f",
        storage_options={},
        sizes=(1000, 50, 30),
    )
    cut = in_blocks(source, [(300, 100, 100, 300), (40,), ()], max_bytes=500)
    assert cut.files == (
        "data/a.parquet#row-groups=0-1",
        "data/a.parquet#row-groups=2-3",
        "data/b.parquet",
        "data/c.csv",
    )
    assert cut.sizes == (500, 500, 50, 30)  # the file's bytes as stored, by share
    assert cut.fingerprint == source.fingerprint  # the same data: a rerun knows it
    assert file_count(cut) == 3
    assert in_blocks(source, [(300,), (40,), ()], max_bytes=500) is source


def test_the_blocks_of_a_file_read_back_its_rows_in_order(tmp_path):
    frame = classification_frame(10_000, features=5, seed=5)
    path = tmp_path / "one.parquet"
    frame.to_parquet(path, index=False, row_group_size=1_000)
    dtypes, row_groups = inspect_file(str(path), "parquet", {})
    assert len(row_groups) == 10 and all(size > 0 for size in row_groups)
    source = DataSource(str(path), (str(path),), "parquet", "f", {}, (path.stat().st_size,))
    blocks = in_blocks(source, [row_groups], max_bytes=sum(row_groups) // 3, multiple=2)
    assert len(blocks.files) == 4
    plan = plan_columns([(str(path), dtypes)], "label", None, [], True, True)
    parts = [
        read_partition(url, index, "parquet", {}, plan, None)
        for index, url in enumerate(blocks.files)
    ]
    assert sorted(len(part) for part in parts) == [2_000, 2_000, 3_000, 3_000]  # 10 groups / 4
    back = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(back, frame.astype(back.dtypes.to_dict()), check_like=True)


def _plan(*sources: DataSource) -> DataPlan:
    return DataPlan(sources[0], sources[1] if len(sources) > 1 else None, None, None)


def test_a_run_id_follows_the_blocks_not_the_setting():
    """A data set with no file large enough to cut keeps its run id whatever
    max_block_mb says (and the id it had before the setting existed): a retried pod
    on an upgraded image resumes. Blocks made from a large file change it."""
    whole = DataSource("d/", ("d/a.parquet", "d/b.parquet"), "parquet", "f", {}, (10, 10))
    cut = in_blocks(whole, [(6, 4), ()], max_bytes=8)
    assert _plan(whole).layout == _plan(whole).fingerprint
    assert _plan(cut).layout != _plan(whole).layout

    def run_id(max_block_mb: int, plan: DataPlan) -> str:
        config = IncrementalJobConfig(
            data=DataConfig(train="d/", target="label", max_block_mb=max_block_mb),
            output="out/",
            incremental=IncrementalConfig(estimator="sklearn.linear_model.SGDClassifier"),
        )
        return run_identity(config, plan.layout)

    assert run_id(64, _plan(whole)) == run_id(128, _plan(whole))
    assert run_id(64, _plan(cut)) != run_id(64, _plan(whole))
