"""What the user asked for: YAML config plus flags, validated with pydantic.

A config file may use nested sections (``data.train``) or the flat flag names
(``train``); flags override the file. Anything invalid becomes one
``ConfigError`` line naming the key, where it came from and what to do.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from daskyard import yaml_values
from daskyard.errors import ConfigError

DEFAULT_TRACKER_PORT = 8788


class StrictModel(BaseModel):
    """Unknown keys are errors, so a typo never silently falls back to a default; values
    are not coerced across types (``rounds: true`` is not 1 round)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _not_blank(value: str) -> str:
    # An empty URL is the current directory to fsspec: '' as --output wrote to '/'.
    if not value.strip():
        raise ValueError("must not be empty")
    return value


# A URL, path or column name: an empty one is a mistake, never a default.
Text = Annotated[str, AfterValidator(_not_blank)]


def _unique(values: list[str] | None) -> list[str] | None:
    if values is not None:
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"lists {', '.join(map(repr, repeated))} more than once")
    return values


class DataConfig(StrictModel):
    train: Text = Field(description="fsspec URL of the training data: file, directory or glob")
    target: Text = Field(description="name of the label column")
    validation: Text | None = Field(None, description="URL of a validation set")
    features: Annotated[list[str] | None, AfterValidator(_unique)] = Field(
        None, min_length=1, description="feature columns (default: all but target)"
    )
    categorical: Annotated[list[str], AfterValidator(_unique)] = Field(
        default_factory=list, description="columns to treat as categories"
    )
    format: Literal["auto", "parquet", "csv"] = "auto"
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    max_block_mb: int = Field(
        128,
        gt=0,
        description="Files larger than this (MiB; Parquet uncompressed, CSV on disk) are "
        "read as several blocks, each about this size or less (Parquet: of whole row "
        "groups where there are enough, else ranges of rows): one block is one "
        "partition, or one partial_fit, held by one worker",
    )
    # NumPy's generators take no negative seed.
    seed: int = Field(42, ge=0, lt=2**63)

    @model_validator(mode="after")
    def _target_is_not_a_feature(self) -> DataConfig:
        if self.features is not None and self.target in self.features:
            raise ValueError(f"target column '{self.target}' is also listed in features")
        # A categorical column that is no feature was silently ignored.
        if self.target in self.categorical:
            raise ValueError(
                f"target column '{self.target}' is listed in categorical, which is for features"
            )
        outside = [c for c in self.categorical if self.features and c not in self.features]
        if outside:
            raise ValueError(
                f"categorical column '{outside[0]}' is not in features: add it to features, "
                "or remove it from categorical"
            )
        return self


class TLSConfig(StrictModel):
    """Mutual TLS for every Dask comm (PEM files, e.g. from a mounted Secret)."""

    ca_file: str = Field(description="CA that signed the scheduler's and workers' certificates")
    cert: str = Field(description="this client's certificate")
    key: str = Field(description="this client's private key")


class ClusterConfig(StrictModel):
    scheduler: str | None = Field(None, description="tcp://host:8786; default: embedded cluster")
    # The bound stops a typo (an extra zero or ten) from starting workers until the
    # machine runs out of memory.
    local_workers: int | None = Field(
        None, gt=0, le=1024, description="embedded cluster worker count"
    )
    connect_timeout: float = Field(30.0, gt=0.0, description="seconds to reach the scheduler")
    check_versions: bool = True
    # None: dask's own config (DASK_DISTRIBUTED__COMM__TLS__* variables) applies.
    tls: TLSConfig | None = None
    # Lost workers (preempted, OOM-killed, scaled down) are survived in the same
    # process: training restarts from its last checkpoint on the workers that remain
    # or arrive, at most this many attempts in all; then the job exits 75.
    max_attempts: int = Field(3, ge=1, le=100, description="training attempts per job process")
    worker_wait: float = Field(
        120.0, gt=0.0, description="seconds to wait for a worker after losing them all"
    )


