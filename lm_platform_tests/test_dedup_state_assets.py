"""Through the asset graph: one source changes and only a downstream selection of it is rerun
(`exact_dedup/web+`-like, without near_duplicates). deduped/web must refuse the stale near-duplicate
removals rather than drop the wrong documents; once near_duplicates is rerun the result equals a fresh
run on the new input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg

from lm_platform.data.corpus.documents import iter_docs
from lm_platform.defs.assets import build_assets
from lm_platform.defs.resources import LMStorage
from lm_platform_tests.test_dedup_assets import make_recipe


def run(tmp_path: Path, recipe, keys: list[str] | None = None, raise_on_error: bool = True):
    selection = (
        dg.AssetSelection.assets(*[dg.AssetKey(k.split("/")) for k in keys])
        if keys
        else dg.AssetSelection.assets(dg.AssetKey(["blend", "main"])).upstream()
    )
    return dg.materialize(
        build_assets(recipe),
        resources={"storage": LMStorage(root=str(tmp_path / "data")), "trainer": dg.PipesSubprocessClient()},
        selection=selection,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def deduped_ids(tmp_path: Path, source: str) -> list[str]:
    return [d["id"] for d in iter_docs(tmp_path / "data" / "small" / "deduped" / f"{source}.parquet")]


def change_web(recipe_dir: Path) -> None:
    """A new document at the front of web: every later document moves one row down."""
    path = recipe_dir / "web.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    new = json.dumps({"id": "web-new", "text": "A brand new article. " + " ".join(["fresh words"] * 40)})
    path.write_text("\n".join([new, *lines]) + "\n", encoding="utf-8")


def test_downstream_only_rerun_of_a_changed_source_refuses_stale_near_duplicates(tmp_path):
    work, clean = tmp_path / "work", tmp_path / "clean"
    work.mkdir()
    recipe = make_recipe(work)
    run(work, recipe)
    before = deduped_ids(work, "web")
    change_web(work)
    partial = ["corpus/web", "curated/web", "exact_dedup/web", "minhash/web", "deduped/web"]
    result = run(work, recipe, partial, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "near_duplicates is stale for 'web'" in str(failures[0].event_specific_data.error)
    assert deduped_ids(work, "web") == before  # the old output stays; nothing half-written
    run(work, recipe)
    # A fresh run on the new state, in another directory.
    shutil.copytree(work, clean, ignore=shutil.ignore_patterns("data"))
    run(clean, make_recipe_from(clean))
    assert deduped_ids(work, "web") == deduped_ids(clean, "web")
    assert "web/web-new" in deduped_ids(work, "web") and len(deduped_ids(work, "web")) == len(before) + 1
    assert deduped_ids(work, "books") == deduped_ids(clean, "books")


def make_recipe_from(directory: Path):
    from lm_platform.recipe import load_recipe

    return load_recipe(str(directory / "small.yaml"))


def test_priority_change_in_the_recipe_reranks_the_persistent_index(tmp_path):
    """books outranks web, then the recipe lowers books below web: rerunning the graph on the same
    persistent index gives what a fresh run of the new recipe gives (web now keeps the shared text)."""
    import yaml

    from lm_platform.recipe import load_recipe

    def lower_books(directory: Path):
        raw = yaml.safe_load((directory / "small.yaml").read_text(encoding="utf-8"))
        for src in raw["sources"]:
            if src["name"] == "books":
                src["priority"] = -1
        (directory / "small.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
        return load_recipe(str(directory / "small.yaml"))

    work, clean = tmp_path / "work", tmp_path / "clean"
    work.mkdir()
    recipe = make_recipe(work)
    # web also holds an exact copy of a book (case and punctuation aside): the persistent index decides it.
    book = json.loads((work / "books.jsonl").read_text(encoding="utf-8").splitlines()[0])["text"]
    with open(work / "web.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "web-copy", "text": book.upper() + "!!"}) + "\n")
    run(work, recipe)
    assert len(deduped_ids(work, "books")) == 20 and "web/web-copy" not in deduped_ids(work, "web")
    # web's near copy of a book (one word changed) and its exact copy now win over the books' ones.
    changed = lower_books(work)
    run(work, changed)
    shutil.copytree(work, clean, ignore=shutil.ignore_patterns("data"))
    run(clean, make_recipe_from(clean))
    for source in ("web", "books"):
        assert deduped_ids(work, source) == deduped_ids(clean, source)
    assert len(deduped_ids(work, "books")) == 18 and "web/web-copy" in deduped_ids(work, "web")
