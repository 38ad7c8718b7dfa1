"""Tokenizer: trained (SentencePiece) or extended from a base (EEVE) on a seeded, capped sample of the
deduplicated sources (`tokenizer.sample`), with its fertility measured against the base and checked,
and for an extension the invariant (other languages unchanged) checked on the probe set; and
`tokens/<source>`, each source's documents tokenized once with it (group `tokenizer`)."""

from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg

from lm_platform.data.blending.tokens import tokenize_source
from lm_platform.data.corpus.readers import read_eval_set
from lm_platform.defs.metadata import headline, materialize, table, versioned
from lm_platform.defs.resources import LMStorage
from lm_platform.paths import Layout
from lm_platform.recipe.schema import Recipe, SourceConfig, TokenizerConfig
from lm_platform.tokenization.hf_compat import load_tokenizer
from lm_platform.versions import content_version

CHECK = "fertility_not_worse_than_base"
INVARIANT_CHECK = "other_languages_unchanged"
CODE = "3"  # this module's assets: tokenizer from the sample, tokens/<source>


def _sample(recipe: Recipe, layout: Layout) -> tuple[Callable[[], Iterator[str]], dict]:
    """The tokenizer's training text: a seeded, size-capped sample of the deduplicated sources (one
    function, `tokenization.sample`, shared with every tokenizer path), drawn once and held in memory (the
    cap bounds it); a callable for each pass over it, and what was taken per source."""
    from lm_platform.tokenization.sample import sample_documents

    s = recipe.tokenizer.sample
    paths = {src.name: layout.deduped(src.name) for src in recipe.tokenizer_sources()}
    sample = sample_documents(paths, s.max_chars, s.max_docs, s.seed, s.mixture, recipe.license_allowlist)
    return (lambda: iter(sample.texts)), sample.sources


def _make_tokenizer(
    cfg: TokenizerConfig, texts: Callable[[], Iterator[str]], out: Path
) -> tuple[dict, dict | None]:
    """Train or extend the tokenizer into `out`; returns what to report about it, and for an
    extension the probe-set invariant (`tokenization.probe.check_invariant`'s summary)."""
    if cfg.mode == "extend":
        from lm_platform.tokenization.eeve import EEVE_FILE, extend_tokenizer, readable

        res = extend_tokenizer(
            cfg.base, texts, out, cfg.language, cfg.vocab_size,
            multiple=cfg.extend_multiple, min_frequency=cfg.extend_min_frequency,
        )  # fmt: skip
        return {
            "vocab_size": res.vocab_size,
            "base_vocab_size": res.base_vocab_size,
            "new_tokens": len(res.new_tokens),
            "added_tokens": dg.MetadataValue.json([readable(t["token"]) for t in res.new_tokens[:50]]),
            "selection": res.summary(),
            "eeve": out / EEVE_FILE,
        }, res.invariant
    from lm_platform.tokenization.sentencepiece_trainer import train_sentencepiece

    summary = train_sentencepiece(texts(), out, cfg)
    return {
        "vocab_size": summary["vocab_size"],
        "model_type": summary["model_type"],
        "training_sentences": summary["sentences"],
        "added_tokens": dg.MetadataValue.json(summary["added_tokens"]),
        "special_tokens": dg.MetadataValue.json(summary["special_tokens"]),
    }, None


def _invariant_result(invariant: dict) -> dg.AssetCheckResult:
    """The probe-set invariant (`check_invariant(...).summary()`) as the blocking check's result."""
    return dg.AssetCheckResult(
        check_name=INVARIANT_CHECK,
        passed=invariant["passed"],
        metadata={
            "checked": invariant["checked"],
            "changed": invariant["changed"],
            "examples": dg.MetadataValue.json(invariant["examples"]),
        },
        description=None
        if invariant["passed"]
        else f"{invariant['changed']} of {invariant['checked']} probe texts encode differently",
    )


def _held_out(recipe: Recipe, layout: Layout) -> tuple[list[tuple[str, str]], str]:
    """(lang, text) pairs to measure fertility on: the first perplexity-kind evaluation's held-out text,
    else a small sample of each training source (training text)."""
    from lm_platform.tokenization.sample import sample_texts

    ev = recipe.text_evaluation
    if ev is not None:
        return list(read_eval_set(ev, limit=False)), f"held-out text of evaluation '{ev.name}'"
    pairs = [
        (src.language, t)
        for src in recipe.tokenizer_sources()
        for t in sample_texts(
            {src.name: layout.deduped(src.name)}, 200_000, seed=recipe.tokenizer.sample.seed
        )
    ]
    return pairs, "a sample of the deduplicated sources (training text)"


