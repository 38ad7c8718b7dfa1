"""Load a recipe by bundled name or path, resolve its relative paths, and report errors by field.

Every mistake is one line, `<file>:<line>: <field path>: <what is wrong>`, ending with the near name
where one exists ("did you mean ..."); `lm_platform.recipe.errors` turns validation errors into those
lines."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lm_platform.recipe.errors import Problem, format_problems, validation_problems
from lm_platform.recipe.licenses import load_license_manifest, not_on_allowlist, spdx_problem
from lm_platform.recipe.schema import Recipe
from lm_platform.recipe.training import upgrade_flat_stage_keys

BUNDLED_DIR = Path(__file__).parent / "bundled"
DEFAULT_RECIPE = "demo"
RECIPE_ENV = "LM_PLATFORM_RECIPE"


class RecipeError(ValueError):
    """A recipe that cannot be used. The message is one line per mistake (`problems`), each naming the
    file, its line where known, the field path and what is wrong."""

    @property
    def problems(self) -> list[str]:
        return str(self).splitlines()


class RecipeDeprecationWarning(FutureWarning):
    """A recipe field that moved: it still loads, and the message names its new place."""


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
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise RecipeError(f"{where}: not valid YAML: {what}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping at the top level, got {type(raw).__name__}")
    return parse_recipe(raw, base_dir=path.parent, origin=str(path), text=text)


def parse_recipe(
    raw: dict[str, Any], base_dir: Path, origin: str = "<recipe>", text: str | None = None
) -> Recipe:
    """Validate a recipe mapping; local paths are resolved against `base_dir`. Renamed fields load with a
    `RecipeDeprecationWarning` naming their new place. `text` (the YAML the mapping came from) lets each
    error name its line."""
    raw = _upgrade(raw, origin)
    raw = _resolve_paths(raw, base_dir)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(format_problems(validation_problems(exc, raw), origin, text)) from None
    problems = _file_problems(recipe)
    if problems:
        raise RecipeError(format_problems(problems, origin, text))
    return recipe


def _upgrade(raw: dict[str, Any], origin: str) -> dict[str, Any]:
    """The compatibility step: fields of older recipes moved to where they live now, one deprecation
    warning per moved field."""
    if not isinstance(raw.get("stages"), list):
        return raw
    stages, messages = [], []
    for i, stage in enumerate(raw["stages"]):
        try:
            upgraded, moved = upgrade_flat_stage_keys(stage, f"stages.{i}")
        except ValueError as exc:
            raise RecipeError(f"{origin}: {exc}") from None
        stages.append(upgraded)
        messages += moved
    for message in messages:
        warnings.warn(f"{origin}: {message}", RecipeDeprecationWarning, stacklevel=3)
    return {**raw, "stages": stages}


def _resolve_paths(raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    raw = dict(raw)

    def resolve(entry: Any) -> Any:
        if not isinstance(entry, dict) or not isinstance(entry.get("location"), str):
            return entry
        if "://" in entry["location"]:
            return entry
        if entry.get("format") == "hf":  # a hub id, or local files in a hub dataset's formats
            return {**entry, "location": resolve_model_ref(entry["location"], base_dir)}
        loc = Path(entry["location"]).expanduser()
        entry = {**entry, "location": str(loc if loc.is_absolute() else (base_dir / loc).resolve())}
        if isinstance(entry.get("license_manifest"), str):
            man = Path(entry["license_manifest"]).expanduser()
            entry["license_manifest"] = str(man if man.is_absolute() else (base_dir / man).resolve())
        return entry

    for key in ("sources", "evaluations"):
        if isinstance(raw.get(key), list):
            raw[key] = [resolve(e) for e in raw[key]]
    if isinstance(raw.get("evaluations"), list):
        raw["evaluations"] = [_resolve_keys(e, EVAL_PATH_KEYS, base_dir) for e in raw["evaluations"]]
    ft = raw.get("finetune")
    if isinstance(ft, dict) and isinstance(ft.get("instructions"), list):
        raw["finetune"] = {**ft, "instructions": [resolve(e) for e in ft["instructions"]]}
    if isinstance(raw.get("languages"), dict):
        raw["languages"] = {
            lang: _resolve_filter_paths(cfg, base_dir) for lang, cfg in raw["languages"].items()
        }
    if isinstance(raw.get("tokenizer"), dict) and isinstance(raw["tokenizer"].get("base"), str):
        raw["tokenizer"] = {**raw["tokenizer"], "base": resolve_model_ref(raw["tokenizer"]["base"], base_dir)}
    if isinstance(raw.get("model"), dict) and isinstance(raw["model"].get("base"), str):
        raw["model"] = {**raw["model"], "base": resolve_model_ref(raw["model"]["base"], base_dir)}
    return raw


def is_local_ref(ref: str) -> bool:
    """Whether a tokenizer/model reference is meant as a local path rather than a hub id: absolute,
    home-relative, starting with `./` or `../`, or `bundled:<path>`."""
    return ref.startswith(("/", "~", "./", "../", BUNDLED_PREFIX)) or Path(ref).is_absolute()


def resolve_model_ref(ref: str, base_dir: Path) -> str:
    """A local directory (relative to the recipe, absolute, or `bundled:<path>` for one that ships with
    the bundled recipes) becomes an absolute path; a hub id such as `HuggingFaceTB/SmolLM2-360M` stays as
    it is. A relative name is local when it is explicitly relative (`./x`) or names an existing path
    beside the recipe; otherwise it is taken for a hub id."""
    if ref.startswith(BUNDLED_PREFIX):
        return str((BUNDLED_DIR / ref.removeprefix(BUNDLED_PREFIX)).resolve())
    if is_local_ref(ref):
        loc = Path(ref).expanduser()
        return str(loc if loc.is_absolute() else (base_dir / loc).resolve())
    beside = base_dir / ref
    return str(beside.resolve()) if beside.exists() else ref


BUNDLED_PREFIX = "bundled:"
# Evaluation fields besides `location` that name local files or directories.
EVAL_PATH_KEYS = ("dev_location", "include_path")


def _resolve_keys(entry: Any, keys: tuple[str, ...], base_dir: Path) -> Any:
    """`entry` with each of `keys` that is a string resolved against `base_dir` (or `bundled:`)."""
    if not isinstance(entry, dict):
        return entry
    entry = dict(entry)
    for key in keys:
        if isinstance(entry.get(key), str):
            entry[key] = (
                resolve_model_ref(entry[key], base_dir)
                if entry[key].startswith(BUNDLED_PREFIX)
                else str((base_dir / Path(entry[key]).expanduser()).resolve())
            )
    return entry


# Filter fields that name files: word lists, and a user-supplied KenLM model with its SentencePiece model.
FILTER_PATH_KEYS = ("path", "model", "sp_model")


def _resolve_filter_paths(cfg: Any, base_dir: Path) -> Any:
    """Filter files (word lists, models): relative to the recipe, or `bundled:<path>` for a file that
    ships with the platform's bundled recipes."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("filters"), list):
        return cfg
    filters = []
    for entry in cfg["filters"]:
        for key in FILTER_PATH_KEYS:
            if isinstance(entry, dict) and isinstance(entry.get(key), str):
                path = entry[key]
                if path.startswith(BUNDLED_PREFIX):
                    resolved = BUNDLED_DIR / path.removeprefix(BUNDLED_PREFIX)
                else:
                    loc = Path(path).expanduser()
                    resolved = loc if loc.is_absolute() else (base_dir / loc).resolve()
                entry = {**entry, key: str(resolved)}
        filters.append(entry)
    return {**cfg, "filters": filters}


