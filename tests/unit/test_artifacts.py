"""Artifacts: atomic writes, manifests with checksums, checkpoints that survive crashes."""

from __future__ import annotations

import hashlib
import json

import pytest

from daskyard.artifacts import write_bytes_atomic, write_run_outputs
from daskyard.checkpoints import CheckpointStore


def test_atomic_write_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out" / "model.ubj"
    digest = write_bytes_atomic(str(target), b"first")
    write_bytes_atomic(str(target), b"second")
    assert target.read_bytes() == b"second"
    assert digest == hashlib.sha256(b"first").hexdigest()
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.ubj"]


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "model.ubj"
    write_bytes_atomic(str(target), b"good model")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(str(target), b"half")
    assert target.read_bytes() == b"good model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.ubj"]


def test_manifest_is_written_last_with_checksums_of_every_file(tmp_path):
    out = tmp_path / "run"
    write_run_outputs(
        str(out), {"model.ubj": b"booster"}, {"validation": {"auc": 0.9}}, {"run_id": "r1"}
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run_id"] == "r1"
    for name in ("model.ubj", "metrics.json"):
        expected = hashlib.sha256((out / name).read_bytes()).hexdigest()
        assert manifest["files"][name]["sha256"] == expected
    assert json.loads((out / "metrics.json").read_text()) == {"validation": {"auc": 0.9}}


def test_checkpoints_prune_old_steps_and_skip_corrupt_ones(tmp_path):
    store = CheckpointStore(str(tmp_path / "ckpt"), "bin", {}, keep=2)
    for step in (10, 20, 30):
        store.save(step, f"model@{step}".encode())
    assert store.steps() == [20, 30]
    (tmp_path / "ckpt" / "step-000030.bin").write_bytes(b"garbage")

    def load(raw: bytes) -> str:
        if not raw.startswith(b"model@"):
            raise ValueError("corrupt")
        return raw.decode()

    assert store.latest(load) == (20, "model@20")
    assert store.latest(load, below=20) is None


def test_checkpoint_store_of_a_new_run_is_empty(tmp_path):
    store = CheckpointStore(str(tmp_path / "never-written"), "ubj", {})
    assert store.steps() == []
    assert store.latest(bytes) is None


def test_a_checkpoint_whose_bytes_changed_is_not_trusted_even_if_it_loads(tmp_path):
    store = CheckpointStore(str(tmp_path / "ckpt"), "bin", {})
    store.save(10, b"model@10")
    store.save(20, b"model@20")
    # Same length, still loadable: only the checksum tells it is not what was saved.
    (tmp_path / "ckpt" / "step-000020.bin").write_bytes(b"model@21")
    warnings: list[str] = []
    assert store.latest(bytes, warn=warnings.append) == (10, b"model@10")
    assert warnings == [
        "ignoring checkpoint at step 20: step-000020.bin does not match the sha256 in its manifest"
    ]


def test_a_checkpoint_without_its_manifest_is_a_write_that_never_finished(tmp_path):
    store = CheckpointStore(str(tmp_path / "ckpt"), "bin", {})
    store.save(10, b"model@10")
    # A writer killed after the checkpoint but before its manifest leaves this behind.
    (tmp_path / "ckpt" / "step-000020.bin").write_bytes(b"model@2")
    warnings: list[str] = []
    assert store.latest(bytes, warn=warnings.append) == (10, b"model@10")
    assert warnings == [
        "ignoring checkpoint at step 20: step-000020.bin has no manifest (its write never finished)"
    ]


def test_pruning_removes_each_checkpoint_with_its_manifest(tmp_path):
    store = CheckpointStore(str(tmp_path / "ckpt"), "bin", {}, keep=1)
    for step in (10, 20):
        store.save(step, b"x" * step)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "step-000020.bin",
        "step-000020.bin.manifest.json",
    ]
    manifest = json.loads((tmp_path / "ckpt" / "step-000020.bin.manifest.json").read_text())
    assert manifest == {"step": 20, "bytes": 20, "sha256": hashlib.sha256(b"x" * 20).hexdigest()}


def test_a_folder_url_may_be_new_or_an_existing_folder_but_not_a_file(tmp_path):
    from daskyard.artifacts import check_folder_url
    from daskyard.errors import ConfigError

    (tmp_path / "runs").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    check_folder_url(str(tmp_path / "runs"), "output")
    check_folder_url(str(tmp_path / "runs" / "new" / "deeper"), "output")
    check_folder_url(f"file://{tmp_path}/runs/new", "output")
    check_folder_url("memory://bucket/notes.txt/run", "output")  # not local: not checked
    with pytest.raises(ConfigError, match=r"output '.*notes\.txt' is a file, not a folder"):
        check_folder_url(str(tmp_path / "notes.txt"), "output")
    with pytest.raises(ConfigError, match=r"checkpoints '.*' is under the file '.*notes\.txt'"):
        check_folder_url(f"file://{tmp_path}/notes.txt/a/b", "checkpoints")


def test_json_outputs_hold_no_nan(tmp_path):
    """NaN is not JSON: AUC on a validation set of one class is written as null."""
    from daskyard.artifacts import write_json_atomic

    target = tmp_path / "metrics.json"
    write_json_atomic(str(target), {"auc": float("nan"), "rmse": [1.5, float("inf")]})
    text = target.read_text()
    assert json.loads(text, parse_constant=pytest.fail) == {"auc": None, "rmse": [1.5, None]}


def test_written_files_are_readable_as_the_umask_allows(tmp_path):
    """mkstemp makes 0600 files: a serving pod under another uid could not read the model."""
    import os

    from daskyard import artifacts

    target = tmp_path / "model.ubj"
    write_bytes_atomic(str(target), b"model")
    assert target.stat().st_mode & 0o777 == 0o666 & ~artifacts._UMASK
    assert os.umask(artifacts._UMASK) == artifacts._UMASK  # read, and left, as it is


@pytest.mark.parametrize("url", ["nosuchproto://bucket/run", "memory-typo://x"])
def test_a_folder_url_of_an_unknown_filesystem_is_refused(url):
    from daskyard.artifacts import check_folder_url
    from daskyard.errors import ConfigError

    with pytest.raises(ConfigError, match=f"output '{url}' cannot be opened"):
        check_folder_url(url, "output")
