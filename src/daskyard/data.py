"""Load and validate tabular training data on the workers.

Files are listed on the client (metadata only); schemas and rows are read by
the workers. Every file (or block of a file: ``file_blocks``)
becomes one partition of one dask DataFrame, so features and target always come
from the same collection with the same partitions, and any problem can name the
file it was found in.
"""

from __future__ import annotations

import functools
import hashlib
import io
import posixpath
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np
import pandas as pd
from distributed import Client, Future

from daskyard.artifacts import storage_failure, url_to_fs
from daskyard.config import DataConfig
from daskyard.csv_blocks import csv_lines, refuse_a_start_inside_quotes, rows_before
from daskyard.errors import DataError
from daskyard.file_blocks import (
    RowGroups,
    file_count,
    file_positions,
    groups_holding,
    in_blocks,
    split_block_url,
)
from daskyard.placement import assign_files

if TYPE_CHECKING:
    # Imported where a frame is built, not here: workers import this module for
    # read_partition, and dask.dataframe adds about 220 MiB to a worker.
    import dask.dataframe as dd

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")
# Marks validation rows when the validation set is split off the training data.
SPLIT_COLUMN = "__daskyard_validation__"
FEATURE_DTYPE = np.float32  # what XGBoost and most estimators compute in anyway


@dataclass(frozen=True)
class DataSource:
    """The files behind one data URL, listed once on the client."""

    url: str
    files: tuple[str, ...]  # full URLs the workers can open
    format: str  # "parquet" | "csv"
    fingerprint: str
    storage_options: dict[str, Any]
    sizes: tuple[int, ...] = ()  # bytes per file as listed; 0 where the store gives none

    def subset(self, indices: Sequence[int], url: str | None = None) -> DataSource:
        """These files only (sizes kept in step), e.g. the files a search holds out."""
        return replace(
            self,
            url=url or self.url,
            files=tuple(self.files[i] for i in indices),
            sizes=tuple(self.sizes[i] for i in indices) if self.sizes else (),
        )


@dataclass(frozen=True)
class ColumnPlan:
    """Which columns to read and what they become."""

    features: tuple[str, ...]
    target: str
    categorical: tuple[str, ...]
    file_dtypes: dict[str, str]  # column -> dtype as read from the first file
    numeric_target: bool
    missing_features_allowed: bool = True  # XGBoost learns from NaN; scikit-learn cannot


@dataclass
class LoadedData:
    """Training (and validation) rows persisted on the workers."""

    train: dd.DataFrame
    validation: dd.DataFrame
    plan: DataPlan
    rows: dict[str, int]
    label_summary: dict[str, Any]

    @property
    def columns(self) -> ColumnPlan:
        return self.plan.columns


# ---------------------------------------------------------------- listing (client)


# What read_file_schema gives as the type of every column of a header-only CSV file.
UNTYPED = "untyped: header only"


def _detect_format(name: str) -> str | None:
    lowered = name.lower()
    if lowered.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lowered.endswith(CSV_SUFFIXES):
        return "csv"
    return None


def list_source(url: str, fmt: str, storage_options: dict[str, Any]) -> DataSource:
    """Expand a file, directory or glob URL into its data files (metadata only)."""
    try:
        fs, path = url_to_fs(url, storage_options)
        if any(ch in path for ch in "*?["):
            candidates = fs.glob(path)
        elif fs.isdir(path):
            candidates = fs.find(path)
        elif fs.exists(path):
            candidates = [path]
        else:
            raise DataError(f"no data at '{url}': the path does not exist; check the URL")
        infos = [fs.info(c) for c in sorted(candidates)]
    except DataError:
        raise
    except Exception as exc:
        failure = storage_failure(exc, f"cannot list data at '{url}'")
        if failure is not None:
            raise failure from None
        if not isinstance(exc, OSError | ValueError):
            raise
        raise DataError(f"cannot list data at '{url}': {exc}") from None
    files = []
    for info in infos:
        name = posixpath.basename(info["name"])
        # Hidden files and markers such as _SUCCESS or _metadata are not data.
        if info.get("type") == "directory" or name.startswith((".", "_")):
            continue
        detected = _detect_format(name)
        if fmt == "auto" and detected is None:
            continue
        files.append((info, detected))
    if not files:
        raise DataError(
            f"no Parquet or CSV files found at '{url}': point --train/--validation at a file, "
            "a directory or a glob of .parquet or .csv files"
        )
    formats = {detected for _, detected in files} if fmt == "auto" else {fmt}
    if len(formats) > 1:
        raise DataError(f"'{url}' mixes Parquet and CSV files: keep one format per data set")
    identity = [
        (i["name"], i.get("size"), str(i.get("ETag") or i.get("mtime") or "")) for i, _ in files
    ]
    return DataSource(
        url=url,
        files=tuple(fs.unstrip_protocol(info["name"]) for info, _ in files),
        format=formats.pop(),
        fingerprint=hashlib.sha256(repr(identity).encode()).hexdigest(),
        storage_options=dict(storage_options),
        sizes=tuple(int(info.get("size") or 0) for info, _ in files),
    )


