"""The search space: ``--space`` specs, checked when the config is read, and the
seeded sampling of candidates from them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskyard.config import parse_param
from daskyard.errors import ConfigError

# What numpy's Generator.integers samples (int bounds; HI is inclusive).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: str  # loguniform | uniform | int | choice
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def sample(self, rng: np.random.Generator) -> Any:
        if self.kind == "loguniform":
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
            return float(min(max(value, self.low), self.high))  # exp(log(x)) may round past x
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        if self.kind == "int":
            return int(rng.integers(int(self.low), int(self.high) + 1))
        return self.choices[int(rng.integers(len(self.choices)))]


def parse_dimension(name: str, spec: str) -> Dimension:
    """``loguniform:LO:HI``, ``uniform:LO:HI``, ``int:LO:HI`` or ``choice:A,B,C``."""
    kind, _, rest = str(spec).partition(":")
    where = f"--space {name}={spec}"
    if kind == "choice":
        choices = tuple(parse_param(f"x={value}")[1] for value in rest.split(",") if value != "")
        if not choices:
            raise ConfigError(f"{where}: choice needs at least one value, e.g. choice:l1,l2")
        return Dimension(name, kind, choices=choices)
    if kind not in ("loguniform", "uniform", "int"):
        raise ConfigError(
            f"{where}: unknown kind '{kind}'; use loguniform:LO:HI, uniform:LO:HI, int:LO:HI "
            "or choice:A,B,C"
        )
    parts = rest.split(":")
    try:
        number = _whole_or_float if kind == "int" else float
        low, high = (number(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        low = high = None
    if low is None or high is None:
        raise ConfigError(f"{where}: expected {kind}:LO:HI with two numbers")
    # inf, nan and what overflows to inf (1e400) cannot be sampled; an int is finite.
    if not all(isinstance(b, int) or math.isfinite(b) for b in (low, high)):
        raise ConfigError(f"{where}: bounds must be finite numbers")
    if not low < high:
        raise ConfigError(f"{where}: LO must be below HI")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs LO > 0")
    if kind == "uniform" and not math.isfinite(high - low):
        raise ConfigError(f"{where}: HI - LO exceeds the largest float; narrow the range")
    if kind == "int":
        if low != int(low) or high != int(high):
            raise ConfigError(f"{where}: int bounds must be whole numbers")
        low, high = int(low), int(high)
        if low < INT64_MIN or high > INT64_MAX:
            raise ConfigError(
                f"{where}: int bounds must lie between {INT64_MIN} and {INT64_MAX} (int64)"
            )
    return Dimension(name, kind, low, high)


def _whole_or_float(text: str) -> int | float:
    """An int bound: exact when written as a whole number (2**53 + 1 is no float)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_space(space: dict[str, str]) -> list[Dimension]:
    return [parse_dimension(name, spec) for name, spec in space.items()]


def sample_candidates(space: list[Dimension], count: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng([seed, 7])
    return [{d.name: d.sample(rng) for d in space} for _ in range(count)]
