"""What every benchmark gets from the runner, and the clusters they run on."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from distributed import Client, LocalCluster

from daskyard.imports import import_all

WORKERS = 2  # the machine: 2 cores, so 2 workers x 1 thread vs 2 threads


@dataclass(frozen=True)
class Options:
    smoke: bool
    scale: float
    repeat: int
    cache: Path
    log: Callable[[str], None] = print

    def rows(self, full: int, smoke: int, minimum: int = 1) -> int:
        """``full`` rows times ``scale``, or ``smoke`` rows in smoke mode."""
        return max(minimum, smoke if self.smoke else round(full * self.scale))

    def repeats(self, at_full_size: int) -> int:
        """Best of how many: ``--repeat`` when given above 1 (or in smoke mode), else the
        benchmark's own default at full size (the cheap or noisy ones take more)."""
        return self.repeat if self.smoke or self.repeat > 1 else at_full_size

    @contextlib.contextmanager
    def scratch(self, name: str) -> Iterator[Path]:
        """A temporary folder for a benchmark's outputs, removed afterwards."""
        root = self.cache / "tmp"
        root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def embedded_client(
    workers: int = WORKERS, warm: Sequence[str] = (), threads: int = 1, processes: bool = True
) -> Iterator[Client]:
    """daskyard's own embedded cluster (worker processes, one thread each by default).

    ``warm`` modules are imported on every worker before the client is handed out
    (the way daskyard's own runs import them: see daskyard.imports),
    so that no contender pays (or is spared) the first import of a library on the
    workers: that one-off cost is the overhead benchmark's subject, not a ratio's.
    """
    from daskyard.cluster import embedded_cluster

    with embedded_cluster(workers, threads, processes) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers, timeout=60)
        if warm:
            client.run(import_all, list(warm))
        yield client


@contextlib.contextmanager
def limited_client(workers: int, memory_limit: int) -> Iterator[tuple[LocalCluster, Client]]:
    """Like daskyard's embedded cluster, with a per-worker memory limit the nannies enforce."""
    import dask

    from daskyard.cluster import embedded_cluster_config

    with (
        dask.config.set(embedded_cluster_config(workers, memory_limit)),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address="127.0.0.1:0",
            host="127.0.0.1",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers, timeout=60)
        yield cluster, client