# ---------------------------------------------------------------- reading (workers)


def _open(url: str, storage_options: dict[str, Any]):
    # CSV may be compressed (.csv.gz, ...): fsspec decompresses by suffix.
    return fsspec.open(url, "rb", compression="infer", **storage_options).open()


def read_file_schema(url: str, fmt: str, storage_options: dict[str, Any]) -> dict[str, str]:
    """Column -> dtype of one file, from the Parquet footer or a CSV sample. Runs on a worker."""
    return inspect_file(url, fmt, storage_options)[0]


def inspect_file(
    url: str, fmt: str, storage_options: dict[str, Any]
) -> tuple[dict[str, str], RowGroups]:
    """``read_file_schema``, and the rows and uncompressed bytes of each of a Parquet
    file's row groups, from the same footer (none for CSV). Runs on a worker."""
    arrow_types: dict[str, str] = {}
    row_groups: RowGroups = ()
    try:
        with _open(url, storage_options) as handle:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                parquet = pq.ParquetFile(handle)
                footer = parquet.metadata
                row_groups = tuple(
                    (group.num_rows, group.total_byte_size)
                    for group in map(footer.row_group, range(footer.num_row_groups))
                )
                schema = _decimals_as_float(parquet.schema_arrow)
                empty = schema.empty_table().to_pandas()
                # pandas calls a date, a list or an all-null column 'object', like text.
                arrow_types = {field.name: str(field.type) for field in schema}
            else:
                empty = pd.read_csv(handle, nrows=1000)
                # pandas renames a repeated CSV name ('a', 'a.1') and an empty one
                # ('Unnamed: 0'), and reads a name such as 'NA' as missing: the header
                # as written, read again from the same handle (no second open or GET).
                handle.seek(0)
                header = pd.read_csv(
                    handle, nrows=1, header=None, dtype=str, keep_default_na=False
                ).iloc[0]
                empty.columns = [str(name) for name in header]
    except Exception as exc:
        raise DataError(
            f"cannot read '{url}' as {fmt}: {_reason(exc)}; the file is truncated, corrupt "
            "or not of that format: replace or remove it"
        ) from None
    if empty.columns.duplicated().any():
        dup = empty.columns[empty.columns.duplicated()][0]
        raise DataError(f"column '{dup}' appears twice in '{url}': column names must be unique")
    if fmt != "parquet" and empty.empty:
        # A header and no rows (Spark and Dask write these for empty partitions)
        # says nothing of the types: pandas calls every column object, which would
        # conflict with the files that have rows.
        return dict.fromkeys(map(str, empty.columns), UNTYPED), row_groups
    dtypes = {str(c): _arrow_name(arrow_types.get(str(c)), str(t)) for c, t in empty.dtypes.items()}
    return dtypes, row_groups


def _arrow_name(arrow: str | None, dtype: str) -> str:
    """An Arrow type pandas holds as 'object' (date32[day], list<...>) is named as such."""
    if dtype == "object" and arrow is not None and arrow not in ("string", "large_string"):
        return arrow
    return dtype


def _decimals_as_float(data: Any) -> Any:
    """A schema or table with its decimal columns as float64: pandas holds decimals as
    Python Decimal objects, which no estimator takes (and calls them 'object')."""
    import pyarrow as pa

    schema = data if isinstance(data, pa.Schema) else data.schema
    if not any(pa.types.is_decimal(field.type) for field in schema):
        return data
    floats = pa.schema(
        [
            field.with_type(pa.float64()) if pa.types.is_decimal(field.type) else field
            for field in schema
        ],
        metadata=schema.metadata,
    )
    return floats if data is schema else data.cast(floats)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _kind(dtype: str) -> str:
    if dtype in ("bool", "boolean"):
        return "bool"
    try:
        return {"i": "numeric", "u": "numeric", "f": "numeric", "b": "bool"}.get(
            np.dtype(dtype).kind, "other"
        )
    except TypeError:  # pandas extension dtypes: Int64, Float32, string, category
        lowered = dtype.lower()
        if lowered.startswith(("int", "uint", "float")):
            return "numeric"
        return "other"


def read_partition(
    url: str,
    index: int,
    source_format: str,
    storage_options: dict[str, Any],
    plan: ColumnPlan,
    split: tuple[int, float] | None,
) -> pd.DataFrame:
    """Read one file (or block) into the partition's frame, validating as it goes; the
    file's ``index`` in its source draws its validation rows (``split_draws``). Runs on
    a worker."""
    columns = [*plan.features, plan.target]
    try:
        if source_format == "parquet":
            frame = _read_parquet(url, storage_options, columns)
        else:
            frame = _read_csv(url, storage_options, columns)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"cannot read '{url}' as {source_format}: {_reason(exc)}; replace or remove the file"
        ) from None
    rows_before = functools.partial(_rows_before, url, source_format, storage_options)
    return prepare_partition(frame, url, index, plan, split, rows_before)


