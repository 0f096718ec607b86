"""Pod templates out of Kubernetes objects, and the Pod Security Standards check.

``pod_templates`` finds every pod spec an object will create: workloads
(Pod, Deployment, Job, CronJob, ...) and the Dask operator's custom resources
(DaskCluster, DaskWorkerGroup, DaskJob), whose pod specs the operator copies
into the pods it creates.

``restricted_violations`` implements the "restricted" profile of the Pod
Security Standards (https://kubernetes.io/docs/concepts/security/pod-security-standards/,
policy version "latest" as of Kubernetes 1.35), which includes every
"baseline" control. ``hardening_violations`` adds daskyard's own rules: a
read-only root filesystem with an emptyDir at /tmp, and requests and limits
for CPU and memory on every container.

Both return human-readable findings ("container 'worker': ..."); an empty
list means the pod passes. No Kubernetes client is needed: this is plain
data, so the `daskyard render job` tests can reuse it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

WORKLOAD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "PodTemplate": ("template",),
}

# Restricted: only these volume types.
ALLOWED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
# Baseline: sysctls outside this set are forbidden.
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
SELINUX_TYPES |= {"container_engine_t"}
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")


@dataclass(frozen=True)
class PodTemplate:
    """One pod spec inside an object, and where it sits."""

    kind: str
    name: str
    path: str
    spec: Mapping[str, Any]
    metadata: Mapping[str, Any]

    @property
    def where(self) -> str:
        return f"{self.kind}/{self.name} {self.path}"


def _dig(obj: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


# Custom resources of the Dask operator: where their pod templates sit.
DASK_TEMPLATE_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "DaskCluster": (("spec", "scheduler"), ("spec", "worker")),
    "DaskWorkerGroup": (("spec", "worker"),),
    "DaskJob": (
        ("spec", "job"),
        ("spec", "cluster", "spec", "scheduler"),
        ("spec", "cluster", "spec", "worker"),
    ),
}


def pod_templates(obj: Mapping[str, Any]) -> list[PodTemplate]:
    """Every pod spec ``obj`` creates pods from (empty for non-workloads)."""
    kind = obj.get("kind", "")
    name = _dig(obj, ("metadata", "name")) or "?"
    if kind == "Pod":
        paths: tuple[tuple[str, ...], ...] = ((),)
    elif kind in WORKLOAD_TEMPLATE_PATHS:
        paths = (WORKLOAD_TEMPLATE_PATHS[kind],)
    elif kind == "CronJob":
        paths = (("spec", "jobTemplate", "spec", "template"),)
    else:
        paths = DASK_TEMPLATE_PATHS.get(kind, ())
    templates = []
    for path in paths:
        template = _dig(obj, path) if path else obj
        where = ".".join((*path, "spec"))
        if not isinstance(template, Mapping) or not isinstance(template.get("spec"), Mapping):
            raise ValueError(f"{kind}/{name}: no pod spec at {where}")
        metadata = template.get("metadata") or {}
        templates.append(PodTemplate(kind, name, where, template["spec"], metadata))
    return templates


def containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(label, container) for init, regular and ephemeral containers."""
    for group in CONTAINER_KINDS:
        for container in spec.get(group) or []:
            label = "init container" if group == "initContainers" else "container"
            if group == "ephemeralContainers":
                label = "ephemeral container"
            yield f"{label} '{container.get('name', '?')}'", container


def _effective(pod_ctx: Mapping[str, Any], ctx: Mapping[str, Any], key: str) -> Any:
    """A container's setting, falling back to the pod's (container wins)."""
    value = ctx.get(key)
    return pod_ctx.get(key) if value is None else value


