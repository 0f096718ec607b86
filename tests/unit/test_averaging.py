"""Model replicas: what averaging copies of a linear SGD model makes, and what it refuses."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from sklearn.linear_model import Perceptron, SGDClassifier, SGDRegressor
from sklearn.naive_bayes import MultinomialNB

from daskyard.errors import ConfigError
from daskyard.train.averaging import average_models, check_replicas


def problem(rows: int, seed: int, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 5))
    score = x @ np.array([1.5, -2.0, 0.5, 0.0, 1.0])
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
    return x, y


def fitted_copies(base, blocks, **fit):
    copies = []
    for x, y in blocks:
        part = copy.deepcopy(base)
        part.partial_fit(x, y, **fit)
        copies.append(part)
    return copies


@pytest.mark.parametrize(
    "estimator, classes",
    [
        (SGDClassifier(loss="log_loss", random_state=0), 2),
        (SGDClassifier(random_state=0), 3),
        (Perceptron(random_state=0), 2),
        (SGDRegressor(random_state=0), None),
    ],
    ids=["sgd-binary", "sgd-three-classes", "perceptron", "sgd-regressor"],
)
def test_copies_average_weighted_by_the_rows_each_fitted(estimator, classes):
    x0, y0 = problem(2_000, seed=0, classes=classes or 2)
    fit = {"classes": np.arange(classes)} if classes else {}
    y0 = y0 if classes else x0 @ np.arange(5.0)
    base = copy.deepcopy(estimator)
    base.partial_fit(x0, y0, **fit)
    blocks = []
    for seed, rows in [(1, 3_000), (2, 1_000)]:  # unequal blocks: unequal weights
        x, y = problem(rows, seed, classes or 2)
        blocks.append((x, y if classes else x @ np.arange(5.0)))

    a, b = fitted_copies(base, blocks, **fit)
    merged = average_models(base, a, b)

    assert merged.coef_.shape == base.coef_.shape and merged.coef_.dtype == base.coef_.dtype
    np.testing.assert_allclose(merged.coef_, 0.75 * a.coef_ + 0.25 * b.coef_, rtol=1e-12)
    np.testing.assert_allclose(merged.intercept_, 0.75 * a.intercept_ + 0.25 * b.intercept_)
    assert merged.t_ == base.t_ + 4_000  # the learning rate decays as over one chain
    # The copies and the round's model are left as they were; the merged one trains on.
    assert not np.array_equal(a.coef_, merged.coef_) and base.t_ == 2_001
    merged.partial_fit(x0, y0, **fit)
    assert merged.t_ == base.t_ + 6_000


def test_averaging_one_copy_gives_that_copy_and_a_copy_that_fitted_nothing_has_no_weight():
    x, y = problem(1_000, seed=3)
    base = SGDClassifier(random_state=0)
    fitted = fitted_copies(base, [(x, y)], classes=[0, 1])[0]
    assert np.array_equal(average_models(base, fitted).coef_, fitted.coef_)
    # An empty block's copy is the round's model unchanged (a fresh one has no t_).
    merged = average_models(base, fitted, copy.deepcopy(base))
    assert np.array_equal(merged.coef_, fitted.coef_) and merged.t_ == fitted.t_
    assert average_models(base, copy.deepcopy(base)) is base


def test_averaged_replicas_learn_what_one_chain_learns():
    blocks = [problem(5_000, seed) for seed in range(8)]
    x_test, y_test = problem(20_000, seed=99)
    chain = SGDClassifier(loss="log_loss", random_state=0)
    for x, y in blocks:
        chain.partial_fit(x, y, classes=[0, 1])
    model = SGDClassifier(loss="log_loss", random_state=0)
    for first in range(0, len(blocks), 4):
        copies = fitted_copies(model, blocks[first : first + 4], classes=[0, 1])
        model = average_models(model, *copies)
    assert model.t_ == chain.t_
    assert abs(model.score(x_test, y_test) - chain.score(x_test, y_test)) < 0.01
    assert model.score(x_test, y_test) > 0.9


@pytest.mark.parametrize(
    "estimator, message",
    [
        (MultinomialNB(), "MultinomialNB cannot be averaged: replicas need one of SGDClassifier"),
        (SGDClassifier(average=True), "has average=True: averaged SGD keeps running averages"),
    ],
    ids=["not-sgd", "averaged-sgd"],
)
def test_replicas_of_a_model_that_cannot_be_averaged_are_refused(estimator, message):
    path = f"sklearn.x.{type(estimator).__name__}"
    check_replicas(estimator, 1, path)  # one chain: anything with partial_fit
    with pytest.raises(ConfigError, match=r"^incremental\.replicas is 4 ") as error:
        check_replicas(estimator, 4, path)
    assert message in str(error.value) and "\n" not in str(error.value)
