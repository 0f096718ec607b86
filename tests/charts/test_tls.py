"""Mutual TLS (`tls.enabled`): every Dask comm of every cluster, worker group and
helm test pod uses the mounted Secret; nothing changes with it off.

The rendered processes with TLS are started in test_rendered_processes.py;
`daskyard render job --tls-secret` is tested in test_render_job.py.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.conftest import (
    CHART,
    HELMS,
    HERE,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    Renderer,
    kustomize_tls,
    run,
)
from tests.charts.test_chart import arg_after, container
from tests.charts.test_consistency import comparable

SECRET = "daskyard-tls"
MOUNT = "/etc/dask/tls"
# dask config -> the Secret's file (cert-manager's key names).
FILES = {"ca-file": "ca.crt", "cert": "tls.crt", "key": "tls.key"}


def env_of(box: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in box.get("env", [])}


def dask_boxes(
    docs: list[dict[str, Any]], role: str | None = None
) -> list[tuple[str, str, dict, dict]]:
    """(role, cluster, pod spec, container) of every scheduler and worker container,
    or of those of one ``role``."""
    found = []
    for doc in docs:
        if doc["kind"] == "DaskCluster":
            cluster = doc["metadata"]["name"]
            spec = doc["spec"]["scheduler"]["spec"]
            found.append(("scheduler", cluster, spec, container(spec, "scheduler")))
        elif doc["kind"] == "DaskWorkerGroup":
            cluster = doc["spec"]["cluster"]
        else:
            continue
        spec = doc["spec"]["worker"]["spec"]
        found.append(("worker", cluster, spec, container(spec, "worker")))
    return [box for box in found if role in (None, box[0])]


def test_every_scheduler_and_worker_container_mounts_the_secret(renderer: Renderer) -> None:
    boxes = dask_boxes(renderer.render("helm3", "tls").docs)
    # Two clusters (scheduler and default workers each) and the GPU worker group.
    assert len(boxes) == 5
    for role, cluster, spec, box in boxes:
        where = f"{cluster} {role}"
        assert {"name": "tls", "mountPath": MOUNT, "readOnly": True} in box["volumeMounts"], where
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["tls"]["secret"] == {
            "secretName": SECRET,
            "defaultMode": 0o440,
            "items": [{"key": k, "path": k} for k in ("ca.crt", "tls.crt", "tls.key")],
        }, where
        # Mode 0440 is readable by the non-root user only through the fsGroup.
        assert spec["securityContext"]["fsGroup"] == box["securityContext"]["runAsGroup"], where


def test_every_dask_process_requires_tls_with_the_mounted_files(renderer: Renderer) -> None:
    for role, cluster, _, box in dask_boxes(renderer.render("helm3", "tls").docs):
        env = env_of(box)
        where = f"{cluster} {role}"
        assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "true", where
        assert env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == f"{MOUNT}/ca.crt", where
        # One certificate for every role: in-pod clients (a task's worker_client,
        # `kubectl exec ... daskyard doctor`) connect too.
        for section in ("SCHEDULER", "WORKER", "CLIENT"):
            assert env[f"DASK_DISTRIBUTED__COMM__TLS__{section}__CERT"] == f"{MOUNT}/tls.crt"
            assert env[f"DASK_DISTRIBUTED__COMM__TLS__{section}__KEY"] == f"{MOUNT}/tls.key"


def test_schedulers_listen_with_tls_on_the_comm_port_only(renderer: Renderer) -> None:
    schedulers = dask_boxes(renderer.render("helm3", "tls").docs, "scheduler")
    assert len(schedulers) == 2
    for _, _, _, box in schedulers:
        assert arg_after(box["args"], "--protocol") == "tls"
        assert arg_after(box["args"], "--port") == "8786"
        assert arg_after(box["args"], "--dashboard-address") == ":8787"
        # Probes, the operator and Prometheus speak plain HTTP to 8787.
        assert box["readinessProbe"]["httpGet"]["port"] == "http-dashboard"
        assert "scheme" not in box["readinessProbe"]["httpGet"]


def test_workers_dial_their_scheduler_over_tls(renderer: Renderer) -> None:
    """The operator injects tcp://...:8786 only into containers without
    DASK_SCHEDULER_ADDRESS: every worker container sets its own."""
    workers = dask_boxes(renderer.render("helm3", "tls").docs, "worker")
    assert len(workers) == 3
    for _, cluster, _, box in workers:
        assert env_of(box)["DASK_SCHEDULER_ADDRESS"] == (
            f"tls://{cluster}-scheduler.{NAMESPACE}.svc.cluster.local:8786"
        )
        assert arg_after(box["args"], "--protocol") == "tls"


@functools.cache
def distributed_schema() -> dict[str, Any]:
    import distributed

    path = Path(distributed.__file__).parent / "distributed-schema.yaml"
    return yaml.safe_load(path.read_text())


def is_dask_config_key(variable: str) -> bool:
    """Whether DASK_A__B_C names a key (a.b-c) of distributed's config schema."""
    node = distributed_schema()
    for part in variable.removeprefix("DASK_").lower().split("__"):
        properties = node.get("properties", {})
        node = properties.get(part.replace("_", "-"), properties.get(part))
        if node is None:
            return False
    return True


