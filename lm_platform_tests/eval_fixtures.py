"""Tiny models for the evaluation tests: a Llama from a config with the bundled byte-level tokenizer, and
one trained to prefer planted answers."""

from __future__ import annotations

import random
from pathlib import Path

from lm_platform.evaluation.multiple_choice import MCItem, build_prompt, continuation
from lm_platform.recipe.loader import BUNDLED_DIR

TOKENIZER_DIR = BUNDLED_DIR / "demo_data" / "base_tokenizer"
EVALS_DIR = BUNDLED_DIR / "demo_data" / "evals"
NAMES = [
    "zorb", "quim", "tala", "vesk", "morn", "pib", "ulo", "drax", "fenn", "gorp", "hask", "jule",
    "kibo", "lunt", "mave", "nook", "oska", "prul", "rimm", "sato", "tuff", "vira", "wemb", "yolk",
]  # fmt: skip
PREFERRED = ["lamp", "river", "stone", "bread"]  # the planted right answers
OTHERS = [
    "cloud",
    "horse",
    "paper",
    "glass",
    "apple",
    "chair",
    "tiger",
    "music",
    "money",
    "train",
    "house",
    "sugar",
]


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))


def tiny_model(tok, seed: int = 0, hidden: int = 64, layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    model.eval()
    return model


def planted_items(n: int = 48, seed: int = 0) -> list[MCItem]:
    """Questions about made-up names with four nouns each: one of the planted nouns (the right answer)
    and three others, in random order."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        name = NAMES[i % len(NAMES)] + ("" if i < len(NAMES) else NAMES[(i * 7) % len(NAMES)])
        choices = [rng.choice(PREFERRED), *rng.sample(OTHERS, 3)]
        rng.shuffle(choices)
        answer = next(j for j, c in enumerate(choices) if c in PREFERRED)
        items.append(MCItem(str(i), f"What does {name} carry?", tuple(choices), answer, subject=f"s{i % 3}"))
    return items


def shuffled(items: list[MCItem], seed: int = 1) -> list[MCItem]:
    """The same items with the right answer replaced by a random choice."""
    rng = random.Random(seed)
    return [
        MCItem(it.id, it.question, it.choices, rng.randrange(len(it.choices)), it.subject) for it in items
    ]


def train_on_answers(
    model, tok, items: list[MCItem], fmt: str = "plain", mode: str = "choices", steps: int = 40, seed: int = 0
):
    """Teach the model each item's prompt followed by its right answer (the planted preference)."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # a shared machine: one thread is faster than oversubscribed many
    rows = []
    for it in items:
        text = build_prompt(it, fmt, mode) + continuation(it, it.answer, fmt, mode)
        rows.append([tok.bos_token_id, *tok.encode(text, add_special_tokens=False), tok.eos_token_id])
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, : len(r)] = torch.tensor(r)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randperm(len(rows), generator=gen)[:16]
        loss = model(input_ids=ids[batch], labels=labels[batch]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


def save_model(model, tok, out: Path) -> Path:
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out
