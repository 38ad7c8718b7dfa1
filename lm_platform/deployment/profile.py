"""The deployment profile: where and how the platform runs (on this machine, or on Kubernetes).

`LM_PLATFORM_PROFILE` selects it: `local` (the default: subprocess trainer, in-process executor, sensors
stopped), `k8s` (the bundled example profile, `profiles/k8s.example.yaml`) or the path of a profile YAML
file a user edits. A bad profile fails at load with the file and the path of each bad field, as recipes do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROFILE_ENV = "LM_PLATFORM_PROFILE"
BUNDLED_PROFILES = Path(__file__).parent / "profiles"
EXAMPLE_PROFILE = BUNDLED_PROFILES / "k8s.example.yaml"

# A Kubernetes resource quantity ("500m", "8", "64Gi", "1.5G").
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E)?$")
# A DNS-1123 label (namespaces, PVC, Secret, service account names).
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and each bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _quantity(value: str | None) -> str | None:
    if value is not None and not _QUANTITY.match(str(value)):
        raise ValueError(f"'{value}' is not a Kubernetes quantity (e.g. '500m', '8', '64Gi')")
    return None if value is None else str(value)


def _dns_label(value: str | None) -> str | None:
    if value is not None and (len(value) > 63 or not _DNS_LABEL.match(value)):
        raise ValueError(f"'{value}' is not a DNS-1123 label (lower-case letters, digits, '-')")
    return value


class Toleration(_Strict):
    """A pod toleration (for tainted GPU nodes, spot pools)."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _exists_has_no_value(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("a toleration with operator 'Exists' takes no value")
        return self

    def to_k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operator": self.operator}
        for name, key in (
            ("key", "key"),
            ("value", "value"),
            ("effect", "effect"),
            ("toleration_seconds", "tolerationSeconds"),
        ):
            if getattr(self, name) is not None:
                out[key] = getattr(self, name)
        return out


class ComputeResources(_Strict):
    """CPU and memory requests and limits of a container (Kubernetes quantities)."""

    cpu_request: str | None = None
    memory_request: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None

    _q = field_validator("cpu_request", "memory_request", "cpu_limit", "memory_limit", mode="before")(
        lambda v: _quantity(None if v is None else str(v))
    )

    def to_k8s(self, extra: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """`{"requests": ..., "limits": ...}`; `extra` (e.g. GPUs) goes into both, as Kubernetes
        requires for extended resources."""
        requests = {k: v for k, v in (("cpu", self.cpu_request), ("memory", self.memory_request)) if v}
        limits = {k: v for k, v in (("cpu", self.cpu_limit), ("memory", self.memory_limit)) if v}
        requests.update(extra or {})
        limits.update(extra or {})
        return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


class PodSettings(_Strict):
    """Scheduling and sizing of one kind of pod."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    resources: ComputeResources = ComputeResources()
    shm_size: str | None = Field(
        None, description="Size of the memory-backed /dev/shm (PyTorch data loaders, NCCL need more than 64M)"
    )

    _shm = field_validator("shm_size", mode="before")(lambda v: _quantity(None if v is None else str(v)))


class StageOverride(_Strict):
    """Per-stage changes to the trainer pod; unset fields keep the trainer's settings."""

    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    resources: ComputeResources | None = None
    shm_size: str | None = None

    _shm = field_validator("shm_size", mode="before")(lambda v: _quantity(None if v is None else str(v)))


class TrainerSettings(PodSettings):
    """The trainer pods. The GPU count of a stage is its recipe `nproc_per_node` (one process per GPU,
    torchrun when more than one); the profile names the resource and may change pods per stage."""

    gpu_resource: str = Field("nvidia.com/gpu", description="Extended resource name of the accelerator")
    stages: dict[str, StageOverride] = Field(default_factory=dict, description="Per stage name")

    @field_validator("gpu_resource")
    @classmethod
    def _gpu_name(cls, v: str) -> str:
        if "/" not in v:
            raise ValueError(f"'{v}' is not an extended resource name such as 'nvidia.com/gpu'")
        return v

    def for_stage(self, stage: str) -> PodSettings:
        """The settings of one stage's pod: the trainer's, with the stage's overrides."""
        over = self.stages.get(stage)
        base = PodSettings(
            node_selector=self.node_selector,
            tolerations=self.tolerations,
            resources=self.resources,
            shm_size=self.shm_size,
        )
        if over is None:
            return base
        fields = ("node_selector", "tolerations", "resources", "shm_size")
        return base.model_copy(update={k: getattr(over, k) for k in fields if getattr(over, k) is not None})


class Storage(_Strict):
    """The storage root: a ReadWriteMany volume mounted at the same path in every pod (`pvc`), or an object
    store (`url: s3://bucket/prefix`) with a size-bounded local cache on each pod's own disk. Credentials
    of an object store come from the pod's service account (IRSA, workload identity) or from the Secret
    `credentials_secret` names (keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), never from this file."""

    pvc: str | None = Field(
        None, description="PersistentVolumeClaim (ReadWriteMany) holding the storage root"
    )
    mount_path: str = Field("/data/lm_platform", description="Mount path = LM_PLATFORM_STORAGE in every pod")
    url: str | None = Field(None, description="s3://bucket/prefix: an object store as the root (no pvc)")
    endpoint_url: str | None = Field(None, description="S3 API endpoint (MinIO, Ceph RGW, R2, GCS interop)")
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    region: str | None = None
    credentials_secret: str | None = Field(
        None,
        description="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (omit with a service account role)",
    )
    cache_path: str = Field("/cache/lm_platform", description="The local cache's mount (an emptyDir)")
    cache_size: str = Field("100Gi", description="The local cache's bound (and its emptyDir's size limit)")
    concurrency: int = Field(8, ge=1, description="Transfers at once per step (bounded concurrency)")

    _pvc = field_validator("pvc", "credentials_secret")(_dns_label)
    _cache = field_validator("cache_size", mode="before")(lambda v: _quantity(None if v is None else str(v)))

    @field_validator("url")
    @classmethod
    def _object_url(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("s3://") or not v[len("s3://") :].strip("/")):
            raise ValueError(f"'{v}' is not an s3://bucket/prefix URL")
        return v

    @model_validator(mode="after")
    def _one_root(self) -> Storage:
        if (self.pvc is None) == (self.url is None):
            raise ValueError("give either pvc (a ReadWriteMany volume) or url (s3://bucket/prefix), not both")
        return self

    @field_validator("mount_path", "cache_path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"'{v}' is not an absolute path")
        return v.rstrip("/") or "/"


_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_UNITS |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "m": 1e-3}


def quantity_bytes(value: str) -> int:
    """A Kubernetes quantity ("100Gi", "20G") in bytes."""
    m = re.match(r"^([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)$", value)
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"'{value}' is not a Kubernetes quantity")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


