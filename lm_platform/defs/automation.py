"""Automation: the room for sensors and schedules (what starts runs without a person), one factory per
trigger, each taking the recipe. `build` returns them for `build_definitions`; the recipe asks for none yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from lm_platform.recipe.schema import Recipe


@dataclass(frozen=True)
class Automation:
    """What the automation room adds to the definitions."""

    sensors: list[dg.SensorDefinition] = field(default_factory=list)
    schedules: list[dg.ScheduleDefinition] = field(default_factory=list)


def build(recipe: Recipe) -> Automation:
    """The sensors and schedules of a recipe (none until the recipe can ask for them)."""
    return Automation()
