"""Run outputs: atomic writes to any fsspec URL, manifests, versions.

A crashed job must never leave a file that looks complete but is not, so every
write either lands whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import PurePosixPath
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from daskyard.errors import ConfigError, DaskyardError, InfrastructureError, short

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


def storage_unreachable(exc: BaseException) -> bool:
    """Whether a storage call failed to reach its endpoint (retrying may help)."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    try:  # s3fs passes botocore's connection errors through untranslated
        from botocore.exceptions import ConnectionError as EndpointError
    except ImportError:
        return False
    return isinstance(exc, EndpointError)


def storage_failure(exc: BaseException, where: str) -> DaskyardError | None:
    """What a failed storage call means when the fault is not the data's: the store out
    of reach (a retried Job may get through) or credentials refused (it cannot)."""
    if storage_unreachable(exc):
        return InfrastructureError(
            f"{where}: the store cannot be reached ({short(exc)}): check the endpoint in "
            "storage_options and the network; a retried Job tries again"
        )
    if isinstance(exc, PermissionError):
        return ConfigError(
            f"{where}: access denied ({short(exc)}): check the credentials in "
            "storage_options, or the identity of the job's pod"
        )
    return None


def check_folder_url(url: str, key: str, storage_options: dict[str, Any] | None = None) -> None:
    """Refuse, before any work, a folder URL that cannot take the run's files.

    Otherwise the first checkpoint (or, without one, the end of training) fails with
    an OSError that reads like lost storage: retried as such, or the training lost.
    A local folder must not be, or lie under, a file; on an object store a probe
    object is written and removed, which checks the bucket, the credentials and
    the write and delete permissions the run needs (it prunes old checkpoints).
    """
    try:
        fs, path = url_to_fs(url, storage_options)
    except (ValueError, ImportError) as exc:
        raise ConfigError(
            f"{key} '{url}' cannot be opened ({exc}): use a local path or the URL of an "
            "installed filesystem (s3://, gs://, abfs://, ...)"
        ) from None
    if isinstance(fs, LocalFileSystem):
        _check_local_folder(fs, url, path, key)
    else:
        _probe_object_store(fs, url, path, key)


def _check_local_folder(fs: LocalFileSystem, url: str, path: str, key: str) -> None:
    target = PurePosixPath(path)
    for folder in (target, *target.parents):  # the nearest existing one decides
        if fs.exists(str(folder)):
            if fs.isdir(str(folder)):
                return
            where = "is a file" if folder == target else f"is under the file '{folder}'"
            raise ConfigError(f"{key} '{url}' {where}, not a folder: choose a folder path")


def _probe_object_store(fs: Any, url: str, path: str, key: str) -> None:
    probe = join_url(path, f".daskyard-write-check-{uuid.uuid4().hex}")
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{key} '{url}' cannot be written ({short(exc)}): create the bucket or fix the URL"
        ) from None
    except Exception as exc:
        failure = storage_failure(exc, f"{key} '{url}' cannot be written")
        if failure is None:
            raise
        raise failure from None


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
            # mkstemp makes the file 0600; a model must be readable as the umask
            # allows (a serving pod under another uid, on a shared volume).
            os.fchmod(fd, 0o666 & ~_UMASK)
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
    # NaN is not JSON (Python writes it, JavaScript and Go parsers refuse it): a metric
    # with no value, such as AUC on a validation set of one class, is written as null.
    text = json.dumps(_finite(payload), indent=2, sort_keys=True, default=str, allow_nan=False)
    return write_bytes_atomic(url, (text + "\n").encode("utf-8"), storage_options)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _umask() -> int:
    # Read, not set: os.umask() sets it too, and worker threads write files meanwhile.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


_UMASK = _umask()


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
