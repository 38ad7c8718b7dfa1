"""Fine-tuning (group `finetune`): one `adapter/<set>` per instruction set (LoRA through PEFT), the
recipe's merge plan as chained `merged/<name>` assets (mergekit), and `export/<name>` model directories
with a model card. Adapters and merges are registered as model versions (`<recipe>_models`)."""

import os

import dagster as dg

from lm_platform.defs.metadata import headline, materialize, versioned
from lm_platform.defs.resources import LMStorage
from lm_platform.evaluation.versions import current_result, version_weights
from lm_platform.paths import Layout
from lm_platform.recipe.finetune import ExportConfig, InstructionSet, MergeConfig, check_model_ref
from lm_platform.recipe.schema import Recipe

GROUP = "finetune"
CODE = "2"  # exports after the evaluations of the exported version, whose scores the card shows


def versions_name(recipe: Recipe) -> str:
    """The dynamic partitions definition of the recipe's model versions (shared with evaluation)."""
    return f"{recipe.name}_models"


def register_model_version(instance: dg.DagsterInstance, recipe: Recipe, key: str) -> bool:
    """Add `key` (`adapter/<set>`, `merged/<name>`) to the recipe's model versions; False if known."""
    name = versions_name(recipe)
    if instance.has_dynamic_partition(name, key):
        return False
    instance.add_dynamic_partitions(name, [key])
    return True


def _dep(ref: str) -> list[dg.AssetKey]:
    kind, name = check_model_ref(ref)
    return [] if kind == "path" else [dg.AssetKey([kind, name])]


