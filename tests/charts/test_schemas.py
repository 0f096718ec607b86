"""Every object we ship is valid for Kubernetes 1.30 and 1.35, and for the Dask CRDs.

Built-in kinds are checked against the strict OpenAPI schemas that the
kubernetes-validate package ships (unknown fields fail, as with kubectl's
default server-side field validation). Dask custom resources are checked
against the openAPIV3Schema of the CRDs in the installed dask-kubernetes
wheel, with unknown fields made errors too: the API server would prune them
silently, or reject them under --validate=strict.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from tests.charts.conftest import (
    OPERATOR_CONFIG_FILES,
    OVERLAYS,
    SCENARIOS,
    TLS_VARIANTS,
    Renderer,
    kustomize,
    kustomize_tls,
    operator_chart_source,
    operator_config_docs,
)

KUBERNETES_VERSIONS = ("1.30", "1.35")
DASK_GROUP = "kubernetes.dask.org/v1"
# Prometheus Operator kinds: no schema ships offline; their fields are asserted
# in test_chart.py (selectors, ports) instead.
UNCHECKED_API_VERSIONS = {"monitoring.coreos.com/v1"}


def validate_builtin(obj: dict[str, Any], version: str) -> None:
    """Raise with the object's name and the failing path when ``obj`` is invalid."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        message = f"{where} invalid for Kubernetes {version} at {path}: {exc.message}"
        raise AssertionError(message) from None
    except kubernetes_validate.SchemaNotFoundError:
        message = f"{where}: no Kubernetes {version} schema for {obj['apiVersion']}"
        raise AssertionError(message) from None


def _strict(schema: Any) -> Any:
    """OpenAPI v3 structural schema -> JSON Schema: unknown fields and nullable."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    closable = "properties" in out and "additionalProperties" not in out
    if closable and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@functools.cache
def crd_validators() -> dict[str, jsonschema.Draft7Validator]:
    validators = {}
    for path in sorted((operator_chart_source() / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
        # apiVersion, kind and metadata are implicit in every CRD schema.
        schema["properties"].update(
            {"apiVersion": {"const": DASK_GROUP}, "kind": {"type": "string"}},
        )
        schema["properties"]["metadata"] = {"type": "object"}
        validators[crd["spec"]["names"]["kind"]] = jsonschema.Draft7Validator(schema)
    return validators


def validate_dask(obj: dict[str, Any]) -> None:
    validator = crd_validators()[obj["kind"]]
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    assert not errors, f"{where} violates its CRD: " + "; ".join(
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
    )


def check_all(docs: list[dict[str, Any]], version: str) -> int:
    """Validate every object; return how many were checked."""
    checked = 0
    for obj in docs:
        if obj["apiVersion"] in UNCHECKED_API_VERSIONS:
            continue
        if obj["apiVersion"] == DASK_GROUP:
            validate_dask(obj)
        else:
            validate_builtin(obj, version)
        checked += 1
    return checked


SOURCES: dict[str, Callable[[Renderer], list[dict[str, Any]]]] = {
    **{
        f"chart:{scenario}": (lambda r, s=scenario: r.render("helm3", s).docs)
        for scenario in SCENARIOS
    },
    **{
        f"operator-configs/{name}": (lambda r, n=name: operator_config_docs(n))
        for name in OPERATOR_CONFIG_FILES
    },
    **{f"jobs/{overlay}": (lambda r, o=overlay: kustomize(o)) for overlay in OVERLAYS},
    **{f"{variant} + tls": (lambda r, v=variant: kustomize_tls(v)) for variant in TLS_VARIANTS},
}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_objects_are_valid(renderer: Renderer, source: str, version: str) -> None:
    docs = SOURCES[source](renderer)
    assert check_all(docs, version) == len(
        [d for d in docs if d["apiVersion"] not in UNCHECKED_API_VERSIONS]
    )
    assert docs, f"{source} holds no objects"


def test_every_dask_kind_is_covered(renderer: Renderer) -> None:
    kinds = {d["kind"] for d in renderer.render("helm3", "gpu").docs}
    kinds |= {d["kind"] for name in OPERATOR_CONFIG_FILES for d in operator_config_docs(name)}
    assert set(crd_validators()) <= kinds


# ---------------------------------------------------------------- the validators can fail


def test_kubernetes_validation_rejects_an_unknown_field() -> None:
    job = kustomize("xgboost")[-1]
    broken = copy.deepcopy(job)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(AssertionError, match="imagePullPolcy"):
        validate_builtin(broken, "1.35")


def test_kubernetes_validation_knows_the_version() -> None:
    # Pod-level resources are in the 1.35 API, not in 1.30's.
    job = copy.deepcopy(kustomize("xgboost")[-1])
    job["spec"]["template"]["spec"]["resources"] = {"limits": {"cpu": "1"}}
    validate_builtin(job, "1.35")
    with pytest.raises(AssertionError, match=r"Kubernetes 1\.30"):
        validate_builtin(job, "1.30")


def test_crd_validation_rejects_integer_quantities_and_unknown_fields(renderer: Renderer) -> None:
    cluster = copy.deepcopy(renderer.render("helm3", "default").of_kind("DaskCluster")[0])
    worker = cluster["spec"]["worker"]["spec"]["containers"][0]
    worker["resources"]["limits"]["nvidia.com/gpu"] = 1  # the CRD types quantities as strings
    with pytest.raises(AssertionError, match=r"nvidia\.com/gpu"):
        validate_dask(cluster)
    cluster = copy.deepcopy(renderer.render("helm3", "default").of_kind("DaskCluster")[0])
    cluster["spec"]["idleTimout"] = 5
    with pytest.raises(AssertionError, match="idleTimout"):
        validate_dask(cluster)
