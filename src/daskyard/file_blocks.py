"""Data files as several blocks: ranges of a Parquet file's rows, of a CSV file's bytes.

Every block of data is one partition (XGBoost) or one ``partial_fit`` (the
incremental jobs), read whole by one worker. Were a file always one block, a
single 20 GB file would be one partition on one worker (the others training on
nothing) and one block in one worker's memory, however out of core the job:
so a file larger than ``data.max_block_mb`` is cut into blocks of about that
size or less each.

- A Parquet file (its size: its row groups' uncompressed bytes, as the footer
  records them) is cut into runs of consecutive whole row groups where it has
  enough row groups for that. Else (a file of one huge row group, say: what
  older writers made by default) into equal ranges of its rows, each read by
  decoding the row groups it lies in a batch at a time, keeping its own rows
  (``data._read_parquet``): a worker holds its block, a batch and a few pages
  of each column, however large the row group.
- An uncompressed CSV file (its size on disk) is cut into equal ranges of bytes,
  each read as the lines that start inside it (``fsspec.utils.read_block``, as
  ``dask.dataframe.read_csv`` cuts them) below the file's header. A cut on a
  line break inside a quoted field is refused where it is read (``csv_blocks``).
  A compressed CSV file cannot be read from the middle: it stays one block.

XGBoost also needs a partition on every worker: a data set of fewer blocks than
workers (one small file, a single validation file) left the others training or
evaluating on nothing, and XGBoost warned of each empty DMatrix. Its Parquet
files are then cut into enough blocks the same way (at row group boundaries
where there are enough row groups, else into equal ranges of rows). Not CSV
files: their blocks must not depend on the cluster (see ``in_blocks``).

A block is named by its file's URL with ``#rows=FIRST-LAST`` or
``#bytes=FIRST-LAST`` (inclusive, counted from the file's start): every consumer
of a data source handles file URLs as opaque names, so a block goes wherever a
file went (placement, caches, checkpoints' block order, messages), and only the
reader (``data.read_partition``) looks inside.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, NamedTuple

from fsspec.utils import infer_compression

if TYPE_CHECKING:
    from daskyard.data import DataSource  # which reads blocks with split_block_url

_SUFFIX = re.compile(r"#(rows|bytes)=(\d+)-(\d+)$")

# A file's row groups as its footer records them: (rows, uncompressed bytes) each.
RowGroups = Sequence[tuple[int, int]]


class Span(NamedTuple):
    """The part of a file a block is: rows (Parquet) or bytes (CSV), both inclusive."""

    unit: str  # "rows" | "bytes"
    first: int
    last: int


def block_url(url: str, first: int, last: int, unit: str = "rows") -> str:
    """The name of ``unit`` (rows or bytes) ``first`` to ``last`` (inclusive) of the
    file at ``url``."""
    return f"{url}#{unit}={first}-{last}"


def split_block_url(url: str) -> tuple[str, Span | None]:
    """The file's URL and the part of it a block URL names (None: the whole file)."""
    match = _SUFFIX.search(url)
    if match is None:
        return url, None
    return url[: match.start()], Span(match[1], int(match[2]), int(match[3]))


def groups_holding(rows: Sequence[int], first: int, last: int) -> tuple[list[int], int]:
    """The row groups (each of ``rows`` rows) that rows ``first`` to ``last`` lie in,
    and the row those groups start at."""
    starts = [0, *itertools.accumulate(rows)]
    low = bisect.bisect_right(starts, first) - 1
    high = bisect.bisect_right(starts, last) - 1
    return list(range(low, min(high, len(rows) - 1) + 1)), starts[low]


def runs(
    row_group_bytes: Sequence[int], max_bytes: int, multiple: int = 1, at_least: int = 1
) -> list[tuple[int, int]]:
    """The file's row groups as consecutive runs, (first, last) inclusive, in file order.

    One run when the file is ``max_bytes`` or less. Else as few runs as keep each
    to about ``max_bytes``, rounded up to a multiple of ``multiple`` (one per XGBoost
    worker balances a single large file), cut at the row group boundaries nearest to
    equal shares. ``at_least`` runs in any case; never more runs than row groups.
    """
    count = len(row_group_bytes)
    total = sum(row_group_bytes)
    wanted = min(blocks_wanted(total, max_bytes, multiple, at_least), count)
    if wanted < 2:
        return [(0, count - 1)] if count else []
    ends = list(itertools.accumulate(row_group_bytes))  # bytes up to each boundary
    cuts: list[int] = []  # the first row group of each run after the first
    for share in range(1, wanted):
        target = total * share / wanted
        low = (cuts[-1] if cuts else 0) + 1  # each run keeps a row group
        high = count - (wanted - share)  # and leaves one to each run after it
        past = bisect.bisect_left(ends, target)  # the first boundary at or past it
        # A cut after row group b starts the next run at b + 1, within [low, high].
        allowed = [b for b in (past - 1, past) if low <= b + 1 <= high]
        nearest = min(
            allowed or [min(max(past, low - 1), high - 1)], key=lambda b: abs(ends[b] - target)
        )
        cuts.append(nearest + 1)
    starts = [0, *cuts]
    return [(start, end - 1) for start, end in zip(starts, [*cuts, count], strict=True)]


