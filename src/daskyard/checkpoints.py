"""Checkpoints of one run on any fsspec URL: ``<url>/<run_id>/step-000010.<ext>``.

A run id is derived from what determines the model (config and data
fingerprint), so a restarted Job pod finds its own checkpoints and never
another run's.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daskyard.artifacts import join_url, url_to_fs, write_bytes_atomic

_STEP = re.compile(r"^step-(\d{6,})\.")


@dataclass(frozen=True)
class CheckpointStore:
    url: str  # folder of this run's checkpoints
    suffix: str  # "ubj", "skops"
    storage_options: dict[str, Any]
    keep: int = 2  # older ones are pruned; two survive a crash during a write

    def path_for(self, step: int) -> str:
        return join_url(self.url, f"step-{step:06d}.{self.suffix}")

    def steps(self) -> list[int]:
        fs, path = url_to_fs(self.url, self.storage_options)
        try:
            names = [posixpath.basename(p) for p in fs.ls(path, detail=False)]
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            match = _STEP.match(name)
            if match and name.endswith(f".{self.suffix}"):
                found.append(int(match.group(1)))
        return sorted(found)

    def save(self, step: int, data: bytes) -> str:
        digest = write_bytes_atomic(self.path_for(step), data, self.storage_options)
        for old in self.steps()[: -self.keep]:
            fs, path = url_to_fs(self.path_for(old), self.storage_options)
            fs.rm(path)
        return digest

    def read(self, step: int) -> bytes:
        fs, path = url_to_fs(self.path_for(step), self.storage_options)
        with fs.open(path, "rb") as handle:
            return handle.read()

    def latest(
        self, load: Callable[[bytes], Any], below: int | None = None
    ) -> tuple[int, Any] | None:
        """Newest checkpoint that ``load`` accepts (a corrupt one falls back to the previous)."""
        for step in reversed(self.steps()):
            if below is not None and step >= below:
                continue
            try:
                return step, load(self.read(step))
            except Exception:  # any unreadable checkpoint is skipped
                continue
        return None
