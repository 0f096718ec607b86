"""Import the heavy libraries (XGBoost, scikit-learn, pandas, pyarrow) cheaply.

Importing xgboost.dask, dask.dataframe and pyarrow creates millions of long-lived
objects, and CPython's cyclic garbage collector scans them over and over while
they are created: 517 young, 47 middle and 4 full collections, about 0.35 s of a
1.9 s import on this project's 2-core machine. Every later full collection scans
them again, and so does the last one at interpreter exit: a worker process that
had imported them took 0.6 s to exit, 0.15 s with them frozen. An embedded run
pays each of these three times (its own process and two fresh workers), on the
same two cores that then train.

So the imports run with the collector paused, and what they created is moved to
the permanent generation (``gc.freeze``, the documented remedy for long-lived
startup state): it is never scanned again. Module state lives until exit anyway;
the cost is that a reference cycle created meanwhile and dropped later is never
collected. That amount is bounded because the freeze happens only when something
was actually imported: once per process for a given set of modules, not once per
job run in a long-lived Python caller (a notebook, the test suite).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.abc
import sys
from collections.abc import Iterable, Iterator
from typing import Any


@contextlib.contextmanager
def frozen_after() -> Iterator[None]:
    """Pause the garbage collector for the block, then freeze what exists."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def import_all(modules: Iterable[str], *, strict: bool = True) -> None:
    """Import ``modules`` in order under ``frozen_after``. ``strict=False``: a module
    that fails to import is skipped (it fails again, with its real error, where a
    task uses it). Nothing is paused or frozen when all are imported already."""
    missing = [module for module in modules if module not in sys.modules]
    if not missing:
        return
    with frozen_after():
        for module in missing:
            try:
                importlib.import_module(module)
            except Exception:
                if strict:
                    raise


class ScikitLearnHiddenFromXGBoost(importlib.abc.MetaPathFinder):
    """Refuses scikit-learn to ``xgboost.compat`` alone, so ``import xgboost`` skips it.

    XGBoost imports scikit-learn, and scipy.stats with it, at start-up only to base
    its scikit-learn estimator classes (``xgboost.XGBClassifier`` and kin) on
    scikit-learn's: 0.6 s of the XGBoost CLI job's 3.0 s on 100k rows here, on its
    critical path, for classes the job never uses (it trains with ``xgboost.dask``
    on boosters). XGBoost supports a missing scikit-learn: ``xgboost.compat`` then
    records ``SKLEARN_INSTALLED = False`` and only those classes refuse to work.
    Every other importer, in any thread, gets scikit-learn as usual.

    Only the console script installs this (``cli.entry``): its process runs one
    job and exits, while a Python caller may use XGBoost's scikit-learn classes
    in the same process.
    """

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "sklearn" and _importing_module("xgboost.compat"):
            raise ModuleNotFoundError(
                "scikit-learn is not imported for xgboost.compat in a daskyard job process",
                name=fullname,
            )
        return None


def _importing_module(module: str) -> bool:
    """Whether this thread is running ``module``'s top level (importing it) now."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == module:
            return True
        frame = frame.f_back
    return False


def hide_scikit_learn_from_xgboost() -> None:
    """Install ``ScikitLearnHiddenFromXGBoost`` first on the import path (once)."""
    if not any(isinstance(f, ScikitLearnHiddenFromXGBoost) for f in sys.meta_path):
        sys.meta_path.insert(0, ScikitLearnHiddenFromXGBoost())
