"""Preloaded into an embedded cluster's worker processes: Ctrl-C is the job's.

A terminal sends Ctrl-C to its whole process group, the embedded worker processes
included: each printed a KeyboardInterrupt traceback (about 30 lines) before the
job's one ``daskyard: interrupted``. The job itself stops on it and closes its
cluster, which ends the workers.
"""

from __future__ import annotations

import signal
from typing import Any


def dask_setup(worker: Any) -> None:
    # A nanny's worker process runs its event loop, and so this, in its main thread.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
