"""Gopher repetition rules (Rae et al. 2021, table A1), with datatrove's definitions and defaults:
duplicate lines and paragraphs, the most frequent n-grams, and characters inside repeated n-grams.
N-grams are over words with a run of one repeated punctuation mark counted once (a whitespace word, as in
Gopher), and a most frequent n-gram counts only from three occurrences."""

from __future__ import annotations

import math
import re
from itertools import compress

import numpy as np

from lm_platform.data.corpus.text import Doc, is_symbol
from lm_platform.data.curation.filters.base import Filter
from lm_platform.data.curation.filters.lines import is_section_mark
from lm_platform.data.curation.filters.resources import function_words, stop_words
from lm_platform.recipe.filter_settings import GopherRepetitionFilter

_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")


def duplicates(items: list[str]) -> tuple[int, int]:
    """(repeated items, characters in repeated items), counting every occurrence after the first."""
    seen: set[str] = set()
    n = chars = 0
    for item in items:
        if item in seen:
            n += 1
            chars += len(item)
        else:
            seen.add(item)
    return n, chars


class _Grams:
    """A document's words as integer ids, with 64-bit hashes of their n-grams: repeats are found on
    integers (numpy), not on joined strings, and give the same counts (a collision is 1 in 2**64)."""

    def __init__(self, words: list[str]):
        vocab: dict[str, int] = {}
        self.ids = np.array([vocab.setdefault(w, len(vocab)) for w in words], dtype=np.uint64)
        self.cum = np.concatenate(([0], np.cumsum([len(w) for w in words], dtype=np.int64)))
        self._keys: dict[int, np.ndarray] = {}
        self._members: dict[int, np.ndarray] = {}

    def keys(self, n: int) -> np.ndarray:
        """h_n[i] = h_(n-1)[i] * P + ids[i + n - 1] + 1 (mod 2**64), h_0 = 0: each n extends the
        hashes of n - 1 by one word (the rules ask for n = 2, 3, 4, then 5 to 10)."""
        if n in self._keys:
            return self._keys[n]
        m = len(self.ids) - n + 1
        if m <= 0:
            h = np.zeros(0, dtype=np.uint64)
        else:
            prev = max((k for k in self._keys if k < n), default=0)
            h = self._keys[prev][:m] if prev else np.zeros(m, dtype=np.uint64)
            with np.errstate(over="ignore"):
                for k in range(prev, n):
                    h = h * np.uint64(1_000_003) + self.ids[k : k + m] + np.uint64(1)
        self._keys[n] = h
        return h

    def chars(self, n: int) -> np.ndarray:
        """Characters of each n-gram's words (no separators)."""
        return self.cum[n:] - self.cum[:-n]

    def top_chars(self, n: int) -> int:
        keys = self.keys(n)
        if not len(keys):
            return 0
        _, first, counts = np.unique(keys, return_index=True, return_counts=True)
        best = counts.max()
        # An n-gram seen once is not repeated, and one said twice is a short text naming its subject
        # again (a question's title in its body, a lead's name in its second sentence): datatrove counts
        # both, so a 50-character Japanese lead or a 300-character answer "repeats" a 4-gram by 16 % of
        # its characters. Keyword spam says its phrases many times.
        if best < 3:
            return 0
        at = int(first[counts == best].min())  # the first of the most frequent, as Counter.most_common
        return (int(self.chars(n)[at]) + n - 1) * int(best)

    def _later(self, n: int) -> np.ndarray:
        """Positions (ascending) whose n-gram occurred earlier in the text. An n-gram occurring twice
        starts with an (n-1)-gram occurring twice, so after n - 1 only the positions of repeated
        (n-1)-grams are sorted (few in prose), not the whole text."""
        keys = self.keys(n)
        prev = self._members.get(n - 1)
        pos = np.arange(len(keys)) if prev is None else prev[prev < len(keys)]
        sub = keys[pos]
        order = np.argsort(sub, kind="stable")  # equal keys stay in text order (`pos` ascends)
        ordered = sub[order]
        same = ordered[1:] == ordered[:-1]
        grouped = np.zeros(len(sub), dtype=bool)
        grouped[1:] |= same
        grouped[:-1] |= same
        self._members[n] = np.sort(pos[order[grouped]])  # every occurrence of a repeated n-gram
        return np.sort(pos[order[1:][same]])

    def repeated_chars(self, n: int) -> int:
        keys = self.keys(n)
        if len(keys) < 2:
            return 0
        # Positions whose n-gram occurred earlier (a stable sort keeps equal keys in text order): only
        # there can the greedy count find a repeat. Every other position is a first occurrence, added
        # to `seen` when the walk visits it; runs of those are added at once.
        later = self._later(n)
        if not len(later):  # no n-gram occurs twice: nothing to count (most prose)
            return 0
        lengths = self.chars(n)
        keys_list = keys.tolist()
        seen: set[int] = set()
        chars = i = 0
        for c in later.tolist():
            if c < i:  # inside the n-gram just counted: skipped, as datatrove's walk skips it
                continue
            seen.update(keys_list[i:c])  # first occurrences the walk visits one by one
            key = keys_list[c]
            if key in seen:
                chars += int(lengths[c])
                i = c + n
            else:
                seen.add(key)
                i = c + 1
        return chars


