"""``daskyard doctor``: can this cluster run daskyard jobs and be autoscaled?"""

from __future__ import annotations

import os
from typing import TextIO

from daskyard import progress
from daskyard.cluster import adaptive_target, connect, version_report
from daskyard.config import ClusterConfig, from_flags
from daskyard.errors import ConfigError


def _gib(value: float | None) -> str:
    return f"{value / 2**30:.2f} GiB" if value else "no limit"


def run_doctor(scheduler: str | None, timeout: float, stream: TextIO | None = None) -> int:
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    config = from_flags(
        ClusterConfig,
        {"scheduler": ("--scheduler", address), "connect_timeout": ("--timeout", timeout)},
        check_versions=False,
    )
    with connect(config) as client:
        info = client.scheduler_info(n_workers=-1)
        progress.say(stream, f"scheduler: {info['address']} (dialled {client.scheduler.address})")
        report = version_report(client)
        progress.say(stream, "\nversions:\n" + report.table())
        workers = info["workers"]
        progress.say(stream, f"\nworkers: {len(workers)}")
        for address, worker in sorted(workers.items()):
            used = worker.get("metrics", {}).get("memory")
            progress.say(
                stream,
                f"  {worker.get('name', address)!s:<20} {address}  threads={worker['nthreads']}"
                f"  memory_limit={_gib(worker.get('memory_limit'))}  used={_gib(used)}",
            )
        served, detail = adaptive_target(client)
        progress.say(stream, f"\nautoscaler API: {'served' if served else 'NOT served'}: {detail}")
    problems = []
    if report.mismatched:
        problems.append(f"package versions differ ({', '.join(report.mismatched)})")
    if not served:
        problems.append(
            "the scheduler does not serve /api/v1/adaptive_target: add "
            "distributed.http.scheduler.api to DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"
        )
    if problems:
        raise ConfigError("; ".join(problems))
    progress.say(stream, "\nok: versions match and the autoscaler API is served")
    return 0
