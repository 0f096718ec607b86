"""Every pod we ship passes Pod Security Standards "restricted", read-only, with limits."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.charts.conftest import (
    OPERATOR_CONFIG_FILES,
    OVERLAYS,
    SCENARIOS,
    TLS_VARIANTS,
    Renderer,
    kustomize,
    kustomize_tls,
    operator_config_docs,
)
from tests.charts.pss import (
    hardening_violations,
    pod_problems,
    pod_templates,
    restricted_violations,
)


def templates_of(docs: list[dict[str, Any]]) -> list:
    return [template for doc in docs for template in pod_templates(doc)]


def problems_of(docs: list[dict[str, Any]]) -> list[str]:
    return [f"{t.where}: {p}" for t in templates_of(docs) for p in pod_problems(t)]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_pods_are_restricted(renderer: Renderer, scenario: str) -> None:
    docs = renderer.render("helm3", scenario).docs
    kinds = {t.kind for t in templates_of(docs)}
    # Scheduler and workers (DaskCluster) and the helm test pod, at least.
    assert {"DaskCluster", "Pod"} <= kinds
    assert problems_of(docs) == []


def test_chart_operator_pod_is_restricted(renderer: Renderer) -> None:
    docs = renderer.render("helm3", "default").operator_docs()
    assert [t.kind for t in templates_of(docs)] == ["Deployment"]
    assert problems_of(docs) == []


@pytest.mark.parametrize("name", OPERATOR_CONFIG_FILES)
def test_operator_config_pods_are_restricted(name: str) -> None:
    assert problems_of(operator_config_docs(name)) == []


def test_operator_configs_hold_pods() -> None:
    kinds = [
        t.kind for name in OPERATOR_CONFIG_FILES for t in templates_of(operator_config_docs(name))
    ]
    assert sorted(kinds) == sorted(["DaskCluster"] * 2 + ["DaskWorkerGroup"] + ["DaskJob"] * 3)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_job_pods_are_restricted(overlay: str) -> None:
    docs = kustomize(overlay)
    assert [t.kind for t in templates_of(docs)] == ["Job"]
    assert problems_of(docs) == []


@pytest.mark.parametrize("variant", TLS_VARIANTS)
def test_tls_component_pods_are_restricted(variant: str) -> None:
    docs = kustomize_tls(variant)
    assert templates_of(docs)
    assert problems_of(docs) == []


# ---------------------------------------------------------------- the checker itself

GOOD_POD: dict[str, Any] = {
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "containers": [
        {
            "name": "main",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "resources": {
                "requests": {"cpu": "1", "memory": "1Gi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
            },
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }
    ],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}


def broken(change: str) -> dict[str, Any]:
    pod = copy.deepcopy(GOOD_POD)
    box = pod["containers"][0]
    ctx = box["securityContext"]
    match change:
        case "host network":
            pod["hostNetwork"] = True
        case "host path":
            pod["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run"}})
        case "root user":
            ctx["runAsUser"] = 0
        case "root allowed":
            ctx["runAsNonRoot"] = False
        case "privileged":
            ctx["privileged"] = True
        case "escalation":
            del ctx["allowPrivilegeEscalation"]
        case "capability":
            ctx["capabilities"]["add"] = ["SYS_ADMIN"]
        case "no drop":
            ctx["capabilities"] = {}
        case "unconfined":
            ctx["seccompProfile"] = {"type": "Unconfined"}
        case "host port":
            box["ports"] = [{"containerPort": 80, "hostPort": 80}]
        case "unsafe sysctl":
            pod["securityContext"]["sysctls"] = [{"name": "kernel.msgmax", "value": "1"}]
        case "init container":
            pod["initContainers"] = [{"name": "init", "securityContext": {}}]
    return pod


@pytest.mark.parametrize(
    ("change", "finding"),
    [
        ("host network", "hostNetwork"),
        ("host path", "hostPath"),
        ("root user", "runAsUser"),
        ("root allowed", "runAsNonRoot"),
        ("privileged", "privileged"),
        ("escalation", "allowPrivilegeEscalation"),
        ("capability", "SYS_ADMIN"),
        ("no drop", "drop must include ALL"),
        ("unconfined", "seccompProfile"),
        ("host port", "hostPort"),
        ("unsafe sysctl", "kernel.msgmax"),
        ("init container", "init container 'init'"),
    ],
)
def test_checker_finds_restricted_violations(change: str, finding: str) -> None:
    assert restricted_violations(GOOD_POD) == []
    problems = restricted_violations(broken(change))
    assert any(finding in p for p in problems), problems


def test_checker_allows_net_bind_service_only() -> None:
    pod = copy.deepcopy(GOOD_POD)
    pod["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    assert restricted_violations(pod) == []


def test_checker_finds_writable_root_missing_tmp_and_limits() -> None:
    assert hardening_violations(GOOD_POD) == []
    pod = copy.deepcopy(GOOD_POD)
    box = pod["containers"][0]
    box["securityContext"]["readOnlyRootFilesystem"] = False
    box["volumeMounts"] = []
    del box["resources"]["limits"]["memory"]
    problems = hardening_violations(pod)
    assert any("readOnlyRootFilesystem" in p for p in problems)
    assert any("/tmp" in p for p in problems)
    assert any("limits.memory" in p for p in problems)