def _rows_before(url: str, source_format: str, storage_options: dict[str, Any]) -> int:
    """The file's data rows before a block's first (0 for a whole file): for the row
    numbers of its error messages, so they count from the file's start.

    A CSV block's are counted in the bytes before it (``csv_blocks.rows_before``).
    """
    file_url, span = split_block_url(url)
    if span is None:
        return 0
    if source_format == "parquet":
        return span.first
    with _open(file_url, storage_options) as handle:
        return rows_before(handle, span)


def _read_csv(url: str, storage_options: dict[str, Any], columns: list[str]) -> pd.DataFrame:
    """The columns of one CSV file, or of a block of it (a range of its bytes)."""
    file_url, span = split_block_url(url)
    with _open(file_url, storage_options) as handle:
        data = handle if span is None else io.BytesIO(csv_lines(handle, file_url, span))
        try:
            # pyarrow's parser is faster and, unlike pandas' with usecols, rejects rows
            # with more fields than the header.
            return pd.read_csv(data, usecols=columns, engine="pyarrow")
        except Exception:
            # A block cut inside a quoted field: say so, not what its half row broke.
            if span is not None:
                refuse_a_start_inside_quotes(handle, file_url, span)
            raise


def _read_parquet(url: str, storage_options: dict[str, Any], columns: list[str]) -> pd.DataFrame:
    """The columns of one Parquet file, one pandas block per column.

    A local file is opened by pyarrow itself: through a Python file object the
    same read took 1.7x as long (500k rows x 29 columns, one thread: 85 vs 50 ms).
    ``split_blocks`` leaves each column in its own block, zero-copy from Arrow:
    prepare_partition copies the features once into its own block anyway, so
    pandas' consolidation into one block would be a second copy of every value.
    """
    import pyarrow.parquet as pq

    url, span = split_block_url(url)  # a block: a range of the file's rows

    def read(where: Any) -> Any:
        if span is None:
            return pq.read_table(where, columns=columns)
        footer = pq.read_metadata(where)
        counts = [footer.row_group(i).num_rows for i in range(footer.num_row_groups)]
        groups, start = groups_holding(counts, span.first, span.last)
        if span.first == start and span.last == start + sum(counts[g] for g in groups) - 1:
            parquet = pq.ParquetFile(where, metadata=footer)
            return parquet.read_row_groups(groups, columns=columns)  # whole row groups
        # A range within row groups: decoded a batch at a time from a 1 MiB stream
        # (pre-buffered, pyarrow would load the groups' column chunks whole first). A
        # file of one 4M-row group (28 float32 features, a label), rows 3M-3.5M:
        # Arrow's peak 935 MiB and the process's 1,092 MiB read whole then sliced,
        # 162 and 370 MiB so.
        parquet = pq.ParquetFile(where, metadata=footer, pre_buffer=False, buffer_size=2**20)
        return rows_of_batches(
            parquet.iter_batches(batch_size=2**16, row_groups=groups, columns=columns),
            span.first - start,
            span.last - span.first + 1,
        )

    if url.startswith("file://") or "://" not in url:
        table = read(url.removeprefix("file://"))
    else:
        with _open(url, storage_options) as handle:
            table = read(handle)
    return _decimals_as_float(table).to_pandas(split_blocks=True, self_destruct=True)


def rows_of_batches(batches: Iterable[Any], skip: int, count: int) -> Any:
    """Rows ``skip`` to ``skip + count - 1`` of a stream of Arrow record batches, as a
    table: a batch before them is let go once read past, and none after them is read."""
    import pyarrow as pa

    kept, seen = [], 0
    for batch in batches:
        end = seen + batch.num_rows
        if end > skip:
            begin = max(skip - seen, 0)
            kept.append(batch.slice(begin, min(skip + count, end) - seen - begin))
        seen = end
        if seen >= skip + count:
            break
    if seen < skip + count:
        raise ValueError(f"rows {skip}-{skip + count - 1} asked of a stream of {seen}")
    return pa.Table.from_batches(kept)


