"""The runtime image, run the way the chart and the jobs run it.

Scheduler, workers and jobs start from ``daskyard/runtime:dev`` with exactly
the command, arguments and environment that ``helm template`` and
``kubectl kustomize jobs/...`` produce; only what ties them to a pod changes
(addresses to loopback on free ports, the operator's injected variables).
Every container runs as UID 10001 with a read-only root filesystem.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.charts.conftest import Renderer, kustomize
from tests.charts.rendered import expand, rendered_env, replace_value
from tests.conftest import classification_frame, free_port, wait_for_port, write_files

# A cold build (base image and every pinned wheel) runs inside the first test.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "daskyard/runtime:dev"
GPU_IMAGE = "daskyard/runtime-gpu:dev"
USER = "10001:10001"


def docker_ready() -> str | None:
    """None when Docker answers, else why not."""
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        return f"docker is not usable: {exc}"
    return None if proc.returncode == 0 else "no Docker daemon answers (docker info failed)"


def build_images() -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "scripts/build_images.sh", "--gpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=2000,
    )


@pytest.fixture(scope="session")
def image() -> str:
    """Both images, built from this tree; an image already built from it is reused."""
    problem = docker_ready()
    if problem:
        if os.environ.get("DASKYARD_REQUIRE_DOCKER") == "1":
            pytest.fail(f"DASKYARD_REQUIRE_DOCKER=1 but {problem}: run scripts/start_dockerd.sh")
        pytest.skip(f"{problem}; set DASKYARD_REQUIRE_DOCKER=1 to make this a failure")
    build = build_images()
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return IMAGE


def docker_memory(quantity: str) -> str:
    """A Kubernetes memory quantity (2Gi, 512Mi) as docker's --memory (binary units)."""
    for suffix, unit in (("Ki", "k"), ("Mi", "m"), ("Gi", "g")):
        if quantity.endswith(suffix):
            return quantity[: -len(suffix)] + unit
    return quantity


