"""Document length in characters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lm_platform.data.corpus.text import Doc
from lm_platform.data.curation.filters.base import Filter
from lm_platform.recipe.base import StrictConfig


class LengthFilter(StrictConfig):
    name: Literal["length"] = "length"
    min_chars: int = Field(200, ge=0)
    max_chars: int = Field(1_000_000, gt=0)


class Length(Filter):
    name = "length"

    def check(self, doc: Doc) -> str | None:
        n = len(doc.text)
        if n < self.cfg.min_chars:
            return f"{n} chars < min {self.cfg.min_chars}"
        if n > self.cfg.max_chars:
            return f"{n} chars > max {self.cfg.max_chars}"
        return None
