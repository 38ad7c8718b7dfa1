"""How a training stage's model starts and what the trainer applies to it, as typed config: the `init` and
`model` of a `TrainJob` (`training/config.py`), read by `modeling/init.py: build_model`.

- `ScratchInit`: a model built from the recipe's `model` section (`ModelConfig`);
- `PretrainedInit`: a checkpoint, a local HF directory (the previous stage's export) or a hub id;
- `JobModel`: settings the trainer applies beyond the init (the EEVE rule for tied embeddings).

Defaults are the recipe's: `EEVE_TIED_RULE` is `ModelConfig`'s, read from it, not written again.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from lm_platform.recipe.base import Strict
from lm_platform.recipe.training import ModelConfig

TiedRule = Literal["input", "output"]
EEVE_TIED_RULE: TiedRule = ModelConfig.model_fields["eeve_tied_rule"].default


class ScratchInit(Strict):
    """A model built from the recipe's `model` section (seeded by the stage's `train.seed`)."""

    kind: Literal["scratch"] = "scratch"
    model: ModelConfig


class PretrainedInit(Strict):
    """A model loaded from a checkpoint: a local HF directory or a hub id."""

    kind: Literal["pretrained"] = "pretrained"
    path: str


ModelInit = Annotated[ScratchInit | PretrainedInit, Field(discriminator="kind")]
_INIT = TypeAdapter(ModelInit)


def parse_init(init: ScratchInit | PretrainedInit | dict[str, Any]) -> ScratchInit | PretrainedInit:
    """A typed init, from a typed one or its mapping (`{"kind": "scratch", "model": {...}}`)."""
    return init if isinstance(init, ScratchInit | PretrainedInit) else _INIT.validate_python(init)


class JobModel(Strict):
    """What the trainer applies to the model beyond its init (part of a run's resume identity)."""

    eeve_tied_rule: TiedRule = Field(
        EEVE_TIED_RULE,
        description="EEVE init of a new token's row when embeddings are tied (the recipe's model.eeve_tied_rule)",
    )
