"""Gopher quality rules (Rae et al. 2021, table A1), with datatrove's definitions and defaults.

Word counts are language-aware (see lm_platform.data.corpus.text): Vietnamese counts syllables, Japanese
counts MeCab words. Stop words come from the filter, the language's recipe settings (given or derived
from its high-quality source) or the platform's table (lm_platform.data.curation.filters.resources); a language
with none fails at recipe load. English stop words are never counted for another language.
"""

from __future__ import annotations

import re
from itertools import filterfalse

from lm_platform.data.corpus.text import Doc, is_symbol
from lm_platform.data.curation.filters.base import Filter
from lm_platform.data.curation.filters.resources import STOP_WORDS, stop_words
from lm_platform.recipe.filter_settings import GopherQualityFilter

_ALPHA = re.compile(r"[^\W\d_]")  # a letter of any script
# A number as written in running text: digits with . , : / - separators, an optional sign or %.
_NUMBER = re.compile(r"^[+\-±]?\d+(?:[.,:/\-]\d+)*%?$")


def alpha_words_ratio(words: list[str], symbols_removed: bool = False) -> float:
    """Share of words with a letter among the words that are words: punctuation tokens and numbers
    (years, dates, quantities) are neither for nor against, as FineWeb-2 counts per language. Gopher's
    original counted every token, so a Wikipedia article full of dates and commas fell under 0.8."""
    if not symbols_removed:  # else the caller passes content words already
        words = list(filterfalse(is_symbol, words))
    counted = list(filterfalse(_NUMBER.match, words))
    if not counted:
        return 1.0
    return len(list(filter(_ALPHA.search, counted))) / len(counted)


class GopherQuality(Filter):
    name = "gopher_quality"

    def __init__(self, cfg, lang: str):
        super().__init__(cfg, lang)
        words = cfg.stop_words if cfg.stop_words is not None else stop_words(lang)
        if not words and cfg.min_stop_words is not None:
            raise ValueError(
                f"gopher_quality: no stop words for '{lang}' (set languages.{lang}.stop_words or "
                f"stop_words_from, or the filter's stop_words)"
            )
        self.stop_words = frozenset(words)

    def check(self, doc: Doc) -> str | None:
        c = self.cfg
        text, words = doc.text, doc.words
        n_words = len(words)
        content = doc.content_words
        if c.min_doc_words is not None and len(content) < c.min_doc_words:
            return f"gopher_short_doc: {len(content)} words < {c.min_doc_words}"
        if c.max_doc_words is not None and len(content) > c.max_doc_words:
            return f"gopher_long_doc: {len(content)} words > {c.max_doc_words}"
        if content:
            avg = sum(map(len, content)) / len(content)
            if c.min_avg_word_length is not None and avg < c.min_avg_word_length:
                return f"gopher_below_avg_threshold: mean word length {avg:.2f} < {c.min_avg_word_length}"
            if c.max_avg_word_length is not None and avg > c.max_avg_word_length:
                return f"gopher_above_avg_threshold: mean word length {avg:.2f} > {c.max_avg_word_length}"
        if not n_words:
            return "gopher_no_words"
        if c.max_symbol_word_ratio is not None:
            if text.count("#") / n_words > c.max_symbol_word_ratio:
                return "gopher_too_many_hashes"
            if (text.count("...") + text.count("…")) / n_words > c.max_symbol_word_ratio:
                return "gopher_too_many_ellipsis"
        lines = doc.lines or [""]
        # A share of lines needs lines: in a two-paragraph post, one quote elided with "..." is 50 %.
        # Pages of teasers and bullets have many lines (and the prose filter judges short pages).
        if sum(1 for ln in lines if ln.strip()) < c.min_lines_for_line_ratios:
            lines = []
        if c.max_bullet_lines_ratio is not None and lines:
            bullets = sum(ln.lstrip().startswith(("•", "-")) for ln in lines) / len(lines)
            if bullets > c.max_bullet_lines_ratio:
                return f"gopher_too_many_bullets: {bullets:.2f}"
        if c.max_ellipsis_lines_ratio is not None and lines:
            ell = sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines)
            if ell > c.max_ellipsis_lines_ratio:
                return f"gopher_too_many_end_ellipsis: {ell:.2f}"
        if c.min_alpha_words_ratio is not None:
            alpha = alpha_words_ratio(content, symbols_removed=True)
            if alpha < c.min_alpha_words_ratio:
                return f"gopher_below_alpha_threshold: {alpha:.2f} < {c.min_alpha_words_ratio}"
        if c.min_stop_words is not None:
            found = len(self.stop_words.intersection(w.lower() for w in words))
            if found < c.min_stop_words:
                return f"gopher_enough_stop_words: {found} distinct stop words < {c.min_stop_words}"
        return None


__all__ = ["STOP_WORDS", "GopherQuality", "GopherQualityFilter", "alpha_words_ratio"]
