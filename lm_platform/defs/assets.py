"""Asset factories: one recipe in, the whole graph out.

Each asset reads its inputs from files, calls one core function, lets the core write its output
atomically, and returns a `MaterializeResult` whose metadata says what the stage did.
"""

import json

import dagster as dg

from lm_platform.atomic import write_json
from lm_platform.data.blend import BLEND_FILE, blend
from lm_platform.data.curate import curate
from lm_platform.data.dedup import dedup_exact
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
            for doc in read_source(src, stats):
                out.write(doc)
                chars += len(doc["text"])
                nbytes += len(doc["text"].encode("utf-8"))
        if stats.quarantined_count:
            context.log.warning(f"{src.name}: {stats.quarantined_count} bad records quarantined")
            write_json(path.with_suffix(".quarantine.json"), stats.quarantined)
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
                "path": dg.MetadataValue.path(str(path)),
            }
        )

    return _corpus


def curated_asset(recipe: Recipe, src: SourceConfig) -> dg.AssetsDefinition:
    lang_cfg = recipe.languages[src.language]

    @dg.asset(
        key=["curated", src.name],
        deps=[dg.AssetKey(["corpus", src.name])],
        group_name="curation",
        kinds={"python", "parquet"},
        code_version=CODE_VERSION,
        description=f"'{src.name}' normalised ({lang_cfg.unicode_form}) and filtered "
        f"({', '.join(f.name for f in lang_cfg.filters) or 'no filters'})",
    )
    def _curated(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        res = curate(
            layout.corpus(src.name),
            layout.curated(src.name),
            layout.excluded(src.name),
            src.language,
            lang_cfg,
        )
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
        return dg.MaterializeResult(
            metadata={
                "docs_in": res.docs_in,
                "docs_out": res.docs_out,
                "keep_rate": res.docs_out / res.docs_in if res.docs_in else 0.0,
                "est_tokens": round(res.chars_out / lang_cfg.chars_per_token),
                "funnel": _md_table(funnel, ["step", "docs in", "docs out", "chars in", "chars out"]),
                "excluded_by_filter": dg.MetadataValue.json(res.excluded_by_filter),
                "excluded_samples": dg.MetadataValue.path(str(layout.excluded(src.name))),
                "licenses": _licenses_md(res.licenses),
                "path": dg.MetadataValue.path(str(layout.curated(src.name))),
            }
        )

    return _curated


def deduped_asset(recipe: Recipe, src: SourceConfig) -> dg.AssetsDefinition:
    winners = recipe.higher_priority(src.name)
    cpt = recipe.languages[src.language].chars_per_token

    @dg.asset(
        key=["deduped", src.name],
        deps=[dg.AssetKey(["curated", s.name]) for s in [src, *winners]],
        group_name="curation",
        kinds={"python", "parquet"},
        code_version=CODE_VERSION,
        description=f"'{src.name}' without exact duplicates, within itself and against "
        f"{[s.name for s in winners] or 'no other source'}",
    )
    def _deduped(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        res = dedup_exact(
            layout.curated(src.name),
            layout.deduped(src.name),
            [(s.name, layout.curated(s.name)) for s in winners],
        )
        return dg.MaterializeResult(
            metadata={
                "docs_in": res.docs_in,
                "docs_out": res.docs_out,
                "exact_duplicates_removed": res.exact_removed,
                "cross_source_removed": res.cross_source_removed,
                "cross_source_hits": dg.MetadataValue.json(res.cross_source_hits),
                "near_duplicates_removed": dg.MetadataValue.text("not run (exact dedup only)"),
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
        deps=[dg.AssetKey(["deduped", s]) for s in stage.mixture],
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
        inputs = {
            s: (layout.deduped(s), recipe.languages[recipe.source(s).language].chars_per_token)
            for s in stage.mixture
        }
        manifest = blend(
            inputs,
            stage.mixture,
            stage.target_tokens,
            layout.blend(stage.name),
            seed=f"{recipe.seed}:{stage.name}",
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
                "path": dg.MetadataValue.path(str(layout.blend(stage.name) / BLEND_FILE)),
            },
            check_results=[check],
        )

    return _blend


def tokenizer_asset(recipe: Recipe) -> dg.AssetsDefinition:
    train_stage = recipe.tokenizer_stage.name
    cfg = recipe.tokenizer

    @dg.asset(
        key="tokenizer",
        deps=[dg.AssetKey(["blend", train_stage])],
        group_name="tokenizer",
        kinds={"sentencepiece", "huggingface"},
        code_version=CODE_VERSION,
        description=f"SentencePiece {cfg.model_type} tokenizer ({cfg.vocab_size:,} pieces) trained on "
        f"blend/{train_stage}, exported as an HF tokenizer",
    )
    def _tokenizer(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        from transformers import AutoTokenizer

        from lm_platform.evaluation.perplexity import read_eval_docs
        from lm_platform.tokenization.fertility import fertility
        from lm_platform.tokenization.sentencepiece_trainer import train_sentencepiece

        if cfg.mode != "train":
            raise NotImplementedError(
                "tokenizer mode 'extend' (EEVE) is not implemented yet; use mode 'train'"
            )
        layout = storage.layout(recipe.name)
        blend_file = layout.blend(train_stage) / BLEND_FILE
        summary = train_sentencepiece(
            (d["text"] for d in iter_docs(blend_file, columns=["text"])), layout.tokenizer(), cfg
        )
        tok = AutoTokenizer.from_pretrained(str(layout.tokenizer()))
        if recipe.evaluations:
            held_out = list(read_eval_docs(recipe.evaluations[0].location))
            measured_on = f"held-out text of evaluation '{recipe.evaluations[0].name}'"
        else:
            held_out = [(d["lang"], d["text"]) for d in iter_docs(blend_file, columns=["lang", "text"])]
            measured_on = f"blend/{train_stage} (training text)"
        fert = fertility(tok, held_out)
        return dg.MaterializeResult(
            metadata={
                "vocab_size": summary["vocab_size"],
                "model_type": summary["model_type"],
                "training_sentences": summary["sentences"],
                "added_tokens": dg.MetadataValue.json(summary["added_tokens"]),
                "special_tokens": dg.MetadataValue.json(summary["special_tokens"]),
                "fertility": _md_table(
                    [{"lang": k, **v} for k, v in fert.items()],
                    ["lang", "docs", "chars", "tokens", "tokens_per_word", "chars_per_token"],
                ),
                "fertility_measured_on": measured_on,
                "path": dg.MetadataValue.path(str(layout.tokenizer())),
            }
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
        )
        total = index["tokens"] or 1
        per_source = [
            {
                "source": s,
                "docs": v["docs"],
                "tokens": v["tokens"],
                "share": v["tokens"] / total,
                "ratio": stage.mixture[s],
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
                "tokens_per_source": _md_table(per_source, ["source", "docs", "tokens", "share", "ratio"]),
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
    assets: list[dg.AssetsDefinition] = []
    for src in recipe.sources:
        assets += [corpus_asset(recipe, src), curated_asset(recipe, src), deduped_asset(recipe, src)]
    assets += [blend_asset(recipe, stage) for stage in recipe.stages]
    assets.append(tokenizer_asset(recipe))
    for stage in recipe.stages:
        assets += [dataset_asset(recipe, stage), checkpoint_asset(recipe, stage)]
    assets += [eval_asset(recipe, ev) for ev in recipe.evaluations]
    return assets


__all__ = ["build_assets"]
