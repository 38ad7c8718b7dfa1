"""Recipe schema, loading and validation errors; bundled recipes live in `bundled/`.

Names are imported on first use (PEP 562): filter modules import `lm_platform.recipe.base`, and the
recipe's filter union imports the filter modules, so the package itself must not import the schema
eagerly.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "RecipeDeprecationWarning": "loader",
    "RecipeError": "loader",
    "bundled_recipes": "loader",
    "load_recipe": "loader",
    "parse_recipe": "loader",
    "EvalConfig": "schema",
    "LanguageConfig": "schema",
    "ModelConfig": "schema",
    "Recipe": "schema",
    "SourceConfig": "schema",
    "StageConfig": "schema",
    "TokenizerConfig": "schema",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'lm_platform.recipe' has no attribute '{name}'")
    return getattr(importlib.import_module(f"lm_platform.recipe.{module}"), name)