def prepare_partition(
    frame: pd.DataFrame,
    url: str,
    index: int,
    plan: ColumnPlan,
    split: tuple[int, float] | None,
    rows_before: Callable[[], int] = lambda: 0,
) -> pd.DataFrame:
    """Check one partition's columns and values; cast features; mark validation rows.

    ``rows_before``: the file's rows before this partition's first (a block's), for
    the row numbers in messages; called only for a message.
    """
    for column in [*plan.features, plan.target]:
        expected = plan.file_dtypes[column]
        if column in plan.categorical:
            continue
        actual = str(frame[column].dtype)
        if _kind(actual) != _kind(expected) and not (len(frame) == 0):
            raise DataError(_type_changed(frame[column], column, url, expected, rows_before))
    target = frame[plan.target]
    missing = target.isna()
    if missing.any():
        first = int(np.flatnonzero(missing.to_numpy())[0]) + rows_before()
        raise DataError(
            f"target column '{plan.target}' has {int(missing.sum())} missing values in '{url}' "
            f"(first at row {first}): drop or fill those rows"
        )
    numeric = [c for c in plan.features if c not in plan.categorical]
    # One float32 block (a row per column, as pandas lays a block out), filled column
    # by column and checked in one pass: building the frame with a column insert per
    # feature cost more than reading the file and left a block per column. No copy
    # of the read frame is made, so a partition's peak is the frame plus its block.
    values = np.empty((len(numeric), len(frame)), dtype=FEATURE_DTYPE)
    with np.errstate(over="ignore", invalid="ignore"):  # too large for float32: inf, below
        for row, column in enumerate(numeric):
            values[row] = frame[column].to_numpy(dtype=FEATURE_DTYPE, na_value=np.nan)
    _check_features(values, numeric, frame, url, plan.missing_features_allowed, rows_before)
    out = pd.DataFrame(values.T, columns=numeric, index=pd.RangeIndex(len(frame)), copy=False)
    if len(numeric) < len(plan.features):
        for column in plan.categorical:
            if column in plan.features:
                out[column] = frame[column].astype("string").to_numpy()
        out = out[list(plan.features)]
    if plan.numeric_target:
        with np.errstate(over="ignore", invalid="ignore"):  # too large: inf, checked next
            labels = target.to_numpy(dtype=FEATURE_DTYPE)
    else:
        labels = target.to_numpy()
    if labels.dtype.kind == "f":
        _check_target(labels, plan.target, frame, url, rows_before)
    out[plan.target] = labels
    if split is not None:
        seed, fraction = split
        out[SPLIT_COLUMN] = split_draws(seed, index, url, len(out)) < fraction
    return out


def split_draws(seed: int, index: int, url: str, rows: int) -> np.ndarray:
    """The uniform draws that hold a block's rows out for validation (those below the
    fraction): the same rows on every run, whatever the cluster looks like.

    Each file has its own stream, seeded by its position in its source (``index``,
    see ``file_blocks.file_positions``), and a block of a Parquet file takes the
    stream from its first row on (PCG64 jumps there): a file holds out the same rows
    however it is cut, whole or into as many blocks as XGBoost has workers. A CSV
    block cannot know its first row without reading the bytes before it: its stream
    is its own, seeded by its first byte too, and CSV blocks follow the files' sizes
    alone, never the workers (``file_blocks.in_blocks``).
    """
    _, span = split_block_url(url)
    if span is not None and span.unit == "bytes":
        return np.random.default_rng([seed, index, span.first]).random(rows)
    rng = np.random.default_rng([seed, index])
    if span is not None:
        rng.bit_generator.advance(span.first)  # one 64-bit draw per row's double
    return rng.random(rows)


def _type_changed(
    values: pd.Series, column: str, url: str, expected: str, rows_before: Callable[[], int]
) -> str:
    """A column of another type than its schema: for a CSV file, typed from its first
    rows, most often a value further down that is not a number."""
    if _kind(expected) == "numeric":
        present = values.notna().to_numpy()
        numbers = pd.to_numeric(values, errors="coerce").notna().to_numpy()
        bad = np.flatnonzero(present & ~numbers)
        if len(bad):
            value = values.iloc[int(bad[0])]
            row = int(bad[0]) + rows_before()
            return (
                f"column '{column}' in '{url}' holds {value!r} in data row {row + 1} "
                f"(line {row + 2} of a CSV), not a number, where the data set's schema has "
                f"{expected}: fix or drop those rows"
            )
    return (
        f"column '{column}' is {values.dtype} in '{url}' but {expected} in the data set's "
        "schema (its first file): all files of a data set need the same columns and types"
    )


