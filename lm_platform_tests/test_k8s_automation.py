"""Training automation: a new data version of dataset/<stage> (or its init_from checkpoint) requests
exactly one run of checkpoint/<stage>, tagged with recipe and stage; evaluating again requests none; an
identical data version requests none."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from lm_platform.defs.automation import RECIPE_TAG, STAGE_TAG
from lm_platform.defs.deployment import build_deployment_definitions
from lm_platform.deployment.profile import Profile, load_profile

CKPT_MAIN = dg.AssetKey(["checkpoint", "main"])
CKPT_ANNEAL = dg.AssetKey(["checkpoint", "anneal"])


@pytest.fixture(scope="module")
def defs(demo_recipe):
    return build_deployment_definitions(demo_recipe, Profile(), prefix=[])


def _materialize(instance, key: dg.AssetKey, version: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=key, tags={DATA_VERSION_TAG: version})
    )


def _seed(instance, defs) -> None:
    """Everything materialized once (so no dependency is missing), then a first tick."""
    for key in defs.get_repository_def().asset_graph.get_all_asset_keys():
        _materialize(instance, key, "v0")


def _requested(result) -> list[dg.AssetKey]:
    return sorted(r.key for r in result.results if r.true_subset.size)


def test_new_dataset_version_requests_exactly_one_training_run(defs):
    instance = dg.DagsterInstance.ephemeral()
    _seed(instance, defs)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0

    _materialize(instance, dg.AssetKey(["dataset", "main"]), "v1")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert _requested(result) == [CKPT_MAIN]
    assert result.total_requested == 1

    again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert again.total_requested == 0


def test_identical_data_version_requests_nothing(defs):
    instance = dg.DagsterInstance.ephemeral()
    _seed(instance, defs)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    _materialize(instance, dg.AssetKey(["dataset", "main"]), "v0")  # rematerialized, same content
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert result.total_requested == 0


def test_dataset_and_init_checkpoint_updated_together_give_one_run(defs):
    instance = dg.DagsterInstance.ephemeral()
    _seed(instance, defs)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    _materialize(instance, dg.AssetKey(["dataset", "anneal"]), "v1")
    _materialize(instance, CKPT_MAIN, "v1")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert _requested(result) == [CKPT_ANNEAL]
    assert result.total_requested == 1


def test_tokenizer_alone_does_not_launch_training(defs):
    """Only the dataset and init checkpoint are watched: a tokenizer change reaches training through the
    rebuilt dataset, not directly."""
    instance = dg.DagsterInstance.ephemeral()
    _seed(instance, defs)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    _materialize(instance, dg.AssetKey("tokenizer"), "v1")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert result.total_requested == 0


def test_one_sensor_per_stage_tags_recipe_and_stage_and_status_follows_profile(demo_recipe):
    local = build_deployment_definitions(demo_recipe, Profile(), prefix=[]).get_repository_def()
    k8s = build_deployment_definitions(demo_recipe, load_profile("k8s"), prefix=[]).get_repository_def()
    for repo, status in ((local, dg.DefaultSensorStatus.STOPPED), (k8s, dg.DefaultSensorStatus.RUNNING)):
        sensors = {s.name: s for s in repo.sensor_defs}
        assert set(sensors) == {"train_demo_main", "train_demo_anneal", "demo_model_versions"}
        (nightly,) = repo.schedule_defs  # the evaluation schedule follows the profile too
        assert nightly.name == "demo_nightly_evaluation"
        assert nightly.default_status.value == status.value
        for stage in ("main", "anneal"):
            sensor = sensors[f"train_demo_{stage}"]
            assert sensor.default_status == status
            assert sensor.run_tags == {RECIPE_TAG: "demo", STAGE_TAG: stage}
            assert sensor.asset_selection.resolve(repo.asset_graph) == {dg.AssetKey(["checkpoint", stage])}


def test_both_stage_datasets_changed_in_one_tick_train_anneal_once_from_the_new_main(defs):
    """A data refresh gives dataset/main and dataset/anneal new versions in one tick: main trains; anneal
    waits (not from the old main) while main is requested and running, then trains once from the new
    main."""
    instance = dg.DagsterInstance.ephemeral()
    _seed(instance, defs)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    _materialize(instance, dg.AssetKey(["dataset", "main"]), "v1")
    _materialize(instance, dg.AssetKey(["dataset", "anneal"]), "v1")
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert _requested(tick) == [CKPT_MAIN]
    # main's run has not landed yet (queued, failed, or still training): anneal keeps waiting
    for _ in range(2):
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert tick.total_requested == 0
    _materialize(instance, CKPT_MAIN, "v1")  # the new main checkpoint
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert _requested(tick) == [CKPT_ANNEAL]
    assert tick.total_requested == 1
    _materialize(instance, CKPT_ANNEAL, "v1")
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert tick.total_requested == 0
