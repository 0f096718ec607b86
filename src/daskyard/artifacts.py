"""Run outputs: atomic writes to any fsspec URL, manifests, versions.

A crashed job must never leave a file that looks complete but is not, so every
write either lands whole or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Iterator
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


@contextlib.contextmanager
def storage_errors(where: str) -> Iterator[None]:
    """A store out of reach, or credentials refused, inside: its one line (``where``
    first); any other failure goes on as it is, for the caller to classify."""
    try:
        yield
    except DaskyardError:
        raise
    except Exception as exc:
        failure = storage_failure(exc, where)
        if failure is None:
            raise
        raise failure from None


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
                _probe_local_folder(str(folder), url, key, created=folder != target)
                return
            where = "is a file" if folder == target else f"is under the file '{folder}'"
            raise ConfigError(f"{key} '{url}' {where}, not a folder: choose a folder path")


def _probe_local_folder(folder: str, url: str, key: str, created: bool) -> None:
    """A read-only (or someone else's) folder failed the first checkpoint's write on a
    worker, which read as a lost worker: three attempts, then exit 75 and Job retries."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".daskyard-write-check-")
    except OSError as exc:
        where = f" (it would be created in '{folder}')" if created else ""
        raise ConfigError(
            f"{key} '{url}' cannot be written{where}: {_reason(exc)}: choose a folder this "
            "job may write to"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else short(exc)


# A write refused for good (retrying cannot help) or for want of space (freed, a
# retried Job resumes from its last checkpoint). Anything else stays an OSError.
_REFUSED = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def write_failure(exc: OSError, url: str) -> DaskyardError | None:
    """What a failed local write means, as one line; None when it is not known."""
    if exc.errno in _REFUSED:
        return ConfigError(
            f"cannot write '{url}': {_reason(exc)}: choose an output (and checkpoints) folder "
            "this job may write to"
        )
    if exc.errno in _NO_SPACE:
        return InfrastructureError(
            f"cannot write '{url}': {_reason(exc)}: free space there or choose another output; "
            "a rerun resumes from the last checkpoint"
        )
    return None


def _probe_object_store(fs: Any, url: str, path: str, key: str) -> None:
    probe = join_url(path, f".daskyard-write-check-{uuid.uuid4().hex}")
    try:
        with storage_errors(f"{key} '{url}' cannot be written"):
            fs.pipe_file(probe, b"")
            fs.rm_file(probe)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{key} '{url}' cannot be written ({short(exc)}): create the bucket or fix the URL"
        ) from None


# What a resolved config holds that does not change a run's results: where it runs,
# where its checkpoints go, how often it reports or saves, how it reads ahead, and
# storage options (credentials rotate; their values are masked in manifests anyway).
_NOT_RESULTS = frozenset({"output", "checkpoints", "cluster", "storage_options"})
_NOT_RESULTS_IN_SECTION = frozenset(
    {
        "progress_every",
        "checkpoint_every",
        "prefetch",
        "tracker_port",
        "tracker_host",
        "tracker_ports",
    }
)


def _result_config(config: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in config.items():
        if key in _NOT_RESULTS:
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _NOT_RESULTS_IN_SECTION}
            if key == "data":  # the same data, spelled another way, is the same data
                value = {
                    k: _same_url(v) if k in ("train", "validation") and v else v
                    for k, v in value.items()
                }
        kept[key] = value
    return kept


def _same_url(url: str) -> str:
    """``data/``, ``./data`` and ``file:///abs/data`` alike, as their absolute path."""
    if url.startswith("file://"):
        url = url.removeprefix("file://")
    elif "://" in url:
        return url.rstrip("/")
    return os.path.abspath(os.path.expanduser(url))


def _first_difference(old: Any, new: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first setting both configs hold with different values. A key only one of
    them holds is a daskyard version's new or retired setting, not a different job:
    a retried pod on an upgraded image must still resume."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) & set(new), key=str):
            found = _first_difference(old[key], new[key], f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    return None if old == new else (path, old, new)


def check_output_owner(
    output: str,
    kind: str,
    config: dict[str, Any],
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Refuse, before any work, an output folder that holds another run's results.

    A run writes model, metrics.json and manifest.json under ``output``: one of another
    kind (model.ubj beside model.skops) or config would be silently replaced, or mixed
    with this run's files. The same job (a rerun, a retried pod) runs there; so does
    one that differs only in how it runs (cluster, checkpoint and progress intervals).
    ``config`` is the run's resolved config (``daskyard.config.resolved``).
    Returns the manifest of this job's earlier run there, if any.
    """
    try:
        fs, path = url_to_fs(output, storage_options)
    except (ValueError, ImportError):
        return None  # an unknown protocol: check_folder_url says so, with what to do
    try:
        with storage_errors(f"output '{output}' cannot be read"):
            raw = fs.cat_file(join_url(path, "manifest.json"))
    except (FileNotFoundError, NotADirectoryError):
        return None  # a fresh folder; or a file, which check_folder_url reports
    except IsADirectoryError:
        raw = b""
    try:
        previous = json.loads(raw)
    except ValueError:
        previous = None
    what = "use another --output, or delete the files there to replace them"
    if not (isinstance(previous, dict) and isinstance(previous.get("config"), dict)):
        raise ConfigError(
            f"output '{output}' holds a manifest.json that is not a daskyard run's: {what}"
        )
    run = f"run {previous.get('run_id', '?')}"
    if previous.get("kind") != kind:
        raise ConfigError(
            f"output '{output}' holds the results of another run ({run}, of kind "
            f"{previous.get('kind')}; this job's kind is {kind}): {what}"
        )
    found = _first_difference(_result_config(previous["config"]), _result_config(config))
    if found:
        key, old, new = found
        raise ConfigError(
            f"output '{output}' holds the results of another run ({run}: its {key} is "
            f"{_shown(old)}, this job's {_shown(new)}): {what}"
        )
    return previous


def _shown(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def write_bytes_atomic(url: str, data: bytes, storage_options: dict[str, Any] | None = None) -> str:
    """Write ``data`` so readers see either the previous object or all of it.

    Returns the sha256 of ``data`` for manifests.
    """
    fs, path = url_to_fs(url, storage_options)
    if isinstance(fs, LocalFileSystem):
        try:
            _write_local(path, data)
        except OSError as exc:
            failure = write_failure(exc, url)
            if failure is None:
                raise
            raise failure from None
    else:
        # Object stores commit a PUT (or a multipart upload) atomically: a reader
        # sees the old object or the whole new one, never a prefix, and a writer
        # that dies before the commit leaves nothing behind.
        fs.pipe_file(path, data)
    return hashlib.sha256(data).hexdigest()


def _write_local(path: str, data: bytes) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
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


def write_json_atomic(url: str, payload: Any, storage_options: dict[str, Any] | None = None) -> str:
    return write_bytes_atomic(url, json_bytes(payload), storage_options)


def json_bytes(payload: Any) -> bytes:
    """A JSON output file's bytes: sorted, indented, NaN as null."""
    # NaN is not JSON (Python writes it, JavaScript and Go parsers refuse it): a metric
    # with no value, such as AUC on a validation set of one class, is written as null.
    text = json.dumps(_finite(payload), indent=2, sort_keys=True, default=str, allow_nan=False)
    return (text + "\n").encode("utf-8")


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
