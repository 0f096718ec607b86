"""Shared fixtures: real Dask processes, generated data, the daskyard CLI, moto S3."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from daskyard.checkpoints import MANIFEST_SUFFIX
from daskyard.cluster import SCHEDULER_HTTP_ROUTES

BIN = Path(sys.executable).parent
DASKYARD = str(BIN / "daskyard")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(
    port: int, timeout: float = 30.0, process: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode} before port {port} opened"
            )
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} did not open within {timeout}s")


def stop_processes(processes: Sequence[subprocess.Popen]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in processes:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def spawn(command: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start a process whose stderr goes to ``log`` (the child keeps its own handle)."""
    with open(log, "wb") as handle:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=handle)


@dataclass
class ProcessCluster:
    """A scheduler and workers started as real ``dask`` CLI processes on loopback."""

    address: str
    http_port: int
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: Path | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def start_process_cluster(
    log_dir: Path,
    n_workers: int = 2,
    memory_limit: str = "2GiB",
    routes: Sequence[str] = SCHEDULER_HTTP_ROUTES,
    worker_env: dict[str, str] | None = None,
    protocol: str = "tcp",
    extra_args: Sequence[str] = (),
    security: Any = None,
) -> ProcessCluster:
    """``extra_args`` go to the scheduler and every worker (e.g. TLS files); ``security``
    is what the readiness check's client needs to connect."""
    port, http_port = free_port(), free_port()
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES": json.dumps(list(routes))}
    log_dir.mkdir(parents=True, exist_ok=True)
    scheduler = spawn(
        [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            f"127.0.0.1:{http_port}",
            "--protocol",
            protocol,
            *extra_args,
        ],
        env,
        log_dir / "scheduler.log",
    )
    cluster = ProcessCluster(f"{protocol}://127.0.0.1:{port}", http_port, [scheduler], log_dir)
    try:
        wait_for_port(port, process=scheduler)
        for index in range(n_workers):
            cluster.processes.append(
                spawn(
                    [
                        str(BIN / "dask"),
                        "worker",
                        cluster.address,
                        "--nthreads",
                        "1",
                        "--memory-limit",
                        memory_limit,
                        "--name",
                        f"worker-{index}",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                        *extra_args,
                    ],
                    {**env, **(worker_env or {})},
                    log_dir / f"worker-{index}.log",
                )
            )
        from distributed import Client

        with Client(cluster.address, timeout=30, security=security) as client:
            client.wait_for_workers(n_workers, timeout=60)
    except BaseException:
        stop_processes(cluster.processes)
        raise
    return cluster


def add_gpu_worker(cluster: ProcessCluster, nthreads: int = 1) -> None:
    """A worker named gpu-0 declaring ``--resources GPU=1`` (as the chart's GPU worker
    group does), under a nanny; returns once the scheduler lists it."""
    assert cluster.logs is not None
    cluster.processes.append(
        spawn(
            [
                str(BIN / "dask"),
                *("worker", cluster.address, "--nthreads", str(nthreads)),
                *("--memory-limit", "2GiB", "--name", "gpu-0", "--no-dashboard"),
                *("--host", "127.0.0.1", "--resources", "GPU=1"),
            ],
            dict(os.environ),
            cluster.logs / "gpu-0.log",
        )
    )
    from distributed import Client

    with Client(cluster.address, timeout=30) as client:
        client.wait_for_workers(len(cluster.processes) - 1, timeout=60)


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    """One scheduler and two single-threaded workers, shared by the session's tests."""
    cluster = start_process_cluster(tmp_path_factory.mktemp("dask-cluster"))
    yield cluster
    stop_processes(cluster.processes)


# ---------------------------------------------------------------- data


