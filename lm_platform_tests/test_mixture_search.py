"""Mixture search on a synthetic task whose answer is known: three sources, each its own vocabulary and
word chain, and a target set drawn from one of them. The more of that source a proxy trains on, the
lower its bits per byte on the target, so the fitted predictor must rank the candidates right (leave-one-
out Spearman >= 0.7) and the mixture it recommends must beat the best sampled candidate when a proxy is
trained on it. Everything runs in this process through the platform's own blend, pack, trainer and
evaluation code (tiny proxies: a few seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lm_platform.data.blending.tokens import tokenize_source
from lm_platform.data.corpus.documents import DocWriter, make_doc
from lm_platform.mixture import search as ms
from lm_platform.mixture.proxy import (
    CANDIDATES_FILE,
    PLOT_FILE,
    PROXY_MODEL,
    RECOMMENDATION_FILE,
    centre_of,
    search_dir,
    search_in_process,
)
from lm_platform.recipe.schema import EvalConfig, MixtureSearchConfig

SOURCES = ("alpha", "beta", "gamma")  # word prefixes a, b, g
WORDS = 24  # words per source vocabulary
DOC_WORDS = 40


def word_tokenizer(directory: Path, prefixes=tuple(s[0] for s in SOURCES)) -> Path:
    """A word-level HF tokenizer over the sources' vocabularies (`<prefix><i>`), with BOS and EOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for p in prefixes:
        for i in range(WORDS):
            vocab[f"{p}{i}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(str(directory))
    return directory


def word_chain(prefix: str, rng: np.random.Generator):
    """A source's word chain (its own words, `<prefix><i>`): each word is followed by one of three."""
    nxt = rng.integers(0, WORDS, size=(WORDS, 3))

    def doc() -> str:
        w = int(rng.integers(WORDS))
        out = []
        for _ in range(DOC_WORDS):
            out.append(f"{prefix}{w}")
            w = int(nxt[w, rng.integers(3)])
        return " ".join(out)

    return doc


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    base = tmp_path_factory.mktemp("mixture")
    tokenizer = word_tokenizer(base / "tokenizer")
    rng = np.random.default_rng(7)
    tokens_dirs = {}
    target_docs = []
    for s in SOURCES:
        doc = word_chain(s[0], rng)
        path = base / f"{s}.parquet"
        with DocWriter(path) as w:
            for i in range(260):
                w.write(make_doc(f"{s}-{i}", doc(), s, "CC0-1.0", "en"))
        if s == "alpha":  # the target set: held-out documents of one source
            target_docs = [doc() for _ in range(24)]
        tokens_dirs[s] = (
            tokenize_source(path, tokenizer, base / "tokens" / s, source=s) and base / "tokens" / s
        )
    target = base / "target.jsonl"
    target.write_text(
        "".join(json.dumps({"text": t, "lang": "en"}) + "\n" for t in target_docs), encoding="utf-8"
    )
    return base, tokenizer, tokens_dirs, {"target": EvalConfig(name="target", location=str(target))}


# The proxies' model in these tests (and test_mixture_assets): one tiny layer, so a proxy trains in seconds.
TINY_PROXY_MODEL = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_layers": 1,
    "num_heads": 2,
    "num_kv_heads": 2,
    "max_position_embeddings": 64,
}


def _search(**over) -> MixtureSearchConfig:
    cfg = {
        "sources": {s: {"min": 0.05, "max": 0.9} for s in SOURCES},
        "candidates": 16,
        "seed": 3,
        "proxy": {
            "model": TINY_PROXY_MODEL,
            "tokens": 6000,
            "pack": {"seq_len": 32, "val_fraction": 0.05},
            "train": {"micro_batch_size": 16, "lr": 1e-2, "warmup_steps": 1, "log_every": 50, "val_rows": 8},
        },
        "target": [{"evaluation": "target"}],
    }
    return MixtureSearchConfig.model_validate({**cfg, **over})


