"""Which worker reads which file, so that every worker holds an equal share of the rows.

XGBoost on Dask trains each worker on the partitions it holds and waits for the
slowest worker every round, so an uneven spread costs every round. The listed
file sizes are the share each file brings: bytes track rows closely enough within
one data set (one format, one schema, one compression).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def assign_files(sizes: Sequence[int], threads: Mapping[str, int]) -> list[str]:
    """The worker address for each file, in file order.

    Largest file first, each to the worker with the least bytes per thread once it
    has it (the longest-processing-time rule: within 4/3 of the best spread). Ties
    go to the worker with fewer files, then the first address, so equal files
    (or unknown sizes, listed as 0) are dealt out in turn.
    """
    if not threads:
        raise ValueError("no workers to assign files to")
    workers = sorted(threads)
    load = dict.fromkeys(workers, 0)
    count = dict.fromkeys(workers, 0)
    chosen: list[str] = [""] * len(sizes)
    for index in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        size = sizes[index]
        target = min(
            workers,
            key=lambda w: ((load[w] + size) / max(threads[w], 1), count[w] / max(threads[w], 1)),
        )
        load[target] += size
        count[target] += 1
        chosen[index] = target
    return chosen
