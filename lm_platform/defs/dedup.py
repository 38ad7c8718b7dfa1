"""Dedup: exact duplicates against a persistent index, MinHash near duplicates across sources, and the
deduplicated (and decontaminated) output of each source (group `dedup`)."""

import json

import dagster as dg

from lm_platform.data.dedup.decontam import recipe_decontaminator
from lm_platform.data.dedup.deduped import deduplicate_source
from lm_platform.data.dedup.exact import Winner, exact_dedup_source, exact_shards, recipe_ranks
from lm_platform.data.dedup.local_index import index_dir
from lm_platform.data.dedup.near import minhash_signatures, near_dup_clusters
from lm_platform.defs.metadata import headline, licenses_table, materialize, table, versioned
from lm_platform.defs.resources import LMStorage
from lm_platform.evaluation.sets import evaluation_texts
from lm_platform.recipe.schema import Recipe, SourceConfig
from lm_platform.versions import content_version

GROUP = "dedup"


def _winner(recipe: Recipe, src: SourceConfig) -> Winner:
    return Winner(src.name, src.priority, [s.name for s in recipe.sources].index(src.name))


def _keep_order(recipe: Recipe) -> list[SourceConfig]:
    """Sources in the order their copies win: higher priority first, then recipe order."""
    return sorted(recipe.sources, key=lambda s: (-s.priority, _winner(recipe, s).rank))


def _near_enabled(recipe: Recipe) -> bool:
    return recipe.dedup.near is not None and recipe.dedup.near.enabled


