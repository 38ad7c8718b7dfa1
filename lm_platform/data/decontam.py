"""Decontamination: training documents that share a long n-gram with an evaluation set are removed.

N-grams are taken on the normalised text (case folded, punctuation removed): word n-grams (13 by
default, as in GPT-3's decontamination), or character n-grams for languages written without spaces.
Each evaluation set becomes a sorted array of 64-bit n-gram hashes; a document is checked with one
vectorised lookup per set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from lm_platform.data.minhash import TokenHasher, normalise, shingles


@dataclass
class Decontaminator:
    """N-gram hashes of each evaluation set, and what was found in training documents."""

    ngram: int = 13
    char_ngram: int = 25
    char_languages: tuple[str, ...] = ("ja", "zh", "th")
    sets: dict[str, np.ndarray] = field(default_factory=dict)
    _hasher: TokenHasher = field(default_factory=TokenHasher, repr=False)

    def _grams(self, text: str, lang: str) -> np.ndarray:
        chars = lang in self.char_languages
        n = self.char_ngram if chars else self.ngram
        units = len(normalise(text).replace(" ", "")) if chars else len(normalise(text).split())
        if units < n:  # shorter than one n-gram: nothing long enough to count as a leak
            return np.empty(0, dtype=np.uint64)
        return shingles(text, n, chars, self._hasher)

    def add_set(self, name: str, docs: Iterable[tuple[str, str]]) -> int:
        """Add an evaluation set of (lang, text) pairs; returns its number of distinct n-grams."""
        parts = [self._grams(text, lang) for lang, text in docs]
        grams = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)
        self.sets[name] = grams
        return int(grams.size)

    def matches(self, text: str, lang: str) -> dict[str, int]:
        """Evaluation sets sharing at least one n-gram with `text`, with the number of shared n-grams."""
        grams = self._grams(text, lang)
        found: dict[str, int] = {}
        if grams.size == 0:
            return found
        for name, ref in self.sets.items():
            if ref.size == 0:
                continue
            pos = np.searchsorted(ref, grams)
            pos[pos == ref.size] = 0
            hits = int(np.count_nonzero(ref[pos] == grams))
            if hits:
                found[name] = hits
        return found