class SecretEnv(_Strict):
    """An environment variable read from a Kubernetes Secret (`valueFrom.secretKeyRef`): the value never
    appears in the pod spec, the run's metadata or its logs."""

    env: str
    secret: str
    key: str
    optional: bool = False

    _secret = field_validator("secret")(_dns_label)

    @field_validator("env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not _ENV_NAME.match(v):
            raise ValueError(f"'{v}' is not an environment variable name")
        return v


class Security(_Strict):
    """The non-root security context of every pod."""

    run_as_user: int = Field(1000, gt=0, description="Not 0: pods never run as root")
    run_as_group: int = Field(1000, gt=0)
    fs_group: int = Field(1000, gt=0, description="Group owning the mounted volumes")


class Profile(_Strict):
    """A deployment profile. `kind: local` needs nothing else; `kind: k8s` needs at least the image and
    the storage volume."""

    kind: Literal["local", "k8s"] = "local"
    image: str | None = Field(None, description="One image runs the code location, step pods and trainer")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    namespace: str = "lm-platform"
    service_account: str = Field("lm-platform", description="May create pods and read their logs")
    python: str = Field("python", description="The interpreter in the image that runs the trainer")
    storage: Storage | None = None
    secrets: list[SecretEnv] = Field(default_factory=list, description="e.g. HF_TOKEN from a Secret")
    security: Security = Security()
    termination_grace_period_seconds: int = Field(
        300,
        ge=30,
        description="SIGTERM to SIGKILL on preemption/eviction: the trainer writes a step checkpoint in it",
    )
    pod_wait_timeout_seconds: float = Field(
        14 * 24 * 3600, ge=0, description="How long a trainer pod may run (0: no limit); multi-day runs"
    )
    trainer: TrainerSettings = TrainerSettings()
    steps: PodSettings = Field(
        PodSettings(), description="Pods of the k8s_job_executor (curation partitions, other CPU steps)"
    )
    step_overrides: dict[str, PodSettings] = Field(
        default_factory=dict, description="Per asset key prefix (e.g. 'curated', 'corpus'): step pods"
    )
    sensors: Literal["running", "stopped"] | None = Field(
        None, description="Default status of the automation sensors (k8s: running, local: stopped)"
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on every pod")

    _ns = field_validator("namespace", "service_account")(_dns_label)

    @model_validator(mode="after")
    def _k8s_needs(self) -> Profile:
        if self.kind == "k8s":
            missing = [f for f in ("image", "storage") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"a k8s profile needs {', '.join(missing)}")
        names = [s.env for s in self.secrets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"secrets: environment variable(s) {dupes} set twice")
        return self

    @property
    def sensors_running(self) -> bool:
        return (self.sensors or ("running" if self.kind == "k8s" else "stopped")) == "running"

    def storage_root(self) -> str:
        assert self.storage is not None
        return self.storage.url or self.storage.mount_path


def parse_profile(raw: dict[str, Any], origin: str = "<profile>") -> Profile:
    """Validate a profile mapping; errors name `origin` and each field's path."""
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {loc or '<root>'}: {msg}")
        raise ProfileError(f"{origin}: invalid profile\n" + "\n".join(lines)) from None


def load_profile(name_or_path: str | None = None) -> Profile:
    """`local`, `k8s` (the bundled example) or a YAML file; default: $LM_PLATFORM_PROFILE, else local."""
    spec = name_or_path or os.environ.get(PROFILE_ENV) or "local"
    if spec == "local":
        return Profile()
    path = EXAMPLE_PROFILE if spec == "k8s" else Path(spec).expanduser()
    if not path.is_file():
        raise ProfileError(f"{PROFILE_ENV}={spec}: not 'local', 'k8s' or an existing profile file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile is a mapping at the top level, got {type(raw).__name__}")
    return parse_profile(raw, origin=str(path))
