"""What a core stage returns: a frozen dataclass of what it did (the shell turns its fields into Dagster
metadata by type, see `lm_platform/defs/metadata.py`).

A result whose fields mirror a JSON file the stage writes (the blend manifest, the packed dataset's index,
the dedup stats) also reads as a mapping of that JSON (`result["docs"]`, `dict(result)`), so code written
against the file's keys keeps working; new code uses the attributes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any


class JsonResult(Mapping):
    """Mixin for frozen dataclasses: read-only mapping access to the fields."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        """The fields as a plain dict (the JSON the stage writes)."""
        return {name: getattr(self, name) for name in self._names()}
