"""``daskyard render job``: a ConfigMap and a Job for ``kubectl apply -f -``.

The Job is ``jobs/base/job.yaml`` (shipped in the package as
``manifests/job.yaml``; a test keeps the two identical) with this run's
command, image, cluster and a unique name: a Job's pod template is immutable,
so every run is a new Job. The config is validated first, so a bad key fails
here rather than in the cluster. ``tls_secret`` adds what the chart's
``tls.enabled`` clusters need from a client: the Secret mounted, dask's TLS
client config as environment variables and a ``tls://`` scheduler address
(the same as the kustomize component ``jobs/components/tls``).
"""

from __future__ import annotations

import re
import secrets
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from daskyard import __version__
from daskyard.config import JOB_KINDS, build_config
from daskyard.errors import ConfigError

DEFAULT_CLUSTER = "daskyard-default"
CONFIG_MOUNT = "/etc/daskyard/config.yaml"
# Where the chart mounts its TLS Secret (tls.mountPath); the Secret holds
# cert-manager's keys ca.crt, tls.crt and tls.key.
TLS_MOUNT = "/etc/dask/tls"
# A Secret's name is a DNS subdomain.
SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# The daskyard command each job kind runs.
COMMANDS = {
    "xgboost": ["train", "xgboost"],
    "incremental": ["train", "incremental"],
    "search": ["search", "incremental"],
}


def job_template() -> dict[str, Any]:
    return yaml.safe_load(files("daskyard").joinpath("manifests/job.yaml").read_text())


def scheduler_address(cluster: str, namespace: str | None, scheme: str = "tcp") -> str:
    host = f"{cluster}-scheduler" + (f".{namespace}.svc.cluster.local" if namespace else "")
    return f"{scheme}://{host}:8786"


def tls_volume(secret: str) -> dict[str, Any]:
    """The TLS Secret's three PEM files; mode 0440, readable through the pod's fsGroup."""
    items = [{"key": key, "path": key} for key in ("ca.crt", "tls.crt", "tls.key")]
    return {"name": "tls", "secret": {"secretName": secret, "defaultMode": 0o440, "items": items}}


def tls_client_env(mount: str = TLS_MOUNT) -> list[dict[str, str]]:
    """dask's config for a client that must use mutual TLS with the mounted files."""
    return [
        {"name": "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "value": "true"},
        {"name": "DASK_DISTRIBUTED__COMM__TLS__CA_FILE", "value": f"{mount}/ca.crt"},
        {"name": "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT", "value": f"{mount}/tls.crt"},
        {"name": "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY", "value": f"{mount}/tls.key"},
    ]


def run_name(kind: str) -> str:
    """Unique, sortable, and a valid DNS label: daskyard-xgboost-20261122-231500-a1b2."""
    return f"daskyard-{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def render_job(
    kind: str,
    config_file: str,
    *,
    image: str | None = None,
    cluster: str = DEFAULT_CLUSTER,
    namespace: str | None = None,
    name: str | None = None,
    tls_secret: str | None = None,
) -> str:
    command, (model, flat_keys) = COMMANDS[kind], JOB_KINDS[kind]
    if tls_secret is not None and not (
        len(tls_secret) <= 253 and SECRET_NAME.fullmatch(tls_secret)
    ):
        raise ConfigError(
            f"--tls-secret '{tls_secret}' is not a Secret name: use lowercase letters, digits, "
            "'-' and '.' (the Secret holding ca.crt, tls.crt and tls.key)"
        )
    address = scheduler_address(cluster, namespace, "tls" if tls_secret else "tcp")
    # Validate as the job will (the scheduler comes from the Job's environment).
    build_config(
        model,
        config_file=config_file,
        overrides={},
        flat_keys=flat_keys,
        env={"DASK_SCHEDULER_ADDRESS": address},
    )
    name = name or run_name(kind)
    labels = {"daskyard.io/job": kind, "daskyard.io/run": name}
    metadata: dict[str, Any] = {"namespace": namespace} if namespace else {}

    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{name}-config",
            **metadata,
            "labels": {"app.kubernetes.io/part-of": "daskyard", **labels},
        },
        "data": {"config.yaml": Path(config_file).read_text(encoding="utf-8")},
    }
    job = job_template()
    job["metadata"].update(name=name, **metadata)
    job["metadata"]["labels"].update(labels)
    pod = job["spec"]["template"]
    pod["metadata"]["labels"].update({**labels, "daskyard.io/cluster": cluster})
    container = pod["spec"]["containers"][0]
    container["image"] = image or f"daskyard/runtime:{__version__}"
    container["args"] = ["daskyard", *command, "--config", CONFIG_MOUNT]
    for env in container["env"]:
        if env["name"] == "DASK_SCHEDULER_ADDRESS":
            env["value"] = address
    for volume in pod["spec"]["volumes"]:
        if volume["name"] == "config":
            volume["configMap"]["name"] = config_map["metadata"]["name"]
    if tls_secret:
        container["env"] += tls_client_env()
        container["volumeMounts"].append({"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True})
        pod["spec"]["volumes"].append(tls_volume(tls_secret))
    return yaml.dump_all([config_map, job], Dumper=_BlockDumper, sort_keys=False)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the embedded config) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)
