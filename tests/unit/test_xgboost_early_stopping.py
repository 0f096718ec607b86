"""daskyard's resumable early stopping against XGBoost's own, in one process."""

from __future__ import annotations

import pytest
import xgboost

from daskyard.checkpoints import CheckpointStore
from daskyard.train.xgboost import EarlyStopping, scores_at
from tests.conftest import classification_frame

PATIENCE = 3
ROUNDS = 100
# Overfits within a few rounds, so every metric below stops early.
PARAMS = {"objective": "binary:logistic", "eta": 1.0, "max_depth": 12, "nthread": 1}


class Stopper(xgboost.callback.TrainingCallback):
    """Feeds each round to an EarlyStopping, as daskyard's RoundCallback does."""

    def __init__(self, early_stopping: EarlyStopping) -> None:
        self.early_stopping = early_stopping

    def after_iteration(self, model: xgboost.Booster, epoch: int, evals_log: dict) -> bool:
        iteration = model.num_boosted_rounds() - 1
        return self.early_stopping.update(iteration, scores_at(evals_log["validation"]))


@pytest.fixture(scope="module")
def matrices() -> tuple[xgboost.DMatrix, xgboost.DMatrix]:
    frame = classification_frame(3_000, seed=2)
    x, y = frame.drop(columns="label"), frame["label"]
    return (
        xgboost.DMatrix(x[:2_000], label=y[:2_000]),
        xgboost.DMatrix(x[2_000:], label=y[2_000:]),
    )


def train(params, matrices, rounds, callbacks=None, early_stopping_rounds=None, model=None):
    dtrain, dvalid = matrices
    return xgboost.train(
        params,
        dtrain,
        rounds,
        evals=[(dvalid, "validation")],
        callbacks=callbacks,
        early_stopping_rounds=early_stopping_rounds,
        xgb_model=model,
        verbose_eval=False,
    )


# The last metric decides: minimized (logloss, error) or maximized (auc).
@pytest.mark.parametrize("metrics", [["auc", "logloss"], ["logloss", "auc"], ["error"]])
def test_stops_where_xgboost_early_stopping_does(matrices, metrics):
    params = {**PARAMS, "eval_metric": metrics}
    theirs = train(params, matrices, ROUNDS, early_stopping_rounds=PATIENCE)
    stopper = Stopper(EarlyStopping(PATIENCE))
    ours = train(params, matrices, ROUNDS, callbacks=[stopper])
    assert theirs.num_boosted_rounds() < ROUNDS  # it did stop early
    assert ours.num_boosted_rounds() == theirs.num_boosted_rounds()
    assert stopper.early_stopping.best_iteration == theirs.best_iteration
    assert stopper.early_stopping.best_score == pytest.approx(theirs.best_score)


def test_state_from_a_checkpoint_continues_as_if_uninterrupted(matrices, tmp_path):
    params = {**PARAMS, "eval_metric": ["logloss", "auc"]}
    whole = Stopper(EarlyStopping(PATIENCE))
    uninterrupted = train(params, matrices, ROUNDS, callbacks=[whole])
    # Interrupted after a round past the best one: a fresh state would take the
    # first resumed round for the best.
    cut = whole.early_stopping.best_iteration + 2
    assert cut < uninterrupted.num_boosted_rounds()
    first = Stopper(EarlyStopping(PATIENCE))
    partial = train(params, matrices, cut, callbacks=[first])
    store = CheckpointStore(str(tmp_path / "ckpt"), "ubj", {})
    store.save(cut, bytes(partial.save_raw("ubj")), first.early_stopping.state())

    resumed = Stopper(EarlyStopping(PATIENCE, **store.metadata(cut)))
    model = xgboost.Booster(model_file=bytearray(store.read_verified(cut)))
    continued = train(params, matrices, ROUNDS - cut, callbacks=[resumed], model=model)
    assert continued.num_boosted_rounds() == uninterrupted.num_boosted_rounds()
    assert resumed.early_stopping == whole.early_stopping
