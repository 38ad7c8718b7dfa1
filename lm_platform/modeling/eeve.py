"""EEVE embedding initialisation for an extended vocabulary.

The tokenizer asset writes `eeve.json` beside an extended tokenizer:
`{"base": ..., "base_vocab_size": N, "new_tokens": [{"id": N + i, "token": str, "pieces": [base ids]}]}`.
A new token's input row is the mean of its pieces' input rows; its output row is the output row of its
first piece (the first sub-word predicts the start of the word). When input and output embeddings are
tied, one row serves both and the recipe's `eeve_tied_rule` picks which of the two rules applies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lm_platform.recipe.model_init import EEVE_TIED_RULE, TiedRule

EEVE_FILE = "eeve.json"


@dataclass(frozen=True)
class EeveSpec:
    base_vocab_size: int
    new_tokens: tuple[tuple[int, tuple[int, ...]], ...]  # (new id, base piece ids)

    @property
    def vocab_size(self) -> int:
        return self.base_vocab_size + len(self.new_tokens)


def read_eeve(tokenizer_dir: str | Path) -> EeveSpec | None:
    """The extension described in `tokenizer_dir/eeve.json`, or None for a tokenizer that was not extended."""

    path = Path(tokenizer_dir) / EEVE_FILE
    if not path.exists():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    try:
        base = int(raw["base_vocab_size"])
        tokens = [(int(t["id"]), tuple(int(p) for p in t["pieces"])) for t in raw["new_tokens"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed EEVE description ({exc!r})") from exc
    for i, (new_id, pieces) in enumerate(tokens):
        if new_id != base + i:
            raise ValueError(f"{path}: new_tokens.{i}.id is {new_id}, expected {base + i} (contiguous ids)")
        if not pieces or any(not 0 <= p < base for p in pieces):
            raise ValueError(f"{path}: new_tokens.{i}.pieces {list(pieces)} must be base ids in [0, {base})")
    return EeveSpec(base, tuple(tokens))


def extend_embeddings(model, spec: EeveSpec, tied_rule: TiedRule = EEVE_TIED_RULE) -> None:
    """Grow `model`'s vocabulary from `spec.base_vocab_size` to `spec.vocab_size` with EEVE rows."""
    import torch

    have = model.get_input_embeddings().num_embeddings
    if have != spec.base_vocab_size:
        raise ValueError(
            f"the base model has {have} embeddings but eeve.json says the base vocabulary has "
            f"{spec.base_vocab_size}"
        )
    model.resize_token_embeddings(spec.vocab_size, mean_resizing=False)
    tied = model.get_output_embeddings() is None or (
        model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    )
    inp = model.get_input_embeddings().weight
    out = None if tied else model.get_output_embeddings().weight
    with torch.no_grad():
        for new_id, pieces in spec.new_tokens:
            idx = torch.tensor(pieces)
            if tied and tied_rule == "output":
                inp[new_id] = inp[pieces[0]]
            else:
                inp[new_id] = inp[idx].mean(dim=0)
            if out is not None:
                out[new_id] = out[pieces[0]]
    model.config.vocab_size = spec.vocab_size
