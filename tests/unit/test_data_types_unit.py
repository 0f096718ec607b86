"""Column types, names and labels as users' files hold them, without a cluster."""

from __future__ import annotations

import datetime
import decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daskyard.data import (
    SPLIT_COLUMN,
    plan_columns,
    prepare_partition,
    read_file_schema,
    read_partition,
)
from daskyard.errors import DataError

SCHEMA = {"a": "float64", "b": "int64", "label": "int64"}


def refused(schemas, **options) -> str:
    with pytest.raises(DataError) as info:
        plan_columns(
            schemas,
            options.pop("target", "label"),
            options.pop("features", None),
            options.pop("categorical", ()),
            options.pop("numeric_target", True),
            **options,
        )
    assert info.value.exit_code == 3
    return str(info.value)


def test_decimal_columns_are_read_as_numbers(tmp_path):
    path = tmp_path / "d.parquet"
    table = pa.table(
        {
            "a": pa.array(
                [decimal.Decimal("1.25"), None, decimal.Decimal("-3.5")], pa.decimal128(9, 2)
            ),
            "label": pa.array([decimal.Decimal(v) for v in (0, 1, 1)], pa.decimal128(3, 0)),
        }
    )
    pq.write_table(table, path)
    schema = read_file_schema(str(path), "parquet", {})
    assert schema == {"a": "float64", "label": "float64"}
    columns = plan_columns([(str(path), schema)], "label", None, (), numeric_target=False)
    out = read_partition(str(path), 0, "parquet", {}, columns, None)
    np.testing.assert_array_equal(out["a"].to_numpy(), np.array([1.25, np.nan, -3.5], "float32"))
    assert out["label"].tolist() == [0.0, 1.0, 1.0]


def test_other_parquet_types_are_named_as_the_file_holds_them(tmp_path):
    path = tmp_path / "t.parquet"
    table = pa.table(
        {
            "day": pa.array([datetime.date(2024, 1, 1)] * 2, pa.date32()),
            "a": [1.0, 2.0],
            "label": [0, 1],
        }
    )
    pq.write_table(table, path)
    schema = read_file_schema(str(path), "parquet", {})
    message = refused([(str(path), schema)])
    assert "feature column 'day' in" in message and "is date32[day]" in message
    assert "date or time" in message and "data.categorical" not in message


def test_a_date_is_a_category_when_declared_one(tmp_path):
    path = tmp_path / "t.parquet"
    days = pa.array([datetime.date(2024, 1, 1), datetime.date(2024, 1, 2)], pa.date32())
    pq.write_table(pa.table({"day": days, "label": [0, 1]}), path)
    schema = read_file_schema(str(path), "parquet", {})
    columns = plan_columns([(str(path), schema)], "label", None, ["day"], True)
    out = read_partition(str(path), 0, "parquet", {}, columns, None)
    assert out["day"].tolist() == ["2024-01-01", "2024-01-02"]


def test_without_categorical_support_a_text_feature_is_not_sent_to_data_categorical():
    schema = {**SCHEMA, "city": "str"}
    assert "data.categorical" in refused([("f0", schema)])
    message = refused([("f0", schema)], categorical_allowed=False)
    assert "feature column 'city' in 'f0' is str, not numeric" in message
    assert "data.categorical" not in message and "encode it as numbers" in message


def test_a_csv_written_with_its_index_names_the_unnamed_column(tmp_path):
    path = tmp_path / "i.csv"
    pd.DataFrame({"a": [1.0, 2.0], "label": [0, 1]}).to_csv(path)  # index=True: ",a,label"
    schema = read_file_schema(str(path), "csv", {})
    assert list(schema) == ["", "a", "label"]
    message = refused([(str(path), schema)])
    assert "column 1 of" in message and "has no name" in message and "index=False" in message
    # Left out of data.features, it is not read.
    columns = plan_columns([(str(path), schema)], "label", ["a"], (), True)
    out = read_partition(str(path), 0, "csv", {}, columns, None)
    assert out["a"].tolist() == [1.0, 2.0]


def test_csv_column_names_that_look_like_missing_values_are_kept(tmp_path):
    path = tmp_path / "na.csv"
    pd.DataFrame({"NA": [1.0, 2.0], "null": [3, 4], "label": [0, 1]}).to_csv(path, index=False)
    schema = read_file_schema(str(path), "csv", {})
    assert list(schema) == ["NA", "null", "label"]
    columns = plan_columns([(str(path), schema)], "label", None, (), True)
    out = read_partition(str(path), 0, "csv", {}, columns, None)
    assert out["NA"].tolist() == [1.0, 2.0]


def test_the_reserved_split_column_name_is_refused():
    message = refused([("f0", {**SCHEMA, SPLIT_COLUMN: "float64"})])
    assert f"column '{SPLIT_COLUMN}' in 'f0'" in message and "reserved" in message
    # Not a feature: not read, no clash.
    plan_columns([("f0", {**SCHEMA, SPLIT_COLUMN: "float64"})], "label", ["a"], (), True)


def test_explicit_features_need_only_their_own_columns_in_every_file():
    extra = {**SCHEMA, "notes": "str"}
    fewer = {"a": "float64", "label": "int64"}
    columns = plan_columns([("f0", SCHEMA), ("f1", extra), ("f2", fewer)], "label", ["a"], (), True)
    assert columns.features == ("a",)
    assert "'f2' has different columns than 'f0' (missing ['b'])" in refused(
        [("f0", SCHEMA), ("f2", fewer)], features=["a", "b"]
    )
    # The default features are every column: then every file needs the same ones.
    assert "(extra ['notes'])" in refused([("f0", SCHEMA), ("f1", extra)])


def test_a_semicolon_separated_csv_gets_a_delimiter_hint():
    message = refused([("f0.csv", {"a;b;label": "str"})])
    assert "target column 'label' not found in 'f0.csv'" in message
    assert "';'" in message and "comma" in message


def test_a_target_name_off_by_spaces_or_case_gets_a_suggestion():
    assert "did you mean ' Label'?" in refused([("f0", {"a": "float64", " Label": "int64"})])


def test_a_value_that_is_no_number_later_in_a_csv_names_its_row():
    columns = plan_columns([("first.csv", SCHEMA)], "label", None, (), True)
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["1", "oops", "3"], "label": [0, 1, 0]})
    with pytest.raises(DataError) as info:
        prepare_partition(frame, "x.csv", 0, columns, None)
    message = str(info.value)
    assert "column 'b' in 'x.csv' holds 'oops' in data row 2 (line 3 of a CSV)" in message
    assert "in the first file" not in message


def test_a_validation_file_without_the_target_says_so():
    message = refused(
        [("train.parquet", SCHEMA), ("valid.parquet", {"a": "float64", "b": "int64"})]
    )
    assert "target column 'label' not found in 'valid.parquet'" in message


def test_an_all_null_parquet_column_is_named_as_such():
    assert "holds no values at all" in refused([("f0", {**SCHEMA, "empty": "null"})])
