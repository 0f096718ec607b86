"""``daskyard render job``: a ConfigMap and a Job for ``kubectl apply -f -``.

The Job is ``jobs/base/job.yaml`` (shipped in the package as
``manifests/job.yaml``; a test keeps the two identical) with this run's
command, image, cluster and a unique name: a Job's pod template is immutable,
so every run is a new Job. The config is validated first, so a bad key fails
here rather than in the cluster.
"""

from __future__ import annotations

import secrets
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from daskyard import __version__
from daskyard.config import JOB_KINDS, build_config

DEFAULT_CLUSTER = "daskyard-default"
CONFIG_MOUNT = "/etc/daskyard/config.yaml"
# The daskyard command each job kind runs.
COMMANDS = {
    "xgboost": ["train", "xgboost"],
    "incremental": ["train", "incremental"],
    "search": ["search", "incremental"],
}


def job_template() -> dict[str, Any]:
    return yaml.safe_load(files("daskyard").joinpath("manifests/job.yaml").read_text())


def scheduler_address(cluster: str, namespace: str | None) -> str:
    host = f"{cluster}-scheduler" + (f".{namespace}.svc.cluster.local" if namespace else "")
    return f"tcp://{host}:8786"


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
) -> str:
    command, (model, flat_keys) = COMMANDS[kind], JOB_KINDS[kind]
    # Validate as the job will (the scheduler comes from the Job's environment).
    build_config(
        model,
        config_file=config_file,
        overrides={},
        flat_keys=flat_keys,
        env={"DASK_SCHEDULER_ADDRESS": scheduler_address(cluster, namespace)},
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
            env["value"] = scheduler_address(cluster, namespace)
    for volume in pod["spec"]["volumes"]:
        if volume["name"] == "config":
            volume["configMap"]["name"] = config_map["metadata"]["name"]
    return yaml.dump_all([config_map, job], Dumper=_BlockDumper, sort_keys=False)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the embedded config) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)
