"""Column types, names and schemas as users' files hold them, through the real CLI:
either a sound model or one clear line with exit 3, and nothing written."""

from __future__ import annotations

import decimal
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import (
    assert_trains_or_refuses,
    classification_frame,
    run_cli,
    write_config,
    write_files,
)

pytestmark = pytest.mark.integration


def decimals(tmp: Path) -> Path:
    """Decimal feature and target columns (as databases export money and counts)."""
    frame = classification_frame(2_000)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    price = pa.array([decimal.Decimal(f"{v:.3f}") for v in frame["f0"]], pa.decimal128(12, 3))
    label = pa.array([decimal.Decimal(int(v)) for v in frame["label"]], pa.decimal128(3, 0))
    table = table.set_column(0, "f0", price).set_column(table.num_columns - 1, "label", label)
    folder = tmp / "d"
    folder.mkdir()
    pq.write_table(table.slice(0, 1_000), folder / "part-0.parquet")
    pq.write_table(table.slice(1_000), folder / "part-1.parquet")
    return folder


def csv_with_index(tmp: Path) -> Path:
    folder = tmp / "d"
    folder.mkdir()
    frame = classification_frame(2_000)
    for index in range(2):
        frame.iloc[index::2].to_csv(folder / f"part-{index}.csv")  # pandas' default: index=True
    return folder


def reserved_name(tmp: Path) -> Path:
    return write_files(
        classification_frame(2_000).assign(__daskyard_validation__=1.0), tmp / "d", files=2
    )


def late_text_in_csv(tmp: Path) -> Path:
    """A number column whose text value sits past the rows the schema is read from."""
    frame = classification_frame(2_000)
    frame["f7"] = frame["f7"].astype(object)
    frame.loc[1_500, "f7"] = "n/a?"
    return write_files(frame, tmp / "d", files=1, fmt="csv")


def semicolons(tmp: Path) -> Path:
    folder = tmp / "d"
    folder.mkdir()
    classification_frame(2_000).to_csv(folder / "part-0.csv", index=False, sep=";")
    return folder


def text_feature(tmp: Path) -> Path:
    return write_files(classification_frame(2_000).assign(city="paris"), tmp / "d", files=2)


XGB = ["train", "xgboost", "--rounds", "5", "--param", "objective=binary:logistic"]
INC = ["train", "incremental", "--estimator", "sklearn.linear_model.SGDClassifier"]

Case = tuple[Callable[[Path], Path], list[str], int, str]
CASES: dict[str, Case] = {
    "xgboost: decimal feature and target train": (decimals, XGB, 0, ""),
    "incremental: decimal feature and target train": (decimals, INC, 0, ""),
    "csv written with its index": (csv_with_index, XGB, 3, "column 1 of '"),
    "a column named as daskyard's split marker": (reserved_name, INC, 3, "reserved by daskyard"),
    "text past the csv schema's rows": (
        late_text_in_csv,
        XGB,
        3,
        "holds 'n/a?' in data row 1501 (line 1502 of a CSV)",
    ),
    "semicolon-separated csv": (semicolons, XGB, 3, "looks separated by ';'"),
    "incremental: a text feature": (
        text_feature,
        INC,
        3,
        "'city' in '{data}/part-000.parquet' is str, not numeric: encode it as numbers",
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_data_types(case, dask_cluster, tmp_path):
    make_data, command, code, message = CASES[case]
    data = make_data(tmp_path)
    out = tmp_path / "out"
    args = [*command, "--train", str(data), "--target", "label", "--output", str(out)]
    result = run_cli(*args, "--scheduler", dask_cluster.address)
    assert_trains_or_refuses(result, out, code, message.format(data=f"file://{data}"))
    assert code == 0 or not out.exists() or not any(out.iterdir())


def test_explicit_features_ignore_columns_files_do_not_share(tmp_path):
    """A training file with a column more, and a validation file without one the
    features leave out: neither column is read, so the embedded run trains."""
    frame = classification_frame(3_000)
    train = write_files(frame.iloc[:2_000], tmp_path / "train", files=2)
    extra = pd.read_parquet(train / "part-001.parquet").assign(comment="checked")
    extra.to_parquet(train / "part-001.parquet", index=False)
    valid = write_files(frame.iloc[2_000:].drop(columns=["f7"]), tmp_path / "valid", files=1)
    config = write_config(
        tmp_path / "job.yaml",
        {
            "data": {
                "train": str(train),
                "validation": str(valid),
                "target": "label",
                "features": [f"f{i}" for i in range(7)],
            },
            "output": str(tmp_path / "out"),
            "xgboost": {"rounds": 5, "params": {"objective": "binary:logistic"}},
        },
    )
    result = run_cli("train", "xgboost", "--config", str(config), "--local-workers", "2")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["rows"] == {"train": 2_000, "validation": 1_000}
    assert metrics["validation"]["auc"] > 0.7
