"""Kubernetes pod specs built from a recipe stage and a deployment profile (plain dicts in the API's
camelCase form; `kubernetes.client` models are built from them by dagster-k8s).

The trainer pod: one GPU per training process (the stage's `nproc_per_node`, torchrun when > 1), the
profile's node selector, tolerations, requests and limits, a memory-backed /dev/shm, the storage root on
its ReadWriteMany volume at the same path as in every other pod, Secrets as `valueFrom.secretKeyRef`
(never a plain value), a non-root security context, and the profile's termination grace period (the
trainer checkpoints on SIGTERM within it).
"""

from __future__ import annotations

import re
from typing import Any

from lm_platform.deployment.profile import PodSettings, Profile, quantity_bytes
from lm_platform.paths import STORAGE_ENV
from lm_platform.recipe.schema import Recipe
from lm_platform.training.contract import GRACE_ENV, TrainerLaunch

TRAINER_CONTAINER = "trainer"
STORAGE_VOLUME = "storage"
SHM_VOLUME = "dshm"
LABEL_PREFIX = "lm-platform.dev"
_LABEL_BAD = re.compile(r"[^A-Za-z0-9._-]")


def label_value(value: str) -> str:
    """A valid label value (63 characters of [A-Za-z0-9._-], alphanumeric at both ends)."""
    return _LABEL_BAD.sub("-", value)[:63].strip("-._") or "x"


def secret_env(profile: Profile) -> list[dict[str, Any]]:
    """Environment variables from Secrets, by reference only."""
    return [
        {
            "name": s.env,
            "valueFrom": {"secretKeyRef": {"name": s.secret, "key": s.key, "optional": s.optional}},
        }
        for s in profile.secrets
    ]


def base_env(profile: Profile) -> list[dict[str, Any]]:
    """What every pod of the platform sees: the storage root, unbuffered output, caches on the volume,
    and the Secrets (by reference)."""
    root = profile.storage_root()
    assert profile.storage is not None
    local = profile.storage.cache_path if profile.storage.url else root
    return [
        {"name": STORAGE_ENV, "value": root},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": f"{local}/.cache/huggingface"},
        *object_store_env(profile),
        *secret_env(profile),
    ]


def object_store_env(profile: Profile) -> list[dict[str, Any]]:
    """Under an object-store root: its settings and the local cache (`lm_platform.storage.cache`), and the
    credentials by Secret reference when the profile names one (else the service account's role)."""
    st = profile.storage
    if st is None or st.url is None:
        return []
    # The cache's bound leaves a tenth of the emptyDir for what a step writes before it is published.
    env = {
        "LM_PLATFORM_CACHE": st.cache_path,
        "LM_PLATFORM_CACHE_MAX_BYTES": str(quantity_bytes(st.cache_size) * 9 // 10),
        "LM_PLATFORM_S3_ADDRESSING_STYLE": st.addressing_style,
        "LM_PLATFORM_S3_CONCURRENCY": str(st.concurrency),
        "LM_PLATFORM_S3_ENDPOINT_URL": st.endpoint_url,
        "LM_PLATFORM_S3_REGION": st.region,
    }
    out: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in env.items() if v is not None]
    if st.credentials_secret:
        out += [
            {"name": k, "valueFrom": {"secretKeyRef": {"name": st.credentials_secret, "key": k}}}
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        ]
    return out


def _volumes(profile: Profile, shm_size: str | None) -> tuple[list[dict], list[dict]]:
    assert profile.storage is not None
    st = profile.storage
    if st.url:  # an object store: the pod's local cache on its own disk, bounded
        volumes: list[dict[str, Any]] = [{"name": STORAGE_VOLUME, "emptyDir": {"sizeLimit": st.cache_size}}]
        mounts: list[dict[str, Any]] = [{"name": STORAGE_VOLUME, "mountPath": st.cache_path}]
    else:
        volumes = [{"name": STORAGE_VOLUME, "persistentVolumeClaim": {"claimName": st.pvc}}]
        mounts = [{"name": STORAGE_VOLUME, "mountPath": st.mount_path}]
    if shm_size:
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}})
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    return volumes, mounts


