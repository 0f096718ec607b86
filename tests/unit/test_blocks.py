"""The worker-side steps of incremental training, run in process on real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler

from daskyard.data import SPLIT_COLUMN, plan_columns
from daskyard.train.blocks import (
    BlockSpec,
    FileSource,
    combine_metrics,
    combine_summaries,
    evaluate_file,
    file_summary,
    load_block,
)

FEATURES = ["a", "b", "c"]


def write_files(tmp_path: Path, sizes: list[int]) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i, rows in enumerate(sizes):
        frame = pd.DataFrame(
            {
                # Large offsets and small spreads: a sum of squares would cancel badly.
                "a": (1e4 + rng.normal(size=rows)).astype("float32"),
                "b": rng.exponential(3.0, size=rows).astype("float32"),
                "c": rng.integers(0, 5, size=rows).astype("float32"),
                "label": rng.integers(0, 3, size=rows),
            }
        )
        path = tmp_path / f"part-{i}.parquet"
        frame.to_parquet(path)
        paths.append(str(path))
    return paths


def source(split: tuple[int, float] | None) -> FileSource:
    schema = {"a": "float32", "b": "float32", "c": "float32", "label": "int64"}
    columns = plan_columns([("f", schema)], "label", None, (), numeric_target=False)
    return FileSource("parquet", {}, columns, split)


@pytest.mark.parametrize("split", [None, (7, 0.25)])
def test_merged_file_summaries_equal_a_scaler_fitted_on_all_training_rows(tmp_path, split):
    paths = write_files(tmp_path, [1000, 0, 2500, 1])
    reader = source(split)
    parts = [file_summary(p, i, reader, True, True) for i, p in enumerate(paths)]
    merged = combine_summaries(parts)

    frames = [reader.read(p, i) for i, p in enumerate(paths)]
    everything = pd.concat(frames)
    train = everything[~everything[SPLIT_COLUMN]] if split else everything
    expected = StandardScaler().fit(train[FEATURES].to_numpy(dtype=np.float64))
    assert merged["rows"] == len(everything) == 3501
    assert merged["train_rows"] == len(train)
    assert (len(train) < len(everything)) == (split is not None)
    np.testing.assert_allclose(merged["mean"], expected.mean_, rtol=1e-12)
    np.testing.assert_allclose(merged["var"], expected.var_, rtol=1e-9)
    assert merged["classes"] == (0, 1, 2)


def test_a_class_only_held_out_rows_hold_is_still_a_class(tmp_path):
    """With a split, the labels of a file are those of all its rows: the model must
    know a class to be scored on rows of it."""
    (path,) = write_files(tmp_path, [400])
    frame = pd.read_parquet(path)
    reader = source((3, 0.5))
    held_out = reader.read(path, 0)[SPLIT_COLUMN].to_numpy()
    frame.loc[np.flatnonzero(held_out)[0], "label"] = 7  # one held-out row only
    frame.to_parquet(path)
    assert 7 not in set(reader.read(path, 0).query(f"not {SPLIT_COLUMN}")["label"])
    assert combine_summaries([file_summary(path, 0, reader, True, False)])["classes"] == (
        0, 1, 2, 7,
    )  # fmt: skip


def test_loaded_block_holds_scaled_training_rows_only(tmp_path):
    (path,) = write_files(tmp_path, [400])
    reader = source((3, 0.5))
    scaler = StandardScaler().fit(reader.read(path, 0)[FEATURES])
    inputs, target = load_block(path, 0, reader, BlockSpec(tuple(FEATURES), "label", None, scaler))
    frame = reader.read(path, 0)
    train = frame[~frame[SPLIT_COLUMN]]
    np.testing.assert_array_equal(inputs, scaler.transform(train[FEATURES]))
    assert inputs.dtype == np.float32 and inputs.flags.c_contiguous  # as partial_fit wants it
    np.testing.assert_array_equal(target, train["label"].to_numpy())
    assert 100 < len(target) < 300


def test_an_unscaled_block_is_a_row_major_frame_that_fits_the_same_model(tmp_path):
    """Without scaling the estimator still gets a frame (its feature names, for a
    custom estimator that selects columns), laid out as partial_fit wants it: the
    same model as from the column-major frame read, without its copy on each fit."""
    (path,) = write_files(tmp_path, [400])
    reader = source(None)
    inputs, target = load_block(path, 0, reader, BlockSpec(tuple(FEATURES), "label", None, None))
    read = reader.read(path, 0)[FEATURES]
    assert not read.to_numpy().flags.c_contiguous  # as read: a column after another
    assert isinstance(inputs, pd.DataFrame) and list(inputs.columns) == FEATURES
    assert inputs.to_numpy().flags.c_contiguous and inputs.to_numpy().dtype == np.float32
    pd.testing.assert_frame_equal(inputs, read)
    models = [SGDClassifier(random_state=0), SGDClassifier(random_state=0)]
    for model, frame in zip(models, (inputs, read), strict=True):
        model.partial_fit(frame, target, classes=[0, 1, 2])
    np.testing.assert_array_equal(models[0].coef_, models[1].coef_)
    assert list(models[0].feature_names_in_) == FEATURES


def test_file_metrics_add_up_to_scikit_learns(tmp_path):
    paths = write_files(tmp_path, [700, 900])
    reader = source(None)
    frames = [reader.read(p, i) for i, p in enumerate(paths)]
    binary = [f.assign(label=(f["label"] > 0).astype(int)) for f in frames]
    for path, frame in zip(paths, binary, strict=True):
        frame.to_parquet(path)
    everything = pd.concat(binary)
    scaler = StandardScaler().fit(everything[FEATURES])
    scaled = scaler.transform(everything[FEATURES])
    truth = everything["label"].to_numpy()
    model = SGDClassifier(loss="log_loss", random_state=0).fit(scaled, truth)
    spec = BlockSpec(tuple(FEATURES), "label", (0, 1), scaler)
    parts = [evaluate_file(p, i, reader, model, spec) for i, p in enumerate(paths)]
    metrics = combine_metrics(parts, classifier=True)

    proba = model.predict_proba(scaled)
    assert metrics["accuracy"] == pytest.approx((model.predict(scaled) == truth).mean())
    assert metrics["log_loss"] == pytest.approx(log_loss(truth, proba), rel=1e-6)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(truth, proba[:, 1]), abs=1e-3)


def test_the_worker_side_module_imports_neither_skops_nor_dask_dataframe():
    # Workers import this module for every incremental and search task: skops and
    # dask.dataframe would add about 360 MiB to each of them.
    code = (
        "import sys, daskyard.train.blocks; "
        "print(sorted(m for m in ('skops.io', 'dask.dataframe', 'xgboost') if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert found == "[]"


class ConfigProbe(SGDClassifier):
    """Records whether scikit-learn was told to skip its inf/NaN check."""

    seen: ClassVar[list[tuple[str, bool]]] = []

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        import sklearn

        self.seen.append(("fit", sklearn.get_config()["assume_finite"]))
        return super().partial_fit(X, y, classes=classes, sample_weight=sample_weight)

    def predict(self, X):
        import sklearn

        self.seen.append(("predict", sklearn.get_config()["assume_finite"]))
        return super().predict(X)


@pytest.mark.parametrize("checked", [True, False])
def test_blocks_checked_on_read_skip_scikit_learns_check_and_no_others(checked):
    from daskyard.train.blocks import evaluate_inputs, partial_fit_inputs

    rng = np.random.default_rng(0)
    block = (rng.normal(size=(50, 3)).astype("float32"), rng.integers(0, 2, size=50))
    spec = BlockSpec(tuple(FEATURES), "label", (0, 1), None, checked_finite=checked)
    model = ConfigProbe(loss="log_loss", random_state=0)
    ConfigProbe.seen = []
    partial_fit_inputs(model, block, spec)
    evaluate_inputs(block, model, spec)
    assert ConfigProbe.seen == [("fit", checked), ("predict", checked)]
    import sklearn

    assert sklearn.get_config()["assume_finite"] is False  # restored afterwards
