"""``render job`` refuses what Kubernetes would refuse, and credentials in a ConfigMap."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from daskyard.errors import ConfigError
from daskyard.render import render_job

# Kubernetes' own rules (k8s.io/apimachinery/pkg/util/validation), written out here
# rather than taken from daskyard.render.
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")

CONFIG = "data: {train: s3://b/train/, target: label}\noutput: s3://b/out/\n"
NAME_RULE = (
    "use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
)


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(CONFIG)
    return str(path)


def rendered(config_file: str, **names: str) -> tuple[dict, dict]:
    config_map, job = yaml.safe_load_all(render_job("xgboost", config_file, **names))
    return config_map, job


# ---------------------------------------------------------------- names


def test_the_reported_names_are_refused_with_one_line(config_file):
    with pytest.raises(ConfigError) as info:
        render_job("xgboost", config_file, name="My_Job!", namespace="ML_NS")
    assert str(info.value) == f"--name 'My_Job!' is not a valid Kubernetes name: {NAME_RULE}"


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("name", "My_Job!"),
        ("name", "myjob_1"),
        ("name", "-job"),
        ("name", "job-"),
        ("name", "job.one"),  # also a pod label value and hostname: no dots
        ("name", "j" * 64),  # the pods' label job-name holds it
        ("name", ""),
        ("namespace", "ML_NS"),
        ("namespace", "ml.team"),
        ("namespace", "n" * 64),
        ("namespace", ""),
        ("cluster", "Team_A" + "x" * 70),
        ("cluster", "team-a" + "x" * 48),  # 54: <cluster>-scheduler is 64
        ("cluster", "1team"),  # a Service name starts with a letter
        ("cluster", "team_a"),
        ("cluster", "team-"),
        ("cluster", ""),
    ],
)
def test_names_kubernetes_would_refuse_are_refused(config_file, flag, value):
    with pytest.raises(ConfigError) as info:
        render_job("xgboost", config_file, **{flag: value})
    message = str(info.value)
    assert message.startswith(f"--{flag} {value!r} is not a valid ")
    assert "use at most" in message and "\n" not in message


def test_a_newline_in_a_name_stays_on_one_line(config_file):
    with pytest.raises(ConfigError) as info:
        render_job("xgboost", config_file, name="job\nkind: Secret")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("--name 'job\\nkind: Secret' is not a valid Kubernetes name")


def test_the_longest_valid_names_render_valid_manifests(config_file):
    name, namespace, cluster = "a1-" + "b" * 60, "9" + "n" * 62, "c" + "-2" * 26
    assert (len(name), len(namespace), len(cluster)) == (63, 63, 53)
    config_map, job = rendered(config_file, name=name, namespace=namespace, cluster=cluster)
    pod = job["spec"]["template"]
    assert job["metadata"]["name"] == name
    assert config_map["metadata"]["name"] == f"{name}-config"
    assert job["metadata"]["namespace"] == config_map["metadata"]["namespace"] == namespace
    assert pod["metadata"]["labels"]["daskyard.io/cluster"] == cluster
    (env,) = (e for e in pod["spec"]["containers"][0]["env"] if e["name"].endswith("ADDRESS"))
    host = env["value"].removeprefix("tcp://").removesuffix(":8786")
    assert host == f"{cluster}-scheduler.{namespace}.svc.cluster.local"
    # What Kubernetes checks: object names, namespaces, label values, the Service.
    for obj in (config_map, job):
        assert DNS1123_SUBDOMAIN.fullmatch(obj["metadata"]["name"])
        assert len(obj["metadata"]["name"]) <= 253
        assert DNS1123_LABEL.fullmatch(obj["metadata"]["namespace"])
        for value in obj["metadata"]["labels"].values():
            assert LABEL_VALUE.fullmatch(value) and len(value) <= 63
    for value in pod["metadata"]["labels"].values():
        assert LABEL_VALUE.fullmatch(value) and len(value) <= 63
    assert DNS1123_LABEL.fullmatch(name) and len(name) <= 63  # the pods' job-name label
    service = host.split(".")[0]
    assert DNS1035_LABEL.fullmatch(service) and len(service) <= 63
    assert len(host) <= 253


def test_default_names_still_render(config_file):
    config_map, job = rendered(config_file)
    assert DNS1123_LABEL.fullmatch(job["metadata"]["name"])
    assert job["spec"]["template"]["metadata"]["labels"]["daskyard.io/cluster"] == (
        "daskyard-default"
    )
    assert config_map["data"]["config.yaml"] == CONFIG


# ---------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    ("options", "where"),
    [
        ("{key: AKIAEXAMPLE, secret: s3cr3t-value}", "storage_options.key"),
        ("{secret: s3cr3t-value}", "storage_options.secret"),
        ("{token: s3cr3t-value}", "storage_options.token"),
        ("{password: s3cr3t-value}", "storage_options.password"),
        (
            "{client_kwargs: {endpoint_url: 'http://minio:9000', "
            "aws_secret_access_key: s3cr3t-value}}",
            "storage_options.client_kwargs.aws_secret_access_key",
        ),
        (
            "{client_kwargs: {aws_access_key_id: AKIAEXAMPLE}}",
            "storage_options.client_kwargs.aws_access_key_id",
        ),
        ("{client_kwargs: {aws_session_token: s3cr3t-value}}", "storage_options.client_kwargs"),
        ("{account_name: acct, account_key: s3cr3t-value}", "storage_options.account_key"),
        ("{account_name: acct, sas_token: s3cr3t-value}", "storage_options.sas_token"),
        ("{headers: {Authorization: Bearer s3cr3t-value}}", "storage_options.headers"),
    ],
)
def test_credentials_in_storage_options_are_refused(tmp_path, options, where):
    path = tmp_path / "r.yaml"
    path.write_text(CONFIG + f"storage_options: {options}\n")
    with pytest.raises(ConfigError) as info:
        render_job("xgboost", str(path))
    message = str(info.value)
    assert message.startswith(f"config file '{path}': {where}")
    assert "looks like a credential" in message and "ConfigMap" in message
    assert "Secret 'daskyard-object-storage'" in message
    assert "environment variables" in message
    assert "s3cr3t-value" not in message and "AKIAEXAMPLE" not in message


def test_storage_options_without_credentials_still_render(tmp_path):
    text = CONFIG + (
        "storage_options:\n"
        "  anon: false\n"
        "  token: null\n"
        "  requester_pays: true\n"
        "  client_kwargs: {endpoint_url: 'http://minio:9000', region_name: us-east-1}\n"
        "  config_kwargs: {signature_version: s3v4}\n"
        "  s3_additional_kwargs: {ServerSideEncryption: 'aws:kms', SSEKMSKeyId: alias/ml}\n"
    )
    path = tmp_path / "r.yaml"
    path.write_text(text)
    config_map, _ = yaml.safe_load_all(render_job("xgboost", str(path)))
    assert config_map["data"]["config.yaml"] == text


def test_gcsfs_token_methods_are_not_credentials(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(CONFIG.replace("s3://", "gs://") + "storage_options: {token: anon}\n")
    config_map, _ = yaml.safe_load_all(render_job("xgboost", str(path)))
    assert "token: anon" in config_map["data"]["config.yaml"]


# ---------------------------------------------------------------- size


def test_a_config_over_a_configmaps_1_mib_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(CONFIG + "# " + "x" * (1024 * 1024) + "\n")
    with pytest.raises(ConfigError) as info:
        render_job("xgboost", str(path))
    message = str(info.value)
    assert message.startswith(f"config file '{path}' is too large for a ConfigMap (")
    assert "shrink it below 1 MiB" in message


def test_a_config_just_within_a_configmaps_limit_renders(tmp_path):
    path = tmp_path / "r.yaml"
    # Kubernetes counts the data's keys and values: "config.yaml" and the file.
    filler = 1024 * 1024 - len("config.yaml") - len(CONFIG) - len("# \n")
    path.write_text(CONFIG + "# " + "x" * filler + "\n")
    config_map, _ = yaml.safe_load_all(render_job("xgboost", str(path)))
    assert len("config.yaml") + len(config_map["data"]["config.yaml"]) == 1024 * 1024
