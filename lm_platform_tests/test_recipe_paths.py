"""Every local path a recipe names is checked at load time; evaluation sets may be datasets read through
the sources' `datasets` path; the bundled vi and ja recipes ship their held-out evaluation files."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lm_platform.data.corpus.documents import DocWriter, iter_docs, make_doc
from lm_platform.data.corpus.readers import read_eval_set
from lm_platform.data.dedup.decontam import recipe_decontaminator
from lm_platform.data.dedup.deduped import filter_deduped
from lm_platform.evaluation.sets import evaluation_texts
from lm_platform.recipe import load_recipe
from lm_platform.recipe.loader import RecipeError
from lm_platform_tests.conftest import write_demo_variant


def test_missing_local_paths_fail_at_load_with_their_field(tmp_path):
    added = {}

    def mutate(raw):
        added["index"] = len(raw["evaluations"])
        raw["evaluations"][0]["location"] = str(tmp_path / "nowhere.jsonl")
        raw["evaluations"].append(
            {"name": "local_hf", "format": "hf", "location": "./no_such_dataset", "language": "en"}
        )
        raw["sources"][0] = {**raw["sources"][0], "format": "hf", "location": "./missing_dir"}
        raw["model"] = {**raw["model"], "init": "pretrained", "base": "./no_checkpoint"}

    with pytest.raises(RecipeError) as err:
        load_recipe(str(write_demo_variant(tmp_path, mutate)))
    msg = str(err.value)
    assert "evaluations.0.location:" in msg and "nowhere.jsonl" in msg
    assert f"evaluations.{added['index']}.location: local dataset" in msg and "no_such_dataset" in msg
    assert "sources.0.location: local dataset" in msg and "missing_dir" in msg
    assert "model.base:" in msg and "no_checkpoint" in msg


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_evaluation_set_read_as_a_dataset_through_the_sources_path(tmp_path, fmt):
    """A local directory in a hub dataset's format stands in for a hub id (same `datasets` call)."""
    data = tmp_path / "mcq"
    data.mkdir()
    rows = [{"question": f"Question number {i} about rivers and mountains?", "label": i} for i in range(5)]
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), data / "test-00000.parquet")
    else:
        (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    def mutate(raw):
        raw["evaluations"].append(
            {"name": "mcq", "format": "hf", "location": str(data), "text_field": "question", "language": "en"}
        )
        raw["decontamination"] = {"ngram": 13, "min_words": 5}

    recipe = load_recipe(str(write_demo_variant(tmp_path, mutate)))
    ev = recipe.evaluations[-1]
    got = list(read_eval_set(ev))
    assert got == [("en", r["question"]) for r in rows]
    dc = recipe_decontaminator(recipe, evaluation_texts)
    assert dc is not None and dc.summary["mcq"].whole_items == 5
    bad = ev.model_copy(update={"text_field": "answer"})
    with pytest.raises(ValueError, match=r"mcq.*:1: evaluation 'mcq' needs a string 'answer'"):
        list(read_eval_set(bad))


@pytest.mark.parametrize("name", ["vi", "ja"])
def test_bundled_recipe_ships_its_heldout_set_and_decontaminates_against_it(tmp_path, name):
    recipe = load_recipe(name)
    assert recipe.evaluations, f"{name}.yaml names no evaluation"
    for ev in recipe.evaluations:
        docs = list(read_eval_set(ev))
        assert len(docs) >= 24 and {lang for lang, _ in docs} == {name}
    dc = recipe_decontaminator(recipe, evaluation_texts)
    assert dc is not None
    ev = recipe.evaluations[0]
    assert dc.summary[ev.name].items == len(docs) and dc.summary[ev.name].ngrams > 0
    # The deduped step's filter on a source of the recipe: a document quoting a held-out paragraph goes.
    src = next(s for s in recipe.sources if s.language == name)
    leaked = "Tin tức hôm nay. " if name == "vi" else "今日のニュース。"
    clean = (
        "Hôm qua trời nắng đẹp, cả nhà cùng nhau đi dạo quanh hồ và ăn kem ở quán quen gần trường học."
        if name == "vi"
        else "昨日は天気が良かったので、家族みんなで湖のまわりを散歩して、学校の近くの店でアイスを食べた。"
    )
    with DocWriter(tmp_path / "shard.parquet") as w:
        w.write(make_doc("a", leaked + docs[5][1], src.name, src.license, name))
        w.write(make_doc("b", clean, src.name, src.license, name))
    res = filter_deduped(
        [tmp_path / "shard.parquet"], tmp_path / "out.parquet", src.name, name, decontaminator=dc
    )
    assert [d["id"] for d in iter_docs(tmp_path / "out.parquet")] == ["b"]
    assert res.contamination == {ev.name: 1}
