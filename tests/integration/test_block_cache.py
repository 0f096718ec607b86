"""The per-worker block cache that searches read through, on real worker processes."""

from __future__ import annotations

import json

from distributed import Client

from daskyard.train import cache
from tests.conftest import run_cli


def worker_side():
    """Functions for the workers, which cannot import this test module: made here,
    inside a function, cloudpickle sends them by value."""

    def reuse_then_forget(run: str) -> dict[str, object]:
        """On a worker: the second load of a key is the cached object, until forget(run)."""
        loads = []

        def load() -> list[int]:
            loads.append(1)
            return [len(loads)]

        first = cache.cached(run, "train:0", load)
        again = cache.cached(run, "train:0", load)
        other_run = cache.cached(f"{run}-other", "train:0", load)
        forgotten = cache.forget(run)
        after = cache.cached(run, "train:0", load)
        cache.forget(run)
        cache.forget(f"{run}-other")
        return {
            "same": again is first,
            "other_run_separate": other_run is not first,
            "forgotten": forgotten,
            "reloaded": after is not first,
            "loads": len(loads),
        }

    def cached_keys() -> int:
        lru = cache._state.get("lru")
        return 0 if lru is None else len(lru)

    return reuse_then_forget, cached_keys


def test_a_worker_reuses_a_loaded_block_until_its_run_is_forgotten(dask_cluster):
    with Client(dask_cluster.address) as client:
        reuse_then_forget, _ = worker_side()
        seen = client.submit(reuse_then_forget, "run-a", pure=False).result()
    assert seen == {
        "same": True,
        "other_run_separate": True,
        "forgotten": 1,
        "reloaded": True,
        "loads": 3,
    }


def test_outside_a_worker_nothing_is_cached():
    calls = []
    first = cache.cached("run", "k", lambda: calls.append(1) or [1])
    second = cache.cached("run", "k", lambda: calls.append(1) or [1])
    assert first is not second and len(calls) == 2


def test_a_search_leaves_no_blocks_in_the_workers_caches(dask_cluster, small_dataset, tmp_path):
    result = run_cli(
        "search",
        "incremental",
        "--estimator",
        "sklearn.linear_model.SGDClassifier",
        "--space",
        "alpha=loguniform:1e-5:1e-1",
        "--candidates",
        "4",
        "--train",
        str(small_dataset),
        "--target",
        "label",
        "--output",
        str(tmp_path / "search"),
        "--scheduler",
        dask_cluster.address,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "search" / "metrics.json").read_text())["candidates"] == 4
    with Client(dask_cluster.address) as client:
        _, cached_keys = worker_side()
        assert set(client.run(cached_keys).values()) == {0}


def test_a_search_reads_each_file_once_per_worker_reusing_its_first_pass(small_dataset, tmp_path):
    # The first pass reads every file on some worker; that worker's first load of
    # the block for a rung scales the kept read instead of reading the file again.
    from distributed import Client

    from daskyard.cluster import embedded_cluster
    from daskyard.config import DataConfig, SearchConfig, SearchJobConfig
    from daskyard.search import search_incremental

    def count_reads() -> None:
        import collections

        from daskyard.train import blocks

        reads: collections.Counter = collections.Counter()
        original = blocks.FileSource.read

        def counted(self, url: str, index: int):
            reads[url] += 1
            return original(self, url, index)

        blocks.FileSource.read = counted
        blocks.reads_seen = reads

    def reads_seen() -> dict[str, int]:
        from daskyard.train import blocks

        return dict(blocks.reads_seen)

    config = SearchJobConfig(
        data=DataConfig(train=str(small_dataset), target="label"),
        output=str(tmp_path / "search"),
        search=SearchConfig(
            estimator="sklearn.linear_model.SGDClassifier",
            space={"alpha": "loguniform:1e-5:1e-1"},
            candidates=6,
        ),
    )
    with embedded_cluster(2) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        client.run(count_reads)
        result = search_incremental(config, client)
        seen = client.run(reads_seen)
    files = result.manifest["data"]["train_files"] + result.manifest["data"]["validation_files"]
    every_read = [count for per_worker in seen.values() for count in per_worker.values()]
    # Both workers train first-rung candidates, so both load the first blocks: without
    # the kept reads, the worker that summarised such a file read it a second time.
    assert max(every_read) == 1
    assert len(set().union(*seen.values())) == files  # the first pass read every one