class XGBoostConfig(StrictModel):
    rounds: int = Field(100, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)
    early_stopping_rounds: int | None = Field(None, gt=0)
    checkpoint_every: int = Field(10, gt=0)
    progress_every: int = Field(10, gt=0)
    # None: DEFAULT_TRACKER_PORT against a remote scheduler (the port the chart's
    # NetworkPolicy opens), any free port on an embedded cluster.
    tracker_port: int | None = Field(None, ge=0, le=65535)
    tracker_host: str | None = Field(None, description="default: the scheduler's own address")
    # Each training takes the first free port of this declared range: a tracker's port
    # stays busy about 60 s after its training (TIME_WAIT; XGBoost sets no SO_REUSEADDR),
    # and for good when the training lost a worker (its tracker never exits,
    # dmlc/xgboost#7959).
    tracker_ports: int = Field(16, ge=1, le=64, description="ports from tracker_port on")

    @model_validator(mode="after")
    def _tree_method_is_hist(self) -> XGBoostConfig:
        method = self.params.get("tree_method", "hist")
        if method != "hist":
            raise ValueError(f"tree_method '{method}' is not supported; daskyard trains with hist")
        return self

    @field_validator("params")
    @classmethod
    def _device_without_ordinal(cls, params: dict[str, Any]) -> dict[str, Any]:
        # xgboost.dask refuses an ordinal (a ValueError, exit 1, once training began).
        device = str(params.get("device", "cpu"))
        kind, _, ordinal = device.partition(":")
        if ordinal and kind.lower() in ("cuda", "gpu"):
            raise ValueError(
                f"device '{device}' names a GPU: on Dask each worker trains on the GPU it "
                f"is given (one per worker); use device={kind}"
            )
        return params


class JobConfig(StrictModel):
    """What every training job has: data, where results go, where it runs."""

    data: DataConfig
    output: Text = Field(description="fsspec URL of the run's output folder")
    checkpoints: Text | None = Field(None, description="default: <output>/checkpoints")
    storage_options: dict[str, Any] = Field(default_factory=dict)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @property
    def checkpoint_url(self) -> str:
        return self.checkpoints or self.output.rstrip("/") + "/checkpoints"


def on_gpu(params: Mapping[str, Any]) -> bool:
    """Whether XGBoost params train on GPUs (``device`` cuda or gpu)."""
    return str(params.get("device", "cpu")).lower().startswith(("cuda", "gpu"))


class XGBoostJobConfig(JobConfig):
    xgboost: XGBoostConfig = Field(default_factory=XGBoostConfig)

    @model_validator(mode="after")
    def _one_embedded_worker_per_gpu(self) -> XGBoostJobConfig:
        # Embedded XGBoost workers are threads of this process, on its one GPU, and
        # XGBoost refuses two workers on one GPU ("Multiple processes within
        # communication group running on same CUDA device"): exit 1, after loading data.
        workers = self.cluster.local_workers
        embedded = self.cluster.scheduler is None
        if on_gpu(self.xgboost.params) and embedded and (workers or 1) > 1:
            device = self.xgboost.params["device"]
            raise ValueError(
                f"device {device} with {workers} local workers: the embedded workers "
                "share one GPU, and XGBoost trains with one worker per GPU; leave "
                "--local-workers unset (one worker), or train on a cluster with a GPU "
                "per worker (the chart's GPU worker group)"
            )
        return self


class IncrementalConfig(StrictModel):
    estimator: str = Field(description="dotted path of a scikit-learn estimator with partial_fit")
    params: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(1, gt=0)
    replicas: int = Field(
        1,
        ge=1,
        le=64,
        description="copies of a linear SGD model fitted side by side, one block each, and "
        "averaged after every round of that many blocks; 1: one sequential chain",
    )
    classes: list[Any] | None = Field(None, description="default: inferred in one pass")
    scale: bool | None = Field(None, description="standard scaling; default on for linear models")
    checkpoint_every: int = Field(20, gt=0, description="blocks between checkpoints")
    progress_every: int = Field(10, gt=0, description="blocks between progress lines")
    prefetch: int = Field(
        2, ge=1, le=16, description="blocks read ahead of the fits (at most one per worker)"
    )
    allowed_packages: list[str] = Field(default_factory=lambda: ["sklearn"])


class IncrementalJobConfig(JobConfig):
    incremental: IncrementalConfig


class SearchConfig(StrictModel):
    estimator: str = Field(description="dotted path of a scikit-learn estimator with partial_fit")
    params: dict[str, Any] = Field(default_factory=dict, description="fixed parameters")
    space: dict[str, str] = Field(
        description="param -> loguniform:LO:HI | uniform:LO:HI | int:LO:HI | choice:A,B,C"
    )
    candidates: int = Field(16, ge=2)
    reduction: int = Field(3, ge=2, description="successive halving keeps 1/reduction per rung")
    max_blocks: int | None = Field(
        None, gt=0, description="blocks for a finalist (default: one pass over the training files)"
    )
    classes: list[Any] | None = None
    scale: bool | None = None
    allowed_packages: list[str] = Field(default_factory=lambda: ["sklearn"])

    @model_validator(mode="after")
    def _space_is_valid(self) -> SearchConfig:
        if not self.space:
            raise ValueError("search.space is empty: give at least one --space KEY=SPEC")
        # Its specs are checked here, before a cluster is started or reached; whether
        # each names a parameter of the estimator is known once that is imported.
        # Imported here: daskyard.space reads choice values with parse_param, below.
        from daskyard.space import parse_space

        parse_space(self.space)
        return self


