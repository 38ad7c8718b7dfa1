"""Exact dedup keys and priority, blend allocation with overflow redistribution."""

from __future__ import annotations

import json
import unicodedata

import pyarrow.parquet as pq
import pytest

from lm_platform.data.blending.blend import DOCLIST_FILE, MANIFEST_FILE, allocate, blend_tokens
from lm_platform.data.corpus.documents import DocWriter, iter_docs, make_doc
from lm_platform.data.dedup.dedup_index import ExactIndex
from lm_platform.data.dedup.exact import dedup_exact_indexed, dedup_key, exact_shards
from lm_platform.recipe import load_recipe
from lm_platform_tests.blend_fixtures import tokenized_source


def write_docs(path, source, texts, license="CC0-1.0"):
    with DocWriter(path) as w:
        for i, t in enumerate(texts):
            w.write(make_doc(f"{source}/{i}", t, source, license, "en"))


def test_dedup_key_ignores_case_punctuation_spacing_but_not_words():
    assert dedup_key("Hello, World!") == dedup_key("hello   world")
    assert dedup_key("Xin chào") == dedup_key(unicodedata.normalize("NFC", "XIN CHÀO."))
    assert dedup_key("hello world") != dedup_key("hello word")


def test_dedup_within_source_and_against_higher_priority(tmp_path):
    write_docs(tmp_path / "books.parquet", "books", ["alpha text", "beta text"])
    write_docs(tmp_path / "web.parquet", "web", ["Alpha text!", "gamma", "gamma", "delta", "BETA, text"])
    with ExactIndex(None, partitions=2) as index:  # books first: its copies win
        dedup_exact_indexed([tmp_path / "books.parquet"], tmp_path / "books", "books", index, priority=1)
        res = dedup_exact_indexed([tmp_path / "web.parquet"], tmp_path / "web", "web", index, source_rank=1)
    kept = [d["text"] for shard in exact_shards(tmp_path / "web") for d in iter_docs(shard)]
    assert kept == ["gamma", "delta"]
    assert (res.exact_removed, res.cross_source_removed, res.cross_source_hits) == (1, 2, {"books": 2})


def test_recipe_priority_order():
    r = load_recipe("demo")
    assert [s.name for s in r.higher_priority("en_web")] == ["vi_news", "ja_wiki", "en_books"]
    assert [s.name for s in r.higher_priority("en_books")] == []
    assert [s.name for s in r.higher_priority("ja_wiki")] == ["vi_news", "en_books"]


def test_allocate_redistributes_an_exhausted_source_in_proportion():
    ratios = {"a": 0.5, "b": 0.3, "c": 0.2}
    assert allocate(ratios, {"a": 1e9, "b": 1e9, "c": 1e9}, 1000) == pytest.approx(
        {"a": 500, "b": 300, "c": 200}
    )
    t = allocate(ratios, {"a": 1e9, "b": 1e9, "c": 50}, 1000)
    assert t["c"] == 50
    # c's missing 150 tokens go to a and b in the ratio 5:3.
    assert t["a"] == pytest.approx(500 + 150 * 5 / 8) and t["b"] == pytest.approx(300 + 150 * 3 / 8)
    assert allocate(ratios, {"a": 10, "b": 10, "c": 10}, 1000) == {"a": 10, "b": 10, "c": 10}


def test_blend_is_seeded_and_follows_ratios(tmp_path):
    inputs = {
        "a": tokenized_source(tmp_path, "a", 300, tokens=25),
        "b": tokenized_source(tmp_path, "b", 300, tokens=25, license="CC-BY-4.0"),
    }
    m1 = blend_tokens(inputs, {"a": 0.75, "b": 0.25}, 4000, tmp_path / "out1", seed=3)
    m2 = blend_tokens(inputs, {"a": 0.75, "b": 0.25}, 4000, tmp_path / "out2", seed=3)
    m3 = blend_tokens(inputs, {"a": 0.75, "b": 0.25}, 4000, tmp_path / "out3", seed=4)
    docs = [pq.read_table(tmp_path / o / DOCLIST_FILE).to_pylist() for o in ("out1", "out2", "out3")]
    assert docs[0] == docs[1] != docs[2]
    shares = {r["source"]: r["share"] for r in m1["sources"]}
    assert shares == pytest.approx({"a": 0.75, "b": 0.25}, abs=0.01)
    assert m1 == m2
    assert {r["license"] for r in m1["licenses"]} == {"CC0-1.0", "CC-BY-4.0"}
    assert json.loads((tmp_path / "out1" / MANIFEST_FILE).read_text()) == m1
    assert m3["docs"] > 0
