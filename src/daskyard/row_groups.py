"""Large Parquet files as several blocks, each a run of whole row groups.

Every block of data is one partition (XGBoost) or one ``partial_fit`` (the
incremental jobs), read whole by one worker. Were a file always one block, a
single 20 GB file would be one partition on one worker (the others training on
nothing) and one block in one worker's memory, however out of core the job:
so a file whose row groups add up to more than ``data.max_block_mb``
(uncompressed, as the footer records them) is cut into runs of consecutive row
groups of about that size or less each. A row group is the smallest unit a
Parquet reader reads alone, so a single larger one stays one block.

A block is named by its file's URL with ``#row-groups=FIRST-LAST``: every
consumer of a data source handles file URLs as opaque names, so a block goes
wherever a file went (placement, caches, checkpoints' block order, messages),
and only the reader (``data.read_partition``) looks inside.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daskyard.data import DataSource  # which reads blocks with split_block_url

_SUFFIX = re.compile(r"#row-groups=(\d+)-(\d+)$")


def block_url(url: str, first: int, last: int) -> str:
    """The name of row groups ``first`` to ``last`` (inclusive) of the file at ``url``."""
    return f"{url}#row-groups={first}-{last}"


def split_block_url(url: str) -> tuple[str, list[int] | None]:
    """The file's URL and the row groups a block URL names (None: the whole file)."""
    match = _SUFFIX.search(url)
    if match is None:
        return url, None
    return url[: match.start()], list(range(int(match[1]), int(match[2]) + 1))


def runs(
    row_group_bytes: Sequence[int], max_bytes: int, multiple: int = 1
) -> list[tuple[int, int]]:
    """The file's row groups as consecutive runs, (first, last) inclusive, in file order.

    One run when the file is ``max_bytes`` or less. Else as few runs as keep each
    to about ``max_bytes``, rounded up to a multiple of ``multiple`` (one per XGBoost
    worker balances a single large file), cut at the row group boundaries nearest to
    equal shares; never more runs than row groups.
    """
    count = len(row_group_bytes)
    total = sum(row_group_bytes)
    if total <= max_bytes or count < 2:
        return [(0, count - 1)] if count else []
    wanted = math.ceil(total / max_bytes)
    wanted = min(math.ceil(wanted / multiple) * multiple, count)
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


def in_blocks(
    source: DataSource,
    row_group_bytes: Sequence[Sequence[int]],
    max_bytes: int,
    multiple: int = 1,
) -> DataSource:
    """``source`` with each file over ``max_bytes`` replaced by its blocks (``runs``),
    in place.

    ``row_group_bytes``: each file's row groups' uncompressed sizes (empty for CSV).
    A block's listed size is its share of the file's listed size, so that placement
    weighs blocks and whole files in the same unit (bytes as stored).
    """
    listed = source.sizes or (0,) * len(source.files)
    files: list[str] = []
    sizes: list[int] = []
    for url, size, groups in zip(source.files, listed, row_group_bytes, strict=True):
        cut = runs(groups, max_bytes, multiple)
        if len(cut) < 2:
            files.append(url)
            sizes.append(size)
            continue
        total = sum(groups) or 1
        for first, last in cut:
            files.append(block_url(url, first, last))
            sizes.append(round(size * sum(groups[first : last + 1]) / total))
    if len(files) == len(source.files):
        return source
    return replace(source, files=tuple(files), sizes=tuple(sizes) if source.sizes else ())


def file_count(source: DataSource) -> int:
    """How many files the source's blocks come from."""
    return len({split_block_url(url)[0] for url in source.files})
