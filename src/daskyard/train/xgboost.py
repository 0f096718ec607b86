"""XGBoost on Dask: DaskQuantileDMatrix, hist, checkpoints and resume.

Takes a validated config and a client; never reads argv or the environment.
"""

from __future__ import annotations

import difflib
import json
import re
import socket
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import dask
import numpy as np
import xgboost
import xgboost.dask as dxgb
from distributed import Client
from xgboost import collective

from daskyard import progress
from daskyard.artifacts import Timings, join_url, package_versions, stable_hash, write_run_outputs
from daskyard.checkpoints import CheckpointStore
from daskyard.cluster import infrastructure_errors, scheduler_host
from daskyard.config import DEFAULT_TRACKER_PORT, XGBoostJobConfig, resolved
from daskyard.data import LoadedData, held_to, identity_settings, load_training_data
from daskyard.errors import ConfigError, DataError, InfrastructureError
from daskyard.recovery import Recovery
from daskyard.train.gpu_workers import gpu_placement

CLASSIFICATION_METRICS = {"binary": ["auc", "logloss"], "multi": ["mlogloss", "merror"]}
REGRESSION_METRICS = ["rmse"]


@dataclass
class XGBoostResult:
    booster: xgboost.Booster
    metrics: dict[str, Any]
    manifest: dict[str, Any]
    output: str


# XGBoost's early stopping maximizes these metrics (and their "@" forms), minimizes the rest.
MAXIMIZED_METRICS = ("auc", "aucpr", "pre", "map", "ndcg")


@dataclass
class EarlyStopping:
    """XGBoost's early stopping (the last validation metric), resumable.

    XGBoost's own callback starts afresh on a resumed booster: it took the first
    resumed round for the best one and trained on past the stop. This state is
    saved with every checkpoint, so a resumed run stops where an uninterrupted
    one does, and a rerun of a run that stopped trains no further.
    """

    rounds: int  # rounds without improvement that stop the training
    best_iteration: int | None = None
    best_score: float | None = None
    best_validation: dict[str, float] = field(default_factory=dict)  # every metric then
    since_best: int = 0

    @property
    def stopped(self) -> bool:
        return self.since_best >= self.rounds

    def update(self, iteration: int, validation: dict[str, float]) -> bool:
        """One round's validation metrics in; whether to stop out."""
        metric = list(validation)[-1]  # XGBoost's default: the last eval_metric
        score = validation[metric]
        maximize = metric != "mape" and metric.startswith(MAXIMIZED_METRICS)
        best = self.best_score
        if best is None or (score > best if maximize else score < best):
            self.best_iteration, self.best_score = iteration, score
            self.best_validation = dict(validation)
            self.since_best = 0
        else:
            self.since_best += 1
        return self.stopped

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps (``rounds`` is config, part of the run id)."""
        state = asdict(self)
        del state["rounds"]
        return state


def scores_at(history: dict[str, list[float]], index: int = -1) -> dict[str, float]:
    """Every metric's value at one round of an XGBoost evaluation history."""
    return {name: float(values[index]) for name, values in history.items()}


class RoundCallback(xgboost.callback.TrainingCallback):
    """Runs on every worker: each stops early alike (the metrics are global);
    rank 0 checkpoints and reports progress."""

    def __init__(
        self,
        store: CheckpointStore,
        checkpoint_every: int,
        progress_every: int,
        total_rounds: int,
        start_round: int,
        topic: str,
        early_stopping: EarlyStopping | None,
    ) -> None:
        self.store = store
        self.checkpoint_every = checkpoint_every
        self.progress_every = progress_every
        self.total_rounds = total_rounds
        self.start_round = start_round
        self.topic = topic
        self.early_stopping = early_stopping

    def after_iteration(self, model: xgboost.Booster, epoch: int, evals_log: dict) -> bool:
        # ``epoch`` restarts at 0 when resuming; the booster knows its real round count.
        done = model.num_boosted_rounds()
        stop = False
        if self.early_stopping is not None:
            stop = self.early_stopping.update(done - 1, scores_at(evals_log["validation"]))
            # Where XGBoost's own early stopping records them, for whoever loads the model.
            model.set_attr(
                best_iteration=str(self.early_stopping.best_iteration),
                best_score=str(self.early_stopping.best_score),
            )
        # Every rank learns at once whether any saw its job leave, so all stop at the
        # same round (a rank that stopped alone would leave the others in a collective).
        if collective.allreduce(np.array([float(_abandoned())]), collective.Op.MAX)[0] > 0:
            return True
        if collective.get_rank() != 0:
            return stop
        # The final model is written by the job itself; a checkpoint of it is never needed.
        # The round that stops early is always checkpointed: a rerun finds the run over.
        if done < self.total_rounds and (done % self.checkpoint_every == 0 or stop):
            metadata = (
                {"early_stopping": self.early_stopping.state()} if self.early_stopping else None
            )
            self.store.save(done, bytes(model.save_raw("ubj")), metadata)
        if done % self.progress_every == 0 or done == self.total_rounds:
            metrics = {
                f"{data}-{name}": score
                for data, by_metric in evals_log.items()
                for name, score in scores_at(by_metric).items()
            }
            progress.publish(
                self.topic,
                {
                    "step": done,
                    "total": self.total_rounds,
                    "start": self.start_round,
                    "metrics": metrics,
                },
            )
        return stop