def _suspect_rows(matrix: np.ndarray) -> np.ndarray:
    """The rows of ``matrix`` that may hold inf or NaN, to be checked value by value.

    A row holding inf or NaN has a non-finite sum (inf and NaN survive every
    addition): one pass in the matrix's own dtype, no temporary mask of the data.
    A float32 sum can also overflow on finite values; such a row is only a suspect.
    (A float64 sum never overflowed, but casting every value made the check cost
    more than the rest of the read.)
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return np.flatnonzero(~np.isfinite(matrix.sum(axis=1)))


def _check_target(
    labels: np.ndarray,
    column: str,
    frame: pd.DataFrame,
    url: str,
    rows_before: Callable[[], int],
) -> None:
    """A float target must be finite: the trainers tell scikit-learn that every
    value was checked (BlockSpec.checked_finite), and XGBoost rejects inf."""
    if not len(_suspect_rows(labels[np.newaxis])):
        return
    bad = np.flatnonzero(~np.isfinite(labels))
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"target column '{column}' in '{url}' holds an infinite or too large value "
            f"(first at row {row + rows_before()}: {frame[column].iloc[row]!r}); targets must "
            "be finite numbers: drop or fix those rows"
        )


def _check_features(
    matrix: np.ndarray,
    columns: list[str],
    frame: pd.DataFrame,
    url: str,
    missing_allowed: bool,
    rows_before: Callable[[], int],
) -> None:
    """The first bad feature column, in column order, names the file, column and row.

    ``matrix`` holds one row per feature column.
    """
    if matrix.size == 0:
        return
    for index in _suspect_rows(matrix):
        values = matrix[index]
        missing = not missing_allowed and bool(np.isnan(values).any())
        if missing or np.isinf(values).any():
            break
    else:
        return
    column = columns[index]
    if missing:
        row = int(np.flatnonzero(np.isnan(values))[0])
        raise DataError(
            f"feature column '{column}' in '{url}' has missing values (first at row "
            f"{row + rows_before()}); "
            "this estimator cannot learn from them: fill or drop those rows"
        )
    row = int(np.flatnonzero(np.isinf(values))[0])
    raise DataError(
        f"feature column '{column}' in '{url}' holds an infinite or too large value "
        f"(first at row {row + rows_before()}: {frame[column].iloc[row]!r}); features must "
        "be finite float32 numbers (missing values may be empty/NaN)"
    )


def partition_stats(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """Row counts and label range of one partition, for the checks that need all data."""
    labels = frame[target]
    numeric = pd.api.types.is_numeric_dtype(labels) and len(labels) > 0
    valid = frame[SPLIT_COLUMN] if SPLIT_COLUMN in frame else pd.Series(False, index=frame.index)
    return pd.DataFrame(
        {
            "rows": [len(frame)],
            "validation_rows": [int(valid.sum())],
            "label_min": [float(labels.min()) if numeric else np.nan],
            "label_max": [float(labels.max()) if numeric else np.nan],
            "label_integral": [bool(np.all(np.mod(labels, 1) == 0)) if numeric else False],
        }
    )


# ---------------------------------------------------------------- planning (client)


def plan_columns(
    schemas: Sequence[tuple[str, dict[str, str]]],
    target: str,
    features: Sequence[str] | None,
    categorical: Sequence[str],
    numeric_target: bool,
    categorical_allowed: bool = True,
) -> ColumnPlan:
    """Check schemas agree and columns exist and are usable; decide features.

    Header-only CSV files have names but no types: they must have the same
    columns, and their types are those of the files with rows. With ``features``
    given, a file needs only those columns and the target (others are not read);
    by default every column is a feature, so every file needs the same columns.
    """
    typed = [(url, schema) for url, schema in schemas if UNTYPED not in schema.values()]
    if not typed:
        raise DataError(
            f"no rows in '{schemas[0][0]}' nor in any other file: every file holds a CSV "
            "header only; point data.train at files with rows"
        )
    first_url, first = typed[0]
    if target not in first:
        raise DataError(
            f"target column '{target}' not found in '{first_url}'; columns are: "
            f"{', '.join(list(first)[:20])}{' ...' if len(first) > 20 else ''}"
            f"{_name_hint(target, list(first))}"
        )
    used = None if features is None else [*features, target]
    for url, schema in schemas:
        wanted = list(first) if used is None else [c for c in first if c in used]
        missing = [c for c in wanted if c not in schema]
        extra = [c for c in schema if c not in first] if used is None else []
        if target in missing:
            raise DataError(
                f"target column '{target}' not found in '{url}' ('{first_url}' has it): "
                "every file, validation files too, needs the target column"
            )
        if missing or extra:
            detail = ", ".join(
                part
                for part in (
                    f"missing {missing}" if missing else "",
                    f"extra {extra}" if extra else "",
                )
                if part
            )
            raise DataError(
                f"'{url}' has different columns than '{first_url}' ({detail}): "
                "all files of a data set need the same columns"
            )
        for column in wanted:
            dtype = schema[column]
            if dtype != UNTYPED and _kind(dtype) != _kind(first[column]):
                raise DataError(
                    f"column '{column}' is {dtype} in '{url}' but {first[column]} in "
                    f"'{first_url}': all files of a data set need the same column types"
                )
    chosen = list(features) if features is not None else [c for c in first if c != target]
    unknown = [c for c in [*chosen, *categorical] if c not in first]
    if unknown:
        raise DataError(f"column '{unknown[0]}' listed in the config is not in '{first_url}'")
    if not chosen:
        raise DataError(f"'{first_url}' has no feature columns besides the target '{target}'")
    for column in [*chosen, target]:
        if column == "":
            raise DataError(
                f"column {list(first).index('') + 1} of '{first_url}' has no name (an index "
                "pandas' to_csv wrote?): write the files with index=False, or name the "
                "feature columns to use in data.features"
            )
        if column == SPLIT_COLUMN:
            raise DataError(
                f"column '{column}' in '{first_url}' has a name reserved by daskyard: "
                "rename it, or leave it out of data.features"
            )
    for column in chosen:
        if column not in categorical and _kind(first[column]) == "other":
            raise DataError(_not_numeric(column, first_url, first[column], categorical_allowed))
    if numeric_target and _kind(first[target]) == "other":
        raise DataError(
            f"target column '{target}' in '{first_url}' is {first[target]}, not numeric: "
            "encode the labels as numbers"
        )
    return ColumnPlan(
        features=tuple(chosen),
        target=target,
        categorical=tuple(c for c in categorical if c in chosen),
        file_dtypes=dict(first),
        numeric_target=numeric_target,
    )


DATE_TYPES = ("datetime64", "timedelta64", "date32", "date64", "timestamp", "time32", "time64")


def _not_numeric(column: str, url: str, dtype: str, categorical_allowed: bool) -> str:
    where = f"feature column '{column}' in '{url}' is {dtype}"
    if dtype == "null":
        return f"{where}: it holds no values at all; leave it out of data.features"
    if dtype.startswith(DATE_TYPES) or dtype.startswith("duration"):
        return (
            f"{where}, a date or time, not a number: derive numeric features from it "
            "(e.g. seconds since an epoch, day of week), or leave it out of data.features"
        )
    if not categorical_allowed:
        return (
            f"{where}, not numeric: encode it as numbers, or leave it out of "
            "data.features (incremental training takes no categorical features)"
        )
    return f"{where}, not numeric: list it under data.categorical or leave it out of data.features"


def _name_hint(target: str, columns: list[str]) -> str:
    """Why a CSV header lacks the target: another delimiter, or a near miss."""
    if len(columns) == 1:
        for delimiter, shown in ((";", ";"), ("\t", "\\t"), ("|", "|")):
            if delimiter in columns[0]:
                return (
                    f"; the header reads as one column: the file looks separated by "
                    f"'{shown}', and daskyard reads comma-separated CSV: convert it to commas"
                )
    near = [c for c in columns if c.strip().casefold() == target.strip().casefold()]
    if near:
        return f"; did you mean '{near[0]}'?"
    return ""


def _meta(source: DataSource, plan: ColumnPlan, split: tuple[int, float] | None) -> pd.DataFrame:
    return prepare_partition(
        pd.DataFrame({c: _empty(plan.file_dtypes[c]) for c in [*plan.features, plan.target]}),
        source.url,
        0,
        plan,
        split,
    )


def _empty(dtype: str) -> pd.Series:
    try:
        return pd.Series(dtype=dtype)
    except TypeError:  # an Arrow type pandas holds as object (date32[day]: a category)
        return pd.Series(dtype=object)


def _frame_from_source(
    source: DataSource, plan: ColumnPlan, split: tuple[int, float] | None
) -> dd.DataFrame:
    import dask.dataframe as dd

    meta = _meta(source, plan, split)
    return dd.from_map(
        read_partition,
        list(source.files),
        file_positions(source.files),
        source_format=source.format,
        storage_options=source.storage_options,
        plan=plan,
        split=split,
        meta=meta,
        enforce_metadata=False,
        label="daskyard-read",
    )


def _inspect_files(
    client: Client, source: DataSource
) -> tuple[list[tuple[str, dict[str, str]]], list[RowGroups]]:
    """Each file's (URL, schema), and its row groups (``inspect_file``)."""
    futures = client.map(
        inspect_file,
        list(source.files),
        fmt=source.format,
        storage_options=source.storage_options,
        pure=False,
    )
    found = client.gather(futures)
    schemas = [(url, dtypes) for url, (dtypes, _) in zip(source.files, found, strict=True)]
    return schemas, [row_groups for _, row_groups in found]