def adapter_asset(recipe: Recipe, s: InstructionSet) -> dg.AssetsDefinition:
    ft = recipe.finetune
    lora, train = ft.lora_for(s), ft.train_for(s)

    @dg.asset(
        key=["adapter", s.name],
        deps=_dep(ft.base),
        group_name=GROUP,
        kinds={"pytorch", "peft"},
        code_version=versioned(CODE, ft.base, s, lora, train, ft.system_prompt),
        description=f"LoRA (rank {lora.rank}, {lora.target}) on {ft.base} trained on {s.name} ({s.format})",
        metadata=headline("steps", "initial_loss", "final_loss", "target_tokens"),
    )
    def _adapter(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        from lm_platform.finetune.lora import train_adapter

        layout = storage.layout(recipe.name)
        res = train_adapter(
            layout.model_ref(ft.base),
            s.location,
            s.format,
            layout.adapter(s.name),
            lora,
            train,
            system_prompt=ft.system_prompt,
            merge_into_base=s.merge_into_base,
        )
        registered = s.merge_into_base and register_model_version(
            context.instance, recipe, f"adapter/{s.name}"
        )
        curve = res.curve
        return materialize(
            res,
            curve=dg.MetadataValue.json(curve[:: max(1, len(curve) // 50)]),
            license=s.license,
            registered_version=f"adapter/{s.name}" if registered else None,
            path=layout.adapter(s.name),
        )

    return _adapter


def merge_asset(recipe: Recipe, m: MergeConfig) -> dg.AssetsDefinition:
    deps = _dep(m.base) + [k for x in m.models for k in _dep(x.model)]

    @dg.asset(
        key=["merged", m.name],
        deps=list(dict.fromkeys(deps)),
        group_name=GROUP,
        kinds={"pytorch", "mergekit"},
        code_version=versioned(CODE, m),
        description=f"mergekit {m.method} of {[x.model for x in m.models]} over {m.base}",
        metadata=headline("method", "vocab_size", "seed"),
    )
    def _merged(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        from lm_platform.finetune.merge import run_merge

        layout = storage.layout(recipe.name)
        res = run_merge(m, layout.base, layout.merged(m.name))
        register_model_version(context.instance, recipe, f"merged/{m.name}")
        return materialize(
            res, config_yaml=dg.MetadataValue.md(f"```yaml\n{res.config_yaml}```"), path=layout.merged(m.name)
        )

    return _merged


def version_of(ref: str) -> str | None:
    """The model version key a fine-tuning reference names (`checkpoint/<stage>` -> `<stage>`), None for a
    local path (not a version the platform scores)."""
    kind, name = check_model_ref(ref)
    if kind == "path":
        return None
    return name if kind == "checkpoint" else f"{kind}/{name}"


def export_asset(recipe: Recipe, e: ExportConfig) -> dg.AssetsDefinition:
    # The card reads the packed datasets' exact counts and the scores of the exported version, so they come
    # first: the export depends on exactly that version's partition of each evaluation.
    version = version_of(e.model)
    deps: list = _dep(e.model) + [dg.AssetKey(["dataset", st.name]) for st in recipe.stages]
    if version is not None:
        deps += [
            dg.AssetDep(
                dg.AssetKey(["eval", ev.name]),
                partition_mapping=dg.SpecificPartitionsPartitionMapping([version]),
            )
            for ev in recipe.evaluations
        ]
    sources = [(s.name, s.license) for s in recipe.sources]

    @dg.asset(
        key=["export", e.name],
        deps=deps,
        group_name=GROUP,
        kinds={"huggingface"},
        code_version=versioned(CODE, e, recipe.stages, recipe.evaluations, sources, recipe.finetune),
        description=f"{e.model} exported with tokenizer, chat template and model card (with the scores of "
        f"version '{version}')",
        metadata=headline("dtype", "vocab_size", "licenses", "pushed"),
    )
    def _export(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        from lm_platform.finetune.card import lineage, model_card
        from lm_platform.finetune.export import export_model, push_to_hub

        layout = storage.layout(recipe.name)
        lin = lineage(recipe, e.model, layout.base)
        scores, weights = _scores(recipe, layout, version)
        scored = _scored_line(version, weights, scores)
        recipe_file = os.environ.get("LM_PLATFORM_RECIPE", f"bundled:{recipe.name}")
        card = model_card(recipe, e.name, e.model, lin, layout.base, recipe_file, scores, scored)
        res = export_model(layout.model_ref(e.model), layout.export(e.name), e.dtype, card)
        push = None
        if e.hub is not None:
            push = push_to_hub(layout.export(e.name), e.hub)
            context.log.info(push.message)
        licenses = lin.licenses(recipe)
        return materialize(
            res,
            licenses=", ".join(sorted(licenses)),
            tokens_per_license={k: sum(v.values()) for k, v in licenses.items()},
            pushed=push.pushed if push else "no hub configured",
            scored_version=version,
            scored_weights=weights,
            scores=scores,
            card=dg.MetadataValue.md(card),
            path=layout.export(e.name),
        )

    return _export


def _scores(recipe: Recipe, layout: Layout, version: str | None) -> tuple[dict, str | None]:
    """The scores of `version` on each of the recipe's benchmarks that scored the weights the version names
    now (`evaluation.versions.current_result`), and those weights' hash."""
    if version is None:
        return {}, None
    out = {}
    for ev in recipe.evaluations:
        res = current_result(layout, ev.name, version)
        if res is not None and res.get("score") is not None:
            out[ev.name] = res["score"]
    return out, version_weights(layout, version)


def _scored_line(version: str | None, weights: str | None, scores: dict) -> str:
    if version is None:
        return "Not scored: the export is of a local path, not a model version of the platform."
    if not scores:
        return (
            f"Version `{version}` (weights `{weights}`) has no scores yet: score it (`eval/*`, partition "
            f"`{version}`) and export again."
        )
    return (
        f"Scores of version `{version}`, the exported model (weights `{weights}`, before the export's cast)."
    )


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """Adapters (one per instruction set), merges in plan order, exports."""
    assets = [adapter_asset(recipe, s) for s in (recipe.finetune.instructions if recipe.finetune else ())]
    assets += [merge_asset(recipe, m) for m in recipe.merges]
    return assets + [export_asset(recipe, e) for e in recipe.exports]