def test_tls_variables_are_keys_of_distributeds_config_schema(renderer: Renderer) -> None:
    names = {
        name
        for _, _, _, box in dask_boxes(renderer.render("helm3", "tls").docs)
        for name in env_of(box)
        if name.startswith("DASK_DISTRIBUTED__COMM__")
    }
    assert len(names) == 8
    assert [name for name in names if not is_dask_config_key(name)] == []
    # The check can fail.
    assert not is_dask_config_key("DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERTIFICATE")


def test_tls_variables_become_dask_config_in_a_process(renderer: Renderer) -> None:
    (_, _, _, box) = dask_boxes(renderer.render("helm3", "tls").docs)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env |= {k: v for k, v in env_of(box).items() if k.startswith("DASK_DISTRIBUTED__COMM__")}
    probe = (
        "import json; from distributed.security import Security; s = Security(); "
        "print(json.dumps({k: getattr(s, k) for k in ('require_encryption', 'tls_ca_file', "
        "'tls_scheduler_cert', 'tls_worker_key', 'tls_client_cert', 'tls_min_version')}))"
    )
    proc = run([sys.executable, "-c", probe], env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "require_encryption": True,
        "tls_ca_file": f"{MOUNT}/ca.crt",
        "tls_scheduler_cert": f"{MOUNT}/tls.crt",
        "tls_worker_key": f"{MOUNT}/tls.key",
        "tls_client_cert": f"{MOUNT}/tls.crt",
        "tls_min_version": 771,  # TLS 1.2, distributed's default, still in force
    }


def test_helm_test_pods_connect_as_tls_clients(renderer: Renderer) -> None:
    pods = renderer.render("helm3", "tls").of_kind("Pod")
    assert {p["metadata"]["name"] for p in pods} == {
        f"{RELEASE}-default-doctor",
        f"{RELEASE}-big-doctor",
    }
    for pod in pods:
        box = container(pod["spec"], "doctor")
        cluster = pod["metadata"]["labels"]["daskyard.io/cluster"]
        assert arg_after(box["args"], "--scheduler") == (
            f"tls://{cluster}-scheduler.{NAMESPACE}.svc.cluster.local:8786"
        )
        assert env_of(box) == {
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "true",
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": f"{MOUNT}/ca.crt",
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": f"{MOUNT}/tls.crt",
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": f"{MOUNT}/tls.key",
        }
        assert {"name": "tls", "mountPath": MOUNT, "readOnly": True} in box["volumeMounts"]
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == SECRET


def test_mount_path_moves_every_file(renderer: Renderer) -> None:
    rendering = renderer.render("helm3", "tls", "--set", "tls.mountPath=/var/run/dask-tls")
    boxes = [b[3] for b in dask_boxes(rendering.docs)]
    boxes += [container(p["spec"], "doctor") for p in rendering.of_kind("Pod")]
    for box in boxes:
        mounts = {m["name"]: m["mountPath"] for m in box["volumeMounts"]}
        assert mounts["tls"] == "/var/run/dask-tls"
        files = [v for k, v in env_of(box).items() if k.startswith("DASK_DISTRIBUTED__COMM__TLS")]
        assert files and all(f.startswith("/var/run/dask-tls/") for f in files)


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != "tls"])
def test_nothing_tls_is_rendered_when_off(renderer: Renderer, scenario: str) -> None:
    rendering = renderer.render("helm3", scenario)
    assert "tls://" not in rendering.text and "DASK_DISTRIBUTED__COMM__" not in rendering.text
    for role, cluster, spec, box in dask_boxes(rendering.docs):
        assert "--protocol" not in box["args"], (cluster, role)
        assert "tls" not in {v["name"] for v in spec["volumes"]}, (cluster, role)
        # The operator sets the (tcp://) scheduler address.
        assert "DASK_SCHEDULER_ADDRESS" not in env_of(box), (cluster, role)


