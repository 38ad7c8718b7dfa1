"""Blending: the documents of each training stage, drawn from the deduped sources by the stage's `blend`
section, with the dataset card and the license check (group `blending`)."""

import dagster as dg

from lm_platform.data.blend import BLEND_FILE, MANIFEST_FILE, blend, measured_chars_per_token
from lm_platform.data.dataset_card import CARD_FILE, write_dataset_card
from lm_platform.defs.metadata import CODE_VERSION, headline, materialize, table
from lm_platform.defs.resources import LMStorage
from lm_platform.paths import Layout
from lm_platform.recipe.schema import Recipe, StageConfig

SOURCE_COLUMNS = ["source", "ratio", "target_tokens", "available_tokens", "taken_tokens", "share", "epochs"]


def _token_estimates(recipe: Recipe, stage: StageConfig, layout: Layout) -> tuple[dict[str, float], str]:
    """Chars per token per source (measured on the stage's last packed dataset where the stage asks for
    it and one exists, else the recipe's per-language value), and how they were obtained."""
    sources = stage.blend.mixture_sources()
    cpt = {s: recipe.languages[recipe.source(s).language].chars_per_token for s in sources}
    measured = {}
    if stage.blend.token_estimate == "measured":
        measured = measured_chars_per_token(
            layout.blend(stage.name) / MANIFEST_FILE, layout.dataset(stage.name) / "index.json"
        )
        cpt.update({s: v for s, v in measured.items() if s in cpt})
    if measured:
        how = (
            f"chars / chars_per_token measured on dataset/{stage.name} for {sorted(measured)}, the recipe's "
            "per-language value for the rest"
        )
    else:
        how = "chars / chars_per_token of the source's language (recipe)"
    return cpt, how


def _license_check(licenses: list[dict], allowed: set[str]) -> dg.AssetCheckResult:
    bad = [row for row in licenses if row["license"] not in allowed]
    return dg.AssetCheckResult(
        check_name="licenses_allowed",
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "disallowed": dg.MetadataValue.json(bad),
            "allowlist": dg.MetadataValue.json(sorted(allowed)),
        },
        description=None if not bad else f"licenses not on the allowlist: {[b['license'] for b in bad]}",
    )


def blend_asset(recipe: Recipe, stage: StageConfig) -> dg.AssetsDefinition:
    key = dg.AssetKey(["blend", stage.name])
    allowed = set(recipe.license_allowlist)
    cfg = stage.blend

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(["deduped", s]) for s in cfg.mixture_sources()],
        group_name="blending",
        kinds={"python", "parquet"},
        code_version=CODE_VERSION,
        description=f"Documents for stage '{stage.name}': {cfg.target_tokens:,} tokens by "
        + ", ".join(f"{s} {r:.0%}" for s, r in cfg.mixture.items()),
        metadata=headline("docs", "est_tokens"),
        check_specs=[
            dg.AssetCheckSpec(
                "licenses_allowed",
                asset=key,
                blocking=True,
                description="Every document's license is on the recipe's allowlist",
            )
        ],
    )
    def _blend(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        cpt, how = _token_estimates(recipe, stage, layout)
        res = blend(
            {s: (layout.deduped(s), cpt[s]) for s in cfg.mixture_sources()},
            cfg.mixture,
            cfg.target_tokens,
            layout.blend(stage.name),
            seed=f"{recipe.seed}:{stage.name}",
            groups=cfg.groups,
            epoch_caps={s: cfg.epoch_cap(s) for s in cfg.mixture_sources()},
            on_shortfall=cfg.on_shortfall,
            stage=stage.name,
            token_estimate=how,
        )
        card = write_dataset_card(
            recipe, stage.name, res, layout.dedup_dir() / "figures", layout.blend(stage.name) / CARD_FILE
        )
        if res.shortfall["tokens"]:
            context.log.warning(f"blend/{stage.name}: {res.shortfall['tokens']:,} tokens short of the target")
        return materialize(
            checks=[_license_check(res.licenses, allowed)],
            docs=res.docs,
            target_tokens=cfg.target_tokens,
            est_tokens=res.taken_tokens,
            sources=table(res.sources, SOURCE_COLUMNS),
            licenses=table(res.licenses, ["license", "docs", "tokens", "share"]),
            shortfall_tokens=res.shortfall["tokens"],
            dataset_card=dg.MetadataValue.md(card.read_text(encoding="utf-8")),
            path=layout.blend(stage.name) / BLEND_FILE,
        )

    return _blend


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """The blend of each training stage."""
    return [blend_asset(recipe, stage) for stage in recipe.stages]