def _abandoned() -> bool:
    """Whether the job that submitted this training is gone: a killed Job pod, with the
    scheduler still up. The scheduler then cancels its tasks, but a running task runs
    on: this training went on for all its rounds, writing checkpoints the job's next
    pod resumes from, on workers that next pod's training waited for."""
    from distributed import get_worker
    from distributed.worker import thread_state

    try:
        worker, key = get_worker(), thread_state.key
    except (ValueError, AttributeError):  # not in a task (a test calling the callback)
        return False
    task = worker.state.tasks.get(key)
    return task is not None and task.state == "cancelled"


def objective_family(params: dict[str, Any]) -> str:
    objective = str(params.get("objective", "reg:squarederror"))
    prefix = objective.split(":", 1)[0]
    return {"binary": "binary", "multi": "multi"}.get(prefix, "regression")


def training_params(user_params: dict[str, Any]) -> dict[str, Any]:
    params = {"tree_method": "hist", "verbosity": 1, **user_params}
    if "eval_metric" not in params:
        family = objective_family(params)
        params["eval_metric"] = CLASSIFICATION_METRICS.get(family, REGRESSION_METRICS)
    return params


def check_params(params: dict[str, Any], n_features: int, given: Iterable[str] = ()) -> None:
    """Fail before any cluster work on parameters XGBoost rejects, or on those of
    ``given`` (the user's) it would not use (exit 2).

    XGBoost only warns about a parameter it does not know ("Parameters: { ... } are
    not used") and trains without it: ``--param max_dpeth=4`` gave a depth-6 model.
    Only the user's names are judged: daskyard's ``tree_method: hist`` default is
    unused under ``booster: gblinear`` and that is fine.
    """
    family = objective_family(params)
    classes = int(params.get("num_class", 2)) if family == "multi" else 2
    features = np.zeros((classes, max(n_features, 1)), dtype=np.float32)
    labels = np.arange(classes, dtype=np.float32) if family != "regression" else np.zeros(classes)
    # Verbosity 1 for the "not used" warning, recorded here rather than printed.
    probe = {**params, "nthread": 1, "verbosity": 1, "validate_parameters": True}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            booster = xgboost.train(
                probe, xgboost.DMatrix(features, label=labels), num_boost_round=1
            )
        except xgboost.core.XGBoostError as exc:
            first = str(exc).strip().splitlines()[0]
            if family == "multi" and "num_class" not in params:
                first += "; a multi: objective needs num_class (--param num_class=N)"
            raise ConfigError(
                f"XGBoost rejects the parameters in xgboost.params / --param: {first}"
            ) from None
    unused = {
        name
        for warning in caught
        for names in UNUSED_PARAMS.findall(str(warning.message))
        for name in re.findall(r'"([^"]+)"', names)
    }
    refused = sorted(unused & set(given))
    if refused:
        name = refused[0]
        hint = DASKYARD_SETTINGS.get(name) or _closest_known(name, booster)
        raise ConfigError(
            f"XGBoost does not use the parameter '{name}' in xgboost.params / --param"
            f"{hint} (it would train without it)"
        )


def _closest_known(name: str, booster: xgboost.Booster) -> str:
    """A did-you-mean from the parameter names the booster's saved configuration holds."""
    known = sorted(_config_keys(json.loads(booster.save_config())))
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


# Names from XGBoost's other APIs for what daskyard sets itself.
DASKYARD_SETTINGS = {
    name: "; the number of rounds is xgboost.rounds / --rounds"
    for name in ("n_estimators", "num_boost_round", "num_round")
} | {"early_stopping_rounds": "; set xgboost.early_stopping_rounds in a config file"}