@dataclass(frozen=True)
class DataPlan:
    """Validated sources and columns: what every trainer reads, block by block."""

    train: DataSource
    validation: DataSource | None
    columns: ColumnPlan
    split: tuple[int, float] | None  # (seed, fraction) when validation rows come from train

    @property
    def sources(self) -> list[DataSource]:
        return [self.train] + ([self.validation] if self.validation else [])

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("".join(s.fingerprint for s in self.sources).encode()).hexdigest()

    @property
    def layout(self) -> str:
        """What a run's checkpoints depend on: the data and, where large files were cut
        into blocks, the blocks (an incremental run resumes at a block number)."""
        cut = [s.files for s in self.sources if file_count(s) != len(s.files)]
        if not cut:
            return self.fingerprint
        return hashlib.sha256((self.fingerprint + repr(cut)).encode()).hexdigest()

    def described(self) -> list[dict[str, Any]]:
        """The sources as manifests record them (a rerun compares their fingerprints)."""
        return [
            {
                "url": s.url,
                "files": file_count(s),
                "blocks": len(s.files),  # more than files where large ones were cut
                "format": s.format,
                "fingerprint": s.fingerprint,
            }
            for s in self.sources
        ]


def identity_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A resolved config as a run id hashes it, with ``DataPlan.layout`` beside it:
    ``data.max_block_mb`` counts through the blocks it makes, not as a setting. So a
    data set with no file large enough to cut keeps the run id it had before the
    setting existed, and a retried pod on an upgraded image still resumes."""
    data = settings.get("data")
    if isinstance(data, dict):
        data.pop("max_block_mb", None)
    return settings


def plan_data(
    client: Client,
    data: DataConfig,
    storage_options: dict[str, Any],
    numeric_target: bool = True,
    missing_features_allowed: bool = True,
    categorical_allowed: bool = True,
    spread_over: int = 1,
) -> DataPlan:
    """List the files (client) and check their schemas (workers); DataError names the file.

    Files over ``data.max_block_mb`` become several blocks (``file_blocks``),
    as many as a multiple of ``spread_over`` (the workers that hold a share each); a
    source of fewer blocks than ``spread_over`` is cut for one on each of them.
    """
    max_bytes = data.max_block_mb * 2**20
    train_source = list_source(data.train, data.format, storage_options)
    schemas, row_groups = _inspect_files(client, train_source)
    train_source = in_blocks(train_source, row_groups, max_bytes, spread_over)
    columns = plan_columns(
        schemas,
        data.target,
        data.features,
        data.categorical,
        numeric_target,
        categorical_allowed,
    )
    columns = replace(columns, missing_features_allowed=missing_features_allowed)
    valid_source = None
    if data.validation:
        valid_source = list_source(data.validation, data.format, storage_options)
        valid_schemas, valid_row_groups = _inspect_files(client, valid_source)
        valid_source = in_blocks(valid_source, valid_row_groups, max_bytes, spread_over)
        plan_columns(
            [schemas[0], *valid_schemas],
            data.target,
            columns.features,
            columns.categorical,
            numeric_target,
            categorical_allowed,
        )
    split = None if valid_source else (data.seed, data.validation_fraction)
    return DataPlan(train_source, valid_source, columns, split)


def load_training_data(
    client: Client,
    data: DataConfig,
    storage_options: dict[str, Any],
    numeric_target: bool = True,
    resource: str | None = None,
) -> LoadedData:
    """Plan, then read, validate and persist all rows on the workers: with ``resource``,
    on those that declare it (XGBoost trains where the rows are), every task of it."""
    with held_to(resource):
        return _load(client, data, storage_options, numeric_target, resource)


def _load(
    client: Client,
    data: DataConfig,
    storage_options: dict[str, Any],
    numeric_target: bool,
    resource: str | None,
) -> LoadedData:
    # A large file is cut into a multiple of the workers' count of blocks: else 3
    # blocks on 2 workers, say, and every round waits for the one holding two. Fewer
    # files than workers are cut too: else a worker trains (or evaluates) on nothing.
    workers = len(worker_threads(client, resource))
    plan = plan_data(client, data, storage_options, numeric_target, spread_over=max(workers, 1))
    columns = plan.columns
    threads = worker_threads(client, resource)  # after planning: workers may have joined
    if plan.validation is not None:
        train = _persist_spread(client, plan.train, columns, None, threads, resource)
        validation = _persist_spread(client, plan.validation, columns, None, threads, resource)
        train_stats = _stats(train, columns)
        valid_stats = _stats(validation, columns)
        rows = {
            "train": int(train_stats["rows"].sum()),
            "validation": int(valid_stats["rows"].sum()),
        }
        stats = pd.concat([train_stats, valid_stats])
    else:
        frame = _persist_spread(client, plan.train, columns, plan.split, threads, resource)
        stats = _stats(frame, columns)
        total = int(stats["rows"].sum())
        held_out = int(stats["validation_rows"].sum())
        rows = {"train": total - held_out, "validation": held_out}
        # Where the reads were (with a resource, held there by held_to).
        train = frame[~frame[SPLIT_COLUMN]].drop(columns=[SPLIT_COLUMN]).persist()
        validation = frame[frame[SPLIT_COLUMN]].drop(columns=[SPLIT_COLUMN]).persist()
        del frame
    check_rows(rows, plan, data)
    if columns.categorical:
        train, validation = _known_categories(columns, train, validation)
    nonempty = stats[stats["rows"] > 0]
    labels = {
        "min": float(nonempty["label_min"].min()),
        "max": float(nonempty["label_max"].max()),
        "integral": bool(nonempty["label_integral"].all()),
    }
    return LoadedData(
        train=train,
        validation=validation,
        plan=plan,
        rows=rows,
        label_summary=labels,
    )


def _persist_spread(
    client: Client,
    source: DataSource,
    plan: ColumnPlan,
    split: tuple[int, float] | None,
    threads: dict[str, int],
    resource: str | None,
) -> dd.DataFrame:
    """All rows of the source, held on the workers as spread_reads places them."""
    if len(threads) < 2 and resource is None:
        return _frame_from_source(source, plan, split).persist()
    import dask.dataframe as dd

    futures = spread_reads(client, source, plan, split, threads, resource)
    return dd.from_delayed(futures, meta=_meta(source, plan, split), verify_meta=False)


def restricted_to(resource: str | None) -> dict[str, Any]:
    """Task options restricting it to the workers declaring ``resource`` (none: no
    options). Any amount restricts; a tiny one lets a worker run as many such tasks
    at once as it has threads (a GPU worker declares GPU=1 and would otherwise read
    one file at a time)."""
    return {"resources": {resource: 1e-6}} if resource else {}


@contextmanager
def held_to(resource: str | None) -> Iterator[None]:
    """Every task this thread submits inside is restricted to the workers declaring
    ``resource`` (none: no restriction): the reads, the checks over the rows, the
    persists, and XGBoost's own matrices, training and predictions.

    Restricting the reads alone was not enough: the checks over the rows and
    XGBoost's own partition tasks ran on the CPU worker beside a GPU worker too,
    fetching copies of the rows (every run, here and on an H200). XGBoost gives
    each partition to the first worker holding it, so that CPU worker could train,
    on the CPU beside the GPUs: a mix XGBoost failed on (seen on an H200).
    distributed applies these annotations to every graph the client sends; the
    dataframe collections' warning that they would be ignored is wrong here.
    """
    if resource is None:
        yield
        return
    import dask

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Dask annotations .* detected", UserWarning)
        with dask.annotate(**restricted_to(resource)):
            yield


def worker_threads(client: Client, resource: str | None = None) -> dict[str, int]:
    """Each worker's address and thread count, now; with ``resource``, only the
    workers that declare it (``dask worker --resources GPU=1``), if any do."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    chosen = _declaring(info, resource) if resource else []
    return {address: info[address].get("nthreads", 1) for address in chosen or info}


