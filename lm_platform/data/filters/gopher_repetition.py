"""Gopher repetition rules (Rae et al. 2021, table A1), with datatrove's definitions and defaults:
duplicate lines and paragraphs, the most frequent n-grams, and characters inside repeated n-grams."""

from __future__ import annotations

import re
from collections import Counter
from typing import Literal

from lm_platform.data.filters.base import Filter
from lm_platform.data.text import Doc
from lm_platform.recipe.base import StrictConfig


class GopherRepetitionFilter(StrictConfig):
    name: Literal["gopher_repetition"] = "gopher_repetition"
    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float], ...] = (
        (5, 0.15),
        (6, 0.14),
        (7, 0.13),
        (8, 0.12),
        (9, 0.11),
        (10, 0.10),
    )


_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")


def duplicates(items: list[str]) -> tuple[int, int]:
    """(repeated items, characters in repeated items), counting every occurrence after the first."""
    seen: set[str] = set()
    n = chars = 0
    for item in items:
        if item in seen:
            n += 1
            chars += len(item)
        else:
            seen.add(item)
    return n, chars


def _ngrams(words: list[str], n: int, sep: str) -> list[str]:
    return list(map(sep.join, zip(*(words[i:] for i in range(n)), strict=False)))


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent n-gram (joined with spaces) times its count."""
    grams = Counter(_ngrams(words, n, " "))
    if not grams:
        return 0
    gram, count = grams.most_common(1)[0]
    # An n-gram seen once is not repeated: datatrove counts it anyway, so a short text (a Japanese
    # Wikipedia lead of long katakana words) "repeats" its longest 4-gram by 16 % of its characters.
    return len(gram) * count if count > 1 else 0


def repeated_ngram_chars(words: list[str], n: int) -> int:
    """Characters in n-grams seen before, skipping past each repeat (datatrove's greedy count; an
    n-gram's key is its words joined without a separator, as there)."""
    grams = _ngrams(words, n, "")
    if len(set(grams)) == len(grams):  # no n-gram occurs twice: nothing to count (most prose)
        return 0
    seen: set[str] = set()
    chars = i = 0
    last = len(grams)
    while i < last:
        gram = grams[i]
        if gram in seen:
            chars += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


class GopherRepetition(Filter):
    name = "gopher_repetition"

    def check(self, doc: Doc) -> str | None:
        c, text = self.cfg, doc.text
        if not text:
            return "empty"
        paragraphs = _PARAGRAPHS.split(text.strip())
        n, chars = duplicates(paragraphs)
        if c.dup_para_frac is not None and n / len(paragraphs) > c.dup_para_frac:
            return f"dup_para_frac: {n / len(paragraphs):.2f}"
        if c.dup_para_char_frac is not None and chars / len(text) > c.dup_para_char_frac:
            return f"dup_para_char_frac: {chars / len(text):.2f}"
        lines = _LINES.split(text)
        n, chars = duplicates(lines)
        if c.dup_line_frac is not None and n / len(lines) > c.dup_line_frac:
            return f"dup_line_frac: {n / len(lines):.2f}"
        if c.dup_line_char_frac is not None and chars / len(text) > c.dup_line_char_frac:
            return f"dup_line_char_frac: {chars / len(text):.2f}"
        words = doc.words
        for n_, frac in c.top_n_grams:
            share = top_ngram_chars(words, n_) / len(text)
            if share > frac:
                return f"top_{n_}_gram: {share:.2f} > {frac}"
        for n_, frac in c.dup_n_grams:
            share = repeated_ngram_chars(words, n_) / len(text)
            if share > frac:
                return f"duplicated_{n_}_n_grams: {share:.2f} > {frac}"
        return None
