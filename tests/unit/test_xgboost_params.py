"""The check of XGBoost params before any cluster work (``check_params``)."""

import pytest

from daskyard.errors import ConfigError
from daskyard.train.xgboost import check_params, training_params


def check(user: dict) -> None:
    check_params(training_params(user), 4, given=user)


@pytest.mark.parametrize(
    ("user", "line"),
    [
        (
            {"max_dpeth": 4},
            "XGBoost does not use the parameter 'max_dpeth' in xgboost.params / --param; "
            "did you mean 'max_depth'? (it would train without it)",
        ),
        (
            {"objective": "multi:softprob", "num_class": 3, "colsample_bytre": 0.5},
            "'colsample_bytre' in xgboost.params / --param; did you mean 'colsample_bytree'?",
        ),
        ({"n_estimators": 50}, "the number of rounds is xgboost.rounds / --rounds"),
        ({"early_stopping_rounds": 5}, "set xgboost.early_stopping_rounds in a config file"),
        # A tree parameter is not used by the linear booster.
        ({"booster": "gblinear", "max_depth": 3}, "the parameter 'max_depth'"),
    ],
)
def test_a_parameter_xgboost_would_ignore_is_refused(user, line):
    with pytest.raises(ConfigError, match=r"^XGBoost does not use") as raised:
        check(user)
    assert line in str(raised.value)


@pytest.mark.parametrize(
    "user",
    [
        {},
        {"eta": 0.1, "subsample": 0.8, "max_depth": 8, "lambda": 2.0},
        {"n_jobs": 2, "random_state": 3},  # XGBoost's aliases of nthread and seed
        # daskyard's own default tree_method is unused by gblinear: not the user's doing.
        {"booster": "gblinear", "objective": "reg:squarederror"},
    ],
)
def test_parameters_xgboost_uses_pass(user):
    check(user)


def test_a_value_xgboost_rejects_is_still_refused():
    with pytest.raises(ConfigError, match=r"^XGBoost rejects the parameters"):
        check({"max_depth": -2})


def test_a_multi_class_objective_without_num_class_says_what_to_set():
    with pytest.raises(ConfigError, match=r"needs num_class \(--param num_class=N\)$"):
        check({"objective": "multi:softmax"})
