"""Automation: sensors and schedules (what starts runs without a person), one factory per trigger, each
taking the recipe. `build` returns them for `defs/deployment.py`, which assembles the Definitions.

- `train_<location>_<stage>` (automation condition sensor, one per stage; deployments only):
  `checkpoint/<stage>` carries `training_condition` (trains on a new data version of its dataset or
  init_from checkpoint, `with_training_automation`); each run is tagged with its recipe and stage.

- `<recipe>_model_versions` (sensor, running): registers new model versions (stage exports, step
  checkpoints the stages keep with `eval_every` while a run goes on, adapters, merges) as partitions of
  `<recipe>_models`.
- `<recipe>_nightly_evaluation` (schedule): requests every (benchmark, version) partition without a
  current score (none yet, or a score of other weights: the version's stage was retrained since) and
  nothing whose score is of the weights the version names now. Running by default in the k8s profile; locally stopped unless
  `LM_PLATFORM_EVAL_SCHEDULE=running`; cron from `LM_PLATFORM_EVAL_CRON` (default 02:00).
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg

from lm_platform.defs.resources import LMStorage
from lm_platform.evaluation.versions import (
    current_result,
    discover_versions,
    parse_key,
    supersede_stale,
    version_weights,
)
from lm_platform.paths import Layout
from lm_platform.recipe.schema import Recipe

SCHEDULE_ENV = "LM_PLATFORM_EVAL_SCHEDULE"
CRON_ENV = "LM_PLATFORM_EVAL_CRON"
RECIPE_TAG = "lm-platform.dev/recipe"
STAGE_TAG = "lm-platform.dev/stage"


@dataclass(frozen=True)
class Automation:
    """What the automation room adds to the definitions."""

    sensors: list[dg.SensorDefinition] = field(default_factory=list)
    schedules: list[dg.ScheduleDefinition] = field(default_factory=list)


def _eval_key(name: str, prefix: Sequence[str] = ()) -> dg.AssetKey:
    return dg.AssetKey([*prefix, "eval", name])


def versions_sensor(recipe: Recipe) -> dg.SensorDefinition:
    """Watches the stages' checkpoint directories, adapters and merges; registers new model versions."""

    def _sensor(context: dg.SensorEvaluationContext, storage: LMStorage):
        layout = storage.layout(recipe.name)
        known = list(context.instance.get_dynamic_partitions(recipe.versions_name))
        for bench, version, where in supersede_stale(layout, [ev.name for ev in recipe.evaluations], known):
            context.log.info(f"{bench} of '{version}': scored weights it no longer names; moved to {where}")
        new = discover_versions(recipe, layout, set(known))
        if not new:
            return dg.SkipReason("no new model versions")
        request = dg.DynamicPartitionsDefinition(name=recipe.versions_name).build_add_request(new)
        return dg.SensorResult(dynamic_partitions_requests=[request])

    return dg.sensor(
        name=f"{recipe.name}_model_versions",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Registers new model versions (stage exports, kept step checkpoints, adapters, merges)",
    )(_sensor)


def unscored_requests(
    recipe: Recipe, instance: dg.DagsterInstance, prefix: Sequence[str] = (), layout: Layout | None = None
) -> list[dg.RunRequest]:
    """One run request per (benchmark, registered version) without a current score: with the storage
    `layout`, a version is scored when its stored result recorded the weights the version names now (the run
    key carries those weights, so a retrained version is requested again); without it, when the partition
    has a materialization."""
    versions = list(instance.get_dynamic_partitions(recipe.versions_name))
    requests = []
    for ev in recipe.evaluations:
        key = _eval_key(ev.name, prefix)
        done = instance.get_materialized_partitions(key) if layout is None else set()
        for v in versions:
            p = parse_key(v)
            if ev.stage and p.kind in ("stage", "step") and p.name != ev.stage:
                continue
            if layout is None:
                if v not in done:
                    requests.append(
                        dg.RunRequest(run_key=f"{ev.name}:{v}", partition_key=v, asset_selection=[key])
                    )
                continue
            weights = version_weights(layout, v)
            if weights is None or current_result(layout, ev.name, v) is not None:
                continue  # no model there now (nothing to score), or scored on these weights
            requests.append(
                dg.RunRequest(run_key=f"{ev.name}:{v}:{weights}", partition_key=v, asset_selection=[key])
            )
    return requests


