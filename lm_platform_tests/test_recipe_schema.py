"""The recipe JSON Schema editors use (`lm_platform/recipe/recipe.schema.json`): current with the config
models, referenced by the bundled recipes, accepting them and rejecting each mistake a schema can express."""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest
import yaml

from lm_platform.recipe.json_schema import SCHEMA_PATH, schema_text
from lm_platform.recipe.loader import BUNDLED_DIR, bundled_recipes


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _raw(name: str = "demo") -> dict:
    return yaml.safe_load((BUNDLED_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def test_schema_file_is_current_with_the_models():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        f"{SCHEMA_PATH} is stale (a recipe model changed): regenerate it with `python -m lm_platform schema --write`"
    )


@pytest.mark.parametrize("name", ["demo", "vi", "ja"])
def test_bundled_recipes_reference_the_schema_and_validate(validator, name):
    assert set(bundled_recipes()) == {"demo", "vi", "ja"}
    text = (BUNDLED_DIR / f"{name}.yaml").read_text(encoding="utf-8")
    ref = re.match(r"# yaml-language-server: \$schema=(\S+)\n", text)
    assert ref, "the first line tells editors (VS Code's YAML extension) where the schema is"
    assert (BUNDLED_DIR / ref.group(1)).resolve() == SCHEMA_PATH.resolve()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(_raw(name))]
    assert not errors, errors


def _filter(raw: dict, name: str) -> dict:
    return next(f for f in raw["languages"]["vi"]["filters"] if f["name"] == name)


# The mistakes of test_recipe_errors.py that a schema can express (mixture sums, names of sources and
# stages, files and the allowlist need the whole recipe: the loader and `check` find those).
SCHEMA_MISTAKES = {
    "misspelt key": (
        lambda r: r["stages"][1]["train"].update(micro_batch_sise=2),
        ["stages", 1, "train"],
    ),
    "misspelt filter name": (lambda r: _filter(r, "gopher_quality").update(name="gopher_qualty"), None),
    "bad SPDX id": (lambda r: r["sources"][1].update(license="CC-BY-SA"), ["sources", 1, "license"]),
    "bad SPDX id in the allowlist": (
        lambda r: r["license_allowlist"].append("Public Domain"),
        ["license_allowlist", 3],
    ),
    "negative min_chars": (lambda r: _filter(r, "length").update(min_chars=-5), None),
    "unknown evaluation kind": (
        lambda r: r["evaluations"][0].update(kind="perplexty"),
        ["evaluations", 0, "kind"],
    ),
    "missing license": (lambda r: r["sources"][0].pop("license"), ["sources", 0]),
}


@pytest.mark.parametrize("mistake", sorted(SCHEMA_MISTAKES))
def test_schema_rejects_each_mistake_it_can_express(validator, mistake):
    mutate, where = SCHEMA_MISTAKES[mistake]
    raw = copy.deepcopy(_raw())
    mutate(raw)
    errors = list(validator.iter_errors(raw))
    assert errors, f"the schema accepts the {mistake}"
    if where is not None:
        assert any(list(e.absolute_path)[: len(where)] == where for e in errors), [
            list(e.absolute_path) for e in errors
        ]
    else:  # a filter: one of the filter kinds, so the error is on the filter list's item
        assert all(list(e.absolute_path)[:3] == ["languages", "vi", "filters"] for e in errors)
