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
from collections.abc import Iterable, Sequence
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
        out = np.empty(len(words), dtype=np.uint64)
        for i, w in enumerate(words):
            h = cache.get(w)
            if h is None:
                h = int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little")
                if len(cache) >= self._max:
                    cache.clear()
                cache[w] = h
            out[i] = h
        return out


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
        """uint32 signature; all 0xFFFFFFFF for a text without shingles (it never collides by band)."""
        if shingle_hashes.size == 0:
            return np.full(self.num_perm, 0xFFFFFFFF, dtype=np.uint32)
        a, b = params
        with np.errstate(over="ignore"):
            values = (shingle_hashes[:, None] * a[None, :] + b[None, :]) >> np.uint64(32)
        return values.min(axis=0).astype(np.uint32)


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


def cluster(
    band_columns: Iterable[np.ndarray],
    n_docs: int,
    signature_of=None,
    threshold: float | None = None,
    max_group_pairs: int = 64,
) -> tuple[UnionFind, int, int]:
    """Union documents whose band keys collide in any band (`band_columns`: one (n_docs,) uint64 array
    per band, doc ids in keep order). With `signature_of` and `threshold`, a colliding pair joins only
    when the signatures estimate a Jaccard similarity of at least `threshold`. In a bucket of many
    documents, each is compared with up to `max_group_pairs` earlier members.

    Returns the union-find, candidate pairs seen, and pairs joined."""
    uf = UnionFind(n_docs)
    candidates = joined = 0
    checked: set[tuple[int, int]] = set()
    for keys in band_columns:
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(sorted_keys)]
        multi = np.flatnonzero(ends - starts > 1)
        for g in multi:
            members = np.sort(order[starts[g] : ends[g]])
            for j in range(1, len(members)):
                b = int(members[j])
                for i in range(max(0, j - max_group_pairs), j):
                    a = int(members[i])
                    if (a, b) in checked:
                        continue
                    checked.add((a, b))
                    candidates += 1
                    if uf.find(a) == uf.find(b):
                        continue
                    if (
                        signature_of is not None
                        and threshold is not None
                        and estimated_jaccard(signature_of(a), signature_of(b)) < threshold
                    ):
                        continue
                    if uf.union(a, b):
                        joined += 1
                    if signature_of is None:
                        break  # without verification, one link per member suffices
    return uf, candidates, joined
