"""One version, one image, one cluster address: chart, operator-configs and jobs agree."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.conftest import (
    CHART,
    HERE,
    JOBS,
    OPERATOR_CONFIG_FILES,
    OPERATOR_CONFIGS,
    OVERLAYS,
    RELEASE,
    REPO,
    SCENARIOS,
    Renderer,
    dask_kubernetes_version,
    kustomize,
    operator_config_docs,
)
from tests.charts.pss import containers, pod_templates

CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
PROJECT_VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
RUNTIME_IMAGE = f"{VALUES['image']['repository']}:{CHART_META['appVersion']}"
OPERATOR_IMAGE = f"ghcr.io/dask/dask-kubernetes-operator:{dask_kubernetes_version()}"
DEFAULT_CLUSTER = f"{RELEASE}-default"


def images(docs: list[dict[str, Any]]) -> set[str]:
    return {
        box["image"]
        for doc in docs
        for template in pod_templates(doc)
        for _, box in containers(template.spec)
    }


# ---------------------------------------------------------------- versions


def test_chart_app_version_is_the_package_version() -> None:
    assert CHART_META["appVersion"] == PROJECT_VERSION
    assert VALUES["image"]["tag"] == ""  # so the tag follows appVersion


def test_operator_dependency_matches_the_installed_dask_kubernetes() -> None:
    (dependency,) = CHART_META["dependencies"]
    assert dependency["name"] == "dask-kubernetes-operator"
    assert dependency["version"] == dask_kubernetes_version()
    assert VALUES["operator"]["image"]["tag"] == dask_kubernetes_version()
    assert dependency["condition"] == "operator.enabled"


def test_operator_values_file_equals_the_charts_operator_values() -> None:
    standalone = yaml.safe_load((OPERATOR_CONFIGS / "operator-values.yaml").read_text())
    bundled = {k: v for k, v in VALUES["operator"].items() if k != "enabled"}
    # The standalone file states only what differs from upstream defaults.
    assert {k: bundled[k] for k in standalone} == standalone
    for key in ("podSecurityContext", "securityContext", "resources", "volumes", "image"):
        assert key in standalone


# ---------------------------------------------------------------- images


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_uses_one_runtime_image_and_the_operator_image(
    renderer: Renderer, scenario: str
) -> None:
    rendering = renderer.render("helm3", scenario)
    assert images(rendering.daskyard_docs()) == {RUNTIME_IMAGE}
    assert images(rendering.operator_docs()) <= {OPERATOR_IMAGE}


def test_operator_configs_and_jobs_use_the_runtime_image() -> None:
    docs = [d for name in OPERATOR_CONFIG_FILES for d in operator_config_docs(name)]
    docs += [d for overlay in OVERLAYS for d in kustomize(overlay)]
    assert images(docs) == {RUNTIME_IMAGE}


# ---------------------------------------------------------------- operator-configs = chart


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """What must match: everything but the chart's labels and namespace."""
    return {k: v for k, v in doc.items() if k != "metadata"} | {"name": doc["metadata"]["name"]}


@pytest.fixture(scope="module")
def chart_as_operator_configs(renderer: Renderer) -> list[dict[str, Any]]:
    values = HERE / "operator-configs-values.yaml"
    return renderer.render("helm3", "gpu", "--values", str(values)).docs


@pytest.mark.parametrize(
    ("kind", "file"),
    [
        ("DaskCluster", "daskcluster.yaml"),
        ("DaskAutoscaler", "daskautoscaler.yaml"),
        ("DaskWorkerGroup", "daskworkergroup-gpu.yaml"),
        ("NetworkPolicy", "networkpolicies.yaml"),
        ("ServiceAccount", "serviceaccount-job.yaml"),
    ],
)
def test_operator_configs_equal_the_chart(
    chart_as_operator_configs: list[dict[str, Any]], kind: str, file: str
) -> None:
    expected = [comparable(d) for d in chart_as_operator_configs if d["kind"] == kind]
    actual = [comparable(d) for d in operator_config_docs(file)]
    assert expected
    assert sorted(actual, key=str) == sorted(expected, key=str)


def test_operator_configs_cover_every_chart_object(
    chart_as_operator_configs: list[dict[str, Any]],
) -> None:
    shipped = {
        (d["kind"], d["metadata"]["name"])
        for name in OPERATOR_CONFIG_FILES
        for d in operator_config_docs(name)
    }
    assert {(d["kind"], d["metadata"]["name"]) for d in chart_as_operator_configs} <= shipped


