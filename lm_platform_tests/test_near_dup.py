"""MinHash LSH near-duplicate clusters on planted pairs, across sources and shards; decontamination."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lm_platform.data.corpus.documents import DocWriter, iter_docs, make_doc
from lm_platform.data.dedup.decontam import Decontaminator, multiple_choice_text
from lm_platform.data.dedup.deduped import filter_deduped
from lm_platform.data.dedup.minhash import MinHasher, UnionFind, shingles
from lm_platform.data.dedup.near import minhash_signatures, near_dup_clusters, removed_rows
from lm_platform.recipe.schema import NearDupConfig

DEMO_TEXTS = Path(__file__).resolve().parents[1] / "lm_platform" / "demo" / "texts"


def words_doc(rng: random.Random, n: int = 200) -> list[str]:
    vocab = [f"w{i}" for i in range(5000)]
    return rng.choices(vocab, k=n)


def replace_words(words: list[str], k: int, rng: random.Random) -> list[str]:
    """Replace k words spaced 5 apart: about 5k of ~len(words) 5-grams change."""
    out = list(words)
    for pos in rng.sample(range(0, len(words), 5), k):
        out[pos] = f"new{rng.randrange(10**6)}"
    return out


def jaccard5(a: str, b: str) -> float:
    def grams(t):
        w = t.split()
        return {tuple(w[i : i + 5]) for i in range(len(w) - 4)}

    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def write(path: Path, source: str, texts: list[str], lang: str = "en") -> Path:
    with DocWriter(path) as w:
        for i, t in enumerate(texts):
            w.write(make_doc(f"{source}-{i}", t, source, "CC0-1.0", lang))
    return path


def test_signature_estimates_jaccard():
    rng = random.Random(0)
    base = words_doc(rng, 400)
    close = replace_words(base, 4, rng)  # J ~ 0.9
    far = replace_words(base, 30, rng)  # J ~ 0.45
    mh = MinHasher(bands=32, rows=8, seed=3)
    params = mh.params()
    sig = [mh.signature(shingles(" ".join(t), 5, False), params) for t in (base, close, far)]
    for other, text in ((sig[1], close), (sig[2], far)):
        est = float(np.mean(sig[0] == other))
        assert abs(est - jaccard5(" ".join(base), " ".join(text))) < 0.08


def test_planted_pairs_cluster_across_sources_and_priority_keeps_the_winner(tmp_path):
    rng = random.Random(1)
    bases = [words_doc(rng) for _ in range(40)]
    # web (lower priority) holds the originals; books holds close copies of 0..9 and distant
    # rewrites of 10..19; web also holds within-source near copies of 20..24 in a second shard.
    web_a = [" ".join(b) for b in bases]
    web_b = [" ".join(replace_words(bases[i], 2, rng)) for i in range(20, 25)] + [" ".join(words_doc(rng))]
    books = [" ".join(replace_words(bases[i], 2, rng)) for i in range(10)]
    books += [" ".join(replace_words(bases[i], 25, rng)) for i in range(10, 20)]
    assert min(jaccard5(web_a[i], books[i]) for i in range(10)) > 0.85
    assert max(jaccard5(web_a[10 + i], books[10 + i]) for i in range(10)) < 0.6
    cfg = NearDupConfig(bands=14, rows=8, threshold=0.8, workers=2)
    write(tmp_path / "web" / "00000.parquet", "web", web_a)
    write(tmp_path / "web" / "00001.parquet", "web", web_b)
    write(tmp_path / "books" / "00000.parquet", "books", books)
    web_shards = sorted((tmp_path / "web").glob("*.parquet"))
    s = minhash_signatures(web_shards, tmp_path / "sig_web", "en", cfg)
    assert s["shards"] == 2 and s["docs"] == 46
    minhash_signatures([tmp_path / "books" / "00000.parquet"], tmp_path / "sig_books", "en", cfg)
    # Per-shard signatures do not depend on how many workers computed them.
    one = minhash_signatures(web_shards, tmp_path / "sig_web1", "en", cfg.model_copy(update={"workers": 1}))
    assert one["docs"] == 46
    for k in range(2):
        assert np.array_equal(
            np.load(tmp_path / "sig_web" / f"{k:05d}.npy"), np.load(tmp_path / "sig_web1" / f"{k:05d}.npy")
        )
    # books outranks web: it is listed first.
    stats = near_dup_clusters(
        [("books", tmp_path / "sig_books"), ("web", tmp_path / "sig_web")], tmp_path / "near", cfg
    )
    web_removed = removed_rows(tmp_path / "near", "web")
    assert set(web_removed) == {(0, i) for i in range(10)} | {(1, i) for i in range(5)}
    assert all(web_removed[(0, i)] == "books" for i in range(10))
    assert all(web_removed[(1, i)] == "web" for i in range(5))
    assert removed_rows(tmp_path / "near", "books") == {}
    assert stats["per_source"]["web"]["kept_by"] == {"books": 10, "web": 5}
    # The filter writes what is left, with near duplicates counted per winning source.
    res = filter_deduped(web_shards, tmp_path / "web_out.parquet", "web", "en", near_removed=web_removed)
    kept = [d["id"] for d in iter_docs(tmp_path / "web_out.parquet")]
    assert len(kept) == 46 - 15 and res.near_removed == 15
    assert res.near_cross_source_hits == {"books": 10}


def test_union_find_makes_transitive_clusters_and_keeps_the_first():
    uf = UnionFind(6)
    uf.union(4, 2)
    uf.union(2, 5)
    uf.union(1, 3)
    roots = uf.roots().tolist()
    assert roots == [0, 1, 2, 1, 2, 2]


def test_japanese_uses_character_ngrams(tmp_path):
    paras = [p for p in (DEMO_TEXTS / "ja.txt").read_text(encoding="utf-8").split("\n\n") if len(p) > 150][
        :30
    ]
    near = paras[0][:40] + "、そして" + paras[0][40:]  # a few characters inserted
    other = paras[1]
    write(tmp_path / "ja" / "00000.parquet", "ja", [*paras, near], lang="ja")
    cfg = NearDupConfig(char_ngram=5, threshold=0.8)
    minhash_signatures([tmp_path / "ja" / "00000.parquet"], tmp_path / "sig", "ja", cfg)
    near_dup_clusters([("ja", tmp_path / "sig")], tmp_path / "near", cfg)
    assert removed_rows(tmp_path / "near", "ja") == {(0, len(paras)): "ja"}
    # Word shingles would see one "word" per sentence in Japanese: no useful overlap.
    assert shingles(near, 5, chars=False).size < 10 < shingles(other, 5, chars=True).size
    table = pq.read_table(tmp_path / "near" / "removed.parquet").to_pylist()
    assert table[0]["kept_row"] == 0 and table[0]["cluster_size"] == 2


def test_decontamination_removes_and_reports_a_planted_benchmark_leak(tmp_path):
    """A document reproducing most of an evaluation document is removed (whatever its case); one that
    shares a single 13-gram with it (13 of its 60 words) is not: one n-gram is too thin a proof."""
    rng = random.Random(5)
    eval_docs = [" ".join(words_doc(rng, 60)) for _ in range(5)]
    leak_words = eval_docs[2].split()[10:50]  # 40 of the 60 words of an evaluation document
    clean = " ".join(words_doc(rng, 80))
    leak = " ".join(words_doc(rng, 40) + [w.upper() for w in leak_words] + words_doc(rng, 40))
    near_miss = " ".join(words_doc(rng, 40) + leak_words[:13] + words_doc(rng, 40))
    ja_eval = "今日は晴れて、公園には多くの人が集まり、子どもたちは元気に走り回っていました。"
    ja_leak = "昨日の記事によると、" + ja_eval[2:30] + "という。"
    d = Decontaminator(ngram=13, char_ngram=25)
    assert d.add_set("exam", [("en", t) for t in eval_docs]) > 0
    d.add_set("ja_exam", [("ja", ja_eval)])
    with DocWriter(tmp_path / "s2.parquet") as w:
        for i, (t, lang) in enumerate([(clean, "en"), (leak, "en"), (near_miss, "en")]):
            w.write(make_doc(f"en-{i}", t, "web", "CC0-1.0", lang))
    res = filter_deduped(
        [tmp_path / "s2.parquet"],
        tmp_path / "out.parquet",
        "web",
        "en",
        decontaminator=d,
        report_path=tmp_path / "report.parquet",
    )
    assert [x["id"] for x in iter_docs(tmp_path / "out.parquet")] == ["en-0", "en-2"]
    assert res.contaminated_removed == 1 and res.contamination == {"exam": 1, "ja_exam": 0}
    assert res.contamination_sets["exam"]["items_found"] == 1
    report = list(iter_docs(tmp_path / "report.parquet"))
    assert [(r["id"], r["evaluation"], r["item"], r["shared_ngrams"]) for r in report] == [
        ("en-1", "exam", 2, 40 - 12)
    ]
    assert report[0]["share"] == round(40 / 60, 4)
    # Japanese is checked with character n-grams (its language says so); as words it has none.
    assert d.matches(ja_leak, "ja")["ja_exam"].share >= 0.5
    assert d.matches(ja_leak, "en") == {}
    assert d.matches(ja_eval[:24], "ja") == {}  # shorter than one n-gram


def test_short_evaluation_items_are_matched_whole_and_each_set_reports_its_removals(tmp_path):
    """Items shorter than one n-gram (a short question, a multiple-choice question joined with its
    answer) are indexed whole, normalised; items under the minimum length are skipped (a common phrase
    must not remove documents); every set reports how many documents it removed, zero included."""
    qa = multiple_choice_text("Which river flows through the city of Hanoi?", "The Red River")  # 11 words
    common = "in the united states"  # 4 words: under min_words, skipped
    ja_item = "日本で一番高い山は富士山です"  # 14 characters < 25: matched whole (min_chars 10)
    d = Decontaminator(ngram=13, char_ngram=25, min_words=8, min_chars=10)
    assert d.add_set("mcq", [("en", qa), ("en", common)]) == 1
    d.add_set("ja_quiz", [("ja", ja_item)])
    d.add_set("unused", [("en", "a completely different evaluation item that nobody copies at all ever")])
    assert d.summary["mcq"].whole_items == 1 and d.summary["mcq"].too_short == 1
    docs = [
        ("Quiz night! WHICH river flows through the city of Hanoi? -- the red river, of course.", "en"),
        ("Prices in the United States rose again this year, and the river was calm.", "en"),
        ("Which river flows through the city of Hanoi? Nobody knows.", "en"),  # question without answer
    ]
    with DocWriter(tmp_path / "in.parquet") as w:
        for i, (t, lang) in enumerate(docs):
            w.write(make_doc(f"d{i}", t, "web", "CC0-1.0", lang))
    res = filter_deduped([tmp_path / "in.parquet"], tmp_path / "out.parquet", "web", "en", decontaminator=d)
    assert [x["id"] for x in iter_docs(tmp_path / "out.parquet")] == ["d1", "d2"]
    assert res.contamination == {"mcq": 1, "ja_quiz": 0, "unused": 0}
    assert {
        k: v.share for k, v in d.matches("クイズ：日本で一番高い山は、富士山です。正解！", "ja").items()
    } == {"ja_quiz": 1.0}
    assert d.matches("日本で一番高い山は", "ja") == {}


def _synthetic_signatures(directory: Path, n: int, num_perm: int = 112, seed: int = 3) -> None:
    """Random signatures, a tenth near copies of earlier ones, in `minhash_signatures`'s layout."""
    import json

    import pyarrow as pa

    rng = np.random.default_rng(seed)
    sig = rng.integers(0, 2**32 - 1, size=(n, num_perm), dtype=np.uint32)
    copies = rng.choice(np.arange(1, n), size=n // 10, replace=False)
    sig[copies] = sig[(rng.random(copies.size) * copies).astype(np.int64)]
    sig[copies, :3] = rng.integers(0, 2**32 - 1, size=(copies.size, 3), dtype=np.uint32)
    directory.mkdir(parents=True)
    np.save(directory / "00000.npy", sig)
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(n)]}), directory / "00000.ids.parquet")
    (directory / "params.json").write_text(json.dumps({"shard_digests": ["x"]}), encoding="utf-8")


