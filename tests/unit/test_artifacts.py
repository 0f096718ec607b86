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
