"""The recipe's `evaluations:` with kinds, `eval_every`, and the other users of the evaluation sets
(fertility reads a perplexity-kind set; decontamination indexes question + answer)."""

from __future__ import annotations

import json

import pytest

from lm_platform.recipe.loader import BUNDLED_DIR, RecipeError, load_recipe
from lm_platform_tests.conftest import write_demo_variant

EVALS = BUNDLED_DIR / "demo_data" / "evals"


def test_demo_declares_every_kind_of_set_and_fertility_picks_the_perplexity_one(tmp_path):
    demo = load_recipe("demo")
    kinds = {e.name: e.kind for e in demo.evaluations}
    assert kinds["exam_vi"] == "multiple_choice" and kinds["samples"] == "generation"
    assert demo.versions_name == "demo_models"

    def mc_first(raw):
        raw["evaluations"] = [raw["evaluations"][1], raw["evaluations"][0]]

    recipe = load_recipe(str(write_demo_variant(tmp_path, mc_first)))
    assert recipe.evaluations[0].kind == "multiple_choice"
    assert recipe.text_evaluation.name == "perplexity"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "x", "kind": "multiple_choice"}, "needs 'location'"),
        ({"name": "x", "kind": "lm_eval", "tasks": ["t"]}, "needs 'include_path'"),
        ({"name": "x", "kind": "multiple_choice", "location": "a.jsonl", "num_fewshot": 2}, "dev_location"),
        (
            {
                "name": "x",
                "kind": "multiple_choice",
                "location": "a.jsonl",
                "mode": "letter",
                "metric": "acc_norm",
            },
            "letter mode",
        ),
        ({"name": "x", "kind": "bleu", "location": "a.jsonl"}, "evaluations.1.kind"),
    ],
)
def test_bad_evaluations_fail_at_load_with_the_field(tmp_path, entry, message):
    def mutate(raw):
        raw["evaluations"] = [raw["evaluations"][0], entry]

    with pytest.raises(RecipeError, match=message):
        load_recipe(str(write_demo_variant(tmp_path, mutate)))


def test_eval_every_must_fall_on_checkpoints(tmp_path):
    def mutate(raw):
        raw["stages"][0]["eval_every"] = 30  # checkpoint_every is 25

    with pytest.raises(
        RecipeError, match="stages.0.eval_every: 30 is not a multiple of train.checkpoint_every"
    ):
        load_recipe(str(write_demo_variant(tmp_path, mutate)))

    def ok(raw):
        raw["stages"][0]["eval_every"] = 50

    assert load_recipe(str(write_demo_variant(tmp_path, ok))).stages[0].eval_every == 50


def test_relative_dev_and_include_paths_resolve_beside_the_recipe(tmp_path):
    (tmp_path / "tasks").mkdir()
    for name in ("exam.jsonl", "dev.jsonl"):
        (tmp_path / name).write_text((EVALS / "arc_en.jsonl").read_text(encoding="utf-8"), encoding="utf-8")

    def mutate(raw):
        raw["evaluations"] += [
            {
                "name": "mc",
                "kind": "multiple_choice",
                "location": "exam.jsonl",
                "dev_location": "dev.jsonl",
                "num_fewshot": 1,
            },
            {"name": "harness", "kind": "lm_eval", "tasks": ["t"], "include_path": "tasks"},
        ]

    recipe = load_recipe(str(write_demo_variant(tmp_path, mutate)))
    mc, harness = recipe.evaluations[-2:]
    assert mc.location == str(tmp_path / "exam.jsonl") and mc.dev_location == str(tmp_path / "dev.jsonl")
    assert harness.include_path == str(tmp_path / "tasks")


def test_decontamination_indexes_each_question_joined_with_its_answer(tmp_path):
    from lm_platform.data.dedup.decontam import Decontaminator
    from lm_platform.evaluation.sets import evaluation_texts
    from lm_platform.recipe.schema import EvalConfig

    item = {
        "id": "q1",
        "lang": "en",
        "question": "Which ancient trade route connected the silk markets of the east with the ports of the west",
        "choices": ["the amber road", "the silk road", "the salt road", "the tea road"],
        "answer": 1,
    }
    path = tmp_path / "exam.jsonl"
    path.write_text(json.dumps(item) + "\n", encoding="utf-8")
    ev = EvalConfig(name="exam", kind="multiple_choice", location=str(path))
    texts = list(evaluation_texts(ev))
    assert texts == [("en", item["question"] + " the silk road")]
    d = Decontaminator(ngram=8)
    d.add_set("exam", texts)
    # a training document quoting the question and the right answer leaks the item
    leak = "Quiz night! " + item["question"] + " the silk road, of course."
    assert d.matches(leak, "en")["exam"].share == 1.0
    assert d.matches("the silk road was long and the weather was bad for the traders", "en") == {}
    jc_set = EvalConfig(name="jc", kind="multiple_choice", location=str(EVALS / "jcommonsenseqa_ja.jsonl"))
    jc = list(evaluation_texts(jc_set))
    assert jc[0] == ("ja", "電車に乗るときに通る場所は？ 改札")
