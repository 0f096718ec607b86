"""Config: YAML plus flags, flags win, every mistake is one line naming the key."""

from __future__ import annotations

import re

import pytest

from daskyard.config import XGBOOST_FLAT_KEYS, XGBoostJobConfig, build_config, parse_param
from daskyard.errors import ConfigError


def build(tmp_path, text: str | None = None, overrides=None, env=None) -> XGBoostJobConfig:
    path = None
    if text is not None:
        path = tmp_path / "job.yaml"
        path.write_text(text)
    return build_config(
        XGBoostJobConfig,
        config_file=str(path) if path else None,
        overrides=overrides or {},
        flat_keys=XGBOOST_FLAT_KEYS,
        env=env or {},
    )


NESTED = """
data:
  train: data/train/
  target: label
output: out/
xgboost:
  rounds: 50
  params: {max_depth: 4, eta: 0.1}
"""


def test_nested_file_is_read(tmp_path):
    config = build(tmp_path, NESTED)
    assert config.data.train == "data/train/"
    assert config.xgboost.rounds == 50
    assert config.xgboost.params == {"max_depth": 4, "eta": 0.1}
    assert config.checkpoint_url == "out/checkpoints"


def test_flat_file_uses_the_flag_names(tmp_path):
    config = build(tmp_path, "train: t/\ntarget: y\noutput: o/\nrounds: 7\nlocal-workers: 3\n")
    assert (config.data.train, config.data.target, config.xgboost.rounds) == ("t/", "y", 7)
    assert config.cluster.local_workers == 3


def test_flags_override_the_file_and_params_merge_key_by_key(tmp_path):
    config = build(
        tmp_path,
        NESTED,
        overrides={("xgboost", "rounds"): 9, ("xgboost", "params"): {"eta": 0.5}},
    )
    assert config.xgboost.rounds == 9
    assert config.xgboost.params == {"max_depth": 4, "eta": 0.5}


def test_scheduler_comes_from_the_environment_when_not_given(tmp_path):
    config = build(tmp_path, NESTED, env={"DASK_SCHEDULER_ADDRESS": "tcp://s:8786"})
    assert config.cluster.scheduler == "tcp://s:8786"
    flagged = build(
        tmp_path,
        NESTED,
        overrides={("cluster", "scheduler"): "tcp://flag:8786"},
        env={"DASK_SCHEDULER_ADDRESS": "tcp://s:8786"},
    )
    assert flagged.cluster.scheduler == "tcp://flag:8786"


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        (NESTED.replace("train:", "trian:"), {}, "unknown config key 'data.trian'"),
        (NESTED.replace("train:", "trian:"), {}, "did you mean 'train'"),
        (NESTED.replace("rounds: 50", "rounds: ten"), {}, "invalid value for 'xgboost.rounds'"),
        (NESTED, {("xgboost", "rounds"): -5}, "'xgboost.rounds' in flag --rounds (got -5)"),
        (NESTED.replace("  target: label\n", ""), {}, "missing required value 'data.target'"),
        (NESTED.replace("output: out/\n", ""), {}, "pass --output"),
        (NESTED + "bogus: 1\n", {}, "unknown config key 'bogus'"),
        (NESTED.replace("max_depth: 4", "tree_method: exact"), {}, "tree_method 'exact'"),
        (
            NESTED.replace("target: label", "target: label\n  validation_fraction: 1.5"),
            {},
            "invalid value for 'data.validation_fraction'",
        ),
        ("rounds: [", {}, "not valid YAML at line 1"),
        ("- a\n- b\n", {}, "must hold a mapping"),
        # An empty URL is the current directory to fsspec: '' as --output wrote to '/'.
        (NESTED, {("output",): ""}, "'output' in flag --output (got ''): must not be empty"),
        (NESTED, {("data", "train"): " "}, "'data.train' in flag --train"),
        (NESTED.replace("output: out/", "output: ''"), {}, "must not be empty"),
        (NESTED + "checkpoints: ''\n", {}, "'checkpoints'"),
        (NESTED.replace("target: label", "target: ''"), {}, "'data.target'"),
        (NESTED.replace("target: label", "target: label\n  features: []"), {}, "at least 1"),
        (
            NESTED.replace("target: label", "target: label\n  features: [a, b, a]"),
            {},
            "'data.features' in config file",
        ),
        (NESTED.replace("target: label", "target: label\n  features: [a, b, a]"), {}, "'a' more"),
        (NESTED.replace("target: label", "target: label\n  seed: -1"), {}, "'data.seed'"),
        # Not coerced: 'rounds: true' was 1 round.
        (NESTED.replace("rounds: 50", "rounds: true"), {}, "'xgboost.rounds'"),
        (NESTED.replace("rounds: 50", "rounds: '50'"), {}, "'xgboost.rounds'"),
        (NESTED, {("cluster", "local_workers"): 10**20}, "flag --local-workers"),
        # A key given twice, or once flat and once in its section: which one was meant?
        (NESTED + "output: other/\n", {}, "line 9, column 1: key 'output' is given twice"),
        (NESTED + "rounds: 3\n", {}, "'xgboost.rounds' is set twice, as 'xgboost.rounds' and"),
        ("train: a/\ndata: {train: b/, target: y}\noutput: o/\n", {}, "'data.train' is set"),
        # A value where a section belongs: the line names the file it is in.
        ("data: d/\ntrain: t/\n", {}, "job.yaml': config key 'data' must be a section"),
    ],
)
def test_invalid_config_is_one_line_naming_the_key(tmp_path, text, overrides, expected):
    with pytest.raises(ConfigError) as info:
        build(tmp_path, text, overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert info.value.exit_code == 2


def test_missing_config_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*nope\.yaml' not found"):
        build_config(
            XGBoostJobConfig,
            config_file=str(tmp_path / "nope.yaml"),
            overrides={},
            flat_keys=XGBOOST_FLAT_KEYS,
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_depth=6", ("max_depth", 6)),
        ("eta=0.1", ("eta", 0.1)),
        ("objective=binary:logistic", ("objective", "binary:logistic")),
        ("enable_x=true", ("enable_x", True)),
        ("name = abc", ("name", "abc")),
        # YAML 1.1 reads a float without a dot as text: the README's alpha=1e-4 failed.
        ("alpha=1e-4", ("alpha", 1e-4)),
        ("tol=-2.5E+3", ("tol", -2500.0)),
        ("n=1_000", ("n", 1000)),
        ("version=1.2.3", ("version", "1.2.3")),
        # YAML 1.1 reads yes/no/on/off as booleans; YAML 1.2 and JSON read them as text.
        ("label=yes", ("label", "yes")),
        ("mode=off", ("mode", "off")),
        ("flag=False", ("flag", False)),
    ],
)
def test_param_values_are_typed(text, expected):
    assert parse_param(text) == expected


