"""Trainer pieces that do not need a dataset: the schedules, the stage jobs, the launch command."""

from __future__ import annotations

import json

import pytest

from lm_platform.paths import Layout
from lm_platform.recipe import load_recipe
from lm_platform.recipe.training import GenerationConfig, ModelConfig
from lm_platform.training.config import PretrainedInit, ScratchInit, TrainConfig, TrainJob
from lm_platform.training.contract import TrainerLaunch
from lm_platform.training.job import make_job, make_launch
from lm_platform.training.train import lr_at

CFG = TrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=10, schedule="cosine")


def _with(**changes) -> TrainConfig:
    return CFG.model_copy(update=changes)


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 110, CFG) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lr_at(50, 100, _with(schedule="constant")) == 1.0
    lin = _with(schedule="linear", min_lr_ratio=0.0, warmup_steps=0)
    assert lr_at(0, 101, lin) == 1.0 and lr_at(50, 101, lin) == pytest.approx(0.5)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "wsd"])
@pytest.mark.parametrize(("total", "warmup"), [(110, 10), (7, 0), (3, 2), (1, 0)])
def test_decaying_schedules_reach_min_lr_on_the_last_step_that_runs(schedule, total, warmup):
    cfg = _with(schedule=schedule, warmup_steps=warmup)
    lrs = [lr_at(s, total, cfg) for s in range(total)]
    assert lrs[-1] == pytest.approx(0.1)  # lr x min_lr_ratio, on step total - 1
    assert min(lrs) == pytest.approx(0.1)


def test_stage_jobs_chain_checkpoints(tmp_path):
    recipe = load_recipe("demo")
    layout = Layout(tmp_path, recipe.name)
    main, anneal = make_job(recipe, "main", layout), make_job(recipe, "anneal", layout)
    assert isinstance(main.init, ScratchInit) and main.init.model == recipe.model
    assert anneal.init == PretrainedInit(path=str(layout.checkpoint("main")))
    assert anneal.train.lr == recipe.stage("anneal").train.lr == 5.0e-4
    assert main.generation == recipe.generation and main.model.eeve_tied_rule == recipe.model.eeve_tied_rule
    vi = load_recipe("vi")
    assert make_job(vi, "eeve_3", Layout(tmp_path, "vi")).init == PretrainedInit(
        path="HuggingFaceTB/SmolLM2-360M"
    )


# A job file as the platform wrote it before the job was typed (init, model and generation as mappings):
# the typed job reads it, and the run identity is made of the same mappings, so a run started then resumes.
UNTYPED_JOB = {
    "recipe": "demo",
    "stage": "main",
    "dataset_dir": "{tmp}/dataset/main",
    "tokenizer_dir": "{tmp}/tokenizer",
    "output_dir": "{tmp}/checkpoint/main",
    "run_dir": "{tmp}/checkpoint/main.run",
    "model": {"eeve_tied_rule": "input"},
    "generation": {"prompts": ["Xin chào"], "max_new_tokens": 8},
    "train": {"lr": 0.003},
}


def test_a_job_written_before_the_typed_job_keeps_its_resume_identity(tmp_path):
    from lm_platform.training.checkpoint import run_identity

    raw = json.loads(json.dumps(UNTYPED_JOB).replace("{tmp}", str(tmp_path)))
    raw["init"] = {"kind": "scratch", "model": load_recipe("demo").model.model_dump(mode="json")}
    (tmp_path / "dataset" / "main").mkdir(parents=True)
    (tmp_path / "dataset" / "main" / "index.json").write_text("{}")
    path = tmp_path / "main.job.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    job = TrainJob.read(path)
    identity = run_identity(job, 1)
    assert identity["init"] == raw["init"] and identity["model"] == raw["model"]
    # Sampling settings the old file left out come from GenerationConfig, the one place of their defaults.
    assert (
        (job.generation.temperature, job.generation.top_p)
        == (0.8, 0.95)
        == (
            GenerationConfig().temperature,
            GenerationConfig().top_p,
        )
    )
    assert job.generation.max_new_tokens == 8


def test_a_bad_job_names_the_field(tmp_path):
    raw = json.loads(json.dumps(UNTYPED_JOB).replace("{tmp}", str(tmp_path)))
    raw["init"] = {"kind": "scratch", "model": {"hidden_size": 64, "num_heads": 5}}
    with pytest.raises(ValueError, match=r"init\.scratch\.model"):
        TrainJob.model_validate(raw)
    raw["init"] = {"kind": "pretrained"}
    with pytest.raises(ValueError, match=r"init\.pretrained\.path"):
        TrainJob.model_validate(raw)
    raw["init"] = {"kind": "pretrained", "path": "x"}
    raw["model"] = {"eeve_tied_rule": "inputs"}
    with pytest.raises(ValueError, match=r"model\.eeve_tied_rule"):
        TrainJob.model_validate(raw)
    # Left out, the rule is the recipe's default (ModelConfig's, the one place it is written).
    raw["model"] = {}
    assert TrainJob.model_validate(raw).model.eeve_tied_rule == ModelConfig().eeve_tied_rule