# How XGBoost names the parameters it was given and does not know (learner.cc).
UNUSED_PARAMS = re.compile(r"Parameters: \{(.*?)\} (?:are|is) not used")


def _config_keys(node: Any) -> set[str]:
    """Every key of a booster's saved configuration: the parameter names it knows."""
    if isinstance(node, dict):
        return set(node).union(*(_config_keys(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_config_keys(v) for v in node))
    return set()


def check_labels(data: LoadedData, params: dict[str, Any]) -> None:
    family = objective_family(params)
    labels, target = data.label_summary, data.columns.target
    if labels["min"] == labels["max"]:
        raise DataError(
            f"target column '{target}' holds the single value {labels['min']:g} in every row: "
            "there is nothing to learn; check the data or the target column"
        )
    if family == "binary" and (labels["min"] < 0 or labels["max"] > 1):
        raise DataError(
            f"target column '{target}' holds values in [{labels['min']:g}, {labels['max']:g}] but "
            f"objective {params.get('objective')} needs labels in [0, 1]"
        )
    if family == "multi":
        classes = int(params.get("num_class", 0))
        if not labels["integral"] or labels["min"] < 0 or labels["max"] >= classes:
            raise DataError(
                f"target column '{target}' must hold class indices 0..{classes - 1} for "
                f"objective {params.get('objective')}: found [{labels['min']:g}, {labels['max']:g}]"
            )


def run_identity(config: XGBoostJobConfig, data_fingerprint: str) -> str:
    """Same config and same data -> same run id -> a restarted job finds its checkpoints."""
    identity = identity_settings(resolved(config))
    identity.pop("cluster", None)  # where it runs does not change the model
    for key in ("progress_every", "checkpoint_every", "tracker_port", "tracker_host"):
        identity["xgboost"].pop(key, None)
    return "xgb-" + stable_hash({"config": identity, "data": data_fingerprint})


def _collective_config(
    client: Client, config: XGBoostJobConfig, embedded: bool, stream: TextIO | None
) -> collective.Config:
    host = config.xgboost.tracker_host or scheduler_host(client)
    port = config.xgboost.tracker_port
    if port is None:
        port = 0 if embedded else DEFAULT_TRACKER_PORT
    if port:
        port = _free_tracker_port(client, host, port, config.xgboost.tracker_ports, stream)
    return collective.Config(tracker_host_ip=host, tracker_port=port, retry=3, timeout=600)


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_tracker_port(
    client: Client, host: str, first: int, count: int, stream: TextIO | None
) -> int:
    """The first port of the declared range that the scheduler can bind right now.

    Checked on the scheduler, where the tracker runs. When every one is taken,
    0 lets XGBoost pick any port: fine without a NetworkPolicy, and where one
    blocks it, the line said here explains the failure that follows.
    """
    ports = range(first, min(first + count, 65536))
    for port in ports:
        if client.run_on_scheduler(_port_is_free, host, port):
            return port
    progress.say(
        stream,
        f"warning: every XGBoost tracker port {first}-{ports[-1]} on the scheduler ({host}) is "
        "taken, by trainings of the last minute (a port stays busy about 60 s) or by trackers "
        "of trainings that failed (dmlc/xgboost#7959); using a random port, which a "
        "NetworkPolicy may block: widen xgboost.tracker_ports, or restart the scheduler pod",
    )
    return 0


def _is_lost_peer(exc: BaseException) -> bool:
    """XGBoost's own report of a lost peer: a broken collective, or its task moved."""
    if isinstance(exc, xgboost.core.XGBoostError):
        return isinstance(_classify_xgboost_error(exc), InfrastructureError)
    text = str(exc)
    # xgboost.dask refuses to run a rank on another worker than the one holding its data.
    return isinstance(exc, ValueError | RuntimeError) and (
        "Invalid worker address" in text or "Missing required workers" in text
    )


def _regression_r2(client: Client, booster: xgboost.Booster, data: LoadedData) -> float:
    """R² on the validation rows, with dataframe reductions only.

    The predictions keep the validation frame's partitions and index, so the
    arithmetic pairs them partition by partition. Not via ``to_dask_array``: on
    a frame read from futures (daskyard's spread reads) dask 2026.8 builds a
    broken array graph from it ("pop from an empty set", a cycle, or cancelled
    futures, depending on the partition count).
    """
    features = list(data.columns.features)
    truth = data.validation[data.columns.target]
    predictions = dxgb.predict(client, booster, data.validation[features])
    residual, total = dask.compute(
        ((truth - predictions) ** 2).sum(), ((truth - truth.mean()) ** 2).sum()
    )
    return float(1.0 - residual / total) if total > 0 else float("nan")


def train_xgboost(
    config: XGBoostJobConfig,
    client: Client,
    *,
    embedded: bool = False,
    stream: TextIO | None = None,
) -> XGBoostResult:
    """Load, validate, train (resuming from checkpoints), evaluate, write artifacts."""
    timings = Timings()
    params = training_params(config.xgboost.params)
    resource, gpu_workers = gpu_placement(client, params)
    # On GPU workers, every task of the job: XGBoost trains on whichever worker holds
    # a partition, and a CPU worker beside them must hold none (see held_to).
    with held_to(resource):
        return _train(config, client, params, resource, gpu_workers, timings, embedded, stream)


def _train(
    config: XGBoostJobConfig,
    client: Client,
    params: dict[str, Any],
    resource: str | None,
    gpu_workers: int,
    timings: Timings,
    embedded: bool,
    stream: TextIO | None,
) -> XGBoostResult:
    data = load_training_data(client, config.data, config.storage_options, resource=resource)
    check_params(params, len(data.columns.features), given=config.xgboost.params)
    check_labels(data, params)
    timings.lap("load_and_validate")
    where = f", on {progress.count(gpu_workers, 'GPU worker')}" if gpu_workers else ""
    progress.say(
        stream,
        f"data: {data.rows['train']:,} training rows, {data.rows['validation']:,} validation rows, "
        f"{len(data.columns.features)} features, "
        f"{progress.count(data.train.npartitions, 'partition')}{where}",
    )

    # Not the blocks (DataPlan.layout): a booster resumes on any partitioning, and
    # a large file's blocks follow the number of workers, which may change.
    run_id = run_identity(config, data.plan.fingerprint)
    total = config.xgboost.rounds
    store = CheckpointStore(join_url(config.checkpoint_url, run_id), "ubj", config.storage_options)

    features = list(data.columns.features)
    target = data.columns.target
    train_x, train_y = data.train[features], data.train[target]
    valid_x, valid_y = data.validation[features], data.validation[target]
    # Same collection, same partitions: xgboost.dask pairs X and y partition by partition.
    assert train_x.npartitions == train_y.npartitions
    categorical = bool(data.columns.categorical)
    # The training matrix's bins must be the booster's: XGBoost refuses any other max_bin.
    max_bin = params.get("max_bin")
    stopping_rounds = config.xgboost.early_stopping_rounds
    first_start: int | None = None

    def attempt(
        number: int,
    ) -> tuple[dict[str, Any], int, dict[str, Any], collective.Config | None]:
        """Resume from the newest trusted checkpoint on the workers there are now."""
        nonlocal first_start
        if number > 1:
            timings.lap("lost_attempts")  # the time the failed attempts took
        resumed = store.latest(
            lambda raw: xgboost.Booster(model_file=bytearray(raw)),
            below=total,
            warn=lambda line: progress.say(stream, line),
        )
        start_round, base_model = (resumed[0], resumed[1]) if resumed else (0, None)
        if first_start is None:
            first_start = start_round
        early_stopping: EarlyStopping | None = None
        stopping_state: dict[str, Any] = {}
        if stopping_rounds:
            if resumed:
                stopping_state = store.metadata(start_round).get("early_stopping", {})
            early_stopping = EarlyStopping(stopping_rounds, **stopping_state)
        if early_stopping is not None and early_stopping.stopped:
            progress.say(
                stream, f"run {run_id} stopped early at round {start_round}: nothing to resume"
            )
            return {"booster": base_model, "history": {}}, start_round, stopping_state, None
        if resumed:
            progress.say(stream, f"resuming run {run_id} from checkpoint at round {start_round}")
        coll_cfg = _collective_config(client, config, embedded, stream)
        # Rebuilt every attempt: partitions held by a lost worker are recomputed by
        # dask on the workers that remain, and the new matrix is spread over them.
        dtrain = dxgb.DaskQuantileDMatrix(
            client, train_x, train_y, max_bin=max_bin, enable_categorical=categorical
        )
        dvalid = dxgb.DaskQuantileDMatrix(
            client, valid_x, valid_y, max_bin=max_bin, ref=dtrain, enable_categorical=categorical
        )
        timings.lap("build_matrix")
        topic = progress.new_topic("xgboost")
        callback = RoundCallback(
            store,
            config.xgboost.checkpoint_every,
            config.xgboost.progress_every,
            total,
            start_round,
            topic,
            early_stopping,
        )
        with progress.ProgressPrinter(client, topic, "round", stream):
            result = dxgb.train(
                client,
                params,
                dtrain,
                num_boost_round=total - start_round,
                evals=[(dvalid, "validation")],
                xgb_model=base_model,
                callbacks=[callback],
                verbose_eval=False,
                coll_cfg=coll_cfg,
            )
        timings.lap("train")
        return result, start_round, stopping_state, coll_cfg

    recovery = Recovery(client, config.cluster, stream)
    try:
        result, start_round, stopping_state, coll_cfg = recovery.run(attempt, is_loss=_is_lost_peer)
    except xgboost.core.XGBoostError as exc:
        raise _classify_xgboost_error(exc) from None
    except infrastructure_errors() as exc:
        raise InfrastructureError(
            f"training lost contact with the cluster ({type(exc).__name__}: {exc}); "
            "rerun the job to resume from the last checkpoint"
        ) from None

    booster: xgboost.Booster = result["booster"]
    history = result["history"].get("validation", {})
    best = None
    if stopping_rounds:
        # The history covers only this process's rounds: replayed from the state it
        # resumed with, it gives the best round's metrics even from before the resume.
        early_stopping = EarlyStopping(stopping_rounds, **stopping_state)
        for iteration in range(start_round, booster.num_boosted_rounds()):
            early_stopping.update(iteration, scores_at(history, iteration - start_round))
        best, validation = early_stopping.best_iteration, early_stopping.best_validation
    else:
        validation = scores_at(history)
    if objective_family(params) == "regression":
        validation["r2"] = _regression_r2(client, booster, data)
    timings.lap("evaluate")

    metrics = {
        "validation": validation,
        "rounds": booster.num_boosted_rounds(),
        "best_iteration": best,
        "rows": data.rows,
    }
    manifest = {
        "run_id": run_id,
        "kind": "xgboost",
        "config": resolved(config),
        "versions": package_versions(),
        "data": {
            "fingerprint": data.plan.fingerprint,
            "sources": data.plan.described(),
            "rows": data.rows,
            "features": features,
            "target": target,
        },
        "training": {
            "params": params,
            "rounds": booster.num_boosted_rounds(),
            "resumed_from_round": first_start,
            "last_attempt_from_round": start_round,
            "recovery": recovery.summary(),
            "workers": len(client.scheduler_info(n_workers=-1)["workers"]),
            "gpu_workers": gpu_workers or None,  # the GPU workers it trained on; None: CPUs
            # None: the run had stopped early already, nothing trained.
            "tracker": f"{coll_cfg.tracker_host_ip}:{coll_cfg.tracker_port}" if coll_cfg else None,
            "checkpoints": store.url,
        },
    }
    model = bytes(booster.save_raw("ubj"))
    manifest["timings"] = timings.as_dict()
    write_run_outputs(
        config.output, {"model.ubj": model}, metrics, manifest, config.storage_options
    )
    return XGBoostResult(booster=booster, metrics=metrics, manifest=manifest, output=config.output)


# XGBoost reports a broken collective (a lost peer, an unreachable tracker) on the
# lines below its first one, which only names the source file.
COLLECTIVE_FAILURE_MARKERS = (
    "allreduce",
    "allgather",
    "broadcast",
    "socket",
    "poll error",
    "connect",
    "tracker",
    "timed out",
)


# Seen on an H200 with device=cuda and 2 workers: "Check failed: n_uniques ==
# root.World() (1 vs. 2) : Multiple processes within communication group running on
# same CUDA device is not supported. GPU-<uuid>".
SHARED_GPU_MARKER = "running on same cuda device"


def _classify_xgboost_error(exc: Exception) -> Exception:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lowered, whole = text.lower(), str(exc).lower()
    if SHARED_GPU_MARKER in whole:  # a retry on the same workers fails the same way
        return ConfigError(
            "XGBoost refuses two workers on one GPU (it trains with one worker per GPU): "
            "give each GPU worker its own GPU (the chart's GPU worker group asks for "
            "nvidia.com/gpu: 1 per worker), or train on CPU"
        )
    if any(marker in whole for marker in COLLECTIVE_FAILURE_MARKERS):
        return InfrastructureError(
            f"XGBoost's collective communication failed: {text}; check that workers reach the "
            "tracker port on the scheduler, then rerun to resume"
        )
    if "label" in lowered:
        return DataError(f"XGBoost rejects the target values: {text}")
    if "parameter" in lowered or "objective" in lowered:
        return ConfigError(f"XGBoost rejects the parameters: {text}")
    return exc