@dataclass
class Containers:
    """Starts containers (non-root, read-only root, host network) and removes them all."""

    image: str
    names: list[str] = field(default_factory=list)

    def command(
        self,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        volumes: dict[str, str] | None = None,
        tmpfs: tuple[str, ...] = (),
        memory: str | None = None,
        workdir: str | None = None,
        detach: bool = False,
    ) -> list[str]:
        name = f"daskyard-test-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        command = [
            "docker",
            "run",
            "--name",
            name,
            "--network",
            "host",
            "--read-only",
            "--tmpfs",
            "/tmp:rw,exec",
            "--user",
            USER,
            "--detach" if detach else "--rm",
        ]
        for path in tmpfs:
            command += ["--tmpfs", f"{path}:rw,uid=10001,gid=10001"]
        for key, value in (env or {}).items():
            command += ["-e", f"{key}={value}"]
        for host, target in (volumes or {}).items():
            command += ["-v", f"{host}:{target}"]
        if memory:
            command += ["--memory", docker_memory(memory)]
        if workdir:
            command += ["--workdir", workdir]
        return [*command, self.image, *args]

    def run(self, args: list[str], timeout: float = 300, **options) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(args, **options), capture_output=True, text=True, timeout=timeout
        )

    def start(self, args: list[str], **options) -> str:
        proc = subprocess.run(
            self.command(args, detach=True, **options), capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        return self.names[-1]

    def logs(self, name: str) -> str:
        proc = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        return proc.stdout + proc.stderr

    def remove_all(self) -> None:
        if self.names:
            subprocess.run(["docker", "rm", "-f", *self.names], capture_output=True)


@pytest.fixture(scope="module")
def containers(image: str) -> Iterator[Containers]:
    box = Containers(image)
    yield box
    box.remove_all()


def test_an_unchanged_tree_is_not_rebuilt(image):
    started = time.monotonic()
    again = build_images()
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "daskyard/runtime:dev is up to date" in again.stdout
    assert "daskyard/runtime-gpu:dev is up to date" in again.stdout
    assert time.monotonic() - started < 60


def test_image_runs_non_root_under_tini_without_compilers(containers):
    proc = containers.run(
        [
            "sh",
            "-c",
            "id -u; id -g; cat /proc/1/comm; "
            "command -v gcc cc c++ clang || echo no-compiler; touch /x || true",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    uid, gid, pid1, compilers = proc.stdout.split("\n")[:4]
    assert (uid, gid, pid1, compilers) == ("10001", "10001", "tini", "no-compiler")
    assert "Read-only file system" in proc.stderr


def test_versions_in_the_image_are_the_pins(containers):
    pins = {}
    for line in (ROOT / "requirements" / "runtime.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.split("[")[0]] = version
    script = (
        "import json, importlib.metadata as m; "
        f"print(json.dumps({{n: m.version(n) for n in {sorted(pins)!r}}}))"
    )
    proc = containers.run(["python", "-c", script])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == pins


def test_image_carries_the_package_of_this_tree(containers):
    script = (
        "import hashlib, json, pathlib, daskyard; "
        "root = pathlib.Path(daskyard.__file__).parent; "
        "print(json.dumps({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() "
        "for p in root.rglob('*') if p.is_file() and p.suffix in ('.py', '.yaml')}))"
    )
    proc = containers.run(["python", "-c", script])
    assert proc.returncode == 0, proc.stderr
    source = ROOT / "src" / "daskyard"
    expected = {
        str(p.relative_to(source)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in source.rglob("*")
        if p.is_file() and p.suffix in (".py", ".yaml")
    }
    assert json.loads(proc.stdout) == expected


def test_gpu_image_runs_the_same_python_and_pins_with_cuda_xgboost(image, containers):
    names = ["dask", "distributed", "xgboost", "scikit-learn", "numpy", "pandas", "daskyard"]
    script = (
        "import json, sys, importlib.metadata as m, xgboost; "
        "from xgboost.collective import _find_nccl; "
        "print(json.dumps({'python': sys.version, 'cuda': xgboost.build_info()['USE_CUDA'], "
        f"'nccl': bool(_find_nccl()), **{{n: m.version(n) for n in {names!r}}}}}))"
    )
    cpu = containers.run(["python", "-c", script])
    gpu = Containers(GPU_IMAGE)
    try:
        proc = gpu.run(["python", "-c", script])
        env = gpu.run(["sh", "-c", "id -u; cat /proc/1/comm; echo $NVIDIA_DRIVER_CAPABILITIES"])
    finally:
        gpu.remove_all()
    assert cpu.returncode == 0 and proc.returncode == 0, cpu.stderr + proc.stderr
    # The CPU image keeps NCCL too: the chart's GPU worker groups run it today.
    assert json.loads(proc.stdout) == json.loads(cpu.stdout)
    assert json.loads(proc.stdout)["cuda"] and json.loads(proc.stdout)["nccl"]
    assert env.stdout.split() == ["10001", "tini", "compute,utility"]


def test_demo_runs_in_a_read_only_container(containers):
    proc = containers.run(["daskyard", "demo"], workdir="/tmp", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "demo finished" in proc.stdout + proc.stderr


@dataclass
class ContainerCluster:
    address: str
    http: str
    names: list[str]
    memory_limit: int


def rendered_cluster_spec(renderer: Renderer) -> tuple[dict, dict]:
    docs = renderer.render("helm3", "default").docs
    cluster = next(d for d in docs if d["kind"] == "DaskCluster")
    return (
        cluster["spec"]["scheduler"]["spec"]["containers"][0],
        cluster["spec"]["worker"]["spec"]["containers"][0],
    )


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What object storage is in a cluster: a folder that workers and jobs all mount."""
    folder = tmp_path_factory.mktemp("shared")
    os.chmod(folder, 0o777)  # the containers' user 10001 writes here
    write_files(classification_frame(20_000), folder / "train", files=4)
    return folder


@pytest.fixture(scope="module")
def cluster(containers: Containers, renderer: Renderer, shared: Path) -> ContainerCluster:
    scheduler_box, worker_box = rendered_cluster_spec(renderer)
    port, http_port = free_port(), free_port()
    args = replace_value(scheduler_box["args"], "--port", str(port))
    args = replace_value(args, "--dashboard-address", f"127.0.0.1:{http_port}")
    scheduler = containers.start(
        [*args, "--host", "127.0.0.1"],
        env=rendered_env(scheduler_box),
        memory=scheduler_box["resources"]["limits"]["memory"],
    )
    wait_for_port(http_port, timeout=60)
    address = f"tcp://127.0.0.1:{port}"
    names = [scheduler]
    for index in range(2):
        injected = {
            "DASK_WORKER_NAME": f"daskyard-default-default-worker-{index}",
            "DASK_SCHEDULER_ADDRESS": address,
        }
        env = {**rendered_env(worker_box), **injected}
        worker_args = replace_value(
            worker_box["args"], "--dashboard-address", f"127.0.0.1:{free_port()}"
        )
        scratch = worker_args[worker_args.index("--local-directory") + 1]
        names.append(
            containers.start(
                [*expand(worker_args, env), "--host", "127.0.0.1"],
                env=env,
                tmpfs=(scratch,),
                volumes={str(shared): "/work"},
                memory=worker_box["resources"]["limits"]["memory"],
            )
        )
    deadline = time.monotonic() + 90
    while len(adaptive_workers(f"http://127.0.0.1:{http_port}")) < 2:
        assert time.monotonic() < deadline, "\n".join(containers.logs(n) for n in names)
        time.sleep(1)
    limit = int(worker_args[worker_args.index("--memory-limit") + 1])
    return ContainerCluster(address, f"http://127.0.0.1:{http_port}", names, limit)


def adaptive_workers(http: str) -> dict:
    with urllib.request.urlopen(f"{http}/json/identity.json", timeout=10) as response:
        return json.loads(response.read()).get("workers", {})


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def test_scheduler_serves_the_autoscaler_api_and_metrics(cluster):
    status, body = http_get(f"{cluster.http}/api/v1/adaptive_target")
    assert status == 200 and "workers" in json.loads(body)
    status, body = http_get(f"{cluster.http}/metrics")
    assert status == 200 and "dask_scheduler_workers" in body


def test_workers_join_with_the_rendered_memory_limit(cluster):
    workers = adaptive_workers(cluster.http)
    assert len(workers) == 2
    assert {w["memory_limit"] for w in workers.values()} == {cluster.memory_limit}


def test_doctor_in_a_container_reports_lockstep_versions(containers, cluster):
    proc = containers.run(["daskyard", "doctor", "--scheduler", cluster.address])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "autoscaler API: served" in proc.stdout
    assert "mismatch" not in proc.stdout
    assert "workers: 2" in proc.stdout


JOB_CONFIGS = {
    "xgboost": {
        "data": {"train": "/work/train", "target": "label"},
        "output": "/work/runs/xgboost",
        "xgboost": {"rounds": 20, "params": {"objective": "binary:logistic"}},
    },
    "incremental": {
        "data": {"train": "/work/train", "target": "label"},
        "output": "/work/runs/incremental",
        "incremental": {
            "estimator": "sklearn.linear_model.SGDClassifier",
            "params": {"loss": "log_loss"},
            "epochs": 2,
        },
    },
}


@pytest.mark.parametrize("kind", list(JOB_CONFIGS))
def test_job_from_the_kustomize_overlay_trains_against_the_containers(
    kind, containers, cluster, shared, tmp_path
):
    job = next(d for d in kustomize(kind) if d["kind"] == "Job")
    box = job["spec"]["template"]["spec"]["containers"][0]
    mount = next(m for m in box["volumeMounts"] if m["name"] == "config")["mountPath"]
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "config.yaml").write_text(yaml.safe_dump(JOB_CONFIGS[kind]))
    os.chmod(config_dir, 0o755)
    env = {**rendered_env(box), "DASK_SCHEDULER_ADDRESS": cluster.address}
    proc = containers.run(
        box["args"],
        env=env,
        timeout=600,
        volumes={str(config_dir): f"{mount}:ro", str(shared): "/work"},
        memory=box["resources"]["limits"]["memory"],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = shared / "runs" / kind
    model = "model.ubj" if kind == "xgboost" else "model.skops"
    assert (output / model).stat().st_size > 0
    metrics = json.loads((output / "metrics.json").read_text())["validation"]
    # Classes are balanced (chance is 0.5); a linear model reaches about 0.72 here.
    score = metrics["auc"] if kind == "xgboost" else metrics["accuracy"]
    assert score > (0.8 if kind == "xgboost" else 0.65), metrics
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["training"]["workers"] == 2
