"""The mixture search as Dagster assets, on a tiny synthetic search (3 candidates over two sources): the
candidates register their partitions, each candidate's proxy runs as blend, dataset, checkpoint (the
trainer through the `trainer` resource, as every stage trains) and score, the recommendation fits and
verifies, and a stage with `mixture: recommended` blends the recommended shares and says so in its
dataset card. Proxies are no model versions: nothing registers, schedules or trains them."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pytest

from lm_platform.data.blending.tokens import tokenize_source
from lm_platform.data.corpus.documents import DocWriter, make_doc
from lm_platform.paths import Layout
from lm_platform_tests.conftest import write_demo_variant
from lm_platform_tests.test_mixture_search import TINY_PROXY_MODEL, word_chain, word_tokenizer

pytestmark = pytest.mark.slow  # four trainer processes through Dagster Pipes: about 30 s of CPU

SEARCHED = ("vi_news", "ja_wiki")


def _search(raw: dict, target) -> None:
    main = raw["stages"][0]
    main["blend"] = {"mixture": "recommended", "target_tokens": 3000}
    main["mixture_search"] = {
        "sources": {"vi_news": {"min": 0.1, "max": 0.9}, "ja_wiki": {"min": 0.1, "max": 0.9}},
        "candidates": 3,
        "seed": 1,
        "proxy": {
            "model": dict(TINY_PROXY_MODEL),
            "tokens": 3000,
            "pack": {"seq_len": 32},
            "train": {"micro_batch_size": 16, "lr": 1.0e-2, "log_every": 50, "val_rows": 8},
        },
        "target": [{"evaluation": "perplexity", "language": "vi"}],
    }
    raw["evaluations"] = [{"name": "perplexity", "kind": "perplexity", "location": str(target)}]
    for section in ("finetune", "merges", "exports"):
        raw.pop(section, None)


def test_search_assets_recommend_and_the_stage_takes_it(tmp_path, monkeypatch):
    from lm_platform.defs.automation import build as automation
    from lm_platform.defs.deployment import build_deployment_definitions
    from lm_platform.defs.mixture import partitions
    from lm_platform.deployment.profile import load_profile
    from lm_platform.evaluation.versions import discover_versions
    from lm_platform.finetune.card import lineage
    from lm_platform.recipe import load_recipe

    base = tmp_path / "data" / "demo"
    tokenizer = word_tokenizer(base / "tokenizer", prefixes=("v", "j"))
    rng = np.random.default_rng(3)
    target = tmp_path / "target.jsonl"
    for s in SEARCHED:
        doc = word_chain(s[0], rng)
        with DocWriter(tmp_path / f"{s}.parquet") as w:
            for i in range(120):
                w.write(make_doc(f"{s}-{i}", doc(), s, "CC0-1.0", s[:2]))
        tokenize_source(tmp_path / f"{s}.parquet", tokenizer, base / "tokens" / s, source=s)
        if s == "vi_news":
            target.write_text("".join(json.dumps({"text": doc(), "lang": "vi"}) + "\n" for _ in range(8)))
    recipe = load_recipe(str(write_demo_variant(tmp_path, lambda raw: _search(raw, target))))
    monkeypatch.setenv("LM_PLATFORM_STORAGE", str(tmp_path / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    defs = build_deployment_definitions(recipe, load_profile("local"), prefix=[])
    instance = dg.DagsterInstance.ephemeral()

    def run(*keys: str, partition: str | None = None) -> None:
        result = dg.materialize(
            list(defs.assets),
            selection=[dg.AssetKey.from_user_string(k) for k in keys],
            instance=instance,
            resources=defs.resources,
            partition_key=partition,
        )
        assert result.success

    run("mixture_candidates/main")
    names = instance.get_dynamic_partitions(partitions(recipe, recipe.stage("main")).name)
    assert names == ["c00", "c01", "c02"]
    for name in names:
        run(*(f"mixture_{k}/main" for k in ("blend", "dataset", "checkpoint", "score")), partition=name)
    run("mixture_recommendation/main")
    rec = json.loads((base / "mixture" / "main" / "recommendation.json").read_text())
    assert rec["mixture"] == {"vi_news": 0.9, "ja_wiki": 0.1}  # the target is vi_news's text
    assert rec["verification"]["score"] < rec["best_candidate"]["score"]
    event = instance.get_latest_materialization_event(dg.AssetKey(["mixture_recommendation", "main"]))
    meta = event.asset_materialization.metadata
    assert meta["loo_spearman"].value == rec["loo_spearman"] and "data:image/png" in meta["plot"].value

    run("blend/main")
    manifest = json.loads((base / "blend" / "main" / "manifest.json").read_text())
    assert manifest["ratios"] == {"vi_news": 0.9, "ja_wiki": 0.1}
    assert manifest["mixture_from"]["kind"] == "recommended"
    card = (base / "blend" / "main" / "README.md").read_text()
    assert "recommended by `mixture_recommendation/main`" in card
    # The model card's lineage states the stage's mixture with the search's evidence.
    settings = lineage(recipe, "checkpoint/main", base).stages[0]["settings"]
    assert settings["mixture"]["recommended"] == {"vi_news": 0.9, "ja_wiki": 0.1}
    assert settings["mixture"]["loo_spearman"] == rec["loo_spearman"]

    # Proxies are not model versions: the versions sensor finds none, nothing schedules or trains them.
    assert discover_versions(recipe, Layout(tmp_path / "data", recipe.name), set()) == []
    auto = automation(recipe, training=True)
    watched = {
        k
        for sensor in auto.sensors
        if hasattr(sensor, "asset_selection") and sensor.asset_selection is not None
        for k in sensor.asset_selection.resolve(defs.resolve_asset_graph())
    }
    scheduled = {k for s in auto.schedules for k in s.job.selection.resolve(defs.resolve_asset_graph())}
    assert not any(k.path[0].startswith("mixture_") for k in watched | scheduled)
