"""C4 rules (Raffel et al. 2020) with datatrove's definitions and defaults.

Lines without terminal punctuation, with fewer than 3 words, with a word over 1000 characters, or
mentioning javascript or a cookie/terms policy are dropped from the text; a document with "lorem ipsum"
or a curly bracket, or fewer than 5 sentences left, is dropped. For Japanese, words per line are MeCab
words (a line has no spaces) and sentences end at 。！？ as well.
"""

from __future__ import annotations

import re

from lm_platform.data.filters.base import Filter
from lm_platform.data.text import Doc, is_symbol, split_sentences, split_words

_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")


class C4(Filter):
    name = "c4"

    def __init__(self, cfg, lang: str):
        super().__init__(cfg, lang)
        self.end = tuple(cfg.end_punctuation) + (("。", "！", "？", "」", "』") if lang == "ja" else ())
        self.policy = tuple(p.lower() for p in cfg.policy_substrings)

    def _n_words(self, line: str) -> int:
        if self.lang == "ja":
            return sum(not is_symbol(w) for w in split_words(line, "ja"))
        return len(line.split())

    def check(self, doc: Doc) -> str | None:
        c = self.cfg
        kept: list[str] = []
        sentences = 0
        for line in doc.lines:
            line = line.strip()
            if c.max_word_length is not None and any(len(w) > c.max_word_length for w in line.split()):
                continue
            if c.remove_citations:
                line = _CITATION.sub("", line)
            if c.filter_no_terminal_punct and (not line.endswith(self.end) or line.endswith("...")):
                continue
            if c.min_words_per_line is not None and self._n_words(line) < c.min_words_per_line:
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
            doc.replace_text("\n".join(kept).strip())
        return None
