"""The Dagster shell: asset factories, checks, resources. Thin; all work happens in the core."""

from __future__ import annotations

import dagster as dg

from lm_platform.defs.assets import build_assets
from lm_platform.defs.resources import LMStorage
from lm_platform.recipe.schema import Recipe


def build_definitions(recipe: Recipe) -> dg.Definitions:
    return dg.Definitions(
        assets=build_assets(recipe),
        resources={"storage": LMStorage(), "trainer": dg.PipesSubprocessClient()},
    )
