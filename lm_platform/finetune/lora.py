"""LoRA adapters through PEFT, trained by a compact loop whose loss is taken per token and only where the
labels say so (assistant tokens), and merged into full weights on request."""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lm_platform.atomic import atomic_dir, write_json
from lm_platform.finetune.chat import (
    CHAT_TOKENS,
    Example,
    batches,
    ensure_chat_tokens,
    read_instructions,
    tokenize,
)
from lm_platform.modeling.eeve import read_eeve
from lm_platform.tokenization.hf_compat import make_model_dir_compatible

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
ALL_LINEAR = [*ATTENTION, "gate_proj", "up_proj", "down_proj"]
PEFT_DIR = "peft"  # the adapter itself (adapter_config.json, adapter_model.safetensors)
RESULT_FILE = "adapter.json"


@dataclass(frozen=True)
class AdapterResult:
    """What training an adapter did (also written as `adapter.json` in its directory)."""

    base: str
    examples: int
    target_tokens: int
    steps: int
    initial_loss: float
    final_loss: float
    curve: list
    rank: int
    alpha: float
    dropout: float
    target_modules: list
    trainable_params: int
    new_token_ids: list
    added_chat_tokens: list
    merged: bool
    seconds: float


def masked_loss(logits, labels):
    """Mean next-token cross-entropy over the positions whose label is not -100, and the per-token
    losses (0 where no loss is taken), both from logits (B, T, V) and labels (B, T)."""
    import torch.nn.functional as F

    pred, target = logits[:, :-1].float(), labels[:, 1:]
    per_token = F.cross_entropy(
        pred.reshape(-1, pred.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="none"
    )
    per_token = per_token.view(target.shape)
    n = (target != -100).sum()
    return per_token.sum() / n.clamp(min=1), per_token


def new_token_ids(tokenizer_dir: Path, added: list[int], tokenizer=None) -> list[int]:
    """Rows the base model never trained: EEVE's new tokens (from eeve.json), the chat tokens added, and
    the chat template's tokens the base vocabulary already had (a tokenizer trained with them reserved, as
    the `ja` recipe's SentencePiece is, or a base model pretrained on plain text: their rows never saw a
    conversation, so fine-tuning trains them as it trains added ones)."""

    spec = read_eeve(tokenizer_dir)
    ids = [new_id for new_id, _ in spec.new_tokens] if spec is not None else []
    chat = []
    if tokenizer is not None:
        vocab = tokenizer.get_vocab()
        chat = [vocab[t] for t in CHAT_TOKENS if t in vocab]
    return sorted(set(ids) | set(added) | set(chat))


def trainable_token_modules(model, ids: list[int]) -> dict[str, list[int]] | None:
    """PEFT's `trainable_token_indices`: the input embedding's rows, and with untied embeddings the output
    head's rows too (PEFT follows a tied head by itself; an untied one named nowhere would leave the new
    tokens' output rows as initialised, so the model could read them but never predict them)."""
    if not ids:
        return None
    out = {"embed_tokens": list(ids)}
    head = model.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    if head is not None and not tied:
        name = next(n for n, m in model.named_modules() if m is head).rpartition(".")[2]
        out[name] = list(ids)
    return out


def train_adapter(
    base_dir: str | Path,
    instructions: str | Path,
    fmt: str,
    out_dir: str | Path,
    lora: Any,
    train: Any,
    system_prompt: str | None = None,
    merge_into_base: bool = True,
) -> AdapterResult:
    """Train a LoRA adapter on `base_dir` (an HF model directory with its tokenizer) and write, atomically,
    `out_dir/peft/` (the adapter), the tokenizer with the chat template, `adapter.json`, and, when
    `merge_into_base`, the merged full model (config.json, model.safetensors) at `out_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    base_dir = Path(base_dir)
    if not (base_dir / "config.json").is_file():
        raise FileNotFoundError(f"adapter base {base_dir}: no config.json (not a local HF model directory)")
    torch.manual_seed(train.seed)
    tok = AutoTokenizer.from_pretrained(base_dir)
    added = ensure_chat_tokens(tok)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    vocab = model.get_input_embeddings().num_embeddings
    if len(tok) > vocab:
        model.resize_token_embeddings(len(tok), mean_resizing=True)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    convs = read_instructions(instructions, fmt, system_prompt)
    examples = [e for e in (tokenize(tok, c, train.max_len) for c in convs) if e.mask.sum() > 0]
    if not examples:
        raise ValueError(
            f"{instructions}: no example keeps an assistant token within max_len={train.max_len}"
        )
    new_ids = new_token_ids(base_dir, added, tok) if lora.train_new_tokens else []
    targets = ATTENTION if lora.target == "attention" else ALL_LINEAR
    cfg = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        trainable_token_indices=trainable_token_modules(model, new_ids),
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, cfg)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=train.lr, weight_decay=0.0
    )
    rng = np.random.default_rng(train.seed)
    per_epoch = math.ceil(len(examples) / train.micro_batch_size) if not train.packing else None
    total = train.max_steps or math.ceil(train.epochs * (per_epoch or _packed_rows(examples, train)))
    curve, step = [], 0
    peft_model.train()
    while step < total:
        for batch in batches(examples, train.max_len, train.micro_batch_size, pad_id, train.packing, rng):
            b = {k: torch.from_numpy(v) for k, v in batch.items()}
            logits = peft_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            loss, _ = masked_loss(logits, b["labels"])
            opt.zero_grad()
            loss.backward()
            for g in opt.param_groups:
                g["lr"] = train.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            opt.step()
            step += 1
            curve.append({"step": step, "loss": float(loss.detach())})
            if step >= total:
                break
    peft_model.eval()
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        peft_model.save_pretrained(tmp / PEFT_DIR)
        tok.save_pretrained(tmp / PEFT_DIR)
        make_model_dir_compatible(tmp / PEFT_DIR)
        if merge_into_base:
            merged = peft_model.merge_and_unload()
            merged.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            make_model_dir_compatible(tmp)  # loads under transformers 4.57 too
            _copy_lineage_files(base_dir, tmp)
        head = [c["loss"] for c in curve[: max(1, len(curve) // 10)]]
        tail = [c["loss"] for c in curve[-max(1, len(curve) // 10) :]]
        result = AdapterResult(
            base=str(base_dir),
            examples=len(examples),
            target_tokens=int(sum(int(e.mask.sum()) for e in examples)),
            steps=step,
            initial_loss=float(np.mean(head)),
            final_loss=float(np.mean(tail)),
            curve=curve,
            rank=lora.rank,
            alpha=lora.alpha,
            dropout=lora.dropout,
            target_modules=targets,
            trainable_params=trainable,
            new_token_ids=new_ids,
            added_chat_tokens=added,
            merged=merge_into_base,
            seconds=round(time.time() - t0, 2),
        )
        write_json(tmp / RESULT_FILE, result.__dict__)
    return result


def _packed_rows(examples: list[Example], train: Any) -> int:
    return math.ceil(math.ceil(sum(len(e.ids) for e in examples) / train.max_len) / train.micro_batch_size)


def _copy_lineage_files(base_dir: Path, out: Path) -> None:
    """The EEVE description travels with the model (which rows are new)."""
    if (base_dir / "eeve.json").exists():
        shutil.copy2(base_dir / "eeve.json", out / "eeve.json")


def load_with_adapter(base_dir: str | Path, adapter_dir: str | Path):
    """The base model with the adapter applied (not merged), in eval mode."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(Path(adapter_dir) / PEFT_DIR)
    if len(tok) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tok), mean_resizing=True)
    return PeftModel.from_pretrained(model, Path(adapter_dir) / PEFT_DIR).eval()
