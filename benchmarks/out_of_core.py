"""Out of core: incremental training over data several times the cluster's memory.

Two single-threaded workers with a memory limit each (enforced by their nannies:
pause at 80%, restart at 95%); the training data, as float32 in memory, is at
least ``FACTOR`` times the workers' total limit. Every worker's RSS is sampled
every 20 ms by a thread inside the worker (the scheduler's heartbeat metrics are
too coarse to catch a peak); restarts are workers whose process changed or that
the scheduler removed. It runs twice: one chain of ``partial_fit`` (the default),
then ``replicas`` = 2 (both workers fit at once, each holding its own blocks).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.common import Options, limited_client
from benchmarks.datasets import ROW_BYTES, TARGET, dataset_of
from benchmarks.measure import timed, watch_workers
from benchmarks.report import BenchmarkResult, Check

NAME = "out_of_core"
TITLE = "Out-of-core incremental training: peak worker memory and restarts"
WORKERS = 2
MEMORY_LIMIT = 1024 * 2**20  # per worker
FACTOR = 4.0  # data / total worker memory limit
TARGET_PEAK_FRACTION = 0.6
ESTIMATOR = "sklearn.linear_model.SGDClassifier"
PARAMS: dict[str, Any] = {"loss": "log_loss", "alpha": 1e-4, "random_state": 0}
REPLICAS = WORKERS


def sizes(options: Options) -> dict[str, Any]:
    full_rows = math.ceil(FACTOR * WORKERS * MEMORY_LIMIT / ROW_BYTES)
    if options.smoke:
        return {"rows": 40_000, "files": 4, "valid_rows": 10_000, "valid_files": 1}
    rows = options.rows(full_rows, 0)
    # ~250k rows (29 MB in memory) per file: a block is a small share of a worker
    return {
        "rows": rows,
        "files": max(1, math.ceil(rows / 250_000)),
        "valid_rows": options.rows(500_000, 0),
        "valid_files": 1,
    }


def config(train: Path, validation: Path, output: Path, replicas: int = 1):
    from daskyard.config import DataConfig, IncrementalConfig, IncrementalJobConfig

    return IncrementalJobConfig(
        data=DataConfig(train=str(train), validation=str(validation), target=TARGET),
        output=str(output),
        incremental=IncrementalConfig(
            estimator=ESTIMATOR, params=PARAMS, epochs=1, replicas=replicas
        ),
    )


def run(options: Options) -> BenchmarkResult:
    from daskyard.train.incremental import train_incremental

    size = sizes(options)
    data = dataset_of(options, size)
    total_limit = WORKERS * MEMORY_LIMIT
    result = BenchmarkResult(
        NAME,
        TITLE,
        options.smoke,
        parameters={
            **size,
            "workers": WORKERS,
            "memory_limit_per_worker": MEMORY_LIMIT,
            "data_bytes_in_memory": data.memory_bytes,
            **PARAMS,
        },
    )
    runs: dict[int, tuple[Any, Any]] = {}  # replicas -> (timed run, its watch)
    with options.scratch(NAME) as scratch:
        for replicas in (1, REPLICAS):
            # Fresh workers for each: a worker's heap stays at its peak after a run
            # (glibc keeps what it may reuse), which the next run's peak would include.
            job = config(data.train, data.validation, scratch / f"run-{replicas}", replicas)
            with (
                limited_client(WORKERS, MEMORY_LIMIT) as (_, client),
                watch_workers(client) as watch,
            ):
                runs[replicas] = (timed(lambda job=job: train_incremental(job, client)), watch)
    result.checks = [
        Check(
            "data / total worker memory limit",
            data.memory_bytes / total_limit,
            FACTOR,
            ">=",
            measured=data.memory_bytes,
            baseline=total_limit,
            raw="bytes",
        )
    ]
    for replicas, (run_, watch) in runs.items():
        name = "daskyard" if replicas == 1 else f"daskyard_replicas_{replicas}"
        label = "" if replicas == 1 else f", --replicas {replicas}"
        trained = run_.value
        result.timings[name] = run_.seconds
        result.scores[f"accuracy_{name}"] = trained.metrics["validation"]["accuracy"]
        worst = max(watch.peak_rss, key=lambda n: watch.peak_rss[n] / watch.limits[n])
        result.checks += [
            Check(
                f"peak worker RSS / limit{label}",
                watch.peak_fraction,
                TARGET_PEAK_FRACTION,
                measured=watch.peak_rss[worst],
                baseline=watch.limits[worst],
                unit="fraction",
                raw="bytes",
            ),
            Check(
                f"worker restarts{label}",
                float(watch.restarts),
                0.0,
                measured=float(watch.restarts),
                unit="count",
                raw="",
            ),
        ]
        result.details[name] = {
            "peak_rss_bytes": watch.peak_rss,
            "rss_at_start_bytes": watch.baseline_rss,
            "memory_limit_bytes": watch.limits,
            "removed_worker_events": watch.removed_events,
            "phases": trained.manifest["timings"]["seconds"],
        }
    if options.smoke:
        # tiny data cannot be 4x a worker's memory: the harness is checked, not the ratio
        result.checks[0].target = None
    result.notes.append(
        f"{WORKERS} workers x 1 thread, {MEMORY_LIMIT / 2**20:.0f} MiB limit each; RSS sampled "
        "every 20 ms inside each worker; cluster start excluded"
    )
    return result
