"""Navigation- and footer-like documents: a page's navigation (menu strips, breadcrumbs, dates), mostly
short labels, or lines with boilerplate markers.

Short lines alone do not make a menu: verse, a play's speaker lines and a letter's greeting are short
lines too, but they are phrases (they hold the language's function words), and section marks (`＊`,
`一`) separate the parts of a work. Only short labels count as menu lines."""

from __future__ import annotations

from lm_platform.data.corpus.text import Doc
from lm_platform.data.curation.filters.base import Filter
from lm_platform.data.curation.filters.lines import (
    is_phrase,
    is_section_mark,
    line_words,
    navigation_kinds,
    phrase_words,
)
from lm_platform.data.curation.filters.resources import function_words
from lm_platform.recipe.filter_settings import BoilerplateFilter as BoilerplateFilter


class Boilerplate(Filter):
    name = "boilerplate"

    def __init__(self, cfg, lang: str):
        super().__init__(cfg, lang)
        self.markers = tuple(m.lower() for m in cfg.markers)
        self.function_words = function_words(lang)

    def _label(self, doc: Doc, i: int) -> bool:
        """A short line that is not a phrase: a menu item, a heading, a date."""
        line = doc.lines[i]
        if len(line.strip()) >= self.cfg.short_line_chars:
            return False
        words = doc.line_words[i] if self.lang == "ja" else line_words(line, self.lang)
        phrase = is_phrase(words, self.function_words, min_words=phrase_words(self.lang))
        return not phrase and not is_section_mark(line)

    def check(self, doc: Doc) -> str | None:
        c = self.cfg
        index = [i for i, ln in enumerate(doc.lines) if ln.strip() and not is_section_mark(ln)]
        lines = [doc.lines[i] for i in index]
        if len(lines) < 2:
            return None
        labels = [self._label(doc, i) for i in index]
        kinds, n_nav, n_menu = navigation_kinds(lines, self.lang, labels, self.markers)
        if (
            c.max_navigation_kinds is not None
            and len(kinds) > c.max_navigation_kinds
            and (n_nav + n_menu) / len(lines) >= c.min_navigation_line_fraction
        ):
            return f"navigation: {', '.join(sorted(kinds))} lines ({n_nav + n_menu})"
        if c.max_navigation_line_fraction is not None and n_nav / len(lines) > c.max_navigation_line_fraction:
            return f"navigation-line fraction {n_nav / len(lines):.2f} > {c.max_navigation_line_fraction}"
        short_lines = [ln for ln, label in zip(lines, labels, strict=True) if label]
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
