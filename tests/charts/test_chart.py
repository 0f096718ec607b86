"""The chart lints and renders with Helm 3 and 4, and renders what it promises."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.charts.conftest import (
    HELMS,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    Renderer,
    require_tool,
    run,
)

DEFAULT_CLUSTER = f"{RELEASE}-default"


def only(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def arg_after(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} not in {args}"
    return args[args.index(flag) + 1]


def worker_container(cluster: dict[str, Any]) -> dict[str, Any]:
    return container(cluster["spec"]["worker"]["spec"], "worker")


# ---------------------------------------------------------------- lint and render


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict_passes(renderer: Renderer, helm: str, scenario: str) -> None:
    proc = run(
        [
            require_tool(helm),
            "lint",
            "--strict",
            str(renderer.chart),
            "--namespace",
            NAMESPACE,
            *renderer.values_args(scenario),
        ]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_template_renders_a_cluster_per_entry(renderer: Renderer, helm: str, scenario: str) -> None:
    rendering = renderer.render(helm, scenario)
    clusters = rendering.of_kind("DaskCluster")
    assert clusters, "no DaskCluster rendered"
    assert DEFAULT_CLUSTER in {c["metadata"]["name"] for c in clusters}
    for doc in rendering.daskyard_docs():
        assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm3_and_helm4_render_the_same(renderer: Renderer, scenario: str) -> None:
    assert renderer.render("helm3", scenario).docs == renderer.render("helm4", scenario).docs


def test_notes_tell_how_to_submit_the_first_job(renderer: Renderer) -> None:
    notes = renderer.notes("default")
    assert f"kubectl -n {NAMESPACE} apply -k jobs/xgboost" in notes
    assert f"daskyard render job xgboost --config my.yaml --cluster {DEFAULT_CLUSTER}" in notes
    assert f"tcp://{DEFAULT_CLUSTER}-scheduler.{NAMESPACE}.svc.cluster.local:8786" in notes


# ---------------------------------------------------------------- values and schema


@pytest.mark.parametrize("helm", HELMS)
def test_schema_rejects_a_misspelt_key(renderer: Renderer, helm: str) -> None:
    proc = renderer.attempt(helm, "default", "--set", "clusterDefaults.worker.replcas=2")
    assert proc.returncode != 0
    assert "replcas" in proc.stderr


@pytest.mark.parametrize("missing", ["distributed.http.scheduler.api", "distributed.http.health"])
def test_schema_requires_the_autoscaler_and_probe_routes(renderer: Renderer, missing: str) -> None:
    routes = ["distributed.http.scheduler.api", "distributed.http.health"]
    routes.remove(missing)
    proc = renderer.attempt(
        "helm3",
        "default",
        "--set-json",
        f"clusterDefaults.scheduler.httpRoutes={json.dumps(routes)}",
    )
    assert proc.returncode != 0
    assert "httpRoutes" in proc.stderr


@pytest.mark.parametrize(
    ("cpu", "memory", "threads", "memory_limit"),
    [
        ("2", "4Gi", "2", str(4 * 2**30)),
        ("2500m", "1536Mi", "2", str(1536 * 2**20)),
        ("500m", "4G", "1", str(4 * 10**9)),
        (3, "1.5Gi", "3", str(int(1.5 * 2**30))),
        ("8", "17179869184", "8", "17179869184"),
    ],
)
def test_worker_threads_and_memory_limit_follow_the_container_limits(
    renderer: Renderer, cpu: Any, memory: str, threads: str, memory_limit: str
) -> None:
    resources = {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"cpu": cpu}}
    resources["limits"]["memory"] = memory
    rendering = renderer.render(
        "helm3",
        "default",
        "--set-json",
        f"clusterDefaults.worker.resources={json.dumps(resources)}",
    )
    args = worker_container(only(rendering.docs, "DaskCluster"))["args"]
    assert arg_after(args, "--nthreads") == threads
    assert arg_after(args, "--memory-limit") == memory_limit


def test_worker_without_limits_is_refused(renderer: Renderer) -> None:
    # null deletes the default limits (Helm merges maps given on the command line).
    resources = json.dumps({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": None})
    proc = renderer.attempt(
        "helm3", "default", "--set-json", f"clusterDefaults.worker.resources={resources}"
    )
    assert proc.returncode != 0
    assert "--nthreads and --memory-limit" in proc.stderr


def test_cluster_entries_override_defaults_key_by_key(renderer: Renderer) -> None:
    clusters = [
        {"name": "small", "autoscaler": {"minimum": 0}},
        {"name": "fixed", "autoscaler": {"enabled": False}, "worker": {"replicas": 3}},
    ]
    rendering = renderer.render(
        "helm3", "default", "--set-json", f"clusters={json.dumps(clusters)}"
    )
    autoscalers = {a["metadata"]["name"]: a["spec"] for a in rendering.of_kind("DaskAutoscaler")}
    # minimum: 0 wins over the default 1, maximum stays the default 8.
    assert autoscalers == {
        f"{RELEASE}-small": {"cluster": f"{RELEASE}-small", "minimum": 0, "maximum": 8}
    }
    fixed = only(rendering.docs, "DaskCluster", f"{RELEASE}-fixed")
    assert fixed["spec"]["worker"]["replicas"] == 3
    # The unchanged parts still come from clusterDefaults.
    assert worker_container(fixed)["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "fullnameOverride=" + "x" * 50], "the operator allows 53"),
        (["--set-json", 'clusters=[{"name":"a"},{"name":"a"}]'], "used twice"),
        (["--set", "clusterDefaults.autoscaler.minimum=9"], "minimum 9 is above maximum 8"),
        (["--set-json", "clusters=[]"], "clusters"),
    ],
)
def test_invalid_cluster_settings_fail_with_a_clear_message(
    renderer: Renderer, args: list[str], message: str
) -> None:
    proc = renderer.attempt("helm3", "default", *args)
    assert proc.returncode != 0
    assert message in proc.stderr


# ---------------------------------------------------------------- the Dask cluster


def test_scheduler_serves_the_autoscaler_api_and_declares_its_ports(renderer: Renderer) -> None:
    cluster = only(renderer.render("helm3", "default").docs, "DaskCluster")
    scheduler = cluster["spec"]["scheduler"]
    box = container(scheduler["spec"], "scheduler")
    assert box["args"][:2] == ["dask", "scheduler"]
    assert "--host" not in box["args"]  # advertises the pod IP, which the tracker binds
    env = {e["name"]: e.get("value") for e in box["env"]}
    routes = json.loads(env["DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"])
    assert {
        "distributed.http.scheduler.api",
        "distributed.http.scheduler.prometheus",
        "distributed.http.health",
    } <= set(routes)
    ports = {p["name"]: p["containerPort"] for p in box["ports"]}
    assert ports == {"tcp-comm": 8786, "http-dashboard": 8787, "tcp-tracker": 8788}
    for probe in ("readinessProbe", "livenessProbe"):
        assert box[probe]["httpGet"] == {"path": "/health", "port": "http-dashboard"}
    service = scheduler["service"]
    assert service["selector"] == {
        "dask.org/cluster-name": DEFAULT_CLUSTER,
        "dask.org/component": "scheduler",
    }
    # The operator finds these ports by name.
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["ports"]} == {
        ("tcp-comm", 8786, "tcp-comm"),
        ("http-dashboard", 8787, "http-dashboard"),
        ("tcp-tracker", 8788, "tcp-tracker"),
    }


def test_workers_follow_the_operator_convention(renderer: Renderer) -> None:
    cluster = only(renderer.render("helm3", "default").docs, "DaskCluster")
    box = worker_container(cluster)
    args = box["args"]
    assert args[:2] == ["dask", "worker"]
    assert arg_after(args, "--name") == "$(DASK_WORKER_NAME)"
    assert arg_after(args, "--local-directory") == "/scratch"
    # No scheduler argument: dask worker reads DASK_SCHEDULER_ADDRESS, set by the operator.
    assert not [a for a in args if a.startswith("tcp://")]
    mounts = {m["mountPath"]: m["name"] for m in box["volumeMounts"]}
    volumes = {v["name"]: v for v in cluster["spec"]["worker"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/scratch"]]
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert box["envFrom"] == [{"secretRef": {"name": "daskyard-object-storage", "optional": True}}]
    assert cluster["spec"]["idleTimeout"] == 0


def test_gpu_worker_group_gets_the_gpu_and_a_dask_resource(renderer: Renderer) -> None:
    docs = renderer.render("helm3", "gpu").docs
    group = only(docs, "DaskWorkerGroup", f"{DEFAULT_CLUSTER}-gpu")
    assert group["spec"]["cluster"] == DEFAULT_CLUSTER
    spec = group["spec"]["worker"]["spec"]
    box = container(spec, "worker")
    assert box["resources"]["limits"]["nvidia.com/gpu"] == "1"  # a string: the CRD says so
    assert arg_after(box["args"], "--resources") == "GPU=1"
    assert arg_after(box["args"], "--nthreads") == "4"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    # The CPU workers get no GPU resource.
    assert "--resources" not in worker_container(only(docs, "DaskCluster"))["args"]


def test_helm_test_runs_doctor_against_every_cluster(renderer: Renderer) -> None:
    rendering = renderer.render("helm3", "ephemeral-jobs")
    pods = {p["metadata"]["name"]: p for p in rendering.of_kind("Pod")}
    assert set(pods) == {f"{RELEASE}-default-doctor", f"{RELEASE}-big-doctor"}
    for name in ("default", "big"):
        pod = pods[f"{RELEASE}-{name}-doctor"]
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        args = container(pod["spec"], "doctor")["args"]
        assert args[:2] == ["daskyard", "doctor"]
        assert arg_after(args, "--scheduler") == (
            f"tcp://{RELEASE}-{name}-scheduler.{NAMESPACE}.svc.cluster.local:8786"
        )
        assert pod["metadata"]["labels"]["daskyard.io/cluster"] == f"{RELEASE}-{name}"


# ---------------------------------------------------------------- RBAC


def test_job_service_account_has_no_api_access_in_shared_mode(renderer: Renderer) -> None:
    docs = renderer.render("helm3", "default").daskyard_docs()
    account = only(docs, "ServiceAccount", f"{RELEASE}-job")
    assert account["automountServiceAccountToken"] is False
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding", "ClusterRole")]


def test_ephemeral_clusters_grant_the_job_account_dask_resources(renderer: Renderer) -> None:
    docs = renderer.render("helm3", "ephemeral-jobs").daskyard_docs()
    account = only(docs, "ServiceAccount", f"{RELEASE}-job")
    assert account["automountServiceAccountToken"] is True
    role = only(docs, "Role", f"{RELEASE}-job")
    dask_rule = next(r for r in role["rules"] if r["apiGroups"] == ["kubernetes.dask.org"])
    assert {"daskclusters", "daskworkergroups", "daskautoscalers"} <= set(dask_rule["resources"])
    assert {"create", "get", "list", "watch", "patch", "delete"} <= set(dask_rule["verbs"])
    core = [r for r in role["rules"] if r["apiGroups"] == [""]]
    assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in core)
    binding = only(docs, "RoleBinding", f"{RELEASE}-job")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{RELEASE}-job", "namespace": NAMESPACE}
    ]
    # The operator is someone else's here: none rendered.
    assert not renderer.render("helm3", "ephemeral-jobs").operator_docs()


def test_namespaced_operator_watches_only_the_release_namespace(renderer: Renderer) -> None:
    operator = renderer.render("helm3", "namespaced-hardened").operator_docs()
    kinds = {d["kind"] for d in operator}
    assert "Role" in kinds and "ClusterRole" not in kinds
    deployment = only(operator, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespace={NAMESPACE}" in args and "--all-namespaces" not in args


# ---------------------------------------------------------------- monitoring


def operator_labels(cluster: dict[str, Any], component: str) -> dict[str, str]:
    """Labels the operator puts on a cluster's scheduler Service or worker pods."""
    part = cluster["spec"]["scheduler" if component == "scheduler" else "worker"]
    return {
        **cluster["metadata"]["labels"],
        **part.get("metadata", {}).get("labels", {}),
        "dask.org/cluster-name": cluster["metadata"]["name"],
        "dask.org/component": component,
    }


