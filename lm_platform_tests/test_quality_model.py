"""The quality model: trained on high-quality sources against web sources, held-out metrics, a model file
that is not a pickle; curation scores every document of a source that declares it and keeps exactly its
top share; blends upsample the top quality bucket within the source's share, with exact token counts,
deterministic by seed; recipe errors name the field."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from lm_platform.data.blending.blend import DOCLIST_FILE, blend_tokens
from lm_platform.data.corpus.documents import DocWriter, iter_docs, make_doc
from lm_platform.data.curation.curate import curate
from lm_platform.data.curation.quality_model import (
    MODEL_FILE,
    WEIGHTS_FILE,
    QualityScorer,
    QualityStep,
    quality_buckets,
    top_share_mask,
    train_quality_model,
)
from lm_platform.recipe.loader import BUNDLED_DIR
from lm_platform.recipe.quality import QualityModelConfig, SourceQuality
from lm_platform.recipe.schema import LanguageConfig

DEMO = BUNDLED_DIR / "demo_data"


def _demo_docs(name: str) -> list[tuple[str, str, str]]:
    """(id, text, label) of a bundled demo source."""
    path = DEMO / name
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [(r["id"], r["text"], r["meta"]["label"]) for r in rows]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A model of English: the demo's clean paragraphs (high quality) against word salad and keyword spam
    made from other demo paragraphs by the noise generator (the demo's en_books and en_web are one pool of
    paragraphs split in two, so they cannot teach a model anything)."""
    from lm_platform.data.curation.noise import make_noise

    clean = [
        (i, t)
        for name in ("en_books.jsonl", "en_web.jsonl.gz")
        for i, t, lab in _demo_docs(name)
        if lab == "clean"
    ]
    books, material = clean[::2], [t for _i, t in clean[1::2]]
    thin = [
        (f"noise/{k}/{j}", t)
        for k in ("word_salad", "keyword_spam")
        for j, t in enumerate(make_noise(k, "en", material, 40, 1))
    ]
    out = tmp_path_factory.mktemp("quality") / "en"
    cfg = QualityModelConfig(positives=("clean",), negatives=("thin",), heldout_fraction=0.3)
    train_quality_model(books, thin, out, "en", cfg, (["clean"], ["thin"]))
    return out


def test_model_is_measured_on_documents_it_never_trained_on_and_is_no_pickle(model_dir):
    info = json.loads((model_dir / MODEL_FILE).read_text(encoding="utf-8"))
    assert info["train_pos"] > 20 and info["train_neg"] > 20
    assert info["heldout_pos"] > 5 and info["heldout_neg"] > 5
    # Held out by a hash of the id: train + held-out = every document given, no overlap.
    assert info["auc"] > 0.9 and 0 < info["precision"] <= 1 and 0 < info["recall"] <= 1
    assert {f["class"] for f in info["top_features"]} == {"high", "low"}
    assert all(":" in f["feature"] for f in info["top_features"])  # named n-grams, not hash columns
    weights = np.load(model_dir / WEIGHTS_FILE, allow_pickle=False)  # plain array: no pickle needed
    assert weights.dtype == np.float32 and weights.ndim == 1


def test_one_document_scores_as_the_batch_does(model_dir):
    scorer = QualityScorer(model_dir)
    texts = [t for _i, t, _l in _demo_docs("en_web.jsonl.gz")[:30]]
    one = np.array([scorer.score_one(t) for t in texts])
    assert np.allclose(one, scorer.score(texts), atol=1e-4)
    assert ((one >= 0) & (one <= 1)).all()


def test_top_share_keeps_exactly_its_share_best_first_ties_by_seed():
    scores = [0.9, 0.5, 0.5, 0.5, 0.5, 0.1, 0.2, 0.8, 0.7, 0.3]
    ids = [f"d{i}" for i in range(10)]
    keep = top_share_mask(scores, ids, 0.4, seed=0)
    assert keep.sum() == 4 and keep[[0, 7, 8]].all()  # 0.9, 0.8, 0.7, then one of the 0.5s
    tied = [i for i in (1, 2, 3, 4) if keep[i]]
    assert len(tied) == 1
    assert (top_share_mask(scores, ids, 0.4, seed=0) == keep).all()  # same seed, same documents
    picks = {tuple(np.flatnonzero(top_share_mask(scores, ids, 0.4, seed=s))) for s in range(20)}
    assert len(picks) > 1  # the tie-break is the seed's
    buckets = quality_buckets(scores, ids, [0.2, 0.5], seed=0)
    assert Counter(buckets.tolist()) == {0: 2, 1: 3, 2: 5} and set(buckets[[0, 7]]) == {0}