def test_daskjob_runs_the_default_cluster_specs() -> None:
    (cluster,) = operator_config_docs("daskcluster.yaml")
    job = next(d for d in operator_config_docs("daskjob.yaml") if d["kind"] == "DaskJob")
    spec = job["spec"]["cluster"]["spec"]
    assert spec["scheduler"] == cluster["spec"]["scheduler"]
    assert spec["worker"]["spec"] == cluster["spec"]["worker"]["spec"]
    config_map = next(d for d in operator_config_docs("daskjob.yaml") if d["kind"] == "ConfigMap")
    volumes = {v["name"]: v for v in job["spec"]["job"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert job["spec"]["job"]["spec"]["restartPolicy"] == "Never"
    import daskyard.config

    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert daskyard.config.XGBoostJobConfig.model_validate(config).xgboost.tracker_port == 8788


# ---------------------------------------------------------------- jobs = chart defaults


def job_of(overlay: str) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = kustomize(overlay)
    (job,) = [d for d in docs if d["kind"] == "Job"]
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    return job, config_map


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_job_targets_the_chart_default_cluster(renderer: Renderer, overlay: str) -> None:
    job, config_map = job_of(overlay)
    docs = renderer.render("helm3", "default").docs
    pod = job["spec"]["template"]
    (box,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in box["env"]}
    cluster = next(d for d in docs if d["kind"] == "DaskCluster")
    assert cluster["metadata"]["name"] == DEFAULT_CLUSTER
    assert env["DASK_SCHEDULER_ADDRESS"] == f"tcp://{DEFAULT_CLUSTER}-scheduler:8786"
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    assert pod["spec"]["serviceAccountName"] in accounts
    assert pod["metadata"]["labels"]["daskyard.io/cluster"] == DEFAULT_CLUSTER
    secret = VALUES["objectStorage"]["secretName"]
    assert box["envFrom"] == [{"secretRef": {"name": secret, "optional": True}}]
    # The config ConfigMap is what is mounted at /etc/daskyard.
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in box["volumeMounts"]}
    assert volumes[mounts["/etc/daskyard"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert box["args"][-2:] == ["--config", "/etc/daskyard/config.yaml"]
    assert list(config_map["data"]) == ["config.yaml"]


@pytest.mark.parametrize(
    ("overlay", "command"),
    [
        ("xgboost", ["daskyard", "train", "xgboost"]),
        ("incremental", ["daskyard", "train", "incremental"]),
        ("search", ["daskyard", "search", "incremental"]),
    ],
)
def test_each_overlay_runs_its_command_under_its_own_name(overlay: str, command: list[str]) -> None:
    job, config_map = job_of(overlay)
    assert job["metadata"]["name"] == f"daskyard-{overlay}"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][:3] == command
    assert config_map["data"]["config.yaml"] == (JOBS / overlay / "config.yaml").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_job_fails_fast_on_bad_input_and_retries_the_rest(overlay: str) -> None:
    spec = job_of(overlay)[0]["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["backoffLimit"] >= 1
    assert spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] > 0
    fail, ignore = spec["podFailurePolicy"]["rules"]
    assert fail["action"] == "FailJob"
    assert fail["onExitCodes"] == {"containerName": "train", "operator": "In", "values": [2, 3]}
    assert ignore == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }


def test_job_pods_match_the_charts_job_network_policy(renderer: Renderer) -> None:
    policies = renderer.render("helm3", "default").of_kind("NetworkPolicy")
    jobs_policy = next(p for p in policies if p["metadata"]["name"] == f"{RELEASE}-jobs")
    selector = jobs_policy["spec"]["podSelector"]["matchLabels"]
    for overlay in OVERLAYS:
        labels = job_of(overlay)[0]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), overlay


# ---------------------------------------------------------------- job configs


def overlay_config(overlay: str) -> dict[str, Any]:
    return yaml.safe_load((JOBS / overlay / "config.yaml").read_text())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_job_configs_keep_output_and_checkpoints_on_object_storage(overlay: str) -> None:
    config = overlay_config(overlay)
    assert config["output"].startswith("s3://")
    assert config["data"]["train"].startswith("s3://")
    assert "scheduler" not in config.get("cluster", {})  # DASK_SCHEDULER_ADDRESS decides


