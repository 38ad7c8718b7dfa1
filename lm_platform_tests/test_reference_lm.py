"""KenLM reference models (CCNet-style) and the perplexity filter with its absolute threshold.

The models are trained here, by the platform's own code and KenLM's lmplz/build_binary (built by
`make kenlm`), on the project's demo paragraphs.
"""

from __future__ import annotations

import json
import random
import re
import statistics
import subprocess

import pytest

from lm_platform.data.corpus.documents import DocWriter, iter_docs, make_doc
from lm_platform.data.curation.curate import curate, keep_at_random
from lm_platform.data.curation.reference_lm import (
    INFO_FILE,
    MODEL_FILE,
    SP_FILE,
    KenLMNotFound,
    PerplexityScorer,
    kenlm_binary,
    train_reference_lm,
)
from lm_platform.demo.generate import read_paragraphs
from lm_platform.recipe import schema
from lm_platform.recipe.loader import RecipeError, load_recipe, parse_recipe

HELD = 20


def _salad(text: str, lang: str, rng: random.Random) -> str:
    """The same words (Japanese: characters) in a random order: the same vocabulary, no language."""
    if lang == "ja":
        chars = list(text)
        rng.shuffle(chars)
        return "".join(chars)
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def _random_syllables(rng: random.Random, n: int = 80) -> str:
    consonants, vowels = "bcdghklmnpqrstvx", "aăâeêioôơuưy"
    return " ".join(rng.choice(consonants) + rng.choice(vowels) + rng.choice("nmt ") for _ in range(n))


@pytest.fixture(scope="module", params=["vi", "ja"])
def trained(request, tmp_path_factory):
    lang = request.param
    paragraphs = read_paragraphs(lang)
    out = tmp_path_factory.mktemp(f"rlm_{lang}") / "reference_lm"
    cfg = schema.ReferenceLMConfig(source="clean", order=4, sp_vocab_size=1000, heldout_fraction=0.1)
    docs = ((f"{lang}/{i}", t) for i, t in enumerate(paragraphs[:-HELD]))
    result = train_reference_lm(docs, out, lang, cfg, seed=1)
    return lang, paragraphs, out, result


def test_training_writes_a_binary_model_with_its_sentencepiece_model(trained):
    lang, paragraphs, out, result = trained
    assert sorted(p.name for p in out.iterdir()) == sorted([MODEL_FILE, SP_FILE, INFO_FILE])
    assert (out / MODEL_FILE).read_bytes()[:4] != b"\\dat"  # binary, not ARPA text
    assert result.docs_train + result.docs_heldout == len(paragraphs) - HELD
    assert 0 < result.docs_heldout < result.docs_train
    assert result.tokens > 10 * result.docs_train
    assert result.heldout_perplexity is not None and result.heldout_perplexity > 1
    assert not list(out.parent.glob(".tmp-*"))


def test_model_trained_on_clean_text_scores_clean_text_lower_than_noise(trained):
    lang, paragraphs, out, _ = trained
    scorer = PerplexityScorer.from_reference(out)
    rng = random.Random(0)
    clean = [scorer.perplexity(t) for t in paragraphs[-HELD:]]  # never seen in training
    salad = [scorer.perplexity(_salad(t, lang, rng)) for t in paragraphs[-HELD:]]
    other = [scorer.perplexity(t) for t in read_paragraphs("en")[:HELD]]
    gibberish = [scorer.perplexity(_random_syllables(rng)) for _ in range(HELD)]
    # Shuffling a paragraph raises its perplexity, paragraph by paragraph, nearly always.
    assert sum(s > c for s, c in zip(salad, clean, strict=True)) >= 0.9 * HELD, (clean, salad)
    assert statistics.median(salad) > 1.2 * statistics.median(clean)
    # Another language and random syllables score far above every clean paragraph.
    assert min(other) > max(clean) and min(gibberish) > max(clean), (max(clean), min(other), min(gibberish))


