"""Decontamination: training documents that reproduce an evaluation item are removed; templates are not.

N-grams are taken on the normalised text (case folded, punctuation removed): word n-grams (13 by
default, as in GPT-3's decontamination), or character n-grams for languages written without spaces.

One shared 13-gram is thin evidence on real text: every article of a family (football clubs, communes,
species) shares template sentences, and so does an evaluation item of that family. So a document is
judged by two things:

- **Templates are ignored.** The training corpus is read once first (`observe`), counting in how many
  documents each evaluation n-gram occurs; an n-gram found in at least `frequent_docs` documents is
  boilerplate or a template and does not count as evidence.
- **Share of an item.** A document leaks an item when the n-grams it shares with the item (frequent
  ones left out) cover at least `min_share` of the item's words, counted over the words that the
  item's non-frequent n-grams cover at all (so a verbatim copy scores 1.0 whatever the item's share of
  template), or at least `min_copied_words` words (`min_copied_chars` characters) of it: a long
  held-out article is leaked by a copied section too. An item made only of frequent n-grams cannot be
  told from its template and is counted as uninformative.

An evaluation text shorter than one n-gram (a short question, a multiple-choice question joined with its
answer) is indexed whole: a document leaks it when its normalised text contains the whole item. Items
under a minimum length (`min_words` words, `min_chars` characters for unspaced scripts) are skipped and
counted, so that common phrases do not wipe out documents.

A copy is not a template: a document that reproduces at least `copy_share` of an item (counted over all
of the item's n-grams, frequent or not) does not count towards the frequency of that item's n-grams. So an
item copied into many documents (an exam question on every quiz site) is removed from each of them, while
the sentence a family of articles shares with an item (a small share of it) still counts as a template.
An item that is itself no more than a template sentence is, by that rule, reproduced whole by every
article of the family, and those articles are removed: its whole text is in them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from lm_platform.data.dedup.minhash import TokenHasher, ngram_hashes, token_hashes
from lm_platform.recipe.schema import EvalConfig, Recipe


def multiple_choice_text(question: str, answer: str) -> str:
    """The text a multiple-choice item is decontaminated on: its question joined with its answer."""
    return f"{question.strip()}\n{answer.strip()}"


@dataclass
class SetSummary:
    """What an evaluation set contributes and what was found of it.

    `items`, `ngrams` (distinct), `whole_items` (shorter than one n-gram, matched whole), `too_short`
    (skipped); after `observe`: `frequent_ngrams` (ignored as templates) and `uninformative` (items made
    only of those); after matching: `items_found` (distinct items some document reproduced)."""

    items: int = 0
    ngrams: int = 0
    whole_items: int = 0
    too_short: int = 0
    frequent_ngrams: int = 0
    uninformative: int = 0
    items_found: int = 0


@dataclass
class Leak:
    """The evaluation item a document reproduces most of: its index in the set, the share of it
    reproduced, and the (non-frequent) n-grams shared with it (1 for an item matched whole)."""

    item: int
    share: float
    shared_ngrams: int


@dataclass
class _Set:
    """One evaluation set's index: every (n-gram hash, item, position) sorted by hash, the distinct
    hashes with their document frequency in the training corpus, and each item's length."""

    hashes: np.ndarray  # uint64, sorted, with repeats (an n-gram in several items or places)
    item: np.ndarray  # int32, aligned with `hashes`
    pos: np.ndarray  # int32, position of the n-gram in its item
    chars: np.ndarray  # bool per item: character n-grams
    unique: np.ndarray  # uint64, distinct hashes
    df: np.ndarray  # int64, aligned with `unique`: documents observed containing it
    # (chars?, item length in units) -> (sorted hashes of whole short items, their item index)
    whole: dict[tuple[bool, int], tuple[np.ndarray, np.ndarray]]
    coverable: np.ndarray | None = None  # per item: words covered by its non-frequent n-grams
    total: np.ndarray | None = None  # per item: words covered by all of its n-grams
    found: set[int] = field(default_factory=set)


def _covered(pos: np.ndarray, n: int) -> int:
    """Units covered by n-grams starting at the sorted unique positions `pos`."""
    if pos.size == 0:
        return 0
    return int(np.minimum(np.diff(pos), n).sum()) + n


