"""Trainer pieces that do not need a dataset: the schedule, the stage job, refusing unknown policies."""

from __future__ import annotations

import pytest

from lm_platform.paths import Layout
from lm_platform.recipe import load_recipe
from lm_platform.training.job import make_job
from lm_platform.training.train import Reporter, lr_at, train

CFG = {"lr": 1.0, "min_lr_ratio": 0.1, "warmup_steps": 10, "schedule": "cosine"}


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 110, CFG) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lr_at(110, 110, CFG) == pytest.approx(0.1)
    assert lr_at(50, 100, {**CFG, "schedule": "constant"}) == 1.0
    lin = {**CFG, "schedule": "linear", "min_lr_ratio": 0.0, "warmup_steps": 0}
    assert lr_at(50, 100, lin) == pytest.approx(0.5)


def test_stage_jobs_chain_checkpoints(tmp_path):
    recipe = load_recipe("demo")
    layout = Layout(tmp_path, recipe.name)
    main, anneal = make_job(recipe, "main", layout), make_job(recipe, "anneal", layout)
    assert main["init"]["kind"] == "scratch" and main["init"]["model"]["hidden_size"] == 128
    assert anneal["init"] == {"kind": "pretrained", "path": str(layout.checkpoint("main"))}
    assert anneal["train"]["lr"] == recipe.stage("anneal").lr
    vi = load_recipe("vi")
    assert make_job(vi, "eeve_3", Layout(tmp_path, "vi"))["init"] == {
        "kind": "pretrained",
        "path": "HuggingFaceTB/SmolLM2-360M",
    }


def test_trainer_refuses_policies_it_does_not_implement(tmp_path):
    vi = load_recipe("vi")
    job = make_job(vi, "eeve_3", Layout(tmp_path, "vi"))
    with pytest.raises(NotImplementedError, match="trainable policy 'new_embeddings'"):
        train(job, Reporter())
