"""Rematerializing an asset whose inputs and settings did not change reports the same data version; the
tokenizer, tokens/*, blend/* and dataset/* assets run in process on deduplicated demo text."""

from __future__ import annotations

import dagster as dg
import pytest

from lm_platform.data.corpus.documents import DocWriter, make_doc
from lm_platform.demo.generate import read_paragraphs
from lm_platform.recipe import load_recipe

SOURCES = {"vi_news": "vi", "ja_wiki": "ja", "en_books": "en", "en_web": "en"}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from lm_platform.defs import blending, tokenizer, training
    from lm_platform.defs.resources import LMStorage

    root = tmp_path_factory.mktemp("versions")
    recipe = load_recipe("demo")
    storage = LMStorage(root=str(root / "data"))
    layout = storage.layout(recipe.name)
    layout.deduped("x").parent.mkdir(parents=True)
    for i, (src, lang) in enumerate(SOURCES.items()):
        paras = read_paragraphs(lang)[i % 2 :: 2]
        with DocWriter(layout.deduped(src)) as w:
            w.write_all(  # en_web is scored by the quality model in the demo (blend/main weights by it)
                {**make_doc(f"{src}/{j}", t, src, recipe.source(src).license, lang), "quality": (j % 10) / 10}
                for j, t in enumerate(paras)
            )
    assets = [
        a
        for a in tokenizer.build(recipe) + blending.build(recipe) + training.build(recipe)
        if not any(k.path[0] == "checkpoint" for k in a.keys)
    ]
    instance = dg.DagsterInstance.ephemeral()
    resources = {"storage": storage, "trainer": dg.PipesSubprocessClient()}
    return assets, resources, instance, layout


def _versions(result) -> dict[str, str]:
    return {
        m.asset_key.to_user_string(): m.tags["dagster/data_version"]
        for m in result.get_asset_materialization_events()
        for m in [m.event_specific_data.materialization]
    }


def test_rematerializing_unchanged_assets_reports_the_same_data_versions(graph):
    assets, resources, instance, layout = graph
    first = _versions(dg.materialize(assets, resources=resources, instance=instance))
    assert {"tokenizer", "tokens/vi_news", "blend/main", "dataset/main", "dataset/anneal"} <= set(first)
    second = _versions(dg.materialize(assets, resources=resources, instance=instance))
    assert second == first
    # A changed output changes the version: the same blend with another seed writes other documents.
    from lm_platform.data.blending.blend import blend_tokens
    from lm_platform.versions import content_version

    before = content_version(layout.blend("main"))
    blend_tokens(
        {s: layout.tokens(s) for s in SOURCES},
        {"vi_news": 0.5, "ja_wiki": 0.5},
        5000,
        layout.blend("main"),
        seed=99,
    )
    assert content_version(layout.blend("main")) != before


def test_a_checkpoint_export_is_versioned_by_what_it_holds_not_how_the_run_went(tmp_path):
    from lm_platform.training.config import TrainJob
    from lm_platform.training.train import export_data_version

    out = tmp_path / "checkpoint" / "main"
    out.mkdir(parents=True)
    job = TrainJob(
        recipe="r", stage="main", dataset_dir="d", tokenizer_dir="t", output_dir=str(out),
        run_dir=str(out) + ".run", init={"kind": "scratch", "model": {}},
    )  # fmt: skip
    (out / "model.safetensors").write_bytes(b"weights")
    (out / "metrics.json").write_text('{"tokens_per_s": 100}')
    first = export_data_version(job)
    (out / "metrics.json").write_text('{"tokens_per_s": 250}')  # a rerun that was faster
    (out / "loss_curve.png").write_bytes(b"png")
    assert export_data_version(job) == first
    (out / "model.safetensors").write_bytes(b"other weights")
    assert export_data_version(job) != first
