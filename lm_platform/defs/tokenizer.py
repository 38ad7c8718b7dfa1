"""Tokenizer: trained (SentencePiece) or extended from a base (EEVE) on a stage's blend, with its
fertility measured against the base and checked (group `tokenizer`)."""

from pathlib import Path

import dagster as dg

from lm_platform.data.blend import BLEND_FILE
from lm_platform.data.documents import iter_docs
from lm_platform.defs.metadata import CODE_VERSION, headline, materialize, table
from lm_platform.defs.resources import LMStorage
from lm_platform.recipe.schema import Recipe, TokenizerConfig

CHECK = "fertility_not_worse_than_base"


def _make_tokenizer(cfg: TokenizerConfig, blend_file: Path, out: Path) -> dict:
    """Train or extend the tokenizer into `out`; returns what to report about it."""
    if cfg.mode == "extend":
        from lm_platform.tokenization.eeve import EEVE_FILE, extend_tokenizer, readable

        def texts():
            docs = iter_docs(blend_file, columns=["lang", "text"])
            return (d["text"] for d in docs if d["lang"] == cfg.language)

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
        }
    from lm_platform.tokenization.sentencepiece_trainer import train_sentencepiece

    summary = train_sentencepiece((d["text"] for d in iter_docs(blend_file, columns=["text"])), out, cfg)
    return {
        "vocab_size": summary["vocab_size"],
        "model_type": summary["model_type"],
        "training_sentences": summary["sentences"],
        "added_tokens": dg.MetadataValue.json(summary["added_tokens"]),
        "special_tokens": dg.MetadataValue.json(summary["special_tokens"]),
    }


def _held_out(recipe: Recipe, blend_file: Path, stage: str) -> tuple[list[tuple[str, str]], str]:
    """(lang, text) pairs to measure fertility on: the first perplexity-kind evaluation's held-out text,
    else the blend."""
    from lm_platform.evaluation.perplexity import read_eval_docs

    ev = recipe.text_evaluation
    if ev is not None:
        return list(read_eval_docs(ev.location)), f"held-out text of evaluation '{ev.name}'"
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
        made = _make_tokenizer(cfg, blend_file, layout.tokenizer())
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
