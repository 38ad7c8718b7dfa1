"""Navigation- and footer-like documents: mostly short lines, or lines with boilerplate markers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lm_platform.data.filters.base import Filter
from lm_platform.data.text import Doc
from lm_platform.recipe.base import StrictConfig


class BoilerplateFilter(StrictConfig):
    """Navigation- and footer-like documents: mostly short lines, or lines with boilerplate markers."""

    name: Literal["boilerplate"] = "boilerplate"
    short_line_chars: int = Field(30, gt=0)
    max_short_line_fraction: float = Field(0.5, ge=0, le=1)
    max_short_line_char_share: float = Field(
        0.3, ge=0, le=1, description="...and only when the short lines hold more than this share of the text"
    )
    markers: tuple[str, ...] = ("©", "cookie", "javascript", "lorem ipsum", "all rights reserved")
    max_marker_line_fraction: float = Field(0.3, ge=0, le=1)


class Boilerplate(Filter):
    name = "boilerplate"

    def __init__(self, cfg, lang: str):
        super().__init__(cfg, lang)
        self.markers = tuple(m.lower() for m in cfg.markers)

    def check(self, doc: Doc) -> str | None:
        lines = [ln for ln in doc.lines if ln.strip()]
        if len(lines) < 2:
            return None
        short_lines = [ln for ln in lines if len(ln) < self.cfg.short_line_chars]
        short = len(short_lines) / len(lines)
        chars = sum(map(len, short_lines)) / max(sum(map(len, lines)), 1)
        # Headings, list items and verse are short lines too: they make a page boilerplate only when they
        # also hold a large share of its text (a menu page), not when prose holds most of it.
        if short > self.cfg.max_short_line_fraction and chars > self.cfg.max_short_line_char_share:
            return (
                f"short-line fraction {short:.2f} > {self.cfg.max_short_line_fraction} holding "
                f"{chars:.2f} of the text > {self.cfg.max_short_line_char_share}"
            )
        marked = sum(any(m in ln.lower() for m in self.markers) for ln in lines) / len(lines)
        if marked > self.cfg.max_marker_line_fraction:
            return f"boilerplate-marker line fraction {marked:.2f} > {self.cfg.max_marker_line_fraction}"
        return None
