"""Asset factories: one recipe in, the whole graph out.

Each asset reads its inputs from files, calls one core function, lets the core write its output
atomically, and returns a `MaterializeResult` whose metadata says what the stage did.
"""

import json
from pathlib import Path

import dagster as dg

from lm_platform.atomic import atomic_path, read_json, write_json
from lm_platform.data.blend import BLEND_FILE, MANIFEST_FILE, blend, measured_chars_per_token
from lm_platform.data.curate import build_reference_lm, curate, merge_results
from lm_platform.data.dataset_card import CARD_FILE, dataset_card
from lm_platform.data.decontam import Decontaminator
from lm_platform.data.dedup import (
    STATS_FILE,
    dedup_exact_indexed,
    dedup_key,
    exact_shards,
    filter_deduped,
    minhash_signatures,
    near_dup_clusters,
    removed_rows,
)
from lm_platform.data.dedup_index import Entry, ExactIndex
from lm_platform.data.documents import DocWriter, iter_docs
from lm_platform.data.pack import pack_dataset
from lm_platform.data.readers import ReadStats, read_source
from lm_platform.defs.resources import LMStorage
from lm_platform.recipe.schema import EvalConfig, Recipe, SourceConfig, StageConfig
from lm_platform.training.job import make_job, trainer_command

CODE_VERSION = "1"


def _md_table(rows: list[dict], columns: list[str]) -> dg.MetadataValue:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.0f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def _licenses_md(licenses: dict[str, int]) -> dg.MetadataValue:
    return _md_table([{"license": k, "docs": v} for k, v in sorted(licenses.items())], ["license", "docs"])


