"""Evaluation assets: model versions as dynamic partitions, per-version scores, the regression check, the
nightly schedule and the leaderboard, on a persistent test instance with tiny models written by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from lm_platform.defs import automation, evaluation
from lm_platform.defs.resources import LMStorage
from lm_platform.evaluation.versions import parse_key, predecessor
from lm_platform.paths import Layout
from lm_platform_tests import eval_fixtures as fx
from lm_platform_tests.conftest import write_demo_variant


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _recipe(tmp_path: Path, planted: Path):
    from lm_platform.recipe import load_recipe

    def mutate(raw):
        raw["stages"][0]["eval_every"] = 50
        raw["evaluations"] = [
            {"name": "perplexity", "kind": "perplexity", "location": raw["evaluations"][0]["location"]},
            {"name": "planted", "kind": "multiple_choice", "location": str(planted), "tolerance": 0.1},
        ]

    return load_recipe(str(write_demo_variant(tmp_path, mutate)))


def _write_step(run_dir: Path, step: int, model, tok) -> Path:
    d = run_dir / f"step_{step:08d}"
    fx.save_model(model, tok, d)
    (d / "trainer_state.json").write_text(json.dumps({"step": step, "tokens_seen": step * 1000}))
    return d


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A storage base with `main` exported (a random model), step 25 and 50 of its run (50 trained on the
    planted answers), and a persistent instance."""
    tmp = tmp_path_factory.mktemp("eval_assets")
    import torch

    torch.set_num_threads(1)
    items = fx.planted_items(24, seed=0)
    planted = tmp / "planted.jsonl"
    planted.write_text(
        "".join(
            json.dumps({"id": i.id, "question": i.question, "choices": list(i.choices), "answer": i.answer})
            + "\n"
            for i in items
        )
    )
    recipe = _recipe(tmp, planted)
    storage = tmp / "data"
    base = storage / recipe.name
    tok = fx.tokenizer()
    trained = fx.train_on_answers(fx.tiny_model(tok, seed=0), tok, items, steps=40)
    run_dir = base / "checkpoint" / "main.run"
    _write_step(run_dir, 25, fx.tiny_model(tok, seed=9), tok)
    _write_step(run_dir, 50, trained, tok)
    main = fx.save_model(fx.tiny_model(tok, seed=7), tok, base / "checkpoint" / "main")  # a worse export
    (main / "metrics.json").write_text(json.dumps({"tokens_seen": 60000}))
    (tmp / "home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp / "home"))
    return recipe, storage, base, instance


def _materialize(recipe, storage, instance, key: str, version: str):
    return dg.materialize(
        evaluation.build(recipe),
        selection=[dg.AssetKey(["eval", key])],
        partition_key=version,
        instance=instance,
        resources={"storage": LMStorage(root=str(storage))},
        raise_on_error=False,
    )


def test_version_keys_and_predecessors():
    assert parse_key("main@step_2000").step == 2000 and parse_key("adapter/chat").kind == "adapter"
    with pytest.raises(ValueError, match="adapter/<name> or merged/<name>"):
        parse_key("lora/x")
    init = {"main": "model", "anneal": "main", "sft": "main"}
    versions = ["main@step_50", "main@step_100", "main", "anneal@step_20", "anneal", "sft"]
    assert predecessor("main@step_100", versions, init) == "main@step_50"
    assert predecessor("main", versions, init) == "main@step_100"
    assert predecessor("anneal@step_20", versions, init) == "main"
    assert predecessor("anneal", versions, init) == "anneal@step_20"
    assert predecessor("sft", versions, init) == "main"  # its own chain, not anneal's
    assert predecessor("main@step_50", versions, init) is None
    assert predecessor("merged/m", versions, init) is None


def test_new_checkpoints_appear_as_partitions_and_survive_pruning(world):
    recipe, storage, base, instance = world
    sensor = automation.versions_sensor(recipe)
    ctx = dg.build_sensor_context(instance=instance, resources={"storage": LMStorage(root=str(storage))})
    result = sensor(ctx)
    (request,) = result.dynamic_partitions_requests
    assert request.partitions_def_name == "demo_models"
    assert sorted(request.partition_keys) == ["main", "main@step_50"]  # step 25 is not a multiple of 50
    instance.add_dynamic_partitions("demo_models", list(request.partition_keys))
    # the trainer prunes its resume checkpoint: the registered version keeps its own snapshot
    shutil.rmtree(base / "checkpoint" / "main.run" / "step_00000050")
    assert (base / "models" / "main@step_50" / "model.safetensors").is_file()
    # a step written while the run goes on is found on the next tick
    tok = fx.tokenizer()
    _write_step(base / "checkpoint" / "main.run", 100, fx.tiny_model(tok, seed=4), tok)
    assert evaluation.register_versions(instance, recipe, Layout(storage, recipe.name)) == ["main@step_100"]
    assert isinstance(sensor(ctx), dg.SkipReason)
    instance.delete_dynamic_partition("demo_models", "main@step_100")
    shutil.rmtree(base / "models" / "main@step_100")
    shutil.rmtree(base / "checkpoint" / "main.run" / "step_00000100")


def test_scores_regression_check_schedule_and_leaderboard(world):
    recipe, storage, base, instance = world
    evaluation.register_versions(instance, recipe, Layout(storage, recipe.name))
    assert set(instance.get_dynamic_partitions("demo_models")) == {"main", "main@step_50"}

    res = _materialize(recipe, storage, instance, "planted", "main@step_50")
    assert res.success
    (mat,) = res.asset_materializations_for_node("eval__planted")
    assert mat.metadata["score"].value >= 0.9
    assert mat.metadata["tokens_seen"].value == 50000
    assert "per_subject" in mat.metadata
    (check,) = res.get_asset_check_evaluations()
    assert check.passed  # no predecessor in the chain

    # The schedule requests exactly the unscored (benchmark, version) pairs.
    assets = evaluation.build(recipe)
    schedule = automation.nightly_schedule(recipe)
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    repo = dg.Definitions(
        assets=assets, schedules=[schedule], resources={"storage": LMStorage(root=str(storage))}
    ).get_repository_def()

    def tick():
        return schedule.evaluate_tick(
            dg.build_schedule_context(
                instance=instance, repository_def=repo, resources={"storage": LMStorage(root=str(storage))}
            )
        ).run_requests

    requests = tick()
    got = {(tuple(r.asset_selection[0].path), r.partition_key) for r in requests}
    assert got == {
        (("eval", "perplexity"), "main"),
        (("eval", "perplexity"), "main@step_50"),
        (("eval", "planted"), "main"),
    }

    # A planted regression: the export (random weights) after the step trained on the answers.
    res = _materialize(recipe, storage, instance, "planted", "main")
    assert res.success
    (mat,) = res.asset_materializations_for_node("eval__planted")
    assert mat.metadata["previous_version"].value == "main@step_50"
    assert mat.metadata["delta"].value < -0.1
    (check,) = res.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR

    assert _materialize(recipe, storage, instance, "perplexity", "main").success
    requests = tick()
    assert {(tuple(r.asset_selection[0].path), r.partition_key) for r in requests} == {
        (("eval", "perplexity"), "main@step_50")
    }

    res = dg.materialize(
        assets,
        selection=[evaluation.LEADERBOARD],
        instance=instance,
        resources={"storage": LMStorage(root=str(storage))},
    )
    (mat,) = res.asset_materializations_for_node("eval__leaderboard")
    table = mat.metadata["leaderboard"].value
    assert "| main@step_50 | 50000 |" in table and "| main | 60000 |" in table
    assert mat.metadata["plot"].value.startswith("![score vs tokens seen](data:image/png;base64,")
    from lm_platform.evaluation.leaderboard import leaderboard_rows

    rows = leaderboard_rows(
        [e.name for e in recipe.evaluations], ["main", "anneal"], Layout(storage, recipe.name)
    )
    assert [r["version"] for r in rows] == ["main@step_50", "main"]
    assert "perplexity" in rows[1] and "perplexity" not in rows[0]
