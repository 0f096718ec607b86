"""Fixed overhead: ``daskyard train xgboost`` (embedded) vs bare ``xgboost.train``, 100k rows.

The CLI runs as a user runs it, on its default embedded cluster (for XGBoost:
one worker process with every core). The checked baseline is a bare script in
its own interpreter (``benchmarks/bare_xgboost.py``: import xgboost, read with
pyarrow, train), timed like the CLI from process start to exit; the same
training called inside this already warm process is reported too.

Both read the same Parquet files and train the same rounds; the difference of
their wall times is daskyard's fixed cost: interpreter and imports, starting
and stopping the embedded cluster, schema and value validation, checkpoints,
artifacts. Its parts are timed on their own for the breakdown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
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


def bare_script(data: Any, rounds: int, max_depth: int) -> None:
    """``python -m benchmarks.bare_xgboost``: a fresh interpreter, like the CLI's."""
    root = Path(__file__).resolve().parent.parent
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    args = [str(data.train), str(data.validation), str(rounds), str(max_depth), str(os.cpu_count())]
    subprocess.run(
        [sys.executable, "-m", "benchmarks.bare_xgboost", *args], check=True, env=env, timeout=600
    )


def cluster_seconds() -> float:
    from daskyard.cluster import embedded_shape

    def start_and_stop() -> None:
        shape = embedded_shape(None, threaded=True)
        with embedded_client(shape.workers, threads=shape.threads, processes=shape.processes):
            pass

    return timed(start_and_stop).seconds


def run(options: Options) -> BenchmarkResult:
    size = sizes(options)
    repeat = options.repeats(3)  # cheap: best of 3
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
            # daskyard's default embedded cluster, as a user gets it: for XGBoost one
            # worker with every core (benchmark 1 pins 2 x 1 thread instead).
            run_cli(cli_args(data, params, rounds, output, workers=None), timeout=600)
            manifests.append(json.loads((output / "manifest.json").read_text())["timings"])

        runs = alternate(
            {
                "bare_script": lambda: bare_script(data, rounds, size["max_depth"]),
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
        "bare_script": chosen["bare_script"].seconds,
        "bare": chosen["bare"].seconds,
        "daskyard_cli": chosen["daskyard_cli"].seconds,
        "imports": min(t.value for t in runs["imports"]),
        "cluster_start_stop": min(t.value for t in runs["cluster_start_stop"]),
    }
    fastest = min(manifests, key=lambda m: m["total_seconds"])
    cli = result.timings["daskyard_cli"]
    result.checks = [
        Check(
            "CLI - bare script (both from process start)",
            cli - result.timings["bare_script"],
            TARGET_SECONDS,
            measured=cli,
            baseline=result.timings["bare_script"],
            unit="s",
        ),
        Check.ratio("CLI / bare script time", cli, result.timings["bare_script"]),
        Check(
            "CLI - bare xgboost.train in this warm process",
            cli - result.timings["bare"],
            measured=cli,
            baseline=result.timings["bare"],
            unit="s",
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
