"""The code location: the recipe named by $LM_PLATFORM_RECIPE (default: the bundled demo) under the
deployment profile named by $LM_PLATFORM_PROFILE (default: local)."""

from lm_platform.defs.deployment import build_deployment_definitions
from lm_platform.recipe import load_recipe

defs = build_deployment_definitions(load_recipe())