def test_monitors_select_the_operator_created_scheduler_service_and_workers(
    renderer: Renderer,
) -> None:
    docs = renderer.render("helm3", "metrics").docs
    cluster = only(docs, "DaskCluster")
    service_monitor = only(docs, "ServiceMonitor")
    selector = service_monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= operator_labels(cluster, "scheduler").items()
    assert service_monitor["spec"]["endpoints"][0]["port"] == "http-dashboard"
    pod_monitor = only(docs, "PodMonitor")
    selector = pod_monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= operator_labels(cluster, "worker").items()
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http-dashboard"
    assert service_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # Off by default.
    default = renderer.render("helm3", "default").docs
    assert not [d for d in default if d["kind"] in ("ServiceMonitor", "PodMonitor")]


def test_hardened_scenario_renders_quota_limits_and_disruption_budget(renderer: Renderer) -> None:
    docs = renderer.render("helm3", "namespaced-hardened").daskyard_docs()
    assert only(docs, "ResourceQuota")["spec"]["hard"]["limits.memory"] == "192Gi"
    assert only(docs, "LimitRange")["spec"]["limits"][0]["type"] == "Container"
    budget = only(docs, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"] == {
        "dask.org/cluster-name": DEFAULT_CLUSTER,
        "dask.org/component": "scheduler",
    }