def _english(max_chars: int = 200) -> LanguageConfig:
    return LanguageConfig.model_validate(
        {
            "filters": [{"name": "length", "min_chars": max_chars}],
            "pii": {},
            "quality": {"positives": ["a"], "negatives": ["b"]},
        }
    )


def _corpus(path: Path) -> list[tuple[str, str, str]]:
    docs = _demo_docs("en_web.jsonl.gz") + _demo_docs("en_books.jsonl")[:40]
    with DocWriter(path) as w:
        for i, t, _label in docs:
            w.write(make_doc(i, t, "mix", "CC0-1.0" if i.startswith("en_books") else "CC-BY-4.0", "en"))
    return docs


def test_curation_keeps_exactly_the_top_share_and_lists_the_rest(model_dir, tmp_path):
    _corpus(tmp_path / "in.parquet")
    cfg = _english()
    runs = []
    for name in ("a", "b"):
        step = QualityStep.load(model_dir, SourceQuality(keep_top_share=0.7, seed=3))
        out, excluded = tmp_path / f"{name}.parquet", tmp_path / f"{name}.excluded.parquet"
        res = curate(tmp_path / "in.parquet", out, excluded, "en", cfg, quality=step)
        runs.append((res, list(iter_docs(out)), list(iter_docs(excluded))))
    res, kept, excluded = runs[0]
    funnel = {s.step: s for s in res.funnel}
    scored = funnel["quality"].docs_in
    assert scored == funnel["length"].docs_out  # every document that passed the filters is scored
    assert funnel["quality"].docs_out == len(kept) == res.docs_out == round(0.7 * scored)
    assert res.funnel[-1].step == "quality" and funnel["pii"].docs_in == scored  # redacted, then selected
    dropped = [d for d in excluded if d["filter"] == "quality"]
    assert len(dropped) == scored - len(kept) == res.excluded_by_filter["quality"]
    assert min(d["quality"] for d in kept) >= max(float(d["reason"].split()[1]) for d in dropped)
    assert all(0 <= d["quality"] <= 1 for d in kept)
    (summary,) = res.quality
    assert summary["kept_share"] == pytest.approx(len(kept) / scored) and summary["scored"] == scored
    assert summary["threshold"] == pytest.approx(min(d["quality"] for d in kept))
    assert sum(res.licenses.values()) == len(kept) and res.chars_out == sum(len(d["text"]) for d in kept)
    # Deterministic: a rerun keeps the same documents with the same scores.
    assert [(d["id"], d["quality"]) for d in runs[1][1]] == [(d["id"], d["quality"]) for d in kept]


def test_min_score_decides_per_document_and_score_only_keeps_all(model_dir, tmp_path):
    _corpus(tmp_path / "in.parquet")
    cfg = _english()
    res = curate(
        tmp_path / "in.parquet", tmp_path / "o.parquet", tmp_path / "x.parquet", "en", cfg,
        quality=QualityStep.load(model_dir, SourceQuality()),
    )  # fmt: skip
    scores = [d["quality"] for d in iter_docs(tmp_path / "o.parquet")]
    assert res.excluded_by_filter.get("quality", 0) == 0 and None not in scores
    cut = float(np.median(scores))
    res = curate(
        tmp_path / "in.parquet", tmp_path / "m.parquet", tmp_path / "mx.parquet", "en", cfg,
        quality=QualityStep.load(model_dir, SourceQuality(min_score=cut)),
    )  # fmt: skip
    kept = [d["quality"] for d in iter_docs(tmp_path / "m.parquet")]
    assert kept and min(kept) >= cut and len(kept) == sum(s >= cut for s in scores)


