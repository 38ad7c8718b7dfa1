"""The filter interface: one small class per concern, configured by its recipe entry.

`check(doc)` returns None to keep the document or a short reason to drop it. A filter may also rewrite
the text (C4 drops lines) through `doc.replace_text`. `on_raw` filters see the text before
normalisation (broken encoding is a property of the input, and NFKC would blur it).
"""

from __future__ import annotations

from lm_platform.data.corpus.text import Doc


class Filter:
    name = "filter"
    on_raw = False

    def __init__(self, cfg, lang: str):
        self.cfg, self.lang = cfg, lang

    def check(self, doc: Doc) -> str | None:
        raise NotImplementedError

    def __call__(self, text: str, url: str | None = None) -> str | None:
        """Judge a bare text (tests, notebooks); curation calls `check` on a shared `Doc`."""
        return self.check(Doc(text, self.lang, url))
