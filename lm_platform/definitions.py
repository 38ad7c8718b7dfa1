"""The code location: the recipe named by $LM_PLATFORM_RECIPE (default: the bundled demo)."""

from lm_platform.defs import build_definitions
from lm_platform.recipe import load_recipe

defs = build_definitions(load_recipe())
