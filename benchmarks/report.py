"""Result objects, the printed table and the JSON file."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Check:
    """One compared figure: ``value`` (a ratio, a difference, a fraction) against its target.

    ``measured`` and ``baseline`` are what the value was computed from (seconds, bytes, ...);
    a check without a target is informational and always passes.
    """

    name: str
    value: float
    target: float | None = None
    op: str = "<="  # "<=" or ">="
    measured: float | None = None
    baseline: float | None = None
    unit: str = "x"  # what value is: "x" (ratio), "s", "abs", "fraction", "count"
    raw: str = "s"  # what measured and baseline are: "s", "bytes" or "" (a score)

    @classmethod
    def ratio(
        cls,
        name: str,
        measured: float,
        baseline: float,
        target: float | None = None,
        op: str = "<=",
    ) -> Check:
        """Seconds against seconds: ``measured / baseline``."""
        return cls(name, measured / baseline, target, op, measured=measured, baseline=baseline)

    @classmethod
    def gap(cls, name: str, score: float, baseline: float, target: float) -> Check:
        """How far a score (AUC, accuracy) lies from the baseline's, either way."""
        return cls(
            name,
            abs(score - baseline),
            target,
            measured=score,
            baseline=baseline,
            unit="abs",
            raw="",
        )

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        if not math.isfinite(self.value):
            return False
        return self.value <= self.target if self.op == "<=" else self.value >= self.target

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class BenchmarkResult:
    """What one benchmark returns: its checks, the figures behind them, how it was run."""

    name: str
    title: str
    smoke: bool
    parameters: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    # contender -> seconds (best of the repeats) and other raw figures
    timings: dict[str, float] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    error: str | None = None

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed is not False for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [c.as_dict() for c in self.checks]
        data["passed"] = self.passed
        return data


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import dask
    import distributed
    import sklearn
    import xgboost

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        import psutil

        memory = psutil.virtual_memory().total
    except ImportError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "xgboost": xgboost.__version__,
        "scikit-learn": sklearn.__version__,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    if unit == "count":
        return f"{value:.0f}"
    if unit == "bytes":
        return f"{value / 2**20:,.0f} MiB"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def table(results: list[BenchmarkResult]) -> str:
    """name, measured, baseline, ratio (or value), target, pass/fail: one row per check."""
    header = ("benchmark", "check", "measured", "baseline", "value", "target", "result")
    rows = [header]
    for result in results:
        if result.error:
            rows.append((result.name, "ERROR", "-", "-", "-", "-", result.error[:60]))
            continue
        for check in result.checks:
            unit = check.unit
            value = _fmt(check.value, unit) + ("x" if unit == "x" else "")
            if unit == "s":
                value += " s"
            target = "-" if check.target is None else f"{check.op} {_fmt(check.target, unit)}"
            verdict = {True: "pass", False: "FAIL", None: "info"}[check.passed]
            rows.append(
                (
                    result.name,
                    check.name,
                    _fmt(check.measured, check.raw),
                    _fmt(check.baseline, check.raw),
                    value,
                    target,
                    verdict,
                )
            )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def write_json(path: Path, results: list[BenchmarkResult], run: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"run": run, "results": [r.as_dict() for r in results]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_plain) + "\n")
    tmp.replace(path)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def markdown(payload: dict[str, Any]) -> str:
    """The JSON file's checks as a Markdown table (for RESULTS.md)."""
    lines = [
        "| benchmark | check | measured | baseline | value | target | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in payload["results"]:
        if result["error"]:
            lines.append(f"| {result['name']} | ERROR | | | | | {result['error'][:80]} |")
            continue
        for c in result["checks"]:
            check = Check(**{k: v for k, v in c.items() if k != "passed"})
            value = _fmt(check.value, check.unit) + {"x": "x", "s": " s"}.get(check.unit, "")
            target = "-" if check.target is None else f"{check.op} {_fmt(check.target, check.unit)}"
            verdict = {True: "pass", False: "**FAIL**", None: "info"}[check.passed]
            lines.append(
                f"| {result['name']} | {check.name} | {_fmt(check.measured, check.raw)} | "
                f"{_fmt(check.baseline, check.raw)} | {value} | {target} | {verdict} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