def test_xgboost_config_uses_the_tracker_port_the_chart_opens(renderer: Renderer) -> None:
    cluster = next(
        d for d in renderer.render("helm3", "default").docs if d["kind"] == "DaskCluster"
    )
    ports = {
        p["name"]: p["containerPort"]
        for p in cluster["spec"]["scheduler"]["spec"]["containers"][0]["ports"]
    }
    assert overlay_config("xgboost")["xgboost"]["tracker_port"] == ports["tcp-tracker"]


# Which pydantic model of daskyard.config validates each overlay's config.
CONFIG_MODELS = {
    "base": "XGBoostJobConfig",
    "xgboost": "XGBoostJobConfig",
    "incremental": "IncrementalJobConfig",
    "search": "SearchJobConfig",
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_job_config_is_valid_for_the_package(overlay: str, tmp_path: Path) -> None:
    import daskyard.config

    model = getattr(daskyard.config, CONFIG_MODELS[overlay], None)
    if model is None:
        pytest.skip(f"daskyard.config has no {CONFIG_MODELS[overlay]} yet")
    config = model.model_validate(overlay_config(overlay))
    assert config.output == overlay_config(overlay)["output"]


# ---------------------------------------------------------------- values.yaml and schema


def undocumented_keys(path: Path) -> list[str]:
    """Mapping keys without a comment on the line right above them.

    A ``# --`` comment (helm-docs style) documents its key's whole value: the
    keys of a Kubernetes object given as one value (a securityContext, the
    resources) need no comment each. List items are documented by their list.
    """
    lines = path.read_text().splitlines()
    missing: list[str] = []

    def walk(node: yaml.Node, prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key, value in node.value:
            name = f"{prefix}{key.value}"
            block = []  # the comment lines right above the key, top first
            line = key.start_mark.line - 1
            while line >= 0 and lines[line].strip().startswith("#"):
                block.insert(0, lines[line].strip())
                line -= 1
            if not block:
                missing.append(name)
            if not (block and block[0].startswith("# --")):
                walk(value, name + ".")

    walk(yaml.compose(path.read_text()), "")
    return missing


def test_every_value_is_documented_right_above_it(tmp_path: Path) -> None:
    assert undocumented_keys(CHART / "values.yaml") == []
    # The check can fail: an undocumented key in a documented section is found.
    sample = tmp_path / "values.yaml"
    sample.write_text("# section\nimage:\n  # -- repo\n  repository: x\n  tag: y\n")
    assert undocumented_keys(sample) == ["image.tag"]


def object_nodes(schema: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            found.append((path or "(root)", schema))
        for key, value in schema.items():
            found += object_nodes(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found += object_nodes(value, f"{path}/{index}")
    return found


def test_schema_closes_every_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    nodes = object_nodes(schema)
    assert len(nodes) > 50
    open_nodes = []
    for path, node in nodes:
        extra = node.get("additionalProperties")
        if extra is False or isinstance(extra, dict):
            continue
        # Kubernetes objects passed through verbatim say so.
        if extra is True and "$comment" in node:
            continue
        open_nodes.append(path)
    assert open_nodes == []


def test_schema_and_values_know_the_same_top_level_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(schema["properties"]) == set(VALUES)
    assert set(schema["properties"]["operator"]["properties"]) - {"global"} == set(
        VALUES["operator"]
    )
    defaults = schema["definitions"]["clusterDefaults"]["properties"]
    assert set(defaults) == set(VALUES["clusterDefaults"])


def test_kustomize_base_namespace_is_left_to_the_user() -> None:
    for overlay in OVERLAYS:
        for doc in kustomize(overlay):
            assert "namespace" not in doc["metadata"], (overlay, doc["metadata"]["name"])


def test_the_scheduler_policy_opens_every_tracker_port_the_job_may_take(renderer: Renderer) -> None:
    """A retried XGBoost attempt takes the next port of tracker_port..+tracker_ports-1."""
    import daskyard.config

    policy = next(
        d
        for d in renderer.render("helm3", "default").docs
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-scheduler")
    )
    ranges = [
        (p["port"], p.get("endPort", p["port"]))
        for rule in policy["spec"]["ingress"]
        for p in rule.get("ports", [])
        if p["port"] == daskyard.config.DEFAULT_TRACKER_PORT
    ]
    defaults = daskyard.config.XGBoostConfig()
    first = daskyard.config.DEFAULT_TRACKER_PORT
    assert ranges == [(first, first + defaults.tracker_ports - 1)]
