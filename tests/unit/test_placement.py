"""How files are dealt out to the workers that read and hold them."""

from __future__ import annotations

from collections import Counter

import pytest

from daskyard.data import DataSource
from daskyard.placement import assign_files

TWO = {"tcp://a:1": 1, "tcp://b:1": 1}


def held(sizes, owners):
    bytes_by_worker = Counter()
    for size, owner in zip(sizes, owners, strict=True):
        bytes_by_worker[owner] += size
    return bytes_by_worker


def test_equal_files_are_dealt_out_in_turn():
    assert assign_files([100] * 4, TWO) == ["tcp://a:1", "tcp://b:1"] * 2


def test_unknown_sizes_are_dealt_out_in_turn():
    assert Counter(assign_files([0] * 5, TWO)) == {"tcp://a:1": 3, "tcp://b:1": 2}


def test_one_large_file_is_balanced_by_the_small_ones():
    # In turn, a would hold 300 + 100 and b 100 + 100.
    sizes = [300, 100, 100, 100]
    owners = assign_files(sizes, TWO)
    assert held(sizes, owners) == {"tcp://a:1": 300, "tcp://b:1": 300}


def test_an_empty_file_does_not_leave_a_worker_without_rows():
    # The sweep's case: three files, the middle one header-only. In turn, b held nothing.
    sizes = [5_000, 40, 5_000]
    owners = assign_files(sizes, TWO)
    assert owners[0] != owners[2]


def test_a_worker_with_more_threads_takes_a_larger_share():
    sizes = [100] * 6
    owners = assign_files(sizes, {"tcp://a:1": 2, "tcp://b:1": 1})
    assert Counter(owners) == {"tcp://a:1": 4, "tcp://b:1": 2}


def test_the_spread_is_within_the_largest_file_of_even():
    sizes = [97, 13, 55, 8, 71, 34, 20, 62, 5, 44, 90, 3]
    workers = {f"tcp://w{i}:1": 1 for i in range(3)}
    loads = held(sizes, assign_files(sizes, workers))
    assert max(loads.values()) - min(loads.values()) <= max(sizes)
    assert sum(loads.values()) == sum(sizes)


def test_no_workers_is_refused():
    with pytest.raises(ValueError, match="no workers"):
        assign_files([1], {})


def test_a_subset_keeps_each_file_with_its_size():
    source = DataSource(
        url="data/",
        files=("a.parquet", "b.parquet", "c.parquet"),
        format="parquet",
        fingerprint="x",
        storage_options={},
        sizes=(10, 20, 30),
    )
    held_out = source.subset([2, 0], url="data/ (held out)")
    assert held_out.files == ("c.parquet", "a.parquet")
    assert held_out.sizes == (30, 10)
    assert held_out.url == "data/ (held out)"
    assert source.subset([1]).url == "data/"