def tokenizer_asset(recipe: Recipe) -> dg.AssetsDefinition:
    cfg = recipe.tokenizer
    sources = [s.name for s in recipe.tokenizer_sources()]
    key = dg.AssetKey("tokenizer")
    checks = []
    if cfg.base:
        checks.append(
            dg.AssetCheckSpec(
                CHECK,
                asset=key,
                blocking=True,
                description=f"On held-out {cfg.language or 'text'}, the new tokenizer needs no more tokens "
                f"per word (per character where words are not spaced) than {cfg.base}",
            )
        )
    if cfg.mode == "extend":
        checks.append(
            dg.AssetCheckSpec(
                INVARIANT_CHECK,
                asset=key,
                blocking=True,
                description=f"Every probe text (English, code, Japanese, German, Turkish, Polish, Russian, "
                f"Greek, Czech) without a {cfg.language} letter outside ASCII encodes exactly as {cfg.base} "
                "encodes it",
            )
        )
    if cfg.mode == "extend":
        what = f"{cfg.base} extended (EEVE) with {cfg.language} tokens up to {cfg.vocab_size:,}"
    else:
        what = f"SentencePiece {cfg.model_type} tokenizer ({cfg.vocab_size:,} pieces)"

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(["deduped", s]) for s in sources],
        group_name="tokenizer",
        kinds={"sentencepiece", "huggingface"} if cfg.mode == "train" else {"huggingface"},
        code_version=versioned(CODE, cfg.model_dump(exclude={"workers"}), sources, recipe.evaluations[:1]),
        description=f"{what} trained on a seeded sample of {', '.join(f'deduped/{s}' for s in sources)}, "
        "exported as an HF tokenizer",
        metadata=headline("vocab_size", "base_vocab_size", "new_tokens"),
        check_specs=checks,
    )
    def _tokenizer(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        from lm_platform.tokenization.fertility import fertility_report

        layout = storage.layout(recipe.name)
        texts, sampled = _sample(recipe, layout)
        made, invariant = _make_tokenizer(cfg, texts, layout.tokenizer())
        held_out, measured_on = _held_out(recipe, layout)
        report = fertility_report(
            load_tokenizer(layout.tokenizer()),
            load_tokenizer(cfg.base) if cfg.base else None,
            held_out,
            measured_on,
            target=[cfg.language] if cfg.language else None,
        )
        checks = []
        if report.passed is not None:
            change = {r["lang"]: r["change"] for r in report.rows}
            checks.append(
                dg.AssetCheckResult(
                    check_name=CHECK,
                    passed=report.passed,
                    metadata={"change": dg.MetadataValue.json(change)},
                    description=report.problem,
                )
            )
        if invariant is not None:
            checks.append(_invariant_result(invariant))
        # The gain over the base as numbers, and the rows as JSON for the summary `make demo` prints.
        return materialize(
            {**made, **report.reductions},
            checks=checks,
            fertility=table(report.rows, report.columns),
            fertility_rows=dg.MetadataValue.json(list(report.rows)),
            fertility_measured_on=measured_on,
            training_sample=dict(sampled),  # per source: documents and characters seen and taken
            path=layout.tokenizer(),
            data_version=content_version(layout.tokenizer()),
        )

    return _tokenizer


def tokens_asset(recipe: Recipe, src: SourceConfig) -> dg.AssetsDefinition:
    workers = recipe.tokenizer.workers

    @dg.asset(
        key=["tokens", src.name],
        deps=[dg.AssetKey(["deduped", src.name]), dg.AssetKey("tokenizer")],
        group_name="tokenizer",
        kinds={"numpy", "parquet"},
        code_version=versioned(CODE, src.name),
        description=f"deduped/{src.name} tokenized once with the final tokenizer: token shards with per-document "
        "offsets, ids, license and language; exact token counts per license and language",
        metadata=headline("docs", "tokens"),
    )
    def _tokens(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        out = layout.tokens(src.name)
        summary = tokenize_source(
            layout.deduped(src.name), layout.tokenizer(), out, src.name, workers=workers
        )
        per_license = [{"license": k, **v} for k, v in summary["licenses"].items()]
        per_lang = [{"lang": k, **v} for k, v in summary["languages"].items()]
        return materialize(
            docs=summary["docs"],
            tokens=summary["tokens"],
            chars_per_token=summary["chars"] / summary["tokens"] if summary["tokens"] else 0.0,
            licenses=table(per_license, ["license", "docs", "tokens", "chars"]),
            languages=table(per_lang, ["lang", "docs", "tokens", "chars"]),
            tokens_per_license={k: v["tokens"] for k, v in summary["licenses"].items()},
            parts=summary["parts"],
            path=out,
            data_version=content_version(out),
        )

    return _tokens


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """The recipe's tokenizer and each source's tokens."""
    return [tokenizer_asset(recipe)] + [tokens_asset(recipe, s) for s in recipe.sources]