def pod_security_context(profile: Profile) -> dict[str, Any]:
    s = profile.security
    return {
        "runAsNonRoot": True,
        "runAsUser": s.run_as_user,
        "runAsGroup": s.run_as_group,
        "fsGroup": s.fs_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def _require_k8s(profile: Profile) -> None:
    if profile.kind != "k8s":
        raise ValueError("pod specs need a k8s profile (LM_PLATFORM_PROFILE names its file)")


def trainer_pod_spec(profile: Profile, recipe: Recipe, launch: TrainerLaunch) -> dict[str, Any]:
    """The PodSpec of a stage's trainer launch (the `base_pod_spec` PipesK8sClient completes with the Pipes
    environment): the launch's command in the image's interpreter, one GPU per process."""
    _require_k8s(profile)
    stage = recipe.stage(launch.stage)
    settings = profile.trainer.for_stage(stage.name)
    gpus = {profile.trainer.gpu_resource: launch.nproc_per_node}
    volumes, mounts = _volumes(profile, settings.shm_size)
    container = {
        "name": TRAINER_CONTAINER,
        "image": profile.image,
        "imagePullPolicy": profile.image_pull_policy,
        "command": launch.command(profile.python),
        # The launcher gives torchrun's workers this grace period (not torchrun's 30 s) to checkpoint.
        "env": [
            *base_env(profile),
            {"name": GRACE_ENV, "value": str(profile.termination_grace_period_seconds)},
        ],
        "resources": settings.resources.to_k8s(gpus),
        "volumeMounts": mounts,
        "securityContext": CONTAINER_SECURITY_CONTEXT,
    }
    return {
        **_scheduling(settings),
        "serviceAccountName": profile.service_account,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": profile.termination_grace_period_seconds,
        "securityContext": pod_security_context(profile),
        "containers": [container],
        "volumes": volumes,
    }


def _scheduling(settings: PodSettings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if settings.node_selector:
        out["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        out["tolerations"] = [t.to_k8s() for t in settings.tolerations]
    return out


def trainer_pod_labels(profile: Profile, recipe: Recipe, stage_name: str) -> dict[str, str]:
    return {
        **profile.labels,
        f"{LABEL_PREFIX}/recipe": label_value(recipe.name),
        f"{LABEL_PREFIX}/stage": label_value(stage_name),
        f"{LABEL_PREFIX}/component": "trainer",
    }


def trainer_pod(
    profile: Profile, recipe: Recipe, launch: TrainerLaunch, name: str | None = None
) -> dict[str, Any]:
    """A whole Pod manifest for a stage's trainer launch (what `kubectl apply` or schema validation takes)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name or label_value(f"{recipe.name}-{launch.stage}-trainer").lower().replace("_", "-"),
            "namespace": profile.namespace,
            "labels": trainer_pod_labels(profile, recipe, launch.stage),
        },
        "spec": trainer_pod_spec(profile, recipe, launch),
    }


def step_settings(profile: Profile, asset_key: list[str]) -> PodSettings:
    """The step pod settings of an asset: an override for the first key part not a recipe prefix, if
    any, else the profile's `steps`."""
    for part in asset_key:
        if part in profile.step_overrides:
            return profile.step_overrides[part]
    return profile.steps


def step_k8s_config(profile: Profile, asset_key: list[str]) -> dict[str, Any]:
    """The `dagster-k8s/config` of one asset's step pod under `k8s_job_executor` (container and pod
    spec parts; the executor adds image, command and the run's environment)."""
    _require_k8s(profile)
    settings = step_settings(profile, asset_key)
    volumes, mounts = _volumes(profile, settings.shm_size)
    container: dict[str, Any] = {
        "env": base_env(profile),
        "volumeMounts": mounts,
        "securityContext": CONTAINER_SECURITY_CONTEXT,
    }
    resources = settings.resources.to_k8s()
    if resources:
        container["resources"] = resources
    return {
        "container_config": container,
        "pod_spec_config": {
            **_scheduling(settings),
            "serviceAccountName": profile.service_account,
            "securityContext": pod_security_context(profile),
            "volumes": volumes,
        },
        "pod_template_spec_metadata": {"labels": {**profile.labels, f"{LABEL_PREFIX}/component": "step"}},
    }