def exact_dedup_asset(recipe: Recipe, src: SourceConfig) -> dg.AssetsDefinition:
    winners = recipe.higher_priority(src.name)
    cfg = recipe.dedup.exact

    @dg.asset(
        key=["exact_dedup", src.name],
        deps=[dg.AssetKey(["curated", src.name])] + [dg.AssetKey(["exact_dedup", s.name]) for s in winners],
        group_name=GROUP,
        kinds={"python", "sqlite", "parquet"},
        code_version=versioned(src.name, src.priority, [(w.name, w.priority) for w in winners], cfg),
        description=f"'{src.name}' without exact duplicates: checked against the persistent {cfg.index} index "
        f"of everything kept before, where {[s.name for s in winners] or 'no other source'} win",
        metadata=headline("docs_in", "docs_out", "exact_duplicates_removed", "cross_source_removed"),
    )
    def _exact(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        with index_dir(
            layout.dedup_dir() / "exact_index", storage.local_index and cfg.index == "sqlite"
        ) as d:
            res = exact_dedup_source(
                layout.curated_shards(src.name),
                layout.dedup_dir(),
                _winner(recipe, src),
                [_winner(recipe, w) for w in winners],
                cfg,
                ranks=recipe_ranks(recipe),
                index_dir=d,
            )
        return materialize(res, data_version=content_version(layout.dedup_dir() / "exact" / src.name))

    return _exact


def minhash_asset(recipe: Recipe, src: SourceConfig) -> dg.AssetsDefinition:
    cfg = recipe.dedup.near
    assert cfg is not None

    @dg.asset(
        key=["minhash", src.name],
        deps=[dg.AssetKey(["exact_dedup", src.name])],
        group_name=GROUP,
        kinds={"python", "numpy"},
        code_version=versioned(src.language, cfg),
        description=f"MinHash signatures ({cfg.bands} bands x {cfg.rows} rows) of '{src.name}', per shard",
        metadata=headline("docs", "shards"),
    )
    def _minhash(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        base = storage.layout(recipe.name).dedup_dir()
        out = base / "minhash" / src.name
        res = minhash_signatures(exact_shards(base / "exact" / src.name), out, src.language, cfg)
        return materialize(
            docs=res.docs,
            shards=res.shards,
            shingles=f"{res.shingle} {res.ngram}-grams",
            permutations=cfg.num_perm,
            path=out,
            data_version=content_version(out),
        )

    return _minhash


def near_duplicates_asset(recipe: Recipe) -> dg.AssetsDefinition:
    cfg = recipe.dedup.near
    assert cfg is not None
    order = _keep_order(recipe)

    @dg.asset(
        key="near_duplicates",
        deps=[dg.AssetKey(["minhash", s.name]) for s in recipe.sources],
        group_name=GROUP,
        kinds={"python", "parquet"},
        code_version=versioned(cfg, [s.name for s in order]),
        description=f"Near-duplicate clusters across all sources (MinHash LSH, threshold {cfg.threshold}, "
        f"candidates verified: {cfg.verify}); one document kept per cluster, by priority: "
        f"{[s.name for s in order]}",
        metadata=headline("docs", "clusters", "near_duplicates_removed"),
    )
    def _near(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        base = storage.layout(recipe.name).dedup_dir()
        stats = near_dup_clusters([(s.name, base / "minhash" / s.name) for s in order], base / "near", cfg)
        per_source = [
            {"source": s, "removed": v["removed"], "kept_by": json.dumps(v["kept_by"])}
            for s, v in stats.per_source.items()
        ]
        return materialize(
            docs=stats.docs,
            candidate_pairs=stats.candidate_pairs,
            verify=cfg.verify,
            verified_pairs=stats.verified_pairs,
            rejected_pairs=stats.rejected_pairs,
            prefiltered_pairs=stats.prefiltered_pairs,
            verify_docs_read=stats.verify_docs_read,
            verify_seconds=stats.verify_seconds,
            joined_pairs=stats.joined_pairs,
            clusters=stats.clusters,
            near_duplicates_removed=stats.removed,
            per_source=table(per_source, ["source", "removed", "kept_by"]),
            path=base / "near",
            data_version=content_version(base / "near"),
        )

    return _near


def deduped_asset(recipe: Recipe, src: SourceConfig) -> dg.AssetsDefinition:
    near = _near_enabled(recipe)
    cpt = recipe.languages[src.language].chars_per_token
    deps = [dg.AssetKey(["exact_dedup", src.name])] + ([dg.AssetKey("near_duplicates")] if near else [])

    @dg.asset(
        key=["deduped", src.name],
        deps=deps,
        group_name=GROUP,
        kinds={"python", "parquet"},
        code_version=versioned(src.name, src.language, near, recipe.decontamination, recipe.evaluations, cpt),
        description=f"'{src.name}' without exact duplicates"
        + (", near duplicates" if near else "")
        + (" and evaluation leaks" if recipe.decontamination is not None else ""),
        metadata=headline("docs_out", "near_duplicates_removed", "contaminated_removed"),
    )
    def _deduped(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        res = deduplicate_source(
            layout.dedup_dir(),
            layout.deduped(src.name),
            src.name,
            src.language,
            near,
            recipe_decontaminator(recipe, evaluation_texts),
        )
        if res.contaminated_removed:
            context.log.warning(f"{src.name}: {res.contaminated_removed} documents leak evaluation sets")
        per_set = [{"evaluation": name, **v} for name, v in res.contamination_sets.items()]
        columns = ["evaluation", "items", "items_found", "documents_removed"]
        columns += ["frequent_ngrams", "uninformative_items"]
        return materialize(
            res,
            contamination_sets=table(per_set, columns),
            est_tokens=round(res.chars_out / cpt),
            licenses=licenses_table(res.licenses),
            data_version=content_version(layout.deduped(src.name)),
        )

    return _deduped


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """Exact dedup, MinHash signatures (when near-dup removal is on) and the deduped output per source,
    and the near-duplicate clusters across sources."""
    near = _near_enabled(recipe)
    assets = []
    for src in recipe.sources:
        assets.append(exact_dedup_asset(recipe, src))
        if near:
            assets.append(minhash_asset(recipe, src))
        assets.append(deduped_asset(recipe, src))
    if near:
        assets.append(near_duplicates_asset(recipe))
    return assets
