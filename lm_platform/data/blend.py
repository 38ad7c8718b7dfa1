"""Blend sources into one training stage's document set by token share.

Tokens are estimated from characters (the recipe's chars-per-token per language) until a tokenizer
exists; `dataset/<stage>` reports exact counts later. When a source cannot fill its share, it gives
all it has and the shortfall is shared among the other sources in proportion to their ratios. The
selection is seeded and deterministic.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from lm_platform.atomic import atomic_dir, write_json
from lm_platform.data.documents import DocWriter, iter_docs

BLEND_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"


@dataclass
class SourceShare:
    source: str
    ratio: float
    target_tokens: float
    available_tokens: float
    available_docs: int
    taken_tokens: float = 0.0
    taken_docs: int = 0
    epochs: float = 0.0
    share: float = 0.0


def allocate(ratios: dict[str, float], available: dict[str, float], total: float) -> dict[str, float]:
    """Token targets per source: `ratio * total`, with the share of exhausted sources redistributed to
    the others in proportion to their ratios."""
    targets: dict[str, float] = {}
    open_sources = dict(ratios)
    remaining = float(total)
    while open_sources:
        weight = sum(open_sources.values())
        exhausted = {s: r for s, r in open_sources.items() if available[s] < remaining * r / weight}
        if not exhausted:
            for s, r in open_sources.items():
                targets[s] = remaining * r / weight
            break
        for s in exhausted:
            targets[s] = available[s]
            remaining -= available[s]
            del open_sources[s]
    return targets


def blend(
    inputs: dict[str, tuple[Path, float]],
    ratios: dict[str, float],
    target_tokens: int,
    out_dir: str | Path,
    seed: int | str = 0,
) -> dict:
    """Select documents from `inputs` (source -> (deduped path, chars per token)) to reach
    `target_tokens` split by `ratios`; write `data.parquet` and `manifest.json` into `out_dir`.

    The same seed gives the same selection; stages pass their own seed so each draws its own sample."""
    estimates: dict[str, list[float]] = {}
    for source in ratios:
        path, chars_per_token = inputs[source]
        estimates[source] = [len(d["text"]) / chars_per_token for d in iter_docs(path, columns=["text"])]
    available = {s: sum(e) for s, e in estimates.items()}
    targets = allocate(ratios, available, target_tokens)
    shares = {
        s: SourceShare(s, ratios[s], targets[s], available[s], len(estimates[s])) for s in ratios
    }
    licenses: dict[str, dict[str, float]] = {}
    with atomic_dir(out_dir) as tmp, DocWriter(tmp / BLEND_FILE) as out:
        for source in ratios:
            est = estimates[source]
            order = list(range(len(est)))
            random.Random(f"{seed}:{source}").shuffle(order)
            chosen: set[int] = set()
            acc = shares[source]
            for i in order:
                if acc.taken_tokens + est[i] / 2 > acc.target_tokens:
                    continue
                chosen.add(i)
                acc.taken_tokens += est[i]
                acc.taken_docs += 1
            for i, doc in enumerate(iter_docs(inputs[source][0])):
                if i in chosen:
                    out.write(doc)
                    lic = licenses.setdefault(doc["license"], {"docs": 0, "tokens": 0.0})
                    lic["docs"] += 1
                    lic["tokens"] += est[i]
        total = sum(s.taken_tokens for s in shares.values()) or 1.0
        for s in shares.values():
            s.share = s.taken_tokens / total
            s.epochs = s.taken_tokens / s.available_tokens if s.available_tokens else 0.0
        manifest = {
            "target_tokens": target_tokens,
            "taken_tokens": round(total),
            "docs": out.count,
            "token_estimate": "chars / chars_per_token of the source language",
            "sources": [_rounded(asdict(s)) for s in shares.values()],
            "licenses": [
                {"license": k, "docs": v["docs"], "tokens": round(v["tokens"]), "share": v["tokens"] / total}
                for k, v in sorted(licenses.items())
            ],
        }
        write_json(tmp / MANIFEST_FILE, manifest)
    return manifest


def _rounded(d: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}
