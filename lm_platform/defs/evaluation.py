"""Evaluation: each of the recipe's evaluations scored on its stage's checkpoint (group `evaluation`)."""

import json

import dagster as dg

from lm_platform.atomic import write_json
from lm_platform.defs.metadata import headline, materialize, table, versioned
from lm_platform.defs.resources import LMStorage
from lm_platform.recipe.schema import EvalConfig, Recipe
from lm_platform.versions import content_version


def _previous_score(context: dg.AssetExecutionContext, key: dg.AssetKey):
    previous = context.instance.get_latest_materialization_event(key)
    if previous is None or previous.asset_materialization is None:
        return None
    entry = previous.asset_materialization.metadata.get("score")
    return entry.value if entry is not None else None


def eval_asset(recipe: Recipe, ev: EvalConfig) -> dg.AssetsDefinition:
    stage = recipe.eval_stage(ev)
    key = dg.AssetKey(["eval", ev.name])

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(["checkpoint", stage.name])],
        group_name="evaluation",
        kinds={"pytorch"},
        code_version=versioned(ev, stage.name),
        description=f"{ev.kind} of checkpoint/{stage.name} on {ev.location}",
        metadata=headline("score", "n", "stderr"),
    )
    def _eval(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        from lm_platform.evaluation.perplexity import perplexity, read_eval_docs

        layout = storage.layout(recipe.name)
        result = perplexity(layout.checkpoint(stage.name), read_eval_docs(ev))
        result["checkpoint"] = str(layout.checkpoint(stage.name))
        write_json(layout.eval(ev.name), result)
        per_lang = [{"lang": k, **v} for k, v in result["per_language"].items()]
        return materialize(
            score=result["score"],
            metric="perplexity (lower is better)",
            n=result["n"],
            tokens=result["tokens"],
            stderr=result["stderr"],
            previous_score=_previous_score(context, key),
            per_language=table(per_lang, ["lang", "score", "stderr", "n", "tokens"]),
            checkpoint=dg.MetadataValue.path(result["checkpoint"]),
            result=dg.MetadataValue.json(json.loads(json.dumps(result))),
            data_version=content_version(layout.eval(ev.name)),
        )

    return _eval


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """One asset per evaluation of the recipe."""
    return [eval_asset(recipe, ev) for ev in recipe.evaluations]
