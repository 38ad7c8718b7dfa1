"""C4 rules (Raffel et al. 2020) with datatrove's definitions and defaults.

Lines without terminal punctuation, with fewer than 3 words, with a word over 1000 characters, or
mentioning javascript or a cookie/terms policy are dropped from the text; a document with "lorem ipsum"
or a curly bracket, or fewer than 5 sentences left, is dropped. For Japanese, words per line are MeCab
words (a line has no spaces; the document's one MeCab pass, shared with the other filters) and sentences
end at 。！？ as well. Hard-wrapped text (books, mail) is judged by paragraph, not by wrapped line, and a
rewrite never removes most of a document: past `max_removed_fraction` the document is dropped instead
(with its reason), as a page that is mostly boilerplate.
"""

from __future__ import annotations

import re
from itertools import filterfalse

from lm_platform.data.corpus.text import Doc, hard_wrapped, is_symbol, split_sentences, split_words, units
from lm_platform.data.curation.filters.base import Filter
from lm_platform.data.curation.filters.lines import is_phrase, line_words, phrase_words
from lm_platform.data.curation.filters.resources import function_words
from lm_platform.recipe.filter_settings import C4Filter as C4Filter

_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")


class C4(Filter):
    name = "c4"

    def __init__(self, cfg, lang: str):
        super().__init__(cfg, lang)
        self.end = tuple(cfg.end_punctuation) + (("。", "！", "？", "」", "』") if lang == "ja" else ())
        self.policy = tuple(p.lower() for p in cfg.policy_substrings)
        self.function_words = function_words(lang) if cfg.phrases_end_lines else frozenset()

    def _words(self, doc: Doc, line: str, index: int | None) -> list[str]:
        if self.lang == "ja":
            return doc.line_words[index] if index is not None else split_words(line, "ja")
        return line.split()

    def _units(self, doc: Doc) -> list[tuple[str, int | None]]:
        """(unit, index into doc.lines or None): lines, or paragraphs of hard-wrapped text (a wrapped
        line is half a sentence, not a line to judge)."""
        if self.lang != "ja" and hard_wrapped(doc.lines):
            return [(p, None) for p in units(doc.text)]
        return [(line, i) for i, line in enumerate(doc.lines)]

    def _phrase(self, doc: Doc, line: str, index: int | None) -> bool:
        """Running text without a full stop (verse, a speaker's line): it holds function words."""
        words = self._words_of(doc, line, index)
        return bool(self.function_words) and is_phrase(words, self.function_words, phrase_words(self.lang))

    def _words_of(self, doc: Doc, line: str, index: int | None) -> list[str]:
        return self._words(doc, line, index) if self.lang == "ja" else line_words(line, self.lang)

    def _n_words(self, doc: Doc, line: str, index: int | None) -> int:
        if self.lang == "ja":
            return len(list(filterfalse(is_symbol, self._words(doc, line, index))))
        return len(line.split())

    def check(self, doc: Doc) -> str | None:
        c = self.cfg
        kept: list[str] = []
        sentences = 0
        for line, index in self._units(doc):
            line = line.strip()
            # Japanese writes no spaces: a paragraph is not one 1000-character "word"; MeCab's words are
            if (
                c.max_word_length is not None
                and max(map(len, self._words(doc, line, index)), default=0) > c.max_word_length
            ):
                continue
            if c.remove_citations:
                line = _CITATION.sub("", line)
            unended = not line.endswith(self.end) or line.endswith("...")
            if c.filter_no_terminal_punct and unended and not self._phrase(doc, line, index):
                continue
            if c.min_words_per_line is not None and self._n_words(doc, line, index) < c.min_words_per_line:
                continue
            low = line.lower()
            if c.filter_lorem_ipsum and "lorem ipsum" in low:
                return "lorem_ipsum"
            if c.filter_javascript and "javascript" in low:
                continue
            if c.filter_curly_bracket and "{" in line:
                return "curly_bracket"
            if self.policy and any(p in low for p in self.policy):
                continue
            sentences += len(split_sentences(line))
            kept.append(line)
        if c.min_num_sentences is not None and sentences < c.min_num_sentences:
            return f"too_few_sentences: {sentences} < {c.min_num_sentences}"
        if c.rewrite:
            new = "\n".join(kept).strip()
            body = len(doc.text) - doc.text.count("\n")
            removed = 1 - (len(new) - new.count("\n")) / body if body else 0.0
            if removed > c.max_removed_fraction:
                return f"rewrite_would_remove: {removed:.2f} of the text > {c.max_removed_fraction}"
            doc.replace_text(new)
        return None
