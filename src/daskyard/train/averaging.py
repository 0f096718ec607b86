"""Model replicas: copies of a linear SGD model fitted side by side, then averaged.

One chain of ``partial_fit`` keeps one core busy however many workers there are.
With ``incremental.replicas`` R > 1, each round hands R blocks to R copies of the
same model, fitted at once on different workers, and their parameters are
averaged into the next round's model (iterative parameter mixing, McDonald et
al. 2010). Rounds are fixed by the step count, never by the number of workers,
so the result is the same on any cluster and after a resume.

Workers run ``average_models``: this module stays as light as ``blocks``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from daskyard.errors import ConfigError

# The public scikit-learn estimators built on its SGD loop (sklearn has no public
# base class for them). Looked up by name: a later release may drop one.
AVERAGEABLE = (
    "SGDClassifier",
    "SGDRegressor",
    "Perceptron",
    "PassiveAggressiveClassifier",
    "PassiveAggressiveRegressor",
)
# What such a model learns; everything else (classes, loss, settings) is the same
# in every copy of one round.
PARAMETERS = ("coef_", "intercept_")


def check_replicas(estimator: Any, replicas: int, estimator_path: str) -> None:
    """One clear line, before any work, when ``replicas`` copies cannot be averaged."""
    if replicas == 1:
        return
    import sklearn.linear_model as linear

    classes = tuple(c for c in (getattr(linear, n, None) for n in AVERAGEABLE) if c is not None)
    if not isinstance(estimator, classes):
        raise ConfigError(
            f"incremental.replicas is {replicas} but {estimator_path} cannot be averaged: "
            f"replicas need one of {', '.join(AVERAGEABLE)} (sklearn.linear_model); "
            "set replicas to 1"
        )
    if getattr(estimator, "average", False):
        raise ConfigError(
            f"incremental.replicas is {replicas} but {estimator_path} has average="
            f"{estimator.average}: averaged SGD keeps running averages that copies cannot "
            "merge; set params.average to false or replicas to 1"
        )


def average_models(base: Any, *copies: Any) -> Any:
    """The copies' parameters averaged, each weighted by the rows it fitted.

    ``t_`` (scikit-learn's count of rows seen, which sets the learning rate) becomes
    the rows of all copies together, so the step size decays as in one chain. A copy
    that fitted nothing (an empty block) carries no weight.
    """
    seen = getattr(base, "t_", 1.0)  # 1.0: where scikit-learn starts counting
    fitted = [c for c in copies if getattr(c, "t_", seen) > seen]
    if not fitted:
        return base
    rows = np.array([c.t_ - seen for c in fitted], dtype=np.float64)
    merged = copy.deepcopy(fitted[0])
    for name in PARAMETERS:
        stacked = np.stack([getattr(c, name) for c in fitted])
        mean = np.tensordot(rows / rows.sum(), stacked, axes=1)
        setattr(merged, name, np.ascontiguousarray(mean, dtype=stacked.dtype))
    merged.t_ = seen + rows.sum()
    return merged