@pytest.mark.parametrize("helm", HELMS)
def test_enabled_without_a_secret_fails_with_what_to_do(renderer: Renderer, helm: str) -> None:
    proc = renderer.attempt(helm, "default", "--set", "tls.enabled=true")
    assert proc.returncode != 0
    assert "tls.enabled is true but tls.secretName is empty" in proc.stderr
    assert f'Secret in namespace "{NAMESPACE}" holding ca.crt, tls.crt and tls.key' in proc.stderr


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("tls.secretName=Daskyard_TLS", "secretName"),
        ("tls.mountPath=etc/dask/tls", "mountPath"),
        ("tls.mountPath=/etc/dask/tls/", "mountPath"),
        ("tls.secret=daskyard-tls", "secret"),
    ],
)
def test_schema_rejects_bad_tls_values(renderer: Renderer, setting: str, key: str) -> None:
    proc = renderer.attempt("helm3", "default", "--set", "tls.enabled=true", "--set", setting)
    assert proc.returncode != 0
    assert key in proc.stderr


def test_network_policies_are_the_same_with_tls(renderer: Renderer) -> None:
    """TLS runs on the same ports: the policies need no change."""
    with_tls = renderer.render("helm3", "tls").of_kind("NetworkPolicy")
    without = renderer.render("helm3", "tls", "--set", "tls.enabled=false").of_kind("NetworkPolicy")
    assert with_tls and with_tls == without


def test_notes_give_tls_addresses_and_the_render_job_flag(renderer: Renderer) -> None:
    notes = renderer.notes("tls")
    assert "tcp://" not in notes
    assert f"tls://{RELEASE}-default-scheduler.{NAMESPACE}.svc.cluster.local:8786" in notes
    assert f"--tls-secret {SECRET}" in notes
    assert "components: [../components/tls]" in notes


# ---------------------------------------------------------------- kubectl path


def test_operator_configs_tls_component_equals_the_chart(renderer: Renderer) -> None:
    """operator-configs/ + components/tls is the chart with tls.enabled, except that
    plain manifests address the scheduler without a namespace (same-namespace DNS)."""
    chart = renderer.render(
        "helm3",
        "gpu",
        "--values",
        str(HERE / "operator-configs-values.yaml"),
        "--set",
        f"tls.enabled=true,tls.secretName={SECRET}",
    ).docs
    qualified = f".{NAMESPACE}.svc.cluster.local:"
    expected = [
        json.loads(json.dumps(comparable(d)).replace(qualified, ":"))
        for d in chart
        if d["kind"] in ("DaskCluster", "DaskWorkerGroup", "NetworkPolicy")
    ]
    actual = [
        comparable(d)
        for d in kustomize_tls("operator-configs")
        if d["kind"] in ("DaskCluster", "DaskWorkerGroup", "NetworkPolicy")
    ]
    assert len(expected) == 5

    def key(doc: dict[str, Any]) -> str:
        return json.dumps(doc, sort_keys=True)  # kustomize reorders map keys

    assert sorted(actual, key=key) == sorted(expected, key=key)


def test_readme_documents_every_tls_value_and_a_matching_certificate() -> None:
    readme = (CHART / "README.md").read_text()
    section = readme.split("\n## TLS\n", 1)[1].split("\n## ", 1)[0]
    values = yaml.safe_load((CHART / "values.yaml").read_text())["tls"]
    assert [key for key in values if f"`tls.{key}`" not in section] == []
    blocks = [b.split("```", 1)[0] for b in section.split("```yaml\n")[1:]]
    docs = [d for block in blocks for d in yaml.safe_load_all(block) if d]
    (secret,) = [
        d["spec"] for d in docs if d["kind"] == "Certificate" and not d["spec"].get("isCA")
    ]
    scenario = yaml.safe_load((CHART / "ci" / "tls-values.yaml").read_text())
    assert secret["secretName"] == scenario["tls"]["secretName"] == SECRET
    # Every Dask process both accepts and opens connections.
    assert {"server auth", "client auth"} <= set(secret["usages"])
