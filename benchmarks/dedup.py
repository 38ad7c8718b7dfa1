"""Near-duplicate removal: our MinHash LSH stage against datatrove's MinHash pipeline.

Input: a generated English-like corpus (lowercase words, no digits or punctuation, so both libraries'
normalisations agree) in which some documents have planted variants: words replaced at spaced positions
so that the Jaccard similarity of their word 5-gram sets spans 0.4..1.0. The exact Jaccard of every
pair within a family is computed, and every pair either tool puts together is checked exactly too.

Equivalent work: the same documents, word 5-grams, 14 bands x 8 rows (112 permutations), seed 1, one
process each; both run signatures, banding, clustering and filtering. Ground truth: clusters are the
connected components of pairs with exact Jaccard >= 0.8; precision/recall/F1 are over "same cluster"
pairs. Ours verifies LSH candidates against the full signature (estimated Jaccard >= 0.8, the recipe's
default); datatrove keeps every band collision. docs/s is the whole pipeline per round; the ratio is of
the medians over rounds.

    python -m benchmarks.dedup [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from lm_platform.data.dedup import filter_deduped, minhash_signatures, near_dup_clusters
from lm_platform.data.documents import DocWriter, make_doc
from lm_platform.recipe.schema import NearDupConfig

NGRAM, BANDS, ROWS, SEED, THRESHOLD = 5, 14, 8, 1, 0.8


def make_vocab(rng: random.Random, size: int = 8000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = set()
    while len(vocab) < size:
        vocab.add("".join(rng.choices(letters, k=rng.randint(2, 9))))
    return sorted(vocab)


def shingle_set(text: str) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i : i + NGRAM]) for i in range(max(1, len(words) - NGRAM + 1))}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb)


def variant(words: list[str], target: float, vocab: list[str], rng: random.Random) -> list[str]:
    """Replace k words spaced NGRAM apart: about NGRAM*k shingles leave and NGRAM*k arrive, so
    J = (N - NGRAM*k) / (N + NGRAM*k)."""
    n = len(words) - NGRAM + 1
    k = max(1, round(n * (1 - target) / (NGRAM * (1 + target))))
    slots = list(range(0, len(words), NGRAM))
    out = list(words)
    for pos in rng.sample(slots, min(k, len(slots))):
        out[pos] = rng.choice(vocab)
    return out


def build_corpus(n_docs: int, seed: int = 7) -> tuple[list[str], list[int]]:
    """Texts and their family id (variants share their original's family)."""
    rng = random.Random(seed)
    vocab = make_vocab(rng)
    weights = [1 / (i + 1) ** 0.9 for i in range(len(vocab))]
    texts: list[str] = []
    family: list[int] = []
    fam = 0
    while len(texts) < n_docs:
        words = rng.choices(vocab, weights=weights, k=rng.randint(120, 400))
        texts.append(" ".join(words))
        family.append(fam)
        if rng.random() < 0.3:
            for _ in range(rng.randint(1, 3)):
                target = rng.uniform(0.4, 1.0)
                texts.append(" ".join(variant(words, target, vocab, rng)))
                family.append(fam)
        fam += 1
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [family[i] for i in order]


def truth_pairs(texts: list[str], family: list[int]) -> tuple[set[tuple[int, int]], list[float]]:
    members: dict[int, list[int]] = {}
    for i, f in enumerate(family):
        members.setdefault(f, []).append(i)
    edges, sims = [], []
    for group in members.values():
        for a, b in itertools.combinations(sorted(group), 2):
            j = jaccard(texts[a], texts[b])
            sims.append(j)
            if j >= THRESHOLD:
                edges.append((a, b))
    return _cluster_pairs(len(texts), edges), sims


def _cluster_pairs(n: int, edges: list[tuple[int, int]]) -> set[tuple[int, int]]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return {p for g in groups.values() if len(g) > 1 for p in itertools.combinations(sorted(g), 2)}


def score(pred: set[tuple[int, int]], truth: set[tuple[int, int]]) -> tuple[float, float, float]:
    tp = len(pred & truth)
    p = tp / len(pred) if pred else 1.0
    r = tp / len(truth) if truth else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def run_ours(texts: list[str], work: Path) -> tuple[float, set[tuple[int, int]], int]:
    shard = work / "input" / "00000.parquet"
    shard.parent.mkdir(parents=True)
    with DocWriter(shard) as w:
        for i, t in enumerate(texts):
            w.write(make_doc(str(i), t, "bench", "CC0-1.0", "en"))
    cfg = NearDupConfig(word_ngram=NGRAM, bands=BANDS, rows=ROWS, seed=SEED, threshold=THRESHOLD, verify=True)
    t0 = time.perf_counter()
    minhash_signatures([shard], work / "sigs", "en", cfg)
    near_dup_clusters([("bench", work / "sigs")], work / "clusters", cfg)
    from lm_platform.data.dedup import removed_rows

    removed = removed_rows(work / "clusters", "bench")
    res = filter_deduped([shard], work / "out.parquet", "bench", "en", near_removed=removed)
    elapsed = time.perf_counter() - t0
    # Clusters from the removed table: each removed document joins the kept one.
    import pyarrow.parquet as pq

    tab = pq.read_table(work / "clusters" / "removed.parquet").to_pylist()
    edges = [(r["row"], r["kept_row"]) for r in tab]
    return elapsed, _cluster_pairs(len(texts), edges), res.docs_out


def run_datatrove(texts: list[str], work: Path) -> tuple[float, set[tuple[int, int]], int]:
    import struct

    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Whitespace(WordTokenizer):  # datatrove's English tokenizer needs spaCy; words are spaces here
        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    import datatrove.utils.hashes.xxhash as dt_xxhash
    import xxhash

    # datatrove hands str to xxhash, which xxhash >= 4 refuses; encode first so it runs its default
    # (fastest) hash instead of falling back to sha1.
    dt_xxhash.xxhash64 = lambda s: xxhash.xxh64_intdigest(s.encode("utf-8") if isinstance(s, str) else s)

    cfg = MinhashConfig(
        n_grams=NGRAM,
        num_buckets=BANDS,
        hashes_per_bucket=ROWS,
        seed=SEED,
        hash_config=HashConfig(precision=64),
    )
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
    t0 = time.perf_counter()
    MinhashDedupSignature(output_folder=str(work / "sigs"), config=cfg, language=Whitespace()).run(iter(docs))
    for b in range(BANDS):
        list(
            MinhashDedupBuckets(
                input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=cfg
            ).run(None, rank=b, world_size=BANDS)
            or []
        )
    MinhashDedupCluster(
        input_folder=str(work / "buckets"),
        output_folder=str(work / "remove"),
        config=cfg,
        save_cluster_id=True,
    ).run()
    kept = sum(1 for _ in MinhashDedupFilter(input_folder=str(work / "remove")).run(iter(docs)))
    elapsed = time.perf_counter() - t0
    clusters: dict[int, list[int]] = {}
    path = work / "remove" / "000000.clusters"
    if path.exists():
        data = path.read_bytes()
        for doc, cid in struct.iter_unpack("<II", data):
            clusters.setdefault(cid, []).append(doc)
    pairs = {p for g in clusters.values() for p in itertools.combinations(sorted(g), 2)}
    return elapsed, pairs, kept


def main(argv: list[str] | None = None) -> int:
    global BANDS, ROWS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small corpus, under a minute")
    ap.add_argument("--docs", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bands", type=int, default=BANDS, help="LSH bands, for both tools")
    ap.add_argument("--rows", type=int, default=ROWS, help="rows (hashes) per band, for both tools")
    args = ap.parse_args(argv)
    BANDS, ROWS = args.bands, args.rows
    n_docs = args.docs or (2500 if args.quick else 15000)
    texts, family = build_corpus(n_docs)
    truth, sims = truth_pairs(texts, family)
    near = sum(1 for s in sims if 0.7 <= s < 0.9)
    print(
        f"corpus: {len(texts)} docs, {len(set(family))} families, {len(sims)} planted pairs "
        f"({near} with Jaccard in [0.7, 0.9)), {len(truth)} true same-cluster pairs at J >= {THRESHOLD}"
    )
    ours_t, peer_t = [], []
    ours_pairs = peer_pairs = set()
    ours_kept = peer_kept = 0
    print(f"{'round':>5} {'ours docs/s':>12} {'datatrove docs/s':>17}")
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as d:
            t, ours_pairs, ours_kept = run_ours(texts, Path(d) / "ours")
            ours_t.append(t)
            t, peer_pairs, peer_kept = run_datatrove(texts, Path(d) / "peer")
            peer_t.append(t)
            shutil.rmtree(d, ignore_errors=True)
        print(f"{r:>5} {len(texts) / ours_t[-1]:>12,.0f} {len(texts) / peer_t[-1]:>17,.0f}")
    # Pairs outside a planted family are checked exactly: a real near-duplicate counts as true.
    extra = {
        p
        for p in (ours_pairs | peer_pairs) - truth
        if family[p[0]] != family[p[1]] and jaccard(texts[p[0]], texts[p[1]]) >= THRESHOLD
    }
    truth |= extra
    po, ro, fo = score(ours_pairs, truth)
    pp, rp, fp = score(peer_pairs, truth)
    ours = len(texts) / statistics.median(ours_t)
    peer = len(texts) / statistics.median(peer_t)
    agreement = len(ours_pairs & peer_pairs) / max(1, len(ours_pairs | peer_pairs))
    print(f"{'':>10} {'docs/s':>9} {'kept':>6} {'precision':>9} {'recall':>7} {'f1':>6}")
    print(f"{'ours':>10} {ours:>9,.0f} {ours_kept:>6} {po:>9.3f} {ro:>7.3f} {fo:>6.3f}")
    print(f"{'datatrove':>10} {peer:>9,.0f} {peer_kept:>6} {pp:>9.3f} {rp:>7.3f} {fp:>6.3f}")
    print(
        f"RESULT name=dedup ours={ours:.1f} peer={peer:.1f} ratio={ours / peer:.3f} unit=docs/s "
        f"higher_is_better=true f1={fo:.3f} precision={po:.3f} recall={ro:.3f} peer_f1={fp:.3f} "
        f"peer_precision={pp:.3f} peer_recall={rp:.3f} pair_agreement={agreement:.3f} docs={len(texts)} "
        f"bands={BANDS} rows={ROWS}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
