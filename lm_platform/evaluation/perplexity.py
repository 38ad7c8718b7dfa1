"""Held-out perplexity of a checkpoint, overall and per language."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

from lm_platform.recipe.schema import EvalConfig


def read_eval_docs(path: str | Path | EvalConfig, max_docs: int | None = None) -> Iterator[tuple[str, str]]:
    """(lang, text) pairs of an evaluation set: a recipe's `EvalConfig` (a JSONL file or, format `hf`, a
    dataset read through the sources' `datasets` path), or the path of a JSONL file whose records have
    'text' and 'lang'."""
    from lm_platform.data.readers import read_eval_set

    ev = path if isinstance(path, EvalConfig) else EvalConfig(name="eval", location=str(path))
    return read_eval_set(ev, max_docs)


def perplexity(checkpoint_dir: str | Path, docs: Iterable[tuple[str, str]], batch_size: int = 8) -> dict:
    """Token-level perplexity of BOS + text + EOS, in windows of the model's context length.

    Returns score (overall perplexity), n (documents), tokens, stderr (of the score, by the delta method
    over per-document mean losses) and a per-language breakdown with the same fields.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint_dir), torch_dtype=torch.float32)
    model.eval()
    window = model.config.max_position_embeddings
    per_doc: list[tuple[str, float, int]] = []  # lang, summed nll, tokens
    with torch.no_grad():
        for lang, text in docs:
            ids = [tok.bos_token_id, *tok.encode(text, add_special_tokens=False), tok.eos_token_id]
            nll, count = 0.0, 0
            for start in range(0, len(ids) - 1, window):
                chunk = torch.tensor([ids[start : start + window + 1]])
                logits = model(input_ids=chunk[:, :-1]).logits
                nll += torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum").item()
                count += chunk.shape[1] - 1
            per_doc.append((lang, nll, count))
    if not per_doc:
        raise ValueError("perplexity: no evaluation documents")
    langs = sorted({lang for lang, _, _ in per_doc})
    result = _summary(per_doc)
    result["per_language"] = {lang: _summary([d for d in per_doc if d[0] == lang]) for lang in langs}
    return result


def _summary(docs: list[tuple[str, float, int]]) -> dict:
    tokens = sum(c for _, _, c in docs)
    mean_nll = sum(n for _, n, _ in docs) / tokens
    doc_means = [n / c for _, n, c in docs]
    k = len(doc_means)
    if k > 1:
        mu = sum(doc_means) / k
        se = math.sqrt(sum((m - mu) ** 2 for m in doc_means) / (k - 1) / k)
    else:
        se = float("nan")
    score = math.exp(mean_nll)
    return {"score": score, "mean_nll": mean_nll, "n": k, "tokens": tokens, "stderr": score * se}
