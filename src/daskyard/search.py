"""Incremental hyperparameter search: successive halving over partial_fit budgets.

Candidates are sampled (seeded) from ``--space`` specs. Every rung trains each
surviving candidate on its next share of blocks in one task per candidate, so
the rung's tasks run in parallel across the workers (and are what makes an
autoscaled cluster grow); each model stays a future on the cluster between
rungs. Only the top ``1/reduction`` go on, with ``reduction`` times the budget.

Written for current dask/distributed: dask-ml's IncrementalSearchCV is broken
on dask >= 2025.3 (dask-ml#1016).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from distributed import Client, Future
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from daskyard import progress
from daskyard.artifacts import (
    Timings,
    join_url,
    json_bytes,
    package_versions,
    stable_hash,
    url_to_fs,
    write_run_outputs,
)
from daskyard.checkpoints import CheckpointStore
from daskyard.cluster import infrastructure_errors
from daskyard.config import SearchJobConfig, resolved
from daskyard.data import DataPlan, identity_settings
from daskyard.errors import ConfigError, InfrastructureError
from daskyard.estimators import build_estimator, resolve_estimator
from daskyard.recovery import Recovery
from daskyard.space import parse_space, sample_candidates
from daskyard.train.blocks import (
    BlockSpec,
    FileSource,
    save_scored_checkpoint,
    score_candidate,
    train_rung,
)
from daskyard.train.cache import forget
from daskyard.train.incremental import (
    _lost,
    _plain,
    block_order,
    load_checkpoint,
    prepare_stream,
    serialized_on_a_worker,
)

# Higher is better for these; the others (log_loss, rmse) are minimised.
MAXIMISED = {"accuracy", "roc_auc", "r2"}


# ---------------------------------------------------------------- the schedule


def rung_schedule(candidates: int, reduction: int, max_blocks: int) -> list[tuple[int, int]]:
    """(survivors, cumulative blocks) per rung: budgets grow by ``reduction`` each rung."""
    rungs = math.floor(math.log(candidates, reduction) + 1e-9) + 1
    schedule = []
    for rung in range(rungs):
        survivors = math.ceil(candidates / reduction**rung)
        blocks = max(1, math.ceil(max_blocks / reduction ** (rungs - 1 - rung)))
        if schedule and blocks <= schedule[-1][1]:
            continue  # too little data for another distinct budget
        schedule.append((survivors, blocks))
    return schedule


# ---------------------------------------------------------------- the run


@dataclass
class Candidate:
    id: int
    params: dict[str, Any]
    store: CheckpointStore
    model: Future | BaseEstimator | None = None  # an estimator until its first task
    blocks: int = 0
    restarts: int = 0  # times this candidate was restored from its checkpoint
    scores: list[dict[str, Any]] = field(default_factory=list)
    stopped_at_rung: int | None = None
    error: str | None = None  # why its training failed, when it did: it was dropped

    def score_at(self, rung: int) -> dict[str, Any] | None:
        """Its validation scores at that rung, if it was scored there."""
        return next((s["validation"] for s in self.scores if s["rung"] == rung), None)

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "params": {k: _plain(v) for k, v in self.params.items()},
            "budget_blocks": self.blocks,
            "scores": self.scores,
            "stopped_at_rung": self.stopped_at_rung,
            "restarts": self.restarts,
            "error": self.error,
        }


@dataclass
class SearchResult:
    model: Any
    metrics: dict[str, Any]
    results: list[dict[str, Any]]
    manifest: dict[str, Any]
    output: str


def search_incremental(
    config: SearchJobConfig, client: Client, *, stream: TextIO | None = None
) -> SearchResult:
    timings = Timings()
    settings = config.search
    space = parse_space(settings.space)
    estimator_cls = resolve_estimator(settings.estimator, settings.allowed_packages)
    known = estimator_cls().get_params(deep=False)
    for dimension in space:
        if dimension.name not in known:
            raise ConfigError(
                f"--space '{dimension.name}' is not a parameter of {settings.estimator}"
            )
    sampled = sample_candidates(space, settings.candidates, config.data.seed)
    # Every candidate's values are checked now, before any cluster work.
    for params in sampled:
        build_estimator(
            estimator_cls, {**settings.params, **params}, settings.estimator, seed=config.data.seed
        )

    identities: list[str] = []  # the run id, known once the data is planned

    def cache_run(plan: DataPlan) -> str:
        identities.append(search_run_id(config, plan.layout))
        return identities[-1]

    try:
        # The first pass leaves the files it read in the workers' block caches.
        prepared = prepare_stream(
            client, config, settings, hold_out_files=True, cache_run=cache_run, stream=stream
        )
    except BaseException:
        for run in identities:
            _forget(client, run)
        raise
    plan, spec, classifier = prepared.plan, prepared.spec, prepared.classifier
    metric = "accuracy" if classifier else "r2"
    files = plan.train.files
    max_blocks = settings.max_blocks or len(files)
    schedule = rung_schedule(settings.candidates, settings.reduction, max_blocks)
    order = block_sequence(len(files), max_blocks, config.data.seed)
    timings.lap("plan_and_first_pass")
    progress.say(
        stream,
        f"search: {settings.candidates} candidates, {len(schedule)} rungs "
        f"({', '.join(f'{n} x {b} blocks' for n, b in schedule)}), scored by validation {metric} "
        f"on {len(plan.validation.files)} file(s)",
    )

    run_id = search_run_id(config, plan.layout)
    checkpoints = join_url(config.checkpoint_url, run_id)

    def fresh(candidate: Candidate) -> BaseEstimator:
        return build_estimator(
            estimator_cls,
            {**settings.params, **candidate.params},
            settings.estimator,
            seed=config.data.seed,
        )

    candidates = [
        Candidate(
            i,
            params,
            CheckpointStore(
                join_url(checkpoints, f"candidate-{i:03d}"), "skops", config.storage_options
            ),
        )
        for i, params in enumerate(sampled)
    ]
    for candidate in candidates:
        candidate.model = fresh(candidate)  # scattered with its first rung's task
    resumed = resume_candidates(candidates, checkpoints, config.storage_options, stream)
    if resumed:
        progress.say(
            stream,
            f"resuming search {run_id}: {resumed} of {len(candidates)} candidates from their "
            "checkpoints (their models and scores so far)",
        )
    alive = candidates
    recovery = Recovery(client, config.cluster, stream)
    rung_run = RungRunner(client, plan, spec, classifier, order, recovery, fresh, stream, run_id)
    try:
        for rung, (survivors, budget) in enumerate(schedule):
            alive = rung_run(alive[:survivors], rung, budget, metric)
            best = alive[0]
            progress.say(
                stream,
                f"rung {rung + 1}/{len(schedule)}: {survivors} candidates x {budget} blocks; "
                f"best {metric}={best.score_at(rung)[metric]:.4f} (candidate {best.id})",
            )
            if rung < len(schedule) - 1:
                for candidate in alive[schedule[rung + 1][0] :]:
                    candidate.stopped_at_rung = rung
                    candidate.model = None  # frees the model on the cluster
        winner = alive[0]
        final = rung_run.fetch(winner)
    except infrastructure_errors() as exc:
        raise _lost(exc) from None
    finally:
        _forget(client, run_id)
    timings.lap("search")

    best_metrics = winner.scores[-1]["validation"]
    best_params = {**settings.params, **{k: _plain(v) for k, v in winner.params.items()}}
    pipeline = (
        Pipeline([("scale", spec.scaler), ("model", final)]) if spec.scaler is not None else final
    )
    results = [c.record() for c in candidates]
    metrics = {
        "validation": best_metrics,
        "best_params": best_params,
        "best_candidate": winner.id,
        "metric": metric,
        "candidates": len(candidates),
        "failed_candidates": sum(c.error is not None for c in candidates),
        "rows": prepared.rows,
    }
    manifest = {
        "run_id": run_id,
        "kind": "search",
        "config": resolved(config),
        "versions": package_versions(),
        "data": {
            "fingerprint": plan.fingerprint,
            "sources": plan.described(),
            "train_files": len(plan.train.files),
            "validation_files": len(plan.validation.files),
            "rows": prepared.rows,
            "features": list(spec.features),
            "target": spec.target,
        },
        "search": {
            "estimator": settings.estimator,
            "schedule": [{"candidates": n, "blocks": b} for n, b in schedule],
            "reduction": settings.reduction,
            "workers": len(client.scheduler_info(n_workers=-1)["workers"]),
            "checkpoints": checkpoints,
            "recovery": recovery.summary(),
            "resumed_candidates": resumed,
        },
        "timings": timings.as_dict(),
    }
    write_run_outputs(
        config.output,
        {
            "model.skops": serialized_on_a_worker(client, pipeline),
            "results.json": json_bytes({"candidates": results}),
        },
        metrics,
        manifest,
        config.storage_options,
    )
    return SearchResult(pipeline, metrics, results, manifest, config.output)


def resume_candidates(
    candidates: list[Candidate],
    checkpoints: str,
    storage_options: dict[str, Any],
    stream: TextIO | None,
) -> int:
    """Each candidate from the newest trusted checkpoint an earlier run of this search
    left (a retried Job pod); how many were resumed."""
    fs, path = url_to_fs(checkpoints, storage_options)
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return 0  # a new search: one call, not one per candidate
    resumed = 0
    for candidate in candidates:
        found = candidate.store.latest(
            load_checkpoint, warn=lambda line: progress.say(stream, line)
        )
        if found is None:
            continue
        step, model = found
        scores = candidate.store.metadata(step).get("scores") or []
        if not scores or scores[-1]["blocks"] != step:
            continue  # no scores with it (a checkpoint of an older daskyard): trained again
        candidate.model, candidate.blocks, candidate.scores = model, step, scores
        resumed += 1
    return resumed


def search_run_id(config: SearchJobConfig, layout: str) -> str:
    """Names the search's checkpoints and its blocks in the workers' caches."""
    settings = identity_settings(resolved(config))
    return "search-" + stable_hash({"config": settings, "data": layout})


def _forget(client: Client, run: str) -> None:
    """Drop the run's blocks from the workers' caches (a shared cluster outlives the job)."""
    with contextlib.suppress(Exception):
        client.run(forget, run)


def block_sequence(files: int, blocks: int, seed: int) -> list[int]:
    """The file index of every block a finalist sees: seeded shuffled epochs."""
    sequence: list[int] = []
    epoch = 0
    while len(sequence) < blocks:
        sequence.extend(int(i) for i in block_order(files, epoch, seed))
        epoch += 1
    return sequence[:blocks]


@dataclass
class RungRunner:
    """Trains a rung's candidates in parallel; a candidate lost with its worker is
    restored from its last checkpoint and trained again, alone."""

    client: Client
    plan: Any
    spec: BlockSpec
    classifier: bool
    order: list[int]
    recovery: Recovery
    fresh: Callable[[Candidate], BaseEstimator]
    stream: TextIO | None
    run: str  # names this search's blocks in the workers' caches

    def __call__(
        self, candidates: list[Candidate], rung: int, budget: int, metric: str
    ) -> list[Candidate]:
        """Every candidate trained up to ``budget`` blocks and scored; best first,
        without those that failed (dropped).

        A candidate resumed from an earlier run's checkpoint with a score at this
        rung is not trained again: the same scores make the same survivors.
        """
        pending = [c for c in candidates if c.score_at(rung) is None]
        while pending:
            starts, retry, lost = [], [], None
            for candidate in pending:
                if isinstance(candidate.model, Future):  # trained in the previous rung
                    model, error = self._outcome(candidate.model)  # a few KiB
                    if isinstance(error, ConfigError):
                        self._drop(candidate, rung, error)
                        continue
                    if error is not None:
                        retry.append(candidate)
                        lost = error
                        continue
                    candidate.model = model
                starts.append(candidate)
            try:
                # Every rung starts from models scattered here, in one round trip, which
                # spreads them over the workers in turn; each task runs next to its
                # model. Left where they were trained, a rung's models often sat 4 and
                # 2 on two workers, and the rung waited for the busier one. Scattered,
                # not put into the tasks: dask would silently replay a lost candidate's
                # earlier rungs, whereas a lost scattered start surfaces and the
                # candidate restarts from its checkpoint.
                scattered = self._scatter([c.model for c in starts]) if starts else []
                for candidate, model in zip(starts, scattered, strict=True):
                    candidate.model = model
            except Exception as exc:  # the scatter met a worker on its way out
                if not self.recovery.is_loss(exc):
                    raise
                retry, lost, starts = retry + starts, exc, []
            submitted = [(c, *self._submit(c, rung, budget)) for c in starts]
            for candidate, scored, saved in submitted:
                validation, error = self._outcome(scored)
                if isinstance(error, ConfigError):  # its training or scoring failed
                    self._drop(candidate, rung, error)
                    continue
                if error is None:
                    _, error = self._outcome(saved)
                    if isinstance(error, ConfigError):
                        raise error  # the checkpoint's write was refused: every one's would be
                if error is not None:
                    retry.append(candidate)
                    lost = error
                    continue
                candidate.blocks = budget
                candidate.scores.append({"rung": rung, "blocks": budget, "validation": validation})
            if lost is not None:
                # Attempts count across the whole search, as in the other trainers.
                self.recovery.survive(len(self.recovery.faults) + 1, lost)
                for candidate in retry:
                    self._restore(candidate, budget)
            pending = retry
        scored = [c for c in candidates if c.error is None]
        if not scored:
            raise ConfigError(
                f"all {len(candidates)} candidates of rung {rung + 1} failed; the first: "
                f"{candidates[0].error}"
            )
        sign = -1.0 if metric in MAXIMISED else 1.0

        def rank(candidate: Candidate) -> tuple[bool, float]:
            value = candidate.score_at(rung).get(metric, float("nan"))
            return (math.isnan(value), sign * value)  # a diverged (NaN) model ranks last

        return sorted(scored, key=rank)

    def _drop(self, candidate: Candidate, rung: int, error: ConfigError) -> None:
        """A candidate whose own values fail mid-training (SGD's alpha=0 with the
        'optimal' learning rate) leaves the search, as scikit-learn's searches score
        such a fit NaN and go on: one sampled value must not end a search of many."""
        candidate.error = str(error)
        candidate.stopped_at_rung = rung
        candidate.model = None
        progress.say(self.stream, f"candidate {candidate.id}: dropped in rung {rung + 1}: {error}")

    def _scatter(self, models: list[BaseEstimator], tries: int = 3) -> list[Future]:
        """Scatter the models, again while the workers change under it.

        An autoscaler retires workers between rungs, when the queue is short: a
        scatter that raced a retirement is refused by the scheduler with the
        departed worker's address (KeyError) or breaks on its comm. The models are
        still here, so another scatter to the workers there are now is enough.
        """
        for attempt in range(1, tries):
            try:
                return self.client.scatter(models)
            except Exception as exc:
                if not (isinstance(exc, KeyError) or self.recovery.is_loss(exc)):
                    raise
                time.sleep(0.2 * attempt)
        return self.client.scatter(models)  # the last try's failure is the caller's

    def _outcome(self, future: Future) -> tuple[Any, BaseException | None]:
        """The future's result, the lost worker that took it, or the ConfigError of a
        candidate whose values the estimator refused (other errors raise)."""
        try:
            return future.result(), None
        except ConfigError as exc:
            return None, exc
        except Exception as exc:
            if not self.recovery.is_loss(exc):
                raise
            return None, exc

    def _submit(self, candidate: Candidate, rung: int, budget: int) -> tuple[Future, Future]:
        source = self.plan.train
        blocks = [(source.files[i], i) for i in self.order[candidate.blocks : budget]]
        columns = self.plan.columns
        candidate.model = self.client.submit(
            train_rung,
            candidate.model,
            blocks,
            FileSource.of(source, columns),
            self.spec,
            self.run,
            pure=False,
        )
        valid = self.plan.validation
        scored = self.client.submit(
            score_candidate,
            candidate.model,
            list(valid.files),
            FileSource.of(valid, columns),
            self.spec,
            self.classifier,
            self.run,
            pure=False,
        )
        # Every rung's model is kept: the next rung of a candidate whose worker dies
        # starts from here instead of from scratch.
        saved = self.client.submit(
            save_scored_checkpoint,
            candidate.model,
            scored,
            candidate.store,
            budget,
            candidate.scores,
            rung,
            pure=False,
        )
        return scored, saved

    def _restore(self, candidate: Candidate, budget: int) -> None:
        resumed = candidate.store.latest(
            load_checkpoint, below=budget + 1, warn=lambda line: progress.say(self.stream, line)
        )
        blocks, model = resumed if resumed else (0, self.fresh(candidate))
        progress.say(
            self.stream,
            f"candidate {candidate.id}: restarting from block {blocks} (its last checkpoint)",
        )
        candidate.model = model
        candidate.blocks = blocks
        candidate.restarts += 1

    def fetch(self, candidate: Candidate) -> BaseEstimator:
        """The trained model; from its checkpoint if its worker is gone by now."""
        if not isinstance(candidate.model, Future):
            return candidate.model  # resumed: trained in an earlier run
        try:
            return candidate.model.result()
        except Exception as exc:
            if not self.recovery.is_loss(exc):
                raise
        resumed = candidate.store.latest(load_checkpoint, below=candidate.blocks + 1)
        if resumed is None or resumed[0] != candidate.blocks:
            raise InfrastructureError(
                f"the best candidate's model was lost with its worker and its checkpoint at "
                f"block {candidate.blocks} is unreadable; rerun the search"
            )
        return resumed[1]
