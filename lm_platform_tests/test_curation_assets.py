"""The corpus and curated assets in Dagster: quarantine file beside the corpus, funnel metadata, and the
keep-rate asset check that warns when a source's keep rate leaves the recipe's band."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import yaml

from lm_platform.data.corpus.documents import iter_docs
from lm_platform.defs.assets import build_assets
from lm_platform.defs.resources import LMStorage
from lm_platform.recipe import load_recipe
from lm_platform.recipe.loader import BUNDLED_DIR


def _only_english_scored(raw: dict) -> None:
    """Only en_books is left: the other languages' reference models would name dropped sources."""
    for lang in ("vi", "ja"):
        cfg = raw["languages"][lang]
        cfg.pop("reference_lm")
        cfg["filters"] = [f for f in cfg["filters"] if f["name"] != "perplexity"]
    raw["languages"]["en"].pop("quality", None)  # its negatives (en_web) are dropped too
    raw["stages"][0]["blend"].pop("quality_weighting", None)


def _recipe(tmp_path, band):
    raw = yaml.safe_load((BUNDLED_DIR / "demo.yaml").read_text(encoding="utf-8"))
    src = tmp_path / "en.jsonl"
    lines = (BUNDLED_DIR / "demo_data" / "en_books.jsonl").read_bytes().splitlines(keepends=True)
    src.write_bytes(b"".join(lines[:40]) + b"{broken json\n" + b"".join(lines[40:]))
    raw["sources"] = [
        {"name": "en_books", "location": str(src), "format": "jsonl", "license": "CC0-1.0", "language": "en",
         "id_field": "id"}
    ]  # fmt: skip
    _only_english_scored(raw)
    raw["languages"]["en"]["expected_keep_rate"] = band
    stage = {
        k: v for k, v in raw["stages"][0].items() if k != "mixture_search"
    }  # it searches the demo's sources
    raw["stages"] = [{**stage, "blend": {**stage["blend"], "mixture": {"en_books": 1.0}}}]
    raw["evaluations"] = []
    for section in ("finetune", "merges", "exports"):  # fine-tuning builds on stages not kept here
        raw.pop(section, None)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return load_recipe(str(path))