class SearchJobConfig(JobConfig):
    search: SearchConfig


# Flat names (the CLI flags) and where they live in the nested config.
XGBOOST_FLAT_KEYS: dict[str, tuple[str, ...]] = {
    "train": ("data", "train"),
    "validation": ("data", "validation"),
    "target": ("data", "target"),
    "features": ("data", "features"),
    "categorical": ("data", "categorical"),
    "scheduler": ("cluster", "scheduler"),
    "local_workers": ("cluster", "local_workers"),
    "rounds": ("xgboost", "rounds"),
    "params": ("xgboost", "params"),
    "param": ("xgboost", "params"),
}

INCREMENTAL_FLAT_KEYS: dict[str, tuple[str, ...]] = {
    **{k: v for k, v in XGBOOST_FLAT_KEYS.items() if v[0] != "xgboost"},
    "estimator": ("incremental", "estimator"),
    "epochs": ("incremental", "epochs"),
    "replicas": ("incremental", "replicas"),
    "params": ("incremental", "params"),
    "param": ("incremental", "params"),
}

SEARCH_FLAT_KEYS: dict[str, tuple[str, ...]] = {
    **{k: v for k, v in XGBOOST_FLAT_KEYS.items() if v[0] != "xgboost"},
    "estimator": ("search", "estimator"),
    "params": ("search", "params"),
    "param": ("search", "params"),
    "space": ("search", "space"),
    "candidates": ("search", "candidates"),
}

# Each job kind: its config model and the flat (flag) names of its keys.
JOB_KINDS: dict[str, tuple[type[JobConfig], dict[str, tuple[str, ...]]]] = {
    "xgboost": (XGBoostJobConfig, XGBOOST_FLAT_KEYS),
    "incremental": (IncrementalJobConfig, INCREMENTAL_FLAT_KEYS),
    "search": (SearchJobConfig, SEARCH_FLAT_KEYS),
}

# Which flag sets a key, for messages: the user typed the flag, not the path.
FLAG_FOR_PATH = {
    ("data", "train"): "--train",
    ("data", "validation"): "--validation",
    ("data", "target"): "--target",
    ("output",): "--output",
    ("cluster", "scheduler"): "--scheduler",
    ("cluster", "local_workers"): "--local-workers",
    ("xgboost", "rounds"): "--rounds",
    ("xgboost", "params"): "--param",
    ("incremental", "estimator"): "--estimator",
    ("incremental", "epochs"): "--epochs",
    ("incremental", "replicas"): "--replicas",
    ("incremental", "params"): "--param",
    ("search", "estimator"): "--estimator",
    ("search", "params"): "--param",
    ("search", "space"): "--space",
    ("search", "candidates"): "--candidates",
}

Model = TypeVar("Model", bound=BaseModel)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a YAML config file into a mapping, or raise one clear ConfigError."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file '{file}' not found: check the --config path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file '{file}' cannot be read: {exc}") from None
    try:
        data = yaml_values.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file '{file}' is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file '{file}' must hold a mapping of keys (like 'data:' or 'rounds:'), "
            f"not a {type(data).__name__}"
        )
    return data


def parse_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, typed value); values are read as YAML scalars (1, 0.1, true, abc)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--param '{text}' is not KEY=VALUE (for example --param max_depth=6)")
    try:
        value = yaml_values.load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, dict | list):
        value = raw  # KEY=[a] or KEY={b} stays text; estimator params are scalars
    return key, value


# User-owned mappings: their keys are passed through untouched.
OPAQUE_SECTIONS = frozenset({"params", "storage_options", "space"})


