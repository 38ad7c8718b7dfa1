"""Language resources the filters need: function (stop) words, per language.

Where they come from, in order: the recipe (a filter's `stop_words`), the table the platform ships
(`lm_platform.data.filters.lines.FUNCTION_WORDS`), or words derived from the language's high-quality
source (FineWeb-2's way: the most frequent words of clean text).
"""

from __future__ import annotations

from lm_platform.data.filters.lines import FUNCTION_WORDS

# Words derived at run time for languages without a shipped table (set by curation from the recipe).
_DERIVED: dict[str, frozenset[str]] = {}


def function_words(lang: str) -> frozenset[str]:
    return FUNCTION_WORDS.get(lang) or _DERIVED.get(lang, frozenset())