def blocks_wanted(total_bytes: int, max_bytes: int, multiple: int = 1, at_least: int = 1) -> int:
    """How many blocks a file of ``total_bytes`` is cut into: as few as keep each to
    ``max_bytes``, rounded up to a multiple of ``multiple``; ``at_least`` in any case."""
    wanted = 1
    if total_bytes > max_bytes:
        wanted = math.ceil(math.ceil(total_bytes / max_bytes) / multiple) * multiple
    return max(wanted, at_least)


def row_ranges(
    row_groups: RowGroups, max_bytes: int, multiple: int = 1, at_least: int = 1
) -> list[tuple[int, int]]:
    """The rows of each block of one file, (first, last) inclusive, in file order.

    Runs of whole row groups (``runs``) where they come to the blocks wanted
    (``blocks_wanted``), none over twice ``max_bytes``. Else (too few row groups,
    or one far larger than the rest) that many equal ranges of the file's rows, as
    many as it has rows if fewer: a range within a row group is read without
    holding the group (``data._read_parquet``).
    """
    rows = [count for count, _ in row_groups]
    sizes = [size for _, size in row_groups]
    starts = [0, *itertools.accumulate(rows)]
    total = starts[-1]
    wanted = blocks_wanted(sum(sizes), max_bytes, multiple, at_least)
    cut = runs(sizes, max_bytes, multiple, at_least)
    largest = max((sum(sizes[first : last + 1]) for first, last in cut), default=0)
    if (len(cut) >= wanted and largest <= 2 * max_bytes) or total < 2:
        return [(starts[first], starts[last + 1] - 1) for first, last in cut]
    return equal_ranges(total, min(wanted, total))


def byte_ranges(size: int, max_bytes: int) -> list[tuple[int, int]]:
    """A CSV file's ``size`` bytes as equal ranges, (first, last) inclusive: as few as
    keep each to ``max_bytes``. Never by the workers' count (see ``in_blocks``)."""
    return equal_ranges(size, max(math.ceil(size / max_bytes), 1))


def equal_ranges(total: int, pieces: int) -> list[tuple[int, int]]:
    """``total`` units (rows or bytes) as ``pieces`` near-equal ranges, (first, last)
    inclusive."""
    bounds = [total * piece // pieces for piece in range(pieces + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(pieces)]


def in_blocks(
    source: DataSource,
    row_groups: Sequence[RowGroups],
    max_bytes: int,
    multiple: int = 1,
) -> DataSource:
    """``source`` with each file over ``max_bytes`` replaced by its blocks, in place;
    and, when that leaves fewer blocks than ``multiple`` (XGBoost's workers), each
    Parquet file cut into enough blocks for one on every worker.

    ``row_groups``: each Parquet file's row groups, (rows, uncompressed bytes) each
    (empty for CSV). A block's listed size is its share of the file's listed size, so
    that placement weighs blocks and whole files in the same unit (bytes as stored).
    """
    listed = source.sizes or (0,) * len(source.files)

    def spans(at_least: int) -> list[list[tuple[int, int]]]:
        if source.format == "parquet":
            return [row_ranges(groups, max_bytes, multiple, at_least) for groups in row_groups]
        return [
            byte_ranges(size, max_bytes) if _seekable(url) else []
            for url, size in zip(source.files, listed, strict=True)
        ]

    ranges = spans(1)
    # Not CSV files: a block's validation rows are drawn by its first row in the file
    # (data.split_draws), which a CSV block cannot know; so CSV blocks must not vary
    # with the cluster, or neither would the rows held out.
    few = sum(max(len(r), 1) for r in ranges) < multiple
    if source.files and few and source.format == "parquet":
        ranges = spans(math.ceil(multiple / len(source.files)))
    unit = "rows" if source.format == "parquet" else "bytes"
    files: list[str] = []
    sizes: list[int] = []
    for url, size, blocks in zip(source.files, listed, ranges, strict=True):
        if len(blocks) < 2:
            files.append(url)
            sizes.append(size)
            continue
        total = blocks[-1][1] + 1
        for first, last in blocks:
            files.append(block_url(url, first, last, unit))
            sizes.append(round(size * (last - first + 1) / total))
    if len(files) == len(source.files):
        return source
    return replace(source, files=tuple(files), sizes=tuple(sizes) if source.sizes else ())


def file_count(source: DataSource) -> int:
    """How many files the source's blocks come from."""
    return len({split_block_url(url)[0] for url in source.files})


def _seekable(url: str) -> bool:
    """Whether a CSV file can be read from the middle: not compressed (by its suffix,
    as fsspec decompresses it)."""
    return infer_compression(url) is None


def file_positions(files: Sequence[str]) -> list[int]:
    """Each block's file's position among the files, in order (a whole file's is its
    own index): what a block's validation rows are drawn by, with its first row."""
    positions: dict[str, int] = {}
    return [positions.setdefault(split_block_url(url)[0], len(positions)) for url in files]
