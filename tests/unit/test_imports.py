"""Heavy imports run with the garbage collector paused, then frozen (daskyard.imports)."""

from __future__ import annotations

import gc
import sys

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
