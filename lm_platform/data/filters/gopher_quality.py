"""Gopher quality rules (Rae et al. 2021, table A1), with datatrove's definitions and defaults.

Word counts are language-aware (see lm_platform.data.text): Vietnamese counts syllables, Japanese
counts MeCab words. Stop words default per language when the recipe gives none.
"""

from __future__ import annotations

import re

from lm_platform.data.filters.base import Filter
from lm_platform.data.text import Doc, is_symbol

_ALPHA = re.compile(r"[^\W\d_]")  # a letter of any script
STOP_WORDS = {
    "en": ("the", "be", "to", "of", "and", "that", "have", "with"),
    "vi": ("và", "của", "là", "có", "được", "trong", "các", "cho", "những", "với", "một", "không"),
    "ja": ("の", "に", "は", "を", "た", "が", "で", "て", "と", "し"),
}


class GopherQuality(Filter):
    name = "gopher_quality"

    def __init__(self, cfg, lang: str):
        super().__init__(cfg, lang)
        words = cfg.stop_words if cfg.stop_words is not None else STOP_WORDS.get(lang, STOP_WORDS["en"])
        self.stop_words = frozenset(words)

    def check(self, doc: Doc) -> str | None:
        c = self.cfg
        text, words = doc.text, doc.words
        n_words = len(words)
        content = [w for w in words if not is_symbol(w)]
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
        if c.max_bullet_lines_ratio is not None:
            bullets = sum(ln.lstrip().startswith(("•", "-")) for ln in lines) / len(lines)
            if bullets > c.max_bullet_lines_ratio:
                return f"gopher_too_many_bullets: {bullets:.2f}"
        if c.max_ellipsis_lines_ratio is not None:
            ell = sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines)
            if ell > c.max_ellipsis_lines_ratio:
                return f"gopher_too_many_end_ellipsis: {ell:.2f}"
        if c.min_alpha_words_ratio is not None:
            alpha = sum(map(bool, map(_ALPHA.search, words))) / n_words
            if alpha < c.min_alpha_words_ratio:
                return f"gopher_below_alpha_threshold: {alpha:.2f} < {c.min_alpha_words_ratio}"
        if c.min_stop_words is not None:
            found = len(self.stop_words.intersection(words))
            if found < c.min_stop_words:
                return f"gopher_enough_stop_words: {found} distinct stop words < {c.min_stop_words}"
        return None
