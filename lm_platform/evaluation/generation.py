"""Generation samples: the same prompts answered greedily and by sampling, stored per model version so
that versions can be read side by side."""

from __future__ import annotations

import json
from pathlib import Path

from lm_platform.data.blending.pack import boundary_id
from lm_platform.evaluation.stats import summary


def read_prompts(path: str | Path) -> list[dict]:
    """Prompts from JSONL records with a string 'prompt' (optional 'id', 'lang')."""
    prompts = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            rec = json.loads(line)
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
                raise ValueError(f"{path}:{lineno}: a generation record needs a string field 'prompt'")
            prompts.append(
                {"id": str(rec.get("id", len(prompts))), "lang": rec.get("lang", ""), "prompt": rec["prompt"]}
            )
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def generate_outputs(
    model,
    tok,
    prompts: list[dict],
    max_new_tokens: int = 32,
    temperature: float = 0.8,
    top_p: float = 0.95,
    seed: int = 0,
) -> dict:
    """Greedy and sampled continuations of each prompt (seeded: the same version gives the same text).

    The score is the mean number of distinct words over generated words of the greedy outputs (a cheap
    signal of degenerate repetition); n is the number of prompts.
    """
    import torch

    head = boundary_id(tok)
    if head is None:
        raise ValueError("generation: the tokenizer has neither BOS nor EOS to start a prompt with")
    model.eval()
    rows = []
    for i, p in enumerate(prompts):
        ids = torch.tensor([[head, *tok.encode(p["prompt"], add_special_tokens=False)]])
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.inference_mode():
            greedy = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
            torch.manual_seed(seed + i)
            sampled = model.generate(
                ids,
                max_new_tokens=max_new_tokens,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                pad_token_id=pad,
            )
        g = tok.decode(greedy[0, ids.shape[1] :], skip_special_tokens=True)
        s = tok.decode(sampled[0, ids.shape[1] :], skip_special_tokens=True)
        words = g.split()
        rows.append(
            {**p, "greedy": g, "sampled": s, "distinct": len(set(words)) / len(words) if words else 0.0}
        )
    head = summary([r["distinct"] for r in rows])
    return {
        "kind": "generation",
        "metric": "distinct_words_greedy",
        "higher_is_better": True,
        "score": head["score"],
        "n": head["n"],
        "stderr": head["stderr"],
        "per_language": {
            lang: summary([r["distinct"] for r in rows if r["lang"] == lang])
            for lang in sorted({r["lang"] for r in rows})
        },
        "samples": rows,
    }


def side_by_side(samples_by_version: dict[str, list[dict]], which: str = "greedy") -> list[dict]:
    """One row per prompt with each version's output in a column named after the version."""
    rows: dict[str, dict] = {}
    for version, samples in samples_by_version.items():
        for s in samples:
            row = rows.setdefault(s["id"], {"id": s["id"], "prompt": s["prompt"]})
            row[version] = s[which]
    return list(rows.values())
