"""A language the platform ships no settings for (Indonesian), written as a new user would from the
README: the filters by name with their defaults. Without stop words the recipe fails at load naming what
to set; with `stop_words_from` (its own clean source) the chain keeps its clean text. Also: languages
written without spaces, the default keep-rate band and the blend's target check. The Indonesian text is
the project's own (lm_platform_tests/id_texts.py, CC0-1.0)."""

from __future__ import annotations

import json

import pytest

from lm_platform.data.corpus.documents import DocWriter, iter_docs, make_doc
from lm_platform.data.curation.curate import curate, language_stop_words
from lm_platform.data.curation.filters.resources import derive_stop_words
from lm_platform.defs.blending import _target_check
from lm_platform.defs.curation import _keep_rate_check
from lm_platform.recipe import load_recipe
from lm_platform.recipe.filters import LanguageConfig
from lm_platform.recipe.loader import RecipeError, parse_recipe
from lm_platform_tests.id_texts import ID_TEXTS

DEFAULT_FILTERS = [
    {"name": n}
    for n in (
        "encoding",
        "length",
        "script",
        "language_id",
        "boilerplate",
        "gopher_quality",
        "gopher_repetition",
        "c4",
        "fineweb",
        "prose",
    )
]


def _recipe(tmp_path, lang: str = "id", **language):
    with (tmp_path / "id.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps({"id": f"id{i:02d}", "text": t}) + "\n" for i, t in enumerate(ID_TEXTS))
    raw = load_recipe("demo").model_dump(mode="json")
    raw["languages"][lang] = {"filters": DEFAULT_FILTERS, **language}
    raw["sources"].append(
        {
            "name": f"{lang}_web",
            "location": str(tmp_path / "id.jsonl"),
            "format": "jsonl",
            "license": "CC0-1.0",
            "language": lang,
            "id_field": "id",
            "origin": "written for the project",
        }  # fmt: skip
    )
    return parse_recipe(raw, base_dir=tmp_path)


def test_a_language_without_settings_fails_at_load_naming_what_to_set(tmp_path):
    with pytest.raises(RecipeError) as err:
        _recipe(tmp_path)
    msg = str(err.value)
    # gopher_quality would count English stop words in Indonesian: it names the fields to set instead
    assert "languages.id.filters.5: 'gopher_quality' counts stop words" in msg
    assert "languages.id.stop_words" in msg and "languages.id.stop_words_from" in msg
    # the script filter has no rule for 'id': it names its letters field
    assert "languages.id.filters.2.letters" in msg


def test_a_language_without_settings_keeps_its_clean_text_with_derived_stop_words(tmp_path):
    recipe = _recipe(tmp_path, stop_words_from="id_web", filters=[
        {"name": "script", "letters": "a-zA-Z"} if f["name"] == "script" else f for f in DEFAULT_FILTERS
    ])  # fmt: skip
    cfg = recipe.languages["id"]
    path = tmp_path / "id.parquet"
    with DocWriter(path) as w:
        w.write_all(make_doc(f"id{i:02d}", t, "id_web", "CC0-1.0", "id") for i, t in enumerate(ID_TEXTS))
    words = language_stop_words(cfg, path)
    assert {"dan", "yang", "di"} <= set(words)  # Indonesian function words, from the text alone
    res = curate(path, tmp_path / "out.parquet", tmp_path / "ex.parquet", "id", cfg, stop_words_corpus=path)
    excluded = [(d["filter"], d["reason"]) for d in iter_docs(tmp_path / "ex.parquet")]
    assert res.docs_out >= 0.9 * len(ID_TEXTS), excluded
    # and the noise the chain exists for still goes: a menu page, a page of one repeated line
    menu = "\n".join(["Beranda", "Berita", "Olahraga", "Hiburan", "Kontak", "Masuk", "Daftar"] * 3)
    noise = tmp_path / "noise.parquet"
    with DocWriter(noise) as w:
        w.write(make_doc("menu", menu + "\n© 2024 Situs Berita", "id_web", "CC0-1.0", "id"))
        w.write(make_doc("rep", "\n".join([ID_TEXTS[0][:200]] * 8), "id_web", "CC0-1.0", "id"))
    res = curate(noise, tmp_path / "n.parquet", tmp_path / "nx.parquet", "id", cfg, stop_words_corpus=path)
    assert res.docs_out == 0


def test_derived_stop_words_are_the_words_most_documents_use():
    texts = ["the cat and the dog", "the bird and a fish", "a tree and the sun", "zebra"]
    assert derive_stop_words(texts, n=2) == ("and", "the")  # 3 documents each; "a" is one letter


def test_a_language_written_without_spaces_fails_for_filters_that_count_words(tmp_path):
    with pytest.raises(
        RecipeError, match=r"languages\.th\.filters\.5: 'gopher_quality' counts words.*without spaces"
    ):
        _recipe(tmp_path, lang="th", stop_words=["และ"])


def test_the_default_keep_rate_band_flags_a_collapse():
    low, high = LanguageConfig().expected_keep_rate
    assert (low, high) == (0.2, 1.0)
    assert not _keep_rate_check(3 / 72, low, high).passed  # a collapse: 3 of 72 documents kept
    assert _keep_rate_check(0.9, low, high).passed


def _manifest(short_fraction: float, target: int = 20_000):
    short = round(short_fraction * target)
    return {
        "target_tokens": target,
        "shortfall": {"tokens": short, "fraction": short / target, "met": short == 0},
        "sources": [{"source": "id_web", "exhausted": short > 0}, {"source": "vi_news", "exhausted": False}],
    }


def test_a_blend_short_of_its_target_fails_its_blocking_check_naming_the_dry_sources():
    failed = _target_check(_manifest(0.96), "check", 0.05)
    assert not failed.passed and failed.severity.value == "ERROR"
    assert "sources that ran dry: id_web" in failed.description
    assert json.loads(json.dumps(failed.metadata["sources_ran_dry"].data)) == ["id_web"]
    assert _target_check(_manifest(0.03), "check", 0.05).passed  # within the tolerance
    assert _target_check(_manifest(0.96), "record", 0.05).passed  # the recipe allows the shortfall
    assert _target_check(_manifest(0.0), "check", 0.05).description is None