def corpus_asset(recipe: Recipe, src: SourceConfig) -> dg.AssetsDefinition:
    cpt = recipe.languages[src.language].chars_per_token

    @dg.asset(
        key=["corpus", src.name],
        group_name="corpus",
        kinds={"python", "parquet"},
        code_version=CODE_VERSION,
        description=f"Raw documents of source '{src.name}' ({src.language}, {src.license}) from {src.location}",
        metadata={"license": src.license, "origin": src.origin or src.location, "format": src.format},
    )
    def _corpus(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        path = storage.layout(recipe.name).corpus(src.name)
        stats = ReadStats()
        chars = nbytes = 0
        with DocWriter(path) as out:
            for doc in read_source(src, stats, chars_per_token=cpt):
                out.write(doc)
                chars += len(doc["text"])
                nbytes += len(doc["text"].encode("utf-8"))
        quarantine_path = path.with_suffix(".quarantine.json")
        write_json(
            quarantine_path,
            {
                "count": stats.quarantined_count,
                "by_reason": dict(stats.by_reason),
                "records": stats.quarantined,
            },
        )
        if stats.quarantined_count:
            context.log.warning(
                f"{src.name}: {stats.quarantined_count} bad records quarantined ({dict(stats.by_reason)}); "
                f"see {quarantine_path}"
            )
        return dg.MaterializeResult(
            metadata={
                "docs": out.count,
                "chars": chars,
                "bytes": nbytes,
                "est_tokens": round(chars / cpt),
                "license": src.license,
                "origin": src.origin or src.location,
                "language": src.language,
                "quarantined": stats.quarantined_count,
                "quarantined_by_reason": dg.MetadataValue.json(dict(stats.by_reason)),
                "quarantine": dg.MetadataValue.path(str(quarantine_path)),
                "path": dg.MetadataValue.path(str(path)),
            }
        )

    return _corpus


def reference_lm_asset(recipe: Recipe, lang: str) -> dg.AssetsDefinition:
    lang_cfg = recipe.languages[lang]
    cfg = lang_cfg.reference_lm
    assert cfg is not None
    src = recipe.source(cfg.source)

    @dg.asset(
        key=["reference_lm", lang],
        deps=[dg.AssetKey(["corpus", src.name])],
        group_name="curation",
        kinds={"kenlm", "sentencepiece"},
        code_version=CODE_VERSION,
        description=f"KenLM {cfg.order}-gram model of '{lang}' trained on '{src.name}' (after the language's "
        "other filters), the text pre-tokenised by a SentencePiece model trained with it; the "
        "perplexity filter of the language's curated sources scores with it",
    )
    def _reference_lm(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        out = layout.reference_lm(lang)
        res = build_reference_lm(
            layout.corpus(src.name), out, lang, lang_cfg, seed=recipe.seed, log=context.log.info
        )
        return dg.MaterializeResult(
            metadata={
                "source": src.name,
                "order": res.order,
                "prune": dg.MetadataValue.json(res.prune),
                "docs_train": res.docs_train,
                "docs_heldout": res.docs_heldout,
                "tokens": res.tokens,
                "sp_vocab_size": res.sp_vocab_size,
                "heldout_perplexity": res.heldout_perplexity,
                "model_bytes": res.model_bytes,
                "kenlm_version": res.kenlm_version,
                "path": dg.MetadataValue.path(str(out)),
            }
        )

    return _reference_lm


def curated_asset(recipe: Recipe, src: SourceConfig) -> dg.AssetsDefinition:
    lang_cfg = recipe.languages[src.language]
    key = dg.AssetKey(["curated", src.name])
    deps = [dg.AssetKey(["corpus", src.name])]
    if lang_cfg.uses_reference_lm:
        deps.append(dg.AssetKey(["reference_lm", src.language]))
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
        code_version=CODE_VERSION,
        partitions_def=dg.StaticPartitionsDefinition(shard_keys) if sharded else None,
        backfill_policy=dg.BackfillPolicy.single_run() if sharded else None,
        description=f"'{src.name}' normalised ({lang_cfg.unicode_form}) and filtered "
        f"({', '.join(f.name for f in lang_cfg.filters) or 'no filters'})",
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
        layout = storage.layout(recipe.name)
        reference = layout.reference_lm(src.language) if lang_cfg.uses_reference_lm else None
        if sharded:
            keys = context.partition_keys
            res = merge_results(
                [
                    curate(
                        layout.corpus(src.name),
                        layout.curated_shard(src.name, k),
                        layout.excluded_shard(src.name, k),
                        src.language,
                        lang_cfg,
                        shard=(shard_keys.index(k), src.shards),
                        reference_lm=reference,
                    )
                    for k in keys
                ]
            )
            out_path = layout.curated_shard(src.name, keys[0]).parent
            excluded_path = str(layout.excluded_shard(src.name, keys[0])) if len(keys) == 1 else str(out_path)
        else:
            res = curate(
                layout.corpus(src.name),
                layout.curated(src.name),
                layout.excluded(src.name),
                src.language,
                lang_cfg,
                reference_lm=reference,
            )
            out_path, excluded_path = layout.curated(src.name), str(layout.excluded(src.name))
        funnel = [
            {
                "step": s.step,
                "docs in": s.docs_in,
                "docs out": s.docs_out,
                "chars in": s.chars_in,
                "chars out": s.chars_out,
            }
            for s in res.funnel
        ]
        context.log.info(f"{src.name}: kept {res.docs_out}/{res.docs_in}; excluded {res.excluded_by_filter}")
        in_band = low <= res.keep_rate <= high
        check = dg.AssetCheckResult(
            check_name="keep_rate_in_band",
            passed=in_band,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"keep_rate": res.keep_rate, "expected_low": low, "expected_high": high},
            description=None
            if in_band
            else f"keep rate {res.keep_rate:.3f} outside the expected band [{low}, {high}]",
        )
        return dg.MaterializeResult(
            check_results=[check],
            metadata={
                "docs_in": res.docs_in,
                "docs_out": res.docs_out,
                "keep_rate": res.keep_rate,
                "pii_redacted": dg.MetadataValue.json(res.pii),
                "est_tokens": round(res.chars_out / lang_cfg.chars_per_token),
                "funnel": _md_table(funnel, ["step", "docs in", "docs out", "chars in", "chars out"]),
                "excluded_by_filter": dg.MetadataValue.json(res.excluded_by_filter),
                "excluded_samples": dg.MetadataValue.path(excluded_path),
                "licenses": _licenses_md(res.licenses),
                "path": dg.MetadataValue.path(str(out_path)),
                **(
                    {"perplexity_band": dg.MetadataValue.json(res.perplexity_bands)}
                    if res.perplexity_bands
                    else {}
                ),
            },
        )

    return _curated


def _dedup_dir(layout) -> Path:
    """Where the dedup stage keeps its index and intermediate files: `<root>/<recipe>/dedup/`."""
    return layout.base / "dedup"


def _source_rank(recipe: Recipe, name: str) -> int:
    return [s.name for s in recipe.sources].index(name)


def exact_dedup_asset(recipe: Recipe, src: SourceConfig) -> dg.AssetsDefinition:
    winners = recipe.higher_priority(src.name)
    cfg = recipe.dedup.exact

    @dg.asset(
        key=["exact_dedup", src.name],
        deps=[dg.AssetKey(["curated", src.name])] + [dg.AssetKey(["exact_dedup", s.name]) for s in winners],
        group_name="dedup",
        kinds={"python", "sqlite", "parquet"},
        code_version=CODE_VERSION,
        description=f"'{src.name}' without exact duplicates: checked against the persistent {cfg.index} index "
        f"of everything kept before, where {[s.name for s in winners] or 'no other source'} win",
    )
    def _exact(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        base = _dedup_dir(layout)
        directory = base / "exact_index" if cfg.index == "sqlite" else None
        with ExactIndex(directory, cfg.partitions, cfg.workers) as index:
            if directory is None:  # nothing persists: offer the winners' kept documents first
                for w in winners:
                    for k, shard in enumerate(exact_shards(base / "exact" / w.name)):
                        entries = [
                            Entry(dedup_key(d["text"]), row, d["id"])
                            for row, d in enumerate(iter_docs(shard, columns=["id", "text"]))
                        ]
                        index.claim(w.name, w.priority, _source_rank(recipe, w.name), k, entries)
            res = dedup_exact_indexed(
                layout.curated_shards(src.name),
                base / "exact" / src.name,
                src.name,
                index,
                priority=src.priority,
                source_rank=_source_rank(recipe, src.name),
                batch_docs=cfg.batch_docs,
            )
            index_stats = index.stats()
        return dg.MaterializeResult(
            metadata={
                "docs_in": res.docs_in,
                "docs_out": res.docs_out,
                "shards": res.shards,
                "exact_duplicates_removed": res.exact_removed,
                "cross_source_removed": res.cross_source_removed,
                "cross_source_hits": dg.MetadataValue.json(res.cross_source_hits),
                "index": cfg.index,
                "index_keys": index_stats["keys"],
                "index_keys_per_source": dg.MetadataValue.json(index_stats["per_source"]),
                "index_bytes": index_stats["bytes"],
                "path": dg.MetadataValue.path(str(base / "exact" / src.name)),
            }
        )

    return _exact


def minhash_asset(recipe: Recipe, src: SourceConfig) -> dg.AssetsDefinition:
    cfg = recipe.dedup.near
    assert cfg is not None

    @dg.asset(
        key=["minhash", src.name],
        deps=[dg.AssetKey(["exact_dedup", src.name])],
        group_name="dedup",
        kinds={"python", "numpy"},
        code_version=CODE_VERSION,
        description=f"MinHash signatures ({cfg.bands} bands x {cfg.rows} rows) of '{src.name}', per shard",
    )
    def _minhash(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        base = _dedup_dir(storage.layout(recipe.name))
        summary = minhash_signatures(
            exact_shards(base / "exact" / src.name), base / "minhash" / src.name, src.language, cfg
        )
        return dg.MaterializeResult(
            metadata={
                "docs": summary["docs"],
                "shards": summary["shards"],
                "shingles": f"{summary['shingle']} {summary['ngram']}-grams",
                "permutations": cfg.num_perm,
                "path": dg.MetadataValue.path(str(base / "minhash" / src.name)),
            }
        )

    return _minhash


def near_duplicates_asset(recipe: Recipe) -> dg.AssetsDefinition:
    cfg = recipe.dedup.near
    assert cfg is not None
    order = _keep_order(recipe)

    @dg.asset(
        key="near_duplicates",
        deps=[dg.AssetKey(["minhash", s.name]) for s in recipe.sources],
        group_name="dedup",
        kinds={"python", "parquet"},
        code_version=CODE_VERSION,
        description=f"Near-duplicate clusters across all sources (MinHash LSH, threshold {cfg.threshold}); "
        f"one document kept per cluster, by priority: {[s.name for s in order]}",
    )
    def _near(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        base = _dedup_dir(storage.layout(recipe.name))
        stats = near_dup_clusters([(s.name, base / "minhash" / s.name) for s in order], base / "near", cfg)
        per_source = [
            {"source": s, "removed": v["removed"], "kept_by": json.dumps(v["kept_by"])}
            for s, v in stats["per_source"].items()
        ]
        return dg.MaterializeResult(
            metadata={
                "docs": stats["docs"],
                "candidate_pairs": stats["candidate_pairs"],
                "joined_pairs": stats["joined_pairs"],
                "clusters": stats["clusters"],
                "near_duplicates_removed": stats["removed"],
                "per_source": _md_table(per_source, ["source", "removed", "kept_by"]),
                "path": dg.MetadataValue.path(str(base / "near")),
            }
        )

    return _near


def _keep_order(recipe: Recipe) -> list[SourceConfig]:
    """Sources in the order their copies win: higher priority first, then recipe order."""
    return sorted(recipe.sources, key=lambda s: (-s.priority, _source_rank(recipe, s.name)))


def _decontaminator(recipe: Recipe) -> Decontaminator | None:
    from lm_platform.evaluation.perplexity import read_eval_docs

    dc = recipe.decontamination
    if dc is None or not dc.enabled:
        return None
    d = Decontaminator(dc.ngram, dc.char_ngram, dc.char_languages)
    for ev in recipe.evaluations:
        if dc.evaluations is None or ev.name in dc.evaluations:
            d.add_set(ev.name, read_eval_docs(ev.location))
    return d


def deduped_asset(recipe: Recipe, src: SourceConfig) -> dg.AssetsDefinition:
    near = recipe.dedup.near is not None and recipe.dedup.near.enabled
    cpt = recipe.languages[src.language].chars_per_token
    deps = [dg.AssetKey(["exact_dedup", src.name])] + ([dg.AssetKey("near_duplicates")] if near else [])

    @dg.asset(
        key=["deduped", src.name],
        deps=deps,
        group_name="curation",
        kinds={"python", "parquet"},
        code_version=CODE_VERSION,
        description=f"'{src.name}' without exact duplicates"
        + (", near duplicates" if near else "")
        + (" and evaluation leaks" if recipe.decontamination is not None else ""),
    )
    def _deduped(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        base = _dedup_dir(layout)
        exact = read_json(base / "exact" / src.name / STATS_FILE)
        res = filter_deduped(
            exact_shards(base / "exact" / src.name),
            layout.deduped(src.name),
            src.name,
            src.language,
            near_removed=removed_rows(base / "near", src.name) if near else None,
            decontaminator=_decontaminator(recipe),
            report_path=base / "decontamination" / f"{src.name}.parquet",
        )
        figures = {
            "docs_in": exact["docs_in"],
            "exact_removed": exact["exact_removed"],
            "cross_source_removed": exact["cross_source_removed"],
            "near_removed": res.near_removed,
            "contaminated_removed": res.contaminated_removed,
            "docs_out": res.docs_out,
        }
        write_json(base / "figures" / f"{src.name}.json", figures)
        if res.contaminated_removed:
            context.log.warning(f"{src.name}: {res.contaminated_removed} documents leak evaluation sets")
        return dg.MaterializeResult(
            metadata={
                "docs_in": exact["docs_in"],
                "docs_out": res.docs_out,
                "exact_duplicates_removed": exact["exact_removed"],
                "cross_source_removed": exact["cross_source_removed"],
                "cross_source_hits": dg.MetadataValue.json(exact["cross_source_hits"]),
                "near_duplicates_removed": res.near_removed if near else dg.MetadataValue.text("not run"),
                "near_cross_source_hits": dg.MetadataValue.json(res.near_cross_source_hits),
                "contaminated_removed": res.contaminated_removed,
                "contamination": dg.MetadataValue.json(res.contamination),
                "contamination_report": dg.MetadataValue.path(
                    str(base / "decontamination" / f"{src.name}.parquet")
                ),
                "est_tokens": round(res.chars_out / cpt),
                "licenses": _licenses_md(res.licenses),
                "path": dg.MetadataValue.path(str(layout.deduped(src.name))),
            }
        )

    return _deduped


def blend_asset(recipe: Recipe, stage: StageConfig) -> dg.AssetsDefinition:
    key = dg.AssetKey(["blend", stage.name])
    allowed = set(recipe.license_allowlist)

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(["deduped", s]) for s in stage.mixture_sources()],
        group_name="blending",
        kinds={"python", "parquet"},
        code_version=CODE_VERSION,
        description=f"Documents for stage '{stage.name}': {stage.target_tokens:,} tokens by "
        + ", ".join(f"{s} {r:.0%}" for s, r in stage.mixture.items()),
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
        cpt = {
            s: recipe.languages[recipe.source(s).language].chars_per_token for s in stage.mixture_sources()
        }
        measured = {}
        if stage.token_estimate == "measured":
            measured = measured_chars_per_token(
                layout.blend(stage.name) / MANIFEST_FILE, layout.dataset(stage.name) / "index.json"
            )
            cpt.update({s: v for s, v in measured.items() if s in cpt})
        inputs = {s: (layout.deduped(s), cpt[s]) for s in stage.mixture_sources()}
        how = (
            f"chars / chars_per_token measured on dataset/{stage.name} for {sorted(measured)}, the recipe's "
            "per-language value for the rest"
            if measured
            else "chars / chars_per_token of the source's language (recipe)"
        )
        manifest = blend(
            inputs,
            stage.mixture,
            stage.target_tokens,
            layout.blend(stage.name),
            seed=f"{recipe.seed}:{stage.name}",
            groups=stage.groups,
            epoch_caps={s: stage.epoch_cap(s) for s in stage.mixture_sources()},
            on_shortfall=stage.on_shortfall,
            stage=stage.name,
            token_estimate=how,
        )
        figures_dir = _dedup_dir(layout) / "figures"
        figures = {
            s: read_json(figures_dir / f"{s}.json")
            for s in stage.mixture_sources()
            if (figures_dir / f"{s}.json").exists()
        }
        card_path = layout.blend(stage.name) / CARD_FILE
        with atomic_path(card_path) as tmp:
            tmp.write_text(dataset_card(recipe, stage.name, manifest, figures), encoding="utf-8")
        if manifest["shortfall"]["tokens"]:
            context.log.warning(
                f"blend/{stage.name}: {manifest['shortfall']['tokens']:,} tokens short of the target"
            )
        bad = [row for row in manifest["licenses"] if row["license"] not in allowed]
        check = dg.AssetCheckResult(
            check_name="licenses_allowed",
            passed=not bad,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "disallowed": dg.MetadataValue.json(bad),
                "allowlist": dg.MetadataValue.json(sorted(allowed)),
            },
            description=None if not bad else f"licenses not on the allowlist: {[b['license'] for b in bad]}",
        )
        return dg.MaterializeResult(
            metadata={
                "docs": manifest["docs"],
                "target_tokens": stage.target_tokens,
                "est_tokens": manifest["taken_tokens"],
                "sources": _md_table(
                    manifest["sources"],
                    [
                        "source",
                        "ratio",
                        "target_tokens",
                        "available_tokens",
                        "taken_tokens",
                        "share",
                        "epochs",
                    ],
                ),
                "licenses": _md_table(manifest["licenses"], ["license", "docs", "tokens", "share"]),
                "shortfall_tokens": manifest["shortfall"]["tokens"],
                "dataset_card": dg.MetadataValue.md(card_path.read_text(encoding="utf-8")),
                "path": dg.MetadataValue.path(str(layout.blend(stage.name) / BLEND_FILE)),
            },
            check_results=[check],
        )

    return _blend


def tokenizer_asset(recipe: Recipe) -> dg.AssetsDefinition:
    train_stage = recipe.tokenizer_stage.name
    cfg = recipe.tokenizer
    key = dg.AssetKey("tokenizer")
    target = [cfg.language] if cfg.language else None
    checks = []
    if cfg.base:
        checks.append(
            dg.AssetCheckSpec(
                "fertility_not_worse_than_base",
                asset=key,
                blocking=True,
                description=f"On held-out {cfg.language or 'text'}, the new tokenizer needs no more tokens "
                f"per word (per character where words are not spaced) than {cfg.base}",
            )
        )
    if cfg.mode == "extend":
        what = f"{cfg.base} extended (EEVE) with {cfg.language} tokens up to {cfg.vocab_size:,}"
    else:
        what = f"SentencePiece {cfg.model_type} tokenizer ({cfg.vocab_size:,} pieces)"

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(["blend", train_stage])],
        group_name="tokenizer",
        kinds={"sentencepiece", "huggingface"} if cfg.mode == "train" else {"huggingface"},
        code_version=CODE_VERSION,
        description=f"{what} trained on blend/{train_stage}, exported as an HF tokenizer",
        check_specs=checks,
    )
    def _tokenizer(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        from transformers import AutoTokenizer

        from lm_platform.evaluation.perplexity import read_eval_docs
        from lm_platform.tokenization.fertility import compare_fertility, reduction_key, worse_than_base

        layout = storage.layout(recipe.name)
        blend_file = layout.blend(train_stage) / BLEND_FILE
        meta: dict = {}
        if cfg.mode == "extend":
            from lm_platform.tokenization.eeve import EEVE_FILE, extend_tokenizer, readable

            def texts():
                return (
                    d["text"]
                    for d in iter_docs(blend_file, columns=["lang", "text"])
                    if d["lang"] == cfg.language
                )

            res = extend_tokenizer(
                cfg.base,
                texts,
                layout.tokenizer(),
                cfg.language,
                cfg.vocab_size,
                multiple=cfg.extend_multiple,
                min_frequency=cfg.extend_min_frequency,
            )
            meta.update(
                vocab_size=res.vocab_size,
                base_vocab_size=res.base_vocab_size,
                new_tokens=len(res.new_tokens),
                added_tokens=dg.MetadataValue.json([readable(t["token"]) for t in res.new_tokens[:50]]),
                selection=dg.MetadataValue.json(res.summary()),
                eeve=dg.MetadataValue.path(str(layout.tokenizer() / EEVE_FILE)),
            )
        else:
            from lm_platform.tokenization.sentencepiece_trainer import train_sentencepiece

            summary = train_sentencepiece(
                (d["text"] for d in iter_docs(blend_file, columns=["text"])), layout.tokenizer(), cfg
            )
            meta.update(
                vocab_size=summary["vocab_size"],
                model_type=summary["model_type"],
                training_sentences=summary["sentences"],
                added_tokens=dg.MetadataValue.json(summary["added_tokens"]),
                special_tokens=dg.MetadataValue.json(summary["special_tokens"]),
            )
        tok = AutoTokenizer.from_pretrained(str(layout.tokenizer()))
        base = AutoTokenizer.from_pretrained(cfg.base) if cfg.base else None
        if recipe.evaluations:
            held_out = list(read_eval_docs(recipe.evaluations[0].location))
            measured_on = f"held-out text of evaluation '{recipe.evaluations[0].name}'"
        else:
            held_out = [(d["lang"], d["text"]) for d in iter_docs(blend_file, columns=["lang", "text"])]
            measured_on = f"blend/{train_stage} (training text)"
        rows = compare_fertility(tok, base, held_out)
        columns = ["lang", "docs", "chars", "new_tokens", "new_tokens_per_word", "new_chars_per_token"]
        if base is not None:
            columns += ["base_tokens", "base_tokens_per_word", "base_chars_per_token", "change"]
        check_results = []
        if base is not None:
            worse = worse_than_base(rows, target)
            missing = [lang for lang in target or [] if lang not in {r["lang"] for r in rows}]
            check_results.append(
                dg.AssetCheckResult(
                    check_name="fertility_not_worse_than_base",
                    passed=not worse and not missing,
                    metadata={"change": dg.MetadataValue.json({r["lang"]: r["change"] for r in rows})},
                    description=(f"worse than the base on {worse}" if worse else "")
                    + (f"no held-out text in {missing}" if missing else "")
                    or None,
                )
            )
        # The gain over the base as numbers (fraction of tokens saved per word, per character where words
        # are not spaced), and the rows as JSON for the summary that `make demo` prints.
        meta.update({reduction_key(r): 0.0 - r["change"] for r in rows if r["change"] is not None})
        return dg.MaterializeResult(
            metadata={
                **meta,
                "fertility": _md_table(rows, columns),
                "fertility_rows": dg.MetadataValue.json(rows),
                "fertility_measured_on": measured_on,
                "path": dg.MetadataValue.path(str(layout.tokenizer())),
            },
            check_results=check_results,
        )

    return _tokenizer


def dataset_asset(recipe: Recipe, stage: StageConfig) -> dg.AssetsDefinition:
    @dg.asset(
        key=["dataset", stage.name],
        deps=[dg.AssetKey(["blend", stage.name]), dg.AssetKey("tokenizer")],
        group_name="training",
        kinds={"numpy"},
        code_version=CODE_VERSION,
        description=f"blend/{stage.name} tokenized and packed into sequences of {stage.seq_len} (+1) tokens",
    )
    def _dataset(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        index = pack_dataset(
            layout.blend(stage.name) / BLEND_FILE,
            layout.tokenizer(),
            layout.dataset(stage.name),
            seq_len=stage.seq_len,
            val_fraction=stage.val_fraction,
            shuffle_buffer=stage.pack_shuffle_buffer,
            seed=stage.seed,
            loss_mask=stage.pack_loss_mask,
            workers=stage.pack_workers,
        )
        total = index["tokens"] or 1
        manifest = layout.blend(stage.name) / MANIFEST_FILE
        estimated = (
            {r["source"]: r["taken_tokens"] for r in read_json(manifest)["sources"]}
            if manifest.exists()
            else {}
        )
        per_source = [
            {
                "source": s,
                "docs": v["docs"],
                "tokens": v["tokens"],
                "blend_estimate": round(estimated.get(s, 0)),
                "estimate_error": estimated[s] / v["tokens"] - 1 if estimated.get(s) and v["tokens"] else "",
                "share": v["tokens"] / total,
                "ratio": stage.mixture.get(s),  # None for a member of a group
            }
            for s, v in sorted(index["sources"].items())
        ]
        splits = index["splits"]
        return dg.MaterializeResult(
            metadata={
                "tokens": index["tokens"],
                "train_tokens": splits["train"]["tokens"],
                "val_tokens": splits["val"]["tokens"],
                "train_sequences": splits["train"]["rows"],
                "val_sequences": splits["val"]["rows"],
                "train_docs": splits["train"]["docs"],
                "val_docs": splits["val"]["docs"],
                "seq_len": index["seq_len"],
                "dtype": index["dtype"],
                "tokens_per_source": _md_table(
                    per_source,
                    ["source", "docs", "tokens", "blend_estimate", "estimate_error", "share", "ratio"],
                ),
                "exact_tokens_per_source": dg.MetadataValue.json(
                    {s: v["tokens"] for s, v in index["sources"].items()}
                ),
                "padding_tokens": splits["train"]["padding"] + splits["val"]["padding"],
                "loss_mask": index["loss_mask"],
                "path": dg.MetadataValue.path(str(layout.dataset(stage.name))),
            }
        )

    return _dataset


def checkpoint_asset(recipe: Recipe, stage: StageConfig) -> dg.AssetsDefinition:
    deps = [dg.AssetKey(["dataset", stage.name]), dg.AssetKey("tokenizer")]
    if stage.init_from != "model":
        deps.append(dg.AssetKey(["checkpoint", stage.init_from]))

    @dg.asset(
        key=["checkpoint", stage.name],
        deps=deps,
        group_name="training",
        kinds={"pytorch", "huggingface"},
        pool="gpu",
        code_version=CODE_VERSION,
        description=f"Stage '{stage.name}' trained by the trainer process (init: {stage.init_from}, "
        f"trainable: {stage.trainable}, schedule: {stage.schedule})",
    )
    def _checkpoint(
        context: dg.AssetExecutionContext, storage: LMStorage, trainer: dg.PipesSubprocessClient
    ) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        job = make_job(recipe, stage.name, layout)
        job_file = layout.checkpoint(stage.name).with_suffix(".job.json")
        write_json(job_file, job)
        return trainer.run(
            command=trainer_command(job_file, stage.nproc_per_node), context=context
        ).get_materialize_result()

    return _checkpoint


def eval_asset(recipe: Recipe, ev: EvalConfig) -> dg.AssetsDefinition:
    stage = recipe.eval_stage(ev)
    key = dg.AssetKey(["eval", ev.name])

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(["checkpoint", stage.name])],
        group_name="evaluation",
        kinds={"pytorch"},
        code_version=CODE_VERSION,
        description=f"{ev.kind} of checkpoint/{stage.name} on {ev.location}",
    )
    def _eval(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        from lm_platform.evaluation.perplexity import perplexity, read_eval_docs

        layout = storage.layout(recipe.name)
        result = perplexity(layout.checkpoint(stage.name), read_eval_docs(ev.location, ev.max_docs))
        result["checkpoint"] = str(layout.checkpoint(stage.name))
        write_json(layout.eval(ev.name), result)
        previous = context.instance.get_latest_materialization_event(key)
        prev_score = None
        if previous is not None and previous.asset_materialization is not None:
            entry = previous.asset_materialization.metadata.get("score")
            prev_score = entry.value if entry is not None else None
        per_lang = [{"lang": k, **v} for k, v in result["per_language"].items()]
        return dg.MaterializeResult(
            metadata={
                "score": result["score"],
                "metric": "perplexity (lower is better)",
                "n": result["n"],
                "tokens": result["tokens"],
                "stderr": result["stderr"],
                "previous_score": prev_score if prev_score is not None else dg.MetadataValue.null(),
                "per_language": _md_table(per_lang, ["lang", "score", "stderr", "n", "tokens"]),
                "checkpoint": dg.MetadataValue.path(result["checkpoint"]),
                "result": dg.MetadataValue.json(json.loads(json.dumps(result))),
            }
        )

    return _eval


def build_assets(recipe: Recipe) -> list[dg.AssetsDefinition]:
    assets: list[dg.AssetsDefinition] = [
        reference_lm_asset(recipe, lang) for lang, cfg in recipe.languages.items() if cfg.reference_lm
    ]
    near = recipe.dedup.near is not None and recipe.dedup.near.enabled
    for src in recipe.sources:
        assets += [corpus_asset(recipe, src), curated_asset(recipe, src), exact_dedup_asset(recipe, src)]
        if near:
            assets.append(minhash_asset(recipe, src))
        assets.append(deduped_asset(recipe, src))
    if near:
        assets.append(near_duplicates_asset(recipe))
    assets += [blend_asset(recipe, stage) for stage in recipe.stages]
    assets.append(tokenizer_asset(recipe))
    for stage in recipe.stages:
        assets += [dataset_asset(recipe, stage), checkpoint_asset(recipe, stage)]
    assets += [eval_asset(recipe, ev) for ev in recipe.evaluations]
    return assets


__all__ = ["build_assets"]
