"""Recipes: the bundled ones load and validate; a broken one fails at load time naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from lm_platform.recipe import RecipeError, bundled_recipes, load_recipe
from lm_platform_tests.conftest import write_demo_variant


def test_bundled_recipes_are_demo_vi_ja():
    assert set(bundled_recipes()) == {"demo", "vi", "ja"}


def test_demo_sources_have_licenses_on_the_allowlist_and_local_files():
    r = load_recipe("demo")
    assert len(r.sources) == 4
    for src in r.sources:
        assert src.license in r.license_allowlist
        assert Path(src.location).is_file(), src.location
    assert Path(r.evaluations[0].location).is_file()


def test_ja_recipe_has_six_sources_with_the_published_ratios():
    r = load_recipe("ja")
    main = r.stage("main")
    assert main.blend.mixture == {
        "c4_ja": 0.58,
        "cc100_ja": 0.23,
        "wikipedia_ja": 0.08,
        "stackoverflow_ja": 0.05,
        "stackexchange_ja": 0.04,
        "aozora": 0.02,
    }
    assert r.languages["ja"].unicode_form == "NFKC"
    assert r.tokenizer.vocab_size == 32000 and "<|user|>" in r.tokenizer.user_defined_symbols
    assert r.model.init == "scratch" and r.stages[0].pack.seq_len == 2048
    assert all(s.format == "hf" for s in r.sources)  # real hub ids: loadable code, not fetched here


def test_vi_recipe_extends_smollm2_through_eeve_stages():
    r = load_recipe("vi")
    assert r.tokenizer.mode == "extend" and r.tokenizer.base == "HuggingFaceTB/SmolLM2-360M"
    assert r.model.init == "pretrained" and r.model.tie_word_embeddings
    names = [s.name for s in r.stages]
    assert names == ["eeve_3", "eeve_4", "eeve_6", "eeve_7", "main", "anneal"]
    assert [r.stage(n).train.trainable for n in names[:4]] == [
        "new_embeddings",
        "output_embeddings",
        "all",
        "all_but_embeddings",
    ]
    assert [s.init_from for s in r.stages] == ["model", "eeve_3", "eeve_4", "eeve_6", "eeve_7", "main"]


def test_demo_extends_its_bundled_base_tokenizer_resolved_against_the_recipe():
    from lm_platform.recipe.loader import BUNDLED_DIR

    r = load_recipe("demo")
    assert r.tokenizer.mode == "extend" and r.tokenizer.language == "vi"
    assert Path(r.tokenizer.base) == (BUNDLED_DIR / "demo_data" / "base_tokenizer").resolve()
    assert (Path(r.tokenizer.base) / "tokenizer.json").is_file()
    added = r.tokenizer.vocab_size - 1024  # the bundled base's vocabulary
    assert added > 0 and added % r.tokenizer.extend_multiple == 0
    assert r.model.init == "scratch"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("./tok", "{dir}/tok"),  # explicitly relative: beside the recipe
        ("tok", "{dir}/tok"),  # a name that exists beside the recipe
        ("sub/../tok", "{dir}/tok"),
        ("{dir}/tok", "{dir}/tok"),  # absolute
        ("bundled:demo_data/base_tokenizer", "{bundled}/demo_data/base_tokenizer"),  # ships with the platform
        ("HuggingFaceTB/SmolLM2-360M", "HuggingFaceTB/SmolLM2-360M"),  # a hub id stays as it is
    ],
)
def test_tokenizer_base_is_a_path_relative_to_the_recipe_or_a_hub_id(tmp_path, written, expected):
    from lm_platform.recipe.loader import BUNDLED_DIR, parse_recipe

    (tmp_path / "tok").mkdir()
    (tmp_path / "sub").mkdir()
    raw = load_recipe("demo").model_dump(mode="json")
    raw["tokenizer"]["base"] = written.format(dir=tmp_path)
    recipe = parse_recipe(raw, base_dir=tmp_path)
    assert recipe.tokenizer.base == expected.format(dir=tmp_path, bundled=BUNDLED_DIR.resolve())


def test_missing_local_tokenizer_base_fails_at_load_time(tmp_path):
    def mutate(raw):
        raw["tokenizer"]["base"] = "./no_such_tokenizer"

    path = write_demo_variant(tmp_path, mutate, "broken.yaml")
    with pytest.raises(RecipeError) as err:
        load_recipe(str(path))
    assert "tokenizer.base" in str(err.value) and str(tmp_path / "no_such_tokenizer") in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (
            lambda r: r["stages"][0]["blend"]["mixture"].update(vi_news=0.5),
            "stages.0.blend.mixture",
            "sum to 1.1",
        ),
        (lambda r: r["stages"][1]["blend"]["mixture"].update(nope=0.0), "stages.1.blend.mixture", "positive"),
        (
            lambda r: r["stages"][0]["blend"].update(mixture={"vi_news": 0.5, "unknown_src": 0.5}),
            "stages.0.blend.mixture",
            "unknown source 'unknown_src'",
        ),
        (
            lambda r: r["languages"]["vi"]["filters"].insert(2, {"name": "no_such_filter"}),
            "languages.vi.filters.2",
            "no_such_filter",
        ),
        (
            lambda r: r["sources"][0].update(license="not a license!"),
            "sources.0.license",
            "not an SPDX license identifier",
        ),
        (lambda r: r["sources"][1].update(language="fr"), "sources.1.language", "'fr'"),
        (lambda r: r["stages"][0].update(init_from="anneal"), "stages.0.init_from", "earlier stage"),
        (lambda r: r["stages"][0]["train"].update(lr=-1), "stages.0.train.lr", "greater than 0"),
        (lambda r: r["stages"][0]["pack"].update(seq_len=0), "stages.0.pack.seq_len", "greater than 0"),
        (lambda r: r["stages"][0].update(lr=-1), "stages.0.lr and stages.0.train.lr are both given", ""),
        (lambda r: r["model"].update(num_heads=3), "model", "divisible"),
        (lambda r: r["sources"][0].pop("license"), "sources.0.license", "required, but missing"),
        (lambda r: r["sources"][0].update(colour="red"), "sources.0.colour", "unknown key 'colour'"),
    ],
)
def test_broken_recipe_names_the_field(tmp_path, mutate, field, reason):
    path = write_demo_variant(tmp_path, mutate, "broken.yaml")
    with pytest.raises(RecipeError) as info:
        load_recipe(str(path))
    message = str(info.value)
    assert str(path) in message
    assert field in message and reason in message, message


def test_unknown_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="unknown recipe 'nope'"):
        load_recipe("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(str(bad))


def test_recipe_env_var_selects_the_recipe(monkeypatch):
    monkeypatch.setenv("LM_PLATFORM_RECIPE", "ja")
    assert load_recipe().name == "ja"
