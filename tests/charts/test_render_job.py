"""``daskyard render job``: valid, restricted, unique manifests that match jobs/."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.charts.conftest import kustomize
from tests.charts.pss import pod_problems, pod_templates
from tests.charts.test_schemas import KUBERNETES_VERSIONS, validate_builtin
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
KINDS = {
    "xgboost": ["train", "xgboost"],
    "incremental": ["train", "incremental"],
    "search": ["search", "incremental"],
}


def render(kind: str, *extra: str) -> list[dict]:
    result = run_cli(
        "render", "job", kind, "--config", str(ROOT / "jobs" / kind / "config.yaml"), *extra
    )
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_job_is_valid_and_restricted(kind, version):
    config_map, job = render(kind, "--namespace", "ml")
    validate_builtin(config_map, version)
    validate_builtin(job, version)
    templates = pod_templates(job)
    assert templates
    for template in templates:
        assert pod_problems(template) == []


@pytest.mark.parametrize("kind", list(KINDS))
def test_rendered_job_runs_the_kind_with_its_config(kind):
    config_map, job = render(
        kind, "--namespace", "ml", "--cluster", "team-a", "--image", "registry.example/daskyard:1"
    )
    config_file = ROOT / "jobs" / kind / "config.yaml"
    assert config_map["data"]["config.yaml"] == config_file.read_text()
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["daskyard", *KINDS[kind], "--config", "/etc/daskyard/config.yaml"]
    assert container["image"] == "registry.example/daskyard:1"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DASK_SCHEDULER_ADDRESS"] == "tcp://team-a-scheduler.ml.svc.cluster.local:8786"
    assert job["spec"]["template"]["metadata"]["labels"]["daskyard.io/cluster"] == "team-a"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert job["metadata"]["namespace"] == config_map["metadata"]["namespace"] == "ml"


def test_every_run_gets_its_own_job_name():
    names = {render("xgboost")[1]["metadata"]["name"] for _ in range(3)}
    assert len(names) == 3
    assert all(name.startswith("daskyard-xgboost-") and len(name) <= 52 for name in names)


def test_rendered_job_matches_the_kustomize_overlay():
    """render job and `kubectl apply -k jobs/xgboost` submit the same pod."""
    kustomize_xgboost = next(d for d in kustomize("xgboost") if d["kind"] == "Job")
    _, job = render("xgboost")
    rendered = job["spec"]["template"]["spec"]
    overlay = kustomize_xgboost["spec"]["template"]["spec"]
    for spec in (rendered, overlay):
        for volume in spec["volumes"]:
            volume.get("configMap", {}).pop("name", None)  # names are per run
    assert rendered == overlay
    assert job["spec"]["podFailurePolicy"] == kustomize_xgboost["spec"]["podFailurePolicy"]


def test_packaged_job_template_is_jobs_base():
    packaged = ROOT / "src" / "daskyard" / "manifests" / "job.yaml"
    assert packaged.read_text() == (ROOT / "jobs" / "base" / "job.yaml").read_text()


def test_invalid_config_is_refused_before_anything_is_printed(tmp_path):
    bad = tmp_path / "job.yaml"
    bad.write_text(
        (ROOT / "jobs" / "xgboost" / "config.yaml")
        .read_text()
        .replace("rounds: 200", "roundz: 200")
    )
    result = run_cli("render", "job", "xgboost", "--config", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "unknown config key 'xgboost.roundz'" in result.first_error_line
