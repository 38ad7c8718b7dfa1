"""MinHash signatures, LSH banding and union-find clustering for near-duplicate removal.

Shingles are hashed n-grams of the normalised text (case folded, punctuation and symbols removed):
word n-grams, or character n-grams (spaces removed) for languages written without spaces. Each
permutation is a multiply-shift hash of the 64-bit shingle hash, keeping the top 32 bits, so a
signature is `bands * rows` uint32 values and the whole computation is vectorised per document.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_MASK64 = (1 << 64) - 1
_NGRAM_BASE = np.uint64(0x100000001B3)  # FNV prime: combines token hashes into n-gram hashes
_SPACES = re.compile(r" {2,}")


class _WordCharsOrSpace(dict):
    """str.translate table: letters, marks and numbers stay, anything else becomes a space (filled
    lazily: each distinct character is classified once)."""

    def __missing__(self, codepoint: int) -> int:
        keep = unicodedata.category(chr(codepoint))[0] in "LNM"
        self[codepoint] = codepoint if keep else 32
        return self[codepoint]


_WORD_OR_SPACE = _WordCharsOrSpace()


def normalise(text: str) -> str:
    """Case folded, NFKC, punctuation/symbols/whitespace collapsed to single spaces."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold().translate(_WORD_OR_SPACE)).strip()


class TokenHasher:
    """Stable 64-bit hashes of words, cached (bounded) because natural text repeats its words."""

    def __init__(self, max_cache: int = 500_000):
        self._cache: dict[str, int] = {}
        self._max = max_cache

    def __call__(self, words: Sequence[str]) -> np.ndarray:
        cache = self._cache
        values = list(map(cache.get, words))  # the common case (every word seen before) stays in C
        if None in values:
            if len(cache) + len(values) > self._max:
                cache.clear()
            for i, (w, h) in enumerate(zip(words, values, strict=True)):
                if h is None:
                    h = cache.get(w)
                    if h is None:
                        h = int.from_bytes(
                            hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little"
                        )
                        cache[w] = h
                    values[i] = h
        return np.array(values, dtype=np.uint64) if values else np.empty(0, dtype=np.uint64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads the bits of combined hashes."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def ngram_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every n-gram of a sequence of token hashes (one n-gram if shorter than n)."""
    if tokens.size == 0:
        return tokens
    if tokens.size < n:
        n = tokens.size
    with np.errstate(over="ignore"):
        acc = tokens[: tokens.size - n + 1].copy()
        for j in range(1, n):
            acc = acc * _NGRAM_BASE + tokens[j : tokens.size - n + 1 + j]
        return _mix(acc)


def token_hashes(text: str, chars: bool, hasher: TokenHasher | None = None) -> np.ndarray:
    """64-bit hashes of the normalised text's units: words, or characters (spaces removed) when `chars`."""
    norm = normalise(text)
    if chars:
        codes = np.frombuffer(norm.replace(" ", "").encode("utf-32-le"), dtype=np.uint32)
        with np.errstate(over="ignore"):
            return _mix(codes.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    return (hasher or TokenHasher())(norm.split())


def shingles(text: str, n: int, chars: bool, hasher: TokenHasher | None = None) -> np.ndarray:
    """Unique hashed shingles of a text: word n-grams, or character n-grams when `chars`."""
    return np.unique(ngram_hashes(token_hashes(text, chars, hasher), n))


@dataclass(frozen=True)
class MinHasher:
    """`bands * rows` permutations; the same seed gives the same signatures on every machine."""

    bands: int = 14
    rows: int = 8
    seed: int = 1

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    def params(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        a = rng.integers(0, 2**63, size=self.num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        b = rng.integers(0, 2**63, size=self.num_perm, dtype=np.uint64)
        return a, b

    def signature(self, shingle_hashes: np.ndarray, params: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """uint32 signature; all 0xFFFFFFFF for a text without shingles (it never collides by band).
        Repeated shingles change nothing (a minimum), so the hashes need not be unique."""
        if shingle_hashes.size == 0:
            return np.full(self.num_perm, 0xFFFFFFFF, dtype=np.uint32)
        a, b = params
        values = np.multiply.outer(shingle_hashes, a)  # wraps modulo 2**64, in place from here on
        values += b
        # the top 32 bits of the smallest value are the smallest top 32 bits (shifting keeps the order)
        return (values.min(axis=0) >> np.uint64(32)).astype(np.uint32)


def band_keys(signatures: np.ndarray, bands: int, rows: int, offset: int = 0) -> np.ndarray:
    """(docs, bands) uint64 keys: the rows of each band hashed together. Documents without shingles
    get keys of their own (from their global position `offset + i`), so they never collide."""
    sig = signatures.astype(np.uint64).reshape(len(signatures), bands, rows)
    with np.errstate(over="ignore"):
        acc = np.full(sig.shape[:2], 0xCBF29CE484222325, dtype=np.uint64)
        for r in range(rows):
            acc = (acc ^ sig[:, :, r]) * _NGRAM_BASE
        acc = _mix(acc)
    empty = (signatures == 0xFFFFFFFF).all(axis=1)
    if empty.any():
        ids = np.flatnonzero(empty).astype(np.uint64) + np.uint64(offset)
        acc[empty] = ~(ids[:, None] * np.uint64(bands) + np.arange(bands, dtype=np.uint64)[None, :])
    return acc


class UnionFind:
    """Disjoint sets over 0..n-1; the root of a set is its smallest member (the one kept)."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return int(root)

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if ra < rb:
            self.parent[rb] = ra
        else:
            self.parent[ra] = rb
        return True

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(sig_a == sig_b))


def candidate_pairs(keys: np.ndarray, window: int = 64) -> np.ndarray:
    """Pairs of documents whose band key is equal, as sorted unique `a * n + b` codes (uint64, a < b;
    `keys` holds one band's key per document id 0..n-1, ids in keep order). In a bucket each member is
    paired with up to `window` earlier members, so a bucket of many documents stays linear.

    Columnar: one stable sort of the keys and a few arrays of n values, no Python per document."""
    n = len(keys)
    if n < 2:
        return np.empty(0, dtype=np.uint64)
    order = np.argsort(keys, kind="stable")  # equal keys keep ascending ids
    sorted_keys = keys[order]
    new_group = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    del sorted_keys
    starts = np.flatnonzero(new_group)
    rank = np.arange(n, dtype=np.int64) - np.repeat(starts, np.diff(np.r_[starts, n]))
    del new_group, starts
    codes = []
    for back in range(1, window + 1):
        at = np.flatnonzero(rank >= back)
        if at.size == 0:
            break
        codes.append(order[at - back].astype(np.uint64) * np.uint64(n) + order[at].astype(np.uint64))
    return np.unique(np.concatenate(codes)) if codes else np.empty(0, dtype=np.uint64)


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of the graph on 0..n-1 with edges (a[i], b[i]): each node's root is the
    smallest member of its component (the document kept). Vectorised label propagation with pointer
    jumping over numpy arrays (no per-node Python objects)."""
    labels = np.arange(n, dtype=np.int64)
    if a.size == 0:
        return labels
    a = a.astype(np.int64, copy=False)
    b = b.astype(np.int64, copy=False)
    while True:
        la, lb = labels[a], labels[b]
        low = np.minimum(la, lb)
        if np.array_equal(la, lb):
            return labels
        np.minimum.at(labels, la, low)  # hook each root under the smallest root it touches
        np.minimum.at(labels, lb, low)
        while True:  # pointer jumping until every node points at a root
            nxt = labels[labels]
            if np.array_equal(nxt, labels):
                break
            labels = nxt
