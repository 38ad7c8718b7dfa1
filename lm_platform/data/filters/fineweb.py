"""FineWeb quality rules (Penedo et al. 2024) with datatrove's definitions and defaults: share of
lines ending in terminal punctuation, share of short lines, characters in duplicated lines, and
newlines per word (list-like pages)."""

from __future__ import annotations

from lm_platform.data.filters.base import Filter
from lm_platform.data.filters.gopher_repetition import duplicates
from lm_platform.data.text import Doc


class FineWeb(Filter):
    name = "fineweb"

    def check(self, doc: Doc) -> str | None:
        c, text = self.cfg, doc.text
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if not lines:
            return "empty"
        stop = tuple(c.stop_chars)
        ratio = sum(ln.endswith(stop) for ln in lines) / len(lines)
        if ratio < c.line_punct_thr and not (ratio == 0 and c.line_punct_exclude_zero):
            return f"line_punct_ratio: {ratio:.2f} < {c.line_punct_thr}"
        ratio = sum(len(ln) <= c.short_line_length for ln in lines) / len(lines)
        if ratio > c.short_line_thr:
            return f"short_line_ratio: {ratio:.2f} > {c.short_line_thr}"
        body = len(text) - text.count("\n")
        ratio = duplicates(lines)[1] / max(body, 1)
        if ratio > c.char_duplicates_ratio:
            return f"char_dup_ratio: {ratio:.3f} > {c.char_duplicates_ratio}"
        words = doc.words
        ratio = text.count("\n") / max(len(words), 1)
        if ratio > c.new_line_ratio:
            return f"list_ratio: {ratio:.2f} > {c.new_line_ratio}"
        return None
