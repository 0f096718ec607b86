"""The worker side of incremental training and search: a file in, a step out.

Every function here runs inside a Dask task, so this module stays light: workers
import it (and what it imports) when they unpickle a task. It needs neither
dask.dataframe nor skops, which together add about 360 MiB to a worker that
only streams blocks through ``partial_fit``.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from daskyard.data import SPLIT_COLUMN, ColumnPlan, DataSource, read_partition
from daskyard.errors import ConfigError
from daskyard.file_blocks import file_positions
from daskyard.train.cache import cached, keep, take

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator
    from sklearn.preprocessing import StandardScaler

    from daskyard.checkpoints import CheckpointStore

AUC_BINS = 1 << 14  # score histogram resolution for the per-partition AUC
MAX_CLASSES = 1000  # more distinct labels than this is a continuous target, not classes


@dataclass(frozen=True)
class BlockSpec:
    """Everything a worker needs to turn a block into model input."""

    features: tuple[str, ...]
    target: str
    classes: tuple[Any, ...] | None
    scaler: StandardScaler | None
    # Every feature and target value was checked finite on read (daskyard.data), so
    # scikit-learn need not check each block again, on the serial chain of fits: its
    # check took 2.9 of an SGD partial_fit's 45 ms at 125k rows x 28 (1-2% at 500k).
    checked_finite: bool = False


@dataclass(frozen=True)
class FileSource:
    """Where a task reads one file from, and how."""

    format: str
    storage_options: dict[str, Any]
    columns: ColumnPlan
    split: tuple[int, float] | None  # (seed, fraction) when validation rows come from train
    positions: tuple[int, ...] = ()  # each block's file's position (file_positions)

    @classmethod
    def of(
        cls, data: DataSource, columns: ColumnPlan, split: tuple[int, float] | None = None
    ) -> FileSource:
        positions = tuple(file_positions(data.files))
        return cls(data.format, data.storage_options, columns, split, positions)

    def read(self, url: str, index: int) -> pd.DataFrame:
        """Block ``index`` of the source, at ``url``."""
        position = self.positions[index] if self.positions else index
        return read_partition(
            url, position, self.format, self.storage_options, self.columns, self.split
        )


def _rows(block: pd.DataFrame, validation: bool) -> pd.DataFrame:
    if SPLIT_COLUMN not in block:
        return block
    return block[block[SPLIT_COLUMN] == validation]


def _inputs(rows: pd.DataFrame, spec: BlockSpec) -> Any:
    features = rows[list(spec.features)]
    return _scaled(features, spec.scaler) if spec.scaler is not None else _row_major(features)


def _row_major_values(features: pd.DataFrame) -> np.ndarray:
    """The features' values laid out row after row: one copy, on the loading worker.

    A frame read from Parquet is column-major, and scikit-learn's SGD (most
    partial_fit) copied it row-major on every call (again for a cached block), on
    the fitting worker, the serial chain: 500k x 28 float32, one SGD partial_fit
    took 188 ms from the column-major frame, 166 ms from a row-major one (the copy
    here, 17 ms, runs while the other worker fits).
    """
    return np.array(features.to_numpy(), order="C")


def _row_major(features: pd.DataFrame) -> pd.DataFrame:
    """The same frame (names and all, for the estimator), row-major."""
    values = _row_major_values(features)
    return pd.DataFrame(values, columns=features.columns, index=features.index, copy=False)


def _scaled(features: pd.DataFrame, scaler: StandardScaler) -> np.ndarray:
    """``scaler.transform(features)`` as one row-major array, made with one copy.

    transform() itself copies the frame's column-major block, and a row-major copy
    came on top; this copies once (``_row_major_values``) and scales in place with
    transform()'s own arithmetic (mean and scale cast to the input's float dtype,
    then ``X -= mean_; X /= scale_``), so the values are identical, bit for bit.
    """
    values = _row_major_values(features)
    if scaler.with_mean:
        values -= scaler.mean_.astype(values.dtype)
    if scaler.with_std:
        values /= scaler.scale_.astype(values.dtype)
    return values


# ---------------------------------------------------------------- the first pass


def _read_kept(url: str, index: int, source: FileSource, run: str | None) -> pd.DataFrame:
    """Read one file; with ``run``, also keep it in this worker's cache for ``_load``."""
    frame = source.read(url, index)
    if run is not None:
        keep(run, _read_key(url, index), frame)
    return frame


