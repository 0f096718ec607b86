"""Run outputs: atomic writes to any fsspec URL, manifests, versions.

A crashed job must never leave a file that looks complete but is not, so every
write either lands whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import PurePosixPath
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from daskyard.errors import ConfigError

# The packages whose versions must match across client, scheduler and workers.
TRACKED_PACKAGES = {
    "dask": "dask",
    "distributed": "distributed",
    "xgboost": "xgboost",
    "scikit-learn": "scikit-learn",
    "numpy": "numpy",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
}


def package_versions() -> dict[str, str]:
    """Versions of python, daskyard and the tracked packages in this process."""
    versions = {"python": platform.python_version()}
    for name, dist in {"daskyard": "daskyard", **TRACKED_PACKAGES}.items():
        try:
            versions[name] = version(dist)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def join_url(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def url_to_fs(url: str, storage_options: dict[str, Any] | None = None):
    """fsspec filesystem and path for a URL (local paths, file://, s3://, gs://, ...)."""
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


def check_folder_url(url: str, key: str, storage_options: dict[str, Any] | None = None) -> None:
    """Refuse, before any work, a local folder URL that is a file or lies under one.

    Writing there fails only when the first checkpoint is saved, with an OSError
    that reads like lost storage. Object stores have no such conflict (a key and
    a prefix of the same name coexist), so only local paths are checked.
    """
    fs, path = url_to_fs(url, storage_options)
    if not isinstance(fs, LocalFileSystem):
        return
    target = PurePosixPath(path)
    for folder in (target, *target.parents):  # the nearest existing one decides
        if fs.exists(str(folder)):
            if fs.isdir(str(folder)):
                return
            where = "is a file" if folder == target else f"is under the file '{folder}'"
            raise ConfigError(f"{key} '{url}' {where}, not a folder: choose a folder path")


def write_bytes_atomic(url: str, data: bytes, storage_options: dict[str, Any] | None = None) -> str:
    """Write ``data`` so readers see either the previous object or all of it.

    Returns the sha256 of ``data`` for manifests.
    """
    fs, path = url_to_fs(url, storage_options)
    if isinstance(fs, LocalFileSystem):
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    else:
        # Object stores commit a PUT (or a multipart upload) atomically: a reader
        # sees the old object or the whole new one, never a prefix, and a writer
        # that dies before the commit leaves nothing behind.
        fs.pipe_file(path, data)
    return hashlib.sha256(data).hexdigest()


def write_json_atomic(url: str, payload: Any, storage_options: dict[str, Any] | None = None) -> str:
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    return write_bytes_atomic(url, text.encode("utf-8"), storage_options)


def stable_hash(payload: Any, length: int = 12) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


@dataclass
class Timings:
    """Wall-clock phases of a run, in seconds, for the manifest."""

    started: float = field(default_factory=time.time)
    phases: dict[str, float] = field(default_factory=dict)
    _mark: float = field(default_factory=time.perf_counter)

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        # A phase repeated by a retried attempt adds up rather than hiding the first try.
        self.phases[phase] = round(self.phases.get(phase, 0.0) + now - self._mark, 3)
        self._mark = now

    def as_dict(self) -> dict[str, Any]:
        return {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": dict(self.phases),
            "total_seconds": round(sum(self.phases.values()), 3),
        }


def write_run_outputs(
    output: str,
    files: dict[str, bytes],
    metrics: dict[str, Any],
    manifest: dict[str, Any],
    storage_options: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Write model files, then metrics.json, then manifest.json (last: it marks completion).

    The manifest records the sha256 of every other file so a reader can verify them.
    """
    checksums = {
        name: write_bytes_atomic(join_url(output, name), data, storage_options)
        for name, data in files.items()
    }
    checksums["metrics.json"] = write_json_atomic(
        join_url(output, "metrics.json"), metrics, storage_options
    )
    manifest = {
        **manifest,
        "files": {name: {"sha256": digest} for name, digest in checksums.items()},
    }
    checksums["manifest.json"] = write_json_atomic(
        join_url(output, "manifest.json"), manifest, storage_options
    )
    return checksums
