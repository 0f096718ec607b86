"""The rendered scheduler and worker commands, run as real local processes.

The command, arguments and environment come from `helm template`; only what
ties them to a pod changes: addresses go to loopback on free ports, the
scratch directory to a temporary one, and the variables the operator injects
(DASK_WORKER_NAME, DASK_SCHEDULER_ADDRESS) get local values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.charts.conftest import Renderer
from tests.charts.rendered import expand, rendered_env, replace_value
from tests.conftest import free_port, stop_processes, wait_for_port

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post_json(url: str, payload: dict[str, Any]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class LocalCluster:
    address: str
    http: str
    worker_http: str
    worker_name: str
    memory_limit: int
    nthreads: int
    processes: list[subprocess.Popen]


@pytest.fixture(scope="module")
def rendered_cluster(
    renderer: Renderer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    docs = renderer.render("helm3", "default").docs
    cluster = next(d for d in docs if d["kind"] == "DaskCluster")
    scheduler_box = cluster["spec"]["scheduler"]["spec"]["containers"][0]
    worker_box = cluster["spec"]["worker"]["spec"]["containers"][0]
    logs = tmp_path_factory.mktemp("rendered-processes")
    base_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    base_env.pop("DASK_SCHEDULER_ADDRESS", None)
    processes: list[subprocess.Popen] = []
    try:
        port, http_port = free_port(), free_port()
        args = replace_value(scheduler_box["args"], "--port", str(port))
        args = replace_value(args, "--dashboard-address", f"127.0.0.1:{http_port}")
        env = {**base_env, **rendered_env(scheduler_box)}
        with open(logs / "scheduler.log", "wb") as log:
            processes.append(
                subprocess.Popen(
                    [*args, "--host", "127.0.0.1"], env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
        wait_for_port(port, process=processes[0])
        wait_for_port(http_port, process=processes[0])
        address = f"tcp://127.0.0.1:{port}"

        worker_http = free_port()
        scratch = logs / "scratch"
        scratch.mkdir()
        # What the operator adds to every worker container.
        injected = {
            "DASK_WORKER_NAME": "daskyard-default-default-worker-0",
            "DASK_SCHEDULER_ADDRESS": address,
        }
        env = {**base_env, **rendered_env(worker_box), **injected}
        args = replace_value(worker_box["args"], "--dashboard-address", f"127.0.0.1:{worker_http}")
        args = replace_value(args, "--local-directory", str(scratch))
        with open(logs / "worker.log", "wb") as log:
            processes.append(
                subprocess.Popen(
                    [*expand(args, env), "--host", "127.0.0.1"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        wait_for_port(worker_http, timeout=60, process=processes[1])
        limits = worker_box["resources"]["limits"]
        yield LocalCluster(
            address=address,
            http=f"http://127.0.0.1:{http_port}",
            worker_http=f"http://127.0.0.1:{worker_http}",
            worker_name=injected["DASK_WORKER_NAME"],
            memory_limit=int(args[args.index("--memory-limit") + 1]),
            nthreads=int(limits["cpu"]),
            processes=processes,
        )
    finally:
        stop_processes(processes)


def test_scheduler_serves_what_the_autoscaler_polls(rendered_cluster: LocalCluster) -> None:
    status, body = http_get(rendered_cluster.http + "/api/v1/adaptive_target")
    assert status == 200
    assert "workers" in json.loads(body)
    # The operator's idleTimeout check.
    status, body = http_get(rendered_cluster.http + "/api/v1/check_idle")
    assert status == 200 and "idle_since" in json.loads(body)


def test_scheduler_retires_workers_on_post_only(rendered_cluster: LocalCluster) -> None:
    status, _ = http_get(rendered_cluster.http + "/api/v1/retire_workers")
    assert status == 405  # the route exists; the operator POSTs
    status, body = http_post_json(rendered_cluster.http + "/api/v1/retire_workers", {"n": 0})
    assert status == 200
    assert json.loads(body) == {}


def test_scheduler_serves_metrics_and_health(rendered_cluster: LocalCluster) -> None:
    status, body = http_get(rendered_cluster.http + "/metrics")
    assert status == 200 and b"dask_scheduler_workers" in body
    assert http_get(rendered_cluster.http + "/health") == (200, b"ok")


def test_worker_joins_with_the_rendered_memory_limit(rendered_cluster: LocalCluster) -> None:
    from distributed import Client

    with Client(rendered_cluster.address, timeout=30) as client:
        client.wait_for_workers(1, timeout=60)
        (worker,) = client.scheduler_info(n_workers=-1)["workers"].values()
    assert worker["name"] == rendered_cluster.worker_name
    assert worker["memory_limit"] == rendered_cluster.memory_limit == 4 * 2**30
    assert worker["nthreads"] == rendered_cluster.nthreads == 2


def test_worker_serves_metrics_and_health(rendered_cluster: LocalCluster) -> None:
    status, body = http_get(rendered_cluster.worker_http + "/metrics")
    assert status == 200 and b"dask_worker" in body
    assert http_get(rendered_cluster.worker_http + "/health") == (200, b"ok")


def test_doctor_passes_against_the_rendered_cluster(rendered_cluster: LocalCluster) -> None:
    daskyard = BIN / "daskyard"
    if not daskyard.exists():
        pytest.skip("the daskyard CLI is not installed in this environment")
    proc = subprocess.run(
        [str(daskyard), "doctor", "--scheduler", rendered_cluster.address, "--timeout", "30"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "autoscaler API: served" in proc.stdout + proc.stderr
