"""Templates are not duplicates and not leaks: near-duplicate removal verifies candidates by their exact
Jaccard, and decontamination ignores corpus-frequent n-grams and decides by the share of an item."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lm_platform.data.corpus.documents import DocWriter, iter_docs, make_doc
from lm_platform.data.dedup.decontam import Decontaminator
from lm_platform.data.dedup.deduped import filter_deduped
from lm_platform.data.dedup.minhash import shingles
from lm_platform.data.dedup.near import minhash_signatures, near_dup_clusters, removed_rows
from lm_platform.data.dedup.near_verify import jaccard_sorted
from lm_platform.recipe.schema import NearDupConfig

# A stub as Wikipedia has thousands of: one template, a few words filled in.
STUB = (
    "{name} is a commune in the Bao Lam district of the province of Lam Dong in the Central Highlands of "
    "Vietnam. The commune of {name} covers an area of about forty square kilometres and had a population of "
    "{pop} inhabitants at the census of 2019, most of whom work in farming, coffee growing and small trade "
    "along the provincial road that links it with the district town and the neighbouring communes"
)


def stub(i: int, rng: random.Random) -> str:
    return STUB.format(name=f"Xa{i:03d}", pop=f"{rng.randint(1000, 9999)}")


def write(path: Path, texts: list[str], lang: str = "en") -> Path:
    with DocWriter(path) as w:
        for i, t in enumerate(texts):
            w.write(make_doc(f"doc-{i}", t, "wiki", "CC-BY-SA-4.0", lang))
    return path


def exact_j(a: str, b: str) -> float:
    return jaccard_sorted(shingles(a, 5, False), shingles(b, 5, False))


def test_templated_stubs_under_the_threshold_are_all_kept_and_a_real_near_copy_is_removed(tmp_path):
    """40 stubs of ~400 characters from one template, every pair at a true Jaccard of 0.6-0.75: exact
    verification keeps every one (the signatures' estimate alone removes some: the trap is real), while
    a copy of one stub with one word changed (true Jaccard >= 0.8) is removed."""
    rng = random.Random(3)
    stubs = [stub(i, rng) for i in range(40)]
    words = stubs[7].split()
    words[40] = "roughly"
    copy = " ".join(words)
    assert all(350 <= len(s) <= 450 for s in stubs)
    sims = [exact_j(a, b) for i, a in enumerate(stubs) for b in stubs[i + 1 :]]
    assert min(sims) >= 0.6 and max(sims) <= 0.75
    assert exact_j(stubs[7], copy) >= 0.8
    shard = write(tmp_path / "wiki" / "00000.parquet", [*stubs, copy])
    removed = {}
    for mode in ("exact", "signature"):
        cfg = NearDupConfig(threshold=0.8, verify=mode)
        minhash_signatures([shard], tmp_path / f"sig-{mode}", "en", cfg)
        stats = near_dup_clusters([("wiki", tmp_path / f"sig-{mode}")], tmp_path / f"near-{mode}", cfg)
        removed[mode] = set(removed_rows(tmp_path / f"near-{mode}", "wiki"))
        if mode == "exact":
            assert stats.rejected_pairs > 0 and stats.verified_pairs == 1 and stats.verify_docs_read > 0
    assert removed["exact"] == {(0, 40)}  # only the real copy; its stub is kept
    table = pq.read_table(tmp_path / "near-exact" / "removed.parquet").to_pylist()
    assert [(r["id"], r["kept_id"]) for r in table] == [("doc-40", "doc-7")]
    assert len(removed["signature"] - {(0, 40)}) >= 1  # stubs the estimate alone would have lost


def test_exact_verification_refuses_texts_that_changed_since_their_signatures(tmp_path):
    """The verifier reads the shards the signatures came from: if those were rewritten with other
    documents, clustering stops with a message naming what to rematerialize."""

    from lm_platform.data.dedup.staleness import StaleNearDuplicates

    rng = random.Random(4)
    stubs = [stub(i, rng) for i in range(10)]
    shard = write(tmp_path / "s" / "00000.parquet", [*stubs, stubs[0] + " again"])
    cfg = NearDupConfig(threshold=0.8)
    minhash_signatures([shard], tmp_path / "sig", "en", cfg)
    with DocWriter(shard) as w:  # same place, other documents
        for i, t in enumerate([*stubs, stubs[0] + " again"]):
            w.write(make_doc(f"other-{i}", t, "wiki", "CC-BY-SA-4.0", "en"))
    with pytest.raises(StaleNearDuplicates, match="materialize minhash"):
        near_dup_clusters([("s", tmp_path / "sig")], tmp_path / "near", cfg)


# A football-club article family: every article carries the same 17-word template sentence.
TEMPLATE = (
    "the club plays its home matches at the municipal stadium and competes in the regional second division"
)


def article(rng: random.Random, vocab: list[str], n: int = 70) -> str:
    words = rng.choices(vocab, k=n)
    at = rng.randrange(10, n - 10)
    return " ".join(words[:at]) + " " + TEMPLATE + " " + " ".join(words[at:])


def test_templated_articles_are_kept_and_a_copy_of_an_evaluation_item_is_removed(tmp_path):
    """Forty training articles share the 17-word template sentence (five 13-grams) with one evaluation
    item: none is removed (the n-grams are frequent in the corpus, and they cover a small share of the
    item anyway). A document copying that item's text is removed, and the set reports one item found and
    one document removed."""
    rng = random.Random(11)
    vocab = [f"w{i}" for i in range(3000)]
    items = [article(rng, vocab) for _ in range(3)]  # the evaluation set: three held-out articles
    articles = [article(rng, vocab) for _ in range(40)]
    copy = "From our archive. " + items[1].upper() + " Read more on our website."
    few = articles[:4]  # a template shared by fewer documents than `frequent_docs`: decided by share alone
    d = Decontaminator(ngram=13, frequent_docs=10, min_share=0.5)
    d.add_set("heldout", [("en", t) for t in items])
    d.add_set("other", [("en", " ".join(rng.choices(vocab, k=60)))])
    shard = write(tmp_path / "in.parquet", [*articles, copy])
    res = filter_deduped([shard], tmp_path / "out.parquet", "wiki", "en", decontaminator=d)
    kept = [x["id"] for x in iter_docs(tmp_path / "out.parquet")]
    assert kept == [f"doc-{i}" for i in range(40)]
    assert res.contaminated_removed == 1 and res.contamination == {"heldout": 1, "other": 0}
    assert res.contamination_sets["heldout"] == {
        "items": 3,
        "items_found": 1,
        "documents_removed": 1,
        "frequent_ngrams": 5,  # the template sentence's 13-grams
        "uninformative_items": 0,
    }
    assert res.contamination_sets["other"]["items_found"] == 0
    # Without corpus frequencies, the share alone keeps the few templated articles as well.
    fresh = Decontaminator(ngram=13, frequent_docs=10, min_share=0.5)
    fresh.add_set("heldout", [("en", t) for t in items])
    assert all(fresh.matches(t, "en") == {} for t in few)
    assert fresh.matches(copy, "en")["heldout"].item == 1


def test_an_item_that_is_mostly_template_keeps_the_family(tmp_path):
    """An evaluation item whose text is the family's template sentence plus a few words of its own (the
    template is 17 of its 23 words, under `copy_share`): the twelve articles carrying the template are not
    copies of it, so its five template 13-grams count as frequent and no article is removed."""
    rng = random.Random(12)
    vocab = [f"w{i}" for i in range(3000)]
    articles = [article(rng, vocab) for _ in range(12)]
    d = Decontaminator(ngram=13, frequent_docs=10)
    d.add_set("stubs", [("en", TEMPLATE + " and was founded by railway workers in nineteen")])
    shard = write(tmp_path / "in.parquet", articles)
    res = filter_deduped([shard], tmp_path / "out.parquet", "wiki", "en", decontaminator=d)
    assert res.contaminated_removed == 0
    assert res.contamination_sets["stubs"]["frequent_ngrams"] == 5


def test_an_item_copied_into_many_documents_is_removed_from_each(tmp_path):
    """An exam item copied into more documents than `frequent_docs` (quiz sites, forums quoting it) is a
    leak in each of them, not a template: a copy does not count towards the item's n-grams being
    frequent. The forty articles that share only the template sentence with another item stay."""
    rng = random.Random(13)
    vocab = [f"w{i}" for i in range(3000)]
    items = [article(rng, vocab) for _ in range(3)]
    articles = [article(rng, vocab) for _ in range(40)]
    copies = [
        " ".join(rng.choices(vocab, k=30)) + "\n" + items[2] + "\n" + " ".join(rng.choices(vocab, k=30))
        for _ in range(15)
    ]
    d = Decontaminator(ngram=13, frequent_docs=10, min_share=0.5)
    d.add_set("exam", [("en", t) for t in items])
    shard = write(tmp_path / "in.parquet", [*articles, *copies])
    res = filter_deduped([shard], tmp_path / "out.parquet", "web", "en", decontaminator=d)
    kept = [x["id"] for x in iter_docs(tmp_path / "out.parquet")]
    assert kept == [f"doc-{i}" for i in range(40)]
    assert res.contaminated_removed == 15
    assert res.contamination_sets["exam"]["items_found"] == 1
    # Without the copy rule (every document counted as template evidence), the copies would all stay.
    lax = Decontaminator(ngram=13, frequent_docs=10, min_share=0.5, copy_share=1.01)
    lax.add_set("exam", [("en", t) for t in items])
    lax_res = filter_deduped([shard], tmp_path / "lax.parquet", "web", "en", decontaminator=lax)
    assert lax_res.contaminated_removed == 0


SHARED = Path(os.environ.get("LM_PLATFORM_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
VI_WIKI = SHARED / "realtext-dev" / "vi_wiki.jsonl"


@pytest.mark.skipif(not VI_WIKI.exists(), reason=f"real development text not found at {VI_WIKI}")
def test_real_wikipedia_held_out_articles_remove_only_copies():
    """60 real Vietnamese Wikipedia articles held out, the other 540 as training text: several training
    articles share a 13-gram with the held-out ones (the former rule removed each of them), none
    reproduces a held-out article, so none is removed; a training article with a held-out article
    pasted in is."""
    import json

    docs = [json.loads(line) for line in VI_WIKI.read_text(encoding="utf-8").splitlines()]
    random.Random(0).shuffle(docs)
    held, train = docs[:60], docs[60:]
    d = Decontaminator(ngram=13)
    d.add_set("held", [("vi", x["text"]) for x in held])
    sharing = sum(d.observe(x["text"], "vi") for x in train)
    d.finish_observing()
    assert sharing >= 3
    assert [x["id"] for x in train if d.matches(x["text"], "vi")] == []
    pasted = train[0]["text"][:500] + "\n" + held[2]["text"] + "\n" + train[0]["text"][500:]
    leak = d.matches(pasted, "vi")["held"]
    assert leak.item == 2 and leak.share == 1.0


def test_the_former_boolean_verify_still_loads():
    assert NearDupConfig(verify=True).verify == "exact" and NearDupConfig(verify=False).verify == "none"
    assert NearDupConfig().verify == "exact"
    with pytest.raises(ValueError, match="verify"):
        NearDupConfig(verify="sometimes")


def test_a_section_copied_from_a_long_item_is_a_leak_a_quoted_sentence_is_not():
    """A 1,000-word held-out article: a document with 300 of its words in a row reproduces only 30 % of
    it but is removed (`min_copied_words`: 200); one quoting 40 of its words is kept."""
    rng = random.Random(13)
    vocab = [f"w{i}" for i in range(5000)]
    item = rng.choices(vocab, k=1000)
    d = Decontaminator(ngram=13, min_share=0.5, min_copied_words=200)
    d.add_set("held", [("en", " ".join(item))])
    around = " ".join(rng.choices(vocab, k=200))
    section = d.matches(around + " " + " ".join(item[300:600]) + " " + around, "en")["held"]
    assert section.item == 0 and abs(section.share - 0.3) < 0.01
    assert d.matches(around + " " + " ".join(item[300:340]) + " " + around, "en") == {}
    strict = Decontaminator(ngram=13, min_share=0.5, min_copied_words=None)
    strict.add_set("held", [("en", " ".join(item))])
    assert strict.matches(around + " " + " ".join(item[300:600]) + " " + around, "en") == {}
