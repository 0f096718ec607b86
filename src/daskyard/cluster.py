"""Connect to a Dask cluster, or embed one, and check it can run our work.

One code path for every mode: the trainer receives a ``distributed.Client``
and never knows whether the scheduler is a pod or a local process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dask
from distributed import Client, LocalCluster
from distributed.comm import get_address_host
from distributed.comm.addressing import parse_address, parse_host_port
from distributed.comm.registry import get_backend
from distributed.security import Security

from daskyard.config import ClusterConfig, TLSConfig
from daskyard.errors import ConfigError, InfrastructureError
from daskyard.imports import import_all

# What the Dask operator's DaskAutoscaler polls (and retire_workers, which it POSTs).
ADAPTIVE_TARGET_PATH = "/api/v1/adaptive_target"
# The HTTP routes a daskyard scheduler serves: distributed's defaults plus the
# API the operator's autoscaler needs (off by default upstream).
SCHEDULER_HTTP_ROUTES = [
    "distributed.http.scheduler.prometheus",
    "distributed.http.scheduler.info",
    "distributed.http.scheduler.json",
    "distributed.http.health",
    "distributed.http.statics",
    "distributed.http.scheduler.api",
]
# What an embedded cluster turns down, measured on 2 cores (xgboost.dask, 2 workers x
# 1 thread, 2M rows, 100 rounds, three alternated runs each: 41.7/38.2/42.4 s with
# distributed's defaults, 33.6/35.7/37.0 s without). Dask's statistical profiler
# wakes every 10 ms in each worker and server to walk every thread's stack under the
# GIL, and the event-loop tick is measured every 20 ms: an idle worker used 4.2% of a
# core, 1.0% without both. Every wake-up preempts a compute thread, and XGBoost's
# workers wait for the slowest at every tree level. Nobody reads the dashboard's
# profile of a job's private cluster.
QUIET_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
}
# glibc settings for worker processes. The nanny sets MALLOC_TRIM_THRESHOLD_=64 KiB
# so that freed memory goes back to the OS at once; setting it also freezes glibc's
# mmap threshold at 128 KiB, so every larger temporary (a column, a block, a
# prediction) is a fresh mmap whose pages fault in on first touch and are unmapped
# on free. Page faults dominate array code then: scoring 200k rows on a worker took
# 28 ms, 13 ms with temporaries below 32 MiB kept in the heap (the same call in a
# plain process: 18 ms), and a block's scaling and row-major copy 15 -> 8 ms. The
# heap then keeps some freed memory, which dask counts as unmanaged: the thresholds
# are a share of the worker's memory limit (a 1 GiB worker streaming 28 MiB blocks
# peaked at 0.63 of its limit with the 12 GiB worker's thresholds, 0.52 before).
MALLOC_TRIM_SHARE = 1 / 128  # of the memory limit, at most 64 MiB
MALLOC_MMAP_MAX = 32 << 20  # glibc's own upper bound on 64-bit


def worker_malloc_environ(memory_limit: int) -> dict[str, int]:
    """``MALLOC_*`` variables for a worker process with this memory limit (bytes)."""
    trim = int(min(64 << 20, max(1 << 20, memory_limit * MALLOC_TRIM_SHARE)))
    return {
        "MALLOC_TRIM_THRESHOLD_": trim,
        "MALLOC_MMAP_THRESHOLD_": min(MALLOC_MMAP_MAX, trim // 2),
    }


def embedded_cluster_config(workers: int, memory_limit: int | None = None) -> dict[str, Any]:
    """The dask configuration an embedded cluster of ``workers`` processes runs with
    (spawned workers take it with them). ``memory_limit`` per worker, in bytes;
    default: distributed's, the machine's memory shared out."""
    from distributed.system import MEMORY_LIMIT

    limit = memory_limit or MEMORY_LIMIT // max(1, workers)
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    return {
        "distributed.scheduler.http.routes": SCHEDULER_HTTP_ROUTES,
        "distributed.nanny.pre-spawn-environ": {**environ, **worker_malloc_environ(limit)},
        **QUIET_CLUSTER_CONFIG,
    }


# Packages that must be identical on client, scheduler and workers. distributed
# reads versions from distribution metadata, so these are distribution names.
VERSION_PACKAGES = ["python", "dask", "distributed", "xgboost", "scikit-learn", "numpy", "pandas"]
EXTRA_PACKAGES = ["xgboost", "scikit-learn", "pyarrow"]


def infrastructure_errors() -> tuple[type[BaseException], ...]:
    """Failures of the cluster rather than of the job: a retried pod may succeed."""
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    return (OSError, TimeoutError, CommClosedError, KilledWorker)


@contextlib.contextmanager
def connect(
    config: ClusterConfig, *, threaded: bool = False, warm: Sequence[str] = ()
) -> Iterator[Client]:
    """Yield a client to the configured scheduler, or to an embedded LocalCluster.

    ``threaded``: the job's compute releases the GIL (XGBoost), so an embedded
    cluster's workers are threads of this process (see embedded_shape).
    ``warm``: modules fresh embedded worker processes start importing at once, while
    the caller goes on (the job's first tasks would otherwise import them in turn).
    """
    if config.scheduler:
        # The same bound applies when the scheduler goes away mid-run: the client
        # stops trying to reconnect after it, and the job exits 75 instead of hanging.
        timeout = f"{config.connect_timeout}s"
        with dask.config.set({"distributed.comm.timeouts.connect": timeout}):
            client = _connect_remote(config.scheduler, config.connect_timeout, config.tls)
            try:
                if config.check_versions:
                    check_versions(client)
                yield client
            finally:
                client.close()
    else:
        shape = embedded_shape(config.local_workers, threaded)
        with (
            embedded_cluster(shape.workers, shape.threads, shape.processes) as cluster,
            Client(cluster) as client,
        ):
            if shape.processes and warm:
                client.run(import_modules, list(warm), wait=False)
            yield client


async def import_modules(modules: list[str]) -> None:
    """Runs on a worker (a coroutine: Client.run does not wait for it); the imports
    take a thread, not the worker's event loop, and run with the garbage collector
    paused (see daskyard.imports). A module that fails to import fails later,
    where a task uses it."""

    await asyncio.to_thread(import_all, modules, strict=False)


def scheduler_url(address: str, tls: TLSConfig | None = None) -> str:
    """The address as the client dials it: ``host:port`` alone means tcp (tls with TLS)."""
    return address if "://" in address else f"{'tls' if tls else 'tcp'}://{address}"


def check_address(address: str) -> None:
    """Refuse an address no retry can reach (a typo, http://, no port) before dialling it."""
    try:
        scheme, location = parse_address(address)
        get_backend(scheme)
        # No default port: Dask's client has none either ('tcp://host' was exit 1, a
        # ValueError traceback from inside it).
        host, port = parse_host_port(location)
    except ValueError as exc:
        problem = str(exc)
    else:
        if not host or any(c.isspace() for c in host):
            problem = f"host {host!r} is not a host name or IP address"
        elif 0 < port < 65536:
            return
        else:
            problem = f"port {port} is not between 1 and 65535"
    raise ConfigError(
        f"scheduler address '{address}' is not valid ({problem}): "
        "use tcp://HOST:PORT or tls://HOST:PORT in --scheduler / DASK_SCHEDULER_ADDRESS"
    )


def _connect_remote(address: str, timeout: float, tls: TLSConfig | None) -> Client:
    address = scheduler_url(address, tls)
    check_address(address)
    security = None
    if (
        tls is None
        and address.startswith("tls://")
        and not dask.config.get("distributed.comm.tls.ca-file", None)
    ):
        raise ConfigError(
            f"scheduler {address} uses TLS but no certificates are configured: set cluster.tls "
            "(ca_file, cert, key) or DASK_DISTRIBUTED__COMM__TLS__CA_FILE and __CLIENT__CERT/KEY"
        )
    if tls is not None:
        for name in ("ca_file", "cert", "key"):
            if not os.path.isfile(getattr(tls, name)):
                raise ConfigError(
                    f"cluster.tls.{name} '{getattr(tls, name)}' is not a file: "
                    "mount the TLS Secret or fix the path"
                )
        security = Security(
            tls_ca_file=tls.ca_file,
            tls_client_cert=tls.cert,
            tls_client_key=tls.key,
            require_encryption=True,
        )
    try:
        return Client(address, timeout=timeout, security=security)
    except (OSError, TimeoutError) as exc:
        raise InfrastructureError(
            f"scheduler {address} unreachable after {timeout:g}s ({type(exc).__name__}): "
            "check --scheduler / DASK_SCHEDULER_ADDRESS and that the DaskCluster is running"
        ) from None


@dataclass(frozen=True)
class EmbeddedShape:
    workers: int
    threads: int  # per worker
    processes: bool  # worker processes (with nannies), or threads of this process


def embedded_shape(local_workers: int | None, threaded: bool) -> EmbeddedShape:
    """The embedded cluster a job gets.

    A ``threaded`` job (XGBoost: its training releases the GIL) runs its workers
    as threads of this process. Without ``local_workers``, one worker with every
    core: on one machine XGBoost builds its histograms faster with every core in
    one worker than split across workers, which must allreduce them every tree
    level (about 40 ms per round on 2 x 1-thread workers, 100k rows). With
    ``local_workers``, that many one-thread workers and a real collective between
    them, still in this process: 2M rows, 100 rounds trained as fast as on 2
    worker processes (36.4-37.7 s against 37.7-38.0 s, the same model), without a
    worker process to start and import XGBoost into (about 2 s of a short job on
    2 cores) and without copying the data between processes.

    Other jobs get worker processes (``local_workers``, default one per core),
    whose nannies enforce each worker's memory limit and restart a lost worker.
    """
    cores = os.cpu_count() or 1
    if threaded:
        return EmbeddedShape(local_workers or 1, 1 if local_workers else cores, processes=False)
    return EmbeddedShape(local_workers or cores, 1, processes=True)


WORKER_INTERRUPTS = "daskyard.worker_interrupts"


def _worker_preloads() -> list[str]:
    """The user's configured worker preloads, which an explicit ``preload`` replaces."""
    configured = dask.config.get("distributed.worker.preload", [])
    return [configured] if isinstance(configured, str) else list(configured)


@contextlib.contextmanager
def embedded_cluster(
    n_workers: int | None = None, threads: int = 1, processes: bool = True
) -> Iterator[LocalCluster]:
    """A LocalCluster of worker processes (``threads`` each) or threads, closed on exit.

    Its scheduler serves the autoscaler's API like a deployed one; see
    ``embedded_cluster_config`` for what else differs from distributed's defaults.
    """
    from distributed.system import MEMORY_LIMIT

    workers = n_workers or os.cpu_count() or 1
    with (
        dask.config.set(embedded_cluster_config(workers)),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=processes,
            # Workers in this process each watch the whole process's memory, so each
            # gets the whole budget (distributed would give each a share, and they
            # would pause at a share of what the machine has).
            memory_limit="auto" if processes else MEMORY_LIMIT,
            # TCP even in process: XGBoost's tracker binds the scheduler's host.
            protocol="tcp://",
            dashboard_address="127.0.0.1:0",
            host="127.0.0.1",
            # Not even errors: a task's error reaches the job, which says it in one
            # line (exit 2, 3 or 75); distributed's 'Compute Failed' log, with its
            # traceback, printed first, is what a user would read instead.
            silence_logs=logging.CRITICAL,
            # Threads of this process must not ignore Ctrl-C: only worker processes.
            **({"preload": [*_worker_preloads(), WORKER_INTERRUPTS]} if processes else {}),
        ) as cluster,
    ):
        yield cluster


# ---------------------------------------------------------------- versions


@dataclass
class VersionReport:
    """One row per package: client, scheduler and each distinct worker version."""

    rows: list[tuple[str, str, str, str]]  # package, client, scheduler, workers

    @property
    def mismatched(self) -> list[str]:
        bad = []
        for package, client, scheduler, workers in self.rows:
            if len({client, scheduler, *workers.split(", ")} - {"-"}) > 1:
                bad.append(package)
        return bad

    def table(self) -> str:
        header = ("package", "client", "scheduler", "workers")
        rows = [header, *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = []
        for package, *cells in rows:
            flag = "  <- mismatch" if package in self.mismatched else ""
            cols = [package, *cells]
            lines.append(
                "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip() + flag
            )
        return "\n".join(lines)


def version_report(client: Client) -> VersionReport:
    versions = client.get_versions(check=False, packages=EXTRA_PACKAGES)

    def pick(entry: dict[str, Any] | None, package: str) -> str:
        if not entry:
            return "-"
        value = entry.get("packages", {}).get(package)
        return str(value) if value is not None else "missing"

    rows = []
    for package in VERSION_PACKAGES:
        workers = sorted({pick(w, package) for w in versions.get("workers", {}).values()})
        rows.append(
            (
                package,
                pick(versions.get("client"), package),
                pick(versions.get("scheduler"), package),
                ", ".join(workers) if workers else "-",
            )
        )
    return VersionReport(rows)


def check_versions(client: Client) -> VersionReport:
    report = version_report(client)
    if report.mismatched:
        raise ConfigError(
            f"package versions differ between client, scheduler and workers "
            f"({', '.join(report.mismatched)}): run the job, scheduler and workers from one "
            f"image\n{report.table()}"
        )
    return report


# ---------------------------------------------------------------- HTTP API


def scheduler_http_url(client: Client) -> str | None:
    """Base URL of the scheduler's HTTP server, as reachable from this client."""
    info = client.scheduler_info(n_workers=0)
    port = info.get("services", {}).get("dashboard")
    if not port:
        return None
    host = get_address_host(client.scheduler.address)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def adaptive_target(client: Client, timeout: float = 10.0) -> tuple[bool, str]:
    """Whether the scheduler serves the autoscaler's endpoint, and what it said."""
    base = scheduler_http_url(client)
    if base is None:
        return False, "the scheduler runs no HTTP server (no dashboard port)"
    url = base + ADAPTIVE_TARGET_PATH
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = json.loads(response.read())
        return True, f"{url} -> {payload}"
    except urllib.error.HTTPError as exc:
        return False, f"{url} -> HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{url} -> {exc}"


def scheduler_host(client: Client) -> str:
    """The scheduler's own host (its pod IP in Kubernetes), not the Service name we dialled."""
    return get_address_host(client.scheduler_info(n_workers=0)["address"])
