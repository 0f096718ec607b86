"""Building the job's scikit-learn estimator (daskyard.estimators)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier
from sklearn.naive_bayes import MultinomialNB

from daskyard.errors import ConfigError
from daskyard.estimators import build_estimator

PATH = "sklearn.linear_model.SGDClassifier"


def test_a_left_out_random_state_is_the_jobs_seed():
    assert build_estimator(SGDClassifier, {"alpha": 1e-3}, PATH, seed=42).random_state == 42


@pytest.mark.parametrize("given", [0, None])
def test_an_explicit_random_state_wins_even_when_it_is_null(given):
    estimator = build_estimator(SGDClassifier, {"random_state": given}, PATH, seed=42)
    assert estimator.random_state is given


def test_an_estimator_without_random_state_is_built_as_given():
    estimator = build_estimator(
        MultinomialNB, {"alpha": 0.5}, "sklearn.naive_bayes.MultinomialNB", seed=42
    )
    assert estimator.get_params() == MultinomialNB(alpha=0.5).get_params()


def test_the_seeded_default_makes_partial_fit_repeatable():
    """SGD shuffles every block in partial_fit; unseeded, two runs differ."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2_000, 4))
    y = (x[:, 0] + rng.normal(scale=0.5, size=len(x)) > 0).astype(int)

    def coefficients(model):
        for block in np.array_split(np.arange(len(x)), 4):
            model.partial_fit(x[block], y[block], classes=[0, 1])
        return model.coef_

    seeded = [coefficients(build_estimator(SGDClassifier, {}, PATH, seed=7)) for _ in range(2)]
    np.testing.assert_array_equal(seeded[0], seeded[1])
    unseeded = [coefficients(SGDClassifier()) for _ in range(2)]
    assert not np.array_equal(unseeded[0], unseeded[1])


def test_unknown_parameters_are_still_refused_with_a_hint():
    with pytest.raises(ConfigError, match="did you mean 'alpha'"):
        build_estimator(SGDClassifier, {"alpah": 1.0}, PATH, seed=42)
