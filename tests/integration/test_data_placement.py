"""Rows are held evenly by the workers of a real cluster, whatever the file sizes."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from typing import Any

import pytest
from distributed import Client, wait

from daskyard.config import DataConfig
from daskyard.data import plan_data, spread_reads, worker_threads
from tests.conftest import classification_frame

pytestmark = pytest.mark.integration


def rows_by_worker(client: Client, folder, fmt: str = "parquet", **data: Any) -> Counter:
    workers = len(worker_threads(client))
    config = DataConfig(train=str(folder), target="label", **data)
    plan = plan_data(client, config, {}, spread_over=workers)
    futures = spread_reads(client, plan.train, plan.columns, None, worker_threads(client))
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


@pytest.mark.parametrize("row_group_size", [2_500, 40_000], ids=["16-groups", "one-group"])
def test_a_single_parquet_file_is_held_in_equal_blocks_by_both_workers(
    dask_cluster, tmp_path, row_group_size
):
    """One file was one partition: one worker held (and trained on) every row, and
    XGBoost warned that the other had an empty DMatrix. Large or small, it is now
    cut into a block for each worker: at a row group boundary, or within its one
    row group."""
    path = tmp_path / "one.parquet"
    frame = classification_frame(40_000, seed=6)
    frame.to_parquet(path, index=False, row_group_size=row_group_size)
    with Client(dask_cluster.address) as client:
        assert len(worker_threads(client)) == 2
        small = rows_by_worker(client, path)
        large = rows_by_worker(client, path, max_block_mb=1)  # the file is 1.6 MiB
    assert sorted(small.values()) == [20_000, 20_000]
    assert sorted(large.values()) == [20_000, 20_000]


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


def test_reads_wait_for_a_worker_when_there_is_none(small_dataset):
    """All workers lost, none back yet: the reads queue (they raised 'no workers')."""
    from distributed import LocalCluster

    from daskyard.recovery import workers_now

    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        plan = plan_data_without_workers(client, small_dataset)
        futures = spread_reads(client, plan.train, plan.columns, None, worker_threads(client))
        assert {f.status for f in futures} == {"pending"}
        cluster.scale(1)
        assert len(workers_now(client, timeout=30)) == 1
        assert sum(len(frame) for frame in client.gather(futures)) == 20_000


def plan_data_without_workers(client: Client, folder):
    """plan_data reads the schemas on workers: here the client lists and reads them."""
    from daskyard.data import DataPlan, list_source, plan_columns, read_file_schema

    source = list_source(str(folder), "auto", {})
    schemas = [(f, read_file_schema(f, source.format, {})) for f in source.files]
    return DataPlan(source, None, plan_columns(schemas, "label", None, [], True), None)


def test_workers_now_gives_up_as_a_lost_worker():
    from distributed import LocalCluster

    from daskyard.recovery import worker_loss_errors, workers_now

    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
        pytest.raises(worker_loss_errors(), match=r"no worker joined within 0\.5s"),
    ):
        workers_now(client, timeout=0.5)
