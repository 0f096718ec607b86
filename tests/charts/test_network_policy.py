"""NetworkPolicies let in exactly the Dask traffic: evaluated like the API server would.

A small evaluator applies NetworkPolicy ingress semantics (a pod selected by
any policy accepts only what some rule of those policies allows; peers
combine namespaceSelector and podSelector; no ``ports`` means every port) to
pods labelled the way the operator labels them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.charts.conftest import NAMESPACE, RELEASE, Renderer, operator_config_docs

CLUSTER = f"{RELEASE}-default"


@dataclass(frozen=True)
class Pod:
    labels: dict[str, str]
    namespace: str = NAMESPACE
    namespace_labels: dict[str, str] = field(default_factory=dict)

    @property
    def ns_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """LabelSelector semantics; {} matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values")
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def peer_allows(peer: dict[str, Any], policy_ns: str, source: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # pods are not addressed by CIDR here
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], source.ns_labels):
            return False
    elif source.namespace != policy_ns:
        return False
    return "podSelector" not in peer or matches(peer["podSelector"], source.labels)


def _covers(rule_port: dict[str, Any], port: int) -> bool:
    """A rule's port: any (no port), one port, or ``port``..``endPort``."""
    first = rule_port.get("port")
    if first is None:
        return True
    return first <= port <= rule_port.get("endPort", first)


def allowed(policies: list[dict[str, Any]], target: Pod, source: Pod, port: int) -> bool:
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace", NAMESPACE) == target.namespace
        and matches(p["spec"]["podSelector"], target.labels)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    for policy in selecting:
        ns = policy["metadata"].get("namespace", NAMESPACE)
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            if peers is not None and not any(peer_allows(p, ns, source) for p in peers):
                continue
            ports = rule.get("ports")
            if ports is None or any(_covers(p, port) for p in ports):
                return True
    return False


def dask_pod(component: str, cluster: str = CLUSTER, **extra: str) -> Pod:
    return Pod({"dask.org/cluster-name": cluster, "dask.org/component": component, **extra})


SCHEDULER = dask_pod("scheduler", **{"app.kubernetes.io/instance": RELEASE})
WORKER = dask_pod("worker", **{"app.kubernetes.io/instance": RELEASE})
GPU_WORKER = dask_pod("worker", **{"dask.org/workergroup-name": f"{CLUSTER}-gpu"})
OTHER_CLUSTER_WORKER = dask_pod("worker", cluster="someone-else")
JOB = Pod(
    {
        "app.kubernetes.io/part-of": "daskyard",
        "app.kubernetes.io/component": "job",
        "daskyard.io/cluster": CLUSTER,
    }
)
UNLABELLED = Pod({"app": "notebook"})
BUNDLED_OPERATOR = Pod(
    {"app.kubernetes.io/name": "operator", "app.kubernetes.io/instance": RELEASE}
)
EXTERNAL_OPERATOR = Pod(
    {"app.kubernetes.io/name": "dask-kubernetes-operator"}, namespace="dask-operator"
)
PROMETHEUS = Pod({"app.kubernetes.io/name": "prometheus"}, namespace="monitoring")
OTHER_NAMESPACE_JOB = Pod(JOB.labels, namespace="elsewhere")


def policies_of(renderer: Renderer, scenario: str) -> list[dict[str, Any]]:
    return renderer.render("helm3", scenario).of_kind("NetworkPolicy")


# (source, port, allowed?) towards the scheduler; 8786 comm, 8787 HTTP, 8788 tracker.
SCHEDULER_MATRIX = [
    (WORKER, 8786, True),
    (WORKER, 8788, True),
    (WORKER, 8803, True),  # the last of the trackers' ports
    (WORKER, 8804, False),
    (GPU_WORKER, 8788, True),
    (WORKER, 8787, False),
    (JOB, 8786, True),
    (JOB, 8787, True),
    (JOB, 8788, False),
    (OTHER_NAMESPACE_JOB, 8786, False),
    (OTHER_CLUSTER_WORKER, 8786, False),
    (UNLABELLED, 8786, False),
    (UNLABELLED, 8787, False),
    (PROMETHEUS, 8787, True),
    (PROMETHEUS, 8786, False),
    (BUNDLED_OPERATOR, 8787, True),
    (BUNDLED_OPERATOR, 8786, True),
    (BUNDLED_OPERATOR, 8788, False),
    (EXTERNAL_OPERATOR, 8787, False),
]


@pytest.mark.parametrize(("source", "port", "expected"), SCHEDULER_MATRIX)
def test_scheduler_ingress(renderer: Renderer, source: Pod, port: int, expected: bool) -> None:
    assert allowed(policies_of(renderer, "default"), SCHEDULER, source, port) is expected


@pytest.mark.parametrize(
    ("source", "port", "expected"),
    [
        (SCHEDULER, 40123, True),
        (WORKER, 40123, True),  # XGBoost's collective, Dask worker-to-worker transfers
        (GPU_WORKER, 51000, True),
        (PROMETHEUS, 8787, True),
        (PROMETHEUS, 40123, False),
        (JOB, 40123, False),
        (OTHER_CLUSTER_WORKER, 40123, False),
        (UNLABELLED, 8787, False),
    ],
)
def test_worker_ingress(renderer: Renderer, source: Pod, port: int, expected: bool) -> None:
    policies = policies_of(renderer, "gpu")
    assert allowed(policies, WORKER, source, port) is expected
    assert allowed(policies, GPU_WORKER, source, port) is expected


@pytest.mark.parametrize("target", [JOB, BUNDLED_OPERATOR])
@pytest.mark.parametrize("source", [SCHEDULER, WORKER, UNLABELLED, PROMETHEUS])
def test_nothing_connects_to_jobs_or_the_operator(
    renderer: Renderer, target: Pod, source: Pod
) -> None:
    assert not allowed(policies_of(renderer, "default"), target, source, 8080)


def test_external_operator_is_let_in_when_configured(renderer: Renderer) -> None:
    policies = policies_of(renderer, "ephemeral-jobs")
    assert allowed(policies, SCHEDULER, EXTERNAL_OPERATOR, 8787)
    assert not allowed(policies, SCHEDULER, BUNDLED_OPERATOR, 8787)
    big = dask_pod("scheduler", cluster=f"{RELEASE}-big")
    assert allowed(policies, big, EXTERNAL_OPERATOR, 8787)
    # A default-cluster job may not use the "big" cluster.
    assert not allowed(policies, big, JOB, 8786)


def test_monitoring_can_be_closed(renderer: Renderer) -> None:
    policies = policies_of(renderer, "namespaced-hardened")
    assert not allowed(policies, SCHEDULER, PROMETHEUS, 8787)
    assert allowed(policies, SCHEDULER, JOB, 8786)


def test_operator_configs_policies_admit_the_external_operator_and_jobs() -> None:
    policies = operator_config_docs("networkpolicies.yaml")
    assert allowed(policies, SCHEDULER, EXTERNAL_OPERATOR, 8787)
    assert allowed(policies, SCHEDULER, JOB, 8786)
    assert allowed(policies, SCHEDULER, WORKER, 8788)
    assert not allowed(policies, SCHEDULER, UNLABELLED, 8786)
    assert not allowed(policies, JOB, WORKER, 8080)


def test_evaluator_denies_only_selected_pods() -> None:
    # Guards the evaluator itself: an unselected pod is open, a selected one closed.
    deny_jobs = {
        "metadata": {"namespace": NAMESPACE},
        "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "job"}}},
    }
    assert allowed([deny_jobs], UNLABELLED, WORKER, 1)
    assert not allowed([deny_jobs], JOB, WORKER, 1)
