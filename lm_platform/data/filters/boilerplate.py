"""Navigation- and footer-like documents: mostly short lines, or lines with boilerplate markers."""

from __future__ import annotations

from lm_platform.data.filters.base import Filter
from lm_platform.data.text import Doc


class Boilerplate(Filter):
    name = "boilerplate"

    def __init__(self, cfg, lang: str):
        super().__init__(cfg, lang)
        self.markers = tuple(m.lower() for m in cfg.markers)

    def check(self, doc: Doc) -> str | None:
        lines = [ln for ln in doc.lines if ln.strip()]
        if len(lines) < 2:
            return None
        short = sum(len(ln) < self.cfg.short_line_chars for ln in lines) / len(lines)
        if short > self.cfg.max_short_line_fraction:
            return f"short-line fraction {short:.2f} > {self.cfg.max_short_line_fraction}"
        marked = sum(any(m in ln.lower() for m in self.markers) for ln in lines) / len(lines)
        if marked > self.cfg.max_marker_line_fraction:
            return f"boilerplate-marker line fraction {marked:.2f} > {self.cfg.max_marker_line_fraction}"
        return None
