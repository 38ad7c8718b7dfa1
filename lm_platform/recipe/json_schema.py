"""The JSON Schema of a recipe, generated from the config models: `recipe.schema.json` beside this module,
which editors use to complete and check a recipe as it is typed (the bundled recipes reference it with a
`# yaml-language-server: $schema=...` comment). Regenerate after changing a recipe model:

    python -m lm_platform schema --write

A test fails while the file and the models disagree. The schema checks what a schema can express (keys,
types, ranges, fixed choices, filter names, SPDX ids); what needs the whole recipe (mixtures summing to 1,
names referring to sources and stages, files that exist, the license allowlist) is checked at load time
and by `python -m lm_platform check <recipe.yaml>`.
"""

from __future__ import annotations

import json
from pathlib import Path

from lm_platform.recipe.licenses import SPDX_SCHEMA_MARKER, SPDX_SCHEMA_REF, spdx_json_schema
from lm_platform.recipe.schema import Recipe
from lm_platform.recipe.spdx import SPDX_LIST_VERSION

SCHEMA_PATH = Path(__file__).parent / "recipe.schema.json"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def recipe_json_schema() -> dict:
    """The recipe's JSON Schema (draft 2020-12) as a dict."""

    schema = _license_refs(Recipe.model_json_schema(mode="validation"))
    schema["$defs"][SPDX_SCHEMA_REF] = spdx_json_schema()
    schema["$defs"] = dict(sorted(schema["$defs"].items()))
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "lm_platform recipe",
        "description": "A recipe of lm_platform (generated from lm_platform.recipe's models by "
        f"`python -m lm_platform schema --write`; SPDX License List {SPDX_LIST_VERSION})",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def _license_refs(node):
    """Every license field's marker becomes a `$ref` to the one SPDX definition."""
    if isinstance(node, list):
        return [_license_refs(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _license_refs(v) for k, v in node.items() if k != SPDX_SCHEMA_MARKER}
    if SPDX_SCHEMA_MARKER in node:
        out = {"$ref": f"#/$defs/{SPDX_SCHEMA_REF}", **out}
    return out


def schema_text() -> str:
    """The schema as written to `recipe.schema.json` (stable: same models, same bytes)."""
    return json.dumps(recipe_json_schema(), indent=1, ensure_ascii=False) + "\n"


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    """Write the schema atomically (temporary file beside it, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(schema_text(), encoding="utf-8")
    tmp.replace(path)
    return path
