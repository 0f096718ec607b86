"""Incremental scikit-learn: stream blocks through ``partial_fit``, out of core.

Each file is one block (a large file several: ``daskyard.file_blocks``),
read, checked, scaled and fitted on one worker, the workers in turn; only the
model (a future, never through the client) moves on, and a worker reads its next
block once its last fit is done, so at most two blocks per worker are in memory
at any time, whatever the data set's size. With
``replicas`` R > 1, R copies of a linear model fit R blocks at once and are
averaged after each round (``daskyard.train.averaging``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TextIO

import numpy as np
from distributed import Client, Future, wait
from sklearn.base import BaseEstimator, is_classifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from daskyard import progress
from daskyard.artifacts import Timings, join_url, package_versions, stable_hash, write_run_outputs
from daskyard.checkpoints import CheckpointStore
from daskyard.cluster import infrastructure_errors
from daskyard.config import IncrementalJobConfig, JobConfig, resolved
from daskyard.data import DataPlan, check_rows, identity_settings, plan_data
from daskyard.errors import ConfigError, DataError, InfrastructureError
from daskyard.estimators import build_estimator, is_linear_model, resolve_estimator
from daskyard.recovery import Recovery, workers_now
from daskyard.train.averaging import average_models, check_replicas
from daskyard.train.blocks import (
    MAX_CLASSES,
    BlockSpec,
    FileSource,
    combine_metrics,
    combine_summaries,
    dumps_model,
    evaluate_file,
    file_summary,
    fit_block,
    load_block_after,
    save_checkpoint,
    validation_summary,
)

# Modules whose types a daskyard checkpoint may hold (skops refuses anything else).
TRUSTED_MODULE_PREFIXES = ("sklearn.", "numpy.", "builtins.")


@dataclass
class IncrementalResult:
    model: BaseEstimator
    metrics: dict[str, Any]
    manifest: dict[str, Any]
    output: str


# ---------------------------------------------------------------- client-side run


@dataclass(frozen=True)
class FirstPass:
    rows: dict[str, int]
    classes: tuple[Any, ...] | None  # labels of the training files (held-out rows too)
    validation_classes: tuple[Any, ...] | None  # labels of the validation files
    scaler: StandardScaler | None


def first_pass(
    client: Client,
    plan: DataPlan,
    want_classes: bool,
    want_scaler: bool,
    run: str | None = None,
) -> FirstPass:
    """One read of every file on the workers, one task per file: row counts, classes and
    scaling moments, merged here. With ``run``, each worker keeps the files it read
    in its block cache under that run (see ``daskyard.train.cache``)."""
    train = FileSource.of(plan.train, plan.columns, plan.split)
    files = list(plan.train.files)
    summaries = client.map(
        file_summary,
        files,
        range(len(files)),
        source=train,
        want_classes=want_classes,
        want_moments=want_scaler,
        run=run,
        pure=False,
    )
    checked = []
    if plan.validation is not None:
        valid = plan.validation
        checked = client.map(
            validation_summary,
            list(valid.files),
            range(len(valid.files)),
            source=FileSource.of(valid, plan.columns),
            want_classes=want_classes,
            run=run,
            pure=False,
        )
    summary = combine_summaries(client.gather(summaries))
    validation = combine_summaries(client.gather(checked)) if checked else None
    train_rows = summary["train_rows"]
    held_out = validation["rows"] if validation else summary["rows"] - train_rows
    scaler = None
    if want_scaler:
        scaler = _fitted_scaler(
            summary["mean"], summary["var"], train_rows, list(plan.columns.features)
        )
    return FirstPass(
        rows={"train": train_rows, "validation": held_out},
        classes=summary.get("classes"),
        validation_classes=validation.get("classes") if validation else None,
        scaler=scaler,
    )


def _fitted_scaler(
    mean: np.ndarray, var: np.ndarray, rows: int, features: list[str]
) -> StandardScaler:
    """A StandardScaler from moments merged over the files (what fit() would compute)."""
    scaler = StandardScaler()
    scaler.mean_ = np.asarray(mean, dtype=np.float64)
    scaler.var_ = np.asarray(var, dtype=np.float64)
    scale = np.sqrt(scaler.var_)
    scaler.scale_ = np.where(scale < 10 * np.finfo(np.float64).eps, 1.0, scale)  # as sklearn does
    scaler.n_samples_seen_ = rows
    scaler.n_features_in_ = len(features)
    scaler.feature_names_in_ = np.asarray(features, dtype=object)
    return scaler


def model_classes(
    found: FirstPass,
    declared: list[Any] | None,
    target: str,
    stream: TextIO | None,
    key: str = "incremental.classes",
) -> tuple[Any, ...]:
    """The classes the model is told about: ``declared`` (the config's ``key``), or
    every label of the training and validation files.

    A validation label the training files never hold is kept (partial_fit must
    know every class it is scored on, or scoring fails) and reported: the model
    cannot predict it, so its rows count as errors. A label outside ``declared``
    is refused: partial_fit would stop on it midway through the stream.
    """
    training = set(found.classes or ())
    validation = set(found.validation_classes or ())
    if declared is not None:
        undeclared = sorted((training | validation) - set(declared))
        if undeclared:
            raise DataError(
                f"target column '{target}' holds {undeclared[:5]}, which {key} "
                f"{list(declared)} leaves out: add them to {key}, or drop those rows"
            )
        return tuple(declared)
    unseen = sorted(validation - training)
    if unseen:
        progress.say(
            stream,
            f"warning: validation labels {unseen[:5]} of '{target}' never occur in the training "
            "data: the model cannot predict them, so their rows count as errors",
        )
    return tuple(sorted(training | validation))


def check_classes(classes: tuple[Any, ...], target: str, estimator_path: str) -> None:
    values = np.asarray(classes)
    continuous = values.dtype.kind == "f" and not np.all(np.mod(values, 1) == 0)
    if continuous or len(classes) > MAX_CLASSES:
        raise DataError(
            f"target column '{target}' holds continuous values ({len(classes)} distinct) but "
            f"{estimator_path} is a classifier: use a regressor or discrete labels"
        )
    if len(classes) < 2:
        raise DataError(
            f"target column '{target}' has a single class {list(classes)}: a "
            "classifier needs at least two"
        )


def serialized_on_a_worker(client: Client, model: Any) -> bytes:
    """The model's skops bytes, made by a worker: workers have imported skops for
    the checkpoints already, whereas the job's own process would import it for this
    one call (about 1 s, and 140 MiB)."""
    return client.submit(dumps_model, model, pure=False).result()


def load_checkpoint(raw: bytes) -> BaseEstimator:
    import skops.io as sio  # here, not at the top: skops imports every scikit-learn module

    untrusted = sio.get_untrusted_types(data=raw)
    refused = [t for t in untrusted if not t.startswith(TRUSTED_MODULE_PREFIXES)]
    if refused:
        raise ValueError(f"checkpoint holds types outside scikit-learn: {refused}")
    return sio.loads(raw, trusted=untrusted)


def block_order(files: int, epoch: int, seed: int) -> np.ndarray:
    """Seeded shuffled file order of one epoch: the same on every (re)run."""
    return np.random.default_rng([seed, epoch]).permutation(files)


def run_identity(config: IncrementalJobConfig, layout: str) -> str:
    identity = identity_settings(resolved(config))
    identity.pop("cluster", None)
    for key in ("progress_every", "checkpoint_every", "prefetch"):
        identity["incremental"].pop(key, None)
    return "inc-" + stable_hash({"config": identity, "data": layout})


@dataclass
class Prepared:
    """An estimator, checked data and the first pass's results: ready to stream."""

    estimator: BaseEstimator
    classifier: bool
    plan: DataPlan
    rows: dict[str, int]
    spec: BlockSpec


def prepare_stream(
    client: Client,
    config: JobConfig,
    settings: Any,
    params: dict[str, Any] | None = None,
    hold_out_files: bool = False,
    cache_run: Callable[[DataPlan], str] | None = None,
    stream: TextIO | None = None,
) -> Prepared:
    """Check the estimator (before any work), plan the data, run the first pass.

    ``settings`` carries estimator, params, classes, scale and allowed_packages (and
    replicas, for incremental training).
    With ``hold_out_files``, a seeded share of whole files becomes the validation
    set when none is given, so evaluating many models reads only those files.
    With ``cache_run``, the first pass leaves the files it read in the workers'
    block caches under ``cache_run(plan)``, for a job that reads through them.
    """
    estimator_cls = resolve_estimator(settings.estimator, settings.allowed_packages)
    estimator = build_estimator(
        estimator_cls,
        settings.params if params is None else params,
        settings.estimator,
        seed=config.data.seed,
    )
    check_replicas(estimator, getattr(settings, "replicas", 1), settings.estimator)
    classifier = is_classifier(estimator)
    if config.data.categorical:
        raise ConfigError(
            "data.categorical is not supported by incremental training: encode "
            "those columns as numbers first"
        )
    plan = plan_data(
        client,
        config.data,
        config.storage_options,
        numeric_target=not classifier,
        missing_features_allowed=False,
        categorical_allowed=False,
    )
    if hold_out_files and plan.validation is None:
        plan = _hold_out_files(plan, config.data.validation_fraction, config.data.seed)
    scale = settings.scale if settings.scale is not None else is_linear_model(estimator)
    try:
        run = cache_run(plan) if cache_run is not None else None
        found = first_pass(client, plan, classifier, scale, run)
    except infrastructure_errors() as exc:
        raise _lost(exc) from None
    rows, scaler, classes = found.rows, found.scaler, None
    check_rows(rows, plan, config.data)
    if classifier:
        key = (
            "incremental.classes" if isinstance(config, IncrementalJobConfig) else "search.classes"
        )
        classes = model_classes(found, settings.classes, plan.columns.target, stream, key)
        check_classes(classes, plan.columns.target, settings.estimator)
    # Every read checks the features (no NaN or inf: missing_features_allowed=False)
    # and a numeric target; a classifier's labels passed check_classes (inf is not a
    # whole number), so no block needs scikit-learn's own check again.
    spec = BlockSpec(
        plan.columns.features,
        plan.columns.target,
        classes if classifier else None,
        scaler,
        checked_finite=True,
    )
    return Prepared(estimator, classifier, plan, rows, spec)


def _hold_out_files(plan: DataPlan, fraction: float, seed: int) -> DataPlan:
    files = plan.train.files
    if len(files) < 2:
        raise DataError(
            f"'{plan.train.url}' is a single file: a search needs --validation or at least "
            "two files, so that whole files can be held out"
        )
    order = np.random.default_rng([seed, 1 << 20]).permutation(len(files))
    held = max(1, round(len(files) * fraction))
    return replace(
        plan,
        train=plan.train.subset(sorted(order[held:])),
        validation=plan.train.subset(sorted(order[:held]), f"{plan.train.url} (held-out files)"),
        split=None,
    )


def train_incremental(
    config: IncrementalJobConfig, client: Client, *, stream: TextIO | None = None
) -> IncrementalResult:
    timings = Timings()
    settings = config.incremental
    prepared = prepare_stream(client, config, settings, stream=stream)
    estimator, classifier, plan, rows, spec = (
        prepared.estimator,
        prepared.classifier,
        prepared.plan,
        prepared.rows,
        prepared.spec,
    )
    classes, scaler = spec.classes, spec.scaler
    timings.lap("plan_and_first_pass")
    files = plan.train.files
    total = settings.epochs * len(files)
    progress.say(
        stream,
        f"data: {rows['train']:,} training rows, {rows['validation']:,} "
        f"validation rows, {len(spec.features)} features, {progress.count(len(files), 'block')} "
        f"x {progress.count(settings.epochs, 'epoch')}; scaling {'on' if scaler else 'off'}"
        + (f"; {settings.replicas} replicas" if settings.replicas > 1 else ""),
    )

    run_id = run_identity(config, plan.layout)
    store = CheckpointStore(
        join_url(config.checkpoint_url, run_id), "skops", config.storage_options
    )
    first_start: int | None = None

    def attempt(number: int) -> tuple[BaseEstimator, list[dict], int]:
        """Stream from the newest trusted checkpoint (or the start), then evaluate."""
        nonlocal first_start
        if number > 1:
            timings.lap("lost_attempts")
        resumed = store.latest(
            load_checkpoint, below=total, warn=lambda line: progress.say(stream, line)
        )
        start, model = resumed if resumed else (0, estimator)
        if first_start is None:
            first_start = start
        if resumed:
            progress.say(stream, f"resuming run {run_id} from checkpoint at block {start}")
        fitted = _stream(
            client, plan, spec, model, store, start, total, settings, config.data.seed, stream
        )
        timings.lap("train")
        parts = _evaluate(client, plan, fitted, spec)
        final = fitted.result()
        timings.lap("evaluate")
        return final, parts, start

    recovery = Recovery(client, config.cluster, stream)
    try:
        final, parts, start = recovery.run(attempt)
    except infrastructure_errors() as exc:
        raise _lost(exc) from None
    validation = combine_metrics(parts, classifier)

    pipeline = Pipeline([("scale", scaler), ("model", final)]) if scaler is not None else final
    metrics = {
        "validation": validation,
        "blocks_seen": total,
        "epochs": settings.epochs,
        "rows": rows,
    }
    manifest = {
        "run_id": run_id,
        "kind": "incremental",
        "config": resolved(config),
        "versions": package_versions(),
        "data": {
            "fingerprint": plan.fingerprint,
            "sources": plan.described(),
            "rows": rows,
            "features": list(spec.features),
            "target": spec.target,
            "classes": [_plain(c) for c in classes] if classifier else None,
        },
        "training": {
            "estimator": settings.estimator,
            "params": final.get_params(deep=False),
            "blocks": len(files),
            "blocks_seen": total,
            "resumed_from_block": first_start,
            "last_attempt_from_block": start,
            "recovery": recovery.summary(),
            "scaling": scaler is not None,
            "replicas": settings.replicas,
            "workers": len(client.scheduler_info(n_workers=-1)["workers"]),
            "checkpoints": store.url,
        },
        "timings": timings.as_dict(),
    }
    write_run_outputs(
        config.output,
        {"model.skops": serialized_on_a_worker(client, pipeline)},
        metrics,
        manifest,
        config.storage_options,
    )
    return IncrementalResult(pipeline, metrics, manifest, config.output)


def _lost(exc: BaseException) -> InfrastructureError:
    return InfrastructureError(
        f"training lost contact with the cluster or its workers ({type(exc).__name__}: "
        f"{str(exc)[:300]}); rerun the job to resume from the last checkpoint"
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _stream(
    client: Client,
    plan: DataPlan,
    spec: BlockSpec,
    estimator: BaseEstimator,
    store: CheckpointStore,
    start: int,
    total: int,
    settings: Any,
    seed: int,
    stream: TextIO | None,
) -> Future:
    """Submit load and fit steps with at most ``prefetch`` blocks loaded ahead."""
    files, source = plan.train.files, plan.train
    reader = FileSource.of(source, plan.columns, plan.split)
    per_epoch = len(files)
    orders: dict[int, np.ndarray] = {}

    def file_at(step: int) -> int:
        epoch = step // per_epoch
        if epoch not in orders:
            orders[epoch] = block_order(per_epoch, epoch, seed)
        return int(orders[epoch][step % per_epoch])

    # The model goes to the data, not the data to a fitter: step i's block is read on
    # worker i mod N and fitted there, and only the model (a few KiB) moves on to
    # the next worker. A worker reads its next block only once its previous fit is
    # done (the read waits on that fit's model), so no read sits in front of a fit
    # on the worker's one thread: while one worker fits, the others read. One fitter
    # fed by the other workers moved every block (56 MiB per 500k rows x 28) and held
    # the blocks in flight: a 1 GiB out-of-core worker peaked at 0.58 of its limit,
    # 0.42 now, and streaming 20M rows on 2 workers took 9.4 s on average, 9.0 now.
    # Restrictions are loose, so a departed worker's steps run elsewhere.
    workers = workers_now(client)
    placed = {"allow_other_workers": True, "pure": False}

    def home(step: int) -> list[str]:
        return [workers[step % len(workers)]]

    # Scattered, not put into the first task: dask would silently replay a lost chain of
    # models from the very first block, whereas a lost scattered start surfaces, and the
    # attempt restarts from the last checkpoint. (A failed scatter is retried the same way.)
    model = client.scatter(estimator, workers=home(start))
    models: dict[int, Future] = {}  # step -> its fit, while a read waits on it
    loads: deque[Future] = deque()
    next_load = start
    replicas = settings.replicas
    # A round is ``replicas`` steps fitted from the same model (one step without
    # replicas). Rounds end at multiples of ``replicas``, and so do checkpoints: a
    # resumed run starts at a round's start and makes the same rounds.
    round_fits: list[Future] = []
    round_start = start
    previous: tuple[Future, int, int] | None = None  # the last round: model, start, end
    checkpoints: list[Future] = []
    started = time.monotonic()

    def load(step: int) -> Future:
        index = file_at(step)
        after = models.pop(step - len(workers), None)  # that worker's previous fit
        return client.submit(
            load_block_after, after, files[index], index, reader, spec, workers=home(step), **placed
        )

    def report(seen: int) -> None:
        elapsed = time.monotonic() - started
        eta = elapsed / (seen - start) * (total - seen)
        progress.say(
            stream,
            f"block {seen}/{total}  epoch {(seen - 1) // per_epoch + 1}/"
            f"{total // per_epoch}  elapsed {progress.format_seconds(elapsed)}"
            f"  eta {progress.format_seconds(eta)}",
        )

    def crossed(every: int, begin: int, end: int) -> bool:
        """Whether the blocks seen went past a multiple of ``every`` from begin to end."""
        return end // every > begin // every

    for step in range(start, total):
        # A read may be submitted once the fit it waits on is: at most one per worker
        # ahead, and at most ``prefetch``. (Within a round nothing waits, so a round's
        # copies are all submitted at once whatever the prefetch.)
        while (
            next_load < total
            and next_load - step < settings.prefetch
            and next_load - len(workers) < step
        ):
            loads.append(load(next_load))
            next_load += 1
        block = loads.popleft()
        fitted = client.submit(fit_block, model, block, spec, workers=home(step), **placed)
        del block
        if step + len(workers) < total:
            models[step] = fitted
        round_fits.append(fitted)
        seen = step + 1
        if seen % replicas and seen < total:
            continue  # the round's other copies fit side by side, from the same model
        if replicas == 1:
            model = fitted
        else:
            # Where the round's last copy was made; the others (a few KiB each) come to it.
            model = client.submit(average_models, model, *round_fits, workers=home(step), **placed)
        if previous is not None:
            # Bounds the pipeline: one round queued behind the running one. Progress is
            # told here, of the finished round, so that the queue never runs dry.
            done, began, ended = previous
            wait(done)
            if done.status == "error":
                done.result()  # raises the step's error now, not after the whole stream
            if crossed(settings.progress_every, began, ended):
                report(ended)
        if seen < total and crossed(settings.checkpoint_every, round_start, seen):
            # Written where the model was made, while the next round fits.
            checkpoints.append(
                client.submit(save_checkpoint, model, store, seen, workers=home(step), **placed)
            )
        previous = (model, round_start, seen)
        round_fits, round_start = [], seen
    wait(model)
    if model.status != "error":
        report(total)
    client.gather(checkpoints)
    return model


def _evaluate(client: Client, plan: DataPlan, model: Future, spec: BlockSpec) -> list[dict]:
    source = plan.validation or plan.train
    split = None if plan.validation else plan.split
    futures = client.map(
        evaluate_file,
        list(source.files),
        range(len(source.files)),
        source=FileSource.of(source, plan.columns, split),
        model=model,
        spec=spec,
        pure=False,
    )
    return client.gather(futures)
