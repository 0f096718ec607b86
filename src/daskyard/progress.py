"""Progress lines from the workers, printed by the client.

Training runs in worker processes (in Kubernetes, other pods), so a worker
publishes each progress record as a distributed event and the job's client,
subscribed to that topic, prints it where the user looks: the job's log.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from typing import Any, TextIO

from distributed import Client, get_worker


def new_topic(kind: str) -> str:
    return f"daskyard-progress-{kind}-{uuid.uuid4().hex[:8]}"


def publish(topic: str, record: dict[str, Any]) -> None:
    """Send a progress record from inside a task running on a worker."""
    get_worker().log_event(topic, record)


def say(stream: TextIO | None, line: str) -> None:
    """One line to the user's log (stdout unless a stream is given)."""
    print(line, file=stream or sys.stdout, flush=True)


def count(n: int, noun: str) -> str:
    """``3 blocks``, ``1 block``: a progress line's counts, in English."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


class ProgressPrinter:
    """Prints ``step N/M  metric=value  elapsed  eta`` lines as events arrive."""

    def __init__(self, client: Client, topic: str, unit: str, stream: TextIO | None = None) -> None:
        self.client = client
        self.topic = topic
        self.unit = unit
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self.first_step: int | None = None
        self.printed: set[int] = set()
        # Events arrive on the client's IO thread, the final sweep on the caller's.
        self._lock = threading.Lock()

    def __enter__(self) -> ProgressPrinter:
        self.started = time.monotonic()
        self.client.subscribe_topic(self.topic, self._on_event)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.unsubscribe_topic(self.topic)
        # Events arrive asynchronously: print any the subscription has not delivered yet.
        for _, record in self.client.get_events(self.topic):
            self.print_record(record)

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        self.print_record(event[1])

    def print_record(self, record: dict[str, Any]) -> None:
        step, total, start = record["step"], record["total"], record.get("start", 0)
        with self._lock:
            if step in self.printed:
                return
            self.printed.add(step)
        elapsed = time.monotonic() - self.started
        done = step - start
        eta = elapsed / done * (total - step) if done > 0 else float("nan")
        metrics = "  ".join(f"{k}={v:.5g}" for k, v in record.get("metrics", {}).items())
        line = (
            f"{self.unit} {step}/{total}  {metrics}  elapsed {format_seconds(elapsed)}"
            f"  eta {format_seconds(eta) if eta == eta else '?'}"
        )
        say(self.stream, line)