DIVERSITY_WINDOW = 50


def word_diversity(
    words: list[str], window: int = DIVERSITY_WINDOW, samples: int = 40, folded: bool = False
) -> float | None:
    """Moving-average type-token ratio (Covington & McFall 2010): distinct words per window of `window`
    words (punctuation left out, case folded), averaged over up to `samples` windows spread over the
    text (`folded`: `words` are already without punctuation and case folded); None for a text shorter than two windows (too short to say: a one-line definition names its subject again and again)."""
    w = words if folded else [x.lower() for x in words if not is_symbol(x)]
    if len(w) < 2 * window:
        return None
    step = max(1, (len(w) - window) // samples)
    ratios = [len(set(w[i : i + window])) / window for i in range(0, len(w) - window + 1, step)]
    return sum(ratios) / len(ratios)


# List separators a keyword-stuffed page puts between a keyword and its echo (not hyphens and dashes: a
# hyphen joins a reduplicated name, "cha-cha").
ECHO_SEPARATORS = frozenset(["、", "・", ",", "，", "/", "|", "·", "／", "｜"])
_HIRAGANA = re.compile(r"[\u3040-\u309f]")


def _content(word: str, lang: str, function_words: frozenset[str]) -> bool:
    """A word that can be a keyword: not a function word, not a number, two characters or more with a
    letter; in Japanese written without hiragana (names and nouns are kanji or katakana; particles and
    inflected words, the stuff of a poem's refrain, are hiragana)."""
    if len(word) < 2 or word.lower() in function_words or not any(c.isalpha() for c in word):
        return False
    return not (lang == "ja" and _HIRAGANA.search(word))


def keyword_echoes(words: list[str], lang: str, function_words: frozenset[str]) -> tuple[int, int]:
    """(echoes, different echoed phrases): a phrase of one to three words holding a content word,
    said again right after a list separator ("即日融資、即日融資", "giá rẻ, giá rẻ")."""
    n, phrases = 0, set()
    last = len(words) - 1
    # Separator positions found in C (a Python loop over every word cost 3 % of the chain).
    for i in compress(range(1, last), map(ECHO_SEPARATORS.__contains__, words[1:last])):
        nxt = words[i + 1].lower()
        for k in (1, 2, 3):
            if i - k < 0 or i + k > last:
                break
            if words[i - k].lower() != nxt:  # an echo starts with the word after the separator
                continue
            before, after = words[i - k : i], words[i + 1 : i + 1 + k]
            if [w.lower() for w in before] == [w.lower() for w in after] and not any(map(is_symbol, before)):
                if any(_content(w, lang, function_words) for w in before):
                    n += 1
                    phrases.add(" ".join(before).lower())
                break
    return n, len(phrases)


_DIGITS = re.compile(r"\d+")


def lexical_richness(words: list[str], limit: int = 400) -> float | None:
    """Herdan's C over the first `limit` words (case folded, without punctuation; every number the same
    word): log(distinct) / log(total); None for a text of under 50 words. C depends on length far less
    than a type-token ratio, and reads the whole page, not a 50-word window."""
    w = [_DIGITS.sub("0", x) for x in words[:limit]]
    if len(w) < 50:
        return None
    return math.log(len(set(w))) / math.log(len(w))


def collapse_symbol_runs(words: list[str]) -> list[str]:
    """Words with each run of one repeated punctuation token kept once. Gopher's words are whitespace
    tokens, so a ruler of 48 asterisks or underscores (an e-mail signature, a legal notice) is one word;
    our tokenizer cuts it into one token per character, and a single ruler became a 4-gram said 45 times."""
    # The last word kept always equals the word before (a dropped word repeats the kept one).
    return [w for w, prev in zip(words, [None, *words], strict=False) if w != prev or not is_symbol(w)]


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent n-gram (joined with spaces) times its count, when it
    occurs at least three times."""
    return _Grams(words).top_chars(n)


def repeated_ngram_chars(words: list[str], n: int) -> int:
    """Characters in n-grams seen before, skipping past each repeat (datatrove's greedy count; an
    n-gram's characters are its words' characters, joined without a separator, as there)."""
    return _Grams(words).repeated_chars(n)


class GopherRepetition(Filter):
    name = "gopher_repetition"

    def __init__(self, cfg: GopherRepetitionFilter, lang: str):
        super().__init__(cfg, lang)
        self.function_words = function_words(lang) | stop_words(lang)

    def check(self, doc: Doc) -> str | None:
        c, text = self.cfg, doc.text
        if not text:
            return "empty"
        # Section marks ("＊", "一", "二") separate a work's parts: a work in twelve parts says "＊" eleven
        # times, and one that restarts its numbering repeats "一"; neither is repeated text.
        paragraphs = [p for p in _PARAGRAPHS.split(text.strip()) if not is_section_mark(p)] or [""]
        n, chars = duplicates(paragraphs)
        if c.dup_para_frac is not None and n / len(paragraphs) > c.dup_para_frac:
            return f"dup_para_frac: {n / len(paragraphs):.2f}"
        if c.dup_para_char_frac is not None and chars / len(text) > c.dup_para_char_frac:
            return f"dup_para_char_frac: {chars / len(text):.2f}"
        lines = [ln for ln in _LINES.split(text) if not is_section_mark(ln)] or [""]
        n, chars = duplicates(lines)
        if c.dup_line_frac is not None and n / len(lines) > c.dup_line_frac:
            return f"dup_line_frac: {n / len(lines):.2f}"
        if c.dup_line_char_frac is not None and chars / len(text) > c.dup_line_char_frac:
            return f"dup_line_char_frac: {chars / len(text):.2f}"
        if c.min_word_diversity is not None:
            if len(doc.words) <= 20_000:  # content words, case folded, shared with other filters
                diversity = word_diversity(doc.lower_content, folded=True)
            else:
                diversity = word_diversity(doc.words[:20_000])
            if diversity is not None and diversity < c.min_word_diversity:
                return f"word_diversity: {diversity:.2f} distinct words per window < {c.min_word_diversity}"
        if c.min_lexical_richness is not None:
            richness = lexical_richness(doc.lower_content, c.richness_words)
            if richness is not None and richness < c.min_lexical_richness:
                return f"lexical_richness: Herdan's C {richness:.2f} < {c.min_lexical_richness}"
        if c.max_keyword_echoes is not None:
            echoes, phrases = keyword_echoes(doc.words, self.lang, self.function_words)
            rate = 100 * echoes / max(len(doc.content_words), 1)
            if phrases >= c.min_keyword_echoes and rate > c.max_keyword_echoes:
                return (
                    f"keyword_echo: {echoes} echoes of {phrases} phrases, {rate:.1f} per 100 words "
                    f"> {c.max_keyword_echoes}"
                )
        grams = _Grams(collapse_symbol_runs(doc.words))
        for n_, frac in c.top_n_grams:
            share = grams.top_chars(n_) / len(text)
            if share > frac:
                return f"top_{n_}_gram: {share:.2f} > {frac}"
        for n_, frac in sorted(c.dup_n_grams):
            chars = grams.repeated_chars(n_)
            if not chars:  # no n-gram repeats, so no longer one does either
                break
            share = chars / len(text)
            if share > frac:
                return f"duplicated_{n_}_n_grams: {share:.2f} > {frac}"
        return None
