"""Language-aware text units shared by the filters: words, lines, paragraphs, sentences.

Words: English and other space-separated languages use a rule-based tokenizer close to spaCy's blank
English one (what datatrove uses), so thresholds carried over from datatrove mean the same thing.
Vietnamese is written one syllable per space-separated token, so its "words" are syllables (the Gopher
and FineWeb counts become syllable counts; the recipe sets thresholds for that). Japanese has no spaces:
words come from MeCab (fugashi) with the UniDic-lite dictionary, both shipped on PyPI; if they are not
installed, a documented character-class fallback cuts runs of one script (kanji, hiragana, katakana,
Latin, digits) and each punctuation mark.
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import filterfalse

import fugashi

# spaCy-like English tokenization: URLs, dotted abbreviations, ellipses, decimal numbers, contractions
# split off ("do" + "n't", "It" + "'s"), word runs, and every other symbol on its own.
_WORD_RE = re.compile(
    r"https?://\S+|www\.\S+|(?:[A-Za-z]\.){2,}|\.\.\.|\d+(?:[.,]\d+)+|\w+(?=n't\b)|n't\b"
    r"|['’](?:s|re|ll|ve|d|m)\b|\w+|[^\w\s]"
)
# Japanese fallback: a run of one script, or one other non-space character.
_JA_RUN_RE = re.compile(
    r"[\u4e00-\u9fff\u3400-\u4dbf々〆]+|[\u3040-\u309f]+|[\u30a0-\u30ffー]+|[A-Za-z]+|[0-9]+|\S"
)
PUNCTUATION = frozenset(
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»„—–…·•►、。，．：；？！「」『』【】（）〈〉《》〔〕［］｛｝・～％＃＆＊＠￥"
)
# Line ends that close a sentence, across the recipe languages.
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "。", "！", "？", "」", "』", "…", ")", "）", "”", "’")
_SENT_RE = re.compile(r"[^.!?。！？]*(?:[.!?。！？]+[\"'”’」』)）]*|$)")


@lru_cache(maxsize=1)
def _tagger():
    try:
        return fugashi.Tagger()
    except Exception:  # no fugashi/dictionary installed: the character-class fallback applies
        return None


@lru_cache(maxsize=1)
def _wakati():
    """MeCab in word-splitting mode: the same words as the tagger's nodes' surfaces, written as one string
    joined by ASCII spaces (no node objects built: a fifth faster). A surface can hold an ideographic
    space (U+3000) but never an ASCII one, so the string splits on " " only."""
    if _tagger() is None:
        return None
    try:
        return fugashi.Tagger("-Owakati")
    except Exception:
        return None


def japanese_line_words(text: str) -> list[list[str]]:
    """Japanese words per line (`text.splitlines()`), from one MeCab pass over the document."""
    wakati = _wakati()
    tagger = _tagger() if wakati is None else None
    out: list[list[str]] = []
    for line in text.splitlines():  # MeCab works per line; long documents stay cheap
        if not line.strip():
            out.append([])
        elif wakati is not None:
            out.append([w for w in wakati.parse(line).split(" ") if w.strip()])
        elif tagger is not None:
            out.append([w.surface for w in tagger(line) if w.surface.strip()])
        else:
            out.append(_JA_RUN_RE.findall(line))
    return out


def japanese_words(text: str) -> list[str]:
    """Japanese words from MeCab (UniDic-lite), or script runs when MeCab is not available."""
    return [w for line in japanese_line_words(text) for w in line]


def split_words(text: str, lang: str) -> list[str]:
    """The text's words (Vietnamese: syllables) with punctuation as separate tokens."""
    if lang == "ja":
        return japanese_words(text)
    return _WORD_RE.findall(text)


def split_sentences(text: str) -> list[str]:
    """Sentences of one line: cut after terminal punctuation (and any closing quotes)."""
    return [s.strip() for s in _SENT_RE.findall(text) if s.strip()]


@lru_cache(maxsize=1 << 16)
def is_symbol(word: str) -> bool:
    return set(word) <= PUNCTUATION


class Doc:
    """One document's text with its derived units computed once and shared by all filters."""

    __slots__ = ("text", "lang", "url", "_words", "_lines", "_line_words", "_content", "_lower_content")

    def __init__(self, text: str, lang: str, url: str | None = None):
        self.text, self.lang, self.url = text, lang, url
        self._words: list[str] | None = None
        self._content: list[str] | None = None
        self._lower_content: list[str] | None = None
        self._lines: list[str] | None = None
        self._line_words: list[list[str]] | None = None

    @property
    def line_words(self) -> list[list[str]]:
        """Words of each line of `lines`; Japanese: one MeCab pass per document, shared by every filter
        (the document's `words` are these, flattened)."""
        if self._line_words is None:
            if self.lang == "ja":
                self._line_words = japanese_line_words(self.text)
            else:
                self._line_words = [split_words(line, self.lang) for line in self.lines]
        return self._line_words

    @property
    def words(self) -> list[str]:
        if self._words is None:
            if self.lang == "ja":
                self._words = [w for line in self.line_words for w in line]
            else:
                self._words = split_words(self.text, self.lang)
        return self._words

    @property
    def content_words(self) -> list[str]:
        """`words` without punctuation tokens (gopher_quality, gopher_repetition, prose, flagged_words)."""
        if self._content is None:
            self._content = list(filterfalse(is_symbol, self.words))
        return self._content

    @property
    def lower_content(self) -> list[str]:
        """`content_words` in lower case."""
        if self._lower_content is None:
            self._lower_content = [w.lower() for w in self.content_words]
        return self._lower_content

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = self.text.splitlines()
        return self._lines

    def replace_text(self, text: str) -> None:
        """A filter rewrote the text (C4 drops lines): derived units are recomputed on demand."""
        if text != self.text:
            self.text, self._words, self._lines, self._line_words = text, None, None, None
            self._content = self._lower_content = None


def hard_wrapped(lines: list[str]) -> bool:
    """Lines cut at a fixed width of 50-100 columns (books, e-mail, Usenet): most lines end close to the
    widest, and blank lines separate paragraphs. Menus and lists of titles are not wrapped text."""
    lengths = sorted(len(ln) for ln in lines if ln.strip())
    if len(lengths) < 4 or len(lengths) == len(lines):  # wrapped prose has blank lines between paragraphs
        return False
    width = lengths[int(0.95 * (len(lengths) - 1))]
    return 50 <= width <= 100 and sum(ln >= 0.7 * width for ln in lengths) >= 0.6 * len(lengths)


def units(text: str) -> list[str]:
    """The document's non-empty lines, or for hard-wrapped text its paragraphs (blank-line separated, rejoined)."""
    lines = text.split("\n")
    if not hard_wrapped(lines):
        return [ln for ln in lines if ln.strip()]
    paras = [" ".join(ln.strip() for ln in p.split("\n")) for p in re.split(r"\n\s*\n", text)]
    return [p for p in paras if p.strip()]
