"""The quality models of the languages (group `curation`): `quality_model/<lang>`, a linear classifier over
hashed n-grams trained on the language's high-quality sources against a sample of its web sources; the
curated assets of the sources that declare `quality` score with it."""

import dagster as dg

from lm_platform.data.curation.curate import Curator
from lm_platform.data.curation.quality_model import build_quality_model
from lm_platform.defs.metadata import headline, materialize, table, versioned
from lm_platform.defs.resources import LMStorage
from lm_platform.paths import Layout
from lm_platform.recipe.schema import Recipe
from lm_platform.versions import content_version

CODE = "1"


def _corpus(layout: Layout, recipe: Recipe, name: str):
    src = recipe.source(name)
    return layout.corpus_shard(name, "0").parent if src.sharded_read else layout.corpus(name)


def quality_model_asset(recipe: Recipe, lang: str) -> dg.AssetsDefinition:
    lang_cfg = recipe.languages[lang]
    cfg = lang_cfg.quality
    assert cfg is not None
    sources = [*cfg.positives, *cfg.negatives]

    @dg.asset(
        key=["quality_model", lang],
        deps=[dg.AssetKey(["corpus", s]) for s in sources],
        group_name="curation",
        kinds={"scikitlearn"},
        code_version=versioned(  # not dedup's priority, nor how curation uses the scores: the model is the same
            CODE,
            lang,
            lang_cfg,
            [recipe.source(s).model_dump(mode="json", exclude={"priority", "quality"}) for s in sources],
        ),
        description=f"Quality model of '{lang}': logistic regression over hashed word and character n-grams, "
        f"{', '.join(cfg.positives)} (high quality) against a seeded sample of {', '.join(cfg.negatives)}, "
        "after the language's filters; held-out precision, recall and AUC",
        metadata=headline("auc", "train_pos", "train_neg"),
    )
    def _quality_model(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        out = layout.quality_model(lang)
        res = build_quality_model(
            {s: _corpus(layout, recipe, s) for s in cfg.positives},
            {s: _corpus(layout, recipe, s) for s in cfg.negatives},
            out,
            lang,
            lang_cfg,
            Curator(lang, lang_cfg).filter,
            log=context.log.info,
        )
        return materialize(
            res,
            top_features=table(res.top_features, ["class", "feature", "weight"]),
            path=out,
            data_version=content_version(out),
        )

    return _quality_model


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """The quality model of each language that declares one."""
    return [quality_model_asset(recipe, lang) for lang, cfg in recipe.languages.items() if cfg.quality]
