"""The dedup and blend assets on a small two-source recipe: near duplicates across sources with
priority, decontamination, the in-memory index mode, and a shortfall that fails the blend."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from lm_platform.defs.assets import build_assets
from lm_platform.defs.deployment import build_deployment_definitions
from lm_platform.defs.resources import LMStorage
from lm_platform.recipe import load_recipe

TEXTS = Path(__file__).resolve().parents[1] / "lm_platform" / "demo" / "texts" / "en.txt"


def paragraphs() -> list[str]:
    return [p for p in TEXTS.read_text(encoding="utf-8").split("\n\n") if len(p.split()) >= 60]


def make_recipe(tmp_path: Path, index: str = "sqlite", on_shortfall: str = "record", target: int = 3000):
    paras = paragraphs()
    books, web, held = paras[:20], paras[20:40], paras[40:43]
    words = books[3].split()
    words[30] = "quantum"  # one word changed: a near duplicate (Jaccard about 0.87), not an exact one
    # The leak copies most of a held-out paragraph (a 20-word quote of it is no longer proof enough).
    leak = "Intro. " + " ".join(held[0].split()[5:]) + " and more words here."
    web_docs = [*web, " ".join(words), leak]
    for name, docs in (("books", books), ("web", web_docs)):
        with open(tmp_path / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for i, t in enumerate(docs):
                fh.write(json.dumps({"id": f"{name}-{i}", "text": t}) + "\n")
    with open(tmp_path / "held.jsonl", "w", encoding="utf-8") as fh:
        for t in held:
            fh.write(json.dumps({"text": t, "lang": "en"}) + "\n")
    recipe = {
        "name": "small",
        "languages": {"en": {"chars_per_token": 4.0, "filters": [{"name": "length", "min_chars": 50}]}},
        "sources": [
            {
                "name": "web",
                "location": "web.jsonl",
                "format": "jsonl",
                "license": "CC-BY-4.0",
                "language": "en",
                "id_field": "id",
                "priority": 0,
            },
            {
                "name": "books",
                "location": "books.jsonl",
                "format": "jsonl",
                "license": "CC0-1.0",
                "language": "en",
                "id_field": "id",
                "priority": 5,
            },
        ],
        "license_allowlist": ["CC0-1.0", "CC-BY-4.0"],
        "tokenizer": {"vocab_size": 512},
        "model": {},
        "dedup": {"exact": {"index": index, "partitions": 2}, "near": {"threshold": 0.8}},
        "decontamination": {"ngram": 13},
        "stages": [
            {
                "name": "main",
                "blend": {
                    "mixture": {"web": 0.5, "books": 0.5},
                    "target_tokens": target,
                    "on_shortfall": on_shortfall,
                },
            }
        ],
        "evaluations": [{"name": "held", "location": "held.jsonl"}],
    }
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return load_recipe(str(path))


def materialize(tmp_path: Path, recipe, raise_on_error: bool = True):
    return dg.materialize(
        build_assets(recipe),
        resources={"storage": LMStorage(root=str(tmp_path / "data")), "trainer": dg.PipesSubprocessClient()},
        selection=dg.AssetSelection.assets(dg.AssetKey(["blend", "main"])).upstream(),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def meta(result, key: str) -> dict:
    for e in result.get_asset_materialization_events():
        if e.asset_key.to_user_string() == key:
            return {k: getattr(v, "value", v) for k, v in e.materialization.metadata.items()}
    raise AssertionError(f"{key} not materialized")


@pytest.mark.parametrize("index", ["sqlite", "memory"])
def test_near_duplicate_of_a_higher_priority_source_and_a_leak_are_removed(tmp_path, index):
    result = materialize(tmp_path, make_recipe(tmp_path, index=index))
    near = meta(result, "near_duplicates")
    assert near["near_duplicates_removed"] == 1 and near["clusters"] == 1
    assert near["verify"] == "exact" and near["verified_pairs"] == 1 and near["verify_docs_read"] >= 2
    web = meta(result, "deduped/web")
    # per evaluation set: items, items found, documents removed, template n-grams, uninformative items
    assert "| held | 3 | 1 | 1 | 0 | 0 |" in web["contamination_sets"]
    assert web["near_duplicates_removed"] == 1 and web["near_cross_source_hits"] == {"books": 1}
    assert web["contaminated_removed"] == 1 and web["contamination"] == {"held": 1}
    assert web["docs_out"] == 20
    assert meta(result, "deduped/books")["docs_out"] == 20
    base = tmp_path / "data" / "small"
    assert (base / "dedup" / "exact_index").exists() == (index == "sqlite")
    card = (base / "blend" / "main" / "README.md").read_text(encoding="utf-8")
    assert "| web | 22 | 0 | 0 | 1 | 1 | 20 |" in card


def test_unmeetable_target_fails_the_blend_when_the_stage_says_so(tmp_path):
    result = materialize(
        tmp_path, make_recipe(tmp_path, on_shortfall="error", target=10**9), raise_on_error=False
    )
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "target is 1,000,000,000" in str(failures[0].event_specific_data.error)
    assert not (tmp_path / "data" / "small" / "blend" / "main").exists()


def test_recorded_shortfall_is_on_the_blend(tmp_path):
    result = materialize(tmp_path, make_recipe(tmp_path, target=10**6))
    blend_meta = meta(result, "blend/main")
    manifest = json.loads((tmp_path / "data" / "small" / "blend" / "main" / "manifest.json").read_text())
    assert blend_meta["shortfall_tokens"] == manifest["shortfall"]["tokens"] > 900_000
    assert all(r["exhausted"] for r in manifest["sources"])


@pytest.mark.parametrize("name", ["vi", "ja"])
def test_real_recipes_build_the_dedup_graph(name):
    recipe = load_recipe(name)
    graph = build_deployment_definitions(recipe, prefix=[]).resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert "near_duplicates" in keys
    for src in recipe.sources:
        assert {f"exact_dedup/{src.name}", f"minhash/{src.name}", f"deduped/{src.name}"} <= keys
        parents = {p.to_user_string() for p in graph.get(dg.AssetKey(["exact_dedup", src.name])).parent_keys}
        assert parents == {f"curated/{src.name}"} | {
            f"exact_dedup/{w.name}" for w in recipe.higher_priority(src.name)
        }
