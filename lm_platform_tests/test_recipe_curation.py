"""Curation settings are checked when the recipe loads: an unknown filter, a missing local path or a
missing word list fails before any work starts, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from lm_platform.recipe import RecipeError, load_recipe
from lm_platform_tests.conftest import write_demo_variant


def test_bundled_recipes_load_with_the_new_filters():
    for name in ("demo", "vi", "ja"):
        r = load_recipe(name)
        names = {f.name for cfg in r.languages.values() for f in cfg.filters}
        assert {"language_id", "gopher_quality", "gopher_repetition", "fineweb"} <= names
    demo = load_recipe("demo")
    flagged = [f for f in demo.languages["vi"].filters if f.name == "flagged_words"][0]
    assert Path(flagged.path).is_file()  # `bundled:` resolved to the shipped list


def test_unknown_filter_fails_at_load_time(tmp_path):
    path = write_demo_variant(
        tmp_path, lambda raw: raw["languages"]["vi"]["filters"].append({"name": "perplexyty"})
    )
    with pytest.raises(RecipeError, match=r"languages\.vi\.filters\.\d+.*perplexyty"):
        load_recipe(str(path))


def test_unknown_filter_setting_fails_at_load_time(tmp_path):
    path = write_demo_variant(
        tmp_path,
        lambda raw: raw["languages"]["en"]["filters"].append({"name": "gopher_quality", "min_words": 3}),
    )
    with pytest.raises(RecipeError, match="min_words"):
        load_recipe(str(path))


def test_missing_source_path_fails_at_load_time(tmp_path):
    def mutate(raw):
        raw["sources"][1]["location"] = str(tmp_path / "nowhere.jsonl")

    with pytest.raises(RecipeError, match=r"sources\.1\.location: .*nowhere\.jsonl' does not exist"):
        load_recipe(str(write_demo_variant(tmp_path, mutate)))


def test_missing_word_list_fails_at_load_time(tmp_path):
    def mutate(raw):
        raw["languages"]["ja"]["filters"].insert(0, {"name": "flagged_words", "path": "lists/missing.txt"})

    with pytest.raises(
        RecipeError, match=r"languages\.ja\.filters\.\d+\.path: .*missing\.txt' does not exist"
    ):
        load_recipe(str(write_demo_variant(tmp_path, mutate)))


def test_keep_rate_band_must_be_a_band(tmp_path):
    def mutate(raw):
        raw["languages"]["en"]["expected_keep_rate"] = [0.9, 0.2]

    with pytest.raises(RecipeError, match="expected_keep_rate"):
        load_recipe(str(write_demo_variant(tmp_path, mutate)))
