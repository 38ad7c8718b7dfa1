"""Load a recipe by bundled name or path, resolve its relative paths, and report errors by field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lm_platform.recipe.schema import Recipe

BUNDLED_DIR = Path(__file__).parent / "bundled"
DEFAULT_RECIPE = "demo"
RECIPE_ENV = "LM_PLATFORM_RECIPE"


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and each bad field."""


def bundled_recipes() -> list[str]:
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        if not candidate.is_file():
            raise RecipeError(f"recipe file not found: {candidate}")
        return candidate.resolve()
    bundled = BUNDLED_DIR / f"{name_or_path}.yaml"
    if not bundled.is_file():
        raise RecipeError(
            f"unknown recipe '{name_or_path}': not a file and not bundled ({bundled_recipes()})"
        )
    return bundled


def load_recipe(name_or_path: str | None = None) -> Recipe:
    """Load and validate a recipe: a bundled name ('demo', 'vi', 'ja') or a YAML path.

    Default: $LM_PLATFORM_RECIPE, else the bundled demo.
    """
    path = recipe_path(name_or_path or os.environ.get(RECIPE_ENV) or DEFAULT_RECIPE)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping at the top level, got {type(raw).__name__}")
    return parse_recipe(raw, base_dir=path.parent, origin=str(path))


def parse_recipe(raw: dict[str, Any], base_dir: Path, origin: str = "<recipe>") -> Recipe:
    """Validate a recipe mapping; local paths are resolved against `base_dir`."""
    raw = _resolve_paths(raw, base_dir)
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {loc or '<root>'}: {msg}")
        raise RecipeError(f"{origin}: invalid recipe\n" + "\n".join(lines)) from None


def _resolve_paths(raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    raw = dict(raw)

    def resolve(entry: Any) -> Any:
        if not isinstance(entry, dict) or not isinstance(entry.get("location"), str):
            return entry
        if entry.get("format") == "hf" or "://" in entry["location"]:
            return entry
        loc = Path(entry["location"]).expanduser()
        return {**entry, "location": str(loc if loc.is_absolute() else (base_dir / loc).resolve())}

    for key in ("sources", "evaluations"):
        if isinstance(raw.get(key), list):
            raw[key] = [resolve(e) for e in raw[key]]
    return raw
