"""Blending with token budgets: overflow redistribution, groups, upsampling caps, shortfall, recipe errors."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
import yaml

from lm_platform.data.blending.blend import DOCLIST_FILE, MANIFEST_FILE, BlendShortfall, blend_tokens
from lm_platform.data.blending.dataset_card import dataset_card
from lm_platform.recipe import load_recipe
from lm_platform.recipe.loader import BUNDLED_DIR, RecipeError, parse_recipe
from lm_platform_tests.blend_fixtures import tokenized_source


def source(tmp_path, name, n_docs, license="CC0-1.0"):
    return tokenized_source(tmp_path, name, n_docs, 100, license)  # a document is 100 tokens


def rows(manifest):
    return {r["source"]: r for r in manifest["sources"]}


def doclist(out_dir):
    return pq.read_table(out_dir / DOCLIST_FILE).to_pylist()


def test_exhausted_source_gives_its_share_to_the_others_in_proportion(tmp_path):
    inputs = {"a": source(tmp_path, "a", 200), "b": source(tmp_path, "b", 200), "c": source(tmp_path, "c", 5)}
    m = blend_tokens(inputs, {"a": 0.5, "b": 0.3, "c": 0.2}, 10_000, tmp_path / "out", seed=1)
    r = rows(m)
    assert r["c"]["taken_tokens"] == 500 and r["c"]["exhausted"] and r["c"]["epochs"] == 1.0
    # c's missing 1500 tokens go to a and b as 5:3, so a and b keep their ratio to each other.
    assert r["a"]["target_tokens"] == pytest.approx(5000 + 1500 * 5 / 8, abs=1)
    assert r["b"]["target_tokens"] == pytest.approx(3000 + 1500 * 3 / 8, abs=1)
    assert r["a"]["taken_tokens"] / r["b"]["taken_tokens"] == pytest.approx(5 / 3, rel=0.03)
    assert r["a"]["share"] > 0.5 and r["b"]["share"] > 0.3
    assert m["shortfall"]["met"] is True and m["taken_tokens"] == pytest.approx(10_000, abs=100)
    assert not r["a"]["exhausted"]


def test_upsampling_repeats_up_to_the_epoch_cap_and_records_the_shortfall(tmp_path):
    inputs = {"big": source(tmp_path, "big", 300), "small": source(tmp_path, "small", 10)}
    ratios = {"big": 0.5, "small": 0.5}
    # Without upsampling: small gives its 1000 tokens once; big fills the rest.
    plain = rows(blend_tokens(inputs, ratios, 8000, tmp_path / "plain", seed=0))
    assert plain["small"]["taken_tokens"] == 1000 and plain["small"]["epochs"] == 1.0
    # With a cap of 3 epochs, small gives 3000 tokens: every document three times, no more.
    m = blend_tokens(inputs, ratios, 8000, tmp_path / "up", seed=0, epoch_caps={"big": 4.0, "small": 3.0})
    r = rows(m)
    assert r["small"]["taken_tokens"] == 3000 and r["small"]["epochs"] == 3.0 and r["small"]["exhausted"]
    assert r["small"]["repeated_docs"] == 20
    uses = Counter(d["doc"] for d in doclist(tmp_path / "up") if d["source"] == "small")
    assert set(uses.values()) == {3} and len(uses) == 10
    assert r["big"]["epochs"] <= 1.0 and r["big"]["taken_tokens"] == pytest.approx(5000, abs=100)
    # A target beyond every cap: everything is used up to its cap and the gap is reported.
    m = blend_tokens(
        inputs, ratios, 200_000, tmp_path / "short", seed=0, epoch_caps={"big": 2.0, "small": 2.5}
    )
    r = rows(m)
    assert r["big"]["epochs"] == 2.0 and r["small"]["epochs"] == 2.5
    assert m["shortfall"]["tokens"] == 200_000 - 60_000 - 2_500 and m["shortfall"]["met"] is False
    assert json.loads((tmp_path / "short" / MANIFEST_FILE).read_text())["shortfall"] == m["shortfall"]


def test_shortfall_can_be_an_error_that_writes_nothing(tmp_path):
    inputs = {"a": source(tmp_path, "a", 10)}
    with pytest.raises(BlendShortfall, match=r"stage 'main'.*1,000 tokens.*target is 5,000"):
        blend_tokens(inputs, {"a": 1.0}, 5000, tmp_path / "out", on_shortfall="error", stage="main")
    assert not (tmp_path / "out").exists()


def test_blend_is_deterministic_with_upsampling(tmp_path):
    inputs = {"a": source(tmp_path, "a", 30), "b": source(tmp_path, "b", 100)}
    args = ({"a": 0.6, "b": 0.4}, 6000)
    caps = {"a": 2.5, "b": 2.5}
    m1 = blend_tokens(inputs, *args, tmp_path / "o1", seed=9, epoch_caps=caps)
    m2 = blend_tokens(inputs, *args, tmp_path / "o2", seed=9, epoch_caps=caps)
    assert doclist(tmp_path / "o1") == doclist(tmp_path / "o2") and m1 == m2
    assert rows(m1)["a"]["repeated_docs"] > 0


def test_group_ratio_is_split_by_available_tokens(tmp_path):
    inputs = {
        "wiki": source(tmp_path, "wiki", 100),
        "web1": source(tmp_path, "web1", 300),
        "web2": source(tmp_path, "web2", 100),
    }
    m = blend_tokens(
        inputs, {"wiki": 0.2, "web": 0.8}, 4000, tmp_path / "out", groups={"web": ("web1", "web2")}
    )
    r = rows(m)
    assert r["web1"]["ratio"] == pytest.approx(0.6) and r["web2"]["ratio"] == pytest.approx(0.2)
    assert r["web1"]["group"] == "web" and r["wiki"]["group"] is None
    assert r["web1"]["share"] + r["web2"]["share"] == pytest.approx(0.8, abs=0.02)
    assert m["groups"] == {"web": ["web1", "web2"]}


def _demo_raw():
    raw = yaml.safe_load((BUNDLED_DIR / "demo.yaml").read_text(encoding="utf-8"))
    return raw


def test_removed_token_estimate_fails_at_load_naming_its_replacement():
    for stage_edit in ({"token_estimate": "measured"}, {"blend": {"token_estimate": "recipe"}}):
        raw = yaml.safe_load((BUNDLED_DIR / "demo.yaml").read_text())
        stage = raw["stages"][0]
        if "blend" in stage_edit:
            stage.setdefault("blend", {}).update(stage_edit["blend"])
        else:
            stage.update(stage_edit)
        with pytest.raises(RecipeError, match="'token_estimate' was removed: blends count exact tokens"):
            parse_recipe(raw, BUNDLED_DIR)


def test_removed_train_stage_and_pack_workers_fail_at_load_naming_their_replacement():
    raw = yaml.safe_load((BUNDLED_DIR / "demo.yaml").read_text())
    raw["tokenizer"]["train_stage"] = "main"
    with pytest.raises(
        RecipeError, match="'train_stage' was removed: the tokenizer trains on 'tokenizer.sample'"
    ):
        parse_recipe(raw, BUNDLED_DIR)
    raw = yaml.safe_load((BUNDLED_DIR / "demo.yaml").read_text())
    raw["stages"][0]["pack_workers"] = 2
    with pytest.raises(RecipeError, match="'workers' was removed: .*'tokenizer.workers'"):
        parse_recipe(raw, BUNDLED_DIR)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update(mixture={"vi_news": 0.5, "ja_wiki": 0.6}), "ratios sum to 1.1, expected 1"),
        (lambda s: s.update(mixture={"vi_news": 0.5, "nope": 0.5}), "unknown source 'nope'"),
        (
            lambda s: s.update(mixture={"vi_news": 0.5, "en": 0.5}, groups={"en": ["en_books", "ghost"]}),
            "stages.0.blend.groups.en: unknown source 'ghost'",
        ),
        (
            lambda s: s.update(mixture={"en_books": 0.5, "en": 0.5}, groups={"en": ["en_books", "en_web"]}),
            "sources listed more than once",
        ),
        (
            lambda s: s.update(groups={"vi_news": ["en_books"]}),
            "a group cannot have the name of a source",
        ),
        (lambda s: s.update(source_max_epochs={"vi_news": 2}), "epoch caps need 'upsample: true'"),
        (lambda s: s.update(upsample=True, max_epochs=0.5), "max_epochs"),
    ],
)
def test_bad_mixtures_fail_at_load_time_with_the_field(edit, message):
    raw = _demo_raw()
    edit(raw["stages"][0]["blend"])
    with pytest.raises(
        RecipeError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        parse_recipe(raw, BUNDLED_DIR)


def test_groups_and_caps_load_and_expand():
    raw = _demo_raw()
    raw["stages"][0]["blend"].update(
        mixture={"vi_news": 0.4, "ja_wiki": 0.3, "en": 0.3},
        groups={"en": ["en_books", "en_web"]},
        upsample=True,
        max_epochs=3,
        source_max_epochs={"en_books": 1.5},
    )
    stage = parse_recipe(raw, BUNDLED_DIR).stages[0]
    assert stage.blend.mixture_sources() == ["vi_news", "ja_wiki", "en_books", "en_web"]
    assert stage.blend.epoch_cap("en_books") == 1.5 and stage.blend.epoch_cap("vi_news") == 3
    assert load_recipe("demo").stages[0].blend.epoch_cap("vi_news") == 1.0


def test_unknown_decontamination_set_fails_at_load_time():
    raw = _demo_raw()
    raw["decontamination"] = {"evaluations": ["mmlu"]}
    with pytest.raises(RecipeError, match="decontamination.evaluations.0: unknown evaluation 'mmlu'"):
        parse_recipe(raw, BUNDLED_DIR)


def test_dataset_card_lists_sources_licenses_filters_and_dedup(tmp_path):
    recipe = load_recipe("demo")
    inputs = {
        s: source(tmp_path, s, 50, license=recipe.source(s).license)
        for s in recipe.stage("main").blend.mixture
    }
    m = blend_tokens(inputs, recipe.stage("main").blend.mixture, 3000, tmp_path / "out", stage="main")
    card = dataset_card(recipe, "main", m, {"en_web": {"docs_in": 9, "exact_removed": 2, "docs_out": 7}})
    assert card.startswith("# Dataset card: demo / blend `main`")
    for needle in (
        "| vi_news |",
        "CC-BY-SA-4.0",
        "All allowed.",
        "script(min_ratio=0.3, letters=None)",
        "MinHash LSH",
        "| en_web | 9 | 2 |",
    ):
        assert needle in card, needle
    bad = {
        **m,
        "licenses": [*m["licenses"], {"license": "CC-BY-NC-4.0", "docs": 1, "tokens": 5, "share": 0.0}],
    }
    assert "**Not allowed: CC-BY-NC-4.0**" in dataset_card(recipe, "main", bad)


def test_dataset_card_reads_quality_reports_the_store_committed(tmp_path):
    """Under an s3:// root the blend's card may be written where the curated shards were never filled: the
    quality reports of a scored source (one per curated shard) come from the store, as on a local root."""
    from lm_platform.data.blending.dataset_card import write_dataset_card
    from lm_platform.storage import LocalCache, LocalStore
    from lm_platform.storage import cache as store_cache

    recipe = load_recipe("demo")
    mixture = recipe.stage("main").blend.mixture
    inputs = {s: source(tmp_path, s, 50, license=recipe.source(s).license) for s in mixture}
    m = blend_tokens(inputs, mixture, 3000, tmp_path / "out", stage="main")
    assert "en_web" in mixture and recipe.source("en_web").quality is not None
    store = LocalStore(tmp_path / "store")
    for shard, kept in (("00000", 7), ("00001", 5)):
        report = tmp_path / f"{shard}.quality.json"
        report.write_text(
            json.dumps({"rule": "top 0.6", "scored": 10, "kept": kept, "threshold": 0.5, "scores": {}})
        )
        store.publish(report, f"demo/curated/en_web/{shard}.quality.json")
    cache = LocalCache(store, tmp_path / "cache")  # empty, as on a new machine
    store_cache.activate(cache)
    try:
        curated = cache.root / "demo" / "curated"
        write_dataset_card(recipe, "main", m, tmp_path / "figures", tmp_path / "card.md", curated_dir=curated)
    finally:
        store_cache.activate(None)
    assert (
        "- en_web: top 0.6, kept 12 of 20 scored (60.0%), threshold 0.500"
        in (tmp_path / "card.md").read_text()
    )
