"""Training: each stage's blend packed by its `pack` section from the sources' token shards (no second
tokenization), and its checkpoint trained by the trainer process from a `TrainJob` built from its `train`
section (group `training`)."""

import dagster as dg

from lm_platform.atomic import read_json, write_json
from lm_platform.data.blending.blend import MANIFEST_FILE
from lm_platform.data.blending.pack import PackResult, pack_tokens
from lm_platform.defs.metadata import headline, materialize, table, versioned
from lm_platform.defs.resources import LMStorage, run_launch
from lm_platform.paths import Layout
from lm_platform.recipe.schema import Recipe, StageConfig
from lm_platform.training.job import make_job, make_launch
from lm_platform.versions import content_version

CODE = "2"  # packing from tokens/<source>
SOURCE_COLUMNS = ["source", "docs", "tokens", "blend_tokens", "target_tokens", "share", "ratio"]


def _tokens_per_source(index: PackResult, stage: StageConfig, layout: Layout) -> list[dict]:
    """Exact tokens per source next to what the blend counted and targeted (equal by construction)."""
    rows = {r["source"]: r for r in read_json(layout.blend(stage.name) / MANIFEST_FILE)["sources"]}
    total = index.tokens or 1
    return [
        {
            "source": s,
            "docs": v["docs"],
            "tokens": v["tokens"],
            "blend_tokens": rows.get(s, {}).get("taken_tokens"),
            "target_tokens": rows.get(s, {}).get("target_tokens"),
            "share": v["tokens"] / total,
            # None for a member of a group; the recommended share where the stage takes its search's
            "ratio": rows.get(s, {}).get("ratio") if stage.blend.recommended else stage.blend.mixture.get(s),
        }
        for s, v in sorted(index.sources.items())
    ]


def dataset_asset(recipe: Recipe, stage: StageConfig) -> dg.AssetsDefinition:
    cfg = stage.pack
    sources = stage.blend.mixture_sources()

    @dg.asset(
        key=["dataset", stage.name],
        deps=[dg.AssetKey(["blend", stage.name]), dg.AssetKey("tokenizer")]
        + [dg.AssetKey(["tokens", s]) for s in sources],
        group_name="training",
        kinds={"numpy"},
        code_version=versioned(CODE, cfg),
        description=f"blend/{stage.name} packed into sequences of {cfg.seq_len} (+1) tokens from the sources' "
        "token shards (no second tokenization)",
        metadata=headline("tokens", "train_sequences", "val_sequences"),
    )
    def _dataset(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        res = pack_tokens(
            layout.blend(stage.name),
            {s: layout.tokens(s) for s in sources},
            layout.tokenizer(),
            layout.dataset(stage.name),
            seq_len=cfg.seq_len,
            val_fraction=cfg.val_fraction,
            shuffle_buffer=cfg.shuffle_buffer,
            seed=cfg.seed,
            loss_mask=cfg.loss_mask,
        )
        train, val = res.splits["train"], res.splits["val"]
        return materialize(
            tokens=res.tokens,
            train_tokens=train["tokens"],
            val_tokens=val["tokens"],
            train_sequences=train["rows"],
            val_sequences=val["rows"],
            train_docs=train["docs"],
            val_docs=val["docs"],
            seq_len=res.seq_len,
            dtype=res.dtype,
            boundary_tokens=res.boundary_tokens,
            tokens_per_source=table(_tokens_per_source(res, stage, layout), SOURCE_COLUMNS),
            exact_tokens_per_source={s: v["tokens"] for s, v in res.sources.items()},
            padding_tokens=train["padding"] + val["padding"],
            loss_mask=res.loss_mask,
            path=layout.dataset(stage.name),
            data_version=content_version(layout.dataset(stage.name)),
        )

    return _dataset


def checkpoint_asset(recipe: Recipe, stage: StageConfig) -> dg.AssetsDefinition:
    deps = [dg.AssetKey(["dataset", stage.name]), dg.AssetKey("tokenizer")]
    if stage.init_from != "model":
        deps.append(dg.AssetKey(["checkpoint", stage.init_from]))
    train = stage.train

    @dg.asset(
        key=["checkpoint", stage.name],
        deps=deps,
        group_name="training",
        kinds={"pytorch", "huggingface"},
        pool="gpu",
        # The data version comes from the trainer through Pipes (it reports what it wrote).
        code_version=versioned(stage.init_from, train, recipe.model, recipe.generation),
        description=f"Stage '{stage.name}' trained by the trainer process (init: {stage.init_from}, "
        f"trainable: {train.trainable}, schedule: {train.schedule})",
        metadata=headline("steps", "tokens_seen", "initial_val_loss", "final_val_loss", "tokens_per_second"),
    )
    def _checkpoint(
        context: dg.AssetExecutionContext, storage: LMStorage, trainer: dg.PipesSubprocessClient
    ) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        launch = make_launch(recipe, stage.name, layout)
        write_json(launch.job_file, make_job(recipe, stage.name, layout).model_dump(mode="json"))
        return run_launch(trainer, context, launch).get_materialize_result()

    return _checkpoint


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """The packed dataset and the checkpoint of each stage."""
    assets: list[dg.AssetsDefinition] = []
    for stage in recipe.stages:
        assets += [dataset_asset(recipe, stage), checkpoint_asset(recipe, stage)]
    return assets
