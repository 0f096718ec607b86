"""Mutual TLS: scheduler and workers require certificates signed by the cluster's CA."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from collections.abc import Iterator

import pytest
from distributed import Client
from distributed.security import Security

from tests.conftest import (
    BIN,
    ProcessCluster,
    make_certificates,
    run_cli,
    start_process_cluster,
    stop_processes,
    write_config,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory) -> Iterator[ProcessCluster]:
    folder = tmp_path_factory.mktemp("tls")
    certs = make_certificates(folder)
    tls_args = [
        "--tls-ca-file",
        str(certs["ca_file"]),
        "--tls-cert",
        str(certs["cert"]),
        "--tls-key",
        str(certs["key"]),
    ]
    security = Security(
        tls_ca_file=str(certs["ca_file"]),
        tls_client_cert=str(certs["cert"]),
        tls_client_key=str(certs["key"]),
        require_encryption=True,
    )
    cluster = start_process_cluster(
        folder, n_workers=2, protocol="tls", extra_args=tls_args, security=security
    )
    cluster.certs = certs  # type: ignore[attr-defined]
    yield cluster
    stop_processes(cluster.processes)


def test_plain_tcp_client_is_refused(tls_cluster):
    plain = tls_cluster.address.replace("tls://", "tcp://")
    result = run_cli("doctor", "--scheduler", plain, "--timeout", "3")
    assert result.returncode == 75
    assert "unreachable" in result.first_error_line


def test_client_without_a_certificate_is_refused(tls_cluster):
    """A TLS client that trusts the CA but shows no certificate: the scheduler hangs up."""
    host, port = tls_cluster.address.removeprefix("tls://").split(":")
    context = ssl.create_default_context(cafile=str(tls_cluster.certs["ca_file"]))
    context.check_hostname = False
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        try:
            with context.wrap_socket(raw) as channel:
                channel.sendall(b"\0")
                answer = channel.recv(1)
        except (ssl.SSLError, ConnectionError):
            answer = None  # refused during or right after the handshake
    assert not answer


def test_tls_address_without_certificates_is_a_config_error(tls_cluster):
    result = run_cli("doctor", "--scheduler", tls_cluster.address, "--timeout", "3")
    assert result.returncode == 2
    assert "uses TLS but no certificates are configured" in result.first_error_line


def test_client_with_another_ca_is_refused(tls_cluster, tmp_path):
    rogue = make_certificates(tmp_path, issuer_name="someone-else")
    security = Security(
        tls_ca_file=str(rogue["ca_file"]),
        tls_client_cert=str(rogue["cert"]),
        tls_client_key=str(rogue["key"]),
        require_encryption=True,
    )
    with pytest.raises((OSError, TimeoutError)):
        Client(tls_cluster.address, security=security, timeout=3)


def test_training_over_tls_succeeds(tls_cluster, small_dataset, tmp_path):
    certs = {k: str(v) for k, v in tls_cluster.certs.items()}
    config = write_config(
        tmp_path / "job.yaml",
        {
            "data": {"train": str(small_dataset), "target": "label"},
            "output": str(tmp_path / "o"),
            "cluster": {"scheduler": tls_cluster.address, "tls": certs},
            "xgboost": {"rounds": 10, "params": {"objective": "binary:logistic"}},
        },
    )
    result = run_cli("train", "xgboost", "--config", str(config))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["validation"]["auc"] > 0.8


def test_missing_certificate_file_is_a_config_error(tls_cluster, tmp_path):
    certs = {k: str(v) for k, v in tls_cluster.certs.items()} | {"key": str(tmp_path / "no.key")}
    config = write_config(
        tmp_path / "job.yaml",
        {
            "data": {"train": "x", "target": "label"},
            "output": str(tmp_path / "o"),
            "cluster": {"scheduler": tls_cluster.address, "tls": certs},
        },
    )
    result = run_cli("train", "xgboost", "--config", str(config))
    assert result.returncode == 2
    assert "cluster.tls.key" in result.first_error_line


def test_tls_flags_reach_a_real_process():
    # The scheduler's own CLI must accept what the chart will pass it.
    proc = subprocess.run(
        [str(BIN / "dask"), "scheduler", "--help"], capture_output=True, text=True
    )
    assert "--tls-ca-file" in proc.stdout and "--protocol" in proc.stdout
