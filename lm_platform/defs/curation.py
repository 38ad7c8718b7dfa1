"""Curation: the reference KenLM models of the languages, and each source normalised, filtered and
redacted (group `curation`), with the keep-rate check."""

import dagster as dg

from lm_platform.data.curation.curate import CurationResult, build_reference_lm, curate, merge_results
from lm_platform.data.curation.quality_model import QualityStep
from lm_platform.defs.metadata import headline, licenses_table, materialize, table, versioned
from lm_platform.defs.resources import LMStorage
from lm_platform.paths import Layout
from lm_platform.recipe.schema import Recipe, SourceConfig
from lm_platform.versions import content_version

FUNNEL_COLUMNS = ["step", "docs in", "docs out", "chars in", "chars out", "seconds"]


def _without_quality(lang_cfg) -> dict:
    """A language's settings for a code version, without its quality model's (`quality_model/<lang>`'s own
    slice): editing or removing the model stales the model, and through it only the sources it scores."""
    return lang_cfg.model_dump(mode="json", exclude={"quality"})


def reference_lm_asset(recipe: Recipe, lang: str) -> dg.AssetsDefinition:
    lang_cfg = recipe.languages[lang]
    cfg = lang_cfg.reference_lm
    assert cfg is not None
    src = recipe.source(cfg.source)
    words_from = [lang_cfg.stop_words_from] if lang_cfg.stop_words_from not in (None, src.name) else []

    @dg.asset(
        key=["reference_lm", lang],
        deps=[dg.AssetKey(["corpus", s]) for s in [src.name, *words_from]],
        group_name="curation",
        kinds={"kenlm", "sentencepiece"},
        code_version=versioned(lang, _without_quality(lang_cfg), recipe.seed),
        description=f"KenLM {cfg.order}-gram model of '{lang}' trained on '{src.name}' (after the language's "
        "other filters), the text pre-tokenised by a SentencePiece model trained with it; the "
        "perplexity filter of the language's curated sources scores with it",
        metadata=headline("source", "docs_train", "tokens", "heldout_perplexity"),
    )
    def _reference_lm(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        out = layout.reference_lm(lang)
        corpus = layout.corpus_shard(src.name, "0").parent if src.sharded_read else layout.corpus(src.name)
        res = build_reference_lm(
            corpus,
            out,
            lang,
            lang_cfg,
            seed=recipe.seed,
            log=context.log.info,
            stop_words_corpus=_corpus(recipe, layout, lang_cfg.stop_words_from),
        )
        return materialize(res, source=src.name, path=out, data_version=content_version(out))

    return _reference_lm


def _funnel(res: CurationResult) -> dg.MetadataValue:
    rows = [
        dict(
            zip(
                FUNNEL_COLUMNS,
                (s.step, s.docs_in, s.docs_out, s.chars_in, s.chars_out, s.seconds),
                strict=True,
            )
        )
        for s in res.funnel
    ]
    return table(rows, FUNNEL_COLUMNS)


def curated_asset(recipe: Recipe, src: SourceConfig) -> dg.AssetsDefinition:
    lang_cfg = recipe.languages[src.language]
    key = dg.AssetKey(["curated", src.name])
    deps = [dg.AssetKey(["corpus", src.name])]
    if lang_cfg.stop_words_from not in (None, src.name):
        deps.append(dg.AssetKey(["corpus", lang_cfg.stop_words_from]))
    if lang_cfg.uses_reference_lm:
        deps.append(dg.AssetKey(["reference_lm", src.language]))
    if src.quality is not None:
        deps.append(dg.AssetKey(["quality_model", src.language]))
    low, high = lang_cfg.expected_keep_rate
    # A sharded source is a partitioned asset, one partition per shard; a backfill of a range runs as
    # one run (or fans out, one run per partition, with the daemon / k8s executor).
    sharded = src.shards > 1
    shard_keys = [f"{i:04d}" for i in range(src.shards)]

    @dg.asset(
        key=key,
        deps=deps,
        group_name="curation",
        kinds={"python", "parquet"},
        # Not dedup's priority; not the quality model's settings (a source scored by it depends on
        # quality_model/<lang>, whose data version carries them).
        code_version=versioned(src.model_dump(mode="json", exclude={"priority"}), _without_quality(lang_cfg)),
        partitions_def=dg.StaticPartitionsDefinition(shard_keys) if sharded else None,
        backfill_policy=dg.BackfillPolicy.single_run() if sharded else None,
        description=f"'{src.name}' normalised ({lang_cfg.unicode_form}) and filtered "
        f"({', '.join(f.name for f in lang_cfg.filters) or 'no filters'})",
        metadata=headline("docs_in", "docs_out", "keep_rate"),
        check_specs=[
            dg.AssetCheckSpec(
                "keep_rate_in_band",
                asset=key,
                blocking=False,
                description=f"Share of documents kept within the recipe's expected band [{low}, {high}]",
            )
        ],
    )
    def _curated(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        res, out_path, excluded = _curate(recipe, src, storage.layout(recipe.name), context)
        context.log.info(f"{src.name}: kept {res.docs_out}/{res.docs_in}; excluded {res.excluded_by_filter}")
        return materialize(
            checks=[_keep_rate_check(res.keep_rate, low, high)],
            docs_in=res.docs_in,
            docs_out=res.docs_out,
            keep_rate=res.keep_rate,
            pii_redacted=res.pii,
            est_tokens=round(res.chars_out / lang_cfg.chars_per_token),
            funnel=_funnel(res),
            excluded_by_filter=res.excluded_by_filter,
            excluded_samples=excluded,
            licenses=licenses_table(res.licenses),
            path=out_path,
            data_version=content_version(out_path),
            **(
                {"perplexity_threshold": dg.MetadataValue.json(res.perplexity_gates)}
                if res.perplexity_gates
                else {}
            ),
            **({"quality": dg.MetadataValue.json(res.quality)} if res.quality else {}),
        )

    return _curated


def _corpus(recipe: Recipe, layout: Layout, name: str | None):
    """Where source `name`'s corpus is (a directory of shards for a sharded read); None for no name."""
    if name is None:
        return None
    src = recipe.source(name)
    return layout.corpus_shard(src.name, "0").parent if src.sharded_read else layout.corpus(src.name)


def _curate(recipe: Recipe, src: SourceConfig, layout: Layout, context: dg.AssetExecutionContext):
    """Curate the source, or the shards of this run's partitions; returns the result, where the kept
    documents are and where the excluded samples are."""
    lang_cfg = recipe.languages[src.language]
    reference = layout.reference_lm(src.language) if lang_cfg.uses_reference_lm else None

    def quality():  # a fresh step per curated file: its scores and kept share are the file's
        if src.quality is None:
            return None
        return QualityStep.load(layout.quality_model(src.language), src.quality)

    words = _corpus(recipe, layout, lang_cfg.stop_words_from)
    if src.shards == 1:
        out_path, excluded = layout.curated(src.name), layout.excluded(src.name)
        res = curate(
            layout.corpus(src.name),
            out_path,
            excluded,
            src.language,
            lang_cfg,
            reference_lm=reference,
            quality=quality(),
            stop_words_corpus=words,
        )
        return res, out_path, excluded
    keys = context.partition_keys
    shard_keys = [f"{i:04d}" for i in range(src.shards)]
    results = [
        curate(
            layout.corpus_shard(src.name, k) if src.sharded_read else layout.corpus(src.name),
            layout.curated_shard(src.name, k),
            layout.excluded_shard(src.name, k),
            src.language,
            lang_cfg,
            shard=None if src.sharded_read else (shard_keys.index(k), src.shards),
            reference_lm=reference,
            quality=quality(),
            stop_words_corpus=words,
        )
        for k in keys
    ]
    out_path = layout.curated_shard(src.name, keys[0]).parent
    excluded = layout.excluded_shard(src.name, keys[0]) if len(keys) == 1 else out_path
    return merge_results(results), out_path, excluded


def _keep_rate_check(rate: float, low: float, high: float) -> dg.AssetCheckResult:
    in_band = low <= rate <= high
    return dg.AssetCheckResult(
        check_name="keep_rate_in_band",
        passed=in_band,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"keep_rate": rate, "expected_low": low, "expected_high": high},
        description=None if in_band else f"keep rate {rate:.3f} outside the expected band [{low}, {high}]",
    )


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """The reference LMs of the languages that use one, and the curated asset of each source."""
    assets = [reference_lm_asset(recipe, lang) for lang, cfg in recipe.languages.items() if cfg.reference_lm]
    return assets + [curated_asset(recipe, src) for src in recipe.sources]
