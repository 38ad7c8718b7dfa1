"""Recipe schema, loading and validation errors; bundled recipes live in `bundled/`."""

from lm_platform.recipe.loader import (
    RecipeDeprecationWarning,
    RecipeError,
    bundled_recipes,
    load_recipe,
    parse_recipe,
)
from lm_platform.recipe.schema import (
    EvalConfig,
    LanguageConfig,
    ModelConfig,
    Recipe,
    SourceConfig,
    StageConfig,
    TokenizerConfig,
)

__all__ = [
    "EvalConfig",
    "LanguageConfig",
    "ModelConfig",
    "Recipe",
    "RecipeDeprecationWarning",
    "RecipeError",
    "SourceConfig",
    "StageConfig",
    "TokenizerConfig",
    "bundled_recipes",
    "load_recipe",
    "parse_recipe",
]
