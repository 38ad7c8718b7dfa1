"""Document length in characters."""

from __future__ import annotations

from lm_platform.data.corpus.text import Doc
from lm_platform.data.curation.filters.base import Filter
from lm_platform.recipe.filter_settings import LengthFilter as LengthFilter


class Length(Filter):
    name = "length"

    def check(self, doc: Doc) -> str | None:
        n = len(doc.text)
        if n < self.cfg.min_chars:
            return f"{n} chars < min {self.cfg.min_chars}"
        if n > self.cfg.max_chars:
            return f"{n} chars > max {self.cfg.max_chars}"
        return None
