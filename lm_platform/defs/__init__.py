"""The Dagster shell: one module per domain (assets and checks), `automation` (sensors, schedules),
`metadata` (core results -> metadata), `resources`. Thin; all work happens in the core."""

from __future__ import annotations

import dagster as dg

from lm_platform.defs import automation
from lm_platform.defs.assets import build_assets
from lm_platform.defs.resources import LMStorage
from lm_platform.recipe.schema import Recipe


def build_definitions(recipe: Recipe) -> dg.Definitions:
    auto = automation.build(recipe)
    return dg.Definitions(
        assets=build_assets(recipe),
        sensors=auto.sensors,
        schedules=auto.schedules,
        resources={"storage": LMStorage(), "trainer": dg.PipesSubprocessClient()},
    )
