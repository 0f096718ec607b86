"""The rendered scheduler and worker commands, run as real local processes.

The command, arguments and environment come from `helm template`; only what
ties them to a pod changes: addresses go to loopback on free ports, the
scratch directory to a temporary one, and the variables the operator injects
(DASK_WORKER_NAME, DASK_SCHEDULER_ADDRESS) get local values.

With `tls.enabled` (ci/tls-values.yaml), generated certificates in a
temporary folder stand in for the mounted Secret: the rendered environment's
paths under the mount path are pointed there, and the rendered tls:// worker
address keeps its scheme.
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
from tests.conftest import (
    free_port,
    make_certificates,
    run_cli,
    stop_processes,
    wait_for_port,
)

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
    # Where the TLS Secret's files are (standing in for the mount path).
    certs: Path | None = None


def tls_mount(box: dict[str, Any]) -> str | None:
    return next((m["mountPath"] for m in box["volumeMounts"] if m["name"] == "tls"), None)


def local_env(box: dict[str, Any], certs: Path | None) -> dict[str, str]:
    """The rendered environment, with the TLS mount path pointing at ``certs``."""
    env = rendered_env(box)
    mount = tls_mount(box)
    if mount is None:
        return env
    assert certs is not None, "the rendering mounts TLS files: pass certificates"
    return {k: v.replace(mount + "/", f"{certs}/") for k, v in env.items()}


def on_loopback(address: str, port: int) -> str:
    """``address`` (scheme://host:port) with its scheme kept and loopback:port."""
    scheme, _, _ = address.partition("://")
    return f"{scheme}://127.0.0.1:{port}"


def start_rendered_cluster(
    docs: list[dict[str, Any]], logs: Path, certs: Path | None = None
) -> LocalCluster:
    """The first DaskCluster's scheduler and one default worker as local processes."""
    cluster = next(d for d in docs if d["kind"] == "DaskCluster")
    scheduler_box = cluster["spec"]["scheduler"]["spec"]["containers"][0]
    worker_box = cluster["spec"]["worker"]["spec"]["containers"][0]
    base_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    base_env = {k: v for k, v in base_env.items() if not k.startswith("DASK_")}
    processes: list[subprocess.Popen] = []
    try:
        port, http_port = free_port(), free_port()
        args = replace_value(scheduler_box["args"], "--port", str(port))
        args = replace_value(args, "--dashboard-address", f"127.0.0.1:{http_port}")
        env = {**base_env, **local_env(scheduler_box, certs)}
        with open(logs / "scheduler.log", "wb") as log:
            processes.append(
                subprocess.Popen(
                    [*args, "--host", "127.0.0.1"], env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
        wait_for_port(port, process=processes[0])
        wait_for_port(http_port, process=processes[0])
        protocol = args[args.index("--protocol") + 1] if "--protocol" in args else "tcp"
        address = f"{protocol}://127.0.0.1:{port}"

        worker_http = free_port()
        scratch = logs / "scratch"
        scratch.mkdir()
        # What the operator adds to every worker container, each variable only
        # when the container does not set it (its address is always tcp://).
        operator = {
            "DASK_WORKER_NAME": "daskyard-default-default-worker-0",
            "DASK_SCHEDULER_ADDRESS": f"tcp://127.0.0.1:{port}",
        }
        rendered = local_env(worker_box, certs)
        if "DASK_SCHEDULER_ADDRESS" in rendered:
            rendered["DASK_SCHEDULER_ADDRESS"] = on_loopback(
                rendered["DASK_SCHEDULER_ADDRESS"], port
            )
        env = {**base_env, **operator, **rendered}
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
        return LocalCluster(
            address=address,
            http=f"http://127.0.0.1:{http_port}",
            worker_http=f"http://127.0.0.1:{worker_http}",
            worker_name=operator["DASK_WORKER_NAME"],
            memory_limit=int(args[args.index("--memory-limit") + 1]),
            nthreads=int(limits["cpu"]),
            processes=processes,
            certs=certs,
        )
    except BaseException:
        stop_processes(processes)
        raise


@pytest.fixture(scope="module")
def rendered_cluster(
    renderer: Renderer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    docs = renderer.render("helm3", "default").docs
    cluster = start_rendered_cluster(docs, tmp_path_factory.mktemp("rendered-processes"))
    yield cluster
    stop_processes(cluster.processes)


@pytest.fixture(scope="module")
def rendered_tls_cluster(
    renderer: Renderer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """The ci/tls-values.yaml cluster, with generated certificates where the Secret goes."""
    logs = tmp_path_factory.mktemp("rendered-tls-processes")
    certs = logs / "tls"
    make_certificates(certs)
    cluster = start_rendered_cluster(renderer.render("helm3", "tls").docs, logs, certs)
    yield cluster
    stop_processes(cluster.processes)


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


# ---------------------------------------------------------------- with tls.enabled


def test_tls_scheduler_and_worker_talk_tls_only(rendered_tls_cluster: LocalCluster) -> None:
    from distributed import Client
    from distributed.security import Security

    certs = rendered_tls_cluster.certs
    assert certs is not None and rendered_tls_cluster.address.startswith("tls://")
    security = Security(
        tls_ca_file=str(certs / "ca.crt"),
        tls_client_cert=str(certs / "tls.crt"),
        tls_client_key=str(certs / "tls.key"),
        require_encryption=True,
    )
    with Client(rendered_tls_cluster.address, security=security, timeout=30) as client:
        client.wait_for_workers(1, timeout=60)
        (address, worker) = next(iter(client.scheduler_info(n_workers=-1)["workers"].items()))
        assert client.submit(sum, [1, 2]).result(timeout=30) == 3
    # The worker dialled tls:// (the rendered address), not the operator's tcp://.
    assert address.startswith("tls://")
    assert worker["name"] == rendered_tls_cluster.worker_name


def test_tls_helm_test_pod_passes_as_rendered(
    renderer: Renderer, rendered_tls_cluster: LocalCluster
) -> None:
    """The helm test pod's own command and environment, against the TLS cluster."""
    pod = renderer.render("helm3", "tls").of_kind("Pod")[0]
    (box,) = pod["spec"]["containers"]
    port = rendered_tls_cluster.address.rsplit(":", 1)[1]
    scheduler = box["args"][box["args"].index("--scheduler") + 1]
    args = replace_value(box["args"], "--scheduler", on_loopback(scheduler, int(port)))
    args = replace_value(args, "--timeout", "30")
    daskyard = BIN / "daskyard"
    if not daskyard.exists():
        pytest.skip("the daskyard CLI is not installed in this environment")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env |= local_env(box, rendered_tls_cluster.certs)
    proc = subprocess.run(
        [str(daskyard), *args[1:]], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "autoscaler API: served" in proc.stdout + proc.stderr


def test_tls_cluster_refuses_a_plain_tcp_client(rendered_tls_cluster: LocalCluster) -> None:
    plain = rendered_tls_cluster.address.replace("tls://", "tcp://")
    result = run_cli("doctor", "--scheduler", plain, "--timeout", "3")
    assert result.returncode == 75, result.stderr
    assert "unreachable" in result.first_error_line


def test_tls_cluster_serves_the_autoscaler_api_over_plain_http(
    rendered_tls_cluster: LocalCluster,
) -> None:
    """The operator polls 8787 with plain HTTP, TLS or not."""
    status, body = http_get(rendered_tls_cluster.http + "/api/v1/adaptive_target")
    assert status == 200 and "workers" in json.loads(body)
    assert http_get(rendered_tls_cluster.worker_http + "/health") == (200, b"ok")
