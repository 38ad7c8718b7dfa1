"""Fine-tuning (group `finetune`): one `adapter/<set>` per instruction set (LoRA through PEFT), the
recipe's merge plan as chained `merged/<name>` assets (mergekit), and `export/<name>` model directories
with a model card. Adapters and merges are registered as model versions (`<recipe>_models`)."""

import json
import os

import dagster as dg

from lm_platform.defs.metadata import CODE_VERSION, headline, materialize
from lm_platform.defs.resources import LMStorage
from lm_platform.recipe.finetune import ExportConfig, InstructionSet, MergeConfig, check_model_ref
from lm_platform.recipe.schema import Recipe

GROUP = "finetune"


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
        code_version=CODE_VERSION,
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
        code_version=CODE_VERSION,
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


def export_asset(recipe: Recipe, e: ExportConfig) -> dg.AssetsDefinition:
    # The card reads the packed datasets' exact counts and the evaluation scores, so they come first.
    deps = _dep(e.model) + [dg.AssetKey(["dataset", st.name]) for st in recipe.stages]
    deps += [dg.AssetKey(["eval", ev.name]) for ev in recipe.evaluations]

    @dg.asset(
        key=["export", e.name],
        deps=deps,
        group_name=GROUP,
        kinds={"huggingface"},
        code_version=CODE_VERSION,
        description=f"{e.model} exported with tokenizer, chat template and model card",
        metadata=headline("dtype", "vocab_size", "licenses", "pushed"),
    )
    def _export(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        from lm_platform.finetune.card import lineage, model_card
        from lm_platform.finetune.export import export_model, push_to_hub

        layout = storage.layout(recipe.name)
        lin = lineage(recipe, e.model, layout.base)
        scores = _scores(layout.base)
        recipe_file = os.environ.get("LM_PLATFORM_RECIPE", f"bundled:{recipe.name}")
        card = model_card(recipe, e.name, e.model, lin, layout.base, recipe_file, scores)
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
            card=dg.MetadataValue.md(card),
            path=layout.export(e.name),
        )

    return _export


def _scores(base) -> dict:
    """Scores of evaluations the platform wrote (eval/<name>.json), where present."""
    out = {}
    for f in sorted((base / "eval").glob("*.json")) if (base / "eval").is_dir() else []:
        try:
            out[f.stem] = json.loads(f.read_text()).get("score")
        except (OSError, ValueError):
            continue
    return {k: v for k, v in out.items() if v is not None}


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """Adapters (one per instruction set), merges in plan order, exports."""
    assets = [adapter_asset(recipe, s) for s in (recipe.finetune.instructions if recipe.finetune else ())]
    assets += [merge_asset(recipe, m) for m in recipe.merges]
    return assets + [export_asset(recipe, e) for e in recipe.exports]
