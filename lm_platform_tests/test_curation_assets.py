"""The corpus and curated assets in Dagster: quarantine file beside the corpus, funnel metadata, and the
keep-rate asset check that warns when a source's keep rate leaves the recipe's band."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import yaml

from lm_platform.data.documents import iter_docs
from lm_platform.defs.assets import build_assets
from lm_platform.defs.resources import LMStorage
from lm_platform.recipe import load_recipe
from lm_platform.recipe.loader import BUNDLED_DIR


def _recipe(tmp_path, band):
    raw = yaml.safe_load((BUNDLED_DIR / "demo.yaml").read_text(encoding="utf-8"))
    src = tmp_path / "en.jsonl"
    lines = (BUNDLED_DIR / "demo_data" / "en_books.jsonl").read_bytes().splitlines(keepends=True)
    src.write_bytes(b"".join(lines[:40]) + b"{broken json\n" + b"".join(lines[40:]))
    raw["sources"] = [
        {"name": "en_books", "location": str(src), "format": "jsonl", "license": "CC0-1.0", "language": "en",
         "id_field": "id"}
    ]  # fmt: skip
    raw["languages"]["en"]["expected_keep_rate"] = band
    raw["stages"] = [{**raw["stages"][0], "mixture": {"en_books": 1.0}}]
    raw["evaluations"] = []
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
    base = tmp_path / "data" / "demo" / "curated"
    excluded = list(iter_docs(base / "en_books.excluded.parquet"))
    assert {d["filter"] for d in excluded} >= {"length", "boilerplate", "encoding", "flagged_words"}
    assert all(d["reason"] for d in excluded)
    assert meta["docs_out"].value + len(excluded) == meta["docs_in"].value
