"""`export/<name>`: a model directory a user ships (model in its dtype as safetensors, tokenizer with the
chat template, model card), and the optional push to a hub with a token taken from the environment."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from huggingface_hub import HfApi

from lm_platform.atomic import atomic_dir, write_json
from lm_platform.finetune.chat import ensure_chat_tokens
from lm_platform.tokenization.hf_compat import make_model_dir_compatible

CARD_FILE = "README.md"
KEPT = ("eeve.json", "mergekit_config.yml")


@dataclass(frozen=True)
class ExportResult:
    source: str
    dtype: str
    vocab_size: int
    parameters: int
    chat_template: bool
    files: list


def export_model(model_dir: str | Path, out_dir: str | Path, dtype: str, card: str) -> ExportResult:
    """Write the model at `model_dir` to `out_dir` (atomically) in `dtype` ('auto': the model's own)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ensure_chat_tokens(tok)
    want = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=want)
    if len(tok) != model.get_input_embeddings().num_embeddings:
        raise ValueError(
            f"{model_dir}: tokenizer has {len(tok)} tokens, the model {model.get_input_embeddings().num_embeddings} "
            "embeddings (a merge lost the extended vocabulary?)"
        )
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        make_model_dir_compatible(tmp)  # what the user ships loads under transformers 4.57 too
        for name in KEPT:
            if (model_dir / name).exists():
                shutil.copy2(model_dir / name, tmp / name)
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        files = sorted(p.name for p in tmp.iterdir())
        result = ExportResult(
            source=str(model_dir),
            dtype=str(model.dtype).removeprefix("torch."),
            vocab_size=len(tok),
            parameters=sum(p.numel() for p in model.parameters()),
            chat_template=bool(tok.chat_template),
            files=files,
        )
        write_json(tmp / "export.json", result.__dict__)
    return result


class HubClient(Protocol):
    """What a push needs from a hub client (huggingface_hub.HfApi has these methods)."""

    def create_repo(self, repo_id: str, *, token: str, private: bool, exist_ok: bool) -> Any: ...

    def upload_folder(self, *, repo_id: str, folder_path: str, token: str, commit_message: str) -> Any: ...


@dataclass(frozen=True)
class PushResult:
    pushed: bool
    repo_id: str
    message: str


def push_to_hub(folder: str | Path, hub: Any, client: HubClient | None = None, env=os.environ) -> PushResult:
    """Push an export when the token variable `hub.token_env` is set; otherwise say so and do nothing.
    The token never appears in the result or its message."""
    token = env.get(hub.token_env)
    if not token:
        return PushResult(False, hub.repo_id, f"no hub token in ${hub.token_env}: nothing pushed")
    if client is None:
        client = HfApi()
    client.create_repo(hub.repo_id, token=token, private=hub.private, exist_ok=True)
    client.upload_folder(
        repo_id=hub.repo_id, folder_path=str(folder), token=token, commit_message="lm_platform export"
    )
    return PushResult(True, hub.repo_id, f"pushed {folder} to {hub.repo_id}")
