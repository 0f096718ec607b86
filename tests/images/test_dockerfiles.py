"""Both Dockerfiles, checked without Docker: hadolint and the house rules."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "images").glob("*/Dockerfile"))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_both_images_exist():
    assert [p.parent.name for p in DOCKERFILES] == ["runtime", "runtime-gpu"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_is_clean(path):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is missing: pip install 'daskyard[test]'"
    proc = subprocess.run(
        [hadolint, "--config", str(ROOT / "images" / "hadolint.yaml"), "--no-color", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_house_rules(path):
    steps = instructions(path)
    # Every pod of a cluster, GPU workers included, runs the client's Python.
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE_IMAGE=python:3.11-slim-")
    froms = [i for i, (keyword, _) in enumerate(steps) if keyword == "FROM"]
    assert [steps[i][1] for i in froms] == [
        "${BASE_IMAGE} AS deps",
        "deps AS builder",
        "${BASE_IMAGE}",
    ], "stages: pinned dependencies, the package, the final image"
    deps, final = steps[froms[0] : froms[1]], steps[froms[2] :]
    assert any("-r requirements/runtime.txt" in rest for keyword, rest in deps if keyword == "RUN")
    # The final stage takes the virtualenv and the package: no sources, no compilers.
    copies = [rest for keyword, rest in final if keyword == "COPY"]
    assert copies == [
        "--from=deps /opt/daskyard/venv /opt/daskyard/venv",
        "--from=builder /stage/ /",
    ]
    final_runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert not re.search(r"\b(gcc|g\+\+|build-essential|clang)\b", final_runs)
    assert ("USER", "10001:10001") in final
    assert ("ENTRYPOINT", '["/usr/bin/tini", "-g", "--"]') in final
    assert ("EXPOSE", "8786 8787 8788") in final
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert "TMPDIR=/tmp" in env and "HOME=/tmp" in env


def test_gpu_image_is_the_runtime_image_plus_gpu_metadata():
    """Same instructions up to EXPOSE (so the same versions and shared layers),
    plus a build-time check that XGBoost has CUDA and finds NCCL."""
    runtime = instructions(ROOT / "images" / "runtime" / "Dockerfile")
    gpu = instructions(ROOT / "images" / "runtime-gpu" / "Dockerfile")
    checks = [step for step in gpu if step[0] == "RUN" and "build_info()" in step[1]]
    assert len(checks) == 1 and "USE_CUDA" in checks[0][1] and "_find_nccl" in checks[0][1]

    def shared(steps):
        end = next(i for i, step in enumerate(steps) if step[0] == "EXPOSE")
        return [step for step in steps[: end + 1] if step not in checks]

    assert shared(gpu) == shared(runtime)
    assert ("ENV", "NVIDIA_DRIVER_CAPABILITIES=compute,utility") in gpu
    assert not any("NVIDIA_VISIBLE_DEVICES" in rest for _, rest in gpu)
