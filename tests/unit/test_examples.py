"""The shipped example configs stay valid as the config schema evolves."""

from pathlib import Path

import pytest

from daskyard.config import (
    INCREMENTAL_FLAT_KEYS,
    SEARCH_FLAT_KEYS,
    XGBOOST_FLAT_KEYS,
    IncrementalJobConfig,
    SearchJobConfig,
    XGBoostJobConfig,
    build_config,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("name", "model", "flat_keys"),
    [
        ("xgboost.yaml", XGBoostJobConfig, XGBOOST_FLAT_KEYS),
        ("incremental.yaml", IncrementalJobConfig, INCREMENTAL_FLAT_KEYS),
        ("search.yaml", SearchJobConfig, SEARCH_FLAT_KEYS),
    ],
)
def test_example_config_validates(name, model, flat_keys):
    config = build_config(
        model, config_file=str(EXAMPLES / name), overrides={}, flat_keys=flat_keys, env={}
    )
    assert config.data.target == "label"
    assert config.output.startswith("runs/")
