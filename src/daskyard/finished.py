"""A rerun of a finished job trains nothing: its output holds this job's results.

A retried Job pod, or the same command run again, with the config its results came
from (``artifacts.check_output_owner`` says which keys count) and the same data
files (names, sizes, modification times or ETags), would make the same model again.
It retrained from its last checkpoint instead (up to ``checkpoint_every`` rounds,
after starting a cluster and loading the data) and rewrote the same files. Changed
data, or an output file that no longer matches its manifest's sha256, and the job
trains as before.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from daskyard.artifacts import join_url, storage_errors, url_to_fs
from daskyard.config import JobConfig


@dataclass(frozen=True)
class FinishedRun:
    """What the earlier run of this job left; its model stays in ``output``."""

    metrics: dict[str, Any]
    manifest: dict[str, Any]
    output: str


def finished_run(config: JobConfig, previous: dict[str, Any]) -> FinishedRun | None:
    """The earlier run, when ``previous`` (its manifest) is of this data and every file
    it lists is there whole; else None, and the job trains."""
    # Imported here: only a rerun lists its data before the cluster starts.
    from daskyard.data import list_source

    data, options = config.data, config.storage_options
    sources = [list_source(data.train, data.format, options)]
    if data.validation:
        sources.append(list_source(data.validation, data.format, options))
    if _recorded_fingerprints(previous) != [source.fingerprint for source in sources]:
        return None
    files = previous.get("files")
    if not isinstance(files, dict) or "metrics.json" not in files:
        return None  # a manifest of no daskyard run
    fs, path = url_to_fs(config.output, options)
    metrics = b""
    for name, entry in files.items():
        try:
            with storage_errors(f"output '{config.output}' cannot be read"):
                raw = fs.cat_file(join_url(path, name))
        except FileNotFoundError:
            return None
        if not isinstance(entry, dict) or hashlib.sha256(raw).hexdigest() != entry.get("sha256"):
            return None
        if name == "metrics.json":
            metrics = raw
    return FinishedRun(json.loads(metrics), previous, config.output)


def _recorded_fingerprints(manifest: dict[str, Any]) -> list[Any]:
    """Each data source's fingerprint, once: files a search held out for validation
    are a part of its training source (the same fingerprint)."""
    data = manifest.get("data")
    sources = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(sources, list):
        return []
    found = [s.get("fingerprint") if isinstance(s, dict) else None for s in sources]
    return list(dict.fromkeys(found))