@dataclass
class Decontaminator:
    """N-gram index of each evaluation set (and its short items, whole), corpus frequencies of those
    n-grams, and what was found."""

    ngram: int = 13
    char_ngram: int = 25
    char_languages: tuple[str, ...] = ("ja", "zh", "th")
    min_words: int = 8
    min_chars: int = 15
    min_share: float = 0.5
    frequent_docs: int = 10
    copy_share: float = 0.8
    min_copied_words: int | None = 200
    min_copied_chars: int | None = 600
    summary: dict[str, SetSummary] = field(default_factory=dict)
    _sets: dict[str, _Set] = field(default_factory=dict, repr=False)
    _hasher: TokenHasher = field(default_factory=TokenHasher, repr=False)

    @property
    def sets(self) -> dict[str, np.ndarray]:
        """Evaluation set -> its distinct n-gram hashes."""
        return {name: s.unique for name, s in self._sets.items()}

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
        hashes: list[np.ndarray] = []
        items: list[np.ndarray] = []
        positions: list[np.ndarray] = []
        chars_of: list[bool] = []
        whole: dict[tuple[bool, int], list[tuple[int, int]]] = {}
        summary = SetSummary()
        for i, (lang, text) in enumerate(docs):
            summary.items += 1
            chars, n, minimum = self._mode(lang)
            chars_of.append(chars)
            tokens = token_hashes(text, chars, self._hasher)
            if tokens.size >= n:
                g = ngram_hashes(tokens, n)
                hashes.append(g)
                items.append(np.full(g.size, i, dtype=np.int32))
                positions.append(np.arange(g.size, dtype=np.int32))
            elif tokens.size >= minimum:
                key = (chars, int(tokens.size))
                whole.setdefault(key, []).append((int(ngram_hashes(tokens, tokens.size)[0]), i))
            else:
                summary.too_short += 1
        if hashes:
            h, it, ps = np.concatenate(hashes), np.concatenate(items), np.concatenate(positions)
            order = np.argsort(h, kind="stable")
            h, it, ps = h[order], it[order], ps[order]
        else:
            h, it, ps = np.empty(0, np.uint64), np.empty(0, np.int32), np.empty(0, np.int32)
        unique = np.unique(h)
        packed = {}
        for key, pairs in whole.items():
            arr = np.array([p[0] for p in pairs], dtype=np.uint64)
            idx = np.array([p[1] for p in pairs], dtype=np.int32)
            order = np.argsort(arr, kind="stable")
            packed[key] = (arr[order], idx[order])
        self._sets[name] = _Set(
            h, it, ps, np.array(chars_of, dtype=bool), unique, np.zeros(unique.size, np.int64), packed
        )
        summary.ngrams = int(unique.size)
        summary.whole_items = sum(int(v[0].size) for v in packed.values())
        self.summary[name] = summary
        return summary.ngrams + summary.whole_items

    def _grams(self, text: str, lang: str) -> tuple[bool, np.ndarray, np.ndarray | None]:
        chars, n, _ = self._mode(lang)
        tokens = token_hashes(text, chars, self._hasher)
        grams = np.unique(ngram_hashes(tokens, n)) if tokens.size >= n else None
        return chars, tokens, grams

    def start_corpus(self) -> None:
        """Forget the corpus frequencies and the items found so far (before observing another corpus)."""
        for name, s in self._sets.items():
            s.df[:] = 0
            s.coverable = None
            s.found.clear()
            sm = self.summary[name]
            sm.frequent_ngrams = sm.uninformative = sm.items_found = 0

    def observe(self, text: str, lang: str) -> bool:
        """Count a training document towards the corpus frequency of the evaluation n-grams it contains
        (call for every document of the corpus before `matches`); True when it shares any."""
        _, tokens, grams = self._grams(text, lang)
        if grams is None:
            return False
        hit = False
        for s in self._sets.values():
            if s.unique.size == 0:
                continue
            pos = np.searchsorted(s.unique, grams)
            pos[pos == s.unique.size] = 0
            found = pos[s.unique[pos] == grams]
            if found.size:
                copied = self._copied_hashes(s, s.unique[found])
                if copied.size:  # a copy of an item is no evidence that its n-grams are a template
                    found = found[~np.isin(s.unique[found], copied)]
                s.df[found] += 1  # `grams` is unique, so each position once
                s.coverable = None
                hit = True
        return hit

    def _copied_hashes(self, s: _Set, hashes: np.ndarray) -> np.ndarray:
        """Of a document's evaluation n-grams `hashes` (sorted, distinct), those of the items it
        reproduces at least `copy_share` of, counted over all of each item's n-grams."""
        lo = np.searchsorted(s.hashes, hashes, side="left")
        hi = np.searchsorted(s.hashes, hashes, side="right")
        entries = np.concatenate([np.arange(a, b) for a, b in zip(lo.tolist(), hi.tolist(), strict=True)])
        if s.total is None:
            s.total = self._coverage(s, np.arange(s.hashes.size))
        covered = self._coverage(s, entries)
        copied = np.flatnonzero((s.total > 0) & (covered >= self.copy_share * s.total))
        if copied.size == 0:
            return copied.astype(np.uint64)
        return np.unique(s.hashes[entries][np.isin(s.item[entries], copied)])

    def _coverable(self, s: _Set) -> np.ndarray:
        """Per item, the units its non-frequent n-grams cover (recomputed after `observe`)."""
        if s.coverable is None:
            frequent = s.df[np.searchsorted(s.unique, s.hashes)] >= self.frequent_docs
            s.coverable = self._coverage(s, np.flatnonzero(~frequent))
        return s.coverable

    def _coverage(self, s: _Set, entries: np.ndarray) -> np.ndarray:
        """Per item, units covered by the n-gram `entries` (indices into the set's index)."""
        out = np.zeros(len(s.chars), dtype=np.int64)
        it, ps = s.item[entries], s.pos[entries]
        if it.size == 0:
            return out
        order = np.lexsort((ps, it))
        it, ps = it[order], ps[order]
        bounds = np.flatnonzero(np.r_[True, it[1:] != it[:-1], True])
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            i = int(it[lo])
            n = self.char_ngram if s.chars[i] else self.ngram
            out[i] = _covered(np.unique(ps[lo:hi]), n)
        return out

    def finish_observing(self) -> None:
        """Fill in each set's frequent n-grams and uninformative items (after the last `observe`)."""
        for name, s in self._sets.items():
            coverable = self._coverable(s)
            has_grams = np.zeros(len(s.chars), dtype=bool)
            has_grams[s.item] = True
            self.summary[name].frequent_ngrams = int(np.count_nonzero(s.df >= self.frequent_docs))
            self.summary[name].uninformative = int(np.count_nonzero(has_grams & (coverable == 0)))

    def matches(self, text: str, lang: str) -> dict[str, Leak]:
        """Evaluation sets of which `text` reproduces an item: at least `min_share` of it in non-frequent
        n-grams, or a whole short item. Each set gives the item with the largest share."""
        chars, tokens, grams = self._grams(text, lang)
        found: dict[str, Leak] = {}
        if tokens.size == 0:
            return found
        by_length: dict[int, np.ndarray] = {}
        for name, s in self._sets.items():
            best: Leak | None = None
            if grams is not None and s.hashes.size:
                best = self._best_item(s, grams, chars)
            for (item_chars, k), (items, idx) in s.whole.items():
                if item_chars != chars or k > tokens.size:
                    continue
                if k not in by_length:
                    by_length[k] = np.unique(ngram_hashes(tokens, k))
                pos = np.searchsorted(items, by_length[k])
                pos[pos == items.size] = 0
                hit = pos[items[pos] == by_length[k]]
                if hit.size and (best is None or best.share < 1.0):
                    best = Leak(int(idx[hit[0]]), 1.0, 1)
            if best is not None:
                found[name] = best
                if best.item not in s.found:
                    s.found.add(best.item)
                    self.summary[name].items_found = len(s.found)
        return found

    def _best_item(self, s: _Set, grams: np.ndarray, chars: bool) -> Leak | None:
        """The item `grams` reproduces the largest share of, among those it leaks."""
        lo = np.searchsorted(s.hashes, grams, side="left")
        hi = np.searchsorted(s.hashes, grams, side="right")
        has = hi > lo
        if not has.any():
            return None
        lo, hi = lo[has], hi[has]
        entries = np.concatenate([np.arange(a, b) for a, b in zip(lo.tolist(), hi.tolist(), strict=True)])
        df = s.df[np.searchsorted(s.unique, s.hashes[entries])]
        entries = entries[df < self.frequent_docs]
        entries = entries[s.chars[s.item[entries]] == chars]
        if entries.size == 0:
            return None
        covered = self._coverage(s, entries)
        coverable = self._coverable(s)
        share = np.where(coverable > 0, covered / np.maximum(coverable, 1), 0.0)
        off = np.iinfo(np.int64).max
        words = self.min_copied_words if self.min_copied_words is not None else off
        chars_ = self.min_copied_chars if self.min_copied_chars is not None else off
        leaks = (share >= self.min_share) | ((covered > 0) & (covered >= np.where(s.chars, chars_, words)))
        if not leaks.any():
            return None
        i = int(np.argmax(np.where(leaks, share, -1.0)))
        return Leak(i, float(share[i]), int(np.count_nonzero(s.item[entries] == i)))


def recipe_decontaminator(
    recipe: Recipe, set_texts: Callable[[EvalConfig], Iterable[tuple[str, str]]]
) -> Decontaminator | None:
    """The recipe's decontaminator with every evaluation set it names loaded, each read by `set_texts`
    ((lang, text) pairs; the platform passes `evaluation.sets.evaluation_texts`: held-out documents from
    local files or hub datasets, each multiple-choice question joined with its answer, dev shots
    included, generation prompts); None when decontamination is off. The reader is passed in because
    reading an evaluation set is evaluation's business, which sits above `data/`."""
    dc = recipe.decontamination
    if dc is None or not dc.enabled:
        return None
    d = Decontaminator(
        dc.ngram,
        dc.char_ngram,
        dc.char_languages,
        dc.min_words,
        dc.min_chars,
        min_share=dc.min_share,
        frequent_docs=dc.frequent_docs,
        copy_share=dc.copy_share,
        min_copied_words=dc.min_copied_words,
        min_copied_chars=dc.min_copied_chars,
    )
    for ev in recipe.evaluations:
        if dc.evaluations is None or ev.name in dc.evaluations:
            d.add_set(ev.name, set_texts(ev))
    return d
