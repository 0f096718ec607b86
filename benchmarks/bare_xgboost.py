"""A bare XGBoost script, run in its own interpreter by the overhead benchmark.

What a user without daskyard would run: import xgboost, read the Parquet files
with pyarrow, train with every core. Timed from process start to exit, like
``daskyard train xgboost``, so that the difference is daskyard's own cost, not
the interpreter's or XGBoost's import.

    python -m benchmarks.bare_xgboost TRAIN_DIR VALID_DIR ROUNDS MAX_DEPTH THREADS
"""

from __future__ import annotations

import sys
from pathlib import Path

import xgboost

from benchmarks.datasets import FEATURES, read_xy


def main(argv: list[str]) -> int:
    train, valid, rounds, depth, threads = argv
    features = [f"f{i}" for i in range(FEATURES)]
    x, y = read_xy(sorted(Path(train).glob("*.parquet")), features)
    xv, yv = read_xy(sorted(Path(valid).glob("*.parquet")), features)
    dtrain = xgboost.QuantileDMatrix(x, y, nthread=int(threads))
    dvalid = xgboost.QuantileDMatrix(xv, yv, ref=dtrain, nthread=int(threads))
    params = {
        "objective": "binary:logistic",
        "max_depth": int(depth),
        "eta": 0.1,
        "tree_method": "hist",
        "nthread": int(threads),
        "eval_metric": ["auc", "logloss"],
    }
    booster = xgboost.train(
        params, dtrain, int(rounds), evals=[(dvalid, "validation")], verbose_eval=False
    )
    return 0 if booster.num_boosted_rounds() == int(rounds) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
