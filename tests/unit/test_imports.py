"""Heavy imports run with the garbage collector paused, then frozen (daskyard.imports)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap

import pytest

from daskyard.imports import frozen_after, import_all


@pytest.fixture(autouse=True)
def _thawed():
    """Leave the test process's collector as each test found it."""
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


@pytest.fixture
def fresh_module(tmp_path, monkeypatch):
    """The name of an importable module nothing has imported yet."""
    name = f"daskyard_probe_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("CYCLE = []\nCYCLE.append(CYCLE)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_the_collector_is_paused_inside_and_what_exists_is_frozen_after():
    gc.enable()
    gc.unfreeze()
    with frozen_after():
        assert not gc.isenabled()
        made = [[]]
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0
    assert not any(made is o for o in gc.get_objects())


def test_a_paused_collector_stays_paused():
    gc.disable()
    with frozen_after():
        pass
    assert not gc.isenabled()


def test_the_collector_comes_back_when_an_import_fails(fresh_module):
    gc.enable()
    with pytest.raises(ModuleNotFoundError):
        import_all([fresh_module, "daskyard_no_such_module"])
    assert gc.isenabled()
    assert fresh_module in sys.modules  # imported in order, up to the failure


def test_a_module_that_fails_is_skipped_when_not_strict(fresh_module):
    import_all(["daskyard_no_such_module", fresh_module], strict=False)
    assert fresh_module in sys.modules


def test_the_imported_module_is_frozen(fresh_module):
    gc.unfreeze()
    import_all([fresh_module])
    cycle = sys.modules[fresh_module].CYCLE
    assert gc.get_freeze_count() > 0
    # Frozen objects are in no generation the collector scans.
    assert not any(cycle is o for o in gc.get_objects())


def test_nothing_is_frozen_when_everything_is_imported_already():
    gc.unfreeze()
    import_all(["json", "gc"])
    assert gc.get_freeze_count() == 0


def _python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter: what it imported is not this process's."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_xgboost_imports_without_scikit_learn_and_trains_once_hidden():
    result = _python(
        """
        import json, sys
        from daskyard.imports import ScikitLearnHiddenFromXGBoost, hide_scikit_learn_from_xgboost
        hide_scikit_learn_from_xgboost()
        hide_scikit_learn_from_xgboost()
        import numpy as np, xgboost, xgboost.dask
        from xgboost import compat
        matrix = xgboost.DMatrix(np.arange(8.0).reshape(4, 2), label=[0, 1, 0, 1])
        booster = xgboost.train({"objective": "binary:logistic"}, matrix, 2)
        seen = {
            "imported": sorted(m for m in sys.modules if m == "sklearn" or m == "scipy.stats"),
            "sklearn_installed": compat.SKLEARN_INSTALLED,
            "rounds": booster.num_boosted_rounds(),
            "finders": sum(isinstance(f, ScikitLearnHiddenFromXGBoost) for f in sys.meta_path),
        }
        import sklearn.linear_model  # every other importer still gets scikit-learn
        seen["later"] = sklearn.linear_model.SGDClassifier().get_params()["loss"]
        print(json.dumps(seen))
        """
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "imported": [],
        "sklearn_installed": False,
        "rounds": 2,
        "finders": 1,
        "later": "hinge",
    }


def test_scikit_learn_imported_first_is_what_xgboost_gets():
    result = _python(
        """
        from daskyard.imports import hide_scikit_learn_from_xgboost
        hide_scikit_learn_from_xgboost()
        import sklearn.base
        import xgboost.compat
        compat = xgboost.compat
        print(compat.SKLEARN_INSTALLED, compat.XGBModelBase is sklearn.base.BaseEstimator)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]
