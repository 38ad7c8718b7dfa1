"""The trainer's job for one stage of a recipe (a `TrainJob`, written as JSON next to the checkpoint) and
its launch (`training.contract.TrainerLaunch`: that job file, the stage's processes, the stage)."""

from __future__ import annotations

from lm_platform.paths import Layout
from lm_platform.recipe.schema import Recipe
from lm_platform.training.config import JobModel, PretrainedInit, ScratchInit, TrainJob
from lm_platform.training.contract import TrainerLaunch


def make_job(recipe: Recipe, stage_name: str, layout: Layout) -> TrainJob:
    """The stage's `train` section plus where its data, tokenizer and outputs are and how its model starts.
    The stage's `blend` and `pack` sections stay out: they shape the data, which the trainer reads from the
    packed dataset, and they must not change the fingerprint a resume is matched on."""
    stage = recipe.stage(stage_name)
    if stage.init_from == "model":
        init = (
            PretrainedInit(path=recipe.model.base)
            if recipe.model.init == "pretrained"
            else ScratchInit(model=recipe.model)
        )
    else:
        init = PretrainedInit(path=str(layout.checkpoint(stage.init_from)))
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
        run_dir=str(layout.run_dir(stage.name)),
        init=init,
        model=JobModel(eeve_tied_rule=recipe.model.eeve_tied_rule),
        generation=recipe.generation,
        train=train,
    )


def make_launch(recipe: Recipe, stage_name: str, layout: Layout) -> TrainerLaunch:
    """The stage's trainer launch: its job file (`Layout.train_job`), processes and name."""
    stage = recipe.stage(stage_name)
    return TrainerLaunch(str(layout.train_job(stage.name)), stage.train.nproc_per_node, stage.name)