def test_search_finds_the_target_source_and_its_recommendation_beats_every_candidate(task):
    base, tokenizer, tokens_dirs, evaluations = task
    search = _search()
    centre = centre_of(search, {"alpha": 0.2, "beta": 0.4, "gamma": 0.4}, list(SOURCES))
    rec = search_in_process(
        search, list(SOURCES), centre, base, "main", tokens_dirs, tokenizer, evaluations, 2, "13"
    )
    d = search_dir(base, "main")
    plan = json.loads((d / CANDIDATES_FILE).read_text())
    assert len(plan["candidates"]) == 16
    assert json.loads((d / RECOMMENDATION_FILE).read_text()) == rec
    assert (d / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scores = [c["score"] for c in rec["candidates"]]
    assert rec["loo_spearman"] >= 0.7, (rec["loo_spearman"], scores)
    # The known answer: as much of the target's source as the bounds allow.
    assert rec["mixture"]["alpha"] == pytest.approx(0.9)
    assert rec["verification"]["score"] < min(scores)
    assert rec["verified_better_than_best_candidate"] is True
    # Each proxy went through blend (with the candidate's weights), pack and the trainer.
    best = rec["best_candidate"]["name"]
    manifest = json.loads((d / best / "blend" / "manifest.json").read_text())
    assert manifest["mixture_from"]["weights"] == rec["best_candidate"]["weights"]
    assert (d / best / PROXY_MODEL / "model.safetensors").is_file()


def test_candidates_are_seeded_and_within_bounds():
    bounds = {"a": (0.1, 0.6), "b": (0.0, 0.5), "c": (0.2, 1.0)}
    first = ms.sample_candidates({"a": 0.3, "b": 0.3, "c": 0.4}, bounds, 20, seed=5)
    assert first == ms.sample_candidates({"a": 0.3, "b": 0.3, "c": 0.4}, bounds, 20, seed=5)
    assert first != ms.sample_candidates({"a": 0.3, "b": 0.3, "c": 0.4}, bounds, 20, seed=6)
    for w in first:
        assert sum(w.values()) == pytest.approx(1.0)
        assert all(bounds[s][0] <= v <= bounds[s][1] for s, v in w.items())
    # A source's maximum is lowered to what it holds over the proxy's budget.
    eff = ms.effective_bounds(bounds, {"a": 1000.0, "b": 1e6, "c": 1e6}, proxy_tokens=5000)
    assert eff["a"] == (0.1, 0.2)
    with pytest.raises(ValueError, match="source 'a' holds 100 tokens"):
        ms.effective_bounds(bounds, {"a": 100.0, "b": 1e6, "c": 1e6}, proxy_tokens=5000)
    with pytest.raises(ValueError, match="only 0 of 5 candidates"):
        ms.sample_candidates({"a": 0.5, "b": 0.5}, {"a": (0.499, 0.5), "b": (0.499, 0.5)}, 5, seed=0)


def test_best_mixture_is_the_exact_optimum_within_bounds():
    p = ms.Predictor("linear", ("a", "b", "c"), (0.5, -1.0, 0.2), 1.0)
    best = ms.best_mixture(p, {"a": (0.1, 0.6), "b": (0.0, 0.5), "c": (0.2, 1.0)})
    assert best == {"a": 0.1, "b": 0.5, "c": 0.4}
    # Against a dense grid of the feasible set, nothing the predictor scores lower.
    grid = [
        (a, b, 1 - a - b)
        for a in np.linspace(0.1, 0.6, 51)
        for b in np.linspace(0.0, 0.5, 51)
        if 0.2 - 1e-9 <= 1 - a - b <= 1.0
    ]
    assert p.predict(np.array([[0.1, 0.5, 0.4]]))[0] <= p.predict(np.array(grid)).min() + 1e-9


def test_predictor_recovers_a_log_linear_law_and_spearman_counts_ties():
    rng = np.random.default_rng(0)
    x = rng.dirichlet([1, 1, 1], size=30)
    y = np.exp(0.3 - 0.8 * x[:, 0] + 0.1 * x[:, 1])
    p = ms.fit(["a", "b", "c"], x, y, "log_linear", ridge=0.0)
    assert np.allclose(p.predict(x), y, rtol=1e-6)
    assert ms.spearman(ms.loo_predictions(["a", "b", "c"], x, y, "log_linear", 0.0), y) == pytest.approx(1.0)
    assert ms.spearman(np.array([1, 2, 2, 3]), np.array([1, 2, 2, 3])) == pytest.approx(1.0)
    assert list(ms.ranks(np.array([3.0, 1.0, 3.0]))) == [2.5, 1.0, 2.5]


def test_recipe_mistakes_in_a_search_name_their_field(tmp_path):
    from lm_platform.recipe import RecipeError, load_recipe
    from lm_platform_tests.conftest import write_demo_variant

    def mutate(raw: dict) -> None:
        main = raw["stages"][0]
        main["blend"].pop("quality_weighting")
        main["blend"]["mixture"] = "recommended"
        main["mixture_search"] = {
            "sources": {"vi_news": {"min": 0.7}, "ja_wik": {}},
            "proxy": {"tokens": 1000},
            "target": [{"evaluation": "exam_vi"}, {"evaluation": "perplexity", "language": "xx"}],
        }

    with pytest.raises(RecipeError) as err:
        load_recipe(str(write_demo_variant(tmp_path, mutate)))
    lines = str(err.value)
    for says in (
        "stages.0.mixture_search.sources.ja_wik: no such source; did you mean 'ja_wiki'?",
        "stages.0.mixture_search.target.0.evaluation: 'exam_vi' is a multiple_choice evaluation",
        "stages.0.mixture_search.target.1.language: 'xx' has no entry in 'languages'",
    ):
        assert says in lines, lines

    def without_search(raw: dict) -> None:
        raw["stages"][0]["blend"].pop("quality_weighting")
        raw["stages"][0]["blend"]["mixture"] = "recommended"

    with pytest.raises(RecipeError, match="needs a mixture_search section"):
        load_recipe(str(write_demo_variant(tmp_path, without_search, "b.yaml")))

    def too_much(raw: dict) -> None:
        bounds = {"vi_news": {"min": 0.7}, "en_books": {"min": 0.6}}
        raw["stages"][0]["mixture_search"] = {
            "sources": bounds,
            "proxy": {"tokens": 1000},
            "target": [{"evaluation": "perplexity"}],
        }

    with pytest.raises(RecipeError, match="mixture_search.sources: the minimum shares sum to more than 1"):
        load_recipe(str(write_demo_variant(tmp_path, too_much, "c.yaml")))