def test_training_is_reproducible(trained, tmp_path):
    lang, paragraphs, out, result = trained
    cfg = schema.ReferenceLMConfig(source="clean", order=4, sp_vocab_size=1000, heldout_fraction=0.1)
    docs = ((f"{lang}/{i}", t) for i, t in enumerate(paragraphs[:-HELD]))
    again = train_reference_lm(docs, tmp_path / "again", lang, cfg, seed=1)
    assert again == result
    text = paragraphs[-1]
    assert PerplexityScorer.from_reference(tmp_path / "again").perplexity(text) == pytest.approx(
        PerplexityScorer.from_reference(out).perplexity(text), rel=1e-9
    )


def _lang_cfg(**perplexity) -> schema.LanguageConfig:
    return schema.LanguageConfig(
        unicode_form="NFC",
        filters=[{"name": "length", "min_chars": 50}, {"name": "perplexity", **perplexity}],
        reference_lm=None if perplexity.get("model") else {"source": "clean"},
    )


@pytest.fixture(scope="module")
def vi_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("vi_model") / "reference_lm"
    cfg = schema.ReferenceLMConfig(source="clean", order=3, sp_vocab_size=800)
    paragraphs = read_paragraphs("vi")
    train_reference_lm(((str(i), t) for i, t in enumerate(paragraphs[:100])), out, "vi", cfg)
    return out


