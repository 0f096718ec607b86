"""Fixtures for the chart, operator-config and kustomize tests.

The tools (helm3, helm4, kubectl, checkov) come from ``make tools`` (.tools/bin,
first on PATH under ``make test``). A missing tool skips its tests with the
reason, unless DASKYARD_REQUIRE_TOOLS=1 (CI), where it fails them.

The chart's operator dependency is not committed: a session-wide temporary
copy of the chart gets the dask-kubernetes-operator subchart from the
installed dask-kubernetes wheel, versioned like the published chart.
Each (helm, scenario) rendering happens once per session.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "daskyard"
OPERATOR_CONFIGS = REPO / "operator-configs"
JOBS = REPO / "jobs"
HERE = Path(__file__).resolve().parent

RELEASE = "daskyard"
NAMESPACE = "ml"
HELMS = ("helm3", "helm4")
# "default" is the chart's values.yaml alone; the rest are ci/<name>-values.yaml.
SCENARIOS = (
    "default",
    *sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml")),
)
OVERLAYS = ("base", "xgboost", "incremental", "search")
# The kubectl path with mutual TLS: each jobs/ overlay plus jobs/components/tls,
# and operator-configs/ (with its GPU worker group) plus its components/tls.
TLS_VARIANTS = (*(f"jobs/{overlay}" for overlay in OVERLAYS), "operator-configs")
# operator-configs/ files that are Kubernetes objects (the rest are values,
# kustomization and docs).
OPERATOR_CONFIG_FILES = tuple(
    sorted(
        p.name
        for p in OPERATOR_CONFIGS.glob("*.yaml")
        if p.name not in {"kustomization.yaml", "operator-values.yaml"}
    )
)


def dask_kubernetes_version() -> str:
    return importlib.metadata.version("dask-kubernetes")


def operator_chart_source() -> Path:
    import dask_kubernetes

    return (
        Path(dask_kubernetes.__file__).parent
        / "operator"
        / "deployment"
        / "helm"
        / "dask-kubernetes-operator"
    )


def require_tool(name: str) -> str:
    """Absolute path of ``name`` on PATH; skip (or fail in CI) when missing."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} not found on PATH: run `make tools` (puts it in .tools/bin)"
        if os.environ.get("DASKYARD_REQUIRE_TOOLS") == "1":
            pytest.fail(reason + " [DASKYARD_REQUIRE_TOOLS=1]")
        pytest.skip(reason)
    return path


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


def load_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def sources(text: str) -> list[str]:
    """The ``# Source: <template>`` of each non-empty document of ``helm template``."""
    found = []
    for chunk in re.split(r"(?m)^---\s*$", text):
        if not yaml.safe_load(chunk):
            continue
        line = next((ln for ln in chunk.splitlines() if ln.startswith("# Source: ")), "")
        found.append(line.removeprefix("# Source: "))
    return found


@pytest.fixture(scope="session")
def chart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart with the operator subchart from the installed wheel."""
    target = tmp_path_factory.mktemp("chart") / "daskyard"
    shutil.copytree(CHART, target, ignore=shutil.ignore_patterns("charts", "Chart.lock", "*.tgz"))
    subchart = target / "charts" / "dask-kubernetes-operator"
    shutil.copytree(operator_chart_source(), subchart)
    # The wheel carries chartpress placeholders; the published chart has the release.
    meta = yaml.safe_load((subchart / "Chart.yaml").read_text())
    meta["version"] = meta["appVersion"] = dask_kubernetes_version()
    (subchart / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return target


@dataclass
class Rendering:
    text: str
    docs: list[dict[str, Any]]
    sources: list[str]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc.get("kind") == kind]

    def daskyard_docs(self) -> list[dict[str, Any]]:
        """Objects from daskyard's own templates (not the operator subchart)."""
        return [
            doc
            for doc, source in zip(self.docs, self.sources, strict=True)
            if not source.startswith("daskyard/charts/")
        ]

    def operator_docs(self) -> list[dict[str, Any]]:
        return [
            doc
            for doc, source in zip(self.docs, self.sources, strict=True)
            if source.startswith("daskyard/charts/")
        ]


class Renderer:
    """``helm template`` of the chart copy, cached per (helm, scenario, extra args)."""

    def __init__(self, chart: Path) -> None:
        self.chart = chart

    def values_args(self, scenario: str) -> list[str]:
        if scenario == "default":
            return []
        return ["--values", str(self.chart / "ci" / f"{scenario}-values.yaml")]

    def command(self, helm: str, scenario: str, *extra: str) -> list[str]:
        return [
            require_tool(helm),
            "template",
            RELEASE,
            str(self.chart),
            "--namespace",
            NAMESPACE,
            *self.values_args(scenario),
            *extra,
        ]

    def attempt(self, helm: str, scenario: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return run(self.command(helm, scenario, *extra))

    def notes(self, scenario: str) -> str:
        """The NOTES of ``helm install --dry-run=client`` (helm 4: helm 3's still dials
        a cluster)."""
        command = [require_tool("helm4"), "install", RELEASE, str(self.chart)]
        proc = run(
            [*command, "--namespace", NAMESPACE, *self.values_args(scenario), "--dry-run=client"]
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split("NOTES:", 1)[1]

    @functools.cache  # noqa: B019 - one Renderer per session
    def render(self, helm: str, scenario: str, *extra: str) -> Rendering:
        proc = self.attempt(helm, scenario, *extra)
        assert proc.returncode == 0, f"{helm} template ({scenario}) failed:\n{proc.stderr}"
        return Rendering(proc.stdout, load_docs(proc.stdout), sources(proc.stdout))


@pytest.fixture(scope="session")
def renderer(chart_dir: Path) -> Renderer:
    return Renderer(chart_dir)


@functools.cache
def _kustomize(kubectl: str, overlay: str) -> str:
    proc = run([kubectl, "kustomize", str(JOBS / overlay)])
    assert proc.returncode == 0, f"kubectl kustomize jobs/{overlay} failed:\n{proc.stderr}"
    return proc.stdout


def kustomize(overlay: str) -> list[dict[str, Any]]:
    return load_docs(_kustomize(require_tool("kubectl"), overlay))


@functools.cache
def _kustomize_tls(kubectl: str, variant: str) -> str:
    """A throwaway overlay of ``variant`` with its TLS component, as a user writes one."""
    if variant == "operator-configs":
        base, extra = OPERATOR_CONFIGS, [OPERATOR_CONFIGS / "daskworkergroup-gpu.yaml"]
        component = OPERATOR_CONFIGS / "components" / "tls"
    else:
        base, extra = REPO / variant, []
        component = JOBS / "components" / "tls"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for path in extra:  # kustomize loads files only from under the overlay
            shutil.copy(path, root / path.name)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(base, root), *(p.name for p in extra)],
            "components": [os.path.relpath(component, root)],
        }
        (root / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        proc = run([kubectl, "kustomize", str(root)])
    assert proc.returncode == 0, f"kubectl kustomize {variant} + TLS failed:\n{proc.stderr}"
    return proc.stdout


def kustomize_tls(variant: str) -> list[dict[str, Any]]:
    return load_docs(_kustomize_tls(require_tool("kubectl"), variant))


def operator_config_docs(name: str) -> list[dict[str, Any]]:
    return load_docs((OPERATOR_CONFIGS / name).read_text())
