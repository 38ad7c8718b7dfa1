"""License identifiers in recipes: SPDX ids checked at load against the bundled SPDX License List
(`spdx.py`), custom licenses as `LicenseRef-<name>`, and the one wording for "not on the allowlist" that
the load-time check and the blends' blocking asset check share; the license manifests that name a
license per file of a directory source."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

from lm_platform.recipe.base import near_name
from lm_platform.recipe.spdx import SPDX_DEPRECATED_IDS, SPDX_IDS

LICENSE_REF = re.compile(r"^LicenseRef-[A-Za-z0-9.\-]+$")
_KNOWN = frozenset(SPDX_IDS) | frozenset(SPDX_DEPRECATED_IDS)
_BY_LOWER = {i.lower(): i for i in SPDX_IDS}
_VERSION = re.compile(r"^\d+(\.\d+)*$")


def is_spdx(value: str) -> bool:
    """An SPDX License List id (deprecated ones included), an id with the `+` (or later) suffix, or a
    `LicenseRef-<name>`."""
    return value in _KNOWN or (value.endswith("+") and value[:-1] in _KNOWN) or bool(LICENSE_REF.match(value))


def suggest_spdx(value: str) -> str | None:
    """The SPDX id a non-id most likely meant: the same id in other case or with spaces for dashes
    ('apache 2.0' -> 'Apache-2.0'), the newest version of a family named without one ('CC-BY-SA' ->
    'CC-BY-SA-4.0'), or a close spelling."""
    norm = re.sub(r"[\s_]+", "-", value.strip()).lower().removesuffix("-license")
    if norm in _BY_LOWER:
        return _BY_LOWER[norm]
    versions = [
        (tuple(int(p) for p in rest.split(".")), ident)
        for low, ident in _BY_LOWER.items()
        if low.startswith(norm + "-") and _VERSION.match(rest := low[len(norm) + 1 :])
    ]
    if versions:
        return max(versions)[1]
    return near_name(norm, SPDX_IDS, cutoff=0.8)


def spdx_problem(value: str) -> str | None:
    """Why `value` is not a license identifier a recipe accepts, or None when it is one."""
    if is_spdx(value):
        return None
    near = suggest_spdx(value)
    hint = f"did you mean '{near}'? " if near else ""
    return (
        f"'{value}' is not an SPDX license identifier ({hint}a license of your own is written "
        "LicenseRef-<name>; ids: https://spdx.org/licenses/)"
    )


def _check(value: str) -> str:
    problem = spdx_problem(value)
    if problem:
        raise ValueError(problem)
    return value


# The JSON Schema of a license field: a marker that `recipe.json_schema` turns into a reference to one
# definition in `$defs` (the list is long, and pydantic's own `$ref`s must name its models).
SPDX_SCHEMA_REF = "SpdxLicense"
SPDX_SCHEMA_MARKER = "x-lm-platform-spdx"
SpdxLicense = Annotated[str, AfterValidator(_check), WithJsonSchema({SPDX_SCHEMA_MARKER: True})]


def spdx_json_schema() -> dict:
    """The JSON Schema of an SPDX license identifier: the list's ids (editors complete them), `<id>+`,
    or `LicenseRef-<name>`."""
    return {
        "title": "SPDX license identifier",
        "description": "An id of the SPDX License List (https://spdx.org/licenses/) or LicenseRef-<name>",
        "anyOf": [
            {"type": "string", "enum": sorted(_KNOWN)},
            {"type": "string", "pattern": LICENSE_REF.pattern},
            {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9.\-]*\+$"},
        ],
    }


def not_on_allowlist(licenses) -> str:
    """The wording of every "license not allowed" message (load time and the blends' blocking check)."""
    return f"licenses not on the allowlist: {list(licenses)}"


def load_license_manifest(path: str | Path) -> dict[str, str]:
    """File name (relative to the source directory) -> SPDX license, from JSON or CSV."""
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a license manifest is a JSON object {{file: license}}")
        return {str(k): str(v) for k, v in data.items()}
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"file", "license"} <= set(rows[0]):
        raise ValueError(f"{path}: a CSV license manifest has the columns 'file' and 'license'")
    return {row["file"]: row["license"] for row in rows}
