"""Running one of the recipe's evaluations on one model, and the texts each evaluation set consists of
(what decontamination indexes and what the tokenizer's fertility is measured on)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lm_platform.data.corpus.readers import read_eval_set
from lm_platform.evaluation.generation import generate_outputs, read_prompts
from lm_platform.evaluation.lm_eval_adapter import run_lm_eval
from lm_platform.evaluation.loglik import LoglikScorer
from lm_platform.evaluation.models import load_model
from lm_platform.evaluation.perplexity import perplexity_of, read_eval_docs
from lm_platform.recipe.schema import EvalConfig


def evaluation_texts(ev: EvalConfig, default_lang: str = "") -> Iterator[tuple[str, str]]:
    """(lang, text) pairs of an evaluation set as training text could contain them: held-out documents;
    each multiple-choice question (with its passage) joined with its right answer, dev shots included;
    generation prompts. lm_eval tasks keep their data in their own files and yield nothing here."""
    if ev.kind == "perplexity":
        yield from read_eval_set(ev, limit=False)
    elif ev.kind == "multiple_choice":
        from lm_platform.evaluation.multiple_choice import read_items

        for path in (ev.location, ev.dev_location):
            if path:
                for item in read_items(path):
                    yield item.lang or ev.language or default_lang, item.text_with_answer()
    elif ev.kind == "generation":
        for p in read_prompts(ev.location):
            yield p["lang"] or ev.language or default_lang, p["prompt"]


def run_evaluation(ev: EvalConfig, model_path: str | Path, seed: int = 0, device: str | None = None) -> dict:
    """Score the model directory `model_path` on evaluation `ev`: a result with kind, metric, score, n,
    stderr, higher_is_better and the per-language / per-subject / per-task breakdown."""

    model, tok = load_model(model_path, device)
    return run_on_model(ev, model, tok, seed)


def run_on_model(ev: EvalConfig, model, tok, seed: int = 0) -> dict:
    """`run_evaluation` on a model object and its tokenizer."""
    if ev.kind == "perplexity":
        return perplexity_of(model, tok, read_eval_docs(ev, ev.max_docs), ev.batch_size)
    if ev.kind == "multiple_choice":
        from lm_platform.evaluation.multiple_choice import read_items, score_items

        items = read_items(ev.location, ev.max_docs)
        dev = read_items(ev.dev_location) if ev.dev_location else None
        scorer = LoglikScorer(model, tok, batch_size=ev.batch_size)
        return score_items(scorer, items, ev.prompt_format, ev.mode, dev, ev.num_fewshot, ev.metric)
    if ev.kind == "generation":
        prompts = read_prompts(ev.location)[: ev.max_docs]
        return generate_outputs(model, tok, prompts, ev.max_new_tokens, ev.temperature, seed=seed)
    if ev.kind == "lm_eval":
        return run_lm_eval(
            model,
            tok,
            ev.tasks,
            ev.include_path,
            ev.num_fewshot or None,
            ev.max_docs,
            ev.batch_size,
            ev.metric or "acc",
        )
    raise ValueError(f"evaluation '{ev.name}': unknown kind '{ev.kind}'")
