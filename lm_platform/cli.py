"""`python -m lm_platform`: commands for recipe authors.

    python -m lm_platform check path/to/recipe.yaml [...]   one line per mistake; exit 1 if any, else 0
    python -m lm_platform schema [--write]                   the recipe JSON Schema (or rewrite the file)

Imports no Dagster: checking a recipe takes a second.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from lm_platform.recipe.json_schema import schema_text, write_schema
from lm_platform.recipe.loader import RecipeDeprecationWarning, RecipeError, load_recipe


def check(paths: list[str], out=None) -> int:
    """Load each recipe; print one line per mistake (and per deprecated field). 0 when all load."""
    out = out or sys.stdout
    failed = False
    for path in paths:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RecipeDeprecationWarning)
            try:
                load_recipe(path)
            except RecipeError as exc:
                failed = True
                print(str(exc), file=out)
        for w in caught:
            if issubclass(w.category, RecipeDeprecationWarning):
                print(str(w.message), file=out)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lm_platform", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="check recipes: one line per mistake, exit 1 if any")
    p_check.add_argument("recipes", nargs="+", help="recipe YAML files (or bundled names: demo, vi, ja)")
    p_schema = sub.add_parser("schema", help="print the recipe JSON Schema")
    p_schema.add_argument(
        "--write", action="store_true", help="rewrite lm_platform/recipe/recipe.schema.json instead"
    )
    args = parser.parse_args(argv)
    if args.command == "check":
        return check(args.recipes)

    if args.write:
        print(write_schema())
    else:
        sys.stdout.write(schema_text())
    return 0
