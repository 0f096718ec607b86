"""Search space specs, seeded sampling and the successive-halving schedule."""

import pytest

from daskyard.errors import ConfigError
from daskyard.search import parse_dimension, parse_space, rung_schedule, sample_candidates


def test_each_kind_samples_within_its_bounds():
    space = parse_space(
        {
            "alpha": "loguniform:1e-6:1e-1",
            "l1_ratio": "uniform:0:1",
            "n_iter": "int:2:5",
            "penalty": "choice:l1,l2,elasticnet",
            "flag": "choice:true,false",
        }
    )
    for params in sample_candidates(space, 200, seed=3):
        assert 1e-6 <= params["alpha"] <= 1e-1
        assert 0 <= params["l1_ratio"] <= 1
        assert params["n_iter"] in {2, 3, 4, 5}
        assert params["penalty"] in {"l1", "l2", "elasticnet"}
        assert params["flag"] in {True, False}


def test_sampling_is_seeded():
    space = parse_space({"alpha": "loguniform:1e-6:1"})
    assert sample_candidates(space, 5, seed=1) == sample_candidates(space, 5, seed=1)
    assert sample_candidates(space, 5, seed=1) != sample_candidates(space, 5, seed=2)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gauss:0:1", "unknown kind 'gauss'"),
        ("uniform:1:0", "LO must be below HI"),
        ("loguniform:0:1", "loguniform needs LO > 0"),
        ("int:0.5:3", "whole numbers"),
        ("uniform:a:b", "two numbers"),
        ("choice:", "at least one value"),
    ],
)
def test_bad_specs_name_the_flag(spec, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_dimension("alpha", spec)
    assert f"--space alpha={spec}" in str(info.value)


def test_schedule_keeps_a_third_with_three_times_the_budget():
    assert rung_schedule(16, 3, 27) == [(16, 3), (6, 9), (2, 27)]
    assert rung_schedule(9, 3, 9) == [(9, 1), (3, 3), (1, 9)]


def test_schedule_drops_rungs_without_a_bigger_budget():
    assert rung_schedule(16, 3, 2) == [(16, 1), (2, 2)]
