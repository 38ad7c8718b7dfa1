"""Core results -> Dagster metadata, by type, in one place.

An asset function reads its inputs, calls one core function and returns `materialize(result, ...)`: every
field of the result's frozen dataclass becomes a metadata entry, converted by the type of its value
(numbers stay numbers, dicts become JSON, lists of rows become tables, paths become paths). Each asset also
declares its headline fields (`headline(...)` in its definition metadata); the summary that `make demo`
prints reads them from there.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from lm_platform.storage.cache import object_url
from lm_platform.versions import code_version

CODE_VERSION = "1"
HEADLINE_KEY = "lm_platform/headline"
OPTIONAL_KEY = "lm_platform/optional"


def optional(command: str) -> dict[str, Any]:
    """Definition metadata of an asset `make demo` leaves out: the summary names `command`, which
    materializes it, instead of counting it as missing."""
    return {OPTIONAL_KEY: dg.MetadataValue.text(command)}


def headline(*fields: str) -> dict[str, Any]:
    """Definition metadata naming the materialization fields the demo summary shows for an asset."""
    return {HEADLINE_KEY: dg.MetadataValue.json(list(fields))}


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table(rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> dg.MetadataValue:
    """A markdown table of `rows` (dicts); columns default to the first row's keys."""
    rows = list(rows)
    columns = columns or (list(rows[0]) if rows else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def md_table(rows: Iterable[Mapping[str, Any]], columns: list[str]) -> dg.MetadataValue:
    """A markdown table for scores and text: floats to four places, None as an empty cell, pipes and
    newlines in text escaped (model outputs and prompts hold both)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def licenses_table(licenses: Mapping[str, int]) -> dg.MetadataValue:
    """Documents per license as a table."""
    return table([{"license": k, "docs": v} for k, v in sorted(licenses.items())], ["license", "docs"])


def value(v: Any) -> Any:
    """One metadata value by type: numbers, booleans and text as they are, None as null, paths as paths,
    dicts as JSON, lists of dicts as tables, other lists as JSON; MetadataValues pass through."""
    if isinstance(v, dg.MetadataValue):
        return v
    if v is None:
        return dg.MetadataValue.null()
    if isinstance(v, bool):
        return dg.MetadataValue.bool(v)
    if isinstance(v, (int, float, str)):
        return v
    if isinstance(v, Path):
        # Under an object-store root, the object's URL (s3://...), not the local cache's path.
        url = object_url(v)
        return dg.MetadataValue.path(str(v)) if url is None else dg.MetadataValue.url(url)
    if isinstance(v, Mapping):
        return dg.MetadataValue.json(json.loads(json.dumps(v, default=str)))
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(r, Mapping) for r in v):
            return table(v)
        return dg.MetadataValue.json(json.loads(json.dumps(list(v), default=str)))
    raise TypeError(f"no metadata conversion for {type(v).__name__}: {v!r}")


def fields(result: Any) -> dict[str, Any]:
    """A frozen dataclass's fields (shallow; nested values keep their types), or a mapping as it is."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    if isinstance(result, Mapping):
        return dict(result)
    raise TypeError(f"not a result: {type(result).__name__}")


def to_metadata(*results: Any, **extra: Any) -> dict[str, Any]:
    """Metadata of one or more results plus `extra` entries (later ones win), each converted by type."""
    merged: dict[str, Any] = {}
    for result in results:
        merged.update(fields(result))
    merged.update(extra)
    return {k: value(v) for k, v in merged.items()}


def materialize(
    *results: Any,
    checks: list[dg.AssetCheckResult] | None = None,
    data_version: str | None = None,
    **extra: Any,
):
    """The `MaterializeResult` of an asset: `to_metadata(*results, **extra)`, its check results and, when
    given, the data version of what it wrote (`lm_platform.versions.content_version`)."""
    return dg.MaterializeResult(
        metadata=to_metadata(*results, **extra),
        check_results=checks or [],
        data_version=dg.DataVersion(data_version) if data_version else None,
    )


def versioned(*recipe_slices: Any) -> str:
    """An asset's `code_version`: the code's version and the recipe slice its factory reads, hashed."""
    return code_version(CODE_VERSION, *recipe_slices)