def test_vi_eeve_jobs_carry_policy_tied_rule_and_run_dir(tmp_path):
    vi = load_recipe("vi")
    layout = Layout(tmp_path, "vi")
    jobs = {s.name: make_job(vi, s.name, layout).model_dump(mode="json") for s in vi.stages}
    assert [jobs[s]["train"]["trainable"] for s in ("eeve_3", "eeve_4", "eeve_6", "eeve_7")] == [
        "new_embeddings",
        "output_embeddings",
        "all",
        "all_but_embeddings",
    ]
    assert jobs["eeve_4"]["init"] == {"kind": "pretrained", "path": str(layout.checkpoint("eeve_3"))}
    assert jobs["eeve_3"]["model"]["eeve_tied_rule"] == vi.model.eeve_tied_rule
    assert jobs["eeve_3"]["run_dir"] == str(layout.checkpoint("eeve_3")) + ".run"
    assert jobs["anneal"]["train"]["min_lr_ratio"] == 0.0


def test_wsd_schedule_is_flat_then_decays_to_the_floor():
    cfg = _with(schedule="wsd", wsd_decay_fraction=0.2, min_lr_ratio=0.0)
    lrs = [lr_at(s, 110, cfg) for s in range(110)]
    assert all(lr == 1.0 for lr in lrs[10:90])
    assert all(a > b for a, b in zip(lrs[89:], lrs[90:], strict=False))
    assert lrs[-1] == pytest.approx(0.0)


def test_one_launch_value_gives_the_command_the_launcher_arguments_and_the_pipes_extras(tmp_path):
    # The launcher runs the trainer directly or through torchrun (test_preemption*.py).
    launch = make_launch(load_recipe("demo"), "main", Layout(tmp_path, "demo"))
    assert launch == TrainerLaunch(str(tmp_path / "demo" / "checkpoint" / "main.job.json"), 1, "main")
    cmd = launch.command("/opt/python")
    assert cmd == ["/opt/python", "-m", "lm_platform.training.launch", *launch.args()]
    assert TrainerLaunch.parse(launch.args()) == launch  # what the launcher reads is what was launched
    assert TrainerLaunch.from_extras(launch.as_extras()) == launch  # what the k8s trainer receives
    two = TrainerLaunch("j.json", 2, "main")
    assert "--nproc_per_node=2" in two.command() and "--job" in two.args()
    with pytest.raises(ValueError, match="nproc_per_node"):
        TrainerLaunch("j.json", 0, "main")
    with pytest.raises(ValueError, match="no trainer launch"):
        TrainerLaunch.from_extras({})


def test_stage_job_carries_training_settings_not_data_settings(tmp_path):
    from lm_platform.training.config import TrainConfig

    job = make_job(load_recipe("demo"), "main", Layout(tmp_path, "demo"))
    path = tmp_path / "main.job.json"
    path.write_text(job.model_dump_json(), encoding="utf-8")
    data = TrainJob.read(path).model_dump(mode="json")
    # The job's train section is exactly the stage's `train` (TrainConfig), nothing of blend or pack.
    assert data["train"] == TrainConfig(**data["train"]).model_dump(mode="json")
    assert set(data["train"]) == set(TrainConfig.model_fields)
    assert data["train"]["lr"] == 3.0e-3 and data["train"]["checkpoint_every"] == 25
    assert not {"mixture", "seq_len", "groups", "upsample", "pack_workers"} & set(data["train"])
    assert "grad_clip" in data["train"]


def test_steps_the_evaluations_score_are_kept_by_the_trainer(tmp_path):
    recipe = load_recipe("demo")
    raw = recipe.model_dump(mode="json")
    raw["stages"][0]["eval_every"] = 25  # demo main: checkpoint_every 25
    from lm_platform.recipe.schema import Recipe

    job = make_job(Recipe.model_validate(raw), "main", Layout(tmp_path, "demo"))
    assert job.train.keep_every == 25
    assert (
        make_job(recipe, "main", Layout(tmp_path, "demo")).train.keep_every
        == recipe.stages[0].train.keep_every
    )
