"""Automation: sensors and schedules (what starts runs without a person), one factory per trigger, each
taking the recipe. `build` returns them for `build_definitions`.

- `<recipe>_model_versions` (sensor, running): registers new model versions (stage exports, step
  checkpoints the stages keep with `eval_every` while a run goes on, adapters, merges) as partitions of
  `<recipe>_models`.
- `<recipe>_nightly_evaluation` (schedule): requests every (benchmark, version) partition not scored
  yet and nothing already scored. Running by default in the k8s profile; locally stopped unless
  `LM_PLATFORM_EVAL_SCHEDULE=running`; cron from `LM_PLATFORM_EVAL_CRON` (default 02:00).
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg

from lm_platform.defs.resources import LMStorage
from lm_platform.recipe.schema import Recipe

SCHEDULE_ENV = "LM_PLATFORM_EVAL_SCHEDULE"
CRON_ENV = "LM_PLATFORM_EVAL_CRON"


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
        from lm_platform.evaluation.versions import discover_versions

        base = storage.layout(recipe.name).base
        new = discover_versions(
            recipe, base, set(context.instance.get_dynamic_partitions(recipe.versions_name))
        )
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
    recipe: Recipe, instance: dg.DagsterInstance, prefix: Sequence[str] = ()
) -> list[dg.RunRequest]:
    """One run request per (benchmark, registered version) without a materialization."""
    from lm_platform.evaluation.versions import parse_key

    versions = list(instance.get_dynamic_partitions(recipe.versions_name))
    requests = []
    for ev in recipe.evaluations:
        key = _eval_key(ev.name, prefix)
        done = instance.get_materialized_partitions(key)
        for v in versions:
            p = parse_key(v)
            if v in done or (ev.stage and p.kind in ("stage", "step") and p.name != ev.stage):
                continue
            requests.append(dg.RunRequest(run_key=f"{ev.name}:{v}", partition_key=v, asset_selection=[key]))
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

    def _nightly(context: dg.ScheduleEvaluationContext):
        requests = unscored_requests(recipe, context.instance, prefix)
        return requests or dg.SkipReason("every registered version is scored on every benchmark")

    return dg.schedule(
        name=f"{recipe.name}_nightly_evaluation",
        cron_schedule=os.environ.get(CRON_ENV, "0 2 * * *"),
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
        description="Scores every (benchmark, model version) not scored yet; nothing already scored",
    )(_nightly)


def build(recipe: Recipe, prefix: Sequence[str] = (), running: bool = False) -> Automation:
    """The sensors and schedules of a recipe (asset keys under `prefix`; `running`: the profile runs
    schedules by default)."""
    schedules = [nightly_schedule(recipe, prefix, running)] if recipe.evaluations else []
    return Automation(sensors=[versions_sensor(recipe)], schedules=schedules)
