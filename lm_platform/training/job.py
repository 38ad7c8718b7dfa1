"""The trainer's job for one stage of a recipe (a `TrainJob`, written as JSON next to the checkpoint), and
the command that runs it (a plain process, or torchrun for several processes)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lm_platform.paths import Layout
from lm_platform.recipe.schema import Recipe
from lm_platform.training.config import TrainJob

# The trainer's exit status after SIGTERM once its step checkpoint is written (EX_TEMPFAIL: run it again to
# resume); equal to `lm_platform.training.train.PREEMPTED_EXIT_CODE` (that module imports torch).
PREEMPTED_EXIT_CODE = 75
# How `train.Preempted` begins (the trainer logs it last before exiting 75).
PREEMPTED_MESSAGE = "stopped by SIGTERM after step"
_EXIT_75 = re.compile(rf"\b(?:code|exit code|exit_code)[ :=]*{PREEMPTED_EXIT_CODE}\b", re.IGNORECASE)


def preempted(error: BaseException | str) -> bool:
    """Whether a trainer failure is a preemption (exit status 75 after writing a checkpoint): a subprocess
    launcher's error names the exit status ("failed with code 75"); a pod's error (dagster_k8s names no
    exit code) carries the pod's last log lines, which end with the trainer's `Preempted` message."""
    text = str(error)
    return bool(_EXIT_75.search(text)) or PREEMPTED_MESSAGE in text


def make_job(recipe: Recipe, stage_name: str, layout: Layout) -> TrainJob:
    """The stage's `train` section plus where its data, tokenizer and outputs are and how its model starts.
    The stage's `blend` and `pack` sections stay out: they shape the data, which the trainer reads from the
    packed dataset, and they must not change the fingerprint a resume is matched on."""
    stage = recipe.stage(stage_name)
    if stage.init_from == "model":
        init = (
            {"kind": "pretrained", "path": recipe.model.base}
            if recipe.model.init == "pretrained"
            else {"kind": "scratch", "model": recipe.model.model_dump()}
        )
    else:
        init = {"kind": "pretrained", "path": str(layout.checkpoint(stage.init_from))}
    output = layout.checkpoint(stage.name)
    train = stage.train
    if stage.eval_every and not train.keep_every:
        # Step checkpoints the evaluations score (`eval_every`) are kept: keep_last never prunes them.
        train = train.model_copy(update={"keep_every": stage.eval_every})
    return TrainJob(
        recipe=recipe.name,
        stage=stage.name,
        dataset_dir=str(layout.dataset(stage.name)),
        tokenizer_dir=str(layout.tokenizer()),
        output_dir=str(output),
        run_dir=str(output.with_name(f"{output.name}.run")),
        init=init,
        model={"eeve_tied_rule": recipe.model.eeve_tied_rule},
        generation=recipe.generation.model_dump(),
        train=train,
    )


def trainer_command(job_file: str | Path, nproc_per_node: int = 1) -> list[str]:
    """`python -m lm_platform.training.train --job FILE`, through torchrun when several processes train."""
    entry = ["-m", "lm_platform.training.train", "--job", str(job_file)]
    if nproc_per_node == 1:
        return [sys.executable, *entry]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc_per_node}",
        *entry,
    ]
