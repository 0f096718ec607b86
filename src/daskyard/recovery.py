"""Survive lost workers: rerun a training attempt from its last checkpoint, in-process.

On an autoscaled, preemptible cluster a worker can vanish mid-training (spot
preemption, OOM kill, scale-down). The scheduler and the job process live on,
so restarting the whole Job pod would be wasteful: the attempt is rerun from
the last trusted checkpoint on the workers that remain or arrive, at most
``cluster.max_attempts`` times in all. A lost *scheduler* is not retried here:
its state (the data, the futures) is gone, so the job exits 75 promptly and
the rerun pod resumes from the checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

from distributed import Client

from daskyard import progress
from daskyard.config import ClusterConfig
from daskyard.errors import DaskyardError, InfrastructureError, short

T = TypeVar("T")


def worker_loss_errors() -> tuple[type[BaseException], ...]:
    """What losing a worker looks like from the client.

    A lost worker's in-memory results are forgotten (their futures are cancelled),
    a task whose workers kept dying is a KilledWorker, and comms to it break.
    """
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    return (CancelledError, KilledWorker, CommClosedError, OSError, TimeoutError)


def workers_now(client: Client, timeout: float = 120.0) -> list[str]:
    """The workers' addresses now; after all were lost, once a new one has joined.

    ``wait_for_workers`` can return on dead workers the scheduler still lists, and a
    moment later the list is empty: an attempt that dealt its blocks out to the
    workers there were then divided by zero. TimeoutError is a loss: another attempt.
    """
    deadline = time.monotonic() + timeout
    while True:
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        if workers:
            return workers
        try:
            client.wait_for_workers(1, timeout=max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            raise TimeoutError(f"no worker joined within {timeout:g}s") from None


@dataclass
class Recovery:
    """Runs attempts of one training phase; records every fault it survived."""

    client: Client
    config: ClusterConfig
    stream: TextIO | None = None
    faults: list[dict[str, Any]] = field(default_factory=list)

    def run(
        self,
        attempt: Callable[[int], T],
        is_loss: Callable[[BaseException], bool] | None = None,
    ) -> T:
        """``attempt(n)`` must resume from the newest checkpoint each time it is called.

        ``is_loss`` recognises a library's own way of reporting a lost peer (XGBoost's
        collective errors, say) on top of dask's.
        """
        for number in range(1, self.config.max_attempts + 1):
            try:
                return attempt(number)
            except DaskyardError:
                raise  # bad config or data: another attempt cannot help
            except Exception as exc:
                if not self.is_loss(exc, is_loss):
                    raise
                self.survive(number, exc)
        raise AssertionError("unreachable: the last attempt raises")

    @staticmethod
    def is_loss(exc: BaseException, extra: Callable[[BaseException], bool] | None = None) -> bool:
        if isinstance(exc, DaskyardError):
            return False
        return isinstance(exc, worker_loss_errors()) or bool(extra and extra(exc))

    def survive(self, number: int, exc: BaseException) -> None:
        """Record the fault; raise InfrastructureError unless another attempt may run."""
        reason = short(exc)
        self.faults.append({"attempt": number, "error": reason, "at": time.time()})
        if not self.scheduler_alive():
            raise InfrastructureError(
                f"training lost contact with the scheduler ({reason}); rerun the job to "
                "resume from the last checkpoint"
            ) from None
        if number >= self.config.max_attempts:
            raise InfrastructureError(
                f"training lost workers in {number} of {self.config.max_attempts} attempts "
                f"(last: {reason}); rerun the job to resume from the last checkpoint, or raise "
                "cluster.max_attempts"
            ) from None
        progress.say(
            self.stream,
            f"attempt {number}/{self.config.max_attempts} lost a worker ({reason}); "
            "resuming from the last checkpoint on the workers that remain",
        )
        self.wait_for_workers()

    def scheduler_alive(self) -> bool:
        """The scheduler answers within the connect timeout (a closed client: it is gone)."""
        if self.client.status not in ("running", "connecting", "newly-created"):
            return False
        try:
            self.client.sync(
                self.client.scheduler.identity,
                n_workers=0,
                callback_timeout=float(self.config.connect_timeout),
            )
        except Exception:
            return False
        return True

    def wait_for_workers(self) -> None:
        try:
            self.client.wait_for_workers(1, timeout=self.config.worker_wait)
        except TimeoutError:
            raise InfrastructureError(
                f"no worker joined within cluster.worker_wait ({self.config.worker_wait:g}s) "
                "after workers were lost; check the DaskCluster's worker pods, then rerun to "
                "resume from the last checkpoint"
            ) from None
        except Exception as exc:
            raise InfrastructureError(
                f"training lost contact with the scheduler ({short(exc)}); rerun the job to "
                "resume from the last checkpoint"
            ) from None

    def summary(self) -> dict[str, Any]:
        return {"attempts": len(self.faults) + 1, "faults": list(self.faults)}