def _tokenizer(path: Path) -> None:
    """A word-level tokenizer: a document of n words is n tokens, so token counts are known exactly."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1} | {f"w{i}": i + 2 for i in range(60)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="</s>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="</s>"
    ).save_pretrained(str(path))


@pytest.fixture(scope="module")
def weighted_sources(tmp_path_factory):
    """Two tokenized sources; `web` has a quality score per document (its documents 10 to 59 words)."""
    from lm_platform.data.blending.tokens import tokenize_source

    base = tmp_path_factory.mktemp("weighted")
    _tokenizer(base / "tok")
    rng = np.random.default_rng(0)
    dirs, deduped = {}, {}
    for name, n in (("web", 200), ("books", 100)):
        path = base / f"{name}.parquet"
        with DocWriter(path, batch_size=50) as w:
            for i in range(n):
                words = " ".join(f"w{j % 60}" for j in range(10 + (i * 7) % 50))
                w.write(
                    {
                        **make_doc(f"{name}/{i}", words, name, "CC0-1.0", "en"),
                        "quality": float(rng.random()) if name == "web" else None,
                    }
                )
        tokenize_source(path, base / "tok", base / "tokens" / name, source=name, part_rows=64)
        dirs[name], deduped[name] = base / "tokens" / name, path
    return dirs, deduped


def _weighted(weighted_sources, out, seed=0, target=4000, buckets=((0.25, 2.0),), **kw):
    dirs, deduped = weighted_sources
    return blend_tokens(
        dirs, {"web": 0.5, "books": 0.5}, target, out, seed=seed,
        quality_weighting={"web": list(buckets)}, quality_scores={"web": deduped["web"]}, **kw,
    )  # fmt: skip


def test_blend_upsamples_the_top_bucket_within_the_sources_share_exactly(weighted_sources, tmp_path):
    dirs, deduped = weighted_sources
    m = _weighted(weighted_sources, tmp_path / "b")
    web = next(r for r in m["sources"] if r["source"] == "web")
    # The source's total is its mixture target, met within one document, as without weighting.
    assert web["target_tokens"] == 2000 and abs(web["taken_tokens"] - 2000) <= web["max_doc_tokens"]
    top, rest = web["quality_buckets"]
    # The target splits 2:1 by weight x available tokens, in whole tokens, and each bucket meets its own.
    assert top["target_tokens"] + rest["target_tokens"] == 2000
    expected_top = (
        2000 * 2 * top["available_tokens"] / (2 * top["available_tokens"] + rest["available_tokens"])
    )
    assert abs(top["target_tokens"] - expected_top) <= 1
    assert abs(top["taken_tokens"] - top["target_tokens"]) <= web["max_doc_tokens"]
    assert top["taken_tokens"] + rest["taken_tokens"] == web["taken_tokens"]
    # The top bucket is the best quarter of web's 200 documents by score, drawn twice as often per token.
    scores = pq.read_table(deduped["web"], columns=["quality"])["quality"].to_numpy()
    doclist = pq.read_table(tmp_path / "b" / DOCLIST_FILE).to_pylist()
    chosen = [r for r in doclist if r["source"] == "web"]
    best = set(np.argsort(-scores)[:50].tolist())
    top_tokens = sum(r["tokens"] for r in chosen if r["doc"] in best)
    assert top_tokens == top["taken_tokens"] and top["docs"] == 50
    assert top["epochs"] == pytest.approx(2 * rest["epochs"], rel=0.15)
    assert sum(r["tokens"] for r in chosen) == web["taken_tokens"]


def test_weighted_blend_repeats_the_top_bucket_up_to_its_weight_and_is_deterministic(
    weighted_sources, tmp_path
):
    dirs, _ = weighted_sources
    web_tokens = int(
        pq.read_table(dirs["web"] / "docs.parquet", columns=["tokens"])["tokens"].to_numpy().sum()
    )
    available = web_tokens + 2 * 200  # packed: BOS + EOS per document
    # Every web token wanted: the top bucket (weight 3) repeats, within the source's budget.
    m = _weighted(weighted_sources, tmp_path / "full", target=2 * available, buckets=((0.2, 3.0),))
    web = next(r for r in m["sources"] if r["source"] == "web")
    top, rest = web["quality_buckets"]
    assert abs(web["taken_tokens"] - web["target_tokens"]) <= web["max_doc_tokens"]
    assert top["epochs"] > 1 and rest["epochs"] < 1
    doclist = pq.read_table(tmp_path / "full" / DOCLIST_FILE).to_pylist()
    uses = Counter((r["source"], r["doc"]) for r in doclist)
    assert max(uses.values()) <= 3 and len({(r["source"], r["doc"], r["pass"]) for r in doclist}) == len(
        doclist
    )
    # Same seed: byte-identical document list; another seed: another draw of the same sizes.
    again = _weighted(weighted_sources, tmp_path / "again", target=2 * available, buckets=((0.2, 3.0),))
    assert (tmp_path / "full" / DOCLIST_FILE).read_bytes() == (tmp_path / "again" / DOCLIST_FILE).read_bytes()
    assert again["sources"] == m["sources"]
    other = _weighted(weighted_sources, tmp_path / "other", seed=7)
    first = _weighted(weighted_sources, tmp_path / "first", seed=0)
    assert pq.read_table(tmp_path / "other" / DOCLIST_FILE) != pq.read_table(
        tmp_path / "first" / DOCLIST_FILE
    )
    assert [b["docs"] for b in other["sources"][0]["quality_buckets"]] == [
        b["docs"] for b in first["sources"][0]["quality_buckets"]
    ]


def test_weighting_needs_scores(weighted_sources, tmp_path):
    dirs, deduped = weighted_sources
    with pytest.raises(ValueError, match="quality"):
        blend_tokens(
            dirs, {"web": 0.5, "books": 0.5}, 1000, tmp_path / "x",
            quality_weighting={"books": [(0.5, 2.0)]}, quality_scores={"books": deduped["books"]},
        )  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "where", "says"),
    [
        (lambda r: r["sources"][2].update(quality={"keep_top_share": 0.5}), "sources.2.quality", "positive"),
        (lambda r: r["sources"][0].update(quality={}), "sources.0.quality", "no quality model"),
        (
            lambda r: r["languages"]["en"]["quality"].update(negatives=["vi_news"]),
            "languages.en.quality.negatives.0",
            "not 'en'",
        ),
        (
            lambda r: r["stages"][0]["blend"].update(
                quality_weighting={"en_books": [{"top_share": 0.5, "weight": 2}]}
            ),
            "stages.0.blend.quality_weighting.en_books",
            "no quality scores",
        ),
        (
            lambda r: r["stages"][1]["blend"].update(
                quality_weighting={"en_web": [{"top_share": 0.5, "weight": 2}]}
            ),
            "stages.1.blend.quality_weighting.en_web",
            "not in the stage's mixture",
        ),
        (
            lambda r: r["stages"][0]["blend"]["quality_weighting"]["en_web"].append(
                {"top_share": 0.1, "weight": 2}
            ),
            "quality_weighting.en_web",
            "must increase",
        ),
        (lambda r: r["sources"][3]["quality"].update(min_score=0.5), "sources.3.quality", "not both"),
    ],
)
def test_recipe_errors_name_the_quality_field(tmp_path, mutate, where, says):
    import yaml

    from lm_platform.recipe.loader import RecipeError, load_recipe

    raw = yaml.safe_load((BUNDLED_DIR / "demo.yaml").read_text(encoding="utf-8"))
    for src in raw["sources"]:
        src["location"] = str(BUNDLED_DIR / src["location"])
    mutate(raw)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(RecipeError) as err:
        load_recipe(str(path))
    assert where in str(err.value) and says in str(err.value), str(err.value)


def test_bundled_recipes_declare_their_quality_models():
    from lm_platform.recipe import load_recipe

    demo = load_recipe("demo")
    assert demo.languages["en"].quality.positives == ("en_books",)
    assert demo.source("en_web").quality.keep_top_share == 0.9
    assert "en_web" in demo.stage("main").blend.quality_weighting
    vi, ja = load_recipe("vi"), load_recipe("ja")
    assert vi.languages["vi"].quality.positives == ("vi_wiki",)
    assert set(vi.languages["vi"].quality.negatives) == {"vi_culturax", "vi_fineweb2"}
    assert set(ja.languages["ja"].quality.positives) == {"wikipedia_ja", "aozora"}
    assert set(ja.languages["ja"].quality.negatives) == {"c4_ja", "cc100_ja"}
    for recipe in (vi, ja):  # the web sources filter by the model; the high-quality ones never do
        model = next(c.quality for c in recipe.languages.values() if c.quality)
        assert all(recipe.source(s).quality and recipe.source(s).quality.filters for s in model.negatives)
        assert not any(recipe.source(s).quality for s in model.positives)