def _read_key(url: str, index: int) -> str:
    return f"read:{index}:{url}"


def file_summary(
    url: str,
    index: int,
    source: FileSource,
    want_classes: bool,
    want_moments: bool,
    run: str | None = None,
) -> dict[str, Any]:
    """One file's row counts, labels and per-feature moments, from one read.

    Labels are those of every row, held-out rows of a split included: a class
    that only they hold is still a class of the data set (the model must know it
    to score them). Moments are the mean and the sum of squared deviations (M2)
    of the training rows, in float64, which ``combine_summaries`` merges exactly
    (Chan et al.) instead of the cancellation-prone sum of squares. With ``run``,
    the read file stays in this worker's cache for that run's first load of it.
    """
    frame = _read_kept(url, index, source, run)
    rows = _rows(frame, validation=False)
    out: dict[str, Any] = {"rows": len(frame), "train_rows": len(rows)}
    if want_classes:
        out["classes"] = _labels(frame, source)
    if want_moments:
        out.update(_moments(rows[list(source.columns.features)].to_numpy()))
    return out


def _moments(features: np.ndarray) -> dict[str, np.ndarray]:
    """Per-column float64 mean and M2, a column at a time through one reused buffer.

    Dask's nanny sets MALLOC_TRIM_THRESHOLD_, which pins glibc's mmap threshold
    at 128 KiB: every large temporary is a fresh mmap, page-faulted in and given
    back. A temporary per column made this 10x slower on a worker than in a
    plain process (500k x 28: 203 vs 21 ms); the reused buffer does not care.
    """
    rows, width = features.shape
    mean, m2 = np.zeros(width), np.zeros(width)
    if rows == 0:
        return {"mean": mean, "m2": m2}
    # Each column is cast to float64 once, into the buffer, and worked on there.
    buffer = np.empty(rows, dtype=np.float64)
    for j in range(width):
        np.copyto(buffer, features[:, j])
        mean[j] = buffer.sum() / rows
        buffer -= mean[j]
        m2[j] = buffer @ buffer
    return {"mean": mean, "m2": m2}


