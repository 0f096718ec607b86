"""``daskyard render job``: a ConfigMap and a Job for ``kubectl apply -f -``.

The Job is ``jobs/base/job.yaml`` (shipped in the package as
``manifests/job.yaml``; a test keeps the two identical) with this run's
command, image, cluster and a unique name: a Job's pod template is immutable,
so every run is a new Job. The config is validated first, so a bad key fails
here rather than in the cluster; so are the names (by Kubernetes' rules for
what each becomes), the ConfigMap's size and the config's storage_options,
which must hold no credentials: the ConfigMap keeps them in plain text.
``tls_secret`` adds what the chart's ``tls.enabled`` clusters need from a
client: the Secret mounted, dask's TLS client config as environment variables
and a ``tls://`` scheduler address (the same as the kustomize component
``jobs/components/tls``).
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Mapping
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
# DNS-1123 label: a namespace, and a Job's name (which Kubernetes also puts into
# its pods' label job-name, a label value: at most 63 characters).
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# DNS-1035 label: a Service's name, e.g. the cluster's <cluster>-scheduler.
SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_LIMIT = 63
SCHEDULER_SUFFIX = "-scheduler"
# Kubernetes refuses a ConfigMap whose data (keys and values) exceeds 1 MiB.
CONFIG_MAP_LIMIT = 1024 * 1024
CONFIG_KEY = "config.yaml"
# storage_options keys (at any depth: client_kwargs.aws_secret_access_key) that hold
# credentials: s3fs key/secret/token, botocore's aws_*, adlfs account_key/sas_token,
# gcsfs token, HTTP headers' Authorization, ... The words of a key (snake_case,
# camelCase, kebab-case) are matched, so SSEKMSKeyId or endpoint_url are not.
CREDENTIAL_WORDS = frozenset(
    {"secret", "token", "password", "passwd", "credential", "credentials", "authorization"}
)
CREDENTIAL_PAIRS = frozenset(
    {("access", "key"), ("account", "key"), ("private", "key"), ("api", "key")}
)
CREDENTIAL_NAMES = frozenset({"key", "connection_string"})
# gcsfs's token values that name a way to authenticate rather than hold a credential.
TOKEN_METHODS = frozenset({"anon", "google_default", "cloud", "browser"})
# Where render's jobs get credentials: the Secret jobs/base/job.yaml reads (envFrom).
OBJECT_STORAGE_SECRET = "daskyard-object-storage"
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
    check_names(name=name, namespace=namespace, cluster=cluster)
    if tls_secret is not None and not (
        len(tls_secret) <= 253 and SECRET_NAME.fullmatch(tls_secret)
    ):
        raise ConfigError(
            f"--tls-secret {_shown(tls_secret)} is not a Secret name: use lowercase letters, "
            "digits, '-' and '.' (the Secret holding ca.crt, tls.crt and tls.key)"
        )
    if image is not None and (not image or any(c.isspace() for c in image)):
        raise ConfigError(
            f"--image {_shown(image)} is not an image reference: give one like "
            f"registry.example/daskyard/runtime:{__version__} (no spaces), or leave --image out"
        )
    address = scheduler_address(cluster, namespace, "tls" if tls_secret else "tcp")
    # Validate as the job will (the scheduler comes from the Job's environment).
    config = build_config(
        model,
        config_file=config_file,
        overrides={},
        flat_keys=flat_keys,
        env={"DASK_SCHEDULER_ADDRESS": address},
    )
    check_no_credentials(config.storage_options, config_file)
    check_runs_in_a_pod(config, config_file, address)
    config_text = Path(config_file).read_text(encoding="utf-8")
    check_config_map_size(config_text, config_file)
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
        "data": {CONFIG_KEY: config_text},
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
    # allow_unicode: one non-ASCII character (a comment's "café") made the whole config
    # a single escaped, double-quoted line.
    return yaml.dump_all(
        [config_map, job], Dumper=_BlockDumper, sort_keys=False, allow_unicode=True
    )


def check_names(*, name: str | None, namespace: str | None, cluster: str) -> None:
    """Refuse a name Kubernetes would refuse in what render makes of it.

    ``--name``: the Job's name, its pods' labels job-name and daskyard.io/run, and
    (with "-config") the ConfigMap's name. ``--namespace``: both objects' namespace
    and the scheduler's DNS name. ``--cluster``: the pods' label daskyard.io/cluster
    and the scheduler Service ``<cluster>-scheduler`` the job dials.
    """
    rule = "lowercase letters, digits and '-', starting and ending with a letter or digit"
    if name is not None and not (len(name) <= LABEL_LIMIT and DNS_LABEL.fullmatch(name)):
        raise ConfigError(
            f"--name {_shown(name)} is not a valid Kubernetes name: use at most {LABEL_LIMIT} "
            f"{rule}"
        )
    if namespace is not None and not (
        len(namespace) <= LABEL_LIMIT and DNS_LABEL.fullmatch(namespace)
    ):
        raise ConfigError(
            f"--namespace {_shown(namespace)} is not a valid Kubernetes namespace: use at most "
            f"{LABEL_LIMIT} {rule}"
        )
    # A DNS-1035 label, so is <cluster>-scheduler: a label value and a Service's name.
    if not (
        len(cluster) + len(SCHEDULER_SUFFIX) <= LABEL_LIMIT and SERVICE_NAME.fullmatch(cluster)
    ):
        raise ConfigError(
            f"--cluster {_shown(cluster)} is not a valid DaskCluster name: use at most "
            f"{LABEL_LIMIT - len(SCHEDULER_SUFFIX)} lowercase letters, digits and '-', starting "
            f"with a letter and ending with a letter or digit (its scheduler Service is "
            f"<cluster>{SCHEDULER_SUFFIX})"
        )


def check_no_credentials(storage_options: Mapping[str, Any], config_file: str) -> None:
    """A rendered config is stored in plain text in a ConfigMap: no credentials in it."""
    found = _credential_key(storage_options, "storage_options")
    if found:
        raise ConfigError(
            f"config file '{config_file}': {found} looks like a credential, and render job "
            "would store it in plain text in a ConfigMap: remove it and put the credentials in "
            f"the Secret '{OBJECT_STORAGE_SECRET}' (e.g. AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY), which the job reads as environment variables"
        )


def _credential_key(options: Any, path: str) -> str | None:
    """The dotted path of the first credential-looking key under ``options``."""
    if isinstance(options, Mapping):
        for key, value in options.items():
            where = f"{path}.{key}"
            if _is_credential(str(key), value):
                return where
            found = _credential_key(value, where)
            if found:
                return found
    elif isinstance(options, list | tuple):
        for index, value in enumerate(options):
            found = _credential_key(value, f"{path}[{index}]")
            if found:
                return found
    return None


def _is_credential(key: str, value: Any) -> bool:
    if value is None or isinstance(value, bool) or value == "":
        return False  # nothing secret in it (token: null, a key left empty)
    words = [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", key)]
    if words == ["token"] and str(value) in TOKEN_METHODS:
        return False
    return (
        "_".join(words) in CREDENTIAL_NAMES
        or any(word in CREDENTIAL_WORDS for word in words)
        or any(pair in CREDENTIAL_PAIRS for pair in itertools.pairwise(words))
    )


def check_runs_in_a_pod(config: Any, config_file: str, address: str) -> None:
    """Refuse what works on this machine but not in the Job's pod.

    The config's own cluster.scheduler wins over the Job's DASK_SCHEDULER_ADDRESS (a
    laptop's tcp://localhost:8786: the pod retried exit 75 until its backoffLimit).
    A local path is this machine's, not the cluster's: the workers cannot read data
    there, and the pod's files (read-only root, /tmp an emptyDir) go with it, and with
    them the model and the checkpoints a retried pod resumes from.
    """
    where = f"config file '{config_file}'"
    if config.cluster.scheduler != address:
        raise ConfigError(
            f"{where}: cluster.scheduler {_shown(config.cluster.scheduler)} would replace the "
            f"scheduler the Job dials ({address}, from --cluster and --namespace): remove it "
            "from the config, or render for that cluster with --cluster and --namespace"
        )
    urls = {
        "data.train": config.data.train,
        "data.validation": config.data.validation,
        "output": config.output,
        "checkpoints": config.checkpoints,
    }
    for key, url in urls.items():
        if url is not None and _is_local(url):
            what = (
                "the cluster's workers cannot read"
                if key.startswith("data")
                else "goes away with the Job's pod (and with it the model and checkpoints)"
            )
            raise ConfigError(
                f"{where}: {key} {_shown(url)} is a local path, which {what}: use object "
                "storage (s3://, gs://, abfs://, ...) for a Job on the cluster"
            )


def _is_local(url: str) -> bool:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    return scheme in ("", "file", "local")


def check_config_map_size(text: str, config_file: str) -> None:
    size = len(CONFIG_KEY) + len(text.encode("utf-8"))
    if size > CONFIG_MAP_LIMIT:
        raise ConfigError(
            f"config file '{config_file}' is too large for a ConfigMap ({size} bytes; Kubernetes "
            f"allows {CONFIG_MAP_LIMIT}): shrink it below 1 MiB, e.g. leave out data.features "
            "(every column but the target is a feature) or long comments"
        )


def _shown(value: str) -> str:
    """A user's value, quoted, on one line and of readable length."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the embedded config) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)
