"""Tokenizer: trained (SentencePiece) or extended from a base (EEVE) on a seeded, capped sample of a
stage's blend (`tokenizer.sample`), with its fertility measured against the base and checked, and for
an extension the invariant (other languages unchanged) checked on the probe set (group `tokenizer`)."""

from pathlib import Path

import dagster as dg

from lm_platform.data.blend import BLEND_FILE
from lm_platform.data.documents import iter_docs
from lm_platform.defs.metadata import CODE_VERSION, headline, materialize, table
from lm_platform.defs.resources import LMStorage
from lm_platform.recipe.schema import Recipe, TokenizerConfig

CHECK = "fertility_not_worse_than_base"
INVARIANT_CHECK = "other_languages_unchanged"


def _training_text(cfg: TokenizerConfig, blend_file: Path, stage: str):
    """The seeded, capped sample (`tokenizer.sample`) of the blend's text the tokenizer learns from:
    the target language's documents when extending, all of them when training. With a mixture, one
    sample per source named in it."""
    from lm_platform.tokenization.sample import sample_documents

    lang = cfg.language if cfg.mode == "extend" else None

    def docs(source: str | None = None):
        for d in iter_docs(blend_file, columns=["id", "source", "lang", "text"]):
            if (lang is None or d["lang"] == lang) and (source is None or d["source"] == source):
                yield d

    mix = cfg.sample.mixture
    sources = {name: docs(name) for name in mix} if mix else {f"blend/{stage}": docs()}
    return sample_documents(sources, cfg.sample.max_chars, cfg.sample.max_docs, cfg.sample.seed, mix)


def _make_tokenizer(
    cfg: TokenizerConfig, blend_file: Path, out: Path, stage: str
) -> tuple[dict, dict | None]:
    """Train or extend the tokenizer into `out`; returns what to report about it, and for an
    extension the probe-set invariant (`tokenization.probe.check_invariant`'s summary)."""
    sample = _training_text(cfg, blend_file, stage)
    sampled = {"training_sample": dg.MetadataValue.json(sample.sources)}
    if cfg.mode == "extend":
        from lm_platform.tokenization.eeve import EEVE_FILE, extend_tokenizer, readable

        res = extend_tokenizer(
            cfg.base, sample.texts, out, cfg.language, cfg.vocab_size,
            multiple=cfg.extend_multiple, min_frequency=cfg.extend_min_frequency,
        )  # fmt: skip
        return {
            "vocab_size": res.vocab_size,
            "base_vocab_size": res.base_vocab_size,
            "new_tokens": len(res.new_tokens),
            "added_tokens": dg.MetadataValue.json([readable(t["token"]) for t in res.new_tokens[:50]]),
            "selection": res.summary(),
            "eeve": out / EEVE_FILE,
            **sampled,
        }, res.invariant
    from lm_platform.tokenization.sentencepiece_trainer import train_sentencepiece

    summary = train_sentencepiece(sample.texts, out, cfg)
    return {
        "vocab_size": summary["vocab_size"],
        "model_type": summary["model_type"],
        "training_sentences": summary["sentences"],
        "added_tokens": dg.MetadataValue.json(summary["added_tokens"]),
        "special_tokens": dg.MetadataValue.json(summary["special_tokens"]),
        **sampled,
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


def _held_out(recipe: Recipe, blend_file: Path, stage: str) -> tuple[list[tuple[str, str]], str]:
    """(lang, text) pairs to measure fertility on: the first evaluation's held-out text, else the blend."""
    from lm_platform.data.readers import read_eval_set

    if recipe.evaluations:
        ev = recipe.evaluations[0]
        return list(read_eval_set(ev, limit=False)), f"held-out text of evaluation '{ev.name}'"
    docs = iter_docs(blend_file, columns=["lang", "text"])
    return [(d["lang"], d["text"]) for d in docs], f"blend/{stage} (training text)"


def tokenizer_asset(recipe: Recipe) -> dg.AssetsDefinition:
    train_stage = recipe.tokenizer_stage.name
    cfg = recipe.tokenizer
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
        deps=[dg.AssetKey(["blend", train_stage])],
        group_name="tokenizer",
        kinds={"sentencepiece", "huggingface"} if cfg.mode == "train" else {"huggingface"},
        code_version=CODE_VERSION,
        description=f"{what} trained on blend/{train_stage}, exported as an HF tokenizer",
        metadata=headline("vocab_size", "base_vocab_size", "new_tokens"),
        check_specs=checks,
    )
    def _tokenizer(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        from transformers import AutoTokenizer

        from lm_platform.tokenization.fertility import fertility_report

        layout = storage.layout(recipe.name)
        blend_file = layout.blend(train_stage) / BLEND_FILE
        made, invariant = _make_tokenizer(cfg, blend_file, layout.tokenizer(), train_stage)
        held_out, measured_on = _held_out(recipe, blend_file, train_stage)
        report = fertility_report(
            AutoTokenizer.from_pretrained(str(layout.tokenizer())),
            AutoTokenizer.from_pretrained(cfg.base) if cfg.base else None,
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
            path=layout.tokenizer(),
        )

    return _tokenizer


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """The recipe's tokenizer."""
    return [tokenizer_asset(recipe)]