def combine_summaries(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Row totals, sorted classes, and the mean and population variance of all rows."""
    combined: dict[str, Any] = {
        "rows": sum(p["rows"] for p in parts),
        "train_rows": sum(p["train_rows"] for p in parts),
    }
    if parts and "classes" in parts[0]:
        found = pd.unique(np.concatenate([np.asarray(p["classes"]) for p in parts]))
        combined["classes"] = tuple(sorted(pd.Series(found).dropna().tolist()))
    if parts and "mean" in parts[0]:
        n, mean, m2 = 0, np.zeros_like(parts[0]["mean"]), np.zeros_like(parts[0]["m2"])
        for part in parts:
            k = part["train_rows"]
            if k == 0:
                continue
            delta = part["mean"] - mean
            total = n + k
            mean = mean + delta * (k / total)
            m2 = m2 + part["m2"] + delta**2 * (n * k / total)
            n = total
        combined["mean"] = mean
        combined["var"] = m2 / n if n else m2
    return combined


def validation_summary(
    url: str, index: int, source: FileSource, want_classes: bool, run: str | None = None
) -> dict[str, Any]:
    """A validation file's rows (and labels), read and checked now so that a bad file
    fails before training."""
    frame = _read_kept(url, index, source, run)
    out: dict[str, Any] = {"rows": len(frame), "train_rows": 0}  # as combine_summaries reads
    if want_classes:
        out["classes"] = _labels(frame, source)
    return out


def _labels(frame: pd.DataFrame, source: FileSource) -> np.ndarray:
    # One more than the limit is enough to tell a continuous target apart.
    return pd.unique(frame[source.columns.target].dropna())[: MAX_CLASSES + 1]


# ---------------------------------------------------------------- training steps


def load_block(
    url: str,
    index: int,
    source: FileSource,
    spec: BlockSpec,
    validation: bool = False,
    frame: pd.DataFrame | None = None,
) -> tuple[Any, np.ndarray]:
    """A file's training (or validation) rows as model input: read (unless ``frame``
    holds it, read and checked already), checked and scaled on the loading worker,
    so the serial chain of fits only runs ``partial_fit``."""
    if frame is None:
        frame = source.read(url, index)
    rows = _rows(frame, validation=validation)
    return _inputs(rows, spec), rows[spec.target].to_numpy()


def _load(
    run: str | None, url: str, index: int, source: FileSource, spec: BlockSpec, validation: bool
) -> tuple[Any, np.ndarray]:
    def load() -> tuple[Any, np.ndarray]:
        kept = take(run, _read_key(url, index)) if run is not None else None
        return load_block(url, index, source, spec, validation, frame=kept)

    if run is None:
        return load()
    return cached(run, f"{'validation' if validation else 'train'}:{index}:{url}", load)


def load_block_after(
    previous: Any, url: str, index: int, source: FileSource, spec: BlockSpec
) -> tuple[Any, np.ndarray]:
    """``load_block``, once ``previous`` (the worker's last fit, a task dependency) is done."""
    return load_block(url, index, source, spec)


def partial_fit_inputs(
    model: BaseEstimator, block: tuple[Any, np.ndarray], spec: BlockSpec
) -> None:
    """``partial_fit`` on a loaded block, in place."""
    inputs, target = block
    if len(target) == 0:
        return
    try:
        with _checked(spec):
            if spec.classes is not None:
                model.partial_fit(inputs, target, classes=np.asarray(spec.classes))
            else:
                model.partial_fit(inputs, target)
    except (ValueError, TypeError) as exc:
        # The estimator refuses these params or this data (SGD's early_stopping=True,
        # MultinomialNB on negative features): the same on every retry, so exit 2,
        # not 1, which a Job retries.
        raise ConfigError(
            f"{type(model).__name__}.partial_fit failed: "
            f"{str(exc).strip().splitlines()[0].rstrip('.')}; "
            "change the estimator's params (--param) or choose an estimator for this data"
        ) from None


def _checked(spec: BlockSpec) -> contextlib.AbstractContextManager[Any]:
    """scikit-learn skips its inf/NaN check inside, for blocks daskyard checked."""
    import sklearn

    return sklearn.config_context(assume_finite=True if spec.checked_finite else None)


def fit_block(
    model: BaseEstimator, block: tuple[Any, np.ndarray], spec: BlockSpec
) -> BaseEstimator:
    """One step on a copy: the previous model stays valid if this task is retried."""
    model = copy.deepcopy(model)
    partial_fit_inputs(model, block, spec)
    return model


def save_checkpoint(model: BaseEstimator, store: CheckpointStore, step: int) -> int:
    store.save(step, dumps_model(model))
    return step


def save_scored_checkpoint(
    model: BaseEstimator,
    validation: dict[str, Any],
    store: CheckpointStore,
    step: int,
    earlier: list[dict[str, Any]],
    rung: int,
) -> int:
    """A candidate's checkpoint at the end of a rung, with every score it has had: a
    rerun of the search takes both and trains nothing it already trained."""
    scores = [*earlier, {"rung": rung, "blocks": step, "validation": validation}]
    store.save(step, dumps_model(model), metadata={"scores": scores})
    return step


def dumps_model(model: Any) -> bytes:
    # Imported here, not at the top: skops.io imports every scikit-learn estimator
    # module (+139 MiB in each process that only fits one).
    import skops.io as sio

    return sio.dumps(model)


def train_rung(
    model: BaseEstimator,
    blocks: list[tuple[str, int]],
    source: FileSource,
    spec: BlockSpec,
    run: str | None = None,
) -> BaseEstimator:
    """One search candidate's share of a rung, block after block, in one task on one worker.

    With ``run``, blocks come from (and go to) this worker's cache of that run's blocks.
    """
    model = copy.deepcopy(model)
    for url, index in blocks:
        partial_fit_inputs(model, _load(run, url, index, source, spec, False), spec)
    return model


# ---------------------------------------------------------------- evaluation


def _scores(model: BaseEstimator, inputs: Any, proba: np.ndarray | None) -> np.ndarray | None:
    """Positive-class scores in [0, 1] for a binary classifier (AUC only needs the order)."""
    if proba is not None:
        return proba[:, 1]
    if hasattr(model, "decision_function"):
        return 1.0 / (1.0 + np.exp(-np.clip(model.decision_function(inputs), -500, 500)))
    return None


def _probabilities(model: BaseEstimator, inputs: Any) -> np.ndarray | None:
    if not hasattr(model, "predict_proba"):
        return None
    try:
        return model.predict_proba(inputs)
    except AttributeError:  # e.g. SGDClassifier(loss="hinge") has no probabilities
        return None


def evaluate_file(
    url: str, index: int, source: FileSource, model: BaseEstimator, spec: BlockSpec
) -> dict[str, Any]:
    """Read one file on a worker and return additive partial metrics for its validation rows."""
    return evaluate_inputs(load_block(url, index, source, spec, validation=True), model, spec)


def evaluate_inputs(
    block: tuple[Any, np.ndarray], model: BaseEstimator, spec: BlockSpec
) -> dict[str, Any]:
    inputs, truth = block
    out: dict[str, Any] = {"n": len(truth)}
    if len(truth) == 0:
        return out
    with _checked(spec):
        out.update(_partial_metrics(inputs, truth, model, spec))
    return out


def _partial_metrics(
    inputs: Any, truth: np.ndarray, model: BaseEstimator, spec: BlockSpec
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.classes is None:  # regressor
        predicted = model.predict(inputs)
        out.update(
            sum_y=float(truth.sum()),
            sum_y2=float((truth.astype(float) ** 2).sum()),
            sse=float(((truth - predicted) ** 2).sum()),
        )
        return out
    # predict() stays the estimator's own rule; one predict_proba serves the log
    # loss and the AUC (it used to run twice).
    out["correct"] = int((model.predict(inputs) == truth).sum())
    proba = _probabilities(model, inputs)
    if proba is not None:
        index_of = np.searchsorted(model.classes_, truth)
        picked = np.clip(proba[np.arange(len(truth)), index_of], 1e-15, 1.0)
        out["log_loss_sum"] = float(-np.log(picked).sum())
    if len(spec.classes) == 2:
        scores = _scores(model, inputs, proba)
        if scores is not None:
            bins = np.minimum((scores * AUC_BINS).astype(np.int64), AUC_BINS - 1)
            positive = truth == model.classes_[1]
            out["pos_hist"] = np.bincount(bins[positive], minlength=AUC_BINS)
            out["neg_hist"] = np.bincount(bins[~positive], minlength=AUC_BINS)
    return out


def score_candidate(
    model: BaseEstimator,
    files: list[str],
    source: FileSource,
    spec: BlockSpec,
    classifier: bool,
    run: str | None = None,
) -> dict[str, float]:
    """A search candidate's validation metrics over every validation file."""
    parts = [
        evaluate_inputs(_load(run, url, index, source, spec, True), model, spec)
        for index, url in enumerate(files)
    ]
    return combine_metrics(parts, classifier)


def combine_metrics(parts: list[dict[str, Any]], classifier: bool) -> dict[str, float]:
    """Add the per-file partial sums up into scikit-learn-named metrics."""
    n = sum(p["n"] for p in parts)
    filled = [p for p in parts if p["n"]]
    if classifier:
        metrics = {"accuracy": sum(p["correct"] for p in filled) / n}
        if all("log_loss_sum" in p for p in filled):
            metrics["log_loss"] = sum(p["log_loss_sum"] for p in filled) / n
        if filled and all("pos_hist" in p for p in filled):
            pos = np.sum([p["pos_hist"] for p in filled], axis=0).astype(float)
            neg = np.sum([p["neg_hist"] for p in filled], axis=0).astype(float)
            if pos.sum() and neg.sum():
                below = np.cumsum(neg) - neg  # negatives scored strictly lower
                metrics["roc_auc"] = float(
                    (pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum())
                )
        return metrics
    sum_y = sum(p["sum_y"] for p in filled)
    sse = sum(p["sse"] for p in filled)
    total = sum(p["sum_y2"] for p in filled) - sum_y**2 / n
    return {"r2": 1.0 - sse / total if total > 0 else float("nan"), "rmse": float(np.sqrt(sse / n))}