def workers_declaring(client: Client, resource: str) -> list[str]:
    """The addresses of the workers that declare ``resource``, now."""
    return _declaring(client.scheduler_info(n_workers=-1)["workers"], resource)


def _declaring(info: dict[str, Any], resource: str) -> list[str]:
    return [a for a, w in info.items() if (w.get("resources") or {}).get(resource, 0) > 0]


def spread_reads(
    client: Client,
    source: DataSource,
    plan: ColumnPlan,
    split: tuple[int, float] | None,
    threads: dict[str, int],
    resource: str | None = None,
) -> list[Future]:
    """Read every file on the worker placement.assign_files picks, by its listed size.

    Left to the scheduler, the partitions land wherever a thread is free first
    (10 and 6 of 16 files on two workers was common), and dealing files out in
    turn leaves a worker short when the files differ in size (an empty one, a
    last small one): XGBoost waits for the fullest worker every round.

    With ``resource``, the reads are restricted to the workers declaring it and
    placed among them by the scheduler: a placement on one worker must be loose
    (a worker that leaves must not stall its reads), and an idle worker may steal
    a loose read, a CPU worker beside the GPU ones too, where XGBoost then fails.
    """
    placements: list[dict[str, Any]]
    if resource is not None:
        placements = [restricted_to(resource)] * len(source.files)
    else:
        sizes = source.sizes or (0,) * len(source.files)
        # No worker at this moment (all lost, none back yet): the reads wait for the next.
        owners = assign_files(sizes, threads) if threads else [None] * len(source.files)
        # Loose: a worker that left does not stall the read.
        placements = [
            {"workers": [owner], "allow_other_workers": True} if owner else {} for owner in owners
        ]
    return [
        client.submit(
            read_partition,
            url,
            index,
            source.format,
            source.storage_options,
            plan,
            split,
            pure=False,
            key=f"daskyard-read-{uuid.uuid4().hex}-{block}",
            **placed,
        )
        for block, (url, index, placed) in enumerate(
            zip(source.files, file_positions(source.files), placements, strict=True)
        )
    ]


