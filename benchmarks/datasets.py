"""Synthetic binary classification data as Parquet files, cached by size and seed.

Features are standard normal float32 (so scaling is close to the identity and a
plain loop without a scaler learns the same model); the label is a logistic
draw from a linear signal plus a few interactions, so trees beat a line but a
line is far better than chance. Every file is generated from its own seed, so
files can be written in parallel and a data set is the same on every machine.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = 28
TARGET = "label"
ROW_BYTES = (FEATURES + 1) * 4  # float32 features and label, as daskyard holds them


@dataclass(frozen=True)
class Dataset:
    root: Path
    rows: int
    files: int
    validation_rows: int
    validation_files: int
    features: int = FEATURES

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def validation(self) -> Path:
        return self.root / "valid"

    @property
    def train_files(self) -> list[Path]:
        return sorted(self.train.glob("*.parquet"))

    @property
    def validation_files_list(self) -> list[Path]:
        return sorted(self.validation.glob("*.parquet"))

    @property
    def feature_names(self) -> list[str]:
        return [f"f{i}" for i in range(self.features)]

    @property
    def memory_bytes(self) -> int:
        """Training rows in memory as float32 (what a worker would hold to have it all)."""
        return self.rows * (self.features + 1) * 4


def _weights(features: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 0]).normal(size=features) / np.sqrt(features) * 2.0


def _write_file(path: str, rows: int, features: int, seed: int, index: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng([seed, 1, index])
    x = rng.standard_normal(size=(rows, features), dtype=np.float32)
    logits = x @ _weights(features, seed).astype(np.float32)
    logits += 0.8 * x[:, 0] * x[:, 1] - 0.6 * np.abs(x[:, 2]) + 0.5 * np.sin(2.0 * x[:, 3])
    label = (rng.random(rows, dtype=np.float32) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int8)
    columns = [pa.array(x[:, i]) for i in range(features)] + [pa.array(label)]
    names = [f"f{i}" for i in range(features)] + [TARGET]
    tmp = path + ".tmp"
    pq.write_table(pa.Table.from_arrays(columns, names=names), tmp, compression="snappy")
    os.replace(tmp, path)


def _split(rows: int, files: int) -> list[int]:
    return [len(part) for part in np.array_split(np.arange(rows), files)]


def dataset(
    cache: Path,
    rows: int,
    files: int,
    validation_rows: int,
    validation_files: int = 1,
    seed: int = 0,
    features: int = FEATURES,
    log=print,
) -> Dataset:
    """The cached data set of this size and seed, generated on first use."""
    key = f"rows{rows}-files{files}-valid{validation_rows}x{validation_files}-f{features}-s{seed}"
    root = cache / "data" / key
    found = Dataset(root, rows, files, validation_rows, validation_files, features)
    marker = root / "meta.json"
    if marker.exists():
        return found
    shutil.rmtree(root, ignore_errors=True)
    (root / "train").mkdir(parents=True)
    (root / "valid").mkdir(parents=True)
    started = time.perf_counter()
    log(f"generating {rows:,} + {validation_rows:,} rows x {features} features into {root}")
    jobs = [
        (str(root / "train" / f"part-{i:04d}.parquet"), n, features, seed, i)
        for i, n in enumerate(_split(rows, files))
    ] + [
        # validation files have their own seeds: no row of them is a training row
        (str(root / "valid" / f"part-{i:04d}.parquet"), n, features, seed, 1_000_000 + i)
        for i, n in enumerate(_split(validation_rows, validation_files))
    ]
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers > 1 and rows >= 1_000_000:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_file, *zip(*jobs, strict=True)))
    else:
        for job in jobs:
            _write_file(*job)
    marker.write_text(
        json.dumps(
            {
                "rows": rows,
                "files": files,
                "validation_rows": validation_rows,
                "validation_files": validation_files,
                "features": features,
                "seed": seed,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )
    return found


def read_xy(paths: list[Path], features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32, C order) and labels of Parquet files: the baselines' reader."""
    import pyarrow.parquet as pq

    xs, ys = [], []
    for path in paths:
        table = pq.read_table(path)
        xs.append(np.column_stack([table[c].to_numpy() for c in features]))
        ys.append(table[TARGET].to_numpy())
    return np.concatenate(xs) if len(xs) > 1 else xs[0], np.concatenate(ys)


def dataset_of(options: Any, size: dict[str, Any]) -> Dataset:
    """The cached data set that a benchmark's ``sizes(options)`` describe."""
    return dataset(
        options.cache,
        size["rows"],
        size["files"],
        size["valid_rows"],
        size.get("valid_files", 1),
        log=options.log,
    )
