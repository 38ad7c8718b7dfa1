"""Exact verification of MinHash candidate pairs before any document is removed.

Banding finds candidate pairs; their signatures only estimate the Jaccard similarity (112 permutations
put a pair at a true 0.75 above 0.8 about one time in ten, and short templated documents sit there in
numbers). Each candidate is therefore checked on the documents themselves: the texts of every document
in a candidate pair are read back from the shards the signatures were computed from, shingled again
exactly as for the signature, and the pair is kept when the exact Jaccard of the two shingle sets reaches
the threshold (as NeMo Curator's false-positive check does).

Memory stays bounded: pairs whose signatures already estimate far less are rejected first; the shingles
of the candidate documents are spilled to one file on disk (read through a memory map) with an offset
per document, and the shards are read batch by batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lm_platform.data.dedup.minhash import TokenHasher, shingles


def prefilter_bound(threshold: float, num_perm: int) -> float:
    """The estimated Jaccard below which a pair is rejected without reading it: four standard errors
    of the signature estimate under `threshold` (a pair truly at `threshold` falls below it about once in
    30,000)."""
    return threshold - 4 * math.sqrt(threshold * (1 - threshold) / num_perm)


def jaccard_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted arrays of unique hashes (0 when both are empty)."""
    if a.size == 0 or b.size == 0:
        return 0.0
    if a.size > b.size:
        a, b = b, a
    pos = np.searchsorted(b, a)
    pos[pos == b.size] = b.size - 1
    inter = int(np.count_nonzero(b[pos] == a))
    return inter / (a.size + b.size - inter)


@dataclass(frozen=True)
class SourceTexts:
    """Where one source's documents are read back and how they were shingled: the shards the signatures
    came from (in shard order), and the ids the signatures recorded for each shard."""

    shards: Sequence[Path]
    chars: bool
    ngram: int
    ids_of: Callable[[int], list[str]]  # shard -> the ids recorded with its signatures


@dataclass
class VerifyStats:
    checked: int = 0  # candidate pairs whose texts were compared
    prefiltered: int = 0  # rejected on the signature estimate, without reading the texts
    verified: int = 0  # exact Jaccard >= threshold
    rejected: int = 0  # prefiltered + exact Jaccard < threshold
    docs_read: int = 0
    seconds: float = 0.0


class StaleTexts(RuntimeError):
    """A shard's documents are not the ones its signatures were computed from."""


def _spill_shingles(
    docs: np.ndarray,
    locate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]],
    sources: Sequence[SourceTexts],
    spill: Path,
) -> np.ndarray:
    """Write the shingles of `docs` (sorted global ids) to `spill` one after the other; returns the
    offsets (len(docs) + 1) of each document's shingles in the file."""
    src_i, shard_i, row_i = locate(docs)
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    hasher = TokenHasher()
    written = 0
    with open(spill, "wb") as fh:
        bounds = np.flatnonzero(np.r_[True, (src_i[1:] != src_i[:-1]) | (shard_i[1:] != shard_i[:-1]), True])
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            if lo == hi:
                continue
            si, k = int(src_i[lo]), int(shard_i[lo])
            src = sources[si]
            if k >= len(src.shards):
                raise StaleTexts(f"signatures name shard {k} of a source with {len(src.shards)} shards")
            path = src.shards[k]
            expected = src.ids_of(k)
            rows = row_i[lo:hi]  # ascending: global ids are in (source, shard, row) order
            j = lo
            base = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=2048, columns=["id", "text"]):
                end = base + batch.num_rows
                stop = lo + int(np.searchsorted(rows, end))
                if stop > j:
                    ids = batch.column("id")
                    texts = batch.column("text")
                    for at in range(j, stop):
                        r = int(row_i[at]) - base
                        doc_id = ids[r].as_py()
                        if doc_id != expected[int(row_i[at])]:
                            raise StaleTexts(
                                f"{path}: row {int(row_i[at])} is '{doc_id}', its signature was computed "
                                f"for '{expected[int(row_i[at])]}'"
                            )
                        sh = shingles(texts[r].as_py(), src.ngram, src.chars, hasher)
                        fh.write(sh.astype("<u8", copy=False).tobytes())
                        written += sh.size
                        offsets[at + 1] = written
                    j = stop
                base = end
                if j >= hi:
                    break
            if j < hi:
                raise StaleTexts(f"{path}: {base} rows, its signatures have row {int(row_i[hi - 1])}")
    return offsets


def verify_pairs(
    a: np.ndarray,
    b: np.ndarray,
    estimate: Callable[[np.ndarray, np.ndarray], np.ndarray],
    locate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]],
    sources: Sequence[SourceTexts],
    threshold: float,
    num_perm: int,
    spill_dir: str | Path,
) -> tuple[np.ndarray, VerifyStats]:
    """Which candidate pairs (a[i], b[i]) (global document ids) are near duplicates by the exact Jaccard
    of their shingle sets; `estimate(a, b)` gives the signatures' estimates (for the prefilter)."""
    t0 = time.perf_counter()
    stats = VerifyStats()
    keep = np.zeros(a.size, dtype=bool)
    if a.size == 0:
        return keep, stats
    close = estimate(a, b) >= prefilter_bound(threshold, num_perm)
    stats.prefiltered = int(a.size - np.count_nonzero(close))
    idx = np.flatnonzero(close)
    if idx.size:
        docs = np.unique(np.concatenate([a[idx], b[idx]]))
        spill = Path(spill_dir) / "shingles.u64"
        offsets = _spill_shingles(docs, locate, sources, spill)
        stats.docs_read = int(docs.size)
        empty = np.empty(0, dtype=np.uint64)
        grams = np.memmap(spill, dtype="<u8", mode="r") if offsets[-1] else empty  # no zero-length map
        pa_ = np.searchsorted(docs, a[idx])
        pb_ = np.searchsorted(docs, b[idx])
        for i, x, y in zip(idx.tolist(), pa_.tolist(), pb_.tolist(), strict=True):
            sa = grams[offsets[x] : offsets[x + 1]]
            sb = grams[offsets[y] : offsets[y + 1]]
            keep[i] = jaccard_sorted(sa, sb) >= threshold
        del grams
        spill.unlink()
        stats.checked = int(idx.size)
    stats.verified = int(np.count_nonzero(keep))
    stats.rejected = int(a.size - stats.verified)
    stats.seconds = time.perf_counter() - t0
    return keep, stats