def _input(tmp_path, n: int = 40):
    rng = random.Random(5)
    texts = read_paragraphs("vi")[100 : 100 + n // 2]
    texts += [_salad(t, "vi", rng) for t in read_paragraphs("vi")[100 + n // 2 : 100 + n]]
    path = tmp_path / "in.parquet"
    with DocWriter(path) as w:
        w.write_all(make_doc(f"d{i:03d}", t, "src", "CC0-1.0", "vi") for i, t in enumerate(texts))
        w.write(make_doc("short", "quá ngắn", "src", "CC0-1.0", "vi"))
    return path


def test_absolute_threshold_is_a_multiple_of_the_heldout_perplexity(vi_model, tmp_path):
    path = _input(tmp_path)
    res = curate(
        path,
        tmp_path / "out.parquet",
        tmp_path / "ex.parquet",
        "vi",
        _lang_cfg(max_ratio=1.2, calibrate="reference"),
        reference_lm=vi_model,
    )
    info = json.loads((vi_model / "reference_lm.json").read_text())
    threshold = 1.2 * info["heldout_perplexity"]
    scorer = PerplexityScorer.from_reference(vi_model)
    scores = {d["id"]: scorer.perplexity(d["text"]) for d in iter_docs(path) if d["id"] != "short"}
    kept = {d["id"]: d["perplexity"] for d in iter_docs(tmp_path / "out.parquet")}
    # Absolute: a document is kept exactly when its own score is under the threshold, whatever else is in
    # the shard (no quantile band, no share of clean text lost by construction).
    assert set(kept) == {i for i, p in scores.items() if p <= threshold}
    assert all(kept[i] == pytest.approx(scores[i], rel=1e-9) for i in kept)
    # Clean paragraphs (d000-d019) mostly pass, shuffled ones (d020-d039) mostly do not (a 3-gram model of
    # 100 paragraphs knows little: its threshold sits close to its held-out perplexity).
    assert sum(i < "d020" for i in kept) >= 14 and sum(i >= "d020" for i in kept) <= 6
    excluded = {d["id"]: d for d in iter_docs(tmp_path / "ex.parquet")}
    assert excluded["short"]["filter"] == "length"
    dropped = [d for d in excluded.values() if d["filter"] == "perplexity"]
    assert len(dropped) == len(scores) - len(kept)
    assert all(f"> {threshold:.1f}" in d["reason"] for d in dropped)
    step = next(s for s in res.funnel if s.step == "perplexity")
    assert (step.docs_in, step.docs_out) == (len(scores), len(kept))
    assert res.perplexity_gates[0]["threshold"] == pytest.approx(threshold, rel=1e-3)
    assert res.excluded_by_filter == {"length": 1, "perplexity": len(dropped)}
    # The same document gets the same decision in any company: curate the clean half alone.
    alone = tmp_path / "alone.parquet"
    with DocWriter(alone) as w:
        w.write_all(d for d in iter_docs(path) if d["id"] < "d020")
    curate(
        alone,
        tmp_path / "o2.parquet",
        tmp_path / "x2.parquet",
        "vi",
        _lang_cfg(max_ratio=1.2, calibrate="reference"),
        reference_lm=vi_model,
    )
    assert {d["id"] for d in iter_docs(tmp_path / "o2.parquet")} == {i for i in kept if i < "d020"}


def test_per_source_threshold_follows_the_source_s_own_domain(vi_model, tmp_path):
    """A clean source the reference knows less well (here: paragraphs written as in a chat or a forum,
    lower case and without punctuation, all of them scored higher) keeps what a source of the reference's domain keeps: the
    threshold is max_ratio x the higher of the held-out perplexity and the source's own median, the
    same for every shard, capped at max_source_shift."""
    info = json.loads((vi_model / "reference_lm.json").read_text())
    texts = read_paragraphs("vi")[100:140]
    other = [re.sub(r"[^\w\s]", "", t.lower()) for t in texts]  # another "domain": chat-style text
    path = tmp_path / "other.parquet"
    with DocWriter(path) as w:
        w.write_all(make_doc(f"o{i:03d}", t, "src", "CC0-1.0", "vi") for i, t in enumerate(other))
    scores = sorted(PerplexityScorer.from_reference(vi_model).perplexity(t) for t in other)
    median = statistics.median(scores)
    assert median > info["heldout_perplexity"]  # the whole source sits above the reference's own text
    fixed = curate(path, tmp_path / "a.parquet", tmp_path / "ax.parquet", "vi",
                   _lang_cfg(max_ratio=1.2, calibrate="reference"), reference_lm=vi_model)  # fmt: skip
    own = curate(path, tmp_path / "b.parquet", tmp_path / "bx.parquet", "vi",
                 _lang_cfg(max_ratio=1.2), reference_lm=vi_model)  # fmt: skip
    gate = own.perplexity_gates[0]
    expected = 1.2 * min(median, 4.0 * info["heldout_perplexity"])
    assert gate["source_median"] == pytest.approx(median, rel=1e-3)
    assert gate["threshold"] == pytest.approx(expected, rel=1e-3)
    assert own.docs_out > fixed.docs_out and own.docs_out >= 0.6 * len(other)
    # Two shards of the source get the same threshold (calibrated on the whole source).
    halves = [
        curate(
            path,
            tmp_path / f"s{i}.parquet",
            tmp_path / f"sx{i}.parquet",
            "vi",
            _lang_cfg(max_ratio=1.2),
            shard=(i, 2),
            reference_lm=vi_model,
        )  # fmt: skip
        for i in range(2)
    ]
    assert {h.perplexity_gates[0]["threshold"] for h in halves} == {gate["threshold"]}
    # The shift is capped: a source far above the reference is not another clean domain.
    capped = curate(path, tmp_path / "c.parquet", tmp_path / "cx.parquet", "vi",
                    _lang_cfg(max_ratio=1.2, max_source_shift=1.0), reference_lm=vi_model)  # fmt: skip
    assert capped.perplexity_gates[0]["threshold"] == pytest.approx(
        1.2 * info["heldout_perplexity"], rel=1e-3
    )


def test_random_share_of_the_rest_is_kept_by_document_id(vi_model, tmp_path):
    path = _input(tmp_path)
    cfg = _lang_cfg(max_ratio=1.0, keep_rest=0.5, seed=3)
    res = curate(path, tmp_path / "o.parquet", tmp_path / "x.parquet", "vi", cfg, reference_lm=vi_model)
    band = res.perplexity_gates[0]
    kept = {d["id"]: d["perplexity"] for d in iter_docs(tmp_path / "o.parquet")}
    outside = {i for i, p in kept.items() if p > band["threshold"]}
    assert outside and band["kept_at_random"] == len(outside)
    assert all(keep_at_random(i, 0.5, 3) for i in outside)
    dropped = {d["id"] for d in iter_docs(tmp_path / "x.parquet") if d["filter"] == "perplexity"}
    assert dropped and not any(keep_at_random(i, 0.5, 3) for i in dropped)
    again = curate(path, tmp_path / "o2.parquet", tmp_path / "x2.parquet", "vi", cfg, reference_lm=vi_model)
    assert again.perplexity_gates == res.perplexity_gates
    assert {i for i in kept if keep_at_random(i, 0.5, 4)} != {i for i in kept if keep_at_random(i, 0.5, 3)}


def test_removed_band_field_fails_at_load_naming_its_replacement(tmp_path):
    raw = load_recipe("demo").model_dump(mode="json")
    raw["languages"]["vi"]["filters"][-1] = {"name": "perplexity", "band": [0.0, 0.7], "keep_rest": 0.1}
    with pytest.raises(RecipeError, match=r"languages\.vi\.filters\.\d+.*'band' was removed.*max_ratio"):
        parse_recipe(raw, base_dir=tmp_path)


def test_bundled_recipes_keep_no_random_share():
    for name in ("vi", "ja", "demo"):
        for lang, cfg in load_recipe(name).languages.items():
            if cfg.perplexity is not None:
                assert cfg.perplexity.keep_rest == 0, (name, lang)
    assert load_recipe("ja").languages["ja"].reference_lm is not None


def _words_arpa(path, words: list[str]) -> None:
    """A hand-written bigram ARPA model over `words` (equal unigram probabilities, each word likely to follow
    the one before it in the list), the format a user brings."""
    pairs = list(zip(words, words[1:], strict=False))
    lines = ["\\data\\", f"ngram 1={len(words) + 3}", f"ngram 2={len(pairs)}", "", "\\1-grams:"]
    lines += ["-99\t<s>\t-0.3", "-2.0\t</s>", "-5.0\t<unk>"] + [f"-1.0\t{w}\t-0.3" for w in words]
    lines += ["", "\\2-grams:"] + [f"-0.2\t{a} {b}" for a, b in pairs]
    path.write_text("\n".join([*lines, "", "\\end\\", ""]), encoding="utf-8")


def test_user_supplied_arpa_and_binary_models_score_alike(tmp_path):
    arpa = tmp_path / "user.arpa"
    _words_arpa(arpa, ["hà", "nội", "mùa", "thu", "phố", "cổ"])
    binary = tmp_path / "user.bin"
    subprocess.run(
        [str(kenlm_binary("build_binary")), str(arpa), str(binary)], check=True, capture_output=True
    )
    a, b = PerplexityScorer(arpa, "vi"), PerplexityScorer(binary, "vi")
    known, unknown = "Hà Nội mùa thu, phố cổ.", "Một câu hoàn toàn khác."
    for text in (known, unknown):
        assert a.perplexity(text) == pytest.approx(b.perplexity(text), rel=1e-5)
    assert a.perplexity(known) < a.perplexity(unknown)
    assert a.tokens("hà nội, phố") == ["hà", "nội", ",", "phố"]  # no SentencePiece: the language's words


def test_recipe_with_a_user_model_needs_no_reference_lm(tmp_path):
    arpa = tmp_path / "models" / "vi.arpa"
    arpa.parent.mkdir()
    _words_arpa(arpa, ["hà", "nội"])
    raw = load_recipe("demo").model_dump(mode="json")
    raw["languages"]["vi"]["reference_lm"] = None
    raw["languages"]["vi"]["filters"][-1] = {
        "name": "perplexity",
        "model": "models/vi.arpa",
        "max_perplexity": 500.0,
    }
    recipe = parse_recipe(raw, base_dir=tmp_path)
    ppl = recipe.languages["vi"].perplexity
    assert ppl.model == str(arpa) and not recipe.languages["vi"].uses_reference_lm
    from lm_platform.defs.assets import build_assets

    keys = {k.to_user_string() for a in build_assets(recipe) for k in a.keys}
    assert "reference_lm/vi" not in keys and "reference_lm/ja" in keys
    raw["languages"]["vi"]["filters"][-1]["model"] = "models/missing.bin"
    with pytest.raises(
        RecipeError, match=r"languages\.vi\.filters\.\d+\.model: .*missing\.bin' does not exist"
    ):
        parse_recipe(raw, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda v: v.update(reference_lm=None),
            r"languages\.vi\.filters\.\d+: the 'perplexity' filter needs",
        ),
        (lambda v: v["reference_lm"].update(source="nope"), r"reference_lm\.source: unknown source 'nope'"),
        (lambda v: v["reference_lm"].update(source="ja_wiki"), r"'ja_wiki' is in language 'ja', not 'vi'"),
        (lambda v: v["reference_lm"].update(prune=[1, 1]), r"cannot prune unigrams"),
        (lambda v: v["reference_lm"].update(order=9), r"reference_lm\.order"),
        (lambda v: v["filters"].insert(0, {"name": "perplexity"}), r"one 'perplexity' filter per language"),
        (lambda v: v["filters"].append({"name": "length"}), r"'perplexity' must be the last filter"),
        (lambda v: v["filters"][-1].update(max_ratio=0), r"max_ratio"),
        (lambda v: v["filters"][-1].update(model="x.bin"), r"needs 'max_perplexity'"),
        (lambda v: v["filters"][-1].update(keep_rest=2), r"keep_rest"),
    ],
)
def test_perplexity_recipe_errors_name_the_field(change, message, tmp_path):
    raw = load_recipe("demo").model_dump(mode="json")
    change(raw["languages"]["vi"])
    with pytest.raises(RecipeError, match=message):
        parse_recipe(raw, base_dir=tmp_path)


def test_missing_kenlm_programs_say_how_to_build_them(monkeypatch, tmp_path):
    import lm_platform.data.curation.reference_lm as rlm

    monkeypatch.setenv(rlm.KENLM_BIN_ENV, str(tmp_path))
    monkeypatch.setattr(rlm, "DEFAULT_KENLM_BIN", tmp_path / "nothing")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KenLMNotFound, match=r"'lmplz' was not found .*make kenlm"):
        kenlm_binary("lmplz")
    with pytest.raises(KenLMNotFound):
        train_reference_lm(
            iter([("a", "text")]), tmp_path / "out", "vi", schema.ReferenceLMConfig(source="s")
        )
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_no_kenlm_model_is_named(tmp_path):
    bad = tmp_path / "model.arpa"
    bad.write_text("not a language model\n", encoding="utf-8")
    with pytest.raises(ValueError, match="model.arpa' is not a KenLM"):
        PerplexityScorer(bad, "vi")


def test_curation_scores_with_a_user_model_and_its_absolute_threshold(tmp_path):
    arpa = tmp_path / "user.arpa"
    _words_arpa(arpa, ["hà", "nội", "mùa", "thu"])
    path = _input(tmp_path, n=10)
    res = curate(
        path,
        tmp_path / "o.parquet",
        tmp_path / "x.parquet",
        "vi",
        _lang_cfg(model=str(arpa), max_perplexity=1e12),
    )
    scorer = PerplexityScorer(arpa, "vi")
    kept = list(iter_docs(tmp_path / "o.parquet"))
    assert len(kept) == 10 and res.excluded_by_filter == {"length": 1}
    assert all(d["perplexity"] == pytest.approx(scorer.perplexity(d["text"]), rel=1e-9) for d in kept)