def nightly_schedule(
    recipe: Recipe, prefix: Sequence[str] = (), running: bool = False
) -> dg.ScheduleDefinition:
    """Running when `running` (the k8s profile) or LM_PLATFORM_EVAL_SCHEDULE=running; else stopped."""
    running = running or os.environ.get(SCHEDULE_ENV, "stopped").lower() == "running"
    job = dg.define_asset_job(
        f"{recipe.name}_score_versions",
        selection=dg.AssetSelection.assets(*[_eval_key(ev.name, prefix) for ev in recipe.evaluations]),
    )

    def _nightly(context: dg.ScheduleEvaluationContext, storage: LMStorage):
        requests = unscored_requests(recipe, context.instance, prefix, storage.layout(recipe.name))
        return requests or dg.SkipReason("every registered version is scored on every benchmark")

    return dg.schedule(
        name=f"{recipe.name}_nightly_evaluation",
        cron_schedule=os.environ.get(CRON_ENV, "0 2 * * *"),
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
        description="Scores every (benchmark, model version) without a score of the version's current "
        "weights; nothing already scored on them",
    )(_nightly)


def _new_inputs(dataset: dg.AssetKey, init: dg.AssetKey | None) -> dg.AutomationCondition:
    """A new data version of the dataset or the init_from checkpoint, not handled yet (the stage was not
    requested or materialized since)."""
    watched = dg.AssetSelection.assets(dataset, *([init] if init else []))
    return (
        dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed())
        .allow(watched)
        .since_last_handled()
    )


def training_condition(
    dataset: dg.AssetKey,
    init: dg.AssetKey | None,
    parent_dataset: dg.AssetKey | None = None,
    parent_init: dg.AssetKey | None = None,
) -> dg.AutomationCondition:
    """Train when the stage's dataset (or its init_from checkpoint) has a new data version: once per
    change (`since_last_handled`), not while an input is being rebuilt or the stage is already training,
    and never from a rematerialization with an identical data version.

    A stage that starts from an earlier stage's checkpoint waits while that parent has new inputs of its
    own (its dataset or its own init_from changed and it has not materialized since) or is training: when a
    data refresh changes both stages' datasets in one tick, the later stage trains once, from the parent's
    new checkpoint, not from the old one and then again."""
    # Not `will_be_requested`: a later stage trains in its own run (own tags, own GPU pool slot) once the
    # earlier stage's new checkpoint has landed, on a later tick.
    cond = (
        _new_inputs(dataset, init)
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    )
    if init is not None and parent_dataset is not None:
        # Evaluated on the parent: an input of it changed since it last materialized (requests do not
        # count: the stage keeps waiting until the parent's new checkpoint has actually landed).
        parent_watched = dg.AssetSelection.assets(parent_dataset, *([parent_init] if parent_init else []))
        parent_pending = (
            dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed())
            .allow(parent_watched)
            .since(dg.AutomationCondition.newly_updated())
            .with_label("parent_has_new_inputs")
        )
        cond = cond & ~dg.AutomationCondition.any_deps_match(
            parent_pending | dg.AutomationCondition.in_progress()
        ).allow(dg.AssetSelection.assets(init)).with_label("parent_settled")
    return cond.with_label("train_on_new_data")


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
    stages = stage_keys(recipe, prefix)
    by_key = {v["checkpoint"]: v for v in stages.values()}
    out = []
    for a in assets:
        hit = [k for k in a.keys if k in by_key]
        if hit:
            keys = by_key[hit[0]]
            parent = by_key.get(keys["init"]) if keys["init"] is not None else None
            cond = training_condition(
                keys["dataset"],
                keys["init"],
                parent["dataset"] if parent else None,
                parent["init"] if parent else None,
            )
            a = a.with_attributes(automation_condition={hit[0]: cond})
        out.append(a)
    return out


def training_sensors(
    recipe: Recipe, prefix: Sequence[str] = (), running: bool = False
) -> list[dg.AutomationConditionSensorDefinition]:
    """One automation condition sensor per stage, so each training run is tagged with its recipe and
    stage; running when `running` (the k8s profile), else stopped."""
    status = dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
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


def build(
    recipe: Recipe, prefix: Sequence[str] = (), running: bool = False, training: bool = False
) -> Automation:
    """The sensors and schedules of a recipe (asset keys under `prefix`; `running`: the profile runs
    schedules and training sensors by default; `training`: add the training sensors, whose checkpoint
    assets need `with_training_automation`, as deployments do)."""
    schedules = [nightly_schedule(recipe, prefix, running)] if recipe.evaluations else []
    sensors = [versions_sensor(recipe)] + (training_sensors(recipe, prefix, running) if training else [])
    return Automation(sensors=sensors, schedules=schedules)