def dask_settings(env: dict[str, str]) -> tuple[bool, str, dict[str, int]]:
    """The profiler, tick and pre-spawn settings dask reads from ``env`` in a fresh process."""
    import os
    import subprocess
    import sys

    code = (
        "import json, dask, distributed; print(json.dumps(["
        "dask.config.get('distributed.worker.profile.enabled'), "
        "dask.config.get('distributed.admin.tick.interval'), "
        "dask.config.get('distributed.nanny.pre-spawn-environ')]))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "MALLOC_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return tuple(json.loads(out.stdout))


@pytest.mark.parametrize("helm", HELMS)
def test_tune_for_training_gives_workers_the_embedded_clusters_settings(
    renderer: Renderer, helm: str
) -> None:
    from daskyard.cluster import QUIET_CLUSTER_CONFIG, worker_malloc_environ

    def group(name: str, memory: str) -> dict[str, Any]:
        limits = {"cpu": "1", "memory": memory}
        return {"name": name, "resources": {"requests": limits, "limits": limits}}

    groups = [group("small", "512Mi"), group("big", "64Gi")]
    docs = renderer.render(
        helm,
        "default",
        "--set",
        "clusterDefaults.worker.tuneForTraining=true",
        "--set-json",
        f"clusterDefaults.workerGroups={json.dumps(groups)}",
    ).docs
    boxes = [worker_container(only(docs, "DaskCluster", DEFAULT_CLUSTER))] + [
        container(
            only(docs, "DaskWorkerGroup", f"{DEFAULT_CLUSTER}-{g['name']}")["spec"]["worker"][
                "spec"
            ],
            "worker",
        )
        for g in groups
    ]
    limits = []
    for box in boxes:
        limit = int(arg_after(box["args"], "--memory-limit"))
        limits.append(limit)
        env = {e["name"]: e["value"] for e in box["env"]}
        profile, tick, environ = dask_settings(env)
        assert profile is QUIET_CLUSTER_CONFIG["distributed.worker.profile.enabled"]
        assert tick == QUIET_CLUSTER_CONFIG["distributed.admin.tick.interval"]
        malloc = worker_malloc_environ(limit)
        assert {k: environ[k] for k in malloc} == malloc, limit
        assert environ["OMP_NUM_THREADS"] == 1  # distributed's own pre-spawn settings stay
    # 512Mi, 4Gi and 64Gi: shares of the limit (4 and 32 MiB) and the 64 MiB cap.
    assert sorted(limits) == [512 << 20, 4 << 30, 64 << 30]
    assert {worker_malloc_environ(x)["MALLOC_TRIM_THRESHOLD_"] for x in limits} == {
        4 << 20,
        32 << 20,
        64 << 20,
    }


def test_workers_keep_distributeds_settings_unless_tuned(renderer: Renderer) -> None:
    box = worker_container(only(renderer.render("helm3", "default").docs, "DaskCluster"))
    names = {e["name"] for e in box.get("env", [])}
    assert not names & {
        "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED",
        "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON",
    }


def test_the_operator_configs_readme_lists_the_tuned_env_of_its_4gi_worker(
    renderer: Renderer,
) -> None:
    import re
    from pathlib import Path

    import yaml

    readme = (Path(__file__).parents[2] / "operator-configs/README.md").read_text()
    snippet = re.search(r"tuneForTraining.*?```yaml\n(.*?)```", readme, re.S).group(1)
    docs = renderer.render(
        "helm3", "default", "--set", "clusterDefaults.worker.tuneForTraining=true"
    ).docs
    box = worker_container(only(docs, "DaskCluster", DEFAULT_CLUSTER))
    assert box["resources"]["limits"]["memory"] == "4Gi"
    assert yaml.safe_load(snippet) == box["env"]
