"""Data files as blocks (daskyard.file_blocks): Parquet files as runs of whole row
groups or ranges of rows, CSV files as ranges of bytes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from daskyard.config import DataConfig, IncrementalConfig, IncrementalJobConfig
from daskyard.data import (
    SPLIT_COLUMN,
    DataPlan,
    DataSource,
    inspect_file,
    plan_columns,
    read_partition,
)
from daskyard.errors import DataError
from daskyard.file_blocks import (
    Span,
    block_url,
    byte_ranges,
    file_count,
    file_positions,
    groups_holding,
    in_blocks,
    row_ranges,
    runs,
    split_block_url,
)
from daskyard.train.incremental import run_identity
from tests.conftest import classification_frame


@pytest.mark.parametrize(
    ("sizes", "max_bytes", "multiple", "expected"),
    [
        ([16] * 20, 1000, 1, [(0, 19)]),  # within the limit: one run, whatever the multiple
        ([16] * 20, 1000, 2, [(0, 19)]),
        ([16] * 20, 128, 1, [(0, 6), (7, 12), (13, 19)]),  # 3 near-equal runs, not 8+8+4
        ([16] * 20, 128, 2, [(0, 4), (5, 9), (10, 14), (15, 19)]),  # a multiple of 2
        ([500], 10, 1, [(0, 0)]),  # a run is of whole row groups (row_ranges cuts inside)
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


@pytest.mark.parametrize(
    ("sizes", "at_least", "expected"),
    [
        ([16] * 4, 2, [(0, 1), (2, 3)]),  # within the limit, cut for at least 2
        ([16] * 4, 3, [(0, 0), (1, 2), (3, 3)]),  # cuts nearest the thirds
        ([16], 2, [(0, 0)]),  # one row group: runs can do no more
        ([16] * 20, 1, [(0, 19)]),
    ],
)
def test_runs_make_at_least_as_many_as_asked_where_row_groups_allow(sizes, at_least, expected):
    found = runs(sizes, 1000, 1, at_least)
    assert found == expected
    assert [i for first, last in found for i in range(first, last + 1)] == list(range(len(sizes)))


def test_block_urls_name_their_rows_and_plain_urls_name_none():
    url = "s3://bucket/data/part #1.parquet"
    assert block_url(url, 300, 599) == f"{url}#rows=300-599"
    assert split_block_url(block_url(url, 300, 599)) == (url, Span("rows", 300, 599))
    assert split_block_url(block_url(url, 0, 99, "bytes")) == (url, Span("bytes", 0, 99))
    assert split_block_url(url) == (url, None)


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        (0, 99, ([0], 0)),
        (100, 349, ([1, 2], 100)),  # across a boundary
        (120, 130, ([1], 100)),  # inside one group
        (250, 399, ([2, 3], 250)),
    ],
)
def test_a_range_of_rows_lies_in_the_row_groups_that_hold_it(first, last, expected):
    assert groups_holding([100, 150, 100, 50], first, last) == expected


@pytest.mark.parametrize(
    ("groups", "at_least", "expected"),
    [
        ([(1000, 16)], 1, [(0, 999)]),  # nothing to cut: the whole file
        ([(1000, 16)], 2, [(0, 499), (500, 999)]),  # one row group: equal ranges of rows
        ([(1000, 16)], 3, [(0, 332), (333, 665), (666, 999)]),
        ([(600, 8), (400, 8)], 2, [(0, 599), (600, 999)]),  # row groups allow: whole ones
        ([(600, 8), (400, 8)], 3, [(0, 332), (333, 665), (666, 999)]),
        ([(2, 16)], 4, [(0, 0), (1, 1)]),  # never more blocks than rows
        ([(1, 16)], 2, [(0, 0)]),
        ([], 2, []),  # CSV: no row groups known, never cut
        # One row group over the limit (1000 bytes): by size, equal ranges of rows.
        ([(1000, 2500)], 1, [(0, 332), (333, 665), (666, 999)]),
        ([(600, 1200), (400, 800)], 1, [(0, 599), (600, 999)]),  # whole groups will do
        ([(600, 2400), (400, 1600)], 1, [(0, 249), (250, 499), (500, 749), (750, 999)]),
        # Enough row groups, but one far over the limit: equal ranges all the same.
        ([(100, 100), (800, 2500), (100, 100)], 1, [(0, 332), (333, 665), (666, 999)]),
    ],
)
def test_row_ranges_cover_every_row_once(groups, at_least, expected):
    found = row_ranges(groups, 1000, 1, at_least)
    assert found == expected
    rows = sum(count for count, _ in groups)
    if found:
        assert [r for first, last in found for r in range(first, last + 1)] == list(range(rows))


def test_only_large_files_are_cut_and_sizes_are_shared_out():
    source = DataSource(
        url="data/",
        files=("data/a.parquet", "data/b.parquet", "data/c.csv"),
        format="parquet",
        fingerprint="f",
        storage_options={},
        sizes=(1000, 50, 30),
    )
    a_groups = [(30, 300), (10, 100), (10, 100), (30, 300)]
    cut = in_blocks(source, [a_groups, [(4, 40)], ()], max_bytes=500)
    assert cut.files == (
        "data/a.parquet#rows=0-39",
        "data/a.parquet#rows=40-79",
        "data/b.parquet",
        "data/c.csv",
    )
    assert cut.sizes == (500, 500, 50, 30)  # the file's bytes as stored, by share of rows
    assert cut.fingerprint == source.fingerprint  # the same data: a rerun knows it
    assert file_count(cut) == 3
    assert in_blocks(source, [[(30, 300)], [(4, 40)], ()], max_bytes=500) is source


@pytest.mark.parametrize(
    ("files", "workers", "blocks"),
    [
        (1, 2, 2),  # one small file, two workers: a block each
        (1, 1, 1),  # one worker: nothing to spread
        (2, 2, 2),  # a file each already
        (3, 4, 6),  # too few: each file in 2, so no worker is left without
        (5, 4, 5),
    ],
)
def test_fewer_files_than_workers_are_cut_for_a_block_on_each(files, workers, blocks):
    source = DataSource(
        url="d/",
        files=tuple(f"d/{i}.parquet" for i in range(files)),
        format="parquet",
        fingerprint="f",
        storage_options={},
        sizes=(100,) * files,
    )
    cut = in_blocks(source, [[(1000, 8)]] * files, max_bytes=1000, multiple=workers)
    assert len(cut.files) == blocks
    assert file_count(cut) == files


@pytest.mark.parametrize(
    ("size", "max_bytes", "expected"),
    [
        (1000, 1000, [(0, 999)]),
        (1000, 400, [(0, 332), (333, 665), (666, 999)]),
        (0, 1000, [(0, -1)]),  # no size listed: the whole file
    ],
)
def test_byte_ranges_cover_the_file_once(size, max_bytes, expected):
    assert byte_ranges(size, max_bytes) == expected


def test_csv_files_are_cut_by_bytes_unless_compressed_never_for_the_workers():
    size = 4096
    source = DataSource("d/", ("d/a.csv", "d/b.csv.gz"), "csv", "f", {}, (size, size))
    cut = in_blocks(source, [(), ()], max_bytes=size // 2, multiple=3)
    assert cut.files == (
        f"d/a.csv#bytes=0-{size // 2 - 1}",  # 2 blocks: by its size, not the 3 workers
        f"d/a.csv#bytes={size // 2}-{size - 1}",
        "d/b.csv.gz",  # read from its start only
    )
    assert cut.sizes == (size // 2, size // 2, size)
    one = DataSource("d/", ("d/a.csv",), "csv", "f", {}, (size,))
    assert in_blocks(one, [()], max_bytes=size, multiple=2) is one


def test_a_file_holds_out_the_same_rows_whole_or_in_blocks(tmp_path):
    """The validation rows are drawn by each row's place in its file: a data set cut
    for 3 workers holds out what it holds out on one (a resumed XGBoost run on more
    workers must not train on rows it validated on)."""
    frame = classification_frame(9_000, features=5, seed=11)
    folder = tmp_path / "d"
    folder.mkdir()
    frame.iloc[:4_000].to_parquet(folder / "a.parquet", index=False, row_group_size=1_000)
    frame.iloc[4_000:].to_parquet(folder / "b.parquet", index=False)  # one row group
    files = tuple(str(folder / name) for name in ("a.parquet", "b.parquet"))
    found = [inspect_file(url, "parquet", {}) for url in files]
    source = DataSource(str(folder), files, "parquet", "f", {}, (1, 1))
    plan = plan_columns([(files[0], found[0][0])], "label", None, [], True, True)

    def held_out(blocks: DataSource) -> list[bool]:
        positions = file_positions(blocks.files)
        parts = [
            read_partition(url, position, "parquet", {}, plan, (42, 0.25))
            for url, position in zip(blocks.files, positions, strict=True)
        ]
        return pd.concat(parts, ignore_index=True)[SPLIT_COLUMN].tolist()

    cut = in_blocks(source, [groups for _, groups in found], max_bytes=2**30, multiple=5)
    assert len(cut.files) == 6 and file_positions(cut.files) == [0, 0, 0, 1, 1, 1]
    assert held_out(cut) == held_out(source)
    assert 0.2 < sum(held_out(source)) / 9_000 < 0.3


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_the_byte_blocks_of_a_csv_file_read_back_its_rows_in_order(tmp_path, line_end):
    """Each block is the lines that start inside it, below the header: every row once,
    whichever line a cut falls in."""
    frame = classification_frame(20_000, features=5, seed=7)
    path = tmp_path / "one.csv"
    frame.to_csv(path, index=False, lineterminator=line_end)
    size = path.stat().st_size
    dtypes, _ = inspect_file(str(path), "csv", {})
    source = DataSource(str(path), (str(path),), "csv", "f", {}, (size,))
    blocks = in_blocks(source, [()], max_bytes=-(-size // 6))
    assert len(blocks.files) == 6 and all("#bytes=" in url for url in blocks.files)
    plan = plan_columns([(str(path), dtypes)], "label", None, [], True, True)
    parts = [
        read_partition(url, index, "csv", {}, plan, None) for index, url in enumerate(blocks.files)
    ]
    assert all(len(part) > 0 for part in parts)
    back = pd.concat(parts, ignore_index=True)
    expected = frame.astype(back.dtypes.to_dict())
    pd.testing.assert_frame_equal(back, expected, check_like=True, check_exact=False)


def assert_reads_back(
    frame: pd.DataFrame, blocks: DataSource, dtypes: dict[str, str]
) -> list[pd.DataFrame]:
    """The blocks of one Parquet file, read, are its rows once each, in order."""
    url = split_block_url(blocks.files[0])[0]
    plan = plan_columns([(url, dtypes)], "label", None, [], True, True)
    parts = [
        read_partition(block, index, "parquet", {}, plan, None)
        for index, block in enumerate(blocks.files)
    ]
    back = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(back, frame.astype(back.dtypes.to_dict()), check_like=True)
    return parts


def test_the_blocks_of_a_file_read_back_its_rows_in_order(tmp_path):
    frame = classification_frame(10_000, features=5, seed=5)
    path = tmp_path / "one.parquet"
    frame.to_parquet(path, index=False, row_group_size=1_000)
    dtypes, row_groups = inspect_file(str(path), "parquet", {})
    assert len(row_groups) == 10 and all(rows == 1_000 and size > 0 for rows, size in row_groups)
    source = DataSource(str(path), (str(path),), "parquet", "f", {}, (path.stat().st_size,))
    total = sum(size for _, size in row_groups)
    blocks = in_blocks(source, [row_groups], max_bytes=total // 3, multiple=2)
    assert len(blocks.files) == 4
    parts = assert_reads_back(frame, blocks, dtypes)
    assert sorted(len(part) for part in parts) == [2_000, 2_000, 3_000, 3_000]  # 10 groups / 4


@pytest.mark.parametrize("row_group_size", [10_000, 6_000], ids=["one-group", "two-groups"])
def test_ranges_of_rows_read_back_the_files_rows_in_order(tmp_path, row_group_size):
    """Fewer row groups than blocks wanted: equal ranges of rows, some inside a row
    group and one across the boundary between two."""
    frame = classification_frame(10_000, features=5, seed=6)
    path = tmp_path / "small.parquet"
    frame.to_parquet(path, index=False, row_group_size=row_group_size)
    dtypes, row_groups = inspect_file(str(path), "parquet", {})
    source = DataSource(str(path), (str(path),), "parquet", "f", {}, (path.stat().st_size,))
    blocks = in_blocks(source, [row_groups], max_bytes=2**30, multiple=3)
    assert [url.rpartition("#")[2] for url in blocks.files] == [
        "rows=0-3332",
        "rows=3333-6665",
        "rows=6666-9999",
    ]
    assert_reads_back(frame, blocks, dtypes)


def test_a_file_of_one_huge_row_group_is_cut_by_its_size(tmp_path):
    """A file written as one row group (older writers' default) is cut into blocks of
    about max_block_mb, not read as one (the workers' count does not enter)."""
    frame = classification_frame(12_000, features=5, seed=7)
    path = tmp_path / "one-group.parquet"
    frame.to_parquet(path, index=False, row_group_size=len(frame))
    dtypes, row_groups = inspect_file(str(path), "parquet", {})
    assert len(row_groups) == 1
    source = DataSource(str(path), (str(path),), "parquet", "f", {}, (path.stat().st_size,))
    blocks = in_blocks(source, [row_groups], max_bytes=-(-row_groups[0][1] // 4))
    assert [url.rpartition("#")[2] for url in blocks.files] == [
        "rows=0-2999",
        "rows=3000-5999",
        "rows=6000-8999",
        "rows=9000-11999",
    ]
    assert_reads_back(frame, blocks, dtypes)


PEAK_OF_A_READ = """
import sys
import pyarrow as pa
from daskyard.data import _read_parquet
frame = _read_parquet(sys.argv[1], {}, sys.argv[2].split(","))
print(len(frame), pa.default_memory_pool().max_memory())
"""


def test_a_block_inside_a_huge_row_group_is_read_without_holding_the_group(tmp_path):
    """Arrow's peak for a tenth of a 92 MiB row group, in a fresh interpreter: read
    whole (and sliced, before this), the group and more; streamed, about the block
    and a few pages of each column (15 MiB here). Two columns keep those pages few."""
    rows = 8_000_000
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"f0": rng.standard_normal(rows, dtype=np.float32)})
    frame["label"] = rng.integers(0, 2, rows)
    path = tmp_path / "huge-group.parquet"
    frame.to_parquet(path, index=False, row_group_size=rows)
    (group_rows, _), *more = inspect_file(str(path), "parquet", {})[1]
    assert group_rows == rows and not more
    group_bytes = int(frame.memory_usage(index=False).sum())  # decoded, as Arrow holds it

    def peak(url: str) -> tuple[int, int]:
        found = subprocess.run(
            [sys.executable, "-c", PEAK_OF_A_READ, url, ",".join(frame.columns)],
            capture_output=True,
            text=True,
            check=True,
        )
        count, peak_bytes = found.stdout.split()
        return int(count), int(peak_bytes)

    count, block_peak = peak(block_url(str(path), 6_400_000, 7_199_999))
    assert count == 800_000
    assert block_peak < group_bytes / 4, (block_peak, group_bytes)
    whole_count, whole_peak = peak(str(path))  # what holding the group costs: the yardstick
    assert whole_count == rows and whole_peak >= group_bytes


def test_a_block_past_the_files_rows_is_refused(tmp_path):
    """A block naming rows the file does not have (replaced since it was planned)."""
    frame = classification_frame(1_000, features=5, seed=9)
    path = tmp_path / "short.parquet"
    frame.to_parquet(path, index=False)
    dtypes, _ = inspect_file(str(path), "parquet", {})
    plan = plan_columns([(str(path), dtypes)], "label", None, [], True, True)
    with pytest.raises(DataError, match=r"cannot read .*short.parquet#rows=500-1499.* 500-1499"):
        read_partition(block_url(str(path), 500, 1_499), 0, "parquet", {}, plan, None)


def _plan(*sources: DataSource) -> DataPlan:
    return DataPlan(sources[0], sources[1] if len(sources) > 1 else None, None, None)


def test_a_run_id_follows_the_blocks_not_the_setting():
    """A data set with no file large enough to cut keeps its run id whatever
    max_block_mb says (and the id it had before the setting existed): a retried pod
    on an upgraded image resumes. Blocks made from a large file change it."""
    whole = DataSource("d/", ("d/a.parquet", "d/b.parquet"), "parquet", "f", {}, (10, 10))
    cut = in_blocks(whole, [[(6, 6), (4, 4)], ()], max_bytes=8)
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


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_blocks_error_counts_rows_from_the_files_start(tmp_path, fmt):
    """A bad value in a later block is named by its row in the file (and line, for CSV),
    where the user can find it, not by its row in the block."""
    frame = classification_frame(3_000, features=5, seed=8)
    frame.loc[2_400, "f2"] = np.inf
    path = tmp_path / f"one.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    dtypes, row_groups = inspect_file(str(path), fmt, {})
    source = DataSource(str(path), (str(path),), fmt, "f", {}, (path.stat().st_size,))
    if fmt == "csv":  # by its size (a CSV file is never cut for the workers)
        blocks = in_blocks(source, [row_groups], max_bytes=-(-path.stat().st_size // 3))
    else:
        blocks = in_blocks(source, [row_groups], max_bytes=2**30, multiple=3)
    assert len(blocks.files) == 3  # row 2400 lies in the last
    plan = plan_columns([(str(path), dtypes)], "label", None, [], True, True)
    with pytest.raises(DataError, match=r"first at row 2400: "):
        read_partition(blocks.files[-1], 2, fmt, {}, plan, None)
