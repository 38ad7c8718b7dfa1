"""The recipe a code location loads. A broken recipe fails the load with its short message (one line per
mistake, `lm_platform.recipe.errors`) as the error itself: the UI's error panel shows it first, and an
uncaught one ends the `dagster` CLI with just those lines instead of a traceback."""

from __future__ import annotations

import sys

import dagster as dg

from lm_platform.recipe.loader import RecipeError, load_recipe
from lm_platform.recipe.schema import Recipe


class RecipeLoadError(RecipeError, dg.DagsterError):
    """A recipe a code location could not load. A DagsterError, so that Dagster reports it as it is
    instead of under "Error occurred during the loading of Dagster definitions"."""


def location_recipe(name: str | None = None) -> Recipe:
    """`load_recipe` for a code location (`definitions.py`, `defs/locations.py`)."""
    try:
        return load_recipe(name)
    except RecipeError as exc:
        _short_uncaught_recipe_errors()
        raise RecipeLoadError(str(exc)) from None  # the loader's frames say nothing to a recipe author


def _short_uncaught_recipe_errors() -> None:
    previous = sys.excepthook
    if getattr(previous, "_lm_platform", False):
        return

    def hook(kind, exc, tb):
        cause = exc
        while cause is not None and not isinstance(cause, RecipeError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            previous(kind, exc, tb)
        else:
            print(str(cause), file=sys.stderr)

    hook._lm_platform = True  # type: ignore[attr-defined]
    sys.excepthook = hook
