"""Tiny models for the fine-tuning tests: the bundled byte-level base tokenizer extended with a few
Vietnamese tokens (eeve.json describing them), a tied tiny Llama at the extended size, instruction files."""

from __future__ import annotations

import json
from pathlib import Path

BASE_TOKENIZER = Path(__file__).parents[1] / "lm_platform/recipe/bundled/demo_data/base_tokenizer"
NEW_TOKENS = ["xin chào", "Việt Nam", "cảm ơn", "tiếng Việt", "học máy", "mô hình"]

CHAT = [
    {
        "messages": [
            {"role": "system", "content": "Bạn là trợ lý."},
            {"role": "user", "content": "Xin chào!"},
            {"role": "assistant", "content": "xin chào, tôi giúp gì được?"},
            {"role": "user", "content": "Cảm ơn."},
            {"role": "assistant", "content": "Không có gì, cảm ơn bạn."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Thủ đô của Việt Nam?"},
            {"role": "assistant", "content": "Hà Nội."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Nói về học máy."},
            {"role": "assistant", "content": "học máy dạy mô hình từ dữ liệu."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Dịch: thank you"},
            {"role": "assistant", "content": "cảm ơn"},
        ]
    },
]
ALPACA = [
    {"instruction": "Name the capital of France.", "input": "", "output": "Paris."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "2 + 3 = 5."},
    {"instruction": "Say hello in Vietnamese.", "input": "", "output": "xin chào"},
    {"instruction": "Give a colour.", "input": "", "output": "Blue."},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def extended_tokenizer(out: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(BASE_TOKENIZER)
    base = len(tok)
    pieces = [tok(t, add_special_tokens=False)["input_ids"] for t in NEW_TOKENS]
    tok.add_tokens(NEW_TOKENS)
    tok.save_pretrained(out)
    (out / "eeve.json").write_text(
        json.dumps(
            {
                "base": str(BASE_TOKENIZER),
                "base_vocab_size": base,
                "new_tokens": [
                    {"id": base + i, "token": t, "pieces": p}
                    for i, (t, p) in enumerate(zip(NEW_TOKENS, pieces, strict=True))
                ],
            }
        )
    )
    return tok


def tiny_model(out: Path, seed: int = 0, tied: bool = True, scale: float = 1.0) -> Path:
    """A tiny tied Llama with the extended tokenizer, saved as an HF directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tok = extended_tokenizer(out)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    if scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(scale)
    model.save_pretrained(out, safe_serialization=True)
    return out
