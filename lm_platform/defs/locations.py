"""One code location per recipe for multi-recipe workspaces: `attribute: <recipe>` of this module is the
recipe's definitions with every asset key under the recipe's name (`vi/tokenizer`, `ja/tokenizer`), so
locations do not merge into one key in the instance's asset graph. See `deploy/workspace.multi.yaml`."""

from __future__ import annotations

import dagster as dg

from lm_platform.defs.deployment import build_deployment_definitions
from lm_platform.defs.recipe_load import location_recipe


def __getattr__(name: str) -> dg.Definitions:
    if name.startswith("__"):
        raise AttributeError(name)

    recipe = location_recipe(name)
    return build_deployment_definitions(recipe, prefix=[recipe.name])
