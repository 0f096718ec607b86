"""checkov (kubernetes framework) finds nothing in what we ship.

Two scans, run side by side: the chart as rendered for every scenario, and
the kubectl path (operator-configs/ plus every jobs/ overlay, each also with
its TLS component), which is applied together into one namespace. Skips:
tests/charts/checkov.yaml (global, with reasons), checkov.io/skipN annotations
on our own resources, and OPERATOR_ALLOWED below for the upstream operator
subchart.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.charts.conftest import (
    HERE,
    OPERATOR_CONFIG_FILES,
    OPERATOR_CONFIGS,
    OVERLAYS,
    SCENARIOS,
    TLS_VARIANTS,
    Renderer,
    _kustomize,
    _kustomize_tls,
    require_tool,
)

# Findings on the upstream dask-kubernetes-operator Deployment that its chart
# offers no value to change: (check, kind, name) -> why it is acceptable.
OPERATOR_ALLOWED = {
    ("CKV_K8S_38", "Deployment", "daskyard-operator"): (
        "the operator is a Kubernetes controller: it needs its service account token"
    ),
    ("CKV_K8S_40", "Deployment", "daskyard-operator"): (
        "the upstream image's only user is uid 1000 (non-root, but below 10000)"
    ),
    ("CKV_K8S_9", "Deployment", "daskyard-operator"): (
        "the operator serves no traffic; the upstream chart has a liveness probe only"
    ),
}


# No update check against PyPI, no policy-metadata download: the scan stays offline.
OFFLINE_ENV = {**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}


def scan(directory: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            require_tool("checkov"),
            "--directory",
            str(directory),
            "--config-file",
            str(HERE / "checkov.yaml"),
            "--output",
            "json",
            "--quiet",
            "--compact",
            "--skip-download",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=OFFLINE_ENV,
    )


def report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=300)
    assert out.strip(), f"checkov printed nothing (exit {proc.returncode}): {err[-2000:]}"
    data = json.loads(out)
    reports = data if isinstance(data, list) else [data]
    assert [r["check_type"] for r in reports] == ["kubernetes"], reports
    return reports[0]


@pytest.fixture(scope="session")
def checkov_reports(
    renderer: Renderer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    chart_dir = tmp_path_factory.mktemp("checkov-chart")
    for scenario in SCENARIOS:
        (chart_dir / f"{scenario}.yaml").write_text(renderer.render("helm3", scenario).text)
    kubectl_dir = tmp_path_factory.mktemp("checkov-kubectl")
    for name in OPERATOR_CONFIG_FILES:
        (kubectl_dir / f"operator-configs-{name}").write_text((OPERATOR_CONFIGS / name).read_text())
    for overlay in OVERLAYS:
        (kubectl_dir / f"jobs-{overlay}.yaml").write_text(
            _kustomize(require_tool("kubectl"), overlay)
        )
    for variant in TLS_VARIANTS:
        (kubectl_dir / f"{variant.replace('/', '-')}-tls.yaml").write_text(
            _kustomize_tls(require_tool("kubectl"), variant)
        )
    scans = {"chart": scan(chart_dir), "kubectl": scan(kubectl_dir)}
    return {name: report(proc) for name, proc in scans.items()}


def failures(result: dict[str, Any]) -> list[str]:
    found = []
    for check in result["results"]["failed_checks"]:
        kind, _namespace, name = [*check["resource"].split("."), "", ""][:3]
        if (check["check_id"], kind, name) in OPERATOR_ALLOWED:
            continue
        found.append(f"{check['check_id']} {check['check_name']}: {check['resource']}")
    return sorted(set(found))


@pytest.mark.parametrize("name", ["chart", "kubectl"])
def test_checkov_finds_nothing(checkov_reports: dict[str, dict[str, Any]], name: str) -> None:
    result = checkov_reports[name]
    summary = result["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 100 and summary["resource_count"] > 10, summary
    assert failures(result) == []


def test_allowed_operator_findings_still_exist(checkov_reports: dict[str, dict[str, Any]]) -> None:
    # An allow-list entry that no longer matches anything should be deleted.
    seen = {
        (c["check_id"], *c["resource"].split(".")[::2])
        for c in checkov_reports["chart"]["results"]["failed_checks"]
    }
    assert set(OPERATOR_ALLOWED) <= seen


def test_checkov_would_catch_a_privileged_pod(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: ml}\n"
        "spec:\n  containers:\n    - name: c\n      image: busybox:1.36\n"
        "      securityContext: {privileged: true}\n"
    )
    ids = {c["check_id"] for c in report(scan(tmp_path))["results"]["failed_checks"]}
    assert "CKV_K8S_16" in ids  # "Container should not be privileged"
