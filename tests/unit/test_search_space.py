"""Search space specs, seeded sampling and the successive-halving schedule."""

import pytest

from daskyard.errors import ConfigError
from daskyard.search import rung_schedule
from daskyard.space import parse_dimension, parse_space, sample_candidates


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


@pytest.mark.parametrize(
    "spec",
    [
        "loguniform:1e-5:inf",
        "uniform:-inf:inf",
        "uniform:0:1e400",  # inf once parsed
        "uniform:nan:1",
        "uniform:0:nan",
        "loguniform:nan:nan",
        "int:1:inf",
        "int:-inf:1",
        "int:nan:3",
    ],
)
def test_infinite_or_nan_bounds_are_refused(spec):
    with pytest.raises(ConfigError) as info:
        parse_dimension("alpha", spec)
    assert str(info.value) == f"--space alpha={spec}: bounds must be finite numbers"


@pytest.mark.parametrize(
    "spec",
    [
        "int:1:1e30",
        "int:-1e30:0",
        "int:0:9223372036854775808",  # 2**63: one past int64
        "int:-9223372036854775809:0",
    ],
)
def test_int_bounds_beyond_int64_are_refused(spec):
    with pytest.raises(ConfigError, match=r"int bounds must lie between") as info:
        parse_dimension("max_iter", spec)
    assert str(info.value).startswith(f"--space max_iter={spec}: ")


def test_a_uniform_range_wider_than_the_largest_float_is_refused():
    spec = "uniform:-1e308:1e308"
    with pytest.raises(ConfigError, match="HI - LO exceeds the largest float") as info:
        parse_dimension("alpha", spec)
    assert str(info.value).startswith(f"--space alpha={spec}: ")


def test_large_but_valid_bounds_sample_within_them():
    space = parse_space(
        {
            "tiny_to_huge": "loguniform:5e-324:1.7976931348623157e308",
            "wide": "uniform:-8e307:8e307",
            "all_int64": "int:-9223372036854775808:9223372036854775807",
            "past_2_53": "int:9007199254740993:9007199254740995",
        }
    )
    for params in sample_candidates(space, 200, seed=5):
        assert 5e-324 <= params["tiny_to_huge"] <= 1.7976931348623157e308
        assert -8e307 <= params["wide"] <= 8e307
        assert -(2**63) <= params["all_int64"] <= 2**63 - 1
        assert isinstance(params["all_int64"], int)
        # Whole-number bounds are exact, not rounded to the nearest float (2**53).
        assert params["past_2_53"] in {9007199254740993, 9007199254740994, 9007199254740995}


def test_schedule_keeps_a_third_with_three_times_the_budget():
    assert rung_schedule(16, 3, 27) == [(16, 3), (6, 9), (2, 27)]
    assert rung_schedule(9, 3, 9) == [(9, 1), (3, 3), (1, 9)]


def test_schedule_drops_rungs_without_a_bigger_budget():
    assert rung_schedule(16, 3, 2) == [(16, 1), (2, 2)]
