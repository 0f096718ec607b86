"""``python -m benchmarks [--only NAME ...] [--smoke] [--scale F] [--output FILE]``.

Runs each benchmark (baseline and contender in the same run, on the same data),
prints one table of ratios against targets and writes every figure as JSON.
Targets are reported, not enforced: the exit status is 0 unless a benchmark
could not run (1), so a slow shared machine never fails a build.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import Options
from benchmarks.report import BenchmarkResult, machine, table, write_json

# name -> module; the order is the order they run in
BENCHMARKS = {
    "xgboost": "benchmarks.xgboost_vs_single",
    "incremental": "benchmarks.incremental_sgd",
    "out_of_core": "benchmarks.out_of_core",
    "search": "benchmarks.search",
    "overhead": "benchmarks.overhead",
}
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / ".bench"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[2])
    p.add_argument(
        "--only",
        nargs="+",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only these ({', '.join(BENCHMARKS)})",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, seconds each: checks the harness, not the targets",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the full data sizes by F (ignored with --smoke)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per contender, best taken (default: 1, or as each benchmark says)",
    )
    p.add_argument(
        "--output", type=Path, default=None, help="JSON results file (default: .bench/results.json)"
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="generated data and scratch space (default: $DASKYARD_BENCH_CACHE "
        "or .bench/ in the repository; never committed)",
    )
    return p


def run_benchmarks(names: Sequence[str], options: Options) -> list[BenchmarkResult]:
    results = []
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        options.log(f"== {name}: {module.TITLE}")
        started = time.perf_counter()
        try:
            result = module.run(options)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            result = BenchmarkResult(
                name, module.TITLE, options.smoke, error=f"{type(exc).__name__}: {exc}"
            )
        result.wall_seconds = round(time.perf_counter() - started, 2)
        options.log(f"   {name} done in {result.wall_seconds:.1f}s")
        results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cache = args.cache or Path(os.environ.get("DASKYARD_BENCH_CACHE") or DEFAULT_CACHE)
    output = args.output or cache / "results.json"
    if args.scale <= 0:
        parser().error("--scale must be positive")
    if args.repeat is not None and args.repeat < 1:
        parser().error("--repeat must be at least 1")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    options = Options(
        smoke=args.smoke,
        scale=1.0 if args.smoke else args.scale,
        repeat=args.repeat or 1,
        cache=cache,
        log=log,
    )
    names = args.only or list(BENCHMARKS)
    described = machine()
    started = time.time()
    results = run_benchmarks(names, options)
    run = {
        "command": " ".join(
            ["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]
        ),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "smoke": args.smoke,
        "scale": options.scale,
        "repeat": options.repeat,
        "machine": {**described, "load_average_at_end": list(os.getloadavg())},
    }
    write_json(output, results, run)
    print(table(results))
    print(
        f"\n{sum(r.passed for r in results)}/{len(results)} benchmarks met every target; "
        f"{run['seconds']:.0f}s; figures in {output}"
    )
    return 1 if any(r.error for r in results) else 0
