"""Instruction data: local Alpaca or chat JSONL files rendered with a chat template (ChatML), tokenized
with a mask that is 1 exactly on the assistant's tokens (its content and the turn's end marker)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHAT_TOKENS = (IM_START, IM_END)
ROLES = ("system", "user", "assistant")
# ChatML, as stored in the tokenizer (tokenizer_config / chat_template.jinja).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class InstructionError(ValueError):
    """A malformed instruction record; the message names the file and line."""


def read_instructions(path: str | Path, fmt: str, system_prompt: str | None = None) -> list[list[dict]]:
    """Conversations (lists of {role, content}) from an Alpaca or chat JSONL file."""
    path = Path(path)
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InstructionError(f"{where}: not JSON ({exc.msg})") from None
            out.append(_conversation(rec, fmt, where, system_prompt))
    if not out:
        raise InstructionError(f"{path}: no instruction records")
    return out


def _conversation(rec: dict, fmt: str, where: str, system_prompt: str | None) -> list[dict]:
    if not isinstance(rec, dict):
        raise InstructionError(f"{where}: a record is a JSON object")
    if fmt == "alpaca":
        for key in ("instruction", "output"):
            if not isinstance(rec.get(key), str) or not rec[key].strip():
                raise InstructionError(f"{where}.{key}: missing or empty (Alpaca records need it)")
        prompt = rec["instruction"] + (f"\n\n{rec['input']}" if rec.get("input") else "")
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": rec["output"]}]
        return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + msgs
    if fmt == "chat":
        msgs = rec.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise InstructionError(f"{where}.messages: missing or empty (chat records need a list)")
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise InstructionError(f"{where}.messages.{j}: needs role in {ROLES} and text content")
        if not any(m["role"] == "assistant" for m in msgs):
            raise InstructionError(f"{where}.messages: no assistant turn (nothing to learn)")
        return [{"role": m["role"], "content": m["content"]} for m in msgs]
    raise InstructionError(f"{where}: unknown format '{fmt}' (alpaca or chat)")


def render(messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """ChatML text of a conversation and the character spans that carry loss (each assistant turn's
    content and its end marker)."""
    text, spans = "", []
    for m in messages:
        text += f"{IM_START}{m['role']}\n"
        start = len(text)
        text += m["content"] + IM_END
        if m["role"] == "assistant":
            spans.append((start, len(text)))
        text += "\n"
    return text, spans


def ensure_chat_tokens(tokenizer) -> list[int]:
    """Add the template's special tokens that the tokenizer lacks (appended: existing ids unchanged) and
    store the ChatML template in it. Returns the new ids (those past the old vocabulary)."""
    before = len(tokenizer)
    # A template token must be an added (unsplittable) token; one already in the vocabulary keeps its id.
    missing = [t for t in CHAT_TOKENS if t not in tokenizer.get_added_vocab()]
    if missing:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": missing}, replace_extra_special_tokens=False
        )
    tokenizer.chat_template = CHATML_TEMPLATE
    return list(range(before, len(tokenizer)))


@dataclass(frozen=True)
class Example:
    ids: np.ndarray  # int64 token ids
    mask: np.ndarray  # 1 where the token is a target (assistant), else 0


def tokenize(tokenizer, messages: list[dict], max_len: int) -> Example:
    """Token ids of the rendered conversation and its loss mask, token by token: a token carries loss
    when its first character lies in an assistant span."""
    text, spans = render(messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a <= s < b for a, b in spans) and e > s) for s, e in enc["offset_mapping"]]
    ids = np.asarray(enc["input_ids"][:max_len], dtype=np.int64)
    return Example(ids, np.asarray(mask[:max_len], dtype=np.int64))


def batches(
    examples: list[Example],
    max_len: int,
    batch_size: int,
    pad_id: int,
    packing: bool,
    rng: np.random.Generator,
) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of (input_ids, attention_mask, labels) batches; labels are -100 where no loss is taken.
    Padded: one example per row. Packed: examples concatenated and cut into rows of max_len."""
    order = rng.permutation(len(examples))
    if packing:
        ids = np.concatenate([examples[i].ids for i in order])
        mask = np.concatenate([examples[i].mask for i in order])
        n = -(-len(ids) // max_len)
        rows = [
            (ids[k * max_len : (k + 1) * max_len], mask[k * max_len : (k + 1) * max_len]) for k in range(n)
        ]
    else:
        rows = [(examples[i].ids, examples[i].mask) for i in order]
    for k in range(0, len(rows), batch_size):
        chunk = rows[k : k + batch_size]
        width = max(len(r[0]) for r in chunk)
        input_ids = np.full((len(chunk), width), pad_id, dtype=np.int64)
        attn = np.zeros((len(chunk), width), dtype=np.int64)
        labels = np.full((len(chunk), width), -100, dtype=np.int64)
        for r, (ids, m) in enumerate(chunk):
            input_ids[r, : len(ids)] = ids
            attn[r, : len(ids)] = 1
            labels[r, : len(ids)] = np.where(m == 1, ids, -100)
        yield {"input_ids": input_ids, "attention_mask": attn, "labels": labels}
