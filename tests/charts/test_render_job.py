"""``daskyard render job``: valid, restricted, unique manifests that match jobs/."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.charts.conftest import kustomize, kustomize_tls
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


# ---------------------------------------------------------------- --tls-secret


def tls_parts(pod_spec: dict) -> tuple[dict, dict, dict, dict]:
    """(env, TLS mount, TLS volume, other volumes by name) of a job pod."""
    (box,) = pod_spec["containers"]
    env = {e["name"]: e.get("value") for e in box["env"]}
    mounts = {m["name"]: m for m in box["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    return env, mounts.pop("tls"), volumes.pop("tls"), volumes


@pytest.mark.parametrize("kind", list(KINDS))
def test_tls_secret_mounts_it_and_dials_tls(kind):
    _, job = render(kind, "--namespace", "ml", "--cluster", "team-a", "--tls-secret", "team-a-tls")
    env, mount, volume, _ = tls_parts(job["spec"]["template"]["spec"])
    assert env == {
        "DASK_SCHEDULER_ADDRESS": "tls://team-a-scheduler.ml.svc.cluster.local:8786",
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "true",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": "/etc/dask/tls/ca.crt",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": "/etc/dask/tls/tls.crt",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": "/etc/dask/tls/tls.key",
    }
    assert mount == {"name": "tls", "mountPath": "/etc/dask/tls", "readOnly": True}
    assert volume["secret"]["secretName"] == "team-a-tls"
    assert volume["secret"]["defaultMode"] == 0o440


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_tls_job_is_valid_and_restricted(version):
    _, job = render("xgboost", "--namespace", "ml", "--tls-secret", "daskyard-tls")
    validate_builtin(job, version)
    for template in pod_templates(job):
        assert pod_problems(template) == []


def test_tls_job_mounts_what_the_charts_helm_test_mounts(renderer):
    """A job is a client like the helm test pod: same Secret layout, files and settings."""
    chart = renderer.render("helm3", "tls").of_kind("Pod")[0]["spec"]
    _, job = render("xgboost", "--namespace", "ml", "--tls-secret", "daskyard-tls")
    job_env, job_mount, job_volume, _ = tls_parts(job["spec"]["template"]["spec"])
    chart_env, chart_mount, chart_volume, _ = tls_parts(chart)
    assert job_volume == chart_volume and job_mount == chart_mount
    job_env.pop("DASK_SCHEDULER_ADDRESS")
    assert job_env == chart_env


def test_tls_job_matches_the_kustomize_tls_component():
    """render job --tls-secret and jobs/xgboost + jobs/components/tls submit the same pod."""
    overlay = next(d for d in kustomize_tls("jobs/xgboost") if d["kind"] == "Job")
    _, job = render("xgboost", "--tls-secret", "daskyard-tls")
    rendered, patched = job["spec"]["template"]["spec"], overlay["spec"]["template"]["spec"]
    for spec in (rendered, patched):
        for volume in spec["volumes"]:
            volume.get("configMap", {}).pop("name", None)  # names are per run
        # kustomize puts the patch's new list entries first; Kubernetes keys them by name.
        spec["volumes"].sort(key=lambda v: v["name"])
        spec["containers"][0]["volumeMounts"].sort(key=lambda m: m["name"])
    assert rendered == patched


def test_without_tls_secret_nothing_tls_is_rendered():
    _, job = render("xgboost", "--namespace", "ml")
    text = yaml.safe_dump(job)
    assert "tls://" not in text and "DASK_DISTRIBUTED__COMM__" not in text
    assert "tls" not in {v["name"] for v in job["spec"]["template"]["spec"]["volumes"]}


def test_invalid_tls_secret_name_is_refused():
    result = run_cli(
        "render",
        "job",
        "xgboost",
        "--config",
        str(ROOT / "jobs" / "xgboost" / "config.yaml"),
        "--tls-secret",
        "Team_A",
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "--tls-secret 'Team_A' is not a Secret name" in result.first_error_line


# ---------------------------------------------------------------- names and contents


def test_invalid_kubernetes_names_are_refused_before_anything_is_printed(tmp_path):
    config = tmp_path / "r.yaml"
    config.write_text("data: {train: s3://b/train/, target: label}\noutput: s3://b/out/\n")
    cluster = "Team_A" + "x" * 70
    result = run_cli(
        "render",
        "job",
        "xgboost",
        "--config",
        str(config),
        "--name",
        "My_Job!",
        "--namespace",
        "ML_NS",
        "--cluster",
        cluster,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.first_error_line == (
        "daskyard: error: --name 'My_Job!' is not a valid Kubernetes name: use at most 63 "
        "lowercase letters, digits and '-', starting and ending with a letter or digit"
    )
    assert "Traceback" not in result.stderr


def test_credentials_in_the_config_are_not_rendered_into_a_configmap(tmp_path):
    config = tmp_path / "r.yaml"
    config.write_text(
        "data: {train: s3://b/train/, target: label}\noutput: s3://b/out/\n"
        "storage_options: {client_kwargs: {aws_secret_access_key: s3cr3t-value}}\n"
    )
    result = run_cli("render", "job", "xgboost", "--config", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "storage_options.client_kwargs.aws_secret_access_key looks like a credential" in (
        result.first_error_line
    )
    assert "daskyard-object-storage" in result.first_error_line
    assert "s3cr3t-value" not in result.stderr


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path):
    """``render job | head``: the pipe closes under the output (it was exit 1 and a
    BrokenPipeError traceback)."""
    import subprocess

    from tests.conftest import DASKYARD

    config = tmp_path / "job.yaml"
    config.write_text("data: {train: s3://b/train/, target: label}\noutput: s3://b/out/\n")
    proc = subprocess.Popen(
        [DASKYARD, "render", "job", "xgboost", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    assert proc.wait(timeout=60) == 141  # 128 + SIGPIPE, as a shell reports cat's
    assert proc.stderr.read() == b""
