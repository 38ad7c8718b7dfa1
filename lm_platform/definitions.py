"""The code location: the recipe named by $LM_PLATFORM_RECIPE (default: the bundled demo) under the
deployment profile named by $LM_PLATFORM_PROFILE (default: local). A broken recipe fails the load with one
line per mistake (`lm_platform.defs.recipe_load`)."""

from lm_platform.defs.deployment import build_deployment_definitions
from lm_platform.defs.recipe_load import location_recipe

defs = build_deployment_definitions(location_recipe())
