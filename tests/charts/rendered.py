"""Rendered container specs made runnable outside Kubernetes (processes, containers)."""

from __future__ import annotations

import re
from typing import Any


def replace_value(args: list[str], flag: str, value: str) -> list[str]:
    """``args`` with the value after ``flag`` replaced (the flag must be there)."""
    assert flag in args, f"rendered args lack {flag}: {args}"
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of container args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in args]


def rendered_env(box: dict[str, Any]) -> dict[str, str]:
    assert all("value" in e for e in box.get("env", [])), "only literal env values expected"
    return {e["name"]: e["value"] for e in box.get("env", [])}
