"""Data planning and per-partition checks, without a cluster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from daskyard.data import (
    SPLIT_COLUMN,
    ColumnPlan,
    list_source,
    plan_columns,
    prepare_partition,
    read_file_schema,
)
from daskyard.errors import DataError

SCHEMA = {"a": "float64", "b": "int64", "label": "int64"}


def plan(**changes) -> ColumnPlan:
    base = dict(
        schemas=[("f0.parquet", SCHEMA)],
        target="label",
        features=None,
        categorical=(),
        numeric_target=True,
    )
    base.update(changes)
    return plan_columns(
        base["schemas"],
        base["target"],
        base["features"],
        base["categorical"],
        base["numeric_target"],
    )


def test_features_default_to_every_column_but_the_target():
    assert plan().features == ("a", "b")
    assert plan(features=["b"]).features == ("b",)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"target": "y"}, "target column 'y' not found in 'f0.parquet'"),
        ({"features": ["a", "zz"]}, "column 'zz' listed in the config is not in 'f0.parquet'"),
        (
            {"schemas": [("f0.parquet", {**SCHEMA, "city": "object"})]},
            "feature column 'city' in 'f0.parquet' is object, not numeric",
        ),
        (
            {
                "schemas": [
                    ("f0.parquet", SCHEMA),
                    ("f1.parquet", {"a": "float64", "label": "int64"}),
                ]
            },
            "'f1.parquet' has different columns than 'f0.parquet' (missing ['b'])",
        ),
        (
            {"schemas": [("f0.parquet", SCHEMA), ("f1.parquet", {**SCHEMA, "b": "object"})]},
            "column 'b' is object in 'f1.parquet' but int64 in 'f0.parquet'",
        ),
        (
            {"schemas": [("f0.parquet", {**SCHEMA, "label": "object"})]},
            "target column 'label' in 'f0.parquet' is object, not numeric",
        ),
    ],
)
def test_schema_problems_name_the_file_and_column(changes, expected):
    with pytest.raises(DataError) as info:
        plan(**changes)
    assert expected in str(info.value)
    assert info.value.exit_code == 3


def test_declared_categorical_feature_is_accepted():
    result = plan(schemas=[("f0", {**SCHEMA, "city": "object"})], categorical=["city"])
    assert result.categorical == ("city",)


def test_partition_with_missing_target_names_file_and_first_row():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1, 2, 3], "label": [0, None, 1]})
    with pytest.raises(
        DataError, match=r"2 missing|1 missing values in 'x.parquet' \(first at row 1\)"
    ):
        prepare_partition(frame, "x.parquet", 0, plan(), None)


def test_partition_features_become_float32_and_split_is_seeded():
    frame = pd.DataFrame({"a": np.arange(1000.0), "b": np.arange(1000), "label": 1})
    first = prepare_partition(frame, "x", 3, plan(), (7, 0.25))
    again = prepare_partition(frame, "x", 3, plan(), (7, 0.25))
    other_file = prepare_partition(frame, "x", 4, plan(), (7, 0.25))
    assert first["a"].dtype == np.float32
    assert first[SPLIT_COLUMN].equals(again[SPLIT_COLUMN])
    assert not first[SPLIT_COLUMN].equals(other_file[SPLIT_COLUMN])
    assert 0.2 < first[SPLIT_COLUMN].mean() < 0.3


def test_first_bad_feature_column_is_reported_with_its_first_bad_row():
    from dataclasses import replace

    frame = pd.DataFrame(
        {"a": [1.0, np.inf, np.nan], "b": [1.0, 2.0, 1e300], "label": [0, 1, 0]},
    )
    strict = replace(
        plan(schemas=[("f0.parquet", {**SCHEMA, "b": "float64"})]), missing_features_allowed=False
    )
    with pytest.raises(
        DataError, match=r"feature column 'a' in 'x' has missing values \(first at row 2\)"
    ):
        prepare_partition(frame, "x", 0, strict, None)
    with pytest.raises(
        DataError, match=r"feature column 'a' in 'x' holds an infinite .* row 1: .*inf"
    ):
        prepare_partition(frame, "x", 0, replace(strict, missing_features_allowed=True), None)
    with pytest.raises(DataError, match=r"feature column 'b' .* row 2: .*1e\+300"):
        prepare_partition(frame.assign(a=1.0), "x", 0, strict, None)


def test_large_finite_features_whose_float32_sum_overflows_are_accepted():
    # The inf/NaN check sums each column in float32: a sum that overflows on finite
    # values makes the column a suspect, which the value-by-value check then clears.
    big = float(np.finfo(np.float32).max) / 2
    frame = pd.DataFrame({"a": [big] * 4, "b": [-big] * 4, "label": [0, 1, 0, 1]})
    wide = plan(schemas=[("f0.parquet", {**SCHEMA, "b": "float64"})])
    with np.errstate(over="ignore"):
        assert np.isinf(frame[["a", "b"]].to_numpy(dtype=np.float32).sum(axis=0)).all()
    out = prepare_partition(frame, "x", 0, wide, None)
    assert np.isfinite(out[["a", "b"]].to_numpy()).all()


def test_missing_feature_values_stay_nan_where_allowed():
    frame = pd.DataFrame(
        {"a": [1.0, np.nan], "b": pd.array([1, None], dtype="Int64"), "label": [0, 1]}
    )
    out = prepare_partition(frame, "x", 0, plan(), None)
    assert list(out.columns) == ["a", "b", "label"]
    assert out[["a", "b"]].dtypes.eq(np.float32).all()
    assert np.isnan(out.loc[1, "a"]) and np.isnan(out.loc[1, "b"])


def test_listing_keeps_data_files_and_skips_markers(tmp_path):
    for name in ("b.parquet", "a.parquet", "_SUCCESS", ".hidden.parquet", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    source = list_source(str(tmp_path), "auto", {})
    assert [f.rsplit("/", 1)[1] for f in source.files] == ["a.parquet", "b.parquet"]
    assert source.format == "parquet"
    assert list_source(str(tmp_path / "*.parquet"), "auto", {}).files == source.files


@pytest.mark.parametrize(
    ("layout", "url_suffix", "expected"),
    [
        ({}, "", "no Parquet or CSV files found"),
        ({}, "/missing", "the path does not exist"),
        ({"a.parquet": b"x", "b.csv": b"x"}, "", "mixes Parquet and CSV"),
    ],
)
def test_listing_problems(tmp_path, layout, url_suffix, expected):
    for name, content in layout.items():
        (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=expected):
        list_source(str(tmp_path) + url_suffix, "auto", {})


def test_truncated_parquet_names_the_file(tmp_path):
    path = tmp_path / "cut.parquet"
    pd.DataFrame({"a": np.arange(100.0)}).to_parquet(path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"cannot read '.*cut.parquet' as parquet"):
        read_file_schema(str(path), "parquet", {})


@pytest.mark.parametrize(
    ("label", "numeric_target"), [(np.inf, True), (1e300, True), (-np.inf, False)]
)
def test_a_float_target_that_is_not_finite_names_file_and_first_row(label, numeric_target):
    from dataclasses import replace

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1, 2, 3], "label": [0.0, 1.0, label]})
    floats = replace(
        plan(schemas=[("f0.parquet", {**SCHEMA, "label": "float64"})]),
        numeric_target=numeric_target,
    )
    with pytest.raises(
        DataError, match=r"target column 'label' in 'x' holds an infinite .* row 2: "
    ):
        prepare_partition(frame, "x", 0, floats, None)


def test_a_large_finite_target_whose_float32_sum_overflows_is_accepted():
    big = float(np.finfo(np.float32).max) / 2
    frame = pd.DataFrame({"a": [1.0] * 4, "b": [1] * 4, "label": [big] * 4})
    floats = plan(schemas=[("f0.parquet", {**SCHEMA, "label": "float64"})])
    assert (prepare_partition(frame, "x", 0, floats, None)["label"] == np.float32(big)).all()


def test_data_the_credentials_cannot_list_is_a_config_error(tmp_path, monkeypatch):
    """Refused credentials are storage_options' fault, not the data's: exit 2, not 3."""
    from fsspec.implementations.local import LocalFileSystem

    from daskyard import data
    from daskyard.errors import ConfigError

    class Refusing(LocalFileSystem):
        def isdir(self, path):
            raise PermissionError("The AWS Access Key Id you provided does not exist")

    monkeypatch.setattr(data, "url_to_fs", lambda url, options: (Refusing(), str(tmp_path)))
    with pytest.raises(ConfigError, match=r"cannot list data at 's3://b/d/': access denied \("):
        data.list_source("s3://b/d/", "auto", {})
