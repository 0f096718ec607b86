"""Timing, worker peak memory, worker restarts, and running the daskyard CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import Client

# ---------------------------------------------------------------- timing


@dataclass
class Timed:
    seconds: float
    value: Any


def timed(fn: Callable[[], Any]) -> Timed:
    started = time.perf_counter()
    value = fn()
    return Timed(time.perf_counter() - started, value)


def alternate(contenders: dict[str, Callable[[], Any]], repeat: int) -> dict[str, list[Timed]]:
    """Run every contender ``repeat`` times, round-robin, so that a slow spell of a shared
    machine hits each of them rather than one; the caller takes the best of each."""
    runs: dict[str, list[Timed]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            runs[name].append(timed(fn))
    return runs


def best(runs: list[Timed]) -> Timed:
    return min(runs, key=lambda t: t.seconds)


# ---------------------------------------------------------------- worker memory


_SAMPLER: dict[str, Any] = {}


def _start_sampler(interval: float) -> int:
    """Runs on a worker: a thread that keeps the process's peak RSS (sampled every
    ``interval`` s, far finer than the scheduler's heartbeat metrics)."""
    import psutil

    _stop_sampler()
    process = psutil.Process()
    stop = threading.Event()
    state = {"peak": process.memory_info().rss, "stop": stop}

    def sample() -> None:
        while not stop.wait(interval):
            rss = process.memory_info().rss
            if rss > state["peak"]:
                state["peak"] = rss

    thread = threading.Thread(target=sample, name="bench-rss-sampler", daemon=True)
    state["thread"] = thread
    _SAMPLER.update(state)
    thread.start()
    return state["peak"]


def _stop_sampler() -> int | None:
    """Runs on a worker: stop the sampler and return the peak RSS it saw."""
    if not _SAMPLER:
        return None
    _SAMPLER["stop"].set()
    _SAMPLER["thread"].join()
    peak = max(_SAMPLER["peak"], _rss())
    _SAMPLER.clear()
    return peak


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _pid() -> int:
    return os.getpid()


@dataclass
class WorkerWatch:
    """Peak RSS per worker and worker restarts over a block of work."""

    limits: dict[str, int] = field(default_factory=dict)  # worker name -> memory limit
    baseline_rss: dict[str, int] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    removed_events: int = 0

    @property
    def peak_fraction(self) -> float:
        """The highest peak RSS of any worker as a fraction of that worker's limit."""
        return max(self.peak_rss[n] / self.limits[n] for n in self.peak_rss)


def _workers(client: Client) -> dict[str, dict[str, Any]]:
    """Worker name -> address, pid and memory limit."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    pids = client.run(_pid)
    return {
        str(w["name"]): {
            "address": address,
            "pid": pids.get(address),
            "limit": int(w.get("memory_limit") or 0),
        }
        for address, w in info.items()
    }


def _removals(client: Client) -> int:
    events = client.get_events("all")
    return sum(1 for _, e in events if isinstance(e, dict) and e.get("action") == "remove-worker")


@contextmanager
def watch_workers(client: Client, interval: float = 0.02) -> Iterator[WorkerWatch]:
    """Sample every worker's RSS while the block runs; count workers that were replaced."""
    watch = WorkerWatch()
    before = _workers(client)
    removed_before = _removals(client)
    watch.limits = {name: w["limit"] for name, w in before.items()}
    started = client.run(_start_sampler, interval)
    by_address = {w["address"]: name for name, w in before.items()}
    watch.baseline_rss = {by_address[a]: rss for a, rss in started.items() if a in by_address}
    try:
        yield watch
    finally:
        peaks = client.run(_stop_sampler)
        after = _workers(client)
        by_address = {w["address"]: name for name, w in after.items()}
        for address, peak in peaks.items():
            if address in by_address and peak is not None:
                watch.peak_rss[by_address[address]] = peak
        # A restarted worker keeps its name but has a new process; a lost one is gone.
        watch.restarts = sum(
            1 for name, w in before.items() if name not in after or after[name]["pid"] != w["pid"]
        )
        watch.removed_events = _removals(client) - removed_before
        watch.restarts = max(watch.restarts, watch.removed_events)


# ---------------------------------------------------------------- the CLI


def daskyard_command() -> list[str]:
    """The installed ``daskyard`` script next to this interpreter, else the module."""
    script = Path(sys.executable).parent / "daskyard"
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "import sys; from daskyard.cli import main; sys.exit(main())"]


def run_cli(args: list[str], timeout: float, log: Path | None = None) -> Timed:
    """Run ``daskyard ARGS`` and time it, process start to exit (imports included)."""
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    command = [*daskyard_command(), *args]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    seconds = time.perf_counter() - started
    if log is not None:
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(
            f"daskyard {' '.join(args[:2])} exited {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
        )
    return Timed(seconds, proc)
