"""``daskyard demo``: the whole path on generated data, on an embedded cluster."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from daskyard import progress
from daskyard.artifacts import check_folder_url
from daskyard.config import (
    ClusterConfig,
    DataConfig,
    XGBoostConfig,
    XGBoostJobConfig,
    from_flags,
)
from daskyard.runner import run_xgboost

DEMO_FILES = 8
DEMO_FEATURES = 20


def generate_classification(
    folder: Path, rows: int, files: int = DEMO_FILES, seed: int = 0
) -> Path:
    """A synthetic binary problem as Parquet files: f0..f19 and a 0/1 ``label``."""
    from sklearn.datasets import make_classification

    features, labels = make_classification(
        n_samples=rows,
        n_features=DEMO_FEATURES,
        n_informative=12,
        n_redundant=4,
        class_sep=0.8,
        flip_y=0.03,
        random_state=seed,
    )
    folder.mkdir(parents=True, exist_ok=True)
    for index, rows_of_file in enumerate(np.array_split(np.arange(rows), files)):
        frame = pd.DataFrame(
            features[rows_of_file].astype(np.float32),
            columns=[f"f{i}" for i in range(DEMO_FEATURES)],
        )
        frame["label"] = labels[rows_of_file].astype(np.int8)
        frame.to_parquet(folder / f"part-{index:03d}.parquet", index=False)
    return folder


def run_demo(directory: str, rows: int, local_workers: int | None, stream: TextIO | None = None):
    root = Path(directory).expanduser().resolve()  # as fsspec reads --output's ~
    # Checked before minutes of data generation, not after.
    check_folder_url(str(root), "--dir")
    cluster = from_flags(ClusterConfig, {"local_workers": ("--local-workers", local_workers)})
    data = root / f"data-{rows}"
    started = time.perf_counter()
    if not data.exists():
        progress.say(stream, f"generating {rows:,} rows x {DEMO_FEATURES} features into {data}")
        # Into a temporary folder, renamed when whole: a demo interrupted while writing
        # left a data folder that every later demo trained on, short of files or rows.
        root.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{data.name}-", dir=root))
        try:
            generate_classification(partial, rows)
            partial.rename(data)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    output = root / "run"
    shutil.rmtree(output, ignore_errors=True)  # a demo starts over rather than resuming
    config = XGBoostJobConfig(
        data=DataConfig(train=str(data), target="label"),
        output=str(output),
        cluster=cluster,
        xgboost=XGBoostConfig(
            rounds=50, params={"objective": "binary:logistic", "max_depth": 6, "eta": 0.3}
        ),
    )
    result = run_xgboost(config, stream)
    progress.say(
        stream, f"demo finished in {time.perf_counter() - started:.1f}s; artifacts in {output}"
    )
    progress.say(
        stream,
        f"next: daskyard train xgboost --train {data} --target label "
        f"--output {root / 'run2'} --rounds 100 --param max_depth=8",
    )
    return result
