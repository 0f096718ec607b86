"""Run a job end to end: connect (or embed), train, print where the results are."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from distributed import Client

from daskyard import progress
from daskyard.artifacts import check_folder_url, check_output_owner, join_url
from daskyard.cluster import check_address, connect, scheduler_url
from daskyard.config import (
    IncrementalJobConfig,
    JobConfig,
    SearchJobConfig,
    XGBoostJobConfig,
    resolved,
)
from daskyard.finished import finished_run
from daskyard.imports import import_all


def describe_cluster(client: Client, embedded: bool) -> str:
    info = client.scheduler_info(n_workers=-1)
    workers = info["workers"].values()
    threads = sum(w["nthreads"] for w in workers)
    where = "embedded local cluster" if embedded else client.scheduler.address
    count = progress.count
    return f"cluster: {where}, {count(len(workers), 'worker')}, {count(threads, 'thread')}"


def result_table(metrics: dict[str, float], output: str, files: list[str]) -> str:
    # A metric with no value (AUC of a one-class validation set) is null in metrics.json.
    rows = [
        (f"validation {name}", "nan" if value is None else f"{value:.4f}")
        for name, value in metrics.items()
    ]
    rows += [(name, join_url(output, name)) for name in files]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name.ljust(width)}  {value}" for name, value in rows)


def _run(
    config: JobConfig,
    kind: str,
    trainer: str,
    summary: Callable[[Any], str],
    files: list[str],
    stream: TextIO | None,
    warm: Sequence[str] = (),
    threaded: bool = False,
    **train_options: Any,
) -> Any:
    """Connect (or embed), train, then print the timing, ``summary`` and the results;
    or, when the output holds this job's finished run, print that and return it.

    ``trainer`` is imported only once the cluster is up: fresh embedded worker
    processes import ``warm`` (what the job's first tasks need) meanwhile, instead
    of one after the other (about 2 s of each on 2 cores).
    """
    embedded = config.cluster.scheduler is None
    if not embedded:  # a malformed address is exit 2 before any work, not after it
        check_address(scheduler_url(config.cluster.scheduler, config.cluster.tls))
    check_folder_url(config.output, "output", config.storage_options)
    check_folder_url(config.checkpoint_url, "checkpoints", config.storage_options)
    # Another run's results there would be replaced, or mixed with this one's.
    previous = check_output_owner(config.output, kind, resolved(config), config.storage_options)
    finished = finished_run(config, previous) if previous else None
    if finished is not None:
        progress.say(
            stream,
            f"run {previous.get('run_id', '?')} finished already, with this config and data: "
            f"{summary(finished)}; nothing trained (to train it again, delete "
            f"{join_url(config.output, 'manifest.json')})",
        )
        progress.say(stream, result_table(finished.metrics["validation"], config.output, files))
        return finished
    with connect(config.cluster, threaded=threaded, warm=warm) as client:
        module, _, name = trainer.partition(":")
        import_all([module])
        train = getattr(sys.modules[module], name)
        progress.say(stream, describe_cluster(client, embedded))
        result = train(config, client, stream=stream, **train_options)
    seconds = result.manifest["timings"]["total_seconds"]
    progress.say(stream, f"done in {seconds:.1f}s: {summary(result)}")
    progress.say(stream, result_table(result.metrics["validation"], config.output, files))
    return result


# Each trainer is imported by name: an XGBoost job need not import scikit-learn's
# estimators, nor an incremental one XGBoost (seconds of start-up).
READERS = ("daskyard.data", "pyarrow.parquet")
# Workers write scikit-learn checkpoints with skops (about 0.8 s to import on a
# fresh worker, while the job's process imports its trainer; else the first save
# held up its worker by that long).
CHECKPOINT_WRITER = "skops.io"


def run_xgboost(config: XGBoostJobConfig, stream: TextIO | None = None) -> Any:
    return _run(
        config,
        "xgboost",
        "daskyard.train.xgboost:train_xgboost",
        lambda r: progress.count(r.metrics["rounds"], "round"),
        ["model.ubj", "metrics.json", "manifest.json"],
        stream,
        threaded=True,  # embedded: workers are threads of this process, nothing to warm
        embedded=config.cluster.scheduler is None,
    )


def _estimator_module(path: str) -> str:
    return path.rpartition(".")[0]


def run_incremental(config: IncrementalJobConfig, stream: TextIO | None = None) -> Any:
    return _run(
        config,
        "incremental",
        "daskyard.train.incremental:train_incremental",
        lambda r: progress.count(r.metrics["blocks_seen"], "block"),
        ["model.skops", "metrics.json", "manifest.json"],
        stream,
        warm=[
            *READERS,
            "daskyard.train.blocks",
            _estimator_module(config.incremental.estimator),
            CHECKPOINT_WRITER,
        ],
    )


def _best(result: Any) -> str:
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in result.metrics["best_params"].items()
    )
    return (
        f"best candidate {result.metrics['best_candidate']} of "
        f"{result.metrics['candidates']}: {params}"
    )


def run_search(config: SearchJobConfig, stream: TextIO | None = None) -> Any:
    return _run(
        config,
        "search",
        "daskyard.search:search_incremental",
        _best,
        ["model.skops", "results.json", "metrics.json", "manifest.json"],
        stream,
        warm=[
            *READERS,
            "daskyard.train.blocks",
            _estimator_module(config.search.estimator),
            CHECKPOINT_WRITER,
        ],
    )


RUNNERS: dict[str, Callable[..., Any]] = {
    "xgboost": run_xgboost,
    "incremental": run_incremental,
    "search": run_search,
}
