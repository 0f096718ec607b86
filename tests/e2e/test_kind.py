"""End to end on a real Kubernetes cluster (kind): install, train, autoscale, helm test.

Needs kind, kubectl, helm and Docker, and a network that reaches the chart
and image registries (the operator image, moto for object storage). The
machines daskyard is developed on cannot run Kubernetes, so here this suite
skips with that reason; ``.github/workflows/e2e-kind.yaml`` runs it, with
``DASKYARD_REQUIRE_KIND=1`` turning the skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import DASKYARD, classification_frame, free_port, write_files

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = os.environ.get("DASKYARD_KIND_CLUSTER", "daskyard-e2e")
NAMESPACE = "ml"
IMAGE = "daskyard/runtime:0.1.0"
MOTO_IMAGE = "motoserver/moto:5.1.4"
BUCKET = "daskyard-e2e"
TOOLS = ("kind", "kubectl", "helm", "docker")


def sh(*args: str, timeout: float = 600, check: bool = True, **kwargs) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def kubectl(*args: str, **kwargs) -> str:
    return sh("kubectl", "--context", f"kind-{CLUSTER}", "-n", NAMESPACE, *args, **kwargs)


def wait_until(what: str, check, timeout: float = 600, every: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="session")
def kind_cluster() -> Iterator[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        reason = (
            f"{', '.join(missing)} not on PATH: the kind suite needs a machine that can "
            "run Kubernetes in Docker (these CI machines cannot)"
        )
        if os.environ.get("DASKYARD_REQUIRE_KIND") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    existing = sh("kind", "get", "clusters").split()
    if CLUSTER not in existing:
        sh("kind", "create", "cluster", "--name", CLUSTER, "--wait", "120s", timeout=900)
    sh("kind", "load", "docker-image", IMAGE, "--name", CLUSTER, timeout=900)
    sh("kubectl", "--context", f"kind-{CLUSTER}", "create", "namespace", NAMESPACE, check=False)
    # The namespace enforces Pod Security Standards "restricted": every pod
    # the chart, the operator and the jobs create must pass.
    sh(
        "kubectl",
        "--context",
        f"kind-{CLUSTER}",
        "label",
        "--overwrite",
        "namespace",
        NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted",
    )
    yield CLUSTER
    if os.environ.get("DASKYARD_KEEP_KIND") != "1":
        sh("kind", "delete", "cluster", "--name", CLUSTER, check=False)


@pytest.fixture(scope="session")
def object_storage(kind_cluster: str) -> Iterator[str]:
    """moto's S3 server in the cluster (outside the restricted namespace), data uploaded."""
    manifest = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "storage"}},
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "s3", "namespace": "storage"},
                "spec": {
                    "selector": {"matchLabels": {"app": "s3"}},
                    "template": {
                        "metadata": {"labels": {"app": "s3"}},
                        "spec": {
                            "containers": [
                                {
                                    "name": "moto",
                                    "image": MOTO_IMAGE,
                                    "ports": [{"containerPort": 5000}],
                                }
                            ]
                        },
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "s3", "namespace": "storage"},
                "spec": {"selector": {"app": "s3"}, "ports": [{"port": 5000}]},
            },
        ],
    }
    sh(
        "kubectl",
        "--context",
        f"kind-{kind_cluster}",
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(manifest),
    )
    sh(
        "kubectl",
        "--context",
        f"kind-{kind_cluster}",
        "-n",
        "storage",
        "rollout",
        "status",
        "deployment/s3",
        "--timeout=300s",
    )
    port = free_port()
    forward = subprocess.Popen(
        [
            "kubectl",
            "--context",
            f"kind-{kind_cluster}",
            "-n",
            "storage",
            "port-forward",
            "svc/s3",
            f"{port}:5000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)
        import s3fs

        fs = s3fs.S3FileSystem(
            key="testing",
            secret="testing",
            client_kwargs={"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"},
        )
        fs.mkdir(BUCKET)
        local = write_files(
            classification_frame(200_000),
            Path(os.environ.get("RUNNER_TEMP", "/tmp")) / "daskyard-e2e-data",
            files=8,
        )
        fs.put(str(local) + "/", f"{BUCKET}/train/", recursive=True)
        yield f"http://127.0.0.1:{port}"
    finally:
        forward.terminate()


@pytest.fixture(scope="session")
def installed(kind_cluster: str, object_storage: str) -> str:
    chart = ROOT / "charts" / "daskyard"
    sh("helm", "dependency", "build", str(chart), timeout=300)
    kubectl(
        "create",
        "secret",
        "generic",
        "daskyard-object-storage",
        "--from-literal=AWS_ACCESS_KEY_ID=testing",
        "--from-literal=AWS_SECRET_ACCESS_KEY=testing",
        "--from-literal=AWS_ENDPOINT_URL=http://s3.storage.svc.cluster.local:5000",
        "--from-literal=AWS_DEFAULT_REGION=us-east-1",
        check=False,
    )
    sh(
        "helm",
        "upgrade",
        "--install",
        "daskyard",
        str(chart),
        "--kube-context",
        f"kind-{kind_cluster}",
        "-n",
        NAMESPACE,
        "--wait",
        "--timeout",
        "10m",
        "--set",
        "clusterDefaults.autoscaler.minimum=1",
        "--set",
        "clusterDefaults.autoscaler.maximum=4",
        "--set",
        "networkPolicy.enabled=false",  # kind's default CNI enforces none anyway
        # Small workers, so that four fit on a CI runner's kind node.
        "--set",
        "clusterDefaults.worker.resources.requests.cpu=500m",
        "--set",
        "clusterDefaults.worker.resources.limits.cpu=1",
        "--set",
        "clusterDefaults.worker.resources.requests.memory=1Gi",
        "--set",
        "clusterDefaults.worker.resources.limits.memory=1Gi",
        timeout=900,
    )
    wait_until(
        "the scheduler pod",
        lambda: (
            "Running"
            in kubectl(
                "get",
                "pods",
                "-l",
                "dask.org/component=scheduler",
                "-o",
                "jsonpath={.items[*].status.phase}",
                check=False,
            )
        ),
    )
    return "daskyard"


def e2e_config(kind: str) -> str:
    config = yaml.safe_load((ROOT / "jobs" / kind / "config.yaml").read_text())
    config["data"] = {"train": f"s3://{BUCKET}/train/", "target": "label"}
    config["output"] = f"s3://{BUCKET}/runs/{kind}/"
    return yaml.safe_dump(config)


def submit(kind: str, tmp_path: Path) -> str:
    """`daskyard render job ... | kubectl apply -f -`; returns the Job's name."""
    config = tmp_path / f"{kind}.yaml"
    config.write_text(e2e_config(kind))
    manifests = sh(
        DASKYARD,
        "render",
        "job",
        kind,
        "--config",
        str(config),
        "--namespace",
        NAMESPACE,
        "--image",
        IMAGE,
    )
    sh("kubectl", "--context", f"kind-{CLUSTER}", "apply", "-f", "-", input=manifests)
    return next(d for d in yaml.safe_load_all(manifests) if d["kind"] == "Job")["metadata"]["name"]


def run_job(kind: str, tmp_path: Path) -> str:
    name = submit(kind, tmp_path)
    kubectl("wait", f"job/{name}", "--for=condition=Complete", "--timeout=900s", timeout=960)
    return kubectl("logs", f"job/{name}")


def test_xgboost_job_completes_with_artifacts(installed, tmp_path):
    logs = run_job("xgboost", tmp_path)
    assert "validation auc" in logs


def test_incremental_job_completes_with_artifacts(installed, tmp_path):
    logs = run_job("incremental", tmp_path)
    assert "validation accuracy" in logs


def test_search_grows_the_cluster_and_it_shrinks_after(installed, tmp_path):
    def workers() -> int:
        out = kubectl("get", "pods", "-l", "dask.org/component=worker", "-o", "json")
        return sum(p["status"].get("phase") == "Running" for p in json.loads(out)["items"])

    before = workers()
    peak = before
    name = submit("search", tmp_path)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        peak = max(peak, workers())
        status = json.loads(kubectl("get", f"job/{name}", "-o", "json"))["status"]
        if status.get("succeeded"):
            break
        time.sleep(5)
    assert peak > before, f"workers stayed at {before} under the search"
    wait_until("scale-down after the search", lambda: workers() <= before, timeout=900)


def test_helm_test_runs_doctor(installed):
    out = sh(
        "helm",
        "test",
        "daskyard",
        "--kube-context",
        f"kind-{CLUSTER}",
        "-n",
        NAMESPACE,
        "--logs",
        timeout=600,
    )
    assert "autoscaler API: served" in out