def _normalise_keys(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Accept ``local-workers`` as well as ``local_workers`` in every section."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = str(key).replace("-", "_")
        if isinstance(value, Mapping) and name not in OPAQUE_SECTIONS:
            value = _normalise_keys(value)
        out[name] = dict(value) if isinstance(value, Mapping) else value
    return out


def _merge_into(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set ``path`` in ``tree``; two mappings meeting there are merged key by key."""
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{part}' must be a section (a mapping), not a value")
        node = child
    if isinstance(value, dict) and isinstance(node.get(path[-1]), dict):
        node[path[-1]].update(value)
    else:
        node[path[-1]] = value


def _nest_flat_keys(
    raw: dict[str, Any], flat_keys: Mapping[str, tuple[str, ...]]
) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    spelled: dict[tuple[str, ...], str] = {}  # key path -> how the file first named it
    for key, value in raw.items():
        path = flat_keys.get(key, (key,))
        names = [(path, key)]
        if len(path) == 1 and isinstance(value, Mapping):
            names = [((key, str(k)), f"{key}.{k}") for k in value]
        for leaf, name in names:
            # Both 'rounds: 3' and 'xgboost: {rounds: 7}': which one was meant?
            if leaf in spelled and spelled[leaf] != name:
                raise ConfigError(
                    f"config key '{'.'.join(leaf)}' is set twice, as '{spelled[leaf]}' and as "
                    f"'{name}': keep one"
                )
            spelled.setdefault(leaf, name)
        _merge_into(nested, path, value)
    return nested


def build_config(
    model: type[Model],
    *,
    config_file: str | None,
    overrides: Mapping[tuple[str, ...], Any],
    flat_keys: Mapping[str, tuple[str, ...]],
    flag_for_path: Mapping[tuple[str, ...], str] = FLAG_FOR_PATH,
    env: Mapping[str, str] | None = None,
) -> Model:
    """Merge file < flags, fill the scheduler from the environment, validate.

    ``overrides`` maps nested paths to flag values; ``None`` values are unset flags.
    A ``params`` override is merged key by key into the file's params.
    """
    env = os.environ if env is None else env
    raw = read_config_file(config_file) if config_file else {}
    try:
        tree = _nest_flat_keys(_normalise_keys(raw), flat_keys)
    except ConfigError as exc:
        raise ConfigError(f"config file '{config_file}': {exc}") from None
    for path, value in overrides.items():
        if value is None:
            continue
        _merge_into(tree, path, value)
    if "cluster" in model.model_fields:
        cluster = tree.setdefault("cluster", {})
        if isinstance(cluster, dict) and not cluster.get("scheduler"):
            address = env.get("DASK_SCHEDULER_ADDRESS")
            if address:
                cluster["scheduler"] = address
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(
            describe_validation_error(exc, model, config_file, flag_for_path, overrides)
        ) from None


def from_flags(model: type[Model], flags: Mapping[str, tuple[str, Any]], **fixed: Any) -> Model:
    """``model`` built from command-line values (field -> (flag, value)) and ``fixed``
    ones; a bad value is one ConfigError line naming its flag (doctor, demo)."""
    try:
        return model(**{name: value for name, (_, value) in flags.items()}, **fixed)
    except ValidationError as exc:
        names = {(name,): flag for name, (flag, _) in flags.items()}
        given = {(name,): value for name, (_, value) in flags.items()}
        raise ConfigError(describe_validation_error(exc, model, None, names, given)) from None


def describe_validation_error(
    exc: ValidationError,
    model: type[BaseModel],
    config_file: str | None,
    flag_for_path: Mapping[tuple[str, ...], str],
    overrides: Mapping[tuple[str, ...], Any],
) -> str:
    """First error as one line: key, source (flag or file), problem, what to do."""
    errors = exc.errors(include_url=False)
    # A misspelt key also makes its real name "missing": report the typo first.
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    path = tuple(str(p) for p in first["loc"])
    key = ".".join(path)
    flag = flag_for_path.get(path)
    from_flag = overrides.get(path) is not None
    if from_flag and flag:
        source = f"flag {flag}"
    elif config_file:
        source = f"config file '{config_file}'"
    else:
        source = "arguments"
    kind = first["type"]
    if kind == "extra_forbidden":
        known = _known_keys(model, path[:-1])
        hint = difflib.get_close_matches(path[-1], known, n=1)
        did_you_mean = (
            f"; did you mean '{hint[0]}'?" if hint else f"; known keys: {', '.join(known)}"
        )
        line = f"unknown config key '{key}' in {source}{did_you_mean}"
    elif kind == "missing":
        # A whole missing section is usually its one required flag not given.
        flag = flag or flag_for_path.get((*path, "estimator"))
        how = f"pass {flag} or set '{key}' in the config file" if flag else f"set '{key}'"
        line = f"missing required value '{key}': {how}"
    else:
        value = first.get("input")
        shown = f" (got {value!r})" if not isinstance(value, dict) else ""
        problem = first["msg"].removeprefix("Value error, ")  # pydantic's wrapper of ours
        if path:
            line = f"invalid value for '{key}' in {source}{shown}: {problem}"
        else:  # a check across sections, such as the XGBoost device and the local workers
            line = f"invalid configuration in {source}: {problem}"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return line


def _known_keys(model: type[BaseModel], section: tuple[str, ...]) -> list[str]:
    current: Any = model
    for part in section:
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return sorted(current.model_fields)


def resolved(config: BaseModel) -> dict[str, Any]:
    """The config as it will run, for manifests; credentials are never recorded."""
    data = config.model_dump(mode="json")
    if data.get("storage_options"):
        data["storage_options"] = {key: "***" for key in data["storage_options"]}
    return data