def test_vectorised_clusters_equal_union_find_on_random_graphs():
    from lm_platform.data.dedup.minhash import candidate_pairs, components

    rng = np.random.default_rng(0)
    for n in (1, 2, 50, 400):
        edges = rng.integers(0, n, size=(n // 2 + 1, 2))
        uf = UnionFind(n)
        for a, b in edges.tolist():
            uf.union(a, b)
        assert components(n, edges[:, 0], edges[:, 1]).tolist() == uf.roots().tolist()
    keys = np.array([5, 1, 5, 2, 1, 5, 9], dtype=np.uint64)
    pairs = candidate_pairs(keys, window=64)
    assert sorted((int(p) // 7, int(p) % 7) for p in pairs) == [(0, 2), (0, 5), (1, 4), (2, 5)]
    assert sorted((int(p) // 7, int(p) % 7) for p in candidate_pairs(keys, window=1)) == [
        (0, 2),
        (1, 4),
        (2, 5),
    ]


def test_near_dup_clusters_memory_per_document_is_bounded(tmp_path):
    """Band keys, candidate pairs and clusters are columnar: the traced peak grows by well under the
    112 bytes per document that holding every band key at once costs (the former design held those and
    Python objects per document)."""
    import tracemalloc

    cfg = NearDupConfig(bands=14, rows=8, threshold=0.8, verify="signature")  # no texts here
    peaks = {}
    for n in (200, 10_000, 100_000):  # the first run warms imports up
        _synthetic_signatures(tmp_path / f"sig{n}", n)
        tracemalloc.start()
        stats = near_dup_clusters([("s", tmp_path / f"sig{n}")], tmp_path / f"near{n}", cfg)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert stats["docs"] == n and stats["removed"] >= n // 20
    per_doc = (peaks[100_000] - peaks[10_000]) / 90_000
    assert per_doc < 90, f"{per_doc:.0f} bytes per document"
