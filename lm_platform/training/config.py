"""The job file the trainer reads: a `TrainJob`, typed all the way down.

The shell (`training/job.py: make_job`) builds it from the recipe and writes it to
`checkpoint/<stage>.job.json`; the trainer validates it with `TrainJob.read(path)`, so a bad job fails with
the field path before any work starts. Its parts are the recipe's own config types, whose defaults are
the only ones: the stage's `train` section (`TrainConfig`, `recipe/trainer.py`), the model's init
(`ScratchInit` with the recipe's `ModelConfig`, or `PretrainedInit`) and what the trainer applies to it
(`JobModel`, `recipe/model_init.py`), and the samples' settings (`GenerationConfig`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from lm_platform.recipe.base import Strict
from lm_platform.recipe.model_init import JobModel, ModelInit, PretrainedInit, ScratchInit
from lm_platform.recipe.trainer import IDENTITY_WHEN_SET, NON_TRAJECTORY_FIELDS, TrainConfig
from lm_platform.recipe.training import GenerationConfig

# Where the trainer's modules import these from (defined beside the recipe's config types).
__all__ = [
    "IDENTITY_WHEN_SET",
    "NON_TRAJECTORY_FIELDS",
    "GenerationConfig",
    "JobModel",
    "ModelInit",
    "PretrainedInit",
    "ScratchInit",
    "TrainConfig",
    "TrainJob",
]


class TrainJob(Strict):
    """What one trainer process needs: where the data, tokenizer and outputs are, how to initialise the
    model, and the stage's `TrainConfig`."""

    recipe: str
    stage: str
    dataset_dir: str
    tokenizer_dir: str
    output_dir: str
    run_dir: str
    init: ModelInit
    model: JobModel = Field(default_factory=JobModel)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @classmethod
    def read(cls, path: str | Path) -> TrainJob:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
