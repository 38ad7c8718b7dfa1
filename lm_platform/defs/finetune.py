"""Fine-tuning: the room for what comes after pretraining (adapters, merges, exports) as assets of
group `finetune`. Each factory takes the recipe and returns its assets; `build` lists them, and
`defs/assets.py` adds them to the graph. The recipe has no fine-tuning section yet, so there are none.
"""

from __future__ import annotations

import dagster as dg

from lm_platform.recipe.schema import Recipe


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """The fine-tuning assets of a recipe (none until the recipe can ask for them)."""
    return []
