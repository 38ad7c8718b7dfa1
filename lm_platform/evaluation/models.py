"""Loading a model version for scoring: an HF directory (model + tokenizer), float32 on the CPU unless a
device is given."""

from __future__ import annotations

from pathlib import Path


def load_model(path: str | Path, device: str | None = None):
    """(model, tokenizer) from an HF directory written by the platform; never downloads."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a model directory (no config.json)")
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, local_files_only=True)
    if device:
        model.to(device)
    model.eval()
    return model, tok