def check_rows(rows: dict[str, int], plan: DataPlan, data: DataConfig) -> None:
    if rows["train"] == 0:
        raise DataError(f"no rows in '{data.train}' ({len(plan.train.files)} file(s), all empty)")
    if rows["validation"] == 0:
        where = data.validation or f"the {data.validation_fraction:.0%} split of '{data.train}'"
        raise DataError(
            f"no validation rows in {where}: add data or raise data.validation_fraction"
        )


def _stats(frame: dd.DataFrame, plan: ColumnPlan) -> pd.DataFrame:
    meta = partition_stats(
        pd.DataFrame({plan.target: pd.Series(dtype="float32")}), plan.target
    ).iloc[:0]
    return frame.map_partitions(partition_stats, plan.target, meta=meta).compute()


def _known_categories(
    plan: ColumnPlan, train: dd.DataFrame, validation: dd.DataFrame
) -> tuple[dd.DataFrame, dd.DataFrame]:
    """One category set per column across all partitions, as XGBoost requires."""
    import dask
    import dask.dataframe as dd

    uniques = dask.compute(
        *[dd.concat([train[c], validation[c]]).dropna().unique() for c in plan.categorical]
    )
    dtypes = {
        c: pd.CategoricalDtype(sorted(u)) for c, u in zip(plan.categorical, uniques, strict=True)
    }
    return train.astype(dtypes).persist(), validation.astype(dtypes).persist()
