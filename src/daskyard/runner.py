"""Run a job end to end: connect (or embed), train, print where the results are."""

from __future__ import annotations

from typing import TextIO

from distributed import Client

from daskyard import progress
from daskyard.artifacts import join_url
from daskyard.cluster import connect
from daskyard.config import IncrementalJobConfig, SearchJobConfig, XGBoostJobConfig
from daskyard.search import SearchResult, search_incremental
from daskyard.train.incremental import IncrementalResult, train_incremental
from daskyard.train.xgboost import XGBoostResult, train_xgboost


def describe_cluster(client: Client, embedded: bool) -> str:
    info = client.scheduler_info(n_workers=-1)
    workers = info["workers"].values()
    threads = sum(w["nthreads"] for w in workers)
    where = "embedded local cluster" if embedded else client.scheduler.address
    return f"cluster: {where}, {len(workers)} workers, {threads} threads"


def result_table(metrics: dict[str, float], output: str, files: list[str]) -> str:
    rows = [(f"validation {name}", f"{value:.4f}") for name, value in metrics.items()]
    rows += [(name, join_url(output, name)) for name in files]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name.ljust(width)}  {value}" for name, value in rows)


def run_xgboost(config: XGBoostJobConfig, stream: TextIO | None = None) -> XGBoostResult:
    embedded = config.cluster.scheduler is None
    with connect(config.cluster) as client:
        progress.say(stream, describe_cluster(client, embedded))
        result = train_xgboost(config, client, embedded=embedded, stream=stream)
    seconds = result.manifest["timings"]["total_seconds"]
    progress.say(stream, f"done in {seconds:.1f}s: {result.metrics['rounds']} rounds")
    progress.say(
        stream,
        result_table(
            result.metrics["validation"],
            config.output,
            ["model.ubj", "metrics.json", "manifest.json"],
        ),
    )
    return result


def run_incremental(
    config: IncrementalJobConfig, stream: TextIO | None = None
) -> IncrementalResult:
    embedded = config.cluster.scheduler is None
    with connect(config.cluster) as client:
        progress.say(stream, describe_cluster(client, embedded))
        result = train_incremental(config, client, stream=stream)
    seconds = result.manifest["timings"]["total_seconds"]
    progress.say(stream, f"done in {seconds:.1f}s: {result.metrics['blocks_seen']} blocks")
    progress.say(
        stream,
        result_table(
            result.metrics["validation"],
            config.output,
            ["model.skops", "metrics.json", "manifest.json"],
        ),
    )
    return result


def run_search(config: SearchJobConfig, stream: TextIO | None = None) -> SearchResult:
    embedded = config.cluster.scheduler is None
    with connect(config.cluster) as client:
        progress.say(stream, describe_cluster(client, embedded))
        result = search_incremental(config, client, stream=stream)
    seconds = result.manifest["timings"]["total_seconds"]
    best = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in result.metrics["best_params"].items()
    )
    progress.say(
        stream,
        f"done in {seconds:.1f}s: best candidate {result.metrics['best_candidate']}"
        f" of {result.metrics['candidates']}: {best}",
    )
    progress.say(
        stream,
        result_table(
            result.metrics["validation"],
            config.output,
            ["model.skops", "results.json", "metrics.json", "manifest.json"],
        ),
    )
    return result
