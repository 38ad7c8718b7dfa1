"""The trainer's job description for one stage of a recipe: a plain JSON-able dict."""

from __future__ import annotations

from typing import Any

from lm_platform.paths import Layout
from lm_platform.recipe.schema import Recipe


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
    train = stage.model_dump(exclude={"name", "mixture", "target_tokens", "init_from", "val_fraction"})
    return {
        "recipe": recipe.name,
        "stage": stage.name,
        "dataset_dir": str(layout.dataset(stage.name)),
        "tokenizer_dir": str(layout.tokenizer()),
        "output_dir": str(layout.checkpoint(stage.name)),
        "init": init,
        "train": train,
    }
