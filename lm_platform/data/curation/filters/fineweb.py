"""FineWeb quality rules (Penedo et al. 2024) with datatrove's definitions and defaults: share of
lines ending in terminal punctuation, share of short lines, characters in duplicated lines, and
newlines per word (list-like pages). Hard-wrapped text is judged by paragraph; `count_by: chars`
weighs each line by its length, so an article's headings and list items do not outvote its prose, and
counts a paragraph as punctuated when a sentence ends inside it (informal text often drops the last full
stop; a full stop with no space before the next sentence's capital counts too)."""

from __future__ import annotations

import re

from lm_platform.data.corpus.text import Doc, units
from lm_platform.data.curation.filters.base import Filter
from lm_platform.data.curation.filters.gopher_repetition import duplicates
from lm_platform.data.curation.filters.lines import is_section_mark, unit_phrases
from lm_platform.data.curation.filters.resources import function_words
from lm_platform.recipe.filter_settings import FineWebFilter as FineWebFilter

_RUNNING = re.compile(r"[,.!?;:、。！？，」』]")
_TIGHT_END = re.compile(r"[^\W\d_][.!?][^\W\d_]")


def _run_on_sentence_end(line: str) -> bool:
    """A sentence ends inside the line without a space after its full stop ("người Hà Lan.Vào năm"):
    a lower-case letter, the mark, an upper-case letter (so "U.S." and "J.B." do not count)."""
    return any(m[0][0].islower() and m[0][2].isupper() for m in _TIGHT_END.finditer(line))


class FineWeb(Filter):
    name = "fineweb"

    def __init__(self, cfg, lang: str):
        super().__init__(cfg, lang)
        self.function_words = function_words(lang) if cfg.phrases_end_lines else frozenset()

    def check(self, doc: Doc) -> str | None:
        c, text = self.cfg, doc.text
        # hard-wrapped text: paragraphs, not wrapped lines; section marks ("＊", "一") separate parts
        lines = [u for u in units(text) if not is_section_mark(u)]
        if not lines:
            return "empty"
        phrase = dict(zip(lines, unit_phrases(doc, lines, self.function_words), strict=True))
        stop = tuple(c.stop_chars)
        weight = (lambda _ln: 1) if c.count_by == "lines" else len
        total = sum(map(weight, lines))
        if c.count_by == "lines":
            punctuated = [ln for ln in lines if ln.endswith(stop) or phrase[ln]]
        else:  # a paragraph whose sentences end inside it is punctuated, whatever its last character
            inner = tuple(f"{ch} " for ch in stop if ch in ".!?") + tuple(ch for ch in stop if ch in "。！？")
            punctuated = [
                ln
                for ln in lines
                if ln.endswith(stop) or any(m in ln for m in inner) or _run_on_sentence_end(ln) or phrase[ln]
            ]
        ratio = sum(map(weight, punctuated)) / total
        if ratio < c.line_punct_thr and not (ratio == 0 and c.line_punct_exclude_zero):
            return f"line_punct_ratio: {ratio:.2f} < {c.line_punct_thr}"
        ratio = sum(weight(ln) for ln in lines if len(ln) <= c.short_line_length and not phrase[ln]) / total
        if ratio > c.short_line_thr:
            return f"short_line_ratio: {ratio:.2f} > {c.short_line_thr}"
        body = len(text) - text.count("\n")
        # A refrain or a stock reply repeated is verse and drama (running text: a phrase, or a line with
        # a sentence mark or a comma); a repeated menu item, link or counter is a label, the boilerplate
        # this 1 % rule is for. Repeated running text is gopher_repetition's to judge.
        if c.phrases_end_lines:
            labels = [ln for ln in lines if not (phrase[ln] or _RUNNING.search(ln))]
        else:
            labels = lines
        ratio = duplicates(labels)[1] / max(body, 1)
        if ratio > c.char_duplicates_ratio:
            return f"char_dup_ratio: {ratio:.3f} > {c.char_duplicates_ratio}"
        words = doc.words
        ratio = len(lines) / max(len(words), 1)  # newlines between lines; blank lines and marks do not list
        if ratio > c.new_line_ratio:
            return f"list_ratio: {ratio:.2f} > {c.new_line_ratio}"
        return None