def restricted_violations(
    spec: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
) -> list[str]:
    """Pod Security Standards "restricted" (and so "baseline") findings."""
    problems: list[str] = []
    pod_ctx: Mapping[str, Any] = spec.get("securityContext") or {}
    annotations: Mapping[str, str] = (metadata or {}).get("annotations") or {}

    # Baseline: host namespaces.
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"pod: {field} must be false")
    # Baseline: HostProcess (Windows).
    if (pod_ctx.get("windowsOptions") or {}).get("hostProcess"):
        problems.append("pod: windowsOptions.hostProcess must be false")
    # Baseline: sysctls.
    for sysctl in pod_ctx.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"pod: sysctl {sysctl.get('name')!r} is not in the safe set")
    # Baseline + restricted: SELinux, AppArmor, seccomp at pod level.
    problems += [f"pod: {p}" for p in _selinux_problems(pod_ctx)]
    problems += [f"pod: {p}" for p in _apparmor_problems(pod_ctx)]
    for key, value in annotations.items():
        if key.startswith(APPARMOR_ANNOTATION) and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            problems.append(f"pod: AppArmor annotation {key}={value} is not allowed")
    pod_seccomp = (pod_ctx.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"pod: seccompProfile.type {pod_seccomp} (RuntimeDefault or Localhost)")

    # Restricted: volume types (which also rules out baseline's hostPath).
    for volume in spec.get("volumes") or []:
        kinds = [k for k in volume if k != "name"]
        for kind in kinds:
            if kind not in ALLOWED_VOLUME_TYPES:
                problems.append(f"pod: volume '{volume.get('name')}' has type {kind}")

    for label, container in containers(spec):
        ctx: Mapping[str, Any] = container.get("securityContext") or {}
        # Baseline: privileged, capabilities, host ports, procMount, HostProcess.
        if ctx.get("privileged"):
            problems.append(f"{label}: privileged must be false")
        if (ctx.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"{label}: windowsOptions.hostProcess must be false")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{label}: hostPort {port['hostPort']} is not allowed")
        if ctx.get("procMount") not in (None, "Default"):
            problems.append(f"{label}: procMount must be Default")
        problems += [f"{label}: {p}" for p in _selinux_problems(ctx)]
        problems += [f"{label}: {p}" for p in _apparmor_problems(ctx)]
        # Restricted: privilege escalation.
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{label}: allowPrivilegeEscalation must be false")
        # Restricted: non-root.
        if _effective(pod_ctx, ctx, "runAsNonRoot") is not True:
            problems.append(f"{label}: runAsNonRoot must be true (pod or container)")
        if 0 in (pod_ctx.get("runAsUser"), ctx.get("runAsUser")):
            problems.append(f"{label}: runAsUser must not be 0")
        # Restricted: seccomp (container setting wins over the pod's).
        seccomp = _effective(pod_ctx, ctx, "seccompProfile") or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{label}: seccompProfile.type must be RuntimeDefault or Localhost")
        # Restricted: capabilities.
        capabilities = ctx.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{label}: capabilities.drop must include ALL")
        extra = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
        if extra:
            problems.append(f"{label}: capabilities.add {sorted(extra)} (only NET_BIND_SERVICE)")
    return problems


def _selinux_problems(ctx: Mapping[str, Any]) -> list[str]:
    options = ctx.get("seLinuxOptions") or {}
    problems = []
    if options.get("type", "") not in SELINUX_TYPES:
        problems.append(f"seLinuxOptions.type {options['type']} is not allowed")
    for field in ("user", "role"):
        if options.get(field):
            problems.append(f"seLinuxOptions.{field} must be unset")
    return problems


def _apparmor_problems(ctx: Mapping[str, Any]) -> list[str]:
    profile = (ctx.get("appArmorProfile") or {}).get("type")
    if profile not in (None, "RuntimeDefault", "Localhost"):
        return [f"appArmorProfile.type {profile} is not allowed"]
    return []


def hardening_violations(spec: Mapping[str, Any]) -> list[str]:
    """daskyard's rules on top of "restricted": read-only root, /tmp, resources."""
    problems: list[str] = []
    empty_dirs = {v.get("name") for v in spec.get("volumes") or [] if "emptyDir" in v}
    for label, container in containers(spec):
        if label.startswith("ephemeral"):
            continue  # debugging containers, added by `kubectl debug`
        ctx = container.get("securityContext") or {}
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{label}: readOnlyRootFilesystem must be true")
        mounts = {m.get("mountPath"): m.get("name") for m in container.get("volumeMounts") or []}
        if mounts.get("/tmp") not in empty_dirs:
            problems.append(f"{label}: /tmp must be an emptyDir mount")
        resources = container.get("resources") or {}
        for section in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (resources.get(section) or {}):
                    problems.append(f"{label}: resources.{section}.{resource} is missing")
    return problems


def pod_problems(template: PodTemplate) -> list[str]:
    """Every restricted and hardening finding for one pod template."""
    return restricted_violations(template.spec, template.metadata) + hardening_violations(
        template.spec
    )