def _curate(tmp_path, band):
    recipe = _recipe(tmp_path, band)
    return dg.materialize(
        build_assets(recipe),
        resources={"storage": LMStorage(root=str(tmp_path / "data")), "trainer": dg.PipesSubprocessClient()},
        selection=dg.AssetSelection.assets(["curated", "en_books"]).upstream(),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_keep_rate_outside_the_band_warns_and_the_run_goes_on(tmp_path):
    result = _curate(tmp_path, [0.99, 1.0])
    assert result.success
    check = {c.check_name: c for c in result.get_asset_check_evaluations()}["keep_rate_in_band"]
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["keep_rate"].value < 0.99


def test_keep_rate_inside_the_band_passes_with_funnel_and_quarantine(tmp_path):
    result = _curate(tmp_path, [0.5, 0.95])
    check = {c.check_name: c for c in result.get_asset_check_evaluations()}["keep_rate_in_band"]
    assert check.passed is True
    mats = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    corpus_meta = mats["corpus/en_books"].materialization.metadata
    assert corpus_meta["quarantined"].value == 1
    quarantine = json.loads(Path(corpus_meta["quarantine"].value).read_text())
    assert quarantine["records"][0]["line"] == 41 and quarantine["records"][0]["reason"].startswith(
        "malformed"
    )
    meta = mats["curated/en_books"].materialization.metadata
    funnel = meta["funnel"].value
    for step in (
        "encoding",
        "normalize",
        "language_id",
        "gopher_quality",
        "gopher_repetition",
        "fineweb",
        "c4",
    ):
        assert f"| {step} |" in funnel
    assert funnel.splitlines()[0].endswith("| seconds |")  # each step carries its wall time
    base = tmp_path / "data" / "demo" / "curated"
    excluded = list(iter_docs(base / "en_books.excluded.parquet"))
    assert {d["filter"] for d in excluded} >= {"length", "boilerplate", "encoding", "flagged_words"}
    assert all(d["reason"] for d in excluded)
    assert meta["docs_out"].value + len(excluded) == meta["docs_in"].value


def test_shards_are_disjoint_cover_the_input_and_match_the_unsharded_run(tmp_path):
    from lm_platform.data.corpus.documents import DocWriter
    from lm_platform.data.curation.curate import curate, merge_results

    recipe = load_recipe("demo")
    corpus = tmp_path / "corpus.parquet"
    records = [
        json.loads(line) for line in (BUNDLED_DIR / "demo_data" / "en_books.jsonl").read_text().splitlines()
    ]
    with DocWriter(corpus, batch_size=16) as w:  # several row groups
        for r in records:
            w.write({"id": r["id"], "text": r["text"], "source": "en_books", "license": "CC0-1.0", "lang": "en",
                     "url": None, "meta": "{}"})  # fmt: skip
    # Per-document filters only (the perplexity threshold is absolute too, but needs a reference model).
    cfg = recipe.languages["en"]
    cfg = cfg.model_copy(update={"filters": tuple(f for f in cfg.filters if f.name != "perplexity")})
    whole = curate(corpus, tmp_path / "all.parquet", tmp_path / "all.x.parquet", "en", cfg)
    parts = [
        curate(corpus, tmp_path / f"{i}.parquet", tmp_path / f"{i}.x.parquet", "en", cfg, shard=(i, 3))
        for i in range(3)
    ]
    ids = [[d["id"] for d in iter_docs(tmp_path / f"{i}.parquet")] for i in range(3)]
    assert all(ids) and sum(map(len, ids)) == len(set().union(*ids))  # non-empty and disjoint
    assert sorted(set().union(*ids)) == sorted(d["id"] for d in iter_docs(tmp_path / "all.parquet"))
    merged = merge_results(parts)
    assert (merged.docs_in, merged.docs_out, merged.excluded_by_filter) == (
        whole.docs_in,
        whole.docs_out,
        whole.excluded_by_filter,
    )
    assert [(s.step, s.docs_in, s.docs_out) for s in merged.funnel] == [
        (s.step, s.docs_in, s.docs_out) for s in whole.funnel
    ]
    # Every step timed itself; a merged step's time is the sum of the shards'.
    assert all(s.seconds > 0 for s in whole.funnel if s.docs_in)
    for k, step in enumerate(merged.funnel):
        assert step.seconds == sum(p.funnel[k].seconds for p in parts)


def test_a_sharded_source_is_a_partitioned_asset_and_dedup_finds_every_shard(tmp_path):
    from lm_platform.paths import Layout

    raw = yaml.safe_load((BUNDLED_DIR / "demo.yaml").read_text(encoding="utf-8"))
    raw["sources"] = [
        {"name": "en_books", "location": str(BUNDLED_DIR / "demo_data" / "en_books.jsonl"), "format": "jsonl",
         "license": "CC0-1.0", "language": "en", "id_field": "id", "shards": 2}
    ]  # fmt: skip
    _only_english_scored(raw)
    stage = {
        k: v for k, v in raw["stages"][0].items() if k != "mixture_search"
    }  # it searches the demo's sources
    raw["stages"] = [{**stage, "blend": {**stage["blend"], "mixture": {"en_books": 1.0}}}]
    raw["evaluations"] = []
    for section in ("finetune", "merges", "exports"):  # fine-tuning builds on stages not kept here
        raw.pop(section, None)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    recipe = load_recipe(str(path))
    assets = build_assets(recipe)
    resources = {"storage": LMStorage(root=str(tmp_path / "data")), "trainer": dg.PipesSubprocessClient()}
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(
        assets, resources=resources, selection=["corpus/en_books", "reference_lm/en"], instance=instance
    )
    for key in ("0000", "0001"):
        result = dg.materialize(
            assets, resources=resources, selection="curated/en_books", partition_key=key, instance=instance
        )
        assert result.success
    layout = Layout(tmp_path / "data", "demo")
    shards = layout.curated_shards("en_books")
    assert [p.name for p in shards] == ["0000.parquet", "0001.parquet"]
    kept = sum(len(list(iter_docs(p))) for p in shards)
    assert kept > 50
    # Each shard is scored by the language's reference model against the same absolute threshold.
    assert all(d["perplexity"] is not None for p in shards for d in iter_docs(p))
