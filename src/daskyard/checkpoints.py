"""Checkpoints of one run on any fsspec URL: ``<url>/<run_id>/step-000010.<ext>``.

A run id is derived from what determines the model (config and data
fingerprint), so a restarted Job pod finds its own checkpoints and never
another run's.

Each checkpoint is trusted only through its manifest
(``step-000010.<ext>.manifest.json``: step, size, sha256, and any state the
trainer keeps beside the model, such as XGBoost's early stopping), written after
the checkpoint itself: a writer killed in between leaves a checkpoint without a
manifest, and bytes changed afterwards fail the checksum. Either way a resume
skips it, says so, and falls back to the previous one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daskyard.artifacts import join_url, url_to_fs, write_bytes_atomic, write_json_atomic

_STEP = re.compile(r"^step-(\d{6,})\.(\w+)$")
MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True)
class CheckpointStore:
    url: str  # folder of this run's checkpoints
    suffix: str  # "ubj", "skops"
    storage_options: dict[str, Any]
    keep: int = 2  # older ones are pruned; two survive a crash during a write

    def path_for(self, step: int) -> str:
        return join_url(self.url, f"step-{step:06d}.{self.suffix}")

    def steps(self) -> list[int]:
        """Steps with a checkpoint file, trusted or not."""
        fs, path = url_to_fs(self.url, self.storage_options)
        # Workers write the checkpoints: a listing cached in this process (s3fs keeps
        # one per filesystem instance) would miss them, and a resume would start over.
        fs.invalidate_cache(path)
        try:
            names = [posixpath.basename(p) for p in fs.ls(path, detail=False)]
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            match = _STEP.match(name)
            if match and match.group(2) == self.suffix:
                found.append(int(match.group(1)))
        return sorted(found)

    def save(self, step: int, data: bytes, metadata: dict[str, Any] | None = None) -> str:
        """``metadata``: the trainer's own state at this step (JSON), kept in the manifest."""
        digest = write_bytes_atomic(self.path_for(step), data, self.storage_options)
        manifest: dict[str, Any] = {"step": step, "bytes": len(data), "sha256": digest}
        if metadata is not None:
            manifest["metadata"] = metadata
        write_json_atomic(self.path_for(step) + MANIFEST_SUFFIX, manifest, self.storage_options)
        for old in self.steps()[: -self.keep]:
            self._remove(old)
        return digest

    def _remove(self, step: int) -> None:
        fs, path = url_to_fs(self.path_for(step), self.storage_options)
        fs.rm(path)
        with contextlib.suppress(FileNotFoundError):
            fs.rm(path + MANIFEST_SUFFIX)

    def _read(self, url: str) -> bytes:
        fs, path = url_to_fs(url, self.storage_options)
        with fs.open(path, "rb") as handle:
            return handle.read()

    def metadata(self, step: int) -> dict[str, Any]:
        """What ``save`` was given with the checkpoint ``latest`` trusted ({} if nothing)."""
        manifest = json.loads(self._read(self.path_for(step) + MANIFEST_SUFFIX))
        return manifest.get("metadata") or {}

    def read_verified(self, step: int) -> bytes:
        """The checkpoint's bytes; ValueError unless they match its manifest."""
        name = posixpath.basename(self.path_for(step))
        try:
            manifest = json.loads(self._read(self.path_for(step) + MANIFEST_SUFFIX))
        except FileNotFoundError:
            raise ValueError(f"{name} has no manifest (its write never finished)") from None
        except ValueError:
            raise ValueError(f"{name} has an unreadable manifest") from None
        data = self._read(self.path_for(step))
        if len(data) != manifest.get("bytes") or (
            hashlib.sha256(data).hexdigest() != manifest.get("sha256")
        ):
            raise ValueError(f"{name} does not match the sha256 in its manifest")
        return data

    def latest(
        self,
        load: Callable[[bytes], Any],
        below: int | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> tuple[int, Any] | None:
        """Newest checkpoint that passes its checksum and ``load``; the rest are reported."""
        for step in reversed(self.steps()):
            if below is not None and step >= below:
                continue
            try:
                return step, load(self.read_verified(step))
            except Exception as exc:  # any untrusted or unreadable checkpoint is skipped
                if warn is not None:
                    warn(f"ignoring checkpoint at step {step}: {exc}")
        return None
