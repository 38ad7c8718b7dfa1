"""The whole asset graph of one recipe: each domain module's assets, concatenated.

One module per domain (`corpus`, `quality`, `curation`, `dedup`, `blending`, `tokenizer`, `training`, `evaluation`,
`finetune`); each has a `build(recipe)` returning its assets (with their checks). Nothing else happens
here: a new stage of the graph is a new domain module and one line below.
"""

from __future__ import annotations

import dagster as dg

from lm_platform.defs import (
    blending,
    corpus,
    curation,
    dedup,
    evaluation,
    finetune,
    mixture,
    quality,
    tokenizer,
    training,
)
from lm_platform.recipe.schema import Recipe

DOMAINS = (corpus, quality, curation, dedup, blending, tokenizer, training, evaluation, finetune, mixture)


def build_assets(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """Every asset of the recipe's graph, domain by domain."""
    return [asset for domain in DOMAINS for asset in domain.build(recipe)]


__all__ = ["DOMAINS", "build_assets"]
