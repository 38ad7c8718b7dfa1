"""The trainer's job description for one stage of a recipe (a plain JSON-able dict), and the command
that runs it (a plain process, or torchrun for several processes)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lm_platform.paths import Layout
from lm_platform.recipe.schema import Recipe
from lm_platform.training.config import TrainConfig, TrainJob


def make_job(recipe: Recipe, stage_name: str, layout: Layout) -> dict[str, Any]:
    stage = recipe.stage(stage_name)
    if stage.init_from == "model":
        init = (
            {"kind": "pretrained", "path": recipe.model.base}
            if recipe.model.init == "pretrained"
            else {"kind": "scratch", "model": recipe.model.model_dump()}
        )
    else:
        init = {"kind": "pretrained", "path": str(layout.checkpoint(stage.init_from))}
    # The stage's training settings (TrainConfig's fields); its blend and packing fields stay out.
    train = TrainConfig.model_validate(
        {k: v for k, v in stage.model_dump().items() if k in TrainConfig.model_fields}
    )
    output = layout.checkpoint(stage.name)
    job = TrainJob(
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
    return job.model_dump(mode="json")


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
