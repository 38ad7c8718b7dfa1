"""Held-out bits per byte and perplexity of a checkpoint, overall and per language.

Bits per byte is the headline: the model's summed negative log-likelihood of a text (in bits) over the
text's UTF-8 bytes does not depend on the tokenizer, so a base and its vocabulary extension (EEVE), or
two recipes' models, compare on it; perplexity is per token and moves with how finely a tokenizer cuts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

from lm_platform.data.blending.pack import boundary_id
from lm_platform.data.corpus.readers import read_eval_set
from lm_platform.evaluation.models import load_model
from lm_platform.recipe.schema import EvalConfig


def read_eval_docs(path: str | Path | EvalConfig, max_docs: int | None = None) -> Iterator[tuple[str, str]]:
    """(lang, text) pairs of an evaluation set: a recipe's `EvalConfig` (a JSONL file or, format `hf`, a
    dataset read through the sources' `datasets` path), or the path of a JSONL file whose records have
    'text' and 'lang'."""

    ev = path if isinstance(path, EvalConfig) else EvalConfig(name="eval", location=str(path))
    return read_eval_set(ev, max_docs)


def perplexity(checkpoint_dir: str | Path, docs: Iterable[tuple[str, str]], batch_size: int = 8) -> dict:
    """Perplexity of the HF model directory `checkpoint_dir` (see `perplexity_of`)."""

    model, tok = load_model(checkpoint_dir)
    return perplexity_of(model, tok, docs, batch_size)


def perplexity_of(model, tok, docs: Iterable[tuple[str, str]], batch_size: int = 8) -> dict:
    """Token-level perplexity of text + EOS after the boundary token training put before every document
    (`data.blending.pack.boundary_id`: BOS, or EOS without one), in windows of the model's context length.

    Windows of up to `batch_size` documents run together (right-padded, padding ignored). Returns score
    (bits per byte: every scored token's negative log-likelihood, the EOS's included, in bits over the
    texts' UTF-8 bytes), bits_per_byte, perplexity (per token), mean_nll, n (documents), tokens, bytes,
    stderr (of the score, over per-document bits per byte) and a per-language breakdown with the same
    fields.
    """
    import torch

    head = boundary_id(tok)
    if head is None or tok.eos_token_id is None:
        raise ValueError("perplexity: the tokenizer has no EOS token (packing ends every document with it)")
    model.eval()
    window = model.config.max_position_embeddings
    per_doc: list[tuple[str, float, int, int]] = []  # lang, summed nll, tokens, bytes

    def flush(pending: list[tuple[int, list[int]]], totals: list[list[float]]) -> None:
        width = max(len(ids) for _, ids in pending)
        inp = torch.zeros((len(pending), width - 1), dtype=torch.long)
        tgt = torch.full((len(pending), width - 1), -100, dtype=torch.long)
        for r, (_, ids) in enumerate(pending):
            inp[r, : len(ids) - 1] = torch.tensor(ids[:-1])
            tgt[r, : len(ids) - 1] = torch.tensor(ids[1:])
        logits = model(input_ids=inp).logits.float()
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), tgt, reduction="none", ignore_index=-100
        ).sum(dim=1)
        for r, (doc, ids) in enumerate(pending):
            totals[doc][0] += float(nll[r])
            totals[doc][1] += len(ids) - 1

    with torch.inference_mode():
        chunk_docs: list[tuple[str, list[int], int]] = []
        for lang, text in docs:
            ids = [head, *tok.encode(text, add_special_tokens=False), tok.eos_token_id]
            chunk_docs.append((lang, ids, len(text.encode("utf-8"))))
            if len(chunk_docs) >= 64 * batch_size:  # bounded memory: score documents in blocks
                per_doc += _score_block(chunk_docs, window, batch_size, flush)
                chunk_docs = []
        if chunk_docs:
            per_doc += _score_block(chunk_docs, window, batch_size, flush)
    if not per_doc:
        raise ValueError("perplexity: no evaluation documents")
    langs = sorted({d[0] for d in per_doc})
    result = _summary(per_doc)
    result["kind"] = "perplexity"
    result["metric"] = "bits_per_byte"
    result["higher_is_better"] = False
    result["per_language"] = {lang: _summary([d for d in per_doc if d[0] == lang]) for lang in langs}
    return result


def _score_block(
    docs: list[tuple[str, list[int], int]], window: int, batch_size: int, flush
) -> list[tuple[str, float, int, int]]:
    totals = [[0.0, 0] for _ in docs]
    pieces = [
        (d, ids[start : start + window + 1])
        for d, (_, ids, _) in enumerate(docs)
        for start in range(0, len(ids) - 1, window)
    ]
    pieces.sort(key=lambda p: len(p[1]), reverse=True)
    for i in range(0, len(pieces), batch_size):
        flush(pieces[i : i + batch_size], totals)
    return [(lang, totals[d][0], int(totals[d][1]), n_bytes) for d, (lang, _, n_bytes) in enumerate(docs)]


def _summary(docs: list[tuple[str, float, int, int]]) -> dict:
    tokens = sum(d[2] for d in docs)
    n_bytes = sum(d[3] for d in docs)
    nll = sum(d[1] for d in docs)
    mean_nll = nll / tokens
    bpb = nll / math.log(2) / max(n_bytes, 1)
    doc_bpb = [d[1] / math.log(2) / max(d[3], 1) for d in docs]
    k = len(doc_bpb)
    if k > 1:
        mu = sum(doc_bpb) / k
        se = math.sqrt(sum((b - mu) ** 2 for b in doc_bpb) / (k - 1) / k)
    else:
        se = float("nan")
    return {
        "score": bpb,
        "bits_per_byte": bpb,
        "perplexity": math.exp(mean_nll),
        "mean_nll": mean_nll,
        "n": k,
        "tokens": tokens,
        "bytes": n_bytes,
        "stderr": se,
    }
