"""A worker's cache of loaded blocks, for work that reads the same files again.

A search trains every candidate on the same first files and scores every one
on the same validation files: 76 block reads of 16 distinct files and 24 reads
of one validation file in the search benchmark. Each worker keeps the blocks it
loaded, ready for ``partial_fit`` or ``predict``, least recently used first out,
within a share of its memory limit. (dask-ml's searches hold the whole data set
in cluster memory instead; this keeps the bound, so a data set larger than the
cluster still streams, reading again what does not fit.)

A search's first pass leaves each file it read here too (``keep``), as read and
checked: the worker that loads that block for the first rung scales it from
memory instead of reading the file again (``take``).

Streaming training reads each block once per epoch and does not use it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from zict import LRU

# Of the worker's memory limit (distributed's total-memory estimate without one):
# the rest is for the running tasks, and a model being trained.
CACHE_SHARE = 0.25

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "lru": this worker process's cache, made on first use


def _nbytes(value: Any) -> int:
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.nbytes
    memory_usage = getattr(value, "memory_usage", None)  # a DataFrame
    return int(memory_usage(deep=True).sum()) if memory_usage else 64


def _budget() -> int:
    from distributed import get_worker
    from distributed.system import MEMORY_LIMIT

    try:
        limit = get_worker().memory_manager.memory_limit
    except ValueError:  # not on a worker (called in process): no cache
        return 0
    return int((limit or MEMORY_LIMIT) * CACHE_SHARE)


def _lru() -> LRU | None:
    with _lock:
        if "lru" not in _state:
            budget = _budget()
            _state["lru"] = LRU(budget, {}, weight=lambda _, v: _nbytes(v)) if budget else None
        return _state["lru"]


def cached(run: str, key: str, load: Callable[[], Any]) -> Any:
    """``load()``'s value, kept under ``(run, key)`` while it fits this worker's budget."""
    lru = _lru()
    if lru is None:
        return load()
    try:
        return lru[run, key]
    except KeyError:
        pass
    value = load()
    lru[run, key] = value  # a value larger than the whole budget is evicted at once
    return value


def keep(run: str, key: str, value: Any) -> None:
    """Keep ``value`` under ``(run, key)`` for a later ``take``, while it fits."""
    lru = _lru()
    if lru is not None:
        lru[run, key] = value


def take(run: str, key: str) -> Any | None:
    """The value kept under ``(run, key)``, no longer kept; None if there is none."""
    lru = _state.get("lru")
    return None if lru is None else lru.pop((run, key), None)


def forget(run: str) -> int:
    """Drop one run's blocks (its job is done); how many there were. Runs on workers."""
    lru = _state.get("lru")
    if lru is None:
        return 0
    stale = [key for key in list(lru.keys()) if key[0] == run]
    for key in stale:
        lru.pop(key, None)
    return len(stale)
