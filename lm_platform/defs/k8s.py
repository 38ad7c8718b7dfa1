"""The deployment profile in Dagster terms: the trainer resource (PipesSubprocessClient locally,
PipesK8sClient on Kubernetes), the executor (in-process locally, `k8s_job_executor` with per-asset step
pods on Kubernetes), the automation that launches training, and the per-recipe key prefix of
multi-recipe workspaces.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster_k8s import PipesK8sClient, k8s_job_executor

from lm_platform.deployment.pods import trainer_pod_labels, trainer_pod_spec
from lm_platform.deployment.profile import Profile
from lm_platform.recipe.schema import Recipe

KEY_PREFIX_ENV = "LM_PLATFORM_KEY_PREFIX"
RECIPE_TAG = "lm-platform.dev/recipe"
STAGE_TAG = "lm-platform.dev/stage"


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


def _job_file(command: Sequence[str]) -> str:
    args = list(command)
    if "--job" not in args or args.index("--job") + 1 >= len(args):
        raise ValueError(f"not a trainer command (no --job FILE): {args}")
    return args[args.index("--job") + 1]


def trainer_resource(profile: Profile, recipe: Recipe) -> dg.PipesSubprocessClient | K8sTrainer:
    """Local: a subprocess. k8s: a pod per stage run."""
    if profile.kind == "k8s":
        return K8sTrainer(profile, recipe)
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


def training_condition(dataset: dg.AssetKey, init: dg.AssetKey | None) -> dg.AutomationCondition:
    """Train when the stage's dataset (or its init_from checkpoint) has a new data version: once per
    change (`since_last_handled`), not while an input is being rebuilt or the stage is already training,
    and never from a rematerialization with an identical data version."""
    watched = dg.AssetSelection.assets(dataset, *([init] if init else []))
    # Not `will_be_requested`: a later stage trains in its own run (own tags, own GPU pool slot) once the
    # earlier stage's new checkpoint has landed, on the next tick.
    changed = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed()).allow(
        watched
    )
    return (
        changed.since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("train_on_new_data")


def stage_keys(recipe: Recipe, prefix: Sequence[str] = ()) -> dict[str, dict[str, dg.AssetKey | None]]:
    """Per stage: its checkpoint, dataset and init_from checkpoint keys (with the location's prefix)."""
    p = list(prefix)
    return {
        s.name: {
            "checkpoint": dg.AssetKey([*p, "checkpoint", s.name]),
            "dataset": dg.AssetKey([*p, "dataset", s.name]),
            "init": None if s.init_from == "model" else dg.AssetKey([*p, "checkpoint", s.init_from]),
        }
        for s in recipe.stages
    }


def with_training_automation(
    assets: Sequence[dg.AssetsDefinition], recipe: Recipe, prefix: Sequence[str] = ()
) -> list[dg.AssetsDefinition]:
    """The checkpoint assets with `training_condition` attached; the rest unchanged."""
    by_key = {v["checkpoint"]: v for v in stage_keys(recipe, prefix).values()}
    out = []
    for a in assets:
        hit = [k for k in a.keys if k in by_key]
        if hit:
            keys = by_key[hit[0]]
            a = a.with_attributes(
                automation_condition={hit[0]: training_condition(keys["dataset"], keys["init"])}
            )
        out.append(a)
    return out


def training_sensors(
    recipe: Recipe, profile: Profile, prefix: Sequence[str] = ()
) -> list[dg.AutomationConditionSensorDefinition]:
    """One automation condition sensor per stage, so each training run is tagged with its recipe and
    stage; running by default in the k8s profile, stopped locally."""
    status = dg.DefaultSensorStatus.RUNNING if profile.sensors_running else dg.DefaultSensorStatus.STOPPED
    loc = "_".join(prefix) or recipe.name
    return [
        dg.AutomationConditionSensorDefinition(
            name=f"train_{loc}_{stage}".replace("-", "_"),
            target=dg.AssetSelection.assets(keys["checkpoint"]),
            run_tags={RECIPE_TAG: recipe.name, STAGE_TAG: stage},
            default_status=status,
            description=f"Launches checkpoint/{stage} of recipe '{recipe.name}' when its dataset or "
            "init_from checkpoint has a new data version",
        )
        for stage, keys in stage_keys(recipe, prefix).items()
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
