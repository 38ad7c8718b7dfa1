"""Blending: the documents of each training stage, chosen by the stage's `blend` section from the exact
token counts of `tokens/<source>`, written as a document list (no text), with the dataset card and the
license check (group `blending`)."""

import dagster as dg

from lm_platform.data.blending.blend import DOCLIST_FILE, blend_tokens
from lm_platform.data.blending.dataset_card import CARD_FILE, write_dataset_card
from lm_platform.data.blending.pack import boundary_tokens, tokenizer_meta
from lm_platform.defs.metadata import headline, materialize, table, versioned
from lm_platform.defs.resources import LMStorage
from lm_platform.mixture.proxy import recommended_mixture
from lm_platform.paths import Layout
from lm_platform.recipe.licenses import not_on_allowlist
from lm_platform.recipe.schema import Recipe, StageConfig
from lm_platform.versions import content_version

CODE = "2"  # exact blends from tokens/<source>
SOURCE_COLUMNS = [
    "source",
    "ratio",
    "target_tokens",
    "available_tokens",
    "taken_tokens",
    "taken_docs",
    "share",
    "epochs",
    "chars_per_token",
]


def _license_check(manifest, allowed: set[str]) -> dg.AssetCheckResult:
    bad = [row for row in manifest["licenses"] if row["license"] not in allowed]
    return dg.AssetCheckResult(
        check_name="licenses_allowed",
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "disallowed": dg.MetadataValue.json(bad),
            "allowlist": dg.MetadataValue.json(sorted(allowed)),
        },
        description=None if not bad else not_on_allowlist(b["license"] for b in bad),
    )


def _quality_buckets(manifest) -> dict:
    """The quality buckets of the sources the stage weights by quality, as one table."""
    rows = [{"source": r["source"], **b} for r in manifest["sources"] for b in r.get("quality_buckets", [])]
    if not rows:
        return {}
    columns = ["source", "bucket", "top_share", "weight", "min_score", "available_tokens", "target_tokens"]
    return {"quality_buckets": table(rows, [*columns, "taken_tokens", "epochs"])}


def _target_check(manifest, on_shortfall: str, tolerance: float) -> dg.AssetCheckResult:
    """Blocking: a blend short of its target by more than the tolerance stops the stage (unless the
    recipe allows the shortfall, `on_shortfall: record`), naming the sources that ran dry."""
    short = manifest["shortfall"]
    dry = [r["source"] for r in manifest["sources"] if r.get("exhausted")]
    allowed = on_shortfall == "record"
    passed = allowed or short["fraction"] <= tolerance
    if not short["tokens"]:
        description = None
    elif passed:
        description = f"{short['tokens']:,} tokens ({short['fraction']:.1%}) short of the target" + (
            " (allowed by on_shortfall: record)" if allowed else f", within the tolerance {tolerance:.0%}"
        )
    else:
        description = (
            f"{short['tokens']:,} tokens ({short['fraction']:.1%}) short of the target "
            f"{manifest['target_tokens']:,}, more than max_shortfall {tolerance:.0%}; sources that ran dry: "
            f"{', '.join(dry) or 'none'}. Add data to them, lower target_tokens, set upsample, or allow the "
            "shortfall (on_shortfall: record)"
        )
    return dg.AssetCheckResult(
        check_name="target_met",
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "shortfall_tokens": short["tokens"],
            "shortfall_fraction": short["fraction"],
            "max_shortfall": tolerance,
            "sources_ran_dry": dg.MetadataValue.json(dry),
        },
        description=description,
    )


def _mixture(cfg, layout: Layout, stage: str) -> tuple[dict, dict | None]:
    """The ratios a stage blends and, for `mixture: recommended`, the search's evidence behind them."""
    return (
        recommended_mixture(layout.mixture_search(stage), stage) if cfg.recommended else (cfg.mixture, None)
    )


def blend_asset(recipe: Recipe, stage: StageConfig) -> dg.AssetsDefinition:
    key = dg.AssetKey(["blend", stage.name])
    allowed = set(recipe.license_allowlist)
    cfg = stage.blend
    sources = cfg.mixture_sources()
    # The card's dedup figures come from deduped/*; the boundary tokens per document from the tokenizer.
    deps = [dg.AssetKey([kind, s]) for kind in ("tokens", "deduped") for s in sources]
    if cfg.recommended:  # the ratios come from the stage's mixture search
        deps.append(dg.AssetKey(["mixture_recommendation", stage.name]))
    shares = (
        f"the mixture recommended by mixture_recommendation/{stage.name}"
        if cfg.recommended
        else ", ".join(f"{s} {r:.0%}" for s, r in cfg.mixture.items())
    )
    weighting = {s: [(b.top_share, b.weight) for b in bs] for s, bs in cfg.quality_weighting.items()}

    @dg.asset(
        key=key,
        deps=[*deps, dg.AssetKey("tokenizer")],
        group_name="blending",
        kinds={"python", "parquet"},
        code_version=versioned(CODE, recipe.seed, cfg, recipe.license_allowlist),
        description=f"Documents for stage '{stage.name}': {cfg.target_tokens:,} packed tokens (exact) by "
        + shares,
        metadata=headline("docs", "tokens"),
        check_specs=[
            dg.AssetCheckSpec(
                "licenses_allowed",
                asset=key,
                blocking=True,
                description="Every document's license is on the recipe's allowlist",
            ),
            dg.AssetCheckSpec(
                "target_met",
                asset=key,
                blocking=True,
                description=f"The blend holds its target of tokens, or falls short by at most "
                f"{cfg.max_shortfall:.0%} (on_shortfall: {cfg.on_shortfall})",
            ),
        ],
    )
    def _blend(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        out = layout.blend(stage.name)
        ratios, mixture_from = _mixture(cfg, layout, stage.name)
        manifest = blend_tokens(
            {s: layout.tokens(s) for s in sources},
            ratios,
            cfg.target_tokens,
            out,
            seed=f"{recipe.seed}:{stage.name}",
            boundary_tokens=boundary_tokens(tokenizer_meta(layout.tokenizer())),
            groups=cfg.groups,
            epoch_caps={s: cfg.epoch_cap(s) for s in sources},
            on_shortfall="error" if cfg.on_shortfall == "error" else "record",
            stage=stage.name,
            quality_weighting=weighting,
            quality_scores={s: layout.deduped(s) for s in weighting},
            mixture_from=mixture_from,
        )
        figures, curated = layout.dedup_dir() / "figures", layout.curated(sources[0]).parent
        card = write_dataset_card(recipe, stage.name, manifest, figures, out / CARD_FILE, curated_dir=curated)
        if manifest["shortfall"]["tokens"]:
            context.log.warning(
                f"blend/{stage.name}: {manifest['shortfall']['tokens']:,} tokens short of the target"
            )
        return materialize(
            checks=[
                _license_check(manifest, allowed),
                _target_check(manifest, cfg.on_shortfall, cfg.max_shortfall),
            ],
            docs=manifest["docs"],
            target_tokens=cfg.target_tokens,
            tokens=manifest["taken_tokens"],
            sources=table(manifest["sources"], SOURCE_COLUMNS),
            licenses=table(manifest["licenses"], ["license", "docs", "tokens", "share"]),
            shortfall_tokens=manifest["shortfall"]["tokens"],
            **_quality_buckets(manifest),
            dataset_card=dg.MetadataValue.md(card.read_text(encoding="utf-8")),
            path=out / DOCLIST_FILE,
            data_version=content_version(out),
        )

    return _blend


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """The blend of each training stage."""
    return [blend_asset(recipe, stage) for stage in recipe.stages]
