"""The deployment profile in Dagster terms: the executor (locally, steps forked from a preloaded
forkserver; on Kubernetes, `k8s_job_executor` with per-asset step pods), the partition fan-out, and the
per-recipe key prefix of multi-recipe workspaces. The trainer resource is chosen in `defs/deployment.py`
(`K8sTrainer` lives in `defs/k8s_trainer.py`); `dagster_k8s` and the Kubernetes client are imported only
for the k8s profile. The automation that launches training lives in `defs/automation.py`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import dagster as dg

from lm_platform.deployment.pods import step_k8s_config
from lm_platform.deployment.profile import Profile
from lm_platform.recipe.schema import Recipe

KEY_PREFIX_ENV = "LM_PLATFORM_KEY_PREFIX"


def op_name(key: dg.AssetKey) -> str:
    """The op (step) name Dagster gives an asset: its key parts joined by '__'."""
    return "__".join(key.path)


def executor_config(profile: Profile, assets: Sequence[dg.AssetsDefinition]) -> dict[str, Any]:
    """The `k8s_job_executor` config: namespace, service account, and per step (op) the asset's
    `dagster-k8s/config` from the profile (requests, node selector, storage volume, Secrets)."""

    return {
        "job_namespace": profile.namespace,
        "image_pull_policy": profile.image_pull_policy,
        "service_account_name": profile.service_account,
        "per_step_k8s_config": {
            op_name(key): step_k8s_config(profile, list(key.path)) for a in assets for key in a.keys
        },
    }


# Local runs: one process per step (as Dagster's default executor), forked from a server process that
# imported the code location once, instead of a fresh interpreter per step that imports Dagster and the
# platform again (seconds of CPU per step: most of a small step's time). The preloaded modules are
# imports only: the code location itself (which reads the recipe) is still built in each step process.
LOCAL_EXECUTOR = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["dagster", "lm_platform.defs.deployment"]}}},
    name="multiprocess_forkserver",
)


def executor(profile: Profile, assets: Sequence[dg.AssetsDefinition]) -> dg.ExecutorDefinition:
    """k8s: `k8s_job_executor`, one pod per step (one per partition of a sharded curated/<source> in a
    backfill that runs a run per partition), each with its asset's pod settings. Local: `LOCAL_EXECUTOR`."""
    if profile.kind != "k8s":
        return LOCAL_EXECUTOR
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