@pytest.mark.parametrize("text", ["max_depth", "=3", ""])
def test_param_without_key_and_value_is_rejected(text):
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        parse_param(text)


def test_embedded_cluster_shape_follows_the_job_and_the_workers_asked_for():
    import os

    from daskyard.cluster import EmbeddedShape, embedded_shape

    cores = os.cpu_count()
    assert embedded_shape(None, threaded=True) == EmbeddedShape(1, cores, processes=False)
    assert embedded_shape(None, threaded=False) == EmbeddedShape(cores, 1, processes=True)
    # XGBoost's workers stay threads of the job's process, one thread each as asked.
    assert embedded_shape(3, threaded=True) == EmbeddedShape(3, 1, processes=False)
    assert embedded_shape(3, threaded=False) == EmbeddedShape(3, 1, processes=True)


def test_worker_malloc_thresholds_are_a_share_of_the_memory_limit_within_glibc_bounds():
    from daskyard.cluster import worker_malloc_environ

    mib = 1 << 20
    assert worker_malloc_environ(1024 * mib) == {
        "MALLOC_TRIM_THRESHOLD_": 8 * mib,
        "MALLOC_MMAP_THRESHOLD_": 4 * mib,
    }
    large = worker_malloc_environ(12 * 1024 * mib)
    assert large == {"MALLOC_TRIM_THRESHOLD_": 64 * mib, "MALLOC_MMAP_THRESHOLD_": 32 * mib}
    assert worker_malloc_environ(16 * mib)["MALLOC_TRIM_THRESHOLD_"] == mib


def test_floats_in_a_config_file_need_no_dot(tmp_path):
    config = build(tmp_path, NESTED.replace("eta: 0.1", "eta: 1e-1, lambda: 2E0, alpha: 0"))
    assert config.xgboost.params == {"max_depth": 4, "eta": 0.1, "lambda": 2.0, "alpha": 0}
    assert isinstance(config.xgboost.params["alpha"], int)


def test_yes_and_no_in_a_config_file_are_labels_not_booleans(tmp_path):
    """The classic bank-marketing labels: classes [no, yes] became [False, True], and
    every row of the data was then refused as a label the classes leave out."""
    from daskyard.config import INCREMENTAL_FLAT_KEYS, IncrementalJobConfig

    path = tmp_path / "job.yaml"
    path.write_text(
        "train: t/\ntarget: y\noutput: o/\nincremental:\n"
        "  estimator: sklearn.linear_model.SGDClassifier\n  classes: [no, yes]\n  scale: true\n"
    )
    config = build_config(
        IncrementalJobConfig, config_file=str(path), overrides={}, flat_keys=INCREMENTAL_FLAT_KEYS
    )
    assert config.incremental.classes == ["no", "yes"]
    assert config.incremental.scale is True


def test_a_missing_estimator_names_the_flag(tmp_path):
    from daskyard.config import INCREMENTAL_FLAT_KEYS, IncrementalJobConfig

    path = tmp_path / "job.yaml"
    path.write_text("train: t/\ntarget: y\noutput: o/\n")
    with pytest.raises(ConfigError, match="'incremental': pass --estimator"):
        build_config(
            IncrementalJobConfig,
            config_file=str(path),
            overrides={},
            flat_keys=INCREMENTAL_FLAT_KEYS,
            env={},
        )


def test_a_model_from_flags_names_the_flag_of_a_bad_value():
    from daskyard.config import ClusterConfig, from_flags

    built = from_flags(ClusterConfig, {"local_workers": ("--local-workers", 3)}, connect_timeout=5)
    assert (built.local_workers, built.connect_timeout) == (3, 5.0)
    with pytest.raises(ConfigError, match=r"'connect_timeout' in flag --timeout \(got -1\)"):
        from_flags(ClusterConfig, {"connect_timeout": ("--timeout", -1)})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("  categorical: [label]\n", "target column 'label' is listed in categorical"),
        (
            "  features: [a, b]\n  categorical: [c]\n",
            "categorical column 'c' is not in features: add it to features",
        ),
    ],
)
def test_a_categorical_column_that_is_no_feature_is_refused(tmp_path, data, message):
    """It was silently ignored: the column trained as a number, or not at all."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        build(tmp_path, NESTED.replace("  target: label\n", f"  target: label\n{data}"))


def test_categorical_columns_among_the_features_pass(tmp_path):
    text = NESTED.replace("  target: label\n", "  target: label\n  categorical: [c]\n")
    assert build(tmp_path, text).data.categorical == ["c"]
    listed = text.replace("  categorical:", "  features: [a, c]\n  categorical:")
    assert build(tmp_path, listed).data.features == ["a", "c"]
