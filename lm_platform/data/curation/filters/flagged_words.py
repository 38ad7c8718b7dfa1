"""Share of flagged words (a word list named in the recipe, one entry a line; '#' starts a comment).

Entries are matched against the document's words (Vietnamese syllables, Japanese MeCab words) in lower
case; entries of several words are matched as phrases on the lower-cased text. Japanese has no word
boundaries and MeCab may cut a listed compound in pieces, so for Japanese every entry is counted as a
substring (one word per occurrence).
"""

from __future__ import annotations

from pathlib import Path

from lm_platform.data.corpus.text import Doc
from lm_platform.data.curation.filters.base import Filter
from lm_platform.recipe.filter_settings import FlaggedWordsFilter as FlaggedWordsFilter


def load_word_list(path: str | Path) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [ln.strip().lower() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


class FlaggedWords(Filter):
    name = "flagged_words"

    def __init__(self, cfg, lang: str):
        super().__init__(cfg, lang)
        entries = load_word_list(cfg.path)
        self.words = frozenset(e for e in entries if " " not in e)
        self.phrases = tuple(e for e in entries if " " in e)

    def check(self, doc: Doc) -> str | None:
        words = doc.lower_content
        if not words:
            return None
        if self.lang == "ja":
            low = doc.text.lower()
            hits = sum(low.count(e) for e in (*self.words, *self.phrases))
        else:
            hits = sum(w in self.words for w in words)
        if self.phrases and self.lang != "ja":
            low = doc.text.lower()
            hits += sum(low.count(p) * len(p.split()) for p in self.phrases)
        ratio = hits / len(words)
        if ratio > self.cfg.max_ratio:
            return f"flagged-word ratio {ratio:.3f} > {self.cfg.max_ratio}"
        return None
