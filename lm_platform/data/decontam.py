"""Decontamination: training documents that share a long n-gram with an evaluation set are removed.

N-grams are taken on the normalised text (case folded, punctuation removed): word n-grams (13 by
default, as in GPT-3's decontamination), or character n-grams for languages written without spaces.
Each evaluation set becomes a sorted array of 64-bit n-gram hashes; a document is checked with one
vectorised lookup per set.

An evaluation text shorter than one n-gram (a short question, a multiple-choice question joined with its
answer) is indexed whole: a document leaks it when its normalised text contains the whole item. Items
under a minimum length (`min_words` words, `min_chars` characters for unspaced scripts) are skipped and
counted, so that common phrases do not wipe out documents.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from lm_platform.data.minhash import TokenHasher, ngram_hashes, token_hashes
from lm_platform.recipe.schema import Recipe


def multiple_choice_text(question: str, answer: str) -> str:
    """The text a multiple-choice item is decontaminated on: its question joined with its answer."""
    return f"{question.strip()}\n{answer.strip()}"


@dataclass
class SetSummary:
    """What an evaluation set contributes: items, n-grams, items indexed whole, items too short."""

    items: int = 0
    ngrams: int = 0
    whole_items: int = 0
    too_short: int = 0


@dataclass
class Decontaminator:
    """N-gram hashes of each evaluation set (and its short items, whole), and what was found."""

    ngram: int = 13
    char_ngram: int = 25
    char_languages: tuple[str, ...] = ("ja", "zh", "th")
    min_words: int = 8
    min_chars: int = 15
    sets: dict[str, np.ndarray] = field(default_factory=dict)
    # set -> (chars?, item length in units) -> sorted hashes of the whole short items of that length
    whole: dict[str, dict[tuple[bool, int], np.ndarray]] = field(default_factory=dict)
    summary: dict[str, SetSummary] = field(default_factory=dict)
    _hasher: TokenHasher = field(default_factory=TokenHasher, repr=False)

    def _mode(self, lang: str) -> tuple[bool, int, int]:
        chars = lang in self.char_languages
        return (
            chars,
            (self.char_ngram if chars else self.ngram),
            (self.min_chars if chars else self.min_words),
        )

    def add_set(self, name: str, docs: Iterable[tuple[str, str]]) -> int:
        """Add an evaluation set of (lang, text) pairs (for multiple-choice items, the text of
        `multiple_choice_text`); returns its number of distinct n-grams and whole short items."""
        parts: list[np.ndarray] = []
        whole: dict[tuple[bool, int], list[int]] = {}
        summary = SetSummary()
        for lang, text in docs:
            summary.items += 1
            chars, n, minimum = self._mode(lang)
            tokens = token_hashes(text, chars, self._hasher)
            if tokens.size >= n:
                parts.append(ngram_hashes(tokens, n))
            elif tokens.size >= minimum:
                whole.setdefault((chars, int(tokens.size)), []).append(
                    int(ngram_hashes(tokens, tokens.size)[0])
                )
            else:
                summary.too_short += 1
        grams = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)
        self.sets[name] = grams
        self.whole[name] = {k: np.unique(np.array(v, dtype=np.uint64)) for k, v in whole.items()}
        summary.ngrams = int(grams.size)
        summary.whole_items = sum(int(v.size) for v in self.whole[name].values())
        self.summary[name] = summary
        return summary.ngrams + summary.whole_items

    def matches(self, text: str, lang: str) -> dict[str, int]:
        """Evaluation sets sharing at least one n-gram (or containing a whole short item) with `text`,
        with the number of shared n-grams and items."""
        chars, n, _ = self._mode(lang)
        tokens = token_hashes(text, chars, self._hasher)
        found: dict[str, int] = {}
        if tokens.size == 0:
            return found
        grams = np.unique(ngram_hashes(tokens, n)) if tokens.size >= n else None
        by_length: dict[int, np.ndarray] = {}
        for name, ref in self.sets.items():
            hits = _count_in(ref, grams) if grams is not None else 0
            for (item_chars, k), items in self.whole.get(name, {}).items():
                if item_chars != chars or k > tokens.size:
                    continue
                if k not in by_length:
                    by_length[k] = np.unique(ngram_hashes(tokens, k))
                hits += _count_in(items, by_length[k])
            if hits:
                found[name] = hits
        return found


def _count_in(ref: np.ndarray, values: np.ndarray) -> int:
    """How many of `values` are in the sorted array `ref`."""
    if ref.size == 0 or values.size == 0:
        return 0
    pos = np.searchsorted(ref, values)
    pos[pos == ref.size] = 0
    return int(np.count_nonzero(ref[pos] == values))


def recipe_decontaminator(recipe: Recipe) -> Decontaminator | None:
    """The recipe's decontaminator with every evaluation set it names loaded (`evaluation_texts`: held-out
    documents from local files or hub datasets, each multiple-choice question joined with its answer, dev
    shots included, generation prompts); None when decontamination is off."""
    from lm_platform.evaluation.sets import evaluation_texts

    dc = recipe.decontamination
    if dc is None or not dc.enabled:
        return None
    d = Decontaminator(dc.ngram, dc.char_ngram, dc.char_languages, dc.min_words, dc.min_chars)
    for ev in recipe.evaluations:
        if dc.evaluations is None or ev.name in dc.evaluations:
            d.add_set(ev.name, evaluation_texts(ev))
    return d