def _file_problems(recipe: Recipe) -> list[Problem]:
    """Local files the recipe names that do not exist, and license manifests naming a license that is
    not an SPDX id or (for a source that is trained on) not on the allowlist: found at load time, before
    any work starts.

    Sources' and evaluation sets' locations, license manifests, filter files (word lists, KenLM and
    SentencePiece models), and local tokenizer and model directories; each problem names its field."""
    problems = []
    for i, src in enumerate(recipe.sources):
        if src.format == "hf":
            if is_local_ref(src.location) and not Path(src.location).exists():
                problems.append(
                    Problem.parse(f"sources.{i}.location: local dataset '{src.location}' does not exist")
                )
        elif "://" not in src.location and not Path(src.location).exists():
            problems.append(Problem.parse(f"sources.{i}.location: '{src.location}' does not exist"))
        if src.license_manifest and not Path(src.license_manifest).is_file():
            problems.append(
                Problem.parse(f"sources.{i}.license_manifest: '{src.license_manifest}' does not exist")
            )
        elif src.license_manifest:
            problems += _manifest_problems(recipe, i)
    for lang, cfg in recipe.languages.items():
        for j, flt in enumerate(cfg.filters):
            for key in FILTER_PATH_KEYS:
                path = getattr(flt, key, None)
                if path and not Path(path).is_file():
                    problems.append(
                        Problem.parse(f"languages.{lang}.filters.{j}.{key}: '{path}' does not exist")
                    )
    for i, ev in enumerate(recipe.evaluations):
        if ev.location is None:  # lm_eval: its tasks name their own data files
            pass
        elif ev.format == "hf":
            if is_local_ref(ev.location) and not Path(ev.location).exists():
                problems.append(
                    Problem.parse(f"evaluations.{i}.location: local dataset '{ev.location}' does not exist")
                )
        elif "://" not in ev.location and not Path(ev.location).is_file():
            problems.append(
                Problem.parse(f"evaluations.{i}.location: '{ev.location}' does not exist (a JSONL file)")
            )
        for key in ("dev_location",):
            path = getattr(ev, key)
            if path and not Path(path).is_file():
                problems.append(
                    Problem.parse(f"evaluations.{i}.{key}: '{path}' does not exist (a JSONL file)")
                )
        if ev.include_path and not Path(ev.include_path).is_dir():
            problems.append(
                Problem.parse(f"evaluations.{i}.include_path: '{ev.include_path}' is not a directory")
            )
    for i, s in enumerate(recipe.finetune.instructions if recipe.finetune else ()):
        if not Path(s.location).is_file():
            problems.append(
                Problem.parse(f"finetune.instructions.{i}.location: '{s.location}' does not exist")
            )
    base = recipe.tokenizer.base
    if base and is_local_ref(base) and not Path(base).is_dir():
        problems.append(
            Problem.parse(f"tokenizer.base: '{base}' is not a directory (a local HF tokenizer is one)")
        )
    model_base = recipe.model.base
    if model_base and is_local_ref(model_base) and not Path(model_base).is_dir():
        problems.append(
            Problem.parse(f"model.base: '{model_base}' is not a directory (a local HF checkpoint is one)")
        )
    return problems


def _manifest_problems(recipe: Recipe, i: int) -> list[Problem]:
    """A license manifest's licenses: SPDX ids, and on the allowlist unless the source is not trained on."""
    src = recipe.sources[i]
    where = f"sources.{i}.license_manifest"
    try:
        manifest = load_license_manifest(src.license_manifest)
    except ValueError as exc:
        return [Problem.parse(f"{where}: {exc}")]
    problems = []
    for lic in sorted(set(manifest.values())):
        files = sorted(f for f, v in manifest.items() if v == lic)
        shown = f"'{files[0]}'" + (f" and {len(files) - 1} more" if len(files) > 1 else "")
        problem = spdx_problem(lic)
        if problem:
            problems.append(Problem.parse(f"{where}: {shown}: {problem}"))
        elif lic not in recipe.license_allowlist and not src.exclude_from_training:
            problems.append(
                Problem.parse(
                    f"{where}: {shown}: {not_on_allowlist([lic])} (allowlist: {', '.join(recipe.license_allowlist)})"
                )
            )
    return problems