def classification_frame(rows: int, features: int = 8, seed: int = 0) -> pd.DataFrame:
    """A learnable binary problem with a known signal (logistic in a few features)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    logits = 1.5 * x[:, 0] - 2.0 * x[:, 1] + x[:, 2] * x[:, 3] + 0.5 * np.sin(3 * x[:, 4])
    y = (rng.random(rows) < 1 / (1 + np.exp(-logits))).astype(np.int64)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(features)])
    frame["label"] = y
    return frame


def write_files(frame: pd.DataFrame, folder: Path, files: int = 4, fmt: str = "parquet") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, part in enumerate(np.array_split(np.arange(len(frame)), files)):
        chunk = frame.iloc[part]
        path = folder / f"part-{index:03d}.{fmt}"
        if fmt == "parquet":
            chunk.to_parquet(path, index=False)
        else:
            chunk.to_csv(path, index=False)
    return folder


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20k rows of Parquet in 4 files."""
    return write_files(classification_frame(20_000), tmp_path_factory.mktemp("small") / "train")


# ---------------------------------------------------------------- TLS


def make_certificates(folder: Path, issuer_name: str = "daskyard-test-ca") -> dict[str, Path]:
    """A CA and one certificate it signed, as a cert-manager Secret holds them:
    ``ca.crt``, ``tls.crt``, ``tls.key`` (PEM) in ``folder``. Returns their paths
    under the names of daskyard's ``cluster.tls`` (ca_file, cert, key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def write(stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> Path:
        (folder / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert_path = folder / f"{stem}.crt"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name(issuer_name))
        .issuer_name(name(issuer_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("dask"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    ca_path = write("ca", ca_key, ca)
    cert_path = write("tls", key, cert)
    return {"ca_file": ca_path, "cert": cert_path, "key": folder / "tls.key"}


# ---------------------------------------------------------------- CLI


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def first_error_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.startswith("daskyard")]
        return lines[0] if lines else ""


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
    full_env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    full_env.update(env or {})
    proc = subprocess.run(
        [DASKYARD, *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_trains_or_refuses(result: CliResult, out: Path, code: int, message: str) -> None:
    """A run either trained a sound model (``code`` 0) or gave its one line, exit
    ``code``, no traceback, and wrote nothing."""
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    if code == 0:
        scores = json.loads((out / "metrics.json").read_text())["validation"]
        assert scores.get("auc", scores.get("roc_auc")) > 0.7
        return
    assert result.stderr.startswith("daskyard: error:"), result.stderr
    assert message in result.first_error_line, result.stderr
    assert not (out / "manifest.json").exists()
    assert not list(out.glob("model.*"))


def kill_after_checkpoint(
    command: Sequence[str], checkpoints: Path, step_file: str, timeout: float = 120
) -> int:
    """Run ``command`` in its own process group and SIGKILL the whole group (embedded
    workers included, as when a pod dies) once ``step_file`` is a trusted checkpoint
    (its manifest written) under ``checkpoints``; return the newest trusted step."""
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    proc = subprocess.Popen(
        list(command),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    try:
        while not list(checkpoints.glob(f"*/{step_file}{MANIFEST_SUFFIX}")):
            assert proc.poll() is None, "training ended before it could be interrupted"
            assert time.monotonic() < deadline, f"no {step_file} within {timeout}s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return max(checkpoint_step(p) for p in checkpoints.glob(f"*/step-*{MANIFEST_SUFFIX}"))


def checkpoint_step(path: Path) -> int:
    """``step-000020.ubj`` (or its manifest) -> 20."""
    return int(path.name.split("-")[1].split(".")[0])


def write_config(path: Path, payload: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(payload, sort_keys=False))
    return path


# ---------------------------------------------------------------- S3


@dataclass
class S3Server:
    endpoint: str
    bucket: str

    @property
    def storage_options(self) -> dict:
        return {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server on loopback, with one bucket."""
    pytest.importorskip("s3fs")
    moto_server = shutil.which("moto_server", path=str(BIN))
    if moto_server is None:
        pytest.fail("moto_server is not installed: pip install 'daskyard[test]'")
    port = free_port()
    proc = subprocess.Popen(
        [moto_server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process=proc)
        server = S3Server(f"http://127.0.0.1:{port}", "daskyard-test")
        import boto3

        boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=server.bucket)
        yield server
    finally:
        stop_processes([proc])
