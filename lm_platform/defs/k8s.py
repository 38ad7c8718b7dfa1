"""The deployment profile in Dagster terms: the trainer resource (PipesSubprocessClient locally,
PipesK8sClient on Kubernetes), the executor (in-process locally, `k8s_job_executor` with per-asset step
pods on Kubernetes), and the per-recipe key prefix of multi-recipe workspaces. The automation that
launches training lives in `defs/automation.py`. The trainer resource stays here rather than in
`defs/resources.py`, so that only deployments import `dagster_k8s` (and the Kubernetes client), not every
domain module; and only the k8s profile does: `dagster_k8s` and the Kubernetes client take seconds to
import, so `K8sTrainer` is defined on first use (a module `__getattr__`) and the executor imports
`k8s_job_executor` when the profile asks for it. A local code location never loads them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg

from lm_platform.deployment.pods import trainer_pod_labels, trainer_pod_spec
from lm_platform.deployment.profile import Profile
from lm_platform.recipe.schema import Recipe

if TYPE_CHECKING:
    from dagster_k8s import PipesK8sClient

KEY_PREFIX_ENV = "LM_PLATFORM_KEY_PREFIX"


def _k8s_trainer_class() -> type:
    """`K8sTrainer`, defined on first use so that importing this module does not import `dagster_k8s`."""
    if "K8sTrainer" in globals():
        return globals()["K8sTrainer"]
    from dagster_k8s import PipesK8sClient

    class K8sTrainer(PipesK8sClient):
        """`PipesK8sClient` that turns the trainer command of `checkpoint/<stage>` into the stage's GPU pod
        (spec from the recipe stage and the profile), waits up to the profile's `pod_wait_timeout_seconds`,
        and deletes the pod when it completes. Logs and metadata come back through the pod's log stream
        (Pipes)."""

        def __init__(self, profile: Profile, recipe: Recipe, **kwargs: Any):
            super().__init__(**kwargs)
            self.profile = profile
            self.recipe = recipe

        def run(  # type: ignore[override]
            self,
            *,
            context: dg.AssetExecutionContext | dg.OpExecutionContext,
            command: Sequence[str],
            extras: Mapping[str, Any] | None = None,
            **_: Any,
        ) -> dg.PipesClientCompletedInvocation:
            stage = context.asset_key.path[-1]
            job_file = _job_file(command)
            return super().run(
                context=context,
                extras=extras,
                namespace=self.profile.namespace,
                base_pod_meta={"labels": trainer_pod_labels(self.profile, self.recipe, stage)},
                base_pod_spec=trainer_pod_spec(self.profile, self.recipe, stage, job_file),
                pod_wait_timeout=self.profile.pod_wait_timeout_seconds,
                delete_pod_on_completion=True,
            )

    K8sTrainer.__qualname__ = "K8sTrainer"
    globals()["K8sTrainer"] = K8sTrainer
    return K8sTrainer


def __getattr__(name: str) -> Any:
    """`K8sTrainer` (PEP 562), imported from this module as if defined at its top level."""
    if name == "K8sTrainer":
        return _k8s_trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _job_file(command: Sequence[str]) -> str:
    args = list(command)
    if "--job" not in args or args.index("--job") + 1 >= len(args):
        raise ValueError(f"not a trainer command (no --job FILE): {args}")
    return args[args.index("--job") + 1]


def trainer_resource(profile: Profile, recipe: Recipe) -> dg.PipesSubprocessClient | PipesK8sClient:
    """Local: a subprocess. k8s: a pod per stage run (a `K8sTrainer`)."""
    if profile.kind == "k8s":
        return _k8s_trainer_class()(profile, recipe)
    return dg.PipesSubprocessClient()


def op_name(key: dg.AssetKey) -> str:
    """The op (step) name Dagster gives an asset: its key parts joined by '__'."""
    return "__".join(key.path)


def executor_config(profile: Profile, assets: Sequence[dg.AssetsDefinition]) -> dict[str, Any]:
    """The `k8s_job_executor` config: namespace, service account, and per step (op) the asset's
    `dagster-k8s/config` from the profile (requests, node selector, storage volume, Secrets)."""
    from lm_platform.deployment.pods import step_k8s_config

    return {
        "job_namespace": profile.namespace,
        "image_pull_policy": profile.image_pull_policy,
        "service_account_name": profile.service_account,
        "per_step_k8s_config": {
            op_name(key): step_k8s_config(profile, list(key.path)) for a in assets for key in a.keys
        },
    }


def executor(profile: Profile, assets: Sequence[dg.AssetsDefinition]) -> dg.ExecutorDefinition | None:
    """k8s: `k8s_job_executor`, one pod per step (one per partition of a sharded curated/<source> in a
    backfill that runs a run per partition), each with its asset's pod settings. Local: the default."""
    if profile.kind != "k8s":
        return None
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(executor_config(profile, assets), name="k8s_job_executor")


def fan_out_partitions(profile: Profile, assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """k8s: a backfill of a partitioned asset (a sharded source's curated/<source>) runs one run per
    partition, so `k8s_job_executor` gives each partition its own step pod. Local keeps the recipe's
    single-run backfills (one process curates the range)."""
    if profile.kind != "k8s":
        return list(assets)
    return [
        a.with_attributes(backfill_policy=dg.BackfillPolicy.multi_run(1))
        if a.partitions_def is not None
        else a
        for a in assets
    ]


def key_prefix(recipe: Recipe, setting: str | None = None) -> list[str]:
    """$LM_PLATFORM_KEY_PREFIX: unset/'' = none (one recipe per instance), 'recipe' = the recipe's name
    (multi-recipe workspaces), anything else = that prefix."""
    value = os.environ.get(KEY_PREFIX_ENV, "") if setting is None else setting
    if not value:
        return []
    return [recipe.name if value == "recipe" else value]


def prefixed(assets: Sequence[dg.AssetsDefinition], prefix: Sequence[str]) -> list[dg.AssetsDefinition]:
    """Every asset key (and every dependency on one of them) under `prefix`, so that code locations of
    different recipes do not merge into one key in the global asset graph."""
    if not prefix:
        return list(assets)
    own = {k for a in assets for k in a.keys}
    replace = {k: dg.AssetKey([*prefix, *k.path]) for k in own}
    return [a.with_attributes(asset_key_replacements=replace) for a in assets]
