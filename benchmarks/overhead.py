"""Fixed overhead: ``daskyard train xgboost`` (embedded) vs bare ``xgboost.train``, 100k rows.

Both read the same Parquet files and train the same rounds; the difference of
their wall times is daskyard's fixed cost: interpreter and imports, starting
and stopping the embedded cluster, schema and value validation, checkpoints,
artifacts. Its parts are timed on their own for the breakdown.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from benchmarks.common import Options, embedded_client
from benchmarks.datasets import dataset_of
from benchmarks.measure import alternate, best, run_cli, timed
from benchmarks.report import BenchmarkResult, Check
from benchmarks.xgboost_vs_single import cli_args, train_single

NAME = "overhead"
TITLE = "Fixed overhead of embedded daskyard train xgboost vs bare xgboost.train"
TARGET_SECONDS = 3.0


def sizes(options: Options) -> dict[str, Any]:
    if options.smoke:
        return {"rows": 5_000, "files": 2, "valid_rows": 1_000, "rounds": 5, "max_depth": 4}
    return {
        "rows": options.rows(100_000, 0),
        "files": 4,
        "valid_rows": options.rows(25_000, 0),
        "rounds": 100,
        "max_depth": 8,
    }


def import_seconds() -> float:
    """A fresh interpreter importing what the CLI imports before it trains."""
    code = "import daskyard.cli, daskyard.runner, distributed, xgboost.dask"
    return timed(lambda: subprocess.run([sys.executable, "-c", code], check=True)).seconds


def cluster_seconds() -> float:
    def start_and_stop() -> None:
        with embedded_client():
            pass

    return timed(start_and_stop).seconds


def run(options: Options) -> BenchmarkResult:
    size = sizes(options)
    repeat = options.repeat if options.smoke or options.repeat > 1 else 3  # cheap: best of 3
    data = dataset_of(options, size)
    params = {"objective": "binary:logistic", "max_depth": size["max_depth"], "eta": 0.1}
    rounds = size["rounds"]
    result = BenchmarkResult(
        NAME, TITLE, options.smoke, parameters={**size, **params, "repeat": repeat}
    )
    counter = iter(range(1_000_000))
    manifests: list[dict[str, Any]] = []
    with options.scratch(NAME) as scratch:

        def cli():
            output = scratch / f"cli-{next(counter)}"
            run_cli(cli_args(data, params, rounds, output), timeout=600)
            manifests.append(json.loads((output / "manifest.json").read_text())["timings"])

        runs = alternate(
            {
                "bare": lambda: train_single(data, params, rounds),
                "daskyard_cli": cli,
                "imports": import_seconds,
                "cluster_start_stop": cluster_seconds,
            },
            repeat,
        )
    chosen = {name: best(r) for name, r in runs.items()}
    # the parts timed inside their own runs report their own seconds, not the call's
    result.timings = {
        "bare": chosen["bare"].seconds,
        "daskyard_cli": chosen["daskyard_cli"].seconds,
        "imports": min(t.value for t in runs["imports"]),
        "cluster_start_stop": min(t.value for t in runs["cluster_start_stop"]),
    }
    fastest = min(manifests, key=lambda m: m["total_seconds"])
    overhead = result.timings["daskyard_cli"] - result.timings["bare"]
    result.checks = [
        Check(
            "CLI - bare xgboost.train",
            overhead,
            TARGET_SECONDS,
            measured=result.timings["daskyard_cli"],
            baseline=result.timings["bare"],
            unit="s",
        ),
        Check.ratio(
            "CLI / bare time",
            result.timings["daskyard_cli"],
            result.timings["bare"],
        ),
    ]
    result.details = {
        "breakdown_seconds": {
            "interpreter_and_imports": round(result.timings["imports"], 3),
            "embedded_cluster_start_and_stop": round(result.timings["cluster_start_stop"], 3),
            **{f"train_xgboost.{k}": v for k, v in fastest["seconds"].items()},
        },
        "runs_seconds": {name: [round(t.seconds, 3) for t in r] for name, r in runs.items()},
    }
    result.notes.append(f"best of {repeat} per part, run round-robin")
    return result
