"""Rows are held evenly by the workers of a real cluster, whatever the file sizes."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest
from distributed import Client, wait

from daskyard.config import DataConfig
from daskyard.data import plan_data, spread_reads
from tests.conftest import classification_frame

pytestmark = pytest.mark.integration


def rows_by_worker(client: Client, folder, fmt: str = "parquet") -> Counter:
    plan = plan_data(client, DataConfig(train=str(folder), target="label"), {})
    futures = spread_reads(client, plan.train, plan.columns, None)
    wait(futures)
    owners = client.who_has(futures)
    rows = Counter()
    for future, frame in zip(futures, client.gather(futures), strict=True):
        (owner,) = owners[future.key]
        rows[owner] += len(frame)
    return rows


def test_one_large_file_and_three_small_ones_split_evenly(dask_cluster, tmp_path):
    frame = classification_frame(60_000, seed=3)
    folder = tmp_path / "uneven"
    folder.mkdir()
    # Dealt out in turn, one worker would hold 40k rows and the other 20k.
    bounds = [0, 30_000, 40_000, 50_000, 60_000]
    for index, (start, stop) in enumerate(pairwise(bounds)):
        frame.iloc[start:stop].to_parquet(folder / f"part-{index}.parquet", index=False)
    with Client(dask_cluster.address) as client:
        rows = rows_by_worker(client, folder)
    assert sorted(rows.values()) == [30_000, 30_000]


def test_a_header_only_csv_file_does_not_leave_a_worker_empty(dask_cluster, tmp_path):
    frame = classification_frame(20_000, seed=4)
    folder = tmp_path / "with-empty"
    folder.mkdir()
    frame.iloc[:10_000].to_csv(folder / "part-0.csv", index=False)
    frame.iloc[:0].to_csv(folder / "part-1.csv", index=False)  # what Spark writes
    frame.iloc[10_000:].to_csv(folder / "part-2.csv", index=False)
    with Client(dask_cluster.address) as client:
        rows = rows_by_worker(client, folder)
    assert sorted(rows.values()) == [10_000, 10_000]
